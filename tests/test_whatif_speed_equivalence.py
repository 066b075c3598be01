"""The fast what-if-with-source path gives the same answer as the reference one, to the byte.

Issue 14 point 5 rewrote how a what-if finds call sites and still-exported callers (batched
queries, one pass per hop, the reverse walk from the removed symbols). The reference is the query
path as it was (``tests/callsites_reference.py``, kept verbatim); both run on the same stores and
their whole what-if JSON is compared.

The store: the fixture kernel plus a generated out-of-tree tree built for this test, with what
makes the two paths differ if one is wrong: chains of header inlines 1 to 4 calls deep (the fourth
is beyond reach), two calls on one line, one call site reached through two inlines, a module that
calls a removed symbol both directly and through an inline, static helpers of the same name in
two files, exported wrappers one, two and three calls from a removed export (for ``--hops``), one name
exported from two files at one hop, a module that fails only through a dependency (no call
sites of its own), and inlines with two shortest chains to a symbol (which one a site names).
"""

from __future__ import annotations

import json
import shutil

import pytest

import callsites_reference as reference
from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_module
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.queries import callsites, usecases
from ksymgraph.queries.report import render_whatif
from ksymgraph.queries.whatif import parse_changes, what_if

HEADER = """\
extern int a_plain(int x);
extern int a_gpl(int x);
extern void kfree(const void *p);

static inline int eq_h1(int x) { return a_plain(x); }
static inline int eq_h2(int x) { return eq_h1(x) + 1; }
static inline int eq_h3(int x) { return eq_h2(x) + 2; }
static inline int eq_h4(int x) { return eq_h3(x) + 3; }
static inline int eq_both(int x) { kfree(0); return a_plain(x) + a_gpl(x); }
static inline int eq_twin(int x) { return eq_h1(x); }
static inline int eq_fork_a(int x);
static inline int eq_fork_b(int x);
static inline int eq_fork_c(int x) { return a_plain(x); }
static inline int eq_fork_d(int x) { return a_plain(x) + 1; }
static inline int eq_fork_a(int x) { return eq_fork_d(x); }
static inline int eq_fork_b(int x) { return eq_fork_c(x); }
static inline int eq_fork(int x) { return eq_fork_a(x) + eq_fork_b(x); }
static inline int eq_gork_z(int x) { return a_plain(x); }
static inline int eq_gork(int x) { return eq_gork_a(x) + eq_gork_z(x); }
"""
#: A second header, included by the first: its inline sorts first by name, last by id (file first).
HEADER_ZZ = """\
extern int a_plain(int x);

static inline int eq_gork_a(int x) { return a_plain(x) + 2; }
"""

#: module → its C body (after the includes). Line numbers matter: keep calls on their own lines.
MODULES = {
    "eq_one": """\
static int helper(int x)
{
	return a_plain(x);
}

int eq_one_wrap(int x)
{
	return helper(x) + eq_h2(x) + a_plain(x);
}
EXPORT_SYMBOL(eq_one_wrap);

int eq_dup_wrap(int x)
{
	return a_plain(x);
}
EXPORT_SYMBOL(eq_dup_wrap);

int eq_one_fn(int x)
{
	kfree(0); kfree(0);
	x += eq_h3(x);
	return eq_h1(x) + eq_h3(x) + eq_h4(x);
}

MODULE_LICENSE("GPL");
""",
    "eq_two": """\
extern int eq_one_wrap(int x);

static int helper(int x)
{
	return eq_both(x);
}

int eq_two_wrap(int x)
{
	return eq_one_wrap(x) + eq_twin(x) + eq_h1(x);
}
EXPORT_SYMBOL_GPL(eq_two_wrap);

int eq_two_fn(int x)
{
	return helper(x) + a_plain(x) + eq_both(x);
}

MODULE_LICENSE("GPL");
""",
    "eq_five": """\
int eq_five_fn(int x)
{
	x += eq_fork(x);
	return eq_gork(x);
}

MODULE_LICENSE("GPL");
""",
    "eq_three": """\
extern int eq_two_wrap(int x);

int eq_three_wrap(int x)
{
	return eq_two_wrap(x);
}
EXPORT_SYMBOL(eq_three_wrap);

MODULE_LICENSE("GPL");
""",
    "eq_four": """\
extern int eq_three_wrap(int x);

int eq_four_fn(int x)
{
	kfree(0);
	x += eq_h2(x);
	return eq_three_wrap(x) + eq_h4(x);
}

int eq_dup_wrap(int x)
{
	return a_plain(x) + 1;
}
EXPORT_SYMBOL_GPL(eq_dup_wrap);

MODULE_LICENSE("Proprietary");
""",
}


