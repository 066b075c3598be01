"""The Neo4j store: error messages and write plan without a server; a live suite when NEO4J_URI is set.

The live suite (marker ``neo4j``) loads the fixture kernels into the server at ``$NEO4J_URI``
(credentials from ``$NEO4J_USER``/``$NEO4J_PASSWORD``) under names starting ``ksymgraph-test-``,
compares every answer with the embedded store's, and deletes them again. Without ``NEO4J_URI`` it
is skipped, unless ``KSYMGRAPH_REQUIRE_NEO4J=1`` (as ``.ci/run`` sets it, having started a server
with ``ksymgraph neo4j start``): then a missing server fails the suite instead of skipping it.
:func:`live_uri` and :func:`neo4j_store` serve the other ``test_neo4j_*`` files too.
"""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest
from neo4j.exceptions import AuthError, ServiceUnavailable

from conftest import FIXTURE_RELEASE
from test_queries_library import VMLINUX
from ksymgraph.graph.build import GraphBatch, build_kernel_graph
from ksymgraph.graph.load import read_kernel
from ksymgraph.graph.neo4j_store import Neo4jStore, delete_statements, store_error, write_plan
from ksymgraph.graph.schema import NODES
from ksymgraph.graph.store import StoreError
from ksymgraph.graph.connect import open_store
from ksymgraph.queries.library import list_queries, run_named

PASSWORD = "s3cret-Pa55word"
UNREACHABLE = "bolt://127.0.0.1:1"


def fixture_batch(sources, kernel=None) -> GraphBatch:
    meta, modules, entries = read_kernel([str(s) for s in sources], kernel=kernel, workers=1)[:3]
    return build_kernel_graph(meta, modules, entries)[0]


# Without a server ----------------------------------------------------------------------------------

def test_unreachable_server_fails_fast_and_says_what_to_do():
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        Neo4jStore(UNREACHABLE, user="neo4j", password=PASSWORD)
    assert time.monotonic() - t0 <= 5.0
    msg = str(info.value)
    assert msg.startswith("cannot reach Neo4j at bolt://127.0.0.1:1 (")
    assert "`ksymgraph neo4j start`" in msg and "docker compose -f docker/compose.yaml up -d" in msg
    assert PASSWORD not in msg


def test_open_store_reaches_the_neo4j_store(monkeypatch):
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot reach Neo4j at bolt://127\.0\.0\.1:1 .*docker/compose\.yaml") as info:
        open_store(neo4j=UNREACHABLE)
    assert time.monotonic() - t0 <= 5.0 and PASSWORD not in str(info.value)


def test_bad_uri_is_a_clear_error():
    with pytest.raises(StoreError, match=r"bad Neo4j URI http://localhost:7474: use bolt://HOST:7687"):
        Neo4jStore("http://localhost:7474", password=PASSWORD)
    with pytest.raises(StoreError) as info:
        Neo4jStore(f"bolt://neo4j:{PASSWORD}@127.0.0.1:1")
    assert str(info.value) == ("bad Neo4j URI bolt://127.0.0.1:1: give the credentials in NEO4J_USER and "
                               "NEO4J_PASSWORD, not in the URI")


def test_wrong_password_message():
    # What the driver raises when the server refuses the credentials (it may quote them back).
    err = AuthError(f"The client is unauthorized due to authentication failure (password {PASSWORD}).")
    e = store_error(err, "bolt://db.example:7687", "alice", PASSWORD)
    assert str(e).startswith("authentication failed for user 'alice' at bolt://db.example:7687; set NEO4J_PASSWORD")
    assert PASSWORD not in str(e)
    e = store_error(ServiceUnavailable("Couldn't connect to db.example:7687"), f"bolt://alice:{PASSWORD}@db.example:7687",
                    "alice", PASSWORD)
    assert str(e).startswith("cannot reach Neo4j at bolt://db.example:7687 (Couldn't connect") and PASSWORD not in str(e)


