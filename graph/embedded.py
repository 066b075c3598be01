"""The embedded store: LadybugDB on disk, Cypher with no server.

Tables are created from :mod:`ksymgraph.graph.schema`. A kernel is written with ``COPY`` inside
one transaction that first deletes the kernel's old nodes (or, when it is the only kernel stored,
drops and recreates the tables), so a reader sees the old kernel or the new one, never half of
either (read-only handles in other processes keep the snapshot they opened). Row-by-row ``MERGE``
would run at a few thousand rows a second; ``COPY`` loads a whole Debian kernel in about half a
second, on a writer thread that takes each table as soon as the builder has it
(:meth:`EmbeddedStore.writing_kernel`).

Each Arrow table is staged as an uncompressed Parquet file in a directory next to the database
and copied from there, not from the Python object: to tell a pandas DataFrame from an Arrow table, LadybugDB
imports pandas before the first ``COPY`` from an object (0.27 s, a seventh of a load), and writing
and reading the file costs less than that.

LadybugDB allows one writer at a time; a second writer gets a clear :class:`StoreError`.
A ``COPY`` that violates a primary key inside a transaction crashes the process, so the builder
guarantees unique ids and this module checks them before writing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .schema import NODES, RELS, TableKey, rel_table
from .store import GraphStore, Rows, StoreError

if TYPE_CHECKING:  # the tables come from ksymgraph.graph.build, which imports pyarrow
    import pyarrow as pa

    from ..loaders.records import KernelMeta
    from .build import GraphBatch

__all__ = ["EmbeddedStore", "schema_statements"]


def schema_statements() -> list[str]:
    """The ``CREATE NODE TABLE`` / ``CREATE REL TABLE`` statements for the schema."""
    out = []
    for n in NODES:
        cols = ", ".join(["id STRING", "kernel STRING", *(f"{p.name} {p.type}" for p in n.props)])
        out.append(f"CREATE NODE TABLE IF NOT EXISTS {n.label}({cols}, PRIMARY KEY(id))")
    for r in RELS:
        pairs = ", ".join(f"FROM {a} TO {b}" for a, b in r.pairs)
        cols = ", ".join(["kernel STRING", *(f"{p.name} {p.type}" for p in r.props)])
        out.append(f"CREATE REL TABLE IF NOT EXISTS {r.type}({pairs}, {cols})")
    return out


class EmbeddedStore(GraphStore):
    """A LadybugDB database file holding any number of kernels."""

    dialect = "ladybug"

    def __init__(self, path: Path, read_only: bool = False, lazy: bool = False):
        """Open the database at ``path``; with ``lazy``, at the first statement instead (a load
        starts its workers first: importing and opening LadybugDB takes 0.04 s)."""
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path}: run `ksymgraph load SOURCE --db {self.path}` first")
        self.read_only = read_only
        self._schema_ready = read_only  # a read-only handle takes the tables as they are
        self._db = self._connection = None
        if not lazy:
            self._open()

    def _open(self) -> None:
        import ladybug

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = ladybug.Database(str(self.path), read_only=self.read_only)
        except RuntimeError as e:
            msg = str(e)
            if "lock" in msg.lower():
                raise StoreError(f"{self.path} is being written by another process ({msg}); "
                                 "wait for it to finish or use another --db") from e
            raise StoreError(f"cannot open {self.path}: {msg}") from e
        self._connection = ladybug.Connection(self._db)

    @property
    def _conn(self):
        """The connection, opening the database first if it is not open yet."""
        if self._connection is None:
            self._open()
        return self._connection

    def _ensure_schema(self) -> None:
        """Create the tables (and add new properties to old ones) before the first statement."""
        if self._schema_ready:
            return
        self._schema_ready = True
        self._create_tables()
        self._migrate()

    def _create_tables(self) -> None:
        for stmt in schema_statements():
            self._conn.execute(stmt)

    def prepare_write(self) -> None:
        self._ensure_schema()
        import pyarrow.parquet  # noqa: F401  (what _stage writes with)

    def describe(self) -> str:
        return str(self.path)

    def _migrate(self) -> None:
        """Add properties that a newer schema declares to tables an older ksymgraph created.

        Properties are only ever added (``ALTER TABLE ... ADD``); existing rows read them as null.
        """
        for table in (*NODES, *RELS):
            name = getattr(table, "label", None) or table.type
            have = {r[1] for r in self._conn.execute(f"CALL table_info('{name}') RETURN *").get_all()}
            for p in table.props:
                if p.name not in have:
                    self._conn.execute(f"ALTER TABLE {name} ADD {p.name} {p.type}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._db.close()
            self._db = self._connection = None

    def query(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        self._ensure_schema()
        try:
            res = self._conn.execute(cypher, params or {})
        except RuntimeError as e:
            raise StoreError(f"query failed on {self.path}: {e}") from e
        cols = res.get_column_names()
        rows = [tuple(r) for r in res.get_all()]
        res.close()
        return Rows(cols, rows)

    def execute(self, cypher: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement that returns nothing of interest."""
        self._ensure_schema()
        self._conn.execute(cypher, params or {}).close()

    def delete_kernel(self, kernel: str) -> bool:
        self._ensure_schema()
        had = kernel in self.kernels()
        self._conn.execute("BEGIN TRANSACTION")
        try:
            self._delete(kernel)
            self._conn.execute("COMMIT")
        except BaseException:
            _rollback(self._conn)
            raise
        return had

    def _delete(self, kernel: str) -> None:
        for n in NODES:
            # Labels come from the schema, never from the user.
            self._conn.execute(f"MATCH (n:{n.label}) WHERE n.kernel = $k DETACH DELETE n", {"k": kernel})

    def _recreate_tables(self) -> None:
        """Drop every table and create it again, inside the caller's transaction.

        When the store holds no kernel but the one being replaced, this is how to empty it:
        LadybugDB deletes a kernel's 215k relationships row by row in over 2 s, and drops the
        tables in milliseconds (a rollback brings them back)."""
        for r in RELS:
            self._conn.execute(f"DROP TABLE {r.type}")
        for n in NODES:
            self._conn.execute(f"DROP TABLE {n.label}")
        self._create_tables()

    def replace_kernel(self, batch: GraphBatch) -> None:
        with self.writing_kernel(batch.kernel) as put:
            for key, table in batch.tables():
                put(key, table)

    @contextlib.contextmanager
    def writing_kernel(self, kernel: KernelMeta) -> Iterator[Callable[[TableKey, pa.Table], None]]:
        """Write each table as it is handed over, on a writer thread, in one transaction.

        Each table is staged as a Parquet file when handed over, in a directory next to the
        database (``graph.lbdb.staging-*``, removed at the end); a writer thread ``COPY``s the
        files in order. ``COPY`` runs in LadybugDB's C++ code without the GIL, so the tables already
        handed over are written while the caller resolves the next ones. The transaction first
        empties the kernel's old nodes; it commits when the ``with`` body ends, and rolls back if
        the body or a write fails.
        """
        self._ensure_schema()
        conn = self._conn
        failure = f"writing kernel {kernel.release} to {self.path} failed, the store is unchanged"
        # Next to the database: on the disk that must hold the data anyway (a source graph stages
        # hundreds of MB, too much for a /tmp in memory). Made before the transaction begins.
        try:
            staging = tempfile.TemporaryDirectory(prefix=f"{self.path.name}.staging-", dir=self.path.parent)
        except OSError as e:
            raise StoreError(f"{failure}: cannot make a staging directory in {self.path.parent}: {e}") from e
        # Statements here rather than on the writer thread: each one there would wait for the GIL
        # while the caller resolves, and emptying the old kernel takes 30 of them.
        conn.execute("BEGIN TRANSACTION")
        try:
            if set(self.kernels()) <= {kernel.release}:
                self._recreate_tables()
            else:
                self._delete(kernel.release)
        except BaseException:
            _rollback(conn)
            staging.cleanup()
            raise
        todo: queue.SimpleQueue = queue.SimpleQueue()
        failed: list[BaseException] = []
        writer = threading.Thread(target=self._write_tables, args=(kernel.release, todo, failed),
                                  name="ksymgraph-store-writer", daemon=True)
        writer.start()

        def put(key: TableKey, table: pa.Table) -> None:
            if failed:  # stop resolving as soon as the write has failed
                raise failed[0]
            # Staged here, not on the writer thread: there each step of writing the file would
            # wait for the GIL while this thread resolves the next table.
            try:
                todo.put(self._stage(key, table, staging.name))
            except OSError as e:
                raise StoreError(f"{failure}: cannot stage table {key} in {staging.name}: {e}") from e

        with staging:
            try:
                yield put
            except BaseException:
                todo.put(_ABORT)
                writer.join()
                raise
            todo.put(_COMMIT)
            writer.join()
        if failed:
            raise failed[0]

    def _write_tables(self, kernel: str, todo: queue.SimpleQueue, failed: list[BaseException]) -> None:
        """The writer thread: COPY each staged table as it comes, then commit (or roll back)."""
        conn = self._conn
        try:
            while (item := todo.get()) is not _COMMIT:
                if item is _ABORT:
                    _rollback(conn)
                    return
                table_name, path, options = item
                try:
                    self._copy(table_name, path, options)
                finally:
                    os.unlink(path)
            conn.execute("COMMIT")
        except BaseException as e:  # the caller's thread raises it
            if isinstance(e, RuntimeError):  # LadybugDB's errors
                wrapped = StoreError(f"writing kernel {kernel} to {self.path} failed, the store is unchanged: {e}")
                wrapped.__cause__ = e
                e = wrapped
            failed.append(e)
            with contextlib.suppress(RuntimeError):
                _rollback(conn)

    def _stage(self, key: TableKey, batch: pa.Table, staging: str) -> tuple[str, str, str]:
        """Write ``batch`` as a Parquet file in ``staging``; the table name, file and ``COPY``
        options to load it with."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if isinstance(key, str):
            ids = batch.column("id")
            if pc.count_distinct(ids).as_py() != len(ids):
                raise StoreError(f"internal error: duplicate {key} ids in the batch")
            name, options = key, ""
        else:
            name, a, b = key
            options = f" (from='{a}', to='{b}')" if len(rel_table(name).pairs) > 1 else ""
        path = os.path.join(staging, "-".join(key if isinstance(key, tuple) else (key,)) + ".parquet")
        # Uncompressed, and in row groups that LadybugDB reads on several threads.
        pq.write_table(batch, path, compression="none", use_dictionary=False, write_statistics=False,
                       row_group_size=_ROW_GROUP)
        return name, path, options

    def _copy(self, table_name: str, path: str, options: str) -> None:
        self._conn.execute(f"COPY {table_name} FROM {_string_literal(path)}{options}")


#: Rows per Parquet row group of a staged table.
_ROW_GROUP = 16384

#: What the caller's thread tells the writer thread when the tables end.
_COMMIT = object()
_ABORT = object()


def _string_literal(text: str) -> str:
    """``text`` as a Cypher string literal (a file path: ``COPY FROM`` takes no parameter)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rollback(conn) -> None:
    """Roll back, unless LadybugDB already did (a failed statement ends the transaction)."""
    try:
        conn.execute("ROLLBACK")
    except RuntimeError as e:
        if "No active transaction" not in str(e):
            raise
