"""The embedded store: schema, several kernels, replacing a kernel as a unit, DEPENDS_ON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_RELEASE
from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.graph.embedded import EmbeddedStore
from ksymgraph.graph.load import load_kernel, read_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.graph.store import StoreError
from ksymgraph.graph.connect import open_store

COUNTS = """
MATCH (m:Module) WHERE m.kernel = $k
OPTIONAL MATCH (m)-[e:EXPORTS]->(:Symbol)
RETURN count(DISTINCT m) AS modules, count(e) AS exports
"""


def counts(store, k):
    (row,) = store.query(COUNTS, {"k": k}).rows
    imports = store.query("MATCH (m:Module)-[i:IMPORTS]->(:Symbol) WHERE m.kernel = $k RETURN count(i)", {"k": k}).rows
    return row + imports[0]


def test_fixture_graph_contents(fixture_store):
    k = {"k": FIXTURE_RELEASE}
    assert counts(fixture_store, FIXTURE_RELEASE) == (6, 4 + 5 + 1, 2 + 2 + 1 + 2 + 2)
    deps = fixture_store.query(
        "MATCH (a:Module)-[d:DEPENDS_ON]->(b:Module) WHERE a.kernel = $k RETURN a.name, b.name, d.symbols "
        "ORDER BY a.name", k).rows
    assert deps == [("prop_d", "core_a", ["a_plain"]), ("user_b", "core_a", ["a_ns", "a_plain"]),
                    ("user_c", "user_b", ["b_fn"])]
    ns = fixture_store.query("MATCH (m:Module)-[:IMPORTS_NS]->(n:Namespace) WHERE m.kernel = $k "
                             "RETURN m.name, n.name", k).rows
    assert ns == [("user_b", "A_NS")]
    e = fixture_store.query("MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE s.name = 'a_ns' AND m.kernel = $k "
                            "RETURN m.name, e.gpl, e.namespace, e.crc", k).rows
    assert e == [("core_a", True, "A_NS", 0x44440000)]
    lic = fixture_store.query("MATCH (m:Module) WHERE m.kernel = $k AND m.name = 'prop_d' "
                              "RETURN m.license, m.gpl_compatible, m.intree", k).rows
    assert lic == [("Proprietary", False, False)]


def test_reload_is_idempotent_and_kernels_coexist(fixture_store, fixture_tree):
    before = counts(fixture_store, FIXTURE_RELEASE)
    load_kernel(fixture_store, [str(fixture_tree)], kernel="other", workers=1)
    load_kernel(fixture_store, [str(fixture_tree)], kernel="other", workers=1)
    assert fixture_store.kernels() == [FIXTURE_RELEASE, "other"]
    assert counts(fixture_store, FIXTURE_RELEASE) == before
    assert counts(fixture_store, "other") == (5, 10, 7)  # no prop_d in this one
    assert fixture_store.delete_kernel("other") is True
    assert fixture_store.kernels() == [FIXTURE_RELEASE]


def test_reloading_the_only_kernel_writes_a_fresh_database(db_path, fixture_tree, monkeypatch):
    """With one kernel stored, a reload builds a fresh database beside the store (deleting row by
    row is slow in LadybugDB) and gives the same graph; with two, it copies the store and deletes the
    old kernel's rows in the copy. Either way the result is renamed over the store."""
    made = []
    real = EmbeddedStore._next_database

    def spy(self, keep):
        nxt = real(self, keep)
        made.append((self.kernels(), nxt.copied))
        return nxt

    monkeypatch.setattr(EmbeddedStore, "_next_database", spy)
    with open_store(db_path) as store:
        assert made == [([], False)] and store.kernels() == []  # opening a writer creates an empty store
        made.clear()
        load_kernel(store, [str(fixture_tree)], kernel="one", workers=1)
        before = counts(store, "one")
        inode = db_path.stat().st_ino
        load_kernel(store, [str(fixture_tree)], kernel="one", workers=1)
        assert made == [([], False), (["one"], False)]
        assert db_path.stat().st_ino != inode  # a new file, renamed over the old one
        assert store.kernels() == ["one"] and counts(store, "one") == before
        load_kernel(store, [str(fixture_tree)], kernel="two", workers=1)
        load_kernel(store, [str(fixture_tree)], kernel="two", workers=1)
        # "two" beside "one": prepared fresh while the store held one kernel, then a copy is needed
        assert [copied for _, copied in made[2:]] == [False, True, True]
        assert store.kernels() == ["one", "two"] and counts(store, "one") == counts(store, "two") == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["graph.lbdb", "graph.lbdb.lock"]


def test_failed_write_leaves_old_kernel_whole(fixture_store, fixture_tree, monkeypatch):
    before = counts(fixture_store, FIXTURE_RELEASE)
    calls = []
    real_copy = EmbeddedStore._copy

    def failing_copy(self, conn, table_name, path, options):
        calls.append(table_name)
        if table_name == "IMPORTS":  # after nodes and EXPORTS are written
            raise RuntimeError("disk full (injected)")
        return real_copy(self, conn, table_name, path, options)

    monkeypatch.setattr(EmbeddedStore, "_copy", failing_copy)
    with pytest.raises(StoreError, match=r"writing kernel .* failed, the store is unchanged: disk full \(injected\)"):
        load_kernel(fixture_store, [str(fixture_tree)], kernel=FIXTURE_RELEASE, workers=1)
    assert "EXPORTS" in calls
    monkeypatch.undo()
    assert counts(fixture_store, FIXTURE_RELEASE) == before
    assert staging_dirs(fixture_store) == []  # no staged table left behind


