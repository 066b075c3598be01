"""A what-if's call sites are the calls gcc compiles, not the lines of an inline's dead branches.

tests/fixtures/fold/fold_mixed.c calls each header inline of tests/fixtures/fold/fold.h (the shapes
of 6.1's ``kmalloc()``, ``kzalloc()``, ``kmalloc_array()``, ``check_object_size()``,
``msecs_to_jiffies()``, ``udelay()``) and ``memset``/``memcpy`` once with a constant and once with
a run-time argument, one function each. It is compiled with ``-ffunction-sections`` as Kbuild
compiles x86-64 code, so the relocations of each function's own section name the symbols gcc made
that function call or read: the oracle of which call sites a what-if must list for a symbol.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_tree, fresh_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.queries.callsites import add_source_evidence, call_sites
from ksymgraph.queries.whatif import parse_changes, what_if
from test_constant_folding import EXPORTED, FOLD, GCC

MODULE = "fold_mixed"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = compile_tree(tmp_path_factory.mktemp("fold-mixed") / "fold-src", [FOLD / f"{MODULE}.c"],
                        [MODULE_SOURCES / "fixture_module.h", FOLD / "fold.h"], [*GCC, "-ffunction-sections"])
    (root / "Module.symvers").write_text("".join(f"0x00000000\t{s}\tvmlinux\tEXPORT_SYMBOL\t\n" for s in EXPORTED))
    (root / "config").write_text("CONFIG_MODULES=y\n")
    return root


def load(store, tree, kernel=FIXTURE_RELEASE):
    load_kernel(store, [str(tree / "Module.symvers"), str(tree / f"{MODULE}.ko")], kernel=kernel, workers=1,
                source_dirs=[str(tree)], config=str(tree / "config"))


@pytest.fixture(scope="module")
def store(tmp_path_factory, tree):
    with fresh_store(tmp_path_factory, "fold-mixed-db") as s:
        load(s, tree)
        yield s


@pytest.fixture(scope="module")
def compiled(tree) -> dict[str, set[str]]:
    """symbol → the functions of fold_mixed.ko whose code calls or reads it, from the relocations
    of each function's section (``.rela.text.FUNCTION``)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    out: dict[str, set[str]] = defaultdict(set)
    with open(tree / f"{MODULE}.ko", "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            target = elf.get_section(sec["sh_info"]).name
            if not target.startswith(".text."):
                continue
            function = target.rsplit(".", 1)[-1]
            for rel in sec.iter_relocations():
                name = symtab.get_symbol(rel["r_info_sym"]).name
                if name:
                    out[name].add(function)
    return dict(out)


def test_gcc_compiles_one_of_each_pair(compiled):
    """The fixture does what it says: of each constant/run-time pair, gcc calls the out-of-line
    function from one only (so the test below can fail either way)."""
    assert compiled == {
        "fold_trace": {"fm_small", "fm_array_const"}, "fold_caches": {"fm_small", "fm_array_const"},
        "__fold_alloc": {"fm_sized", "fm_array"}, "fold_large": {"fm_huge"},
        "memset": {"fm_clear_sized"}, "memcpy": {"fm_copy_big"}, "__fold_check": {"fm_check"},
        "__fold_msecs": {"fm_wait"}, "__fold_udelay": {"fm_delay"}, "__fold_const_udelay": {"fm_delay_const"},
    }


def sites_by_symbol(store, kernel=FIXTURE_RELEASE) -> dict[str, set[str]]:
    return {sym: {s.function for s in call_sites(store, kernel, [MODULE], [sym])} for sym in EXPORTED}


def test_call_sites_are_the_functions_gcc_compiled_the_call_in(store, compiled):
    got = sites_by_symbol(store)
    assert {s: fs for s, fs in got.items() if fs} == compiled


def test_without_folding_the_sites_include_dead_branches(store, compiled, monkeypatch):
    """The same query with every edge taken as compiled lists the other function of each pair too."""
    import ksymgraph.queries.callsites as cs

    monkeypatch.setattr(cs, "path_compiled", lambda steps: True)
    got = sites_by_symbol(store)
    assert got["__fold_alloc"] == compiled["__fold_alloc"] | {"fm_small", "fm_huge", "fm_array_const"}
    assert got["memset"] == {"fm_clear", "fm_clear_sized"}
    assert got["__fold_check"] == {"fm_check", "fm_check_const"}


def test_the_whatif_worklist(store, tree):
    """``whatif --unexport __fold_alloc,memset``: fold_mixed breaks, and its worklist names the
    lines gcc compiled those calls from, with the chain through the inlines."""
    proj = KernelProjection.from_store(store, FIXTURE_RELEASE)
    r = add_source_evidence(what_if(proj, parse_changes(unexport=["__fold_alloc", "memset"])), store)
    (broken,) = [b for b in r.broken if b.module == MODULE]
    assert {x.symbol for x in broken.reasons} == {"__fold_alloc", "memset"}
    sites = [(s.symbol, s.function, s.chain) for s in r.call_sites[MODULE]]
    assert sorted(sites) == [
        ("__fold_alloc", "fm_array", ("fold_array", "__fold_alloc")),
        ("__fold_alloc", "fm_sized", ("fold_zalloc", "fold_alloc", "__fold_alloc")),
        ("memset", "fm_clear_sized", ()),
    ]
    src = (tree / f"{MODULE}.c").read_text().splitlines()
    for s in r.call_sites[MODULE]:
        assert s.function in src[s.line - 1], s


def test_neo4j_lists_the_same_sites(tree, store, compiled):
    """The same load into Neo4j (``$NEO4J_URI``): the same sites."""
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    kernel = "ksymgraph-test-fold-mixed"
    neo = Neo4jStore(live_uri())
    try:
        load(neo, tree, kernel)
        assert sites_by_symbol(neo, kernel) == sites_by_symbol(store)
    finally:
        neo.delete_kernel(kernel)
        neo.close()
