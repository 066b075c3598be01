// Modules a module depends on (depmod's edges: it imports what they export), with the symbols.
// vmlinux is not listed: the kernel itself is always there.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
// $module (string): the module's name
MATCH (m:Module)-[d:DEPENDS_ON]->(dep:Module)
WHERE m.kernel = $kernel AND m.name = $module
RETURN dep.name AS dependency, d.symbols AS symbols, dep.intree AS intree
ORDER BY dependency