def test_write_plan_replaces_the_kernel_in_one_ordered_batch(fixture_tree, extra_modules):
    batch = fixture_batch([fixture_tree, extra_modules])
    plan = write_plan(batch, batch_rows=4)
    deletes = [s for s in plan if "DETACH DELETE" in s.cypher]
    assert plan[: len(NODES)] == deletes and len(deletes) == len(NODES)
    assert all(s.params == {"kernel": FIXTURE_RELEASE} for s in deletes)
    assert [s.cypher for s in deletes] == delete_statements()
    per_stmt: dict[str, list] = {}
    for s in plan[len(NODES):]:
        assert 1 <= len(s.params["rows"]) <= 4
        per_stmt.setdefault(s.cypher, []).extend(s.params["rows"])
    modules = per_stmt["UNWIND $rows AS r\nMERGE (n:Module {id: r.id})\nSET n += r"]
    assert sorted(r["name"] for r in modules) == ["core_a", "prop_d", "user_b", "user_c", "vmlinux", "weak_e"]
    assert next(r for r in modules if r["name"] == "user_b")["import_ns"] == ["A_NS"]
    exports = next(rows for text, rows in per_stmt.items() if ":EXPORTS]" in text)
    assert len(exports) == 4 + 1 + len(VMLINUX)
    a_ns = next(r for r in exports if r["dst"] == f"{FIXTURE_RELEASE}|a_ns")
    assert a_ns == {"src": f"{FIXTURE_RELEASE}|core_a", "dst": f"{FIXTURE_RELEASE}|a_ns",
                    "props": {"kernel": FIXTURE_RELEASE, "gpl": True, "namespace": "A_NS", "crc": 0x44440000}}
    # Nodes before relationships, so every MATCH finds its endpoints.
    first_rel = next(i for i, s in enumerate(plan) if "MATCH (a:" in s.cypher)
    assert all("MERGE (n:" not in s.cypher for s in plan[first_rel:])


def test_write_plan_keeps_parallel_relationships_and_refuses_duplicate_nodes(fixture_tree):
    batch = fixture_batch([fixture_tree])
    # Two call sites of the same function: two CALLS rows between the same nodes, both written.
    from test_queries_library import source_batch

    src = source_batch()
    key = ("CALLS", "Function", "Function")
    calls = src.rels[key]
    second_site = calls.slice(0, 1).set_column(3, "line", pa.array([999], pa.int64()))
    plan = write_plan(src._replace(rels={**src.rels, key: pa.concat_tables([calls, second_site])}))
    rows = [r for s in plan if ":CALLS]" in s.cypher and "(b:Function" in s.cypher for r in s.params["rows"]]
    assert len(rows) == calls.num_rows + 1
    assert sorted(r["props"]["line"] for r in rows if (r["src"], r["dst"]) == (rows[0]["src"], rows[0]["dst"])) == \
        [rows[0]["props"]["line"], 999]
    assert all("CREATE (a)-[e:" in s.cypher for s in plan if "MATCH (a:" in s.cypher)
    nodes = batch.nodes["Module"]
    doubled = batch._replace(nodes={**batch.nodes, "Module": pa.concat_tables([nodes, nodes.slice(0, 1)])})
    with pytest.raises(StoreError, match=r"duplicate Module ids in the batch for 6.1.0-fixture"):
        write_plan(doubled)


# Against a live server -----------------------------------------------------------------------------

#: Set by .ci/run: the live suite must run, a missing server is a failure.
REQUIRE_NEO4J = os.environ.get("KSYMGRAPH_REQUIRE_NEO4J") == "1"
K1, K2, KSRC = "ksymgraph-test-fixture", "ksymgraph-test-other", "ksymgraph-test-src"


def live_uri() -> str:
    """``$NEO4J_URI``; without it the test is skipped, or fails when ``KSYMGRAPH_REQUIRE_NEO4J=1``."""
    uri = os.environ.get("NEO4J_URI")
    if not uri:
        why = ("NEO4J_URI is not set: start Neo4j with `export NEO4J_PASSWORD=...; "
               "export NEO4J_URI=$(ksymgraph neo4j start | tail -1)` (or docker compose -f docker/compose.yaml up -d)")
        if REQUIRE_NEO4J:
            pytest.fail(f"KSYMGRAPH_REQUIRE_NEO4J=1 but {why}")
        pytest.skip(why)
    return uri


@pytest.fixture
def neo4j_store():
    store = Neo4jStore(live_uri())
    yield store
    for k in (K1, K2, KSRC):
        store.delete_kernel(k)
    store.close()


COUNTS = ("MATCH (n) WHERE n.kernel = $k WITH count(n) AS nodes "
          "OPTIONAL MATCH ()-[r]->() WHERE r.kernel = $k RETURN nodes, count(r) AS rels")


def _normal(rows):
    """Rows with list values sorted (collect() order is the engine's choice)."""
    return [tuple(sorted(v) if isinstance(v, list) else v for v in r) for r in rows.rows]


