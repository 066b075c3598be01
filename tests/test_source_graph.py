"""The source graph joined with the binary graph, on the hermetic fixture modules and their C files:
functions, calls, export sites, BUILT_INTO from a built tree's .mod files, run-time lookups, and
the call sites and replacements a what-if report gains."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_module
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.graph.connect import open_store
from ksymgraph.queries.callsites import add_source_evidence, exported_callers
from ksymgraph.queries.whatif import parse_changes, what_if

LOOKUP_SOURCES = MODULE_SOURCES.parent / "lookups"


def line_of(path, pattern: str) -> int:
    """1-based line of the first match of ``pattern`` in ``path`` (found independently of the loader)."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.search(pattern, line):
            return n
    raise AssertionError(f"{pattern} not in {path}")


def kernel_a_only(text: str) -> str:
    """The source as kernel A's build sees it: the ``#ifndef KERNEL_B`` part kept, the ``#else``
    part and the directives blanked (lines kept, so line numbers do not move). tree-sitter does
    not preprocess, so kernel B's alternatives would otherwise count as definitions too."""
    out, state = [], None  # None: outside the block; "a": kernel A's part; "b": kernel B's part
    for line in text.splitlines():
        if line.startswith("#ifndef KERNEL_B"):
            state, line = "a", ""
        elif state and line.startswith("#else"):
            state, line = "b", ""
        elif state and line.startswith("#endif"):
            state, line = None, ""
        out.append("" if state == "b" else line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory):
    """An out-of-tree 'built tree': the fixture modules' C files, their objects and Kbuild's .mod files."""
    root = tmp_path_factory.mktemp("built") / "fixture-src"
    root.mkdir()
    shutil.copy(MODULE_SOURCES / "fixture_module.h", root)
    for src in [*sorted(MODULE_SOURCES.glob("*.c")), LOOKUP_SOURCES / "probe_f.c"]:
        (root / src.name).write_text(kernel_a_only(src.read_text()))
        compile_module(root / src.name, root / f"{src.stem}.ko")
        (root / f"{src.stem}.mod").write_text(f"{root / src.stem}.o\n")
    return root


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, fixture_tree, built_tree):
    """(store, load summary): the kernel, probe_f.ko and prop_d.ko from the built tree, and its source."""
    s = open_store(tmp_path_factory.mktemp("srcdb") / "graph.lbdb")
    summary = load_kernel(s, [str(fixture_tree), str(built_tree / "probe_f.ko"), str(built_tree / "prop_d.ko")],
                          workers=1, source_dirs=[str(built_tree)])
    yield s, summary
    s.close()


@pytest.fixture
def store(loaded):
    return loaded[0]


def q(store, cypher, **params):
    return store.query(cypher, {"k": FIXTURE_RELEASE, **params}).rows


def test_functions_files_and_attribution(store, built_tree):
    rows = q(store, "MATCH (f:Function)-[:DEFINED_IN]->(file:File)-[:BUILT_INTO]->(m:Module) "
                    "WHERE f.kernel = $k AND f.name IN ['a_plain', 'b_fn', 'c_fn', 'd_fn', 'lookup_funcptr'] "
                    "RETURN f.name, file.path, m.name, f.line, f.static ORDER BY f.name")
    assert rows == [
        ("a_plain", "fixture-src/core_a.c", "core_a", line_of(built_tree / "core_a.c", r"^int a_plain\("), False),
        ("b_fn", "fixture-src/user_b.c", "user_b", line_of(built_tree / "user_b.c", r"^int b_fn\("), False),
        ("c_fn", "fixture-src/user-c.c", "user_c", line_of(built_tree / "user-c.c", r"^int c_fn\("), False),
        ("d_fn", "fixture-src/prop_d.c", "prop_d", line_of(built_tree / "prop_d.c", r"^int d_fn\("), False),
        ("lookup_funcptr", "fixture-src/probe_f.c", "probe_f",
         line_of(built_tree / "probe_f.c", r"^static unsigned long lookup_funcptr"), True),
    ]
    mods = q(store, "MATCH (m:Module) WHERE m.kernel = $k AND m.in_tree_source = true RETURN m.name ORDER BY m.name")
    assert [r[0] for r in mods] == ["core_a", "probe_f", "prop_d", "user_b", "user_c", "weak_e"]


