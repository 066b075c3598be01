"""The compiler as the oracle on real data: Debian 6.1.0-57-amd64 (6.1.192, the version of the
``linux-source-6.1`` package in the cache) loaded with its source graph, every in-tree module's
predicted imports held against its ``.ko`` imports.

The floors are the figures measured with ``tests/bench/bench_oracle.py`` (docs/fidelity.md)
less a small margin: the source graph may get better (issue 14's goal is 0.95 for both), not
worse. Nothing is excluded from either side.
"""

from __future__ import annotations

import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.queries.fidelity import fidelity

pytestmark = pytest.mark.realdata

#: The kernel whose version (6.1.192-3) is that of the linux-source-6.1 package.
RELEASE = "6.1.0-57-amd64"

#: Measured (bench_oracle.py, 2026-12-01): CALLS + COMPILER_INSERTS at 15c904f: recall 0.810,
#: precision 0.898; with REFERENCES, the preprocessor, the build's visibility rules and the shared
#: headers' macros, macros handed on and upper-case macro chains (this session): CALLS + REFERENCES +
#: COMPILER_INSERTS recall 0.936, precision 0.926; with gcc's canaries and every indirect call 0.938 /
#: 0.931; CALLS + REFERENCES alone recall 0.867, precision 0.927; with a .c file that a compiled
#: file includes in its translation unit (and a file in several modules in each) 0.948 / 0.930;
#: with gcc's constant folding, names only other architectures define, upper-case names in header
#: inlines and trace events: 0.960 / 0.964 (CALLS + REFERENCES alone 0.889 / 0.963).
#: Floors: 0.02 below.
RECALL_FLOOR = 0.94
PRECISION_FLOOR = 0.944
CALLS_ONLY_RECALL_FLOOR = 0.869


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("fidelity") / "graph.lbdb")
    load_kernel(store, [f"debian:{RELEASE}"], source_dirs=["debian"])
    yield store, fidelity(store, RELEASE)
    store.close()


def test_recall_and_precision_floors(measured):
    store, f = measured
    print(f"\n{RELEASE}: {f.summary()} ({'+'.join(f.relationships)})")
    assert len(f.modules) > 4000
    assert f.imports > 180_000  # every import of every measured module counts
    assert f.recall >= RECALL_FLOOR and f.precision >= PRECISION_FLOOR, f.summary()
    calls_only = fidelity(store, RELEASE, types=("CALLS", "REFERENCES"))
    assert calls_only.recall >= CALLS_ONLY_RECALL_FLOOR, calls_only.summary()
    # The compiler-inserted relationships add what the compiler inserts: recall goes up.
    assert f.recall > calls_only.recall + 0.05


def test_fentry_is_predicted_for_modules_importing_it(measured):
    store, f = measured
    importing = {r[0] for r in store.query(
        "MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = '__fentry__' RETURN m.name",
        {"k": RELEASE}).rows}
    measured_modules = {m.module for m in f.modules}
    assert len(importing & measured_modules) > 3900
    missed = {m.module for m in f.modules if m.module in importing and "__fentry__" in m.missed}
    # Measured: 50 of the 4,000 (nhc_*, pinctrl_*lake, snd_echo3g, ...): their functions come from
    # macros invoked at file scope (module_pci_driver, module_lowpan_nhc) or from a .c file they
    # #include, so the graph has no C function of theirs; every other importer is predicted.
    assert len(missed) <= 0.015 * len(importing & measured_modules)
    with_code = {r[0] for r in store.query(
        "MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(fn:Function) WHERE m.kernel = $k AND "
        "m.name IN $mods AND fn.is_macro = false AND fn.name <> '(file scope)' RETURN DISTINCT m.name",
        {"k": RELEASE, "mods": sorted(missed)}).rows}
    assert with_code == set()
    # ... and it is a compiler insert of the module, with its cause, never a call.
    rows = store.query("MATCH (m:Module)-[r:COMPILER_INSERTS]->(s:Symbol) WHERE m.kernel = $k AND "
                       "s.name = '__fentry__' AND m.name = 'ext4' RETURN r.causes", {"k": RELEASE}).rows
    assert rows == [(["CONFIG_FUNCTION_TRACER", "CONFIG_HAVE_FENTRY"],)]
    assert store.query("MATCH (:Function)-[c:CALLS]->(s:Symbol) WHERE s.kernel = $k AND s.name = '__fentry__' "
                       "RETURN count(c)", {"k": RELEASE}).rows == [(0,)]


