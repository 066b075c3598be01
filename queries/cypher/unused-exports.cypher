// Exports that no module imports (what export_report.pl listed as unused); looked_up tells whether
// some module still reaches the symbol by name (kallsyms_lookup_name, kprobe, symbol_get).
// $kernel (kernel) = only: the kernel (default: the only one in the store)
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol)
WHERE m.kernel = $kernel AND NOT EXISTS { MATCH (:Module)-[:IMPORTS]->(s) }
RETURN m.name AS module, s.name AS symbol, e.gpl AS gpl, e.namespace AS namespace,
       EXISTS { MATCH (:Module)-[:LOOKS_UP]->(s) } AS looked_up
ORDER BY module, symbol
