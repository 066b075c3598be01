"""The what-if engine on hermetic modules: every load rule, the cascade, licences, namespaces,
weak imports, module removal, and the JSON contract."""

from __future__ import annotations

import json

import pytest

from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.loaders.records import KernelMeta, LookUpEdge
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.graph.connect import open_store
from ksymgraph.loaders.modules import find_module_files, read_module_file
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.queries.loadrules import RULES
from ksymgraph.queries.whatif import ChangeError, failing_modules, parse_changes, what_if

from conftest import FIXTURE_RELEASE


@pytest.fixture
def proj(fixture_store):
    return KernelProjection.from_store(fixture_store, FIXTURE_RELEASE)


def run(proj, **changes):
    return what_if(proj, parse_changes(**changes))


def verdicts(result):
    """{module: (direct, {(rule, symbol, via_module)})}"""
    return {b.module: (b.direct, {(r.rule, r.symbol, r.via_module) for r in b.reasons}) for b in result.broken}


def test_fixture_kernel_loads_cleanly(proj):
    assert set(proj.modules) == {"vmlinux", "core_a", "user_b", "user_c", "weak_e", "prop_d"}
    assert failing_modules(proj) == {}
    assert proj.modules["prop_d"].intree is False and proj.modules["prop_d"].gpl_compatible is False
    assert proj.modules["user_c"].gpl_compatible is True  # Dual BSD/GPL


def test_unexport_breaks_users_and_cascades(proj):
    r = run(proj, unexport=["a_plain"])
    assert verdicts(r) == {
        "user_b": (True, {("unknown-symbol", "a_plain", None)}),
        "prop_d": (True, {("unknown-symbol", "a_plain", None)}),
        "user_c": (False, {("dependency", "b_fn", "user_b")}),
    }
    assert r.summary == {"broken": 3, "direct": 2, "inherited": 1, "in_tree": 2, "out_of_tree": 1,
                         "by_rule": {"unknown-symbol": 2, "dependency": 1}, "already_broken": 0, "lookups_hit": 0}
    msg = next(x.message for b in r.broken if b.module == "user_b" for x in b.reasons)
    assert msg == '"a_plain" [user_b.ko] undefined!'


def test_cascade_three_levels(proj):
    r = run(proj, unexport=["_printk"])
    assert verdicts(r) == {
        "core_a": (True, {("unknown-symbol", "_printk", None)}),
        "weak_e": (True, {("unknown-symbol", "_printk", None)}),
        "user_b": (False, {("dependency", "a_plain", "core_a"), ("dependency", "a_ns", "core_a")}),
        "prop_d": (False, {("dependency", "a_plain", "core_a")}),
        "user_c": (False, {("dependency", "b_fn", "user_b")}),
    }
    assert [b.module for b in r.broken][:2] == ["core_a", "weak_e"]  # direct ones first


def test_gpl_only_hits_only_non_gpl_modules(proj):
    r = run(proj, gpl_only=["a_plain", "kfree"])
    assert verdicts(r) == {"prop_d": (True, {("gpl-only", "a_plain", None), ("gpl-only", "kfree", None)})}
    msgs = {x.message for x in r.broken[0].reasons}
    assert "GPL-incompatible module prop_d.ko uses GPL-only symbol 'a_plain'" in msgs


def test_namespace_move(proj):
    r = run(proj, namespace=["a_plain=NEW_NS"])
    assert verdicts(r) == {
        "user_b": (True, {("namespace", "a_plain", None)}),
        "prop_d": (True, {("namespace", "a_plain", None)}),
        "user_c": (False, {("dependency", "b_fn", "user_b")}),
    }
    msg = next(x.message for b in r.broken if b.module == "user_b" for x in b.reasons)
    assert msg == "module user_b uses symbol a_plain from namespace NEW_NS, but does not import it."
    # user_b already imports A_NS: moving a_ns there again changes nothing.
    assert run(proj, namespace=["a_ns=A_NS"]).broken == []