def test_calls_resolve_to_functions_and_symbols(store, built_tree):
    rows = q(store, "MATCH (f:Function)-[c:CALLS]->(g:Function) WHERE f.kernel = $k AND f.name = 'b_fn' "
                    "RETURN g.name, g.file, c.line ORDER BY g.name")
    line = line_of(built_tree / "user_b.c", r"return a_plain\(x\) \+ a_ns")
    assert rows == [("a_ns", "fixture-src/core_a.c", line), ("a_plain", "fixture-src/core_a.c", line)]
    # calls out of the tree go to symbols: kfree is vmlinux's export
    rows = q(store, "MATCH (f:Function)-[c:CALLS]->(s:Symbol) WHERE f.kernel = $k AND f.name = 'd_fn' "
                    "RETURN s.name ORDER BY s.name")
    assert rows == [("kfree",)]


def test_export_sites_and_implements(store, built_tree):
    rows = q(store, "MATCH (f:Function)-[e:EXPORTED_AS]->(s:Symbol) WHERE f.kernel = $k AND f.file = $file "
                    "RETURN s.name, e.gpl, e.namespace, e.line ORDER BY s.name", file="fixture-src/core_a.c")
    src = built_tree / "core_a.c"
    assert rows == [
        ("a_gpl", True, "", line_of(src, r"^EXPORT_SYMBOL_GPL\(a_gpl\)")),
        ("a_ns", True, "A_NS", line_of(src, r"^EXPORT_SYMBOL_NS_GPL\(a_ns, A_NS\)")),
        ("a_plain", False, "", line_of(src, r"^EXPORT_SYMBOL\(a_plain\)")),
    ]
    rows = q(store, "MATCH (f:Function)-[:IMPLEMENTS]->(s:Symbol)<-[:EXPORTS]-(m:Module) "
                    "WHERE f.kernel = $k AND s.name = 'a_plain' RETURN f.file, m.name, s.kind")
    assert rows == [("fixture-src/core_a.c", "core_a", "function")]
    # a_data is a variable: nothing implements it, the binaries cannot tell its kind
    assert q(store, "MATCH (s:Symbol) WHERE s.kernel = $k AND s.name = 'a_data' RETURN s.kind") == [("unknown",)]


def test_lookups_become_looks_up_edges(store, built_tree):
    rows = q(store, "MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol) WHERE m.kernel = $k "
                    "RETURN m.name, s.name, l.how, l.line ORDER BY s.name")
    src = built_tree / "probe_f.c"
    assert rows == [
        ("probe_f", "do_sys_open", "kprobe", line_of(src, r'kp2.symbol_name = "do_sys_open"')),
        ("probe_f", "kallsyms_lookup_name", "kprobe", line_of(src, r'\.symbol_name = "kallsyms_lookup_name"')),
        ("probe_f", "vfs_read", "wrapper:lookup_funcptr", line_of(src, r'lookup_funcptr\("vfs_read"\)')),
    ]


