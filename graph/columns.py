"""Arrow columns from Python lists, laid out from buffers as the Arrow format defines them; and
:class:`TableStream`, a table handed over a chunk at a time.

``pa.array(list)`` asks pyarrow's pandas shim whether the list is "array-like", and the shim
imports pandas to answer: 0.27 s, a seventh of a whole kernel load, spent on a library the load
never uses. The builder's columns are plain lists of ``str``, ``int``, ``bool`` (any of them
``None``) or lists of ``str``; their Arrow layout is simple enough to write directly: a validity
bitmap (bit *i* set when value *i* is present, least significant bit first), then 32-bit offsets
and UTF-8 bytes for strings, 64-bit integers, one bit per boolean, or 32-bit offsets into a child
array for lists. ``tests/test_columns.py`` checks every kind against ``pa.array``.
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["strings", "int64s", "booleans", "string_lists", "column", "string_scalar", "TableStream"]


def _validity(values: Sequence) -> pa.Buffer:
    """The validity bitmap of ``values``: bit *i* is set when value *i* is not None."""
    import pyarrow as pa

    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    return pa.py_buffer(np.packbits(present, bitorder="little"))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"a column of {offsets[-1]} bytes or items is too large for 32-bit Arrow offsets")
    return offsets.astype(np.int32)


# Each kind first tries the layout for a column without nulls, which most columns are, and
# looks for None only when that fails: scanning for None first would cost a comparison per value.

def strings(values: Sequence[str | None]) -> pa.Array:
    """A ``string`` array of ``values``."""
    import pyarrow as pa

    validity = None
    try:
        text = "".join(values)
    except TypeError:  # a None among them
        validity = _validity(values)
        values = ["" if v is None else v for v in values]
        text = "".join(values)
    if text.isascii():  # nearly always: one character is one byte, so lengths need no encoding
        data = text.encode("ascii")
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    else:
        encoded = [v.encode() for v in values]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(values))
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [validity, pa.py_buffer(_offsets(lengths)), pa.py_buffer(data)])


def int64s(values: Sequence[int | None]) -> pa.Array:
    """An ``int64`` array of ``values``."""
    import pyarrow as pa

    validity = None
    try:
        try:
            data = np.array(values, dtype=np.int64)
        except TypeError:  # a None among them
            validity = _validity(values)
            data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=len(values))
    except OverflowError:  # the loaders hold CRCs to 32 bits: this is a bug, and says which value
        bad = next(v for v in values if v is not None and not -2**63 <= v < 2**63)
        raise OverflowError(f"{bad} does not fit a 64-bit integer column") from None
    return pa.Array.from_buffers(pa.int64(), len(values), [validity, pa.py_buffer(data)])


def booleans(values: Sequence[bool | None]) -> pa.Array:
    """A ``bool`` array of ``values``."""
    import pyarrow as pa

    validity = None
    bits = np.array(values)
    if bits.dtype != bool:  # a None among them, or an empty column
        validity = _validity(values) if None in values else None
        bits = np.fromiter((bool(v) for v in values), dtype=bool, count=len(values))
    return pa.Array.from_buffers(pa.bool_(), len(values),
                                 [validity, pa.py_buffer(np.packbits(bits, bitorder="little"))])


def string_lists(values: Sequence[Sequence[str]]) -> pa.Array:
    """A ``list<string>`` array of ``values`` (each a list or tuple of strings, never None)."""
    import pyarrow as pa

    if None in values:
        raise ValueError("a list column holds a list in every row (empty for none)")
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    offsets = _offsets(lengths)
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)]),
        strings(list(chain.from_iterable(values))))


def column(values: Sequence, type: pa.DataType) -> pa.Array:
    """An array of ``values`` of Arrow ``type``: one of ``string``, ``int64``, ``bool``,
    ``list<string>`` (the types of :func:`ksymgraph.graph.schema.arrow_type`)."""
    import pyarrow as pa

    if type == pa.string():
        return strings(values)
    if type == pa.int64():
        return int64s(values)
    if type == pa.bool_():
        return booleans(values)
    if type == pa.list_(pa.string()):
        return string_lists(values)
    raise TypeError(f"no column layout for Arrow type {type}")


def string_scalar(value: str) -> pa.Scalar:
    """A ``string`` scalar (``pa.scalar`` would ask the pandas shim too)."""
    return strings([value])[0]


class TableStream(NamedTuple):
    """A table too large to hold at once, handed to a store a chunk at a time.

    The source graph's ``CALLS`` tables have 4M rows of string ids on a kernel tree; the builder
    keeps them as integer rows and makes the ids one chunk at a time when the store writes them
    (``writing_kernel``'s ``put`` takes a table or one of these)."""

    schema: pa.Schema
    """The schema of every chunk."""
    num_rows: int
    """Rows over all chunks."""
    chunks: Callable[[], Iterator[pa.Table]]
    """Makes the chunks, in order (may be called more than once)."""

    def table(self) -> pa.Table:
        """The whole table at once."""
        import pyarrow as pa

        return pa.concat_tables([self.schema.empty_table(), *self.chunks()])
