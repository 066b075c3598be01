"""The named query library: every query on the embedded store, with the fixture kernel's answers."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_module
from ksymgraph.graph.build import GraphBatch
from ksymgraph.loaders.records import KernelMeta, LookUpEdge
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.schema import NODES, arrow_type, node_id, node_table, rel_table
from ksymgraph.graph.store import StoreError
from ksymgraph.queries.library import QueryError, get_query, list_queries, run_named

#: vmlinux's exports in the fixture: symbol -> GPL-only, from the fixture's Module.symvers.
VMLINUX = {line.split("\t")[1]: line.split("\t")[3] == "EXPORT_SYMBOL_GPL"
           for line in (MODULE_SOURCES / "vmlinux.symvers").read_text().splitlines() if line.strip()}
#: Fixture modules importing vmlinux symbols: kfree (core_a, prop_d), _printk (core_a, weak_e).
VMLINUX_IMPORTERS = {"kfree": 2, "_printk": 2}

NAMES = ["callers", "export-changes", "importers", "lookups", "module-deps", "module-exports",
         "modules-by-license", "unused-exports"]


def test_library_lists_every_query_with_its_parameters():
    assert [q.name for q in list_queries()] == NAMES
    q = get_query("callers")
    assert [(p.name, p.type, p.required) for p in q.params] == [
        ("kernel", "kernel", False), ("function", "string", True), ("depth", "int", False)]
    assert q.params[2].default == 1
    assert set(q.text_by_dialect) == {"", "ladybug"}
    assert "SHORTEST" in q.text("ladybug") and "SHORTEST" not in q.text("neo4j")
    assert q.description.startswith("Functions that call a function") and "LadybugDB" not in q.description
    assert [p.name for p in get_query("export-changes").params] == ["a", "b"]


def test_unknown_name_lists_the_available_ones(fixture_store):
    with pytest.raises(QueryError, match="no named query 'importer'; available: callers, export-changes, importers"):
        run_named(fixture_store, "importer", {})


def test_parameters_are_checked(fixture_store):
    with pytest.raises(QueryError, match=r"needs --param symbol=VALUE"):
        run_named(fixture_store, "importers", {})
    with pytest.raises(QueryError, match=r"takes no parameter sym; it takes: \$kernel"):
        run_named(fixture_store, "importers", {"sym": "kfree"})
    with pytest.raises(QueryError, match=r"\$depth must be int, got \"2\""):
        run_named(fixture_store, "callers", {"function": "f", "depth": "2"})
    with pytest.raises(StoreError, match="kernel '7.0' is not in"):
        run_named(fixture_store, "importers", {"symbol": "kfree", "kernel": "7.0"})


def test_user_text_is_a_parameter_not_cypher(fixture_store):
    evil = "kfree' OR 1=1 //"
    assert run_named(fixture_store, "importers", {"symbol": evil}).rows == []


def test_importers(fixture_store):
    rows = run_named(fixture_store, "importers", {"symbol": "a_plain"})
    assert rows.columns == ["module", "license", "intree", "weak", "crc"]
    assert rows.rows == [("prop_d", "Proprietary", False, False, 0x11110000), ("user_b", "GPL v2", True, False, 0x11110000)]
    weak = run_named(fixture_store, "importers", {"symbol": "maybe_there", "kernel": FIXTURE_RELEASE})
    assert weak.rows == [("weak_e", "GPL", False, True, None)]


def test_module_exports(fixture_store):
    rows = run_named(fixture_store, "module-exports", {"module": "core_a"})
    assert rows.columns == ["symbol", "gpl", "namespace", "crc", "importers"]
    assert [(r[0], r[1], r[2] or "", r[4]) for r in rows.rows] == [
        ("a_data", False, "", 0), ("a_gpl", True, "", 0), ("a_ns", True, "A_NS", 1), ("a_plain", False, "", 2)]
    assert rows.rows[0][3] == 0xDEADBEEF
    vmlinux = run_named(fixture_store, "module-exports", {"module": "vmlinux"}).dicts()
    assert {"kfree", "_printk", "register_kprobe"} <= set(VMLINUX)
    assert {r["symbol"]: r["importers"] for r in vmlinux} == {s: VMLINUX_IMPORTERS.get(s, 0) for s in VMLINUX}


def test_unused_exports(fixture_store):
    rows = run_named(fixture_store, "unused-exports", {})
    assert [(r["module"], r["symbol"], r["gpl"], r["looked_up"]) for r in rows.dicts()] == [
        ("core_a", "a_data", False, False), ("core_a", "a_gpl", True, False),
        *(("vmlinux", s, VMLINUX[s], False) for s in sorted(VMLINUX) if s not in VMLINUX_IMPORTERS)]


def test_module_deps(fixture_store):
    rows = run_named(fixture_store, "module-deps", {"module": "user_b"})
    assert rows.rows == [("core_a", ["a_ns", "a_plain"], True)]
    assert run_named(fixture_store, "module-deps", {"module": "user_c"}).rows == [("user_b", ["b_fn"], True)]
    assert run_named(fixture_store, "module-deps", {"module": "core_a"}).rows == []


def test_modules_by_license(fixture_store):
    rows = run_named(fixture_store, "modules-by-license", {})
    got = [(r["license"], r["gpl_compatible"], r["modules"], sorted(r["names"])) for r in rows.dicts()]
    assert got == [("GPL", True, 3, ["core_a", "vmlinux", "weak_e"]), ("Dual BSD/GPL", True, 1, ["user_c"]),
                   ("GPL v2", True, 1, ["user_b"]), ("Proprietary", False, 1, ["prop_d"])]


def test_lookups(db_path, fixture_tree, extra_modules):
    from ksymgraph.graph.connect import open_store

    edges = [LookUpEdge("prop_d", "kallsyms_lookup_name", "kallsyms_lookup_name", "prop_d.c", 12),
             LookUpEdge("prop_d", "register_kprobe", "symbol_get", "prop_d.c", 30)]
    with open_store(db_path) as store:
        load_kernel(store, [str(fixture_tree), str(extra_modules)], workers=1, lookups=edges)
        rows = run_named(store, "lookups", {"module": "prop_d"})
        assert rows.columns == ["symbol", "how", "file", "line", "exported"]
        assert rows.rows == [("kallsyms_lookup_name", "kallsyms_lookup_name", "prop_d.c", 12, False),
                             ("register_kprobe", "symbol_get", "prop_d.c", 30, True)]
        assert run_named(store, "lookups", {"module": "user_b"}).rows == []
        unused = {(r["symbol"], r["looked_up"]) for r in run_named(store, "unused-exports", {}).dicts()}
        assert ("register_kprobe", True) in unused and ("kallsyms_on_each_symbol", False) in unused


CORE_A_CHANGES = {
    "EXPORT_SYMBOL(a_plain);": "",                                   # removed
    "EXPORT_SYMBOL_NS_GPL(a_ns, A_NS);": "EXPORT_SYMBOL_NS_GPL(a_ns, B_NS);",   # namespace moved
    "EXPORT_SYMBOL_CRC(a_data, 0xdeadbeef);": "EXPORT_SYMBOL_GPL_CRC(a_data, 0xdeadbeef);",  # GPL-only
}


@pytest.fixture
def changed_tree(tmp_path, fixture_tree):
    """A copy of the fixture kernel where core_a dropped, moved, restricted and added exports."""
    root = tmp_path / "lib" / "modules" / "other"
    shutil.copytree(fixture_tree, root)
    src = (MODULE_SOURCES / "core_a.c").read_text()
    for old, new in CORE_A_CHANGES.items():
        assert old in src
        src = src.replace(old, new)
    src += "\nint a_new(int x) { return x; }\nEXPORT_SYMBOL(a_new);\n"
    (tmp_path / "core_a.c").write_text(src)
    compile_module(tmp_path / "core_a.c", root / "kernel" / "core_a.ko")
    return root


def test_export_changes(fixture_store, changed_tree):
    load_kernel(fixture_store, [str(changed_tree)], kernel="other", workers=1)
    rows = run_named(fixture_store, "export-changes", {"a": FIXTURE_RELEASE, "b": "other"})
    assert rows.columns == ["change", "symbol", "module_a", "module_b", "gpl_only_a", "gpl_only_b",
                            "namespace_a", "namespace_b"]
    assert rows.rows == [
        ("added", "a_new", None, "core_a", False, False, None, ""),
        ("gpl-only", "a_data", "core_a", "core_a", False, True, "", ""),
        ("namespace", "a_ns", "core_a", "core_a", True, True, "A_NS", "B_NS"),
        ("removed", "a_plain", "core_a", None, False, False, "", None),
    ]
    back = run_named(fixture_store, "export-changes", {"a": "other", "b": FIXTURE_RELEASE})
    assert [(r[0], r[1]) for r in back.rows] == [("added", "a_plain"), ("namespace", "a_ns"), ("removed", "a_new")]
    assert run_named(fixture_store, "export-changes", {"a": "other", "b": "other"}).rows == []
    with pytest.raises(QueryError, match=r"needs --param b=VALUE"):
        run_named(fixture_store, "export-changes", {"a": "other"})


# The source graph: a hand-made GraphBatch of Function nodes and CALLS edges ----------------------

SOURCE_KERNEL = "6.1.0-src"
#: caller -> callees. Recursion: a -> e -> d -> b -> a; kfree is a Symbol (a call into another module).
CALLS = {"b": ["a"], "c": ["b"], "d": ["b", "c"], "e": ["d"], "a": ["e", "kfree"]}


def _node_table(label: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts; properties left out are null) as the Arrow table of ``label``, typed by the schema."""
    decl = node_table(label)
    fields = [("id", pa.string()), ("kernel", pa.string()), *((p.name, arrow_type(p.type)) for p in decl.props)]
    return pa.table({n: pa.array([r.get(n) for r in rows], type=t) for n, t in fields})