@pytest.fixture(scope="module")
def eq_tree(tmp_path_factory):
    """The generated tree: its C files, built modules and Kbuild's .mod files."""
    root = tmp_path_factory.mktemp("eq") / "eq-src"
    root.mkdir()
    shutil.copy(MODULE_SOURCES / "fixture_module.h", root)
    (root / "eq_api.h").write_text('#include "eq_zz.h"\n' + HEADER)
    (root / "eq_zz.h").write_text(HEADER_ZZ)
    for name, body in MODULES.items():
        src = root / f"{name}.c"
        src.write_text('#include "fixture_module.h"\n#include "eq_api.h"\n\n' + body)
        compile_module(src, root / f"{name}.ko")
        (root / f"{name}.mod").write_text(f"{root / name}.o\n")
    return root


@pytest.fixture(scope="module")
def eq_store(tmp_path_factory, fixture_tree, eq_tree):
    """The fixture kernel, the generated modules built from their tree, and that tree's source."""
    root = eq_tree
    store = open_store(tmp_path_factory.mktemp("eqdb") / "graph.lbdb")
    load_kernel(store, [str(fixture_tree), *(str(root / f"{n}.ko") for n in MODULES)], workers=1,
                source_dirs=[str(root)])
    yield store
    store.close()


CHANGES = [
    {"unexport": ["a_plain"]},
    {"unexport": ["kfree"]},
    {"unexport": ["a_plain", "kfree", "a_gpl"]},
    {"unexport": ["a_plain", "kfree", "a_gpl", "a_ns", "eq_one_wrap", "eq_two_wrap", "_printk"]},
    {"unexport": ["eq_one_wrap"]},
    {"gpl_only": ["a_plain", "kfree"]},
    {"namespace": ["a_plain=NEW_NS"]},
    {"remove_module": ["core_a"]},
    {"unexport": ["no_such_symbol"]},
]


def tie_order(result):
    """``result`` with its call sites at one line in the fast path's fixed order. The reference
    sorted by (module, symbol, file, line) and left ties (a line that calls two inlines reaching
    the symbol) in the engine's order, which is not fixed; nothing else is touched. (The other tie,
    two export sites of one name at one hop, is fixed in the reference's query:
    ``callsites_reference.fixed_ties``.)"""
    return result._replace(call_sites={m: sorted(sites, key=callsites._site_order)
                                       for m, sites in result.call_sites.items()})


def both(store, changes, hops):
    """(reference result, fast result) of one what-if with source."""
    result = what_if(usecases.kernel_view(store, FIXTURE_RELEASE).projection, parse_changes(**changes))
    with reference.fixed_ties():
        ref = tie_order(reference.add_source_evidence(result, store, hops))
    new = callsites.add_source_evidence(result, store, hops)
    return ref, new


@pytest.mark.parametrize("one_by_one", [0, callsites.ONE_BY_ONE])
@pytest.mark.parametrize("hops", [1, 2, 3])
@pytest.mark.parametrize("changes", CHANGES, ids=lambda c: json.dumps(c))
def test_fast_path_gives_the_reference_answer(eq_store, changes, hops, one_by_one, monkeypatch):
    """Both ways of asking for calls through inlines (one query per symbol, one for all)."""
    monkeypatch.setattr(callsites, "ONE_BY_ONE", one_by_one)
    ref, new = both(eq_store, changes, hops)
    assert json.dumps(new.to_json(), indent=1) == json.dumps(ref.to_json(), indent=1)
    assert render_whatif(new, "md") == render_whatif(ref, "md")


