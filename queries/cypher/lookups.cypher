// Symbols a module reaches by name at run time (kallsyms_lookup_name, kprobe, symbol_get), where,
// and whether any module still exports each one.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
// $module (string): the module's name
MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol)
WHERE m.kernel = $kernel AND m.name = $module
RETURN s.name AS symbol, l.how AS how, l.file AS file, l.line AS line,
       EXISTS { MATCH (:Module)-[:EXPORTS]->(s) } AS exported
ORDER BY symbol, file, line