def test_whatif_report_gains_call_sites_and_lookups(store, built_tree):
    proj = KernelProjection.from_store(store, FIXTURE_RELEASE)
    r = add_source_evidence(what_if(proj, parse_changes(unexport=["a_plain", "register_kprobe"])), store)
    assert [c.to_json() for c in r.call_sites["user_b"]] == [{"symbol": "a_plain", "function": "b_fn", "file": "fixture-src/user_b.c",
                                       "line": line_of(built_tree / "user_b.c", r"return a_plain\(x\)"), "via": None, "kind": "call", "reference": None, "chain": []}]
    assert [c.to_json() for c in r.call_sites["prop_d"]] == [{"symbol": "a_plain", "function": "d_fn", "file": "fixture-src/prop_d.c",
                                       "line": line_of(built_tree / "prop_d.c", r"return a_plain\(x\)"), "via": None, "kind": "call", "reference": None, "chain": []}]
    probe = sorted((c.symbol, c.function, c.line) for c in r.call_sites["probe_f"])
    assert [p[:2] for p in probe] == [("register_kprobe", "f_init"), ("register_kprobe", "f_init")]
    hits = {(h.lookup.symbol, h.lookup.how): h.why for h in r.lookups}
    assert set(hits) == {("kallsyms_lookup_name", "kprobe"), ("do_sys_open", "kprobe"),
                         ("vfs_read", "wrapper:lookup_funcptr")}
    assert hits[("vfs_read", "wrapper:lookup_funcptr")].startswith("resolved through kallsyms_lookup_name")
    assert "user_c" not in r.call_sites  # inherited breaks have no call sites of their own


def test_replacements_are_exported_callers(store):
    reps = exported_callers(store, FIXTURE_RELEASE, "_printk", hops=2)
    assert [(x.export, x.hops, x.gpl) for x in reps] == [("a_plain", 1, False), ("b_fn", 2, True)]
    assert [x.export for x in exported_callers(store, FIXTURE_RELEASE, "_printk", hops=1)] == ["a_plain"]
    proj = KernelProjection.from_store(store, FIXTURE_RELEASE)
    r = add_source_evidence(what_if(proj, parse_changes(unexport=["a_ns"])), store, hops=1)
    assert [x.export for x in r.replacements["a_ns"]] == ["b_fn"]


def test_source_counts_reported(loaded):
    store, summary = loaded
    c = summary.report.source
    macros = q(store, "MATCH (f:Function) WHERE f.kernel = $k AND f.is_macro = true RETURN f.name, f.file")
    names = {n for n, _ in macros}
    assert {"EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL", "MODULE_LICENSE", "MODULE_IMPORT_NS"} <= names
    assert {f for _, f in macros} == {"fixture-src/fixture_module.h"}
    scopes = q(store, "MATCH (f:Function)-[c:CALLS]->(g) WHERE f.kernel = $k AND f.name = '(file scope)' "
                      "AND f.file = 'fixture-src/user_b.c' RETURN g.name, c.line ORDER BY c.line")
    assert [n for n, _ in scopes] == ["EXPORT_SYMBOL_GPL", "MODULE_LICENSE", "MODULE_IMPORT_NS", "MODULE_INFO",
                                      "MODULE_INFO", "MODULE_VERSION_CRC", "MODULE_VERSION_CRC"]
    # a_plain a_gpl a_ns b_fn c_fn d_fn e_fn lookup_funcptr f_init, the header's macros and one
    # file-scope pseudo-function per .c file
    assert (c["Function"], c["EXPORTED_AS"], c["LOOKS_UP"], c["BUILT_INTO"]) == (9 + len(macros) + 6, 4, 3, 6)
    assert c["unattributed_files"] == 1  # the header
    assert (summary.parse.files, summary.parse.functions, summary.parse.function_error_share()) == (7, 9, 0.0)
    assert summary.report.unmapped == []  # every module read from a file has source
    calls = q(store, "MATCH (f:Function)-[:CALLS]->(g:Function) WHERE f.kernel = $k AND f.name = 'EXPORT_SYMBOL' "
                     "RETURN g.name ORDER BY g.name")
    assert calls == [("EXPORT_SYMBOL_CRC",)]