def test_the_generated_tree_exercises_what_it_claims(eq_store):
    """Not a tautology guard: the comparisons above are only worth something if the store holds
    the cases they are meant to cover."""
    ref, _ = both(eq_store, {"unexport": ["a_plain", "kfree"]}, 3)
    sites = {m: [(c.symbol, c.function, c.line, c.via) for c in cs] for m, cs in ref.call_sites.items()}
    vias = {c[3] for cs in sites.values() for c in cs}
    assert {"eq_h1", "eq_h2", "eq_h3", "eq_both"} <= vias  # one, two and three calls deep
    assert "eq_h4" not in vias  # four is beyond reach
    lines = [(m, c[0], c[2]) for m, cs in sites.items() for c in cs]
    assert len(lines) == len(set(lines))  # one site per line, also where two inlines reach the symbol
    tie = [c for c in sites["eq_one"] if c[0] == "a_plain" and c[1] == "eq_one_fn"]
    assert [c[3] for c in tie] == ["eq_h3", "eq_h1"]  # eq_h3 alone; then eq_h1 + eq_h3: the first by name
    one = sites["eq_one"]
    kfree_lines = [c[2] for c in one if c[0] == "kfree"]
    assert len(kfree_lines) == 1  # two calls on one line are one call site (DISTINCT)
    assert any(c[3] is None for c in sites["eq_two"]) and any(c[3] for c in sites["eq_two"])
    assert "eq_three" not in ref.call_sites  # inherited break (through eq_two): no call sites
    assert {b.module for b in ref.broken if not b.direct} >= {"eq_three"}
    # two shortest chains from one inline: the walk keeps, for the symbol, the first node by id
    # that reaches it, and for each node the first predecessor by id (ids are kernel|file|name)
    chains = {c.via: c.chain for c in ref.call_sites["eq_five"] if c.symbol == "a_plain"}
    assert chains["eq_fork"] == ("eq_fork", "eq_fork_b", "eq_fork_c", "a_plain")  # not _a, _d (by first hop)
    assert chains["eq_gork"] == ("eq_gork", "eq_gork_z", "a_plain")  # eq_gork_a is in eq_zz.h
    # one name exported from two files, both one call from a_plain: the first file's is named
    dup = [r for r in ref.replacements["a_plain"] if r.export == "eq_dup_wrap"]
    assert [(r.file, r.gpl, r.hops) for r in dup] == [("eq-src/eq_four.c", True, 1)]
    reps = {r.export: r.hops for r in ref.replacements["a_plain"]}
    assert reps.get("eq_one_wrap") == 1 and reps.get("eq_two_wrap") == 2 and reps.get("eq_three_wrap") == 3


#: The generated tree's kernel name in Neo4j (a shared server: a name of the live suite's).
NEO_KERNEL = "ksymgraph-test-eq"


@pytest.mark.neo4j
def test_neo4j_gives_the_reference_answer(eq_store, fixture_tree, eq_tree):
    """The same tree loaded into Neo4j (``$NEO4J_URI``; see tests/test_neo4j_store.py): its fast
    path gives the reference's answer on LadybugDB, chains included (Neo4j reads them from the
    relationships of the variable-length match, LadybugDB from its ``nodes()``)."""
    from test_neo4j_store import live_uri

    from ksymgraph.graph.neo4j_store import Neo4jStore

    neo = Neo4jStore(live_uri())
    try:
        load_kernel(neo, [str(fixture_tree), *(str(eq_tree / f"{n}.ko") for n in MODULES)], kernel=NEO_KERNEL,
                    workers=1, source_dirs=[str(eq_tree)])
        for changes in CHANGES:
            ref, _ = both(eq_store, changes, 2)
            result = what_if(usecases.kernel_view(eq_store, FIXTURE_RELEASE).projection, parse_changes(**changes))
            new = callsites.add_source_evidence(result._replace(kernel=NEO_KERNEL), neo, 2)
            assert json.dumps(new._replace(kernel=FIXTURE_RELEASE).to_json(), indent=1) == \
                json.dumps(ref.to_json(), indent=1), changes
    finally:
        neo.delete_kernel(NEO_KERNEL)
        neo.close()
