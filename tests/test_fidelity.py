"""The compiler as the oracle, hermetically: fixture modules compiled with gcc (``-O2 -pg -mfentry``,
``-fstack-protector-strong`` and retpolines, as Kbuild compiles with CONFIG_FUNCTION_TRACER,
CONFIG_STACKPROTECTOR_STRONG and CONFIG_RETPOLINE), their source loaded, and the imports the
source graph predicts held against the undefined symbols of the objects gcc wrote; and, function by
function, the stack canaries and indirect calls the C loader reads against the code gcc made.

The expected figures are counted by hand from the C files (each module's imports are also read
back from the objects with ``nm``, independently of the loader): recall and precision are exact
fractions, so a change in what the graph predicts, or in what is counted, fails the test.
Compiler-inserted imports (``COMPILER_INSERTS``) exist exactly when the ``.config`` turns on the
options that cause them.
"""

from __future__ import annotations

import re
import subprocess
from fractions import Fraction

import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_tree
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.compiler import COMPILER_INSERTED, inserted_symbols
from ksymgraph.loaders.cparse import parse_source
from ksymgraph.queries.callsites import call_sites
from ksymgraph.queries.fidelity import PREDICTING, fidelity, present_relationships
from test_source_graph import kernel_a_only

FIDELITY_SOURCES = MODULE_SOURCES.parent / "fidelity"
#: The in-tree fixture modules measured (weak_e has no intree=Y, prop_d is out-of-tree).
SOURCES = ["core_a.c", "user_b.c", "user-c.c", "weak_e.c", "prop_d.c"]
#: The fidelity fixture's own modules (tests/fixtures/fidelity/).
FIDELITY_MODULES = ["fid_user.c", "fid_ops.c", "fid_array.c", "fid_addr.c", "fid_noframe.c", "fid_cb.c", "fid_hdr.c",
                    "fid_macro.c"]
#: How Kbuild compiles a module's C (6.1's Makefile and arch/x86/Makefile), as far as the inserts go.
GCC = ["gcc", "-O2", "-fno-pic", "-pg", "-mfentry", "-fstack-protector-strong", "-mindirect-branch=thunk-extern",
       "-mindirect-branch-register"]

CONFIG_ON = ("CONFIG_MODULES=y\nCONFIG_FUNCTION_TRACER=y\nCONFIG_HAVE_FENTRY=y\nCONFIG_STACKPROTECTOR=y\n"
             "CONFIG_STACKPROTECTOR_STRONG=y\nCONFIG_RETPOLINE=y\n")
