// LadybugDB variant of callers.cypher: its variable-length patterns follow walks (a recursive call
// chain is walked again and again up to the bound), so ask for one shortest path per caller instead
// (`* SHORTEST`, LadybugDB syntax that Neo4j does not parse).
MATCH p = (caller:Function)-[:CALLS* SHORTEST 1..5]->(f:Function)
WHERE f.kernel = $kernel AND f.name = $function AND caller.id <> f.id AND length(p) <= $depth
RETURN caller.name AS caller, caller.file AS file, caller.line AS line, min(length(p)) AS depth
ORDER BY depth, caller, file