@pytest.mark.neo4j
def test_load_twice_gives_the_same_counts(neo4j_store, fixture_tree, extra_modules, db_path):
    batch = fixture_batch([fixture_tree, extra_modules], kernel=K1)
    neo4j_store.replace_kernel(batch)
    first = neo4j_store.query(COUNTS, {"k": K1}).rows
    neo4j_store.replace_kernel(batch)
    assert neo4j_store.query(COUNTS, {"k": K1}).rows == first
    with open_store(db_path) as emb:
        emb.replace_kernel(batch)
        assert emb.query(COUNTS, {"k": K1}).rows == first
    assert K1 in neo4j_store.kernels()


@pytest.mark.neo4j
def test_named_queries_agree_with_the_embedded_store(neo4j_store, fixture_tree, extra_modules, db_path):
    from test_queries_library import source_batch

    batches = [fixture_batch([fixture_tree, extra_modules], kernel=K1), fixture_batch([fixture_tree], kernel=K2),
               source_batch(KSRC)]
    params = {"importers": {"kernel": K1, "symbol": "a_plain"}, "module-exports": {"kernel": K1, "module": "core_a"},
              "unused-exports": {"kernel": K1}, "module-deps": {"kernel": K1, "module": "user_b"},
              "callers": {"kernel": KSRC, "function": "a", "depth": 5}, "modules-by-license": {"kernel": K1},
              "lookups": {"kernel": K1, "module": "prop_d"}, "export-changes": {"a": K1, "b": K2}}
    assert set(params) == {q.name for q in list_queries()}
    with open_store(db_path) as emb:
        for b in batches:
            emb.replace_kernel(b)
            neo4j_store.replace_kernel(b)
        for name, p in params.items():
            want, got = run_named(emb, name, p), run_named(neo4j_store, name, p)
            assert got.columns == want.columns, name
            assert _normal(got) == _normal(want), name


@pytest.mark.neo4j
def test_readers_see_the_old_kernel_until_the_replacing_transaction_commits(neo4j_store, fixture_tree,
                                                                              extra_modules):
    """Neo4j reads at read-committed isolation: while the transaction that replaces a kernel is open
    (the whole load, for a Debian kernel tens of seconds), other sessions see the old kernel whole;
    the new one appears at commit. (A read that overlaps the commit's own application can see part of
    it: Neo4j Community has no snapshot reads. The README's Neo4j section says so.)"""
    big = fixture_batch([fixture_tree, extra_modules], kernel=K1)    # 6 modules
    small = fixture_batch([fixture_tree], kernel=K1)                 # 5 modules
    neo4j_store.replace_kernel(big)
    old = neo4j_store.query(COUNTS, {"k": K1}).rows
    with Neo4jStore(live_uri()) as writer, writer._session() as session:
        tx = session.begin_transaction()
        for stmt in write_plan(small):
            tx.run(stmt.cypher, stmt.params).consume()
        # Every statement of the replacement has run, none is committed: readers see the old kernel.
        with Neo4jStore(live_uri()) as reader:
            assert reader.query(COUNTS, {"k": K1}).rows == old
            assert len(reader.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name", {"k": K1}).rows) == 6
        assert tx.run(COUNTS, {"k": K1}).values() != [list(old[0])]   # the writer sees its own writes
        tx.commit()
    new = neo4j_store.query(COUNTS, {"k": K1}).rows
    assert new != old and len(neo4j_store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name",
                                                  {"k": K1}).rows) == 5
    # A transaction that fails half-way leaves the kernel as it was.
    with Neo4jStore(live_uri()) as writer, writer._session() as session:
        tx = session.begin_transaction()
        for stmt in write_plan(big)[: len(NODES) + 2]:    # deletes and the first node batches
            tx.run(stmt.cypher, stmt.params).consume()
        tx.rollback()
    assert neo4j_store.query(COUNTS, {"k": K1}).rows == new


# neo4j-admin export (no server needed) ---------------------------------------------------------------

