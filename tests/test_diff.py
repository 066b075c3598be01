"""Kernel-to-kernel diff and upgrade impact on the hermetic fixture kernels A and B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_RELEASE as A, FIXTURE_RELEASE_B as B
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.connect import open_store
from ksymgraph.queries.renames import find_renames
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.queries.diff import DIFF_KINDS, diff_kernels, upgrade_impact


@pytest.fixture
def two_kernels(fixture_store, fixture_tree_b):
    load_kernel(fixture_store, [str(fixture_tree_b)], workers=1)
    return fixture_store


def kinds(d):
    return {k: [e.symbol for e in v] for k, v in d.changes.items() if v}


def test_each_kind_of_change(two_kernels):
    d = diff_kernels(two_kernels, A, B)
    assert kinds(d) == {
        "removed": ["a_plain"],
        "added": ["a_plain2"],
        "gpl_only": ["a_data"],
        "namespace": ["a_gpl"],
        "owner": ["b_fn"],
        "crc": ["a_ns"],
    }
    assert d.summary["tightened"] == 3  # removed a_plain, GPL-only a_data, namespaced a_gpl
    assert d.breaking
    back = diff_kernels(two_kernels, B, A)
    assert kinds(back)["not_gpl_only"] == ["a_data"]
    same = diff_kernels(two_kernels, A, A)
    assert all(not v for v in same.changes.values()) and not same.breaking


def test_upgrade_impact_of_out_of_tree_and_named_modules(two_kernels, extra_modules):
    prop_d = read_module_file(str(extra_modules / "prop_d.ko"))
    u = upgrade_impact(two_kernels, A, B, files=[prop_d], names=["user_b", "user_c"])
    verdict = {m.module: (m.loads, {(r.rule, r.symbol, r.via_module) for r in m.reasons}) for m in u.modules}
    assert verdict == {
        "prop_d": (False, {("unknown-symbol", "a_plain", None)}),
        "user_b": (False, {("unknown-symbol", "a_plain", None)}),
        # b_fn is now exported by B's core_a as well, so user_c still finds it
        "user_c": (True, set()),
    }
    with pytest.raises(ValueError, match="not modules of kernel"):
        upgrade_impact(two_kernels, A, B, names=["nope"])


def test_diff_cli_json_and_exit_code(two_kernels, tmp_path):
    db = two_kernels.describe()
    two_kernels.close()
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "diff", A, B, "--db", db, "--format", "json",
                        "--exit-code"], capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    assert set(DIFF_KINDS) <= set(data) and "summary" in data
    assert [e["symbol"] for e in data["removed"]] == ["a_plain"]
    assert data["gpl_only"][0]["a"]["gpl"] is False and data["gpl_only"][0]["b"]["gpl"] is True
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "diff", B, B, "--db", db, "--exit-code"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "0 removed, 0 added" in p.stdout
    md = subprocess.run([sys.executable, "-m", "ksymgraph", "diff", A, B, "--db", db, "--format", "md"],
                        capture_output=True, text=True, check=True).stdout
    assert md.startswith(f"# Exports from {A} to {B}") and "| a_plain | core_a plain | - |" in md
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "diff", A, B, "--db", db, "--modules", "user_b",
                        "--exit-code"], capture_output=True, text=True)
    assert p.returncode == 1 and "1 of 1 modules would not load" in p.stdout


HEADERS = Path(__file__).parent / "fixtures" / "headers"


def test_rename_behind_header_macro(tmp_path, fixture_tree, fixture_tree_b):
    """a_plain vanishes from B, but a_api() — A's inline over a_plain — is B's macro over a_plain2."""
    with open_store(tmp_path / "db") as store:
        load_kernel(store, [str(fixture_tree)], workers=1, source_dirs=[str(HEADERS / "a")])
        load_kernel(store, [str(fixture_tree_b)], workers=1, source_dirs=[str(HEADERS / "b")])
        renames = find_renames(store, A, B, ["a_plain"])
        assert [(r.api, r.now_via) for r in renames["a_plain"]] == [("a_api", "a_plain2")]
        assert "a_api -> a_api_noprof -> a_plain2" in renames["a_plain"][0].how
        assert "macro" in renames["a_plain"][0].how
        u = upgrade_impact(store, A, B, names=["user_b"])
        (m,) = u.modules
        assert m.loads and m.reasons == []
        assert [r.to_json() for r in m.rebuild] == [{"symbol": "a_plain", "api": "a_api", "now_via": "a_plain2",
                                                     "how": renames["a_plain"][0].how}]
        assert u.to_json()["summary"]["rebuild_only"] == 1


def test_vanished_api_is_a_real_break(tmp_path, fixture_tree, fixture_tree_b):
    with open_store(tmp_path / "db") as store:
        load_kernel(store, [str(fixture_tree)], workers=1, source_dirs=[str(HEADERS / "a")])
        load_kernel(store, [str(fixture_tree_b)], workers=1, source_dirs=[str(HEADERS / "b-api-gone")])
        assert find_renames(store, A, B, ["a_plain"]) == {}
        (m,) = upgrade_impact(store, A, B, names=["user_b"]).modules
        assert not m.loads and m.rebuild == []
        assert [(r.rule, r.symbol) for r in m.reasons] == [("unknown-symbol", "a_plain")]
