"""Arrow columns laid out from buffers (ksymgraph.graph.columns) equal what pyarrow builds itself,
and a binary-only load never imports pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksymgraph.graph.columns import booleans, column, int64s, string_lists, string_scalar, strings

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates


def same(ours: pa.Array, theirs: pa.Array) -> None:
    ours.validate(full=True)
    assert ours.type == theirs.type
    assert ours.to_pylist() == theirs.to_pylist()
    assert ours.null_count == theirs.null_count


@pytest.mark.parametrize("values", [
    [], ["kfree"], ["kfree", "", "usb_register_driver"], ["a", None, "b"], [None, None],
    ["größe", "ascii", None, "日本"],  # non-ASCII: byte lengths differ from character lengths
])
def test_strings(values):
    same(strings(values), pa.array(values, pa.string()))


@pytest.mark.parametrize("values", [[], [0], [1, -2, 0xFFFFFFFF, 2**63 - 1], [None, 5, None], [None]])
def test_int64s(values):
    same(int64s(values), pa.array(values, pa.int64()))


@pytest.mark.parametrize("values", [[], [True], [True, False] * 9, [None, True, None, False], [None]])
def test_booleans(values):
    same(booleans(values), pa.array(values, pa.bool_()))


@pytest.mark.parametrize("values", [[], [[]], [["NS_A"], [], ["NS_B", "NS_C"]], [("x",), ("é", "y")]])
def test_string_lists(values):
    same(string_lists(values), pa.array(values, pa.list_(pa.string())))


def test_column_dispatches_on_type_and_rejects_others():
    same(column([1, None], pa.int64()), pa.array([1, None], pa.int64()))
    same(column([["a"]], pa.list_(pa.string())), pa.array([["a"]], pa.list_(pa.string())))
    with pytest.raises(TypeError, match="no column layout"):
        column([1.5], pa.float64())
    with pytest.raises(ValueError, match="a list in every row"):
        string_lists([["a"], None])


def test_out_of_range_int_is_an_error_not_a_wrong_value():
    with pytest.raises(OverflowError):
        int64s([2**64])
    with pytest.raises(OverflowError):
        int64s([None, 2**64])


def test_scalar():
    assert string_scalar("6.1.0-50-amd64") == pa.scalar("6.1.0-50-amd64")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | TEXT, max_size=40), st.lists(st.none() | st.integers(-2**63, 2**63 - 1), max_size=40),
       st.lists(st.none() | st.booleans(), max_size=40), st.lists(st.lists(TEXT, max_size=4), max_size=20))
def test_every_kind_matches_pyarrow(texts, ints, bools, lists):
    same(strings(texts), pa.array(texts, pa.string()))
    same(int64s(ints), pa.array(ints, pa.int64()))
    same(booleans(bools), pa.array(bools, pa.bool_()))
    same(string_lists(lists), pa.array(lists, pa.list_(pa.string())))


def test_binary_load_never_imports_pandas(fixture_tree, tmp_path):
    """pyarrow's pa.array and LadybugDB's COPY from a Python object both import pandas (0.27 s of
    a load); the load path builds its columns from buffers and copies from staged files instead."""
    script = textwrap.dedent(f"""
        import sys
        from ksymgraph.graph.load import load_kernel
        from ksymgraph.graph.connect import open_store
        with open_store({str(tmp_path / 'g.lbdb')!r}) as store:
            summary = load_kernel(store, [{str(fixture_tree)!r}], kernel="fixture", workers=2)
        print(summary.report.imports, "pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 0 and out[1] == "False"