def _parse_admin_csv(header_path, data_path) -> list[dict]:
    """Read a neo4j-admin file pair by its rules: quoted strings ("" escapes a quote), unquoted empty =
    missing property, :long / :boolean / :string[] (';'-separated)."""
    import re

    header = header_path.read_text().strip().split(",")
    field_re = re.compile(r'"((?:[^"]|"")*)"|([^,"]*)')
    out = []
    for line in data_path.read_text().splitlines():
        raw, pos = [], 0
        while True:
            m = field_re.match(line, pos)
            raw.append(m.group(1).replace('""', '"') if m.group(1) is not None else (m.group(2) or None))
            pos = m.end()
            if pos == len(line):
                break
            assert line[pos] == ",", line
            pos += 1
        row = {}
        for field, value in zip(header, raw, strict=True):
            name, _, typ = field.partition(":")
            name = name or typ.split("(")[0]
            if value is None:
                continue
            if typ == "long":
                value = int(value)
            elif typ == "boolean":
                value = {"true": True, "false": False}[value]
            elif typ == "string[]":
                value = value.split(";")
            row[name] = value
        out.append(row)
    return out


def test_neo4j_admin_export_round_trip(fixture_store, tmp_path):
    from ksymgraph.graph.neo4j_admin import export_neo4j_admin, header_fields, read_kernel_batch
    from test_queries_library import SOURCE_KERNEL, source_batch

    fixture_store.replace_kernel(source_batch())
    batches = [read_kernel_batch(fixture_store, FIXTURE_RELEASE), read_kernel_batch(fixture_store, SOURCE_KERNEL)]
    assert batches[0].kernel.release == FIXTURE_RELEASE and batches[0].nodes["Module"].num_rows == 6
    assert batches[1].rels[("CALLS", "Function", "Function")].num_rows == 6
    out = tmp_path / "export"
    exp = export_neo4j_admin(batches, out)
    assert exp.rows["nodes/Module.csv"] == 6
    assert exp.rows["relationships/EXPORTS.Module.Symbol.csv"] == 4 + 1 + len(VMLINUX)
    assert exp.rows["relationships/CALLS.Function.Symbol.csv"] == 1
    assert header_fields("Module")[:2] == ["id:ID(Module)", "kernel"]
    assert "import_ns:string[]" in header_fields("Module") and "gpl_compatible:boolean" in header_fields("Module")
    assert header_fields("EXPORTS", ("Module", "Symbol")) == [
        ":START_ID(Module)", ":END_ID(Symbol)", "kernel", "gpl:boolean", "namespace", "crc:long"]

    modules = {r["name"]: r for r in _parse_admin_csv(out / "nodes/Module.header.csv", out / "nodes/Module.csv")}
    assert modules["user_b"]["import_ns"] == ["A_NS"] and "import_ns" not in modules["core_a"]
    assert modules["prop_d"]["gpl_compatible"] is False and modules["prop_d"]["license"] == "Proprietary"
    assert modules["vmlinux"]["path"] == "" and modules["vmlinux"]["id"] == f"{FIXTURE_RELEASE}|vmlinux"
    exports = _parse_admin_csv(out / "relationships/EXPORTS.Module.Symbol.header.csv",
                               out / "relationships/EXPORTS.Module.Symbol.csv")
    a_ns = next(r for r in exports if r["END_ID"] == f"{FIXTURE_RELEASE}|a_ns")
    assert a_ns == {"START_ID": f"{FIXTURE_RELEASE}|core_a", "END_ID": f"{FIXTURE_RELEASE}|a_ns",
                    "kernel": FIXTURE_RELEASE, "gpl": True, "namespace": "A_NS", "crc": 0x44440000}

    # import.sh runs exactly the returned command, from its own directory, with every file.
    fake = tmp_path / "neo4j-admin"
    fake.write_text('#!/bin/sh\npwd > "$0.cwd"\nfor a in "$@"; do echo "$a"; done > "$0.args"\n')
    fake.chmod(0o755)
    import subprocess

    subprocess.run(["sh", str(out / "import.sh")], check=True, env={**os.environ, "NEO4J_ADMIN": str(fake)},
                   cwd=tmp_path)
    args = (tmp_path / "neo4j-admin.args").read_text().splitlines()
    assert ["neo4j-admin", *args] == exp.command
    assert (tmp_path / "neo4j-admin.cwd").read_text().strip() == str(out)
    assert args[:3] == ["database", "import", "full"] and args[-1] == "neo4j"
    assert "--nodes=Module=nodes/Module.header.csv,nodes/Module.csv" in args
    assert "--relationships=CALLS=relationships/CALLS.Function.Symbol.header.csv,relationships/CALLS.Function.Symbol.csv" in args
    for a in args:
        if a.startswith(("--nodes=", "--relationships=")):
            assert all((out / f).is_file() for f in a.split("=", 2)[2].split(","))
    assert (out / "schema.cypher").read_text().startswith("CREATE CONSTRAINT kernel_id IF NOT EXISTS")
