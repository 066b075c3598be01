// Modules that import a symbol: licence, in-tree or not, whether the import is weak, and the CRC it expects.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
// $symbol (string): the symbol's name
MATCH (m:Module)-[i:IMPORTS]->(s:Symbol)
WHERE s.kernel = $kernel AND s.name = $symbol
RETURN m.name AS module, m.license AS license, m.intree AS intree, i.weak AS weak, i.crc AS crc
ORDER BY module