def _rel_table(rtype: str, rows: list[dict]) -> pa.Table:
    decl = rel_table(rtype)
    fields = [("from", pa.string()), ("to", pa.string()), ("kernel", pa.string()),
              *((p.name, arrow_type(p.type)) for p in decl.props)]
    return pa.table({n: pa.array([r.get(n) for r in rows], type=t) for n, t in fields})


def source_batch(kernel: str = SOURCE_KERNEL) -> GraphBatch:
    """Functions a..e in lib/x.c (``c`` static), kfree as a Symbol, and :data:`CALLS`."""
    fid = {f: node_id(kernel, "lib/x.c", f) for f in "abcde"}
    sid = node_id(kernel, "kfree")
    file_id = node_id(kernel, "lib/x.c")
    nodes = {
        "Kernel": _node_table("Kernel", [{"id": node_id(kernel, "kernel"), "kernel": kernel, "release": kernel,
                                          "version": "", "arch": "x86_64", "source": "hand-made"}]),
        "Function": _node_table("Function", [
            {"id": fid[f], "kernel": kernel, "name": f, "file": "lib/x.c", "line": 10 * i + 1, "end_line": 10 * i + 5,
             "static": f == "c", "inline": False} for i, f in enumerate("abcde")]),
        "Symbol": _node_table("Symbol", [{"id": sid, "kernel": kernel, "name": "kfree", "kind": "function"}]),
        "File": _node_table("File", [{"id": file_id, "kernel": kernel, "path": "lib/x.c"}]),
    }
    ff = [{"from": fid[a], "to": fid[b], "kernel": kernel, "line": 100 + i}
          for i, (a, bs) in enumerate(CALLS.items()) for b in bs if b in fid]
    rels = {("CALLS", "Function", "Function"): _rel_table("CALLS", ff),
            ("CALLS", "Function", "Symbol"): _rel_table("CALLS", [{"from": fid["a"], "to": sid, "kernel": kernel,
                                                                   "line": 7}]),
            ("DEFINED_IN", "Function", "File"): _rel_table("DEFINED_IN", [
                {"from": fid[f], "to": file_id, "kernel": kernel} for f in "abcde"])}
    assert set(nodes) <= {n.label for n in NODES}
    return GraphBatch(KernelMeta(kernel, "", "x86_64", "hand-made"), nodes, rels)


