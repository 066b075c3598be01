"""The source graph resolved a batch at a time and written a chunk at a time is the graph resolved at
once: the same tables, row for row, whatever the batch sizes.

Issue 14 point 5 bounded the memory of ``load --source`` (6.8 GB on Debian 6.1's whole tree) by
resolving the calls in batches into integer rows and handing the ``CALLS`` tables to the store as
:class:`~ksymgraph.graph.columns.TableStream` s. Here the batches are made tiny (a few rows) so
that every call, every shard and the macros' calls cross batch and chunk boundaries, and the
result is compared with one batch holding everything; then both are written to stores and read
back. The real-tree comparison (every table of Debian 6.1 against the code before the change) is in
docs/issue14-speed.md.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import FIXTURE_RELEASE
from ksymgraph.graph import source
from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.graph.columns import TableStream
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel, read_kernel
from ksymgraph.loaders.trees import index_source_tree

from test_whatif_speed_equivalence import eq_tree  # noqa: F401  (the generated tree)


@pytest.fixture(scope="module")
def eq_inputs(eq_tree, fixture_tree):  # noqa: F811
    """What a load of the generated tree reads: the kernel's modules and the indexed tree."""
    root = eq_tree
    modules = [str(p) for p in sorted(root.glob("*.ko"))]
    ki = read_kernel([str(fixture_tree), *modules], workers=1)
    return ki, index_source_tree(root)


def sorted_tables(tables: dict) -> dict:
    out = {}
    for key, t in tables.items():
        if isinstance(t, TableStream):
            t = t.table()
        cols = [c for c in t.column_names if not pa.types.is_list(t.schema.field(c).type)]
        out[key] = t.sort_by([(c, "ascending") for c in cols])
    return out


def build(ki, tree, streamed: bool) -> dict:
    got: dict = {}
    if streamed:
        build_kernel_graph(ki.meta, ki.modules, ki.symvers, (), [tree], ready=got.__setitem__)
    else:
        batch, _ = build_kernel_graph(ki.meta, ki.modules, ki.symvers, (), [tree])
        got = dict(batch.tables())
    return sorted_tables(got)


def test_tiny_batches_give_the_same_tables(eq_inputs, monkeypatch):
    ki, tree = eq_inputs
    whole = build(ki, tree, streamed=False)
    monkeypatch.setattr(source, "CALL_BATCH", 3)
    monkeypatch.setattr(source, "ID_CHUNK", 2)
    tiny = build(ki, tree, streamed=True)
    assert set(tiny) == set(whole)
    for key in whole:
        assert tiny[key].equals(whole[key]), key
    calls = whole[("CALLS", "Function", "Function")].num_rows + whole[("CALLS", "Function", "Symbol")].num_rows
    assert calls > 3 * 2 * 4  # enough calls to cross many batches and chunks


def test_streams_written_to_the_store_read_back_whole(eq_inputs, tmp_path, monkeypatch, fixture_tree):
    """A load with tiny batches writes the same CALLS rows to the store as the unbatched tables hold."""
    ki, tree = eq_inputs
    whole = build(ki, tree, streamed=False)
    monkeypatch.setattr(source, "CALL_BATCH", 3)
    monkeypatch.setattr(source, "ID_CHUNK", 2)
    with open_store(tmp_path / "db") as s:
        summary = load_kernel(s, [str(fixture_tree), *(m.info.path for m in ki.modules if "eq_" in m.info.path)],
                              workers=1, source_dirs=[str(tree.root)])
        for to in ("Function", "Symbol"):
            rows = s.query(f"MATCH (f:Function)-[c:CALLS]->(t:{to}) WHERE f.kernel = $k "
                           "RETURN f.id, t.id, c.line, c.fold", {"k": FIXTURE_RELEASE}).rows
            t = whole[("CALLS", "Function", to)]
            want = sorted(zip(*(t[c].to_pylist() for c in ("from", "to", "line", "fold"))))
            assert sorted(rows) == want
    assert summary.report.source["CALLS->Function"] == whole[("CALLS", "Function", "Function")].num_rows


def test_a_node_table_in_chunks_is_refused(tmp_path):
    """Only relationship tables may come as streams: node ids are checked for duplicates whole."""
    from ksymgraph.graph.embedded import EmbeddedStore
    from ksymgraph.graph.schema import arrow_schema
    from ksymgraph.graph.store import StoreError

    schema = arrow_schema("File")
    stream = TableStream(schema, 1, lambda: iter([pa.table({"id": ["k|f"], "kernel": ["k"], "path": ["f"]},
                                                           schema=schema)]))
    with pytest.raises(StoreError, match="node table File handed over in chunks"):
        EmbeddedStore._stage(None, "File", stream, str(tmp_path))