def _per_symbol(f, symbol: str) -> tuple[int, int]:
    """(modules missing ``symbol``, modules over-predicting it) of the measure."""
    missed = sum(1 for m in f.modules if symbol in m.missed)
    over = sum(1 for m in f.modules if symbol in m.over)
    return missed, over


def test_canaries_and_indirect_calls_follow_gcc(measured):
    """``__stack_chk_fail`` from the functions with a stack canary (Function.canary, and the header
    functions their code reaches), ``__x86_indirect_thunk_rax`` from those calling through a
    function pointer (Function.indirect). Measured (bench_oracle.py, 2026-12-01, branch frames):
    __stack_chk_fail 2,893 importers, 40 missed, 107 over-predicted (before: 18 and 1,096, predicted
    for every module with code); the thunk 1,715 importers, 65 missed, 61 over-predicted (before:
    482 and 7, from member calls only). Bounds: about 1.5 times those."""
    store, f = measured
    missed, over = _per_symbol(f, "__stack_chk_fail")
    assert missed <= 60 and over <= 160, (missed, over)
    missed, over = _per_symbol(f, "__x86_indirect_thunk_rax")
    assert missed <= 100 and over <= 100, (missed, over)
    # A call through a parameter or a local calls no symbol named after the pointer: before, 111
    # calls went to a Symbol `cb`, 330 to `fn`, 69 to `callback`.
    rows = store.query("MATCH (:Function)-[c:CALLS]->(s:Symbol) WHERE s.kernel = $k AND s.name IN "
                       "['cb', 'fn', 'callback', 'func', 'handler'] RETURN count(c)", {"k": RELEASE}).rows
    assert rows[0][0] < 30, rows


def test_modules_whose_code_is_an_included_c_file(measured):
    # snd_echo3g.ko is echo3g.c, which #includes echoaudio.c, echo3g_dsp.c, midi.c...; ehci-hcd.c
    # includes ehci-q.c and the rest; hostap_pci.c includes hostap_hw.c; ens1371.c, ens1370.c.
    # Before the translation-unit rule their recall was 0 (snd_*) to 0.58; measured with it: recall
    # 0.959 to 1.000, precision 0.853 (snd_ens1371) to 0.962. (liquidio_vf: files Kbuild puts in two modules.)
    _store, f = measured
    by_name = {m.module: m for m in f.modules}
    for name in ("snd_echo3g", "snd_mia", "snd_au8830", "snd_ens1371", "hostap_pci", "ehci_hcd", "uhci_hcd",
                 "ni_pcimio", "prism2_usb", "liquidio_vf"):
        m = by_name[name]
        assert m.recall >= 0.9 and m.precision >= 0.8, (name, m.imports, m.predicted, m.both)


def test_gcc_folds_constants_as_the_graph_says(measured):
    """gcc's constant folding (ksymgraph.loaders.cfold): measured (bench_oracle.py, 2026-12-01),
    modules over-predicting / missing each symbol, before → after: kmalloc_large 1,695 / 0 → 129 / 85
    (a sizeof over 8 KiB, which no source says), __kmalloc 1,064 → 116 / 14, memset 1,096 → 169 / 24,
    memcpy 742 → 320 / 60; _kstrtoul 173 → 0 (sizeof(long) == sizeof(long long)); and, from
    INLINE_COPY_FROM_USER that only other architectures define, copy_user_generic_string 429 → 0;
    __udelay 544 → 230 once the udelay() macro's __builtin_constant_p(n) is read.
    Bounds: about 1.5 times those."""
    _store, f = measured
    bounds = {"kmalloc_large": (130, 200), "__kmalloc": (30, 180), "memset": (40, 260), "memcpy": (90, 480),
              "_kstrtoul": (5, 5), "copy_user_generic_string": (10, 10), "__udelay": (20, 350)}
    got = {s: _per_symbol(f, s) for s in bounds}
    assert all(got[s][0] <= m and got[s][1] <= o for s, (m, o) in bounds.items()), got


