"""Everything that goes to Neo4j passes Neo4j's own Cypher parser (tests/cypher_lint.mjs, via node).

The store's statements (:func:`ksymgraph.graph.neo4j_store.neo4j_statements`, the same functions
the store builds them with) and the Neo4j text of every named query are checked with the schema's
labels, relationship types and property keys, and with their parameters declared: a syntax error,
an unknown label, function or parameter, or LadybugDB-only syntax fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ksymgraph.graph.embedded import schema_statements as embedded_schema_statements
from ksymgraph.graph.neo4j_admin import read_statements
from ksymgraph.graph.neo4j_store import neo4j_statements
from ksymgraph.graph.schema import NODES, RELS
from ksymgraph.queries.library import get_query, list_queries

ROOT = Path(__file__).resolve().parent.parent
LINTER = ROOT / "tests" / "cypher_lint.mjs"
#: Example values per parameter type, so the linter knows every declared parameter.
EXAMPLES = {"string": "kfree", "kernel": "6.1.0-50-amd64", "int": 3, "bool": True, "list": ["a"]}


def lint_schema() -> dict:
    """Labels, relationship types and property keys of graph/schema.py, as the linter's dbSchema."""
    keys = {"id", "kernel"} | {p.name for t in (*NODES, *RELS) for p in t.props}
    return {"labels": [n.label for n in NODES], "relationshipTypes": [r.type for r in RELS],
            "propertyKeys": sorted(keys)}


def lint(items: list[dict], tmp_path: Path) -> dict[str, list[dict]]:
    """Diagnostics per name for ``items`` (``{"name", "query", "params"?}``)."""
    if shutil.which("node") is None:
        pytest.fail("node is missing: .ci/run installs it (apt-get install nodejs npm)")
    if not (ROOT / "node_modules" / "@neo4j-cypher" / "language-support").is_dir():
        pytest.fail("@neo4j-cypher/language-support is missing: run `npm ci` in the repository root")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(lint_schema()))
    out = subprocess.run(["node", str(LINTER), "--schema", str(schema)], input=json.dumps(items),
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    result = {r["name"]: r["diagnostics"] for r in json.loads(out.stdout)}
    assert list(result) == [i["name"] for i in items]
    return result


def named_query_items(dialect: str) -> list[dict]:
    return [{"name": q.name, "query": q.text(dialect), "params": {p.name: EXAMPLES[p.type] for p in q.params}}
            for q in list_queries()]


def test_every_store_statement_parses_in_neo4j(tmp_path):
    stmts = neo4j_statements()
    kinds = {s.cypher.split()[0] for s in stmts}
    assert kinds == {"CREATE", "CALL", "MATCH", "SHOW", "UNWIND"}
    assert sum("MERGE (n:" in s.cypher for s in stmts) == len(NODES)
    assert sum("CREATE (a)-[e:" in s.cypher for s in stmts) == sum(len(r.pairs) for r in RELS)
    items = [{"name": f"{i}: {s.cypher.splitlines()[0]}", "query": s.cypher, "params": s.params}
             for i, s in enumerate(stmts)]
    # What neo4j_admin.read_kernel_batch runs when the store it reads is a Neo4j one.
    items += [{"name": f"read: {q}", "query": q, "params": {"kernel": "k"}} for q in read_statements()]
    bad = {k: v for k, v in lint(items, tmp_path).items() if v}
    assert bad == {}


def test_every_named_query_parses_in_neo4j(tmp_path):
    items = named_query_items("neo4j")
    assert len(items) == len(list_queries()) >= 8
    bad = {k: v for k, v in lint(items, tmp_path).items() if v}
    assert bad == {}


def test_linter_catches_what_neo4j_would_reject(tmp_path):
    ladybug_callers = get_query("callers").text("ladybug")
    assert ladybug_callers != get_query("callers").text("neo4j")
    items = [
        {"name": "ddl", "query": embedded_schema_statements()[0]},
        {"name": "copy", "query": "COPY Module FROM batch"},
        {"name": "label", "query": "MATCH (n:Module) RETURN label(n)"},
        {"name": "list_filter", "query": "MATCH (m:Module) RETURN list_filter(m.import_ns, x -> x <> '')"},
        {"name": "shortest", "query": ladybug_callers},
        {"name": "syntax", "query": "MATCH (m:Module RETURN m"},
        {"name": "unknown-label", "query": "MATCH (m:Modul) RETURN m.name"},
        {"name": "unknown-param", "query": get_query("importers").text("neo4j"), "params": {"kernel": "k", "sym": "x"}},
        {"name": "clean", "query": "MATCH (m:Module) WHERE m.name = $n RETURN labels(m)", "params": {"n": "x"}},
    ]
    diags = lint(items, tmp_path)
    errors = {k: [d["message"] for d in v if d["severity"] == "error"] for k, v in diags.items()}
    for name in ("ddl", "copy", "label", "list_filter", "shortest", "syntax", "unknown-param"):
        assert errors[name], name
    assert "Function label is not present" in errors["label"][0]
    assert errors["unknown-param"] == ["Parameter $symbol is not defined."]
    assert [d["message"].split(" is not")[0] for d in diags["unknown-label"]] == ["Label Modul"]
    assert diags["clean"] == []
