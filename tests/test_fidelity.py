"""The compiler as the oracle, hermetically: fixture modules compiled with gcc (``-pg -mfentry`` and
retpolines, as Kbuild compiles with CONFIG_FUNCTION_TRACER and CONFIG_RETPOLINE), their source loaded, and the imports the source graph
predicts held against the undefined symbols of the objects gcc wrote.

The expected figures are counted by hand from the C files (each module's imports are also read
back from the objects with ``nm``, independently of the loader): recall and precision are exact
fractions, so a change in what the graph predicts, or in what is counted, fails the test.
Compiler-inserted imports (``COMPILER_INSERTS``) exist exactly when the ``.config`` turns on the
options that cause them.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.compiler import COMPILER_INSERTED, inserted_symbols
from ksymgraph.queries.callsites import call_sites
from ksymgraph.queries.fidelity import PREDICTING, fidelity, present_relationships
from test_source_graph import kernel_a_only

FIDELITY_SOURCES = MODULE_SOURCES.parent / "fidelity"
#: The in-tree fixture modules measured (weak_e has no intree=Y, prop_d is out-of-tree).
SOURCES = ["core_a.c", "user_b.c", "user-c.c", "weak_e.c", "prop_d.c"]

CONFIG_ON = ("CONFIG_MODULES=y\nCONFIG_FUNCTION_TRACER=y\nCONFIG_HAVE_FENTRY=y\nCONFIG_STACKPROTECTOR=y\n"
             "CONFIG_RETPOLINE=y\n")
CONFIG_OFF = "CONFIG_MODULES=y\n# CONFIG_FUNCTION_TRACER is not set\n# CONFIG_STACKPROTECTOR is not set\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A built out-of-tree-style tree: the fixture C files, their objects compiled with
    ``-pg -mfentry -fno-stack-protector`` and retpolines, Kbuild's .mod files, and a Module.symvers for vmlinux
    that exports what the compiler inserts."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: .ci/run installs it")
    root = tmp_path_factory.mktemp("fid") / "fid-src"
    root.mkdir()
    shutil.copy(MODULE_SOURCES / "fixture_module.h", root)
    shutil.copy(FIDELITY_SOURCES / "fid_inline.h", root)
    for src in [*(MODULE_SOURCES / s for s in SOURCES), FIDELITY_SOURCES / "fid_user.c", FIDELITY_SOURCES / "fid_ops.c"]:
        (root / src.name).write_text(kernel_a_only(src.read_text()))
        stem = src.stem
        subprocess.run(["gcc", "-O1", "-fno-pic", "-pg", "-mfentry", "-fno-stack-protector",
                        "-mindirect-branch=thunk-extern", "-mindirect-branch-register", "-I", str(root),
                        "-c", str(root / src.name), "-o", str(root / f"{stem}.ko")], check=True)
        (root / f"{stem}.mod").write_text(f"{root / stem}.o\n")
    symvers = (MODULE_SOURCES / "vmlinux.symvers").read_text()
    symvers += "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\t__stack_chk_fail\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\t__x86_indirect_thunk_rax\tvmlinux\tEXPORT_SYMBOL\t\n"
    (root / "Module.symvers").write_text(symvers)
    (root / "config-on").write_text(CONFIG_ON)
    (root / "config-off").write_text(CONFIG_OFF)
    return root


def _load(tmp_path_factory, tree, config: str):
    store = open_store(tmp_path_factory.mktemp(config) / "graph.lbdb")
    kos = sorted(str(p) for p in tree.glob("*.ko"))
    load_kernel(store, [str(tree / "Module.symvers"), *kos], kernel=FIXTURE_RELEASE, workers=1,
                source_dirs=[str(tree)], config=str(tree / config))
    return store


@pytest.fixture(scope="module")
def store_on(tmp_path_factory, tree):
    s = _load(tmp_path_factory, tree, "config-on")
    yield s
    s.close()


@pytest.fixture(scope="module")
def store_off(tmp_path_factory, tree):
    s = _load(tmp_path_factory, tree, "config-off")
    yield s
    s.close()


def nm_undefined(path) -> set[str]:
    """The undefined symbols of an object, read with binutils' nm (not the loader)."""
    out = subprocess.run(["nm", "-u", str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


#: By hand, from the C files: what each in-tree module's .ko imports (gcc: every function calls
#: __fentry__), and what its source reaches that another module exports.
IMPORTS = {
    "core_a": {"_printk", "kfree", "__fentry__"},
    "user_b": {"a_plain", "a_ns", "__fentry__"},
    "user_c": {"b_fn", "__fentry__"},
    "fid_user": {"a_plain", "__fentry__"},  # fid_dead's kfree is dead code
    "fid_ops": {"__fentry__", "__x86_indirect_thunk_rax"},  # ops->run(x) through the retpoline
}
CALLED = {
    "core_a": {"_printk", "kfree"},
    "user_b": {"a_plain", "a_ns"},
    "user_c": {"b_fn"},
    "fid_user": {"a_plain", "kfree"},  # through fid_wrap (live) and fid_dead (dead: over-predicted)
    "fid_ops": set(),  # a call through a member is no symbol
}


def test_the_objects_import_what_the_expectation_says(tree):
    for module, want in IMPORTS.items():
        stem = "user-c" if module == "user_c" else module
        assert nm_undefined(tree / f"{stem}.ko") == want, module


def test_fidelity_without_compiler_options(store_off):
    f = fidelity(store_off)
    assert [m.module for m in f.modules] == sorted(IMPORTS)  # weak_e (no intree), prop_d (out of tree) left out
    assert "COMPILER_INSERTS" not in f.relationships
    by = {m.module: m for m in f.modules}
    for module, imports in IMPORTS.items():
        m = by[module]
        assert set(m.missed) == imports - CALLED[module], module
        assert set(m.over) == CALLED[module] - imports, module
    # 12 imports; 7 predicted; 6 in both: __fentry__ missed 5 times, the thunk once, fid_user's kfree
    # over-predicted.
    assert (f.imports, f.predicted, f.both) == (12, 7, 6)
    assert Fraction(f.both, f.imports) == Fraction(1, 2) and f.recall == pytest.approx(0.5)
    assert f.precision == pytest.approx(6 / 7)
    assert f.most_missed(2) == [("__fentry__", 5), ("__x86_indirect_thunk_rax", 1)]
    assert f.most_over() == [("kfree", 1)]
    assert [(m.module, m.errors) for m in f.worst(2)] == [("fid_ops", 2), ("fid_user", 2)]
    assert rows(store_off, "MATCH ()-[r:COMPILER_INSERTS]->() RETURN count(r)") == [(0,)]


def test_fidelity_with_compiler_options(store_on):
    f = fidelity(store_on)
    assert "COMPILER_INSERTS" in f.relationships
    by = {m.module: m for m in f.modules}
    for module, imports in IMPORTS.items():
        # __fentry__ is predicted now; __stack_chk_fail is predicted for every module with code
        # (CONFIG_STACKPROTECTOR), which these objects, built without canaries, do not import.
        predicted = CALLED[module] | {"__fentry__", "__stack_chk_fail"}
        if module == "fid_ops":  # the one with an indirect call (CONFIG_RETPOLINE)
            predicted |= {"__x86_indirect_thunk_rax"}
        assert set(by[module].missed) == imports - predicted, module
        assert set(by[module].over) == predicted - imports, module
    assert (f.imports, f.predicted, f.both) == (12, 18, 12)
    assert f.recall == 1.0 and f.precision == pytest.approx(12 / 18)
    assert f.most_over(2) == [("__stack_chk_fail", 5), ("kfree", 1)]
    # Leaving the relationship out gives the figures without it, from the same store.
    calls_only = fidelity(store_on, types=("CALLS",))
    assert (calls_only.imports, calls_only.predicted, calls_only.both) == (12, 7, 6)


def rows(store, cypher, **params):
    return store.query(cypher, {"k": FIXTURE_RELEASE, **params}).rows


def test_compiler_inserts_present_iff_the_option_is_on(store_on, store_off):
    got = rows(store_on, "MATCH (m:Module)-[r:COMPILER_INSERTS]->(s:Symbol) WHERE m.kernel = $k "
                         "RETURN m.name, s.name, r.causes ORDER BY m.name, s.name")
    modules_with_code = ["core_a", "fid_ops", "fid_user", "prop_d", "user_b", "user_c", "weak_e"]
    assert got == sorted([(m, "__fentry__", ["CONFIG_FUNCTION_TRACER", "CONFIG_HAVE_FENTRY"]) for m in modules_with_code]
                         + [(m, "__stack_chk_fail", ["CONFIG_STACKPROTECTOR"]) for m in modules_with_code]
                         + [("fid_ops", "__x86_indirect_thunk_rax", ["CONFIG_RETPOLINE"])])
    assert rows(store_off, "MATCH (m:Module)-[r:COMPILER_INSERTS]->(s:Symbol) RETURN count(r)") == [(0,)]
    # The option list decides: on -> the two entries whose options are all y, nothing else.
    on = {e.symbol for e in inserted_symbols({"CONFIG_FUNCTION_TRACER": "y", "CONFIG_HAVE_FENTRY": "y",
                                              "CONFIG_STACKPROTECTOR": "y"})}
    assert on == {"__fentry__", "__stack_chk_fail"}
    assert inserted_symbols(None) == [] and inserted_symbols({}) == []


def test_compiler_inserts_are_never_call_sites(store_on):
    assert call_sites(store_on, FIXTURE_RELEASE, None, ["__fentry__", "__stack_chk_fail"]) == []
    assert [c.function for c in call_sites(store_on, FIXTURE_RELEASE, None, ["kfree"]) if c.module == "core_a"] == ["a_gpl"]


def test_an_absent_relationship_type_contributes_nothing(store_on, store_off):
    # A type that holds no rows of the kernel (or has no table in an older store) is not asked for.
    assert "COMPILER_INSERTS" in present_relationships(store_on, FIXTURE_RELEASE, PREDICTING)
    assert "COMPILER_INSERTS" not in present_relationships(store_off, FIXTURE_RELEASE, PREDICTING)
    assert present_relationships(store_on, FIXTURE_RELEASE, ("CALLS",)) == ("CALLS",)


def test_every_entry_is_documented():
    for e in COMPILER_INSERTED:
        assert e.symbol and e.where and e.why and e.flags, e
        assert e.trigger in ("code", "canary", "indirect", "none") or e.trigger.startswith("inline:"), e
        assert all(o.startswith("CONFIG_") for o in e.options), e


@pytest.mark.neo4j
def test_neo4j_gives_the_same_measure(tree, store_on):
    """The same load into Neo4j (``$NEO4J_URI``; see tests/test_neo4j_store.py) measures the same."""
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    kernel = "ksymgraph-test-fidelity"
    neo = Neo4jStore(live_uri())
    try:
        kos = sorted(str(p) for p in tree.glob("*.ko"))
        load_kernel(neo, [str(tree / "Module.symvers"), *kos], kernel=kernel, workers=1,
                    source_dirs=[str(tree)], config=str(tree / "config-on"))
        got, want = fidelity(neo, kernel), fidelity(store_on, FIXTURE_RELEASE)
        assert got.relationships == want.relationships
        assert got.modules == want.modules
        assert (got.imports, got.predicted, got.both) == (12, 18, 12)
    finally:
        neo.delete_kernel(kernel)
        neo.close()
