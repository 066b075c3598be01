"""Export history on five real Debian kernels in one store, against a direct comparison of their
Module.symvers files.

bookworm's two 6.1 ABIs, the newest bookworm-backports 6.12, trixie's newest 6.12 and sid's 7.2
(built without modversions): for every symbol any of them exports, the transitions ``history``
reports between neighbours equal the ones read straight from the five Module.symvers files
(owner as the kernel names it; a CRC is compared only where both kernels have modversions).
"""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders import debian
from ksymgraph.loaders.debnames import debian_version_key
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.queries.history import export_history, ordered_kernels

pytestmark = pytest.mark.realdata


def _newest(suite: str, pattern: str) -> str:
    found = [k.release for k in debian.suite_kernels(suite) if re.fullmatch(pattern, k.release) and k.headers]
    assert found, f"no kernel matching {pattern} with headers in {suite}"
    return found[-1]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    releases = ["6.1.0-47-amd64", "6.1.0-50-amd64",
                _newest("bookworm-backports", r"6\.12\.\d+\+deb12(?:\.\d+)?-amd64"),
                _newest("trixie", r"6\.12\.\d+\+deb13(?:\.\d+)?-amd64"),
                _newest("sid", r"7\.2\.\d+\+deb14(?:\.\d+)?-amd64")]
    db = tmp_path_factory.mktemp("series") / "graph.lbdb"
    with open_store(db) as store:
        for r in releases:
            load_kernel(store, [f"debian:{r}"])
    return db, {r: debian.fetch_kernel(r) for r in releases}


def test_kernels_in_debian_order(series):
    db, kernels = series
    with open_store(db, read_only=True) as store:
        order = [p.kernel for p in ordered_kernels(store)]
    assert order == sorted(kernels, key=lambda r: debian_version_key(kernels[r].version))
    assert order[0] == "6.1.0-47-amd64" and order[-1].startswith("7.2.")


def _symvers_exports(pk) -> dict[str, tuple]:
    out = {}
    for e in sorted(read_symvers(pk.symvers)[0], key=lambda e: (e.export.symbol, e.export.module)):
        out.setdefault(e.export.symbol, e.export)  # a symbol exported twice: its first owner by name
    return out


def test_transitions_equal_a_direct_comparison_of_module_symvers(series):
    db, kernels = series
    with open_store(db, read_only=True) as store:
        order = [p.kernel for p in ordered_kernels(store)]
        modversions = {k: "CONFIG_MODVERSIONS=y\n" in kernels[k].config.read_text() for k in order}
        exports = {k: _symvers_exports(kernels[k]) for k in order}
        symbols = sorted(set().union(*exports.values()))
        h = export_history(store, symbols)
    want = set()
    for a, b in pairwise(order):
        for sym in symbols:
            x, y = exports[a].get(sym), exports[b].get(sym)
            if x is None or y is None:
                if x is not y:
                    want.add((sym, "appeared" if x is None else "vanished", a, b))
                continue
            if x.gpl != y.gpl:
                want.add((sym, "gpl_only" if y.gpl else "not_gpl_only", a, b))
            if x.namespace != y.namespace:
                want.add((sym, "namespace", a, b))
            if x.module != y.module:
                want.add((sym, "owner", a, b))
            if modversions[a] and modversions[b] and x.crc != y.crc:
                want.add((sym, "crc", a, b))
    got = {(t.symbol, t.kind, t.before, t.after) for t in h.transitions}
    kinds = {k for _s, k, _a, _b in want}
    print(f"\n{len(symbols)} symbols over {len(order)} kernels: {len(got)} transitions "
          f"({', '.join(f'{k} {sum(1 for w in want if w[1] == k)}' for k in sorted(kinds))})")
    assert {"appeared", "vanished", "gpl_only", "namespace", "owner", "crc"} <= kinds
    assert got == want
