// Modules grouped by MODULE_LICENSE, with whether the licence may use GPL-only exports.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
MATCH (m:Module)
WHERE m.kernel = $kernel
RETURN m.license AS license, m.gpl_compatible AS gpl_compatible, count(m) AS modules, collect(m.name) AS names
ORDER BY modules DESC, license
