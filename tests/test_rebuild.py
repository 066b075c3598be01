"""Rebuild impact through header inlines, on two hermetic fixture kernels, with gcc as the oracle.

tests/fixtures/rebuild/ holds kernel A (6.6.14) and kernel B (6.6.15): their headers and their
vmlinux Module.symvers. Their headers differ as 6.6.15's did: B's ``pfn_valid()`` calls
``rcu_read_lock()``, whose inline calls the GPL-only ``__rcu_read_lock`` under
``CONFIG_PREEMPT_RCU``; and as 6.10's did: B's ``kmalloc()`` is a macro over ``kmalloc_noprof()``.
An out-of-tree tree of three modules (a CDDL one and a GPL one calling ``pfn_valid()`` and
``kmalloc()`` through their own header's inline; one using an export B drops and one B
namespaces) is built against A with gcc and loaded with A and its source. The prediction for a
rebuild against B must equal the undefined symbols of the same sources compiled by gcc against
B's headers, and B's load rules decide the rest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.queries import usecases
from ksymgraph.queries.library import QueryError
from ksymgraph.queries.rebuild import edge_types, is_kernel_header, predict_rebuild
from ksymgraph.queries.report import render_rebuild

FIXTURES = Path(__file__).parent / "fixtures"
REBUILD = FIXTURES / "rebuild"
A, B, B_BARE = "6.6.14-fixture", "6.6.15-fixture", "6.6.15-noheaders"
MODULES = ["cddl_pfn", "gpl_pfn", "old_user"]
#: What a kernel build passes for Debian's configuration: PREEMPT_RCU (Debian: PREEMPT_DYNAMIC).
DEFINES = ["-DCONFIG_PREEMPT_RCU"]


def compile_against(src: Path, kernel: str, out: Path, release: str) -> Path:
    """``src`` compiled by gcc as Kbuild would against ``kernel``'s headers (``a`` or ``b``)."""
    subprocess.run(["gcc", "-O2", "-fno-pic", *DEFINES, f'-DVERMAGIC="{release} SMP mod_unload modversions "',
                    "-I", str(src.parent), "-I", str(REBUILD / kernel / "include"), "-c", str(src), "-o", str(out)],
                   check=True)
    return out


def undefined(obj: Path) -> set[str]:
    """The undefined symbols of an object, as the module loader would have to resolve them."""
    return set(read_module_file(str(obj)).imports.symbols)


@pytest.fixture(scope="module")
def module_tree(tmp_path_factory) -> Path:
    """The out-of-tree modules built against A, with Kbuild's .mod files."""
    root = tmp_path_factory.mktemp("rebuild") / "pfnmod"
    shutil.copytree(REBUILD / "module", root)
    shutil.copy(FIXTURES / "modules" / "fixture_module.h", root)
    for src in sorted(root.glob("*.c")):
        compile_against(src, "a", root / f"{src.stem}.ko", A)
        (root / f"{src.stem}.mod").write_text(f"{root / src.stem}.o\n")
    return root


@pytest.fixture(scope="module")
def oracle(module_tree, tmp_path_factory) -> dict[str, set[str]]:
    """module → the undefined symbols of its sources compiled against B's headers."""
    out = tmp_path_factory.mktemp("built-b")
    return {src.stem: undefined(compile_against(src, "b", out / f"{src.stem}.o", B))
            for src in sorted(module_tree.glob("*.c"))}


def references_in_schema() -> bool:
    from ksymgraph.graph.schema import RELS

    return any(r.type == "REFERENCES" for r in RELS)


