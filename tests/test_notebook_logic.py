"""The notebooks' logic (ksymgraph.notebook, ksymgraph.explorer) on the hermetic fixture kernel.

The fixture kernel (tests/fixtures/modules): core_a exports a_plain, a_gpl (GPL), a_ns (GPL, namespace
A_NS) and a_data; user_b (GPL v2) imports a_plain and a_ns and exports b_fn (GPL); user_c (Dual BSD/GPL)
imports b_fn; weak_e imports maybe_there weakly; prop_d (Proprietary, out of tree) imports a_plain.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from ksymgraph import notebook as nb
from ksymgraph.explorer import whatif_explorer
from ksymgraph.queries.library import QueryError, parse_param
from ksymgraph.queries.whatif import ChangeError

K = "6.1.0-fixture"


@pytest.fixture
def store(fixture_store):
    nb.forget_projections()
    nb.use_store(fixture_store)
    yield fixture_store
    nb.forget_projections()
    nb._active = None


def rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.itertuples(index=False)]


def test_symbol_completions(store):
    assert nb.symbol_completions(store, K, "a_", 10) == ["a_data", "a_gpl", "a_ns", "a_plain"]
    assert nb.symbol_completions(store, K, "a_", 2) == ["a_data", "a_gpl"]
    # Prefix matches first, then names containing the text.
    assert nb.symbol_completions(store, K, "kprobe", 10) == ["register_kprobe", "unregister_kprobe"]
    assert nb.symbol_completions(store, K, "unregister_k", 10) == ["unregister_kprobe"]
    # Only exports: maybe_there is imported (weakly) but exported by nobody.
    assert nb.symbol_completions(store, K, "maybe", 10) == []
    assert nb.symbol_completions(store, None if len(store.kernels()) == 1 else K, "b_", 5) == ["b_fn"]
    assert nb.module_completions(store, K, "user", 10) == ["user_b", "user_c"]
    assert nb.module_completions(store, K, "_", 10) == ["core_a", "prop_d", "user_b", "user_c", "weak_e"]


def test_run_whatif_unexport(store):
    result, frame = nb.run_whatif(store, K, "unexport", "a_plain")
    assert list(frame.columns) == ["module", "rule", "symbol", "break", "in_tree", "call_sites"]
    assert rows(frame) == [
        ("prop_d", "unknown-symbol", "a_plain", "direct", False, ""),
        ("user_b", "unknown-symbol", "a_plain", "direct", True, ""),
        ("user_c", "dependency", "b_fn", "via user_b", True, ""),
    ]
    assert result.summary["broken"] == 3 and result.summary["inherited"] == 1
    assert [c.to_json() for c in result.changes] == [{"kind": "unexport", "target": "a_plain"}]


def test_run_whatif_other_changes(store):
    # GPL-only: only the proprietary module minds.
    _r, frame = nb.run_whatif(store, K, "gpl-only", ["a_plain"])
    assert rows(frame) == [("prop_d", "gpl-only", "a_plain", "direct", False, "")]
    # Namespace: both importers lack MODULE_IMPORT_NS(X); user_c inherits.
    _r, frame = nb.run_whatif(store, K, "namespace", "a_plain", namespace="X")
    assert rows(frame) == [
        ("prop_d", "namespace", "a_plain", "direct", False, ""),
        ("user_b", "namespace", "a_plain", "direct", True, ""),
        ("user_c", "dependency", "b_fn", "via user_b", True, ""),
    ]
    # Removing core_a takes a_plain and a_ns with it.
    _r, frame = nb.run_whatif(store, K, "remove-module", "core_a")
    assert rows(frame) == [
        ("prop_d", "unknown-symbol", "a_plain", "direct", False, ""),
        ("user_b", "unknown-symbol", "a_ns", "direct", True, ""),
        ("user_b", "unknown-symbol", "a_plain", "direct", True, ""),
        ("user_c", "dependency", "b_fn", "via user_b", True, ""),
    ]
    # Several symbols in one text.
    result, _f = nb.run_whatif(store, K, "unexport", "b_fn, a_gpl")
    assert [c.target for c in result.changes] == ["b_fn", "a_gpl"]
    assert [b.module for b in result.broken] == ["user_c"]


def test_run_whatif_errors_and_warnings(store):
    with pytest.raises(ChangeError, match="unknown change kind"):
        nb.run_whatif(store, K, "delete", "a_plain")
    with pytest.raises(ChangeError, match="needs the namespace"):
        nb.run_whatif(store, K, "namespace", "a_plain")
    with pytest.raises(ChangeError, match="at least one symbol"):
        nb.run_whatif(store, K, "unexport", " , ")
    result, frame = nb.run_whatif(store, K, "unexport", "no_such_symbol")
    assert frame.empty and list(frame.columns)[0] == "module"
    assert result.warnings == [f"no_such_symbol is not in kernel {K}: no module exports or imports it"]


def test_projection_is_cached_per_kernel(store):
    p1 = nb.kernel_projection(store, K)
    assert nb.kernel_projection(store, K) is p1
    nb.run_whatif(store, K, "unexport", "a_plain")
    assert nb.kernel_projection(store, K) is p1
    nb.forget_projections()
    assert nb.kernel_projection(store, K) is not p1


def test_broken_graph_and_cytoscape(store):
    result, _ = nb.run_whatif(store, K, "unexport", "a_plain")
    g = nb.broken_graph(result, nb.kernel_projection(store, K))
    assert sorted(g.nodes) == ["prop_d", "user_b", "user_c"]
    assert list(g.edges(data=True)) == [("user_c", "user_b", {"symbols": ["b_fn"]})]
    assert g.nodes["user_c"]["direct"] is False and g.nodes["prop_d"]["in_tree"] is False
    assert g.nodes["user_b"]["rules"] == ["unknown-symbol"]
    assert g.graph["changes"] == ["unexport a_plain"]
    assert list(nb.broken_graph(result).edges) == [("user_c", "user_b")]  # from the reasons alone
    cy = nb.to_cytoscape(g)
    assert {n["data"]["id"]: n["classes"] for n in cy["nodes"]} == {
        "prop_d": "direct out-of-tree", "user_b": "direct in-tree", "user_c": "inherited in-tree"}
    assert cy["edges"] == [{"data": {"id": "user_c->user_b", "source": "user_c", "target": "user_b", "label": "b_fn"}}]
    fig = nb.draw_graph(g, title="t")
    assert fig.axes[0].get_title() == "t" and len(fig.axes[0].collections) >= 1


def test_subsystems(store):
    assert nb.subsystem_of("/lib/modules/6.1.0-50-amd64/kernel/drivers/usb/serial/xsens_mt.ko") == "drivers/usb"
    assert nb.subsystem_of("/x/kernel/fs/mbcache.ko") == "fs"
    assert nb.subsystem_of("/x/kernel/core_a.ko") == "kernel"
    assert nb.subsystem_of("/srv/build/lttng/src/lttng-tracer.ko", in_tree=False) == "out-of-tree"
    assert nb.subsystem_of("/x/kernel/drivers/usb/a.ko", in_tree=False) == "out-of-tree"
    assert nb.subsystem_of("/opt/build/foo.ko") == "out-of-tree"
    result, _ = nb.run_whatif(store, K, "unexport", "a_plain")
    table = nb.by_subsystem(result)
    assert rows(table) == [("kernel", 2, 1, 1), ("out-of-tree", 1, 1, 0)]
    fig = nb.plot_by_subsystem(table)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["out-of-tree", "kernel"]


def test_save_report(store, tmp_path):
    result, _ = nb.run_whatif(store, K, "unexport", "a_plain")
    assert json.loads(nb.save_report(result, tmp_path / "r.json").read_text()) == json.loads(json.dumps(result.to_json()))
    md = nb.save_report(result, tmp_path / "sub" / "r.md").read_text()
    assert md.startswith("# What if: unexport a_plain") and "| user_c |" in md
    page = nb.save_report(result, tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<td>via user_b</td>" in page
    with pytest.raises(ValueError, match="suffix"):
        nb.save_report(result, tmp_path / "r.txt")


def test_cypher_magic(store, db_path):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ksymgraph.notebook")
    shell.user_ns["sym"] = "a_plain"
    query = ("MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = $sym "
             "RETURN m.name AS module, m.license AS license ORDER BY module")
    frame = shell.run_cell_magic("cypher", f'-p k={K} -p sym', query)
    assert rows(frame) == [("prop_d", "Proprietary"), ("user_b", "GPL v2")]
    # --db naming the active store reuses it; JSON values; --limit.
    deps = ("MATCH (m:Module)-[d:DEPENDS_ON]->(o:Module) WHERE m.kernel = $k "
            "WITH o, count(m) AS users WHERE users < $n RETURN o.name AS module, users ORDER BY module")
    frame = shell.run_cell_magic("cypher", f"--db {db_path} --param k={K} -p n=3", deps)
    assert rows(frame) == [("core_a", 2), ("user_b", 1)]  # core_a: user_b and prop_d; user_b: user_c
    assert rows(shell.run_cell_magic("cypher", f"--param k={K} -p n=2", deps)) == [("user_b", 1)]
    assert rows(shell.run_cell_magic("cypher", f"--param k={K} -p n=3 --limit 1", deps)) == [("core_a", 2)]
    with pytest.raises(ValueError, match="no variable 'undefined_name'"):
        shell.run_cell_magic("cypher", "-p undefined_name", "RETURN 1")
    with pytest.raises(ValueError, match="bad options"):
        shell.run_cell_magic("cypher", "--nope", "RETURN 1")


def test_parse_param():
    assert parse_param("n=3") == ("n", 3)
    assert parse_param('l=["a","b"]') == ("l", ["a", "b"])
    assert parse_param("k=6.1.0-fixture") == ("k", "6.1.0-fixture")
    assert parse_param("x", {"x": 1.5}) == ("x", 1.5)
    with pytest.raises(QueryError):
        parse_param("1x=2")
    with pytest.raises(QueryError, match="NAME=VALUE"):
        parse_param("x")  # a bare name needs the notebook's variables


def test_rows_graph(store):
    r = store.query("MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = $s RETURN m, i, s",
                    {"k": K, "s": "a_plain"})
    g = nb.rows_graph(r)
    assert sorted((g.nodes[a]["label"], g.nodes[b]["label"], d["label"]) for a, b, d in g.edges(data=True)) == [
        ("prop_d", "a_plain", "IMPORTS"), ("user_b", "a_plain", "IMPORTS")]
    # Reversed column order: the relationship's own endpoints orient the edge.
    r = store.query("MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = $s RETURN s, i, m",
                    {"k": K, "s": "a_plain"})
    assert all(g2 == "a_plain" for g2 in (nb.rows_graph(r).nodes[b]["label"] for _a, b in nb.rows_graph(r).edges()))
    assert nb.rows_graph(store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name", {"k": K})).number_of_nodes() == 0


def test_lookups_and_oot_modules(store, extra_modules):
    table = nb.lookups_table(store, K, ["prop_d"])
    assert table.empty and list(table.columns) == ["module", "symbol", "how", "file", "line", "exported"]
    data = nb.oot_module_data(extra_modules)
    assert [m.info.name for m in data] == ["prop_d"]
    assert sorted(i.symbol for i in data[0].import_records()) == ["a_plain", "kfree"]


def test_explorer_widget(store, tmp_path):
    from ksymgraph.explorer import WhatIfExplorer

    app = whatif_explorer(store, K, save_dir=tmp_path)
    assert isinstance(app, WhatIfExplorer)
    assert list(app.kernel.options) == [K]
    app.symbol.value = "a_p"
    assert list(app.symbol.options) == ["a_plain"]
    app.kind.value = "remove-module"
    app.symbol.value = "user"
    assert list(app.symbol.options) == ["user_b", "user_c"]
    assert app.namespace.layout.display == "none"
    app.kind.value = "namespace"
    assert app.namespace.layout.display == "flex"
    assert app.run() is None and "needs the namespace" in app.status.value  # no namespace given yet

    app.kind.value = "unexport"
    app.symbol.value = "a_plain"
    app.run_button.click()
    assert app.result is not None and app.seconds < 1
    assert "<b>3</b> modules fail to load: 2 directly, 1 through a failing dependency" in app.status.value
    assert rows(app.frame)[2] == ("user_c", "dependency", "b_fn", "via user_b", True, "")
    for cell in ("<td>prop_d</td>", "<td>user_b</td>", "<td>via user_b</td>", "onclick="):
        assert cell in app.table.value
    assert sorted(n.data["id"] for n in app.graph.graph.nodes) == ["prop_d", "user_b", "user_c"]
    assert [(e.data["source"], e.data["target"]) for e in app.graph.graph.edges] == [("user_c", "user_b")]
    assert bytes(app.chart.value[:4]) == b"\x89PNG"
    path = app.save("json")
    assert path.parent == tmp_path and json.loads(path.read_text())["summary"]["broken"] == 3
    app.save_buttons["md"].click()
    assert len(list(tmp_path.glob("*.md"))) == 1

    app.symbol.value = "no_such_symbol"
    app.run()
    assert "No module fails to load" in app.status.value and "warning: no_such_symbol" in app.status.value


def test_explorer_datagrid(store):
    app = whatif_explorer(store, K, table="datagrid", symbol="a_plain", run=True, draw=False)
    assert rows(app.table.data) == rows(app.frame) and len(app.frame) == 3
    with pytest.raises(ValueError, match="'html' or 'datagrid'"):
        whatif_explorer(store, K, table="csv")


def test_sortable_table_escapes_text():
    from ksymgraph.explorer import sortable_table_html

    page = sortable_table_html(pd.DataFrame([["<script>x</script>", True]], columns=["a&b", "flag"]))
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "a&amp;b" in page and "<td>yes</td>" in page
    assert page.count("<th onclick=") == 2


@pytest.mark.realdata
def test_run_whatif_on_debian_under_a_second(debian_loaded):
    """After the first read of the kernel, a what-if on the full Debian kernel takes well under a second."""
    store, summary = debian_loaded
    nb.forget_projections()
    try:
        t0 = time.perf_counter()
        nb.kernel_projection(store, summary.kernel)
        first = time.perf_counter() - t0
        times = []
        for kind, sym in (("unexport", "usb_register_driver"), ("gpl-only", "kfree"), ("unexport", "register_kprobe")):
            t0 = time.perf_counter()
            result, frame = nb.run_whatif(store, summary.kernel, kind, sym)
            times.append(time.perf_counter() - t0)
            if sym == "usb_register_driver":
                assert result.summary["broken"] > 200 and result.summary["direct"] > 200
                assert set(frame["module"]) == {b.module for b in result.broken}
                assert "usbserial" in set(frame["module"])
                assert (frame["break"] == "via usbserial").sum() > 10
        print(f"\nprojection read in {first:.2f} s; what-ifs in {', '.join(f'{t * 1000:.0f} ms' for t in times)}")
        assert max(times) < 1.0
        t0 = time.perf_counter()
        assert nb.symbol_completions(store, summary.kernel, "usb_register", 5)[0] == "usb_register_dev"
        assert time.perf_counter() - t0 < 0.05
    finally:
        nb.forget_projections()


def test_cypher_magic_refuses_file_access(store, tmp_path):
    """``%%cypher`` runs what the user typed as ``ksymgraph query`` does: no file access unless asked."""
    from ksymgraph.graph.store import QueryRefused

    nb.use_store(store)
    target = tmp_path / "out.csv"
    with pytest.raises(QueryRefused, match="--allow-file-access"):
        nb.cypher("", f"COPY (MATCH (m:Module) RETURN m.name) TO '{target}'")
    assert not target.exists()
    frame = nb.cypher("--allow-file-access", f"COPY (MATCH (m:Module) RETURN m.name) TO '{target}'")
    assert target.is_file() and frame is not None