CONFIG_OFF = "CONFIG_MODULES=y\n# CONFIG_FUNCTION_TRACER is not set\n# CONFIG_STACKPROTECTOR is not set\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A built out-of-tree-style tree: the fixture C files, their objects compiled as :data:`GCC`
    says (``-pg -mfentry``, ``-fstack-protector-strong``, retpolines), Kbuild's .mod files, and a
    Module.symvers for vmlinux that exports what the compiler inserts, ``fid_use`` and
    ``fid_wait_init``."""
    root = compile_tree(tmp_path_factory.mktemp("fid") / "fid-src",
                        [*(MODULE_SOURCES / s for s in SOURCES), *(FIDELITY_SOURCES / s for s in FIDELITY_MODULES)],
                        [MODULE_SOURCES / "fixture_module.h", FIDELITY_SOURCES / "fid_inline.h"], GCC, kernel_a_only)
    symvers = (MODULE_SOURCES / "vmlinux.symvers").read_text()
    symvers += "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\t__stack_chk_fail\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\t__x86_indirect_thunk_rax\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\tfid_use\tvmlinux\tEXPORT_SYMBOL\t\n"
    symvers += "0x00000000\tfid_wait_init\tvmlinux\tEXPORT_SYMBOL\t\n"
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
#: __fentry__; a canary calls __stack_chk_fail; an indirect call goes through a retpoline thunk),
#: and what its source reaches that another module exports.
IMPORTS = {
    "core_a": {"_printk", "kfree", "__fentry__"},  # no local array, no address of a local: no canary
    "user_b": {"a_plain", "a_ns", "__fentry__"},
    "user_c": {"b_fn", "__fentry__"},
    "fid_user": {"a_plain", "__fentry__"},  # fid_dead's kfree is dead code
    "fid_ops": {"__fentry__", "__x86_indirect_thunk_rax"},  # ops->run(x) through the retpoline
    "fid_array": {"__fentry__", "__stack_chk_fail", "fid_use"},  # a local array
    "fid_addr": {"__fentry__", "__stack_chk_fail", "fid_use"},  # &x, &s.b
    "fid_noframe": {"__fentry__", "fid_use"},  # &param, &q->b, a static array: no canary
    "fid_cb": {"__fentry__", "__x86_indirect_thunk_rax"},  # cb(x), (*fp)(x), table[i](i)
    "fid_hdr": {"__fentry__", "__stack_chk_fail", "__x86_indirect_thunk_rax", "fid_use"},  # inlined
    "fid_macro": {"__fentry__", "__stack_chk_fail", "fid_use", "fid_wait_init"},  # locals of macros
}
CALLED = {
    "core_a": {"_printk", "kfree"},
    "user_b": {"a_plain", "a_ns"},
    "user_c": {"b_fn"},
    "fid_user": {"a_plain", "kfree"},  # through fid_wrap (live) and fid_dead (dead: over-predicted)
    "fid_ops": set(),  # a call through a member is no symbol
    "fid_array": {"fid_use"},
    "fid_addr": {"fid_use"},
    "fid_noframe": {"fid_use"},
    "fid_cb": set(),  # a call through a pointer is no symbol either
    "fid_hdr": {"fid_use"},  # in fid_buf
    "fid_macro": {"fid_use", "fid_wait_init"},  # directly, and in fid_wait_event
}
#: The modules gcc gives canaries (a function of theirs or a header inline they inline has a local
#: array or an address-taken local), and indirect calls (of theirs, or an inline's).
CANARY = {"fid_array", "fid_addr", "fid_hdr", "fid_macro"}
INDIRECT = {"fid_ops", "fid_cb", "fid_hdr"}


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
    # 30 imports; 13 predicted; 12 in both: __fentry__ missed 11 times, __stack_chk_fail 4 times, the
    # thunk 3 times, fid_user's kfree over-predicted.
    assert (f.imports, f.predicted, f.both) == (30, 13, 12)
    assert Fraction(f.both, f.imports) == Fraction(2, 5) and f.recall == pytest.approx(12 / 30)
    assert f.precision == pytest.approx(12 / 13)
    assert dict(f.most_missed()) == {"__fentry__": 11, "__stack_chk_fail": 4, "__x86_indirect_thunk_rax": 3}
    assert f.most_over() == [("kfree", 1)]
    assert [(m.module, m.errors) for m in f.worst(1)] == [("fid_hdr", 3)]
    assert rows(store_off, "MATCH ()-[r:COMPILER_INSERTS]->() RETURN count(r)") == [(0,)]


def test_fidelity_with_compiler_options(store_on):
    f = fidelity(store_on)
    assert "COMPILER_INSERTS" in f.relationships
    by = {m.module: m for m in f.modules}
    for module, imports in IMPORTS.items():
        # __fentry__ is predicted for every module now; __stack_chk_fail (CONFIG_STACKPROTECTOR_STRONG)
        # only for the modules with a canary, the thunk (CONFIG_RETPOLINE) for those with an
        # indirect call: of their own functions, or of the header inlines they call (fid_hdr).
        predicted = CALLED[module] | {"__fentry__"}
        predicted |= {"__stack_chk_fail"} if module in CANARY else set()
        predicted |= {"__x86_indirect_thunk_rax"} if module in INDIRECT else set()
        assert set(by[module].missed) == imports - predicted, module
        assert set(by[module].over) == predicted - imports, module
    assert (f.imports, f.predicted, f.both) == (30, 31, 30)
    assert f.recall == 1.0 and f.precision == pytest.approx(30 / 31)
    assert f.most_over() == [("kfree", 1)]
    # Leaving the relationship out gives the figures without it, from the same store.
    calls_only = fidelity(store_on, types=("CALLS",))
    assert (calls_only.imports, calls_only.predicted, calls_only.both) == (30, 13, 12)


def rows(store, cypher, **params):
    return store.query(cypher, {"k": FIXTURE_RELEASE, **params}).rows


def test_compiler_inserts_present_iff_the_option_is_on(store_on, store_off):
    got = rows(store_on, "MATCH (m:Module)-[r:COMPILER_INSERTS]->(s:Symbol) WHERE m.kernel = $k "
                         "RETURN m.name, s.name, r.causes ORDER BY m.name, s.name")
    modules_with_code = ["core_a", "fid_addr", "fid_array", "fid_cb", "fid_hdr", "fid_macro", "fid_noframe", "fid_ops",
                         "fid_user", "prop_d", "user_b", "user_c", "weak_e"]
    strong = ["CONFIG_STACKPROTECTOR", "CONFIG_STACKPROTECTOR_STRONG"]
    # From the modules whose own functions have them (fid_macro's fm_define and fm_bitmap: the locals
    # of DEFINE_FID_WAIT, DECLARE_BITMAP); fid_hdr's, and fm_wait's, come from the header's inline
    # and macro.
    assert got == sorted([(m, "__fentry__", ["CONFIG_FUNCTION_TRACER", "CONFIG_HAVE_FENTRY"]) for m in modules_with_code]
                         + [(m, "__stack_chk_fail", strong) for m in ("fid_addr", "fid_array", "fid_macro")]
                         + [(m, "__x86_indirect_thunk_rax", ["CONFIG_RETPOLINE"]) for m in ("fid_cb", "fid_ops")])
    inlines = rows(store_on, "MATCH (f:Function)-[r:COMPILER_INSERTS]->(s:Symbol) WHERE f.kernel = $k "
                             "RETURN f.name, s.name ORDER BY f.name")
    assert inlines == [("fid_buf", "__stack_chk_fail"), ("fid_dispatch", "__x86_indirect_thunk_rax"),
                       ("fid_wait_event", "__stack_chk_fail")]
    assert rows(store_off, "MATCH (m:Module)-[r:COMPILER_INSERTS]->(s:Symbol) RETURN count(r)") == [(0,)]
    # The option list decides: on -> the entries whose options are all y, nothing else; the canary
    # rule is -fstack-protector-strong's, which plain CONFIG_STACKPROTECTOR does not turn on.
    on = {e.symbol for e in inserted_symbols({"CONFIG_FUNCTION_TRACER": "y", "CONFIG_HAVE_FENTRY": "y",
                                              "CONFIG_STACKPROTECTOR": "y"})}
    assert on == {"__fentry__"}
    on = {e.symbol for e in inserted_symbols({"CONFIG_STACKPROTECTOR": "y", "CONFIG_STACKPROTECTOR_STRONG": "y"})}
    assert on == {"__stack_chk_fail"}
    assert inserted_symbols(None) == [] and inserted_symbols({}) == []


def test_compiler_inserts_are_never_call_sites(store_on):
    assert call_sites(store_on, FIXTURE_RELEASE, None, ["__fentry__", "__stack_chk_fail"]) == []
    assert [c.function for c in call_sites(store_on, FIXTURE_RELEASE, None, ["kfree"]) if c.module == "core_a"] == ["a_gpl"]


def test_a_call_through_a_pointer_calls_no_symbol(store_on):
    # fid_cb's cb(x), (*fp)(x), table[i](i) and fid_inline.h's f(x) call no function of those names.
    names = ["cb", "fp", "table", "f", "g"]
    assert rows(store_on, "MATCH (s:Symbol) WHERE s.kernel = $k AND s.name IN $names RETURN s.name", names=names) == []
    assert call_sites(store_on, FIXTURE_RELEASE, None, names) == []
    got = rows(store_on, "MATCH (f:Function) WHERE f.kernel = $k AND f.indirect = true RETURN f.name ORDER BY f.name")
    # (fid_apply's call through its parameter is none in an inline: hf_apply passes fid_twice)
    assert got == [("fc_local",), ("fc_param",), ("fc_table",), ("fid_call",), ("fid_dispatch",)]


def code_of_functions(obj) -> dict[str, set[str]]:
    """function -> the symbols its code refers to, from ``objdump -dr`` (not the loader)."""
    out = subprocess.run(["objdump", "-dr", str(obj)], check=True, capture_output=True, text=True).stdout
    refs: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            current = refs.setdefault(m.group(1), set())
        elif current is not None and (r := re.search(r"\sR_X86_64_\w+\s+([\w.]+)", line)):
            current.add(r.group(1))
    return refs


def test_each_function_of_the_modules_as_gcc_made_it(store_on, tree):
    """Per function of the fixture modules: a call of __stack_chk_fail in gcc's code iff the loader
    found a canary in it or in a header inline it calls; a retpoline thunk iff an indirect call."""
    flags = {name: (canary, indirect) for name, canary, indirect in rows(
        store_on, "MATCH (f:Function)-[:DEFINED_IN]->(:File)-[:BUILT_INTO]->(:Module) WHERE f.kernel = $k "
                  "AND f.name <> '(file scope)' RETURN f.name, f.canary, f.indirect")}
    inlined = rows(store_on, "MATCH (f:Function)-[:CALLS]->(h:Function)-[:COMPILER_INSERTS]->(s:Symbol) "
                             "WHERE f.kernel = $k RETURN f.name, s.name")
    code = {}
    for ko in tree.glob("*.ko"):
        code.update(code_of_functions(ko))
    assert set(flags) - set(code) == {"fid_twice"}  # inlined into hf_apply, and no more
    for name, (canary, indirect) in sorted(flags.items()):
        if name not in code:
            continue
        refs = code[name]
        assert ("__stack_chk_fail" in refs) == (canary or (name, "__stack_chk_fail") in inlined), name
        thunk = any(r.startswith("__x86_indirect_thunk_") for r in refs)
        assert thunk == (indirect or (name, "__x86_indirect_thunk_rax") in inlined), name


def test_the_loaders_frames_against_gcc(tmp_path):
    """tests/fixtures/fidelity/frames.c, a function per case of gcc's -fstack-protector-strong rule
    (gcc/cfgexpand.cc, expand_used_vars) and of a call through a pointer: each function's canary and
    indirect flags as the C loader reads them, against the code gcc makes of it. Two cases the
    loader cannot see are expected wrong, and only those."""
    src = FIDELITY_SOURCES / "frames.c"
    obj = tmp_path / "frames.o"
    subprocess.run([*GCC, "-c", str(src), "-o", str(obj)], check=True)
    code = code_of_functions(obj)
    functions = {f.name: f for f in parse_source(src.read_bytes(), "frames.c").functions}
    assert set(functions) == set(code)
    wrong_canary = {name for name, f in functions.items() if f.canary != ("__stack_chk_fail" in code[name])}
    assert wrong_canary == {"struct_with_array", "constant_index_array"}
    wrong_indirect = {name for name, f in functions.items()
                      if f.indirect != any(r.startswith("__x86_indirect_thunk_") for r in code[name])}
    assert wrong_indirect == set()
    assert sum(f.canary for f in functions.values()) == 9 and sum(f.indirect for f in functions.values()) == 7


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
        assert (got.imports, got.predicted, got.both) == (30, 31, 30)
    finally:
        neo.delete_kernel(kernel)
        neo.close()
