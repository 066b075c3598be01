"""gcc's constant folding as the source graph predicts it (ksymgraph.loaders.cfold), with gcc as
the oracle: fixture modules (tests/fixtures/fold/) that call header inlines choosing their callee
by ``__builtin_constant_p()`` — in the shapes of 6.1's ``kmalloc()``, ``kzalloc()``,
``kmalloc_array()``, ``check_object_size()`` and ``msecs_to_jiffies()``, and by the size of
``long`` (``kstrtoul()``), a macro's (``udelay()``) — and ``memset``/``memcpy``
of constant and run-time sizes, compiled with ``gcc -O2`` as Kbuild compiles x86-64 code, loaded
with their source, and the imports the graph predicts held against the undefined symbols of the
objects gcc wrote (read with ``nm``).
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import FIXTURE_RELEASE, FIXTURES, MODULE_SOURCES, compile_tree
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.cfold import join_classes, split_fold
from ksymgraph.loaders.cparse import parse_source
from ksymgraph.queries.fidelity import fidelity
from ksymgraph.queries.folding import callee_frame, expanded_inline, guard_holds

FOLD = FIXTURES / "fold"
MODULES = ["fold_const", "fold_var", "fold_big"]
#: As arch/x86/Makefile compiles kernel code (no SSE: gcc's string expansion is rep stos/movs).
GCC = ["gcc", "-O2", "-fno-pic", "-mno-sse", "-mno-mmx", "-mno-sse2", "-mno-avx", "-mno-red-zone",
       "-mcmodel=kernel", "-fno-stack-protector"]
EXPORTED = ["fold_large", "fold_trace", "fold_caches", "__fold_alloc", "__fold_check", "__fold_msecs", "memset",
            "memcpy", "fold_strtoull", "_fold_strtoul", "__fold_udelay", "__fold_const_udelay"]

#: By hand, from the C files (and checked against nm below): what gcc made each module import.
IMPORTS = {
    # sizeof sizes: the caches; fold_array(4, sizeof) is constant; memset/memcpy of 32 bytes inline;
    # the udelay macro of a constant
    "fold_const": {"fold_trace", "fold_caches", "__fold_const_udelay"},
    # run-time sizes: __kmalloc's shape, the check, the two string calls; sizeof(long) is 8
    "fold_var": {"__fold_alloc", "__fold_check", "__fold_msecs", "memset", "memcpy", "fold_strtoull", "__fold_udelay"},
    # 64 KiB: over FOLD_MAX_CACHE_SIZE, and over gcc's 8 KiB inline limit
    "fold_big": {"fold_large", "memset", "memcpy"},
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = compile_tree(tmp_path_factory.mktemp("fold") / "fold-src", [FOLD / f"{m}.c" for m in MODULES],
                        [MODULE_SOURCES / "fixture_module.h", FOLD / "fold.h"], GCC)
    (root / "Module.symvers").write_text("".join(f"0x00000000\t{s}\tvmlinux\tEXPORT_SYMBOL\t\n" for s in EXPORTED))
    (root / "config").write_text("CONFIG_MODULES=y\n")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory, tree):
    s = open_store(tmp_path_factory.mktemp("fold-db") / "graph.lbdb")
    load_kernel(s, [str(tree / "Module.symvers"), *sorted(str(p) for p in tree.glob("*.ko"))],
                kernel=FIXTURE_RELEASE, workers=1, source_dirs=[str(tree)], config=str(tree / "config"))
    yield s
    s.close()


def nm_undefined(path) -> set[str]:
    out = subprocess.run(["nm", "-u", str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_gcc_folds_as_the_expectation_says(tree):
    for module, want in IMPORTS.items():
        assert nm_undefined(tree / f"{module}.ko") == want, module


def test_the_graph_predicts_what_gcc_imports(store):
    f = fidelity(store)
    by = {m.module: m for m in f.modules}
    assert sorted(by) == sorted(MODULES)
    for module in MODULES:
        assert (by[module].missed, by[module].over) == ((), ()), module
    assert (f.imports, f.predicted, f.both) == (13, 13, 13)


def test_without_folding_the_walk_over_predicts(store, monkeypatch):
    """The same store walked with every guard holding and nothing expanded inline: what the graph
    predicted before it read gcc's folding (so the test above fails without it)."""
    import ksymgraph.queries.folding as folding

    monkeypatch.setattr(folding, "guard_holds", lambda guard, frame: True)
    monkeypatch.setattr(folding, "expanded_inline", lambda name, frame: False)
    f = fidelity(store)
    over = {m.module: set(m.over) for m in f.modules}
    assert over["fold_const"] == {"fold_large", "__fold_alloc", "__fold_check", "__fold_msecs", "memset", "memcpy",
                                  "__fold_udelay"}
    assert over["fold_var"] == {"fold_large", "fold_trace", "fold_caches", "_fold_strtoul", "__fold_const_udelay"}


def rows_of(rows):
    return [((f, t), fold) for f, t, fold in rows]


