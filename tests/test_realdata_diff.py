"""Debian bookworm 6.1 against trixie 6.12 (``.ko.xz``, fetched through a private apt
configuration): the diff's counts equal a direct comparison of the two Module.symvers files."""

from __future__ import annotations

import pytest

from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.connect import open_store
from ksymgraph.queries.diff import diff_kernels

pytestmark = pytest.mark.realdata


def symvers_exports(path) -> dict[str, tuple[str, bool, str, int]]:
    """symbol -> (owner base name, gpl, namespace, crc), read with nothing but str.split."""
    out = {}
    for line in open(path):
        crc, sym, owner, kind, *ns = line.rstrip("\n").split("\t")
        out.setdefault(sym, (owner.rsplit("/", 1)[-1].replace("-", "_"), kind == "EXPORT_SYMBOL_GPL",
                             ns[0] if ns else "", int(crc, 16)))
    return out


def test_diff_counts_equal_symvers_comparison(tmp_path, debian_kernel, trixie_kernel):
    a, b = symvers_exports(debian_kernel.symvers), symvers_exports(trixie_kernel.symvers)
    want = {
        "removed": len(a.keys() - b.keys()),
        "added": len(b.keys() - a.keys()),
        "gpl_only": sum(1 for s in a.keys() & b.keys() if b[s][1] and not a[s][1]),
        "not_gpl_only": sum(1 for s in a.keys() & b.keys() if a[s][1] and not b[s][1]),
        "namespace": sum(1 for s in a.keys() & b.keys() if a[s][2] != b[s][2]),
        "owner": sum(1 for s in a.keys() & b.keys() if a[s][0] != b[s][0]),
        "crc": sum(1 for s in a.keys() & b.keys() if a[s][3] != b[s][3]),
    }
    with open_store(tmp_path / "db") as store:
        sa = load_kernel(store, [f"debian:{debian_kernel.release}"])
        sb = load_kernel(store, [f"debian:{trixie_kernel.release}@trixie"])
        assert sb.skipped == [] and sb.report.symvers_mismatches == []  # .ko.xz ksymtabs equal Module.symvers
        d = diff_kernels(store, sa.kernel, sb.kernel)
    got = {k: v for k, v in d.summary.items() if k != "tightened"}
    print(f"\n{sa.kernel} -> {sb.kernel}: {got}")
    assert got == want
    assert want["removed"] > 1000 and want["gpl_only"] > 0 and want["namespace"] > 100