@pytest.fixture(scope="module")
def store(module_tree, tmp_path_factory):
    """A with the modules, their source and A's headers; B with its headers; B again without them."""
    s = open_store(tmp_path_factory.mktemp("rbdb") / "graph.lbdb")
    load_kernel(s, [str(REBUILD / "a" / "Module.symvers"), str(module_tree)], kernel=A, workers=1,
                source_dirs=[str(module_tree), str(REBUILD / "a")])
    load_kernel(s, [str(REBUILD / "b" / "Module.symvers")], kernel=B, workers=1, source_dirs=[str(REBUILD / "b")])
    load_kernel(s, [str(REBUILD / "b" / "Module.symvers")], kernel=B_BARE, workers=1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def prediction(store):
    return predict_rebuild(store, A, B, names=MODULES)


def by_module(p):
    return {m.module: m for m in p.modules}


def test_the_headers_differ_as_the_real_kernels_did(module_tree):
    """The fixture itself: built against A the modules import no RCU symbol, against B they do."""
    built_a = {m: undefined(module_tree / f"{m}.ko") for m in MODULES}
    assert built_a["cddl_pfn"] == {"early_section_valid", "__kmalloc", "kfree"}
    assert built_a["old_user"] == {"old_api", "ns_fn"}


def test_prediction_equals_what_gcc_builds_against_b(prediction, oracle):
    got = {m.module: {i.symbol for i in m.imports} for m in prediction.modules}
    assert got == {m: oracle[m] for m in MODULES}
    # and the compiler's new imports are those the rebuild says it adds
    assert {m.module: set(m.new) for m in prediction.modules} == {
        "cddl_pfn": {"__kmalloc_noprof", "__rcu_read_lock", "__rcu_read_unlock", "pfn_section_valid"},
        "gpl_pfn": {"__kmalloc_noprof", "__rcu_read_lock", "__rcu_read_unlock", "pfn_section_valid"},
        "old_user": set()}


def test_rebuild_against_a_itself_equals_the_built_modules(store, module_tree):
    """The same walk through A's own headers gives what gcc made of them: the .ko files loaded."""
    p = predict_rebuild(store, A, A, names=MODULES)
    assert {m.module: {i.symbol for i in m.imports} for m in p.modules} == \
        {m: undefined(module_tree / f"{m}.ko") for m in MODULES}
    assert all(m.loads and not m.new and not m.dropped for m in p.modules)


def test_non_gpl_module_fails_on_b_with_the_chain(prediction):
    m = by_module(prediction)["cddl_pfn"]
    assert m.source and m.loads is False and m.license == "CDDL"
    assert [(b.rule, b.symbol, b.chain) for b in m.breaks] == [
        ("gpl-only", "__rcu_read_lock", ("pfn_valid", "rcu_read_lock", "__rcu_read_lock")),
        ("gpl-only", "__rcu_read_unlock", ("pfn_valid", "rcu_read_unlock", "__rcu_read_unlock")),
    ]
    first = m.breaks[0]
    assert first.message == "GPL-incompatible module cddl_pfn.ko uses GPL-only symbol '__rcu_read_lock'"
    line = next(n for n, text in enumerate((REBUILD / "module" / "pfn_user.h").read_text().splitlines(), 1)
                if "pfn_valid(pfn)" in text)
    assert first.through == f"pfn_user_check (pfnmod/pfn_user.h:{line}): pfn_valid → rcu_read_lock → __rcu_read_lock"


def test_gpl_module_loads_on_b(prediction):
    m = by_module(prediction)["gpl_pfn"]
    assert m.loads is True and m.breaks == []
    rcu = next(i for i in m.imports if i.symbol == "__rcu_read_lock")
    assert rcu.gpl and rcu.exported_by == "vmlinux" and rcu.chain == ("pfn_valid", "rcu_read_lock", "__rcu_read_lock")


def test_macro_rename_is_followed_and_a_s_inline_is_not(prediction):
    m = by_module(prediction)["gpl_pfn"]
    km = next(i for i in m.imports if i.symbol == "__kmalloc_noprof")
    assert km.chain == ("kmalloc", "kmalloc_noprof", "__kmalloc_noprof")
    # A's kmalloc called __kmalloc and A's pfn_valid early_section_valid: B's headers call neither
    assert m.dropped == ["__kmalloc", "early_section_valid"]


def test_unknown_symbol_and_namespace(prediction):
    m = by_module(prediction)["old_user"]
    assert [(b.rule, b.symbol, b.message) for b in m.breaks] == [
        ("unknown-symbol", "old_api", '"old_api" [old_user.ko] undefined!'),
        ("namespace", "ns_fn", "module old_user uses symbol ns_fn from namespace FIXTURE_NS, but does not import it."),
    ]
    assert by_module(prediction)["old_user"].imports[1].exported_by == ""  # old_api: B does not export it
    assert prediction.summary == {"modules": 3, "with_source": 3, "fail": 2, "load": 1,
                                  "by_rule": {"gpl-only": 1, "namespace": 1, "unknown-symbol": 1}}


def test_without_b_s_headers_only_direct_calls_count(store):
    p = predict_rebuild(store, A, B_BARE, names=["cddl_pfn"])
    (m,) = p.modules
    assert not p.headers
    # pfn_valid and kmalloc are no exports of either kernel: the walk ends there, and kfree stays
    assert {i.symbol for i in m.imports} == {"kfree"} and m.loads
    assert {"pfn_valid", "kmalloc"} <= set(m.unresolved)
    assert "has no headers in the store" in render_rebuild(p)


def test_module_files_and_modules_without_source(store, module_tree, tmp_path):
    ko = read_module_file(str(module_tree / "cddl_pfn.ko"))
    p = usecases.rebuild(store, A, B, files=[ko])
    assert [(m.module, m.loads, m.path) for m in p.modules] == [("cddl_pfn", False, str(module_tree / "cddl_pfn.ko"))]
    # a module file whose source A does not hold: nothing predicted, and said so
    other = tmp_path / "other.c"
    other.write_text('#include "fixture_module.h"\nint other_fn(void) { return 0; }\nMODULE_LICENSE("GPL");\n')
    shutil.copy(FIXTURES / "modules" / "fixture_module.h", tmp_path)
    (m,) = predict_rebuild(store, A, B, files=[read_module_file(str(compile_against(other, "a", tmp_path / "other.ko",
                                                                                      A)))]).modules
    assert (m.module, m.source, m.loads, m.imports) == ("other", False, None, [])
    with pytest.raises(QueryError, match="not modules of kernel"):
        predict_rebuild(store, A, B, names=["nope"])


def test_kernel_headers_are_told_from_the_module_s_own():
    assert is_kernel_header("include/linux/mmzone.h")
    assert is_kernel_header("arch/x86/include/asm/page.h")
    assert is_kernel_header("linux-headers-6.12.38+deb13-common/include/linux/rcupdate.h")
    assert not is_kernel_header("drivers/net/foo/foo.h")
    assert not is_kernel_header("pfnmod/include/pfn.h", frozenset({"pfnmod"}))
    assert not is_kernel_header("include/linux/mmzone.c")
    assert ("CALLS", True, ("Function", "Symbol")) in edge_types()


def test_diff_modules_prints_and_jsons_the_prediction(store):
    db = store.describe()
    run = [sys.executable, "-m", "ksymgraph", "diff", A, B, "--db", db]
    p = subprocess.run([*run, "--modules", ",".join(MODULES), "--exit-code"], capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    out = p.stdout
    assert f"Rebuilt against {B}'s headers (predicted)" in out
    assert "2 of 3 modules with source would not load once rebuilt (1 gpl-only, 1 namespace, 1 unknown-symbol)" in out
    row = next(line for line in out.splitlines()
               if line.startswith("cddl_pfn") and "__rcu_read_lock " in line and "→" in line)
    assert "GPL-incompatible module cddl_pfn.ko uses GPL-only symbol '__rcu_read_lock'" in row
    assert "pfn_valid → rcu_read_lock → __rcu_read_lock" in row
    assert any(line.split()[:2] == ["gpl_pfn", "yes"] for line in out.splitlines())
    data = json.loads(subprocess.run([*run, "--modules", "cddl_pfn", "--format", "json"], capture_output=True,
                                     text=True, check=True).stdout)
    (m,) = data["rebuilt"]["modules"]
    assert m["module"] == "cddl_pfn" and m["loads"] is False
    assert [(b["rule"], b["symbol"], b["chain"]) for b in m["breaks"]][0] == \
        ("gpl-only", "__rcu_read_lock", ["pfn_valid", "rcu_read_lock", "__rcu_read_lock"])
    assert data["modules"][0]["module"] == "cddl_pfn"  # the upgrade verdicts are still there
    # without --modules the diff is the diff
    plain = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert plain.startswith(f"Exports from {A} to {B}") and "Rebuilt" not in plain


def test_the_one_scan_of_private_headers_gives_the_same_prediction(store, prediction, monkeypatch):
    """Past a few thousand private-header functions their calls are read in one scan (a whole
    kernel's modules); on the fixture that path must give what the reads by id give."""
    import ksymgraph.queries.rebuild as rebuild

    monkeypatch.setattr(rebuild, "_SCAN_PAST", 0)
    assert predict_rebuild(store, A, B, names=MODULES).to_json() == prediction.to_json()


@pytest.mark.neo4j
def test_neo4j_store_gives_the_same_prediction(prediction, module_tree):
    """The same loads into the live Neo4j server give the same prediction (kernels renamed)."""
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    names = {A: "ksymgraph-test-rb-a", B: "ksymgraph-test-rb-b"}
    store = Neo4jStore(live_uri())
    try:
        load_kernel(store, [str(REBUILD / "a" / "Module.symvers"), str(module_tree)], kernel=names[A], workers=1,
                    source_dirs=[str(module_tree), str(REBUILD / "a")])
        load_kernel(store, [str(REBUILD / "b" / "Module.symvers")], kernel=names[B], workers=1,
                    source_dirs=[str(REBUILD / "b")])
        got = predict_rebuild(store, names[A], names[B], names=MODULES).to_json()
    finally:
        for k in names.values():
            store.delete_kernel(k)
        store.close()
    want = prediction.to_json()
    assert (got.pop("a"), got.pop("b")) == (names[A], names[B])
    del want["a"], want["b"]
    assert got == want


def test_alone_gives_the_same_breaks_for_modules_b_lacks(store, prediction):
    """Out-of-tree modules B does not have: rebuilt alone or as a set, B's rules say the same."""
    alone = predict_rebuild(store, A, B, names=MODULES, alone=True)
    assert [(m.module, m.loads, m.breaks) for m in alone.modules] == \
        [(m.module, m.loads, m.breaks) for m in prediction.modules]


def test_diff_verdict_of_a_module_with_source_is_the_prediction(store):
    """The upgrade's own verdict (built imports with renames) says cddl_pfn loads: its kmalloc is a
    rename behind a kept API. Its source says otherwise, and the report's verdict is the source's."""
    from ksymgraph.queries.report import render_upgrade

    u = usecases.upgrade(store, A, B, names=["cddl_pfn"])
    assert [m.loads for m in u.modules] == [True]
    text = render_upgrade(u, "pretty", usecases.rebuild(store, A, B, names=["cddl_pfn"]))
    assert text.splitlines()[0] == f"Upgrade {A} -> {B}: 1 of 1 modules would not load"
    assert any(line.split()[:4] == ["cddl_pfn", "no", "gpl-only", "__rcu_read_lock"] for line in text.splitlines())
    assert "0 load once rebuilt" in text


def test_many_modules_read_in_one_pass_equal_module_data(store):
    """The one-pass reading of many modules' records equals the projection's own, module by module."""
    from ksymgraph.graph.projection import KernelProjection
    from ksymgraph.queries.rebuild import _modules_data

    pa = KernelProjection.from_store(store, A)
    names = sorted(pa.modules) * 3  # past the few read one by one
    assert _modules_data(pa, names) == [pa.module_data(n) for n in names]


@pytest.mark.skipif(not references_in_schema(), reason="the graph has no REFERENCES relationship on this branch")
def test_data_references_are_imports_too(store, oracle):
    """With references in the graph, data read directly or through B's inline is predicted, as gcc
    leaves it undefined."""
    (m,) = predict_rebuild(store, A, B, names=["data_user"]).modules
    assert {i.symbol for i in m.imports} == oracle["data_user"] == {"jiffies", "fixture_hz"}
    assert next(i.chain for i in m.imports if i.symbol == "jiffies") == ("get_jiffies_fixture", "jiffies")


def test_without_references_data_is_not_predicted(store, oracle):
    """What calls alone cannot see: the data_user's imports are data (the test above, with
    REFERENCES, sees them)."""
    (m,) = predict_rebuild(store, A, B, names=["data_user"]).modules
    got = {i.symbol for i in m.imports}
    assert got == (oracle["data_user"] if references_in_schema() else set())


def test_a_constant_argument_folds_as_gcc_does_against_b(store, module_tree, oracle, monkeypatch):
    """B's ``msecs_to_jiffies()`` tests ``__builtin_constant_p(m)``: rebuilt against B,
    ``msecs_to_jiffies(100)`` imports nothing, ``msecs_to_jiffies(ms)`` B's ``__msecs_to_jiffies``,
    as gcc compiles them; both imported A's export as built against A."""
    waits = ["wait_const", "wait_var"]
    assert {m: undefined(module_tree / f"{m}.ko") for m in waits} == {m: {"msecs_to_jiffies"} for m in waits}
    p = predict_rebuild(store, A, B, names=waits)
    got = {m.module: {i.symbol for i in m.imports} for m in p.modules}
    assert got == {m: oracle[m] for m in waits} == {"wait_const": set(), "wait_var": {"__msecs_to_jiffies"}}
    # without the folding (every branch of B's inline compiled) the constant one would import it too
    import ksymgraph.queries.folding as folding

    monkeypatch.setattr(folding, "guard_holds", lambda guard, frame: True)
    p = predict_rebuild(store, A, B, names=waits)
    assert {m.module: {i.symbol for i in m.imports} for m in p.modules}["wait_const"] == {"__msecs_to_jiffies"}


def test_a_trace_events_inline_is_rebuilt_through_b_s_tracepoint_h():
    """A module's ``trace_<event>()`` inline, as the tracepoint pass expands A's tracepoint.h on the
    event's line, reaches A's internals (6.1's ``cpu_number``, which 6.2 folded into ``pcpu_hot``:
    61 modules of Debian 6.1 were predicted to fail on 6.12 for it). Rebuilt, it keeps its event's
    own names and goes through B's ``__DECLARE_TRACE``; another function is left as it is."""
    from types import SimpleNamespace

    from ksymgraph.queries.rebuild import _Edge, _walk

    def edge(name, line=12, target=None):
        return _Edge(line, target, name, "", False, None, None)

    expanded = [edge("__tracepoint_foo_ready"), edge("__SCK__tp_func_foo_ready"), edge("cpu_number"),
                edge("static_key_false"), edge("__preempt_count_add")]
    code = {"f": ("trace_foo_ready", "drivers/foo/foo_trace.h"), "g": ("foo_probe", "drivers/foo/foo.c")}
    a_edges = {"f": expanded, "g": [edge("cpu_number", 30), edge("trace_foo_ready", 31, target="f")]}
    b_exports = {"__tracepoint_foo_ready": [object()], "__SCK__tp_func_foo_ready": [object()], "pcpu_hot": [object()]}
    headers = SimpleNamespace(callees={"__DECLARE_TRACE": [("static_key_false", None, None), ("cpu_online", None, None)],
                                       "static_key_false": [], "cpu_online": [("pcpu_hot", None, None)]})
    origins, ends = _walk(code, b_exports, headers, a_edges)
    # g's own reference of cpu_number stays; f's A-made one is gone, its B-made pcpu_hot is there
    assert ends == {"__tracepoint_foo_ready", "__SCK__tp_func_foo_ready", "cpu_number", "pcpu_hot"}
    assert origins["cpu_number"].function == "foo_probe"
    assert origins["pcpu_hot"].function == "trace_foo_ready"
