"""References (data reads, addresses taken, file-scope initialisers) and calls through macros, on a
hermetic module compiled with gcc: the C loader's records, the macro pass's expansion of
``module_param``, the REFERENCES relationship in the embedded store (and in Neo4j when
``NEO4J_URI`` is set), the what-if's worklist and ``check``'s justification lists.

The oracle is the compiler: every symbol ``ref_g.ko`` imports (gcc's undefined symbols, read from
the object) must be reached by a call site or a reference site of ``ref_g.c``."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import MODULE_SOURCES, compile_module, fresh_store
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.loaders import ctree, macros
from ksymgraph.loaders.cparse import parse_source
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.queries.callsites import add_source_evidence, call_sites
from ksymgraph.queries.check import check_modules
from ksymgraph.queries.whatif import parse_changes, what_if

REFS = MODULE_SOURCES.parent / "refs"
RELEASE = "6.1.0-refs"


def line_of(path, pattern: str) -> int:
    """1-based line of the first match of ``pattern`` in ``path`` (found independently of the loader)."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.search(pattern, line):
            return n
    raise AssertionError(f"{pattern} not in {path}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(kernel dir, source tree): a ``lib/modules/6.1.0-refs`` whose vmlinux exports what ref_g
    needs, and the built tree of ref_g.c (in-tree) and ref_h.c (uses a symbol nobody exports)."""
    base = tmp_path_factory.mktemp("refs")
    src = base / "refs-src"
    src.mkdir()
    for f in ("ref_g.c", "ref_h.c", "refs.h"):
        shutil.copy(REFS / f, src)
    shutil.copy(MODULE_SOURCES / "fixture_module.h", src)
    for stem in ("ref_g", "ref_h"):
        compile_module(src / f"{stem}.c", src / f"{stem}.ko")
        (src / f"{stem}.mod").write_text(f"{src / stem}.o\n")
    kernel = base / "lib" / "modules" / RELEASE
    (kernel / "build").mkdir(parents=True)
    (kernel / "kernel").mkdir()
    shutil.copy(REFS / "vmlinux.symvers", kernel / "build" / "Module.symvers")
    return kernel, src


def load(store, tree):
    kernel, src = tree
    return load_kernel(store, [str(kernel), str(src / "ref_g.ko"), str(src / "ref_h.ko")], workers=1,
                       source_dirs=[str(src)])


@pytest.fixture(scope="module")
def store(tmp_path_factory, tree):
    with fresh_store(tmp_path_factory, "refsdb") as s:
        load(s, tree)
        yield s


# The loader ----------------------------------------------------------------------------------------


def test_the_loader_reads_reads_addresses_and_initialisers():
    src = REFS / "ref_g.c"
    r = parse_source(src.read_bytes(), "ref_g.c")
    got = {(x.function, x.symbol, x.line, x.kind) for x in r.references}
    fs = ctree.FILE_SCOPE
    assert got == {
        ("g_read", "jiffies", line_of(src, r"return \(long\)jiffies"), "read"),
        ("g_init", "jiffies", line_of(src, r"start = jiffies"), "read"),
        ("g_init", "platform_bus_type", line_of(src, r"&platform_bus_type"), "address"),
        ("g_init", "current", line_of(src, r"current->pid"), "read"),
        ("g_init", "g_read", line_of(src, r"request_handler\(g_read\)"), "read"),
        (fs, "generic_file_open", line_of(src, r"\.open = generic_file_open"), "initialiser"),
        (fs, "g_read", line_of(src, r"\.read = g_read"), "initialiser"),
    }
    # not references: the locals start/bus/debug_copy, the parameter file, the file's own statics
    # debug/lock/m/g_fops, the callees, struct members, MODULE_LICENSE's constants


def test_locals_parameters_members_and_constants_are_not_references():
    src = (b"struct s { int list; };\n"
           b"int f(int jiffies, struct s *p)\n{\n\tint kmalloc_caches = 1;\n"
           b"\tstruct s *q = container_of(p, struct s, list);\n"
           b"\treturn jiffies + kmalloc_caches + GFP_KERNEL + q->list + system_wq;\n}\n")
    r = parse_source(src, "x.c")
    assert [(x.function, x.symbol, x.line, x.kind) for x in r.references] == [("f", "system_wq", 6, "read")]


def test_identifiers_deeper_than_the_bound_are_counted_not_read():
    n = ctree.MAX_DEPTH + 1000
    src = b"int deep(void)\n{\n\treturn " + b"(" * n + b"jiffies" + b")" * n + b" + system_wq;\n}\n"
    r = parse_source(src, "deep.c")
    assert r.stats.references_too_deep == 1
    assert [x.symbol for x in r.references] == ["system_wq"]
    assert "1 identifiers nested deeper than 4000 levels not read as references" in r.error


def test_module_param_expands_to_the_ops_it_names():
    header = REFS / "refs.h"
    table = {m.name: m for _d, _c, _r, m in macros.for_each_macro_record(REFS, ["refs.h"]) if m is not None}
    found = list(macros.expand_pasted(table, "module_param", [b"debug", b"int", b"0644"]))
    assert ("param_ops_int", ("module_param", "module_param_named")) in found
    # what pasting makes and nobody calls; a name written in a body is that macro's own record
    assert {name for name, _ in found} == {"param_ops_int", "__param_str_debug", "__param_debug"}
    records = {d.name: (d.line, [c.callee for c in cs], [(r.symbol, r.kind) for r in rs])
               for d, cs, rs, _m in macros.for_each_macro_record(REFS, ["refs.h"])}
    assert records["current"] == (line_of(header, r"#define current"), ["get_current"], [])
    assert records["raw_spin_lock"][1] == ["_raw_spin_lock"]
    assert records["mutex_init"][1] == ["__mutex_init"]
    assert records["printk"][1] == ["_printk"]


def test_expansion_is_bounded():
    # a macro that pastes and invokes itself through another: each level is expanded once
    table = {m.name: m for _d, _c, _r, m in macros._macros_of(
        b"#define a(x) b(x##_1) p_##x\n#define b(y) a(y) q_##y\n", "m.h", None) if m is not None}
    found = list(macros.expand_pasted(table, "a", [b"z"]))
    assert found == [("q_z_1", ("a", "b")), ("z_1", ("a",)), ("p_z", ("a",))]
    wide = {"w": macros.Macro("w", (b"x",), False, b"w2(x) w2(x) w2(x) w2(x)"),
            "w2": macros.Macro("w2", (b"x",), False, b"w(x##_)")}
    # w2 pastes v_ for w, which is not expanded again inside itself: four names, no recursion
    assert list(macros.expand_pasted(wide, "w", [b"v"])) == [("v_", ("w", "w2"))] * 4
    # each level invokes the next twice: 2^15 invocations, cut by the token budget
    fan = {f"f{i}": macros.Macro(f"f{i}", (b"x",), False, f"f{i + 1}(x) f{i + 1}(x) p_##x".encode())
           for i in range(15)}
    found = list(macros.expand_pasted(fan, "f0", [b"v"]))
    assert 0 < len(found) < macros.MAX_EXPANSION_TOKENS // 4
    assert max(len(chain) for _, chain in found) <= macros.MAX_EXPANSION_DEPTH


# The graph -----------------------------------------------------------------------------------------


def test_references_are_in_the_embedded_store(store, tree):
    _kernel, src = tree
    rows = store.query("MATCH (f:Function)-[r:REFERENCES]->(t) WHERE r.kernel = $k "
                       "RETURN f.name, t.name, r.line, r.kind, r.via ORDER BY f.name, r.line, t.name",
                       {"k": RELEASE}).rows
    c = src / "ref_g.c"
    fs = ctree.FILE_SCOPE
    assert sorted(map(list, rows)) == sorted([
        [fs, "param_ops_int", line_of(c, r"^module_param"), "initialiser", "module_param → module_param_named"],
        [fs, "generic_file_open", line_of(c, r"\.open ="), "initialiser", ""],
        [fs, "g_read", line_of(c, r"\.read ="), "initialiser", ""],
        ["g_read", "jiffies", line_of(c, r"return \(long\)jiffies"), "read", ""],
        ["g_init", "jiffies", line_of(c, r"start = jiffies"), "read", ""],
        ["g_init", "platform_bus_type", line_of(c, r"&platform_bus_type"), "address", ""],
        ["g_init", "current", line_of(c, r"current->pid"), "read", ""],
        ["g_init", "g_read", line_of(c, r"request_handler\(g_read\)"), "address", ""],  # a function's name
        ["get_current", "current_task", line_of(src / "refs.h", r"return current_task"), "read", ""],
        ["h_fn", "hidden_table", line_of(src / "ref_h.c", r"hidden_table\[i\]"), "read", ""],
    ])


def test_every_import_of_the_module_is_a_call_or_reference_site(store, tree):
    _kernel, src = tree
    imports = read_module_file(str(src / "ref_g.ko")).imports.symbols
    sites = call_sites(store, RELEASE, ["ref_g"], imports)
    assert {s.symbol for s in sites} == set(imports)
    through = {(s.symbol, s.through) for s in sites}
    assert ("_raw_spin_lock", "spin_lock → raw_spin_lock → _raw_spin_lock") in through
    assert ("__mutex_init", "mutex_init → __mutex_init") in through
    assert ("_printk", "printk → _printk") in through
    assert ("current_task", "reference (read) current → get_current → current_task") in through
    assert ("param_ops_int", "reference (initialiser) module_param → module_param_named → param_ops_int") in through


def test_whatif_worklist_lists_reference_sites(store, tree):
    _kernel, src = tree
    proj = KernelProjection.from_store(store, RELEASE)
    r = add_source_evidence(what_if(proj, parse_changes(unexport=["param_ops_int", "jiffies"])), store)
    c = src / "ref_g.c"
    sites = [s.to_json() for s in r.call_sites["ref_g"]]
    assert sites == [
        {"symbol": "jiffies", "function": "g_read", "file": "refs-src/ref_g.c",
         "line": line_of(c, r"return \(long\)jiffies"), "via": None, "kind": "reference", "reference": "read",
         "chain": []},
        {"symbol": "jiffies", "function": "g_init", "file": "refs-src/ref_g.c", "line": line_of(c, r"start = jiffies"),
         "via": None, "kind": "reference", "reference": "read", "chain": []},
        {"symbol": "param_ops_int", "function": ctree.FILE_SCOPE, "file": "refs-src/ref_g.c",
         "line": line_of(c, r"^module_param"), "via": "module_param", "kind": "reference", "reference": "initialiser",
         "chain": ["module_param", "module_param_named", "param_ops_int"]},
    ]
    data = r.to_json()
    (broken,) = [b for b in data["broken"] if b["module"] == "ref_g"]
    assert broken["call_sites"] == sites


def test_check_justifies_with_a_reference(store, tree, tmp_path):
    needy = tmp_path / "needy.c"
    needy.write_text('#include "fixture_module.h"\nextern int hidden_table[];\n'
                     "int n_fn(int i) { return hidden_table[i]; }\nMODULE_LICENSE(\"GPL\");\n")
    needy_ko = read_module_file(str(compile_module(needy, tmp_path / "needy.ko")))
    result = check_modules(KernelProjection.from_store(store, RELEASE), [needy_ko], store)
    (m,) = result.modules
    assert not m.loads and result.source_loaded
    src = tree[1] / "ref_h.c"
    assert m.to_json()["missing"] == {"hidden_table": [
        {"module": "ref_h", "symbol": "hidden_table", "function": "h_fn", "file": "refs-src/ref_h.c",
         "line": line_of(src, r"hidden_table\[i\]"), "via": None, "kind": "reference", "reference": "read",
         "chain": []}]}


def test_load_summary_counts_references(tmp_path, tree):
    with open_store(tmp_path / "db") as s:
        summary = load(s, tree)
    assert summary.report.source["REFERENCES->Symbol"] == 7  # jiffies x2, platform_bus_type, ...
    assert summary.report.source["REFERENCES->Function"] == 3  # g_read in the ops table and passed, current


@pytest.mark.neo4j
def test_neo4j_has_the_same_references_and_sites(store, tree):
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    q = ("MATCH (f:Function)-[r:REFERENCES]->(t) WHERE r.kernel = $k "
         "RETURN f.name, t.name, r.line, r.kind, r.via ORDER BY f.name, r.line, t.name")
    neo = Neo4jStore(live_uri())
    try:
        load(neo, tree)
        assert neo.query(q, {"k": RELEASE}).rows == store.query(q, {"k": RELEASE}).rows
        imports = read_module_file(str(tree[1] / "ref_g.ko")).imports.symbols
        assert call_sites(neo, RELEASE, ["ref_g"], imports) == call_sites(store, RELEASE, ["ref_g"], imports)
    finally:
        neo.delete_kernel(RELEASE)
        neo.close()


def test_a_store_written_before_references_still_answers(tmp_path, tree):
    """An embedded store written by an earlier ksymgraph has no REFERENCES table until its next
    write, and LadybugDB refuses a query naming a table it lacks: a reader (the CLI opens stores
    read-only) gets the call sites of calls."""
    import ladybug

    from ksymgraph.queries.callsites import has_references

    path = tmp_path / "old.lbdb"
    with open_store(path) as s:
        load(s, tree)
        assert has_references(s)
    db = ladybug.Database(str(path))
    ladybug.Connection(db).execute("DROP TABLE REFERENCES")
    db.close()
    with open_store(path, read_only=True) as s:
        assert not has_references(s)
        sites = call_sites(s, RELEASE, ["ref_g"], ["_raw_spin_lock", "jiffies", "param_ops_int"])
    assert [(c.symbol, c.kind, c.chain) for c in sites] == [
        ("_raw_spin_lock", "call", ("spin_lock", "raw_spin_lock", "_raw_spin_lock"))]


def test_an_upper_case_name_in_a_headers_inline_is_a_reference():
    """arch/x86/include/asm/page_64.h's __phys_addr_nodebug() names PAGE_OFFSET, a macro for the
    variable page_offset_base: in a header's inline the name is kept (the graph resolves it only to
    a macro that leads to a symbol); in a .c file, or outside a function, an upper-case name is a
    constant, as are names of fewer than four characters (``HZ``)."""
    text = (b"static inline unsigned long __phys_addr_nodebug(unsigned long x)\n"
            b"{ return x - PAGE_OFFSET + HZ; }\nint table[] = { PAGE_SIZE };\n")
    header = parse_source(text, "arch/x86/include/asm/page_64.h")
    assert [(r.function, r.symbol) for r in header.references] == [("__phys_addr_nodebug", "PAGE_OFFSET")]
    assert [(r.function, r.symbol) for r in parse_source(text, "drivers/x.c").references] == []
