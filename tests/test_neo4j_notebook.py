"""The notebooks' logic, the what-if explorer and the ``%%cypher`` magic against the live Neo4j server.

The fixture kernel is loaded into the server at ``$NEO4J_URI`` and the tests of
``tests/test_notebook_logic.py`` run again with that store in place of the embedded one (same
assertions, same widgets driven from Python: kernel picker, completion, Run, table, drawing, chart,
save buttons); the magic is driven through IPython with ``--neo4j URI``.
"""

from __future__ import annotations

import pytest

import test_notebook_logic as logic
from test_neo4j_store import live_uri
from ksymgraph import notebook as nb
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.neo4j_store import Neo4jStore

pytestmark = pytest.mark.neo4j

K = logic.K

# The embedded suite's tests, collected here with this module's `store` fixture (the Neo4j server).
test_symbol_completions = logic.test_symbol_completions
test_run_whatif_unexport = logic.test_run_whatif_unexport
test_run_whatif_other_changes = logic.test_run_whatif_other_changes
test_run_whatif_errors_and_warnings = logic.test_run_whatif_errors_and_warnings
test_projection_is_cached_per_kernel = logic.test_projection_is_cached_per_kernel
test_broken_graph_and_cytoscape = logic.test_broken_graph_and_cytoscape
test_subsystems = logic.test_subsystems
test_save_report = logic.test_save_report
test_rows_graph = logic.test_rows_graph
test_lookups_and_oot_modules = logic.test_lookups_and_oot_modules


def test_explorer_widget(store, tmp_path):
    # Its kernel picker must offer the fixture kernel alone: true of the fresh server .ci/run starts.
    others = [k for k in store.kernels() if k != K]
    if others:
        pytest.skip(f"{store.describe()} holds other kernels too ({', '.join(others)}); the picker test needs it alone")
    logic.test_explorer_widget(store, tmp_path)


test_explorer_datagrid = logic.test_explorer_datagrid


@pytest.fixture(scope="module")
def neo4j_fixture_kernel(fixture_tree, extra_modules):
    """The live server holding the fixture kernel (and prop_d), as ``load`` writes it."""
    store = Neo4jStore(live_uri())
    load_kernel(store, [str(fixture_tree), str(extra_modules)], workers=1)
    try:
        yield store
    finally:
        store.delete_kernel(K)
        store.close()


@pytest.fixture
def store(neo4j_fixture_kernel):
    nb.forget_projections()
    nb.use_store(neo4j_fixture_kernel)
    yield neo4j_fixture_kernel
    nb.forget_projections()
    nb._active = None


def test_the_explorer_runs_on_neo4j(store):
    from ksymgraph.explorer import whatif_explorer

    app = whatif_explorer(store, K, symbol="a_plain", run=True)
    assert app.store is store and store.dialect == "neo4j"
    assert "<b>3</b> modules fail to load" in app.status.value
    assert logic.rows(app.frame) == [
        ("prop_d", "unknown-symbol", "a_plain", "direct", False, ""),
        ("user_b", "unknown-symbol", "a_plain", "direct", True, ""),
        ("user_c", "dependency", "b_fn", "via user_b", True, ""),
    ]


def test_cypher_magic_on_neo4j(store):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ksymgraph.notebook")
    shell.user_ns["sym"] = "a_plain"
    query = ("MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = $sym "
             "RETURN m.name AS module, m.license AS license ORDER BY module")
    frame = shell.run_cell_magic("cypher", f"--neo4j {store.describe()} -p k={K} -p sym", query)
    assert logic.rows(frame) == [("prop_d", "Proprietary"), ("user_b", "GPL v2")]
    deps = ("MATCH (m:Module)-[d:DEPENDS_ON]->(o:Module) WHERE m.kernel = $k "
            "WITH o, count(m) AS users WHERE users < $n RETURN o.name AS module, users ORDER BY module")
    assert logic.rows(shell.run_cell_magic("cypher", f"--param k={K} -p n=3", deps)) == [("core_a", 2), ("user_b", 1)]
    assert logic.rows(shell.run_cell_magic("cypher", f"--param k={K} -p n=3 --limit 1", deps)) == [("core_a", 2)]
    # Nodes and relationships come back as the embedded store gives them, and --draw draws them.
    frame = shell.run_cell_magic("cypher", f"-p k={K} -p sym --draw",
                                 "MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE m.kernel = $k AND s.name = $sym "
                                 "RETURN m, i, s ORDER BY m.name")
    m, i, s = frame.iloc[0]
    assert (m["_LABEL"], m["name"], i["_LABEL"], s["_LABEL"], s["name"]) == ("Module", "prop_d", "IMPORTS", "Symbol",
                                                                            "a_plain")
    assert (i["_SRC"], i["_DST"]) == (m["_ID"], s["_ID"]) and i["weak"] is False
    path = store.query("MATCH p = (a:Module)-[:DEPENDS_ON*2]->(b:Module) WHERE a.kernel = $k "
                       "RETURN p ORDER BY a.name", {"k": K}).rows[0][0]
    assert [n["name"] for n in path["_NODES"]] == ["user_c", "user_b", "core_a"]
    assert [r["_LABEL"] for r in path["_RELS"]] == ["DEPENDS_ON", "DEPENDS_ON"]
    with pytest.raises(ValueError, match="no variable 'undefined_name'"):
        shell.run_cell_magic("cypher", "-p undefined_name", "RETURN 1")
