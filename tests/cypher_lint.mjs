#!/usr/bin/env node
// Check Cypher statements with Neo4j's own parser and semantic analysis
// (@neo4j-cypher/language-support, lintCypherQuery), as a Neo4j 5 server would see them.
//
// stdin:  a JSON array of {"name": NAME, "query": CYPHER, "params": {NAME: VALUE, ...}?}
// stdout: a JSON array of {"name": NAME, "diagnostics": [{"severity", "message", "line", "column", "offset"}]}
//         severity is "error" or "warning"; an empty list means the statement is clean.
//
// options: --schema FILE   a JSON {"labels": [...], "relationshipTypes": [...], "propertyKeys": [...]}:
//                          labels, types and property keys outside it are reported (as warnings)
//
// Functions and procedures are checked against the list of Neo4j's built-in ones (Cypher 5) that the
// package ships, so LadybugDB-only functions such as label() or list_filter() are errors.
// When a query gives "params", undeclared parameters are errors; otherwise parameters are not checked.

import { readFileSync } from 'node:fs';
import { lintCypherQuery, isNotParamError, testData } from '@neo4j-cypher/language-support';

const VERSION = 'CYPHER 5';

// Neo4j's own functions (isBuiltIn) and procedures (db.*, dbms.*, tx.*), without plugins such as APOC.
function builtins(registry, isBuiltIn) {
  const all = (registry && registry[VERSION]) || {};
  return { [VERSION]: Object.fromEntries(Object.entries(all).filter(([, v]) => isBuiltIn(v))) };
}

function main() {
  const args = process.argv.slice(2);
  let schema = {};
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--schema') schema = JSON.parse(readFileSync(args[++i], 'utf8'));
    else throw new Error(`unknown argument ${args[i]}`);
  }
  const input = JSON.parse(readFileSync(0, 'utf8'));
  if (!Array.isArray(input)) throw new Error('stdin must be a JSON array of {"name", "query"}');
  const functions = builtins(testData.mockSchema.functions, (f) => f.isBuiltIn);
  const procedures = builtins(testData.mockSchema.procedures, (p) => /^(db|dbms|tx)\./.test(p.name));
  const out = input.map(({ name, query, params }) => {
    const dbSchema = { ...schema, functions, procedures, defaultLanguage: VERSION };
    if (params) dbSchema.parameters = params;
    let { diagnostics } = lintCypherQuery(query, dbSchema);
    if (!params) diagnostics = diagnostics.filter(isNotParamError);
    return {
      name,
      diagnostics: diagnostics.map((d) => ({
        severity: d.severity === 1 ? 'error' : 'warning',
        message: d.message,
        line: d.range.start.line + 1,
        column: d.range.start.character + 1,
        offset: d.offsets ? d.offsets.start : null,
      })),
    };
  });
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

try {
  main();
} catch (e) {
  process.stderr.write(`cypher_lint: ${e.message}\n`);
  process.exit(2);
}
