// Export changes from kernel $a to kernel $b: removed, added, turned GPL-only, moved to another
// namespace. One row per symbol; when several apply, change is the first of that list and the
// other columns show the rest. Symbols are matched by name; module_a/module_b are the exporters.
// $a (kernel): the older kernel
// $b (kernel): the newer kernel
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol)
WHERE m.kernel = $a OR m.kernel = $b
WITH s.name AS symbol,
     sum(CASE WHEN m.kernel = $a THEN 1 ELSE 0 END) AS in_a,
     sum(CASE WHEN m.kernel = $b THEN 1 ELSE 0 END) AS in_b,
     sum(CASE WHEN m.kernel = $a AND e.gpl THEN 1 ELSE 0 END) AS gpl_a,
     sum(CASE WHEN m.kernel = $b AND e.gpl THEN 1 ELSE 0 END) AS gpl_b,
     min(CASE WHEN m.kernel = $a THEN coalesce(e.namespace, '') END) AS namespace_a,
     min(CASE WHEN m.kernel = $b THEN coalesce(e.namespace, '') END) AS namespace_b,
     min(CASE WHEN m.kernel = $a THEN m.name END) AS module_a,
     min(CASE WHEN m.kernel = $b THEN m.name END) AS module_b
WITH symbol, module_a, module_b, namespace_a, namespace_b, gpl_a > 0 AS gpl_only_a, gpl_b > 0 AS gpl_only_b,
     CASE
       WHEN in_b = 0 THEN 'removed'
       WHEN in_a = 0 THEN 'added'
       WHEN gpl_a = 0 AND gpl_b > 0 THEN 'gpl-only'
       WHEN namespace_a <> namespace_b THEN 'namespace'
       ELSE ''
     END AS change
WHERE change <> ''
RETURN change, symbol, module_a, module_b, gpl_only_a, gpl_only_b, namespace_a, namespace_b
ORDER BY change, symbol
