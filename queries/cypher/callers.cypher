// Functions that call a function, directly or through others, up to $depth calls away (at most 5:
// Cypher takes no parameter in a variable-length bound, so the pattern stops at 5 and $depth filters),
// each with the shortest distance; a recursive function is not its own caller. Needs the source graph (Function nodes, CALLS edges).
//
// This text serves Neo4j, whose variable-length patterns never reuse a relationship; LadybugDB's
// walk further, so callers.ladybug.cypher asks it for shortest paths only.
// $kernel (kernel) = only: the kernel (default: the only one in the store)
// $function (string): the called function's name
// $depth (int) = 1: how many calls away, 1 to 5
MATCH p = (caller:Function)-[:CALLS*1..5]->(f:Function)
WHERE f.kernel = $kernel AND f.name = $function AND caller.id <> f.id AND length(p) <= $depth
RETURN caller.name AS caller, caller.file AS file, caller.line AS line, min(length(p)) AS depth
ORDER BY depth, caller, file