def test_trace_events_as_the_preprocessor_makes_them(measured):
    """loaders/tracepoints.py: define_trace.h's stages in each ``CREATE_TRACE_POINTS`` file and
    tracepoint.h's ``trace_<event>()`` inline for its callers. Measured (bench_oracle.py,
    2026-12-01, branch trace): trace_event_raw_init, imported by 106 modules, missed by none
    (before: all 106); ``bpf_trace_run<N>`` missed nowhere (before: 353 (module, symbol) pairs);
    ``__SCK__tp_func_*`` missed in 6 pairs of 126, ``__tracepoint_*`` in 55 of 178 (46 of them
    mmap_lock's, named by a macro inside an inline); nr_cpu_ids over-predicted for 94 more
    modules (an argument cpu_max_bits_warn() discards), none of the tracepoint names. Bounds:
    about 1.5 times those."""
    store, f = measured
    for symbol in ("trace_event_raw_init", "trace_event_buffer_reserve", "perf_trace_run_bpf_submit",
                   "__trace_trigger_soft_disabled"):
        missed, over = _per_symbol(f, symbol)
        assert missed <= 3 and over <= 3, (symbol, missed, over)
    pairs = [(s, m.module) for m in f.modules for s in m.missed]
    assert sum(1 for s, _m in pairs if s.startswith("bpf_trace_run")) <= 5
    assert sum(1 for s, _m in pairs if s.startswith("__SCK__tp_func_")) <= 10
    assert sum(1 for s, _m in pairs if s.startswith("__tracepoint_")) <= 80
    over = [(s, m.module) for m in f.modules for s in m.over]
    assert sum(1 for s, _m in over if s.startswith(("bpf_trace_run", "__tracepoint_", "__SCK__tp_func_"))) <= 10


def _sites_measure(store, symbols, folded):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    try:
        from bench_sites_oracle import measure
    finally:
        sys.path.pop(0)
    rows = measure(store, RELEASE, symbols, folded)
    checked, confirmed, truth, empty = (sum(r[i] for r in rows) for i in (5, 6, 7, 2))
    return confirmed / checked, confirmed / truth, empty


def test_whatif_call_sites_against_each_functions_relocations(measured):
    """A what-if's call sites (queries/callsites.py) against the ``.ko`` files, function by
    function (tests/bench/bench_sites_oracle.py: the functions whose code has a relocation naming
    the symbol). Measured 2026-12-01 on these five symbols, per (module, function): with gcc's
    folding and only header inlines on a site's path, precision 0.822, recall 0.700; every call of
    an inline's body taken as compiled, 0.413 / 0.731; the same modules without a site (those the
    source graph does not reach at all). Floors: a little below."""
    store, _f = measured
    symbols = ["kmalloc_trace", "__kmalloc", "memset", "memcpy", "__udelay"]
    precision, recall, empty = _sites_measure(store, symbols, folded=True)
    unfolded_precision, unfolded_recall, unfolded_empty = _sites_measure(store, symbols, folded=False)
    assert precision >= 0.80 and recall >= 0.68, (precision, recall)
    assert precision - unfolded_precision >= 0.3 and unfolded_recall - recall <= 0.05
    assert empty == unfolded_empty  # folding leaves no importer without its candidates


def test_a_site_is_never_reached_through_another_files_function(measured):
    """vmlinux's ``__alloc_skb()`` calls memset; a module calling the ``alloc_skb()`` inline does
    not (net/atm/clip.c: ``alloc_skb → __alloc_skb → memset`` was listed as a memset site)."""
    from ksymgraph.queries.callsites import call_sites

    store, _f = measured
    sites = call_sites(store, RELEASE, ["clip"], ["memset"])
    assert sites and not [s for s in sites if "__alloc_skb" in s.chain]
    headers = {r[0] for r in store.query("MATCH (f:Function) WHERE f.kernel = $k AND f.file ENDS WITH '.h' "
                                         "RETURN DISTINCT f.name", {"k": RELEASE}).rows}
    assert all(name in headers for s in sites for name in s.chain[:-1]), [s.chain for s in sites]
