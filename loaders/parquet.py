"""Records as Parquet files: a record type's Arrow schema, and files written atomically a row group at a time.

A record type of :mod:`ksymgraph.loaders.records` (a NamedTuple of ``str``/``int``/``bool`` fields,
each may be None) has one Arrow schema (:func:`record_schema`); :class:`TableWriter` writes its
records to a Parquet file with memory bounded by the row group, and the file takes its place with
``os.replace`` only when the writer closes without an error, so that a reader sees the old file or
the new, never a part. Used by the index of a C tree (:mod:`ksymgraph.loaders.cindex`) and the
macro tables (:mod:`ksymgraph.loaders.macros`).

Each writer writes a temporary file of its own beside the final one (:func:`temp_beside`:
``.NAME.<pid>.<random>.tmp``), so that two writers of one file (two processes indexing one tree)
never write into the same temporary file; a writer that fails removes its own, and
:func:`remove_temp_files` clears what a killed one left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

__all__ = ["TableWriter", "record_schema", "remove_temp_files", "replace_parquet", "replacing", "temp_beside",
           "write_table"]

#: How the names of :func:`temp_beside`'s files end (never ``.parquet``: a reader's glob skips them).
TEMP_SUFFIX = ".tmp"


def temp_beside(path: Path) -> Path:
    """A new, empty file in ``path``'s directory, named for ``path``, this process and a random token
    (``.NAME.<pid>.<hex>.tmp``), created exclusively: no other writer has it. Its mode is a new
    file's (``0o666`` less the umask), as ``path``'s would be, not ``mkstemp``'s ``0o600``."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file of :func:`temp_beside` to write ``path``'s new content into: it takes
    ``path``'s place (``os.replace``, atomically) when the block ends without an error, and is
    removed when it does not."""
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temp_files(directory: Path) -> None:
    """Remove the temporary files of :func:`temp_beside` in ``directory`` (those a killed writer
    left). Only for a caller that alone writes there (it holds the directory's lock): another
    writer's file would go from under it."""
    for tmp in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def record_schema(record_type):
    """The Arrow schema of a record type: its fields, in order, as string/int32/bool columns."""
    import typing

    import pyarrow as pa

    arrow = {str: pa.string(), int: pa.int32(), bool: pa.bool_()}
    fields = []
    for name, hint in typing.get_type_hints(record_type).items():
        base = next(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
        fields.append(pa.field(name, arrow[base], nullable=True))
    return pa.schema(fields)


class TableWriter:
    """Records of one type written to a Parquet file a row group at a time, so that memory stays
    bounded however many there are; the file takes its place (atomically) when the writer closes
    without an error. Use as a context manager."""

    def __init__(self, path: Path, record_type, rows_per_group: int = 1 << 16, compression: str = "zstd"):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.schema = record_schema(record_type)
        self.rows_per_group = rows_per_group
        self.rows: list = []
        self.count = 0
        """Records written so far."""
        self._tmp = temp_beside(self.path)
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=compression)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def add(self, row) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self._flush()

    def extend(self, rows) -> None:
        for row in rows:
            self.add(row)

    def _flush(self) -> None:
        import pyarrow as pa

        columns = list(zip(*self.rows)) if self.rows else [[] for _ in self.schema]
        self._writer.write_table(pa.Table.from_arrays(
            [pa.array(list(c), type=f.type) for c, f in zip(columns, self.schema)], schema=self.schema))
        self.count += len(self.rows)
        self.rows = []

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        replaced = False
        try:
            try:
                if exc_type is None and (self.rows or not self.count):
                    self._flush()
            finally:
                self._writer.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                replaced = True
        finally:
            if not replaced:  # an error in the block, or in the last row group's write
                self._tmp.unlink(missing_ok=True)


def write_table(path: Path, record_type, rows: list, compression: str = "zstd") -> None:
    """Write ``rows`` (records of ``record_type``) to the Parquet file ``path``, atomically."""
    with TableWriter(path, record_type, max(len(rows), 1), compression) as writer:
        writer.extend(rows)


def replace_parquet(table, path: Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` through a temporary file: readers see the old file or the new."""
    import pyarrow.parquet as pq

    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression=compression)