def test_upgrade_impact_lists_call_sites(tmp_path, fixture_tree, fixture_tree_b, built_tree):
    from conftest import FIXTURE_RELEASE_B
    from ksymgraph.queries.diff import upgrade_impact

    with open_store(tmp_path / "db") as s:
        load_kernel(s, [str(fixture_tree), str(built_tree / "prop_d.ko")], workers=1, source_dirs=[str(built_tree)])
        load_kernel(s, [str(fixture_tree_b)], workers=1)
        u = upgrade_impact(s, FIXTURE_RELEASE, FIXTURE_RELEASE_B, names=["prop_d", "user_b"])
    sites = {m.module: [c.to_json() for c in m.call_sites] for m in u.modules}
    assert sites["prop_d"] == [{"symbol": "a_plain", "function": "d_fn", "file": "fixture-src/prop_d.c",
                                "line": line_of(built_tree / "prop_d.c", r"return a_plain\(x\)"), "via": None, "kind": "call", "reference": None, "chain": []}]
    assert sites["user_b"] == [{"symbol": "a_plain", "function": "b_fn", "file": "fixture-src/user_b.c",
                                "line": line_of(built_tree / "user_b.c", r"return a_plain\(x\)"), "via": None, "kind": "call", "reference": None, "chain": []}]


def test_call_site_through_header_inline(tmp_path, fixture_tree):
    """A module that calls an API inline of a header: the call site is its call of the API."""
    root = tmp_path / "api-src"
    root.mkdir()
    shutil.copy(MODULE_SOURCES / "fixture_module.h", root)
    shutil.copy(MODULE_SOURCES.parent / "headers" / "a" / "include" / "linux" / "fixture_api.h", root)
    (root / "api_user.c").write_text('#include "fixture_module.h"\n#include "fixture_api.h"\n\n'
                                     "int u_fn(int x)\n{\n\treturn a_api(x) + 1;\n}\n\nMODULE_LICENSE(\"GPL\");\n")
    compile_module(root / "api_user.c", root / "api_user.ko")
    (root / "api_user.mod").write_text(f"{root / 'api_user.o'}\n")
    with open_store(tmp_path / "db") as s:
        load_kernel(s, [str(fixture_tree), str(root / "api_user.ko")], workers=1, source_dirs=[str(root)])
        r = add_source_evidence(what_if(KernelProjection.from_store(s, FIXTURE_RELEASE),
                                        parse_changes(unexport=["a_plain"])), s)
    assert [c.to_json() for c in r.call_sites["api_user"]] == [{"symbol": "a_plain", "function": "u_fn", "file": "api-src/api_user.c",
                                         "line": 6, "via": "a_api", "kind": "call", "reference": None,
                                         "chain": ["a_api", "a_plain"]}]


def test_check_lists_in_tree_modular_users_of_missing_symbols(tmp_path, fixture_tree):
    """`check` of a module needing an unexported symbol names the in-tree modular code that calls it."""
    from ksymgraph.queries.check import check_modules
    from ksymgraph.loaders.modules import read_module_file

    root = tmp_path / "intree"
    root.mkdir()
    shutil.copy(MODULE_SOURCES / "fixture_module.h", root)
    (root / "inuse.c").write_text('#include "fixture_module.h"\nextern int hidden_fn(int);\n'
                                  "int in_fn(int x)\n{\n\treturn hidden_fn(x);\n}\nMODULE_LICENSE(\"GPL\");\n")
    compile_module(root / "inuse.c", root / "inuse.ko")
    (root / "inuse.mod").write_text(f"{root / 'inuse.o'}\n")
    needy = tmp_path / "needy.c"
    needy.write_text('#include "fixture_module.h"\nextern int hidden_fn(int);\n'
                     "int n_fn(int x) { return hidden_fn(x); }\nMODULE_LICENSE(\"GPL\");\n")
    needy_ko = read_module_file(str(compile_module(needy, tmp_path / "needy.ko")))
    with open_store(tmp_path / "db") as s:
        load_kernel(s, [str(fixture_tree), str(root / "inuse.ko")], workers=1, source_dirs=[str(root)])
        result = check_modules(KernelProjection.from_store(s, FIXTURE_RELEASE), [needy_ko], s)
    (m,) = result.modules
    assert not m.loads and result.source_loaded
    assert m.to_json()["missing"] == {"hidden_fn": [{"module": "inuse", "symbol": "hidden_fn", "function": "in_fn",
                                                     "file": "intree/inuse.c", "line": 5, "via": None, "kind": "call", "reference": None, "chain": []}]}