def test_failure_to_stage_a_table_is_a_store_error_and_leaves_old_kernel_whole(fixture_store, fixture_tree,
                                                                              monkeypatch):
    before = counts(fixture_store, FIXTURE_RELEASE)
    real_stage = EmbeddedStore._stage

    def full_disk(self, key, batch, staging):
        if key == ("IMPORTS", "Module", "Symbol"):
            raise OSError(28, "No space left on device (injected)")
        return real_stage(self, key, batch, staging)

    monkeypatch.setattr(EmbeddedStore, "_stage", full_disk)
    with pytest.raises(StoreError, match=r"the store is unchanged: cannot stage table \('IMPORTS'.*No space left"):
        load_kernel(fixture_store, [str(fixture_tree)], kernel=FIXTURE_RELEASE, workers=1)
    monkeypatch.undo()
    assert counts(fixture_store, FIXTURE_RELEASE) == before
    assert staging_dirs(fixture_store) == []


def staging_dirs(store) -> list[Path]:
    return sorted(store.path.parent.glob(f"{store.path.name}.staging-*"))


def test_staged_tables_are_removed(fixture_store, fixture_tree, monkeypatch):
    staged = []
    real_copy = EmbeddedStore._copy

    def spy(self, conn, table_name, path, options):
        staged.append(path)
        return real_copy(self, conn, table_name, path, options)

    monkeypatch.setattr(EmbeddedStore, "_copy", spy)
    load_kernel(fixture_store, [str(fixture_tree)], kernel=FIXTURE_RELEASE, workers=1)
    here = fixture_store.path.parent
    assert staged and all(Path(p).parent.parent == here and Path(p).parent.name.startswith("graph.lbdb.staging-")
                          and p.endswith(".parquet") for p in staged)
    assert all(not Path(p).exists() for p in staged) and staging_dirs(fixture_store) == []


def test_failure_while_resolving_leaves_old_kernel_whole(fixture_store, fixture_tree, monkeypatch):
    """The store writes each table while the next ones are resolved; when resolving fails after
    some tables were written, the transaction is rolled back and the old kernel stays whole."""
    before = counts(fixture_store, FIXTURE_RELEASE)
    written = []
    real_copy = EmbeddedStore._copy

    def spy(self, conn, table_name, path, options):
        written.append(table_name)
        return real_copy(self, conn, table_name, path, options)

    def ready_then_fail(key, table):
        put(key, table)
        if key == ("EXPORTS", "Module", "Symbol"):
            raise ValueError("resolving failed (injected)")

    monkeypatch.setattr(EmbeddedStore, "_copy", spy)
    meta, modules, entries, _skipped, _config, _n, _notes = read_kernel([str(fixture_tree)], kernel=FIXTURE_RELEASE, workers=1)
    with pytest.raises(ValueError, match="injected"):
        with fixture_store.writing_kernel(meta) as put:
            build_kernel_graph(meta, modules, entries, ready=ready_then_fail)
    assert written[:3] == ["Module", "Symbol", "EXPORTS"]  # the writer got that far
    monkeypatch.undo()
    assert counts(fixture_store, FIXTURE_RELEASE) == before
    assert fixture_store.kernels() == [FIXTURE_RELEASE]


def test_reader_in_other_process_sees_whole_kernel(db_path, fixture_tree):
    with open_store(db_path) as store:
        load_kernel(store, [str(fixture_tree)], workers=1)
    code = ("from ksymgraph.graph.connect import open_store\n"
            f"s = open_store({str(db_path)!r}, read_only=True)\n"
            "print(s.query('MATCH (m:Module) RETURN count(m)').rows[0][0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"


def test_second_writer_gets_clear_error(db_path):
    with open_store(db_path):
        code = ("from ksymgraph.graph.connect import open_store\nfrom ksymgraph.graph.store import StoreError\n"
                f"try:\n    open_store({str(db_path)!r})\nexcept StoreError as e:\n    print('ERR', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("ERR ")
    assert str(db_path) in out.stdout and "another process" in out.stdout


def test_missing_db_read_only(tmp_path):
    with pytest.raises(StoreError, match="run `ksymgraph load"):
        open_store(tmp_path / "nothing", read_only=True)


def test_resolve_kernel_messages(fixture_store):
    assert fixture_store.resolve_kernel(None) == FIXTURE_RELEASE
    with pytest.raises(StoreError, match="it holds: 6.1.0-fixture"):
        fixture_store.resolve_kernel("7.0")


def test_networkx_projection(fixture_store):
    g = KernelProjection.from_store(fixture_store, FIXTURE_RELEASE).to_networkx()
    assert set(g.edges) == {("prop_d", "core_a"), ("user_b", "core_a"), ("user_c", "user_b")}
    assert sorted(g["user_b"]["core_a"]["symbols"]) == ["a_ns", "a_plain"]


def test_older_database_gains_new_properties(tmp_path, fixture_tree):
    """A store written before a property existed is migrated by adding it (rows read it as null)."""
    import ladybug

    path = tmp_path / "old.lbdb"
    db = ladybug.Database(str(path))
    conn = ladybug.Connection(db)
    conn.execute("CREATE NODE TABLE Function(id STRING, kernel STRING, name STRING, PRIMARY KEY(id))")
    conn.execute("CREATE (:Function {id: 'k|f.c|f', kernel: 'k', name: 'f'})")
    conn.close()
    db.close()
    with open_store(path) as store:
        rows = store.query("MATCH (f:Function) RETURN f.name, f.is_macro, f.line").rows
        assert rows == [("f", None, None)]
        load_kernel(store, [str(fixture_tree)], workers=1)  # and the full schema works
        assert store.kernels() == [FIXTURE_RELEASE]