#: (caller, depth) expected for callers of ``a`` at each depth; the recursion back to ``a`` (at 4) is left out.
CALLERS_OF_A = {1: [("b", 1)], 2: [("b", 1), ("c", 2), ("d", 2)], 3: [("b", 1), ("c", 2), ("d", 2), ("e", 3)],
                4: [("b", 1), ("c", 2), ("d", 2), ("e", 3)]}


def test_callers_on_a_hand_made_source_graph(fixture_store):
    fixture_store.replace_kernel(source_batch())
    for depth, want in CALLERS_OF_A.items():
        rows = run_named(fixture_store, "callers", {"kernel": SOURCE_KERNEL, "function": "a", "depth": depth})
        assert rows.columns == ["caller", "file", "line", "depth"]
        assert [(r[0], r[3]) for r in rows.rows] == want, depth
    assert run_named(fixture_store, "callers", {"kernel": SOURCE_KERNEL, "function": "a", "depth": 5}).rows == \
        run_named(fixture_store, "callers", {"kernel": SOURCE_KERNEL, "function": "a", "depth": 4}).rows
    of_c = run_named(fixture_store, "callers", {"kernel": SOURCE_KERNEL, "function": "c", "depth": 5})
    assert [(r[0], r[3]) for r in of_c.rows] == [("d", 1), ("e", 2), ("a", 3), ("b", 4)]
    default = run_named(fixture_store, "callers", {"kernel": SOURCE_KERNEL, "function": "a"})
    assert default.rows == [("b", "lib/x.c", 11, 1)]
    # The portable text gives the same answer on LadybugDB (it only walks further to get there).
    portable = get_query("callers").text("")
    for function in "abcde":
        params = {"kernel": SOURCE_KERNEL, "function": function, "depth": 5}
        assert fixture_store.query(portable, params).rows == run_named(fixture_store, "callers", params).rows
    # The fixture kernel has no source graph: no callers, no error.
    assert run_named(fixture_store, "callers", {"kernel": FIXTURE_RELEASE, "function": "a_plain", "depth": 5}).rows == []
