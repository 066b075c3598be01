"""Export history across kernels: Debian's version order, each kind of transition, and a module's
first failing kernel — on gcc-built fixture kernels (tests/fixtures/modules/core_a.c: kernel B
renames, namespaces, tightens and moves exports) and hand-made stores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FIXTURE_RELEASE, FIXTURE_RELEASE_B
from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.debnames import debian_version_key
from ksymgraph.loaders.records import Export, Imports, KernelMeta, ModuleData, ModuleInfo
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.queries.history import export_history, module_history, ordered_kernels
from ksymgraph.queries.library import QueryError


@pytest.fixture(scope="module")
def two_kernels(tmp_path_factory, fixture_tree, fixture_tree_b, extra_modules):
    db = tmp_path_factory.mktemp("hist") / "graph.lbdb"
    with open_store(db) as store:
        load_kernel(store, [str(fixture_tree), str(extra_modules)], workers=1)
        load_kernel(store, [str(fixture_tree_b)], workers=1)
    return db


@pytest.mark.parametrize("older, newer", [
    ("6.1.170-3", "6.1.176-1"),           # bookworm's two ABIs: 6.1.0-47 and 6.1.0-50
    ("5.10.234-1", "6.1.170-3"),          # bullseye before bookworm
    ("6.12.43-1~bpo12+1", "6.12.43-1"),   # a backport sorts before the release it backports
    ("6.12.43-1~bpo12+1", "6.12.57-1~bpo12+1"),
    ("6.12.90-1~bpo12+1", "6.12.90-1~bpo12+2"),
    ("6.12.9-1", "6.12.43-1"),            # numbers, not strings
    ("6.12.117-1", "7.2.12-1"),
    ("7.2.12-1", "7.2.13-1"),
    ("6.12.117-1", "1:5.0-1"),            # an epoch wins
])
def test_debian_version_order(older, newer):
    # tests/test_debian.py holds debian_version_key against dpkg itself; these are the orders history needs
    assert debian_version_key(older) < debian_version_key(newer)


def test_kernels_ordered_by_version_not_name(tmp_path):
    # Names sort 6.1.0-50 < 6.12... < 6.1.0-47 wrongly would read; versions decide.
    kernels = [("6.12.57+deb13-amd64", "6.12.57-1"), ("6.1.0-50-amd64", "6.1.176-1"),
               ("6.12.43+deb12-amd64", "6.12.43-1~bpo12+1"), ("6.1.0-47-amd64", "6.1.170-3"),
               ("my-custom-kernel", ""), ("7.2.13+deb14-amd64", "7.2.13-1"), ("5.10.0-32-amd64", "5.10.223-1"),
               ("6.1.0-50-rt-amd64", "6.1.176-1")]
    with open_store(tmp_path / "g.lbdb") as store:
        for release, version in kernels:
            batch, _ = build_kernel_graph(KernelMeta(release, version, "amd64", "test"), [])
            store.replace_kernel(batch)
        points = ordered_kernels(store, flavour=None)
        plain = ordered_kernels(store)  # the flavour most kernels have: amd64
        rt = ordered_kernels(store, "rt-amd64")
        with pytest.raises(QueryError, match=r"no kernel of flavour 'arm64' in the store; it has: \(none\), amd64, rt-amd64"):
            ordered_kernels(store, "arm64")
    assert [p.kernel for p in points] == ["5.10.0-32-amd64", "6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-50-rt-amd64",
                                          "6.12.43+deb12-amd64", "6.12.57+deb13-amd64", "7.2.13+deb14-amd64",
                                          "my-custom-kernel"]
    assert [p.kernel for p in points if p.placed_by_name] == ["my-custom-kernel"]
    assert [p.kernel for p in plain] == [p.kernel for p in points if p.flavour == "amd64"]
    assert [p.kernel for p in rt] == ["6.1.0-50-rt-amd64"]


def test_every_kind_of_transition(two_kernels, fixture_tree, fixture_tree_b):
    with open_store(two_kernels, read_only=True) as store:
        h = export_history(store, ["a_plain", "a_plain2", "a_gpl", "a_data", "a_ns", "b_fn", "kfree"])
    assert [k.kernel for k in h.kernels] == [FIXTURE_RELEASE, FIXTURE_RELEASE_B]
    got = {(t.symbol, t.kind) for t in h.transitions}
    assert got == {("a_plain", "vanished"), ("a_plain2", "appeared"), ("a_gpl", "namespace"),
                   ("a_data", "gpl_only"), ("a_ns", "crc"), ("b_fn", "owner")}
    assert all((t.before, t.after) == (FIXTURE_RELEASE, FIXTURE_RELEASE_B) for t in h.transitions)
    detail = {(t.symbol, t.kind): t.detail for t in h.transitions}
    assert detail[("b_fn", "owner")] == "user_b -> core_a"
    assert detail[("a_ns", "crc")] == "0x44440000 -> 0x55550000"
    # in-tree importers per kernel: user_b imports a_plain in A, a_plain2 in B
    assert [s.importers for s in h.states["a_plain"]] == [1, 0]
    assert [s.importers for s in h.states["a_plain2"]] == [0, 1]
    data = json.loads(json.dumps(h.to_json()))
    assert data["kernels"] == [FIXTURE_RELEASE, FIXTURE_RELEASE_B]
    assert {"symbol": "a_data", "kind": "gpl_only", "before": FIXTURE_RELEASE, "after": FIXTURE_RELEASE_B,
            "detail": "EXPORT_SYMBOL -> EXPORT_SYMBOL_GPL"} in data["transitions"]


def test_transitions_equal_a_direct_comparison_of_the_exports(two_kernels, fixture_tree, fixture_tree_b):
    """The same kernels' exports compared directly (module .ko ksymtabs read as the loader reads
    them, vmlinux from Module.symvers) give the same transitions."""
    from ksymgraph.loaders.modules import find_module_files, read_module_file

    def exports(tree):
        out = {e.export.symbol: e.export for e in read_symvers(tree / "build" / "Module.symvers")[0]}
        for f in find_module_files(tree / "kernel"):
            out.update({e.symbol: e for e in read_module_file(f).exports})
        return out

    a, b = exports(fixture_tree), exports(fixture_tree_b)
    want = set()
    for sym in a.keys() | b.keys():
        x, y = a.get(sym), b.get(sym)
        if x is None or y is None:
            want.add((sym, "appeared" if x is None else "vanished"))
            continue
        if x.gpl != y.gpl:
            want.add((sym, "gpl_only" if y.gpl else "not_gpl_only"))
        if x.namespace != y.namespace:
            want.add((sym, "namespace"))
        if x.module != y.module:
            want.add((sym, "owner"))
        if x.crc != y.crc:
            want.add((sym, "crc"))
    with open_store(two_kernels, read_only=True) as store:
        h = export_history(store, sorted(a.keys() | b.keys()))
    assert {(t.symbol, t.kind) for t in h.transitions} == want


def test_since_until_and_bad_names(two_kernels):
    with open_store(two_kernels, read_only=True) as store:
        h = export_history(store, ["a_plain"], since=FIXTURE_RELEASE_B)
        assert [k.kernel for k in h.kernels] == [FIXTURE_RELEASE_B] and h.transitions == []
        with pytest.raises(QueryError, match="not in the store"):
            export_history(store, ["a_plain"], until="9.9.9")
        h = export_history(store, ["a_plian"])
    assert h.never_exported == {"a_plian": ["a_plain", "a_plain2"]}


def test_module_history_first_failing_kernel(two_kernels, fixture_tree):
    from ksymgraph.loaders.modules import read_module_file

    user_b = read_module_file(str(fixture_tree / "kernel" / "user_b.ko"))
    with open_store(two_kernels, read_only=True) as store:
        h = module_history(store, user_b)
    steps = {s.symbol: s for s in h.steps}
    # user_b as built for A imports a_plain, which B no longer exports
    assert (steps["a_plain"].first_refused, steps["a_plain"].rule, steps["a_plain"].last_loading) == (
        FIXTURE_RELEASE_B, "unknown-symbol", FIXTURE_RELEASE)
    assert steps["a_ns"].first_refused is None  # still exported in A_NS, which it imports
    assert h.loads == {FIXTURE_RELEASE: True, FIXTURE_RELEASE_B: False}
    # as built, B refuses it for a_ns's new CRC: a rebuild is needed even where nothing else changed
    assert h.binary_refused_from == FIXTURE_RELEASE_B
    assert [(r.rule, r.symbol) for r in h.binary_reasons] == [("modversions", "a_ns")]


def test_history_cli(two_kernels):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "ksymgraph", "history", "--db", str(two_kernels), *args],
                              capture_output=True, text=True)

    p = run("a_data", "a_plian", "--format", "json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert [t["kind"] for t in data["transitions"]] == ["gpl_only"]
    assert "a_plian: no kernel in the store exports it; did you mean a_plain, a_plain2?" in p.stderr
    p = run("--module", "user_b")
    assert p.returncode == 0, p.stderr
    assert f"| a_plain | {FIXTURE_RELEASE_B} | {FIXTURE_RELEASE} | unknown-symbol |" in p.stdout
    p = run("--module", "usr_b")
    assert p.returncode == 2 and "did you mean user_b, user_c?" in p.stderr
    p = run()
    assert p.returncode == 2 and "name at least one SYMBOL" in p.stderr


def test_one_kernel_store_says_so(fixture_store):
    from ksymgraph.queries.report import render_history

    text = render_history(export_history(fixture_store, ["a_plain"]))
    assert f"The store holds one kernel ({FIXTURE_RELEASE})" in text


def test_module_data_round_trip(two_kernels):
    """A module taken from the store by name carries its CRCs and vermagic, as its file does."""
    from ksymgraph.graph.projection import KernelProjection

    with open_store(two_kernels, read_only=True) as store:
        m = KernelProjection.from_store(store, FIXTURE_RELEASE).module_data("user_b")
    assert isinstance(m, ModuleData) and isinstance(m.info, ModuleInfo) and isinstance(m.imports, Imports)
    assert dict(zip(m.imports.symbols, m.imports.crcs))["a_ns"] == 0x44440000
    assert m.info.modversions and m.info.vermagic.startswith("6.1.0-fixture ")
    assert all(isinstance(e, Export) for e in m.exports) and [e.symbol for e in m.exports] == ["b_fn"]