def test_remove_module(proj):
    r = run(proj, remove_module=["core_a"])
    v = verdicts(r)
    assert v["user_b"] == (True, {("unknown-symbol", "a_plain", None), ("unknown-symbol", "a_ns", None)})
    assert v["prop_d"] == (True, {("unknown-symbol", "a_plain", None)})
    assert v["user_c"] == (False, {("dependency", "b_fn", "user_b")})
    assert "core_a" not in v


def test_weak_import_never_breaks(proj):
    r = run(proj, unexport=["maybe_there"])
    assert r.broken == []
    assert r.warnings == [f"maybe_there is not exported in kernel {FIXTURE_RELEASE} (1 module imports it)"]
    assert r.unknown == []  # a real symbol, only not exported: not a typo


def test_bad_namespace_argument():
    with pytest.raises(ChangeError, match="SYMBOL=NAMESPACE"):
        parse_changes(namespace=["a_plain"])


def test_json_contract(proj):
    data = json.loads(json.dumps(run(proj, unexport=["a_plain"]).to_json()))
    assert set(data) >= {"kernel", "changes", "broken", "summary"}
    assert data["kernel"] == FIXTURE_RELEASE
    assert data["changes"] == [{"kind": "unexport", "target": "a_plain"}]
    for b in data["broken"]:
        assert set(b) >= {"module", "path", "in_tree", "direct", "reasons"}
        for r in b["reasons"]:
            assert r["rule"] in RULES
            assert set(r) >= {"rule", "symbol", "via_module"}
    c = next(b for b in data["broken"] if b["module"] == "user_c")
    assert c["reasons"] == [{"rule": "dependency", "symbol": "b_fn", "via_module": "user_b",
                             "message": 'user-c.ko needs "b_fn" from user_b, which fails to load'}]


def _lookup_store(tmp_path, fixture_tree, release):
    mods = [read_module_file(p) for p in find_module_files(fixture_tree)]
    entries, _ = read_symvers(fixture_tree / "build" / "Module.symvers")
    lookups = [LookUpEdge("weak_e", "a_plain", "symbol_get", "weak_e.c", 7),
               LookUpEdge("weak_e", "a_gpl", "symbol_get", "weak_e.c", 8),
               LookUpEdge("user_c", "a_gpl", "kprobe", "user-c.c", 9)]
    batch, _ = build_kernel_graph(KernelMeta(release, "", "", "test"), mods, entries, lookups)
    store = open_store(tmp_path / f"{release}.lbdb")
    store.replace_kernel(batch)
    return store


def test_symbol_get_rule_since_6_6(tmp_path, fixture_tree):
    with _lookup_store(tmp_path, fixture_tree, "6.6.0-fixture") as store:
        failing = failing_modules(KernelProjection.from_store(store, "6.6.0-fixture"))
    assert {m: {(r.rule, r.symbol) for r in rs} for m, rs in failing.items()} == {"weak_e": {("symbol-get", "a_plain")}}
    with _lookup_store(tmp_path, fixture_tree, "6.1.0-fixture") as store:
        assert failing_modules(KernelProjection.from_store(store, "6.1.0-fixture")) == {}


def test_lookups_hit_by_change(tmp_path, fixture_tree):
    with _lookup_store(tmp_path, fixture_tree, "6.1.0-fixture") as store:
        proj = KernelProjection.from_store(store, "6.1.0-fixture")
    r = run(proj, unexport=["a_gpl", "register_kprobe"])
    hits = {(h.lookup.module, h.lookup.symbol, h.lookup.how) for h in r.lookups}
    assert hits == {("weak_e", "a_gpl", "symbol_get"), ("user_c", "a_gpl", "kprobe")}
    why = {h.lookup.how: h.why for h in r.lookups}
    assert why["kprobe"] == "kprobe needs register_kprobe, which the change unexports"
    assert why["symbol_get"] == "a_gpl is no longer exported, so symbol_get() returns NULL"