def test_calls_carry_their_arguments_constness_and_guard(store):
    rows = store.query(
        "MATCH (f:Function)-[r:CALLS]->(t) WHERE f.kernel = $k AND f.name IN ['fold_alloc', 'fold_array', 'fc_new', "
        "'fv_new', 'fb_clear', 'fc_delay'] RETURN f.name, t.name, r.fold ORDER BY f.name, t.name",
        {"k": FIXTURE_RELEASE}).rows
    got = {(f, t): split_fold(fold) for f, t, fold in rows}
    assert ("fold_alloc", "fold_large") in got and dict(rows_of(rows))[("fold_alloc", "fold_large")] == "p0,p1|c0;b0"
    assert got[("fold_alloc", "fold_large")] == ("p0,p1", "c0;b0")
    assert got[("fold_alloc", "fold_trace")] == ("-,p1,p0", "c0;s0")
    assert got[("fold_alloc", "__fold_alloc")] == ("p0,p1", "n0")
    assert got[("fold_array", "fold_alloc")] == ("p0.1,p2", "c0.1")
    assert got[("fold_array", "__fold_alloc")] == ("p0.1,p2", "n0.1")
    assert got[("fc_new", "fold_zalloc")] == ("c,c", "")
    assert split_fold(None) == (None, "") and split_fold("") == ("", "")
    # a macro's call: its arguments not read, its guard from the macro body
    assert got[("fc_delay", "fold_udelay")] == ("c", "")
    macro = dict(rows_of(store.query("MATCH (f:Function)-[r:CALLS]->(t) WHERE f.kernel = $k AND f.name = 'fold_udelay' "
                                     "RETURN f.name, t.name, r.fold", {"k": FIXTURE_RELEASE}).rows))
    assert macro == {("fold_udelay", "__fold_const_udelay"): "*|c0", ("fold_udelay", "__fold_udelay"): "*|n0"}
    assert split_fold("*|c0") == (None, "c0")
    assert got[("fv_new", "fold_zalloc")] == ("p0,c", "")
    assert got[("fb_clear", "memset")] == ("p0,c,C", "")
    refs = store.query("MATCH (f:Function)-[r:REFERENCES]->(t) WHERE f.kernel = $k AND f.name = 'fold_alloc' "
                       "RETURN t.name, r.guard", {"k": FIXTURE_RELEASE}).rows
    assert [tuple(r) for r in refs] == [("fold_caches", "c0;s0")]


@pytest.mark.parametrize("text, want", [
    ("sizeof(struct s)", "c"), ("4096 * 4", "C"), ("PAGE_SIZE << 3", "C"), ("SZ_4K", "c"), ("SZ_64K", "C"),
    ("ARRAY_SIZE(tab) * sizeof(int)", "c"), ("struct_size(p, items, 3)", "c"), ("struct_size(p, items, n)", "p0"),
    ("n * 4", "p0"), ("(size_t)n", "p0"), ("min_t(size_t, n, 16)", "p0"), ("len", "-"), ("p->len", "-"),
    ("GFP_KERNEL", "c"), ("strlen(s)", "-"), ("n ? 4 : 8", "p0"),
])
def test_an_argument_is_a_constant_as_gcc_says(text, want):
    r = parse_source(f"void f(int n) {{ g({text}); }}".encode(), "x.c")
    assert [c.args for c in r.calls if c.callee == "g"] == [want if want != "-" else ""]


def test_the_frame_rules():
    assert join_classes(["c", "C"]) == "C" and join_classes(["c", "p1", "p0"]) == "p0.1"
    assert join_classes(["?", "c"]) == "?" and join_classes(["p0", "-"]) == "-"
    frame = callee_frame("c,-", ())
    assert frame == ("c", "-")
    assert guard_holds("c0", frame) and not guard_holds("n0", frame) and not guard_holds("b0", frame)
    assert not guard_holds("c0.1", frame) and guard_holds("n0.1", frame)
    assert guard_holds("b0", ("C",)) and guard_holds("b0", ("-",))
    assert callee_frame("p1,p0", ("c", "-")) == ("-", "c")
    assert callee_frame(None, ("c",)) is None and guard_holds("c0", None)  # a macro's call: unknown
    assert expanded_inline("memset", ("-", "c", "c")) and not expanded_inline("memset", ("-", "c", "C"))
    assert not expanded_inline("memset", ("-", "c", "?")) and not expanded_inline("kfree", ("c",))


def test_neo4j_folds_the_same(tree, store):
    """The same load into Neo4j (``$NEO4J_URI``; see tests/test_neo4j_store.py): the same folds
    read back, the same measure."""
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    kernel = "ksymgraph-test-fold"
    neo = Neo4jStore(live_uri())
    try:
        load_kernel(neo, [str(tree / "Module.symvers"), *sorted(str(p) for p in tree.glob("*.ko"))],
                    kernel=kernel, workers=1, source_dirs=[str(tree)], config=str(tree / "config"))
        cypher = ("MATCH (f:Function)-[r:CALLS]->(t) WHERE f.kernel = $k AND f.name = 'fold_alloc' "
                  "RETURN t.name, r.fold ORDER BY t.name")
        assert [tuple(r) for r in neo.query(cypher, {"k": kernel}).rows] == \
            [tuple(r) for r in store.query(cypher, {"k": FIXTURE_RELEASE}).rows]
        got, want = fidelity(neo, kernel), fidelity(store, FIXTURE_RELEASE)
        assert got.modules == want.modules and (got.imports, got.predicted, got.both) == (13, 13, 13)
    finally:
        neo.delete_kernel(kernel)
        neo.close()
