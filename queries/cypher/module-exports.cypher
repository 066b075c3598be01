// Exports of a module: GPL-only or not, namespace, CRC, and how many modules import each.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
// $module (string): the module's name (vmlinux for the kernel itself)
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol)
WHERE m.kernel = $kernel AND m.name = $module
RETURN s.name AS symbol, e.gpl AS gpl, e.namespace AS namespace, e.crc AS crc,
       COUNT { MATCH (:Module)-[:IMPORTS]->(s) } AS importers
ORDER BY symbol
