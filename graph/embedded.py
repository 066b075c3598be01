"""The embedded store: LadybugDB on disk, Cypher with no server, and how it is written crash-safely.

Tables are created from :mod:`ksymgraph.graph.schema`. Row-by-row ``MERGE`` would run at a few
thousand rows a second; ``COPY`` loads a whole Debian kernel in about half a second, on a writer
thread that takes each table as soon as the builder has it (:meth:`EmbeddedStore.writing_kernel`).

Writing beside the store, then one rename
-----------------------------------------
The store at ``PATH`` is one LadybugDB file (LadybugDB adds ``PATH.wal``, ``PATH.shadow``,
``PATH.wal.checkpoint`` and two ``PATH.checkpoint.*.lock`` files while it writes or checkpoints,
and removes them when it closes cleanly). It is never written in place. A write builds the next
version of the whole store in a staging directory beside it, ``PATH.staging-XXXXXXXX/``: a fresh
database when the store holds no kernel but the one being replaced (the common reload), else a copy
of the store's file with the kernel's old rows deleted. That database is committed, closed cleanly
(so it has no sidecar file left), synced, and renamed over ``PATH`` in one ``rename(2)``: the one
commit point. A write killed at any moment before the rename leaves the old store untouched; after
it, the new one is whole. A full disk fails the write in the staging directory, and the store stays
as it was. Readers that opened the old file keep reading it (the rename does not touch the open
inode); readers that open after the rename get the new one.

Why this way, and how writers and readers keep out of each other's way: :mod:`.store_files`.

Each Arrow table is staged as an uncompressed Parquet file in the staging directory and copied
from there, not from the Python object: to tell a pandas DataFrame from an Arrow table, LadybugDB
imports pandas before the first ``COPY`` from an object (0.27 s, a seventh of a load), and writing
and reading the file costs less than that. A ``COPY`` that violates a primary key inside a
transaction crashes the process, so the builder guarantees unique ids and this module checks them
before writing. Each ``COPY`` is its own transaction: the staging database is what makes the write
all or nothing, and one transaction around them all held every uncommitted row in memory.

Every connection this store reads through is read-only, so a query can never change the store;
:meth:`EmbeddedStore.raw_query` also refuses the statements that read or write files or load code
(:func:`file_access_in`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .file_access import file_access_in
from .schema import NODES, RELS, TableKey, rel_table
from .store import GraphStore, Rows, StoreError
from .store_files import (
    lock_path,
    remove_staging_if_unlocked,
    staging_dirs,
    take_writer_lock,
    SIDECARS,
    NextDatabase,
    copy_file,
    engine_reason,
    fsync,
    os_error,
    path_literal,
    reason,
    test_stop,
)

if TYPE_CHECKING:  # the tables come from ksymgraph.graph.build, which imports pyarrow
    import pyarrow as pa

    from ..loaders.records import KernelMeta
    from .build import GraphBatch
    from .columns import TableStream

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
        starts its workers first: importing and opening LadybugDB takes 0.04 s).

        A writer (``read_only`` false) holds ``PATH.lock`` until :meth:`close`; it creates an empty
        database (and its parent directory) if there is none yet: at once, or with ``lazy`` at its
        first write or query."""
        self.path = Path(path)
        # The file written and renamed over: where a symbolic link points, so the link stays.
        self._file = Path(os.path.realpath(self.path))
        if read_only and not self._file.exists():
            raise StoreError(f"no database at {self.path}: run `ksymgraph load SOURCE --db {self.path}` first")
        self.read_only = read_only
        self._schema_ready = read_only  # a read-only handle takes the tables as they are
        self._db = self._connection = None  # the read-only handle on self.path
        self._lock: int | None = None  # the writer's lock file descriptor
        self._prepared: NextDatabase | None = None  # made by prepare_write, taken by the next write
        self._opened = False
        if not lazy:
            self._open()
            if not read_only and not self._file.exists():
                self._create_empty()

    # Opening -----------------------------------------------------------------------------------

    def describe(self) -> str:
        return str(self.path)

    def _open(self) -> None:
        """Take the writer's lock (a writer), then open the read-only handle if there is a store."""
        if self._file.exists() and not self._file.is_file():
            kind = "a directory" if self._file.is_dir() else "a device or other special file"
            raise StoreError(f"{self.path} is not a database file (it is {kind}): give --db the path of a file")
        if not self._file.exists() and self.read_only:
            raise StoreError(f"no database at {self.path}: run `ksymgraph load SOURCE --db {self.path}` first")
        try:
            if not self.read_only:
                self._take_lock(wait=1.0)
                self._clean_leftovers()
                if self._needs_recovery():
                    self._recover()
            if self._file.exists():
                self._open_read()
        except BaseException:
            self._release_lock()
            raise
        self._opened = True

    def _ladybug(self):
        import ladybug

        return ladybug

    def _open_read(self) -> None:
        """Open the read-only handle on the store; recover it first if a write left it pending."""
        ladybug = self._ladybug()
        for attempt in (1, 2):
            try:
                self._db = ladybug.Database(str(self._file), read_only=True)
                break
            except RuntimeError as e:
                msg = str(e)
                if "recovery is pending" in msg and attempt == 1:
                    self._recover_for_reader(msg)
                    continue
                raise StoreError(f"cannot open {self.path}: {engine_reason(msg)}") from None
        self._connection = ladybug.Connection(self._db)
        if self.read_only:
            self._clean_leftovers_if_free()

    def _close_read(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._db.close()
        self._db = self._connection = None

    @property
    def _conn(self):
        """The read-only connection, opening (or, for a writer, creating) the store first."""
        if not self._opened:
            self._open()
        if self._connection is None:
            if not self._file.exists():
                self._create_empty()
            self._open_read()
        return self._connection

    def _lock_path(self) -> Path:
        return lock_path(self._file)

    def _take_lock(self, wait: float) -> None:
        """Take ``PATH.lock``, waiting up to ``wait`` s (a reader may hold it for a moment)."""
        if self._lock is None:
            self._lock = take_writer_lock(self._file, self.path, wait)

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _staging_dirs(self) -> list[Path]:
        return staging_dirs(self._file)

    def _clean_leftovers(self) -> None:
        """Remove the staging directories of writers that died (the caller holds the lock)."""
        for d in self._staging_dirs():
            if self._prepared is None or d != self._prepared.staging:
                shutil.rmtree(d, ignore_errors=True)

    def _clean_leftovers_if_free(self) -> None:
        """A reader: remove dead writers' staging directories if no writer holds the lock now."""
        remove_staging_if_unlocked(self._file)

    def _needs_recovery(self) -> bool:
        return any(self._file.with_name(self._file.name + s).exists() for s in SIDECARS)

    def _recover(self) -> None:
        """Let LadybugDB finish or discard what a killed writer left (the caller holds the lock)."""
        ladybug = self._ladybug()
        try:
            db = ladybug.Database(str(self._file))
            db.close()
        except RuntimeError as e:
            raise StoreError(f"cannot recover {self.path} from an interrupted write: {engine_reason(str(e))}") from None

    def _recover_for_reader(self, msg: str) -> None:
        """A read-only open found a pending checkpoint: recover through a short writer open."""
        fix = (f"{self.path} was left by an interrupted write and LadybugDB must recover it before it can be read "
               f"({engine_reason(msg)}); that needs write access to {self.path.parent}: run `ksymgraph kernels --db "
               f"{self.path}` once as a user who can write there")
        held = self._lock is not None
        try:
            self._take_lock(wait=5.0)
        except StoreError as e:
            if "being written by another process" in str(e):
                raise
            raise StoreError(fix) from None
        try:
            self._recover()
        except StoreError as e:
            raise StoreError(f"{fix}: {e}") from None
        finally:
            if not held:
                self._release_lock()

    # Schema ------------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        """A writer: make sure the store has every table and property of the schema.

        Properties are only ever added (``ALTER TABLE ... ADD``); existing rows read them as null.
        An older store gains them in a rewrite beside it, switched in like a load."""
        if self._schema_ready:
            return
        conn = self._conn
        try:
            missing = self._missing_schema(conn)
        except RuntimeError as e:
            raise StoreError(f"cannot read the tables of {self.path}: {engine_reason(str(e))}") from None
        if missing:
            self._switch(self._next_database(keep=True))
        self._schema_ready = True

    def prepare_write(self) -> None:
        """Open the store (taking the writer's lock) and make the next database: a fresh one with
        the tables when the store holds at most one kernel (the common reload), else a copy."""
        import pyarrow.parquet  # noqa: F401  (what _stage writes with)

        if self._prepared is None:
            keep = len(self.kernels()) > 1  # an error opening the store (another writer) as it is
            try:
                self._prepared = self._next_database(keep)
            except StoreError as e:
                raise StoreError(f"writing to {self.path} failed, the store is unchanged: {e}") from None

    def _missing_schema(self, conn) -> bool:
        """True when a table or property of the schema is missing from the database of ``conn``."""
        tables = {r[1] for r in conn.execute("CALL show_tables() RETURN *").get_all()}
        for table in (*NODES, *RELS):
            name = getattr(table, "label", None) or table.type
            if name not in tables:
                return True
            have = {r[1] for r in conn.execute(f"CALL table_info('{name}') RETURN *").get_all()}
            if any(p.name not in have for p in table.props):
                return True
        return False

    @staticmethod
    def _migrate(conn) -> None:
        """Create missing tables and add missing properties, in the database of ``conn``."""
        for stmt in schema_statements():
            conn.execute(stmt)
        for table in (*NODES, *RELS):
            name = getattr(table, "label", None) or table.type
            have = {r[1] for r in conn.execute(f"CALL table_info('{name}') RETURN *").get_all()}
            for p in table.props:
                if p.name not in have:
                    conn.execute(f"ALTER TABLE {name} ADD {p.name} {p.type}")

    # Reading -----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._prepared is not None:
            self._prepared.discard()
            self._prepared = None
        self._close_read()
        self._release_lock()
        self._opened = False

    def query(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        self._ensure_schema()
        try:
            res = self._conn.execute(cypher, params or {})
        except RuntimeError as e:
            raise StoreError(f"query failed on {self.path}: {e}") from e
        if isinstance(res, list):  # several statements: the last one's rows
            for r in res[:-1]:
                r.close()
            res = res[-1]
        cols = res.get_column_names()
        rows = [tuple(r) for r in res.get_all()]
        res.close()
        return Rows(cols, rows)

    def file_access_in(self, cypher: str) -> str | None:
        return file_access_in(cypher)

    def kernels(self) -> list[str]:
        if not self._opened:
            self._open()
        if self._connection is None and not self._file.exists():
            return []  # a writer before its first write: nothing stored yet
        conn = self._conn
        try:
            if "Kernel" not in {r[1] for r in conn.execute("CALL show_tables() RETURN *").get_all()}:
                return []
            res = conn.execute("MATCH (k:Kernel) RETURN k.release AS release ORDER BY release")
        except RuntimeError as e:
            raise StoreError(f"cannot list the kernels in {self.path}: {engine_reason(str(e))}") from None
        return [r[0] for r in res.get_all()]

    # Writing -----------------------------------------------------------------------------------

    def _writer(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        if not self._opened:
            self._open()

    def _next_database(self, keep: bool) -> NextDatabase:
        """A database to become the store: a copy of it (``keep``) or a fresh one, with the schema."""
        self._writer()
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{self._file.name}.staging-", dir=self._file.parent))
        except OSError as e:
            raise os_error(f"cannot make a staging directory beside {self.path}", e) from None
        nxt = NextDatabase(staging, staging / self._file.name, keep and self._file.exists())
        try:
            if nxt.copied:
                copy_file(self._file, nxt.path)
            nxt.db = self._ladybug().Database(str(nxt.path))
            nxt.conn = self._ladybug().Connection(nxt.db)
            if nxt.copied:
                self._migrate(nxt.conn)
            else:
                for stmt in schema_statements():
                    nxt.conn.execute(stmt)
        except BaseException as e:
            why = engine_reason(str(e), self._file.parent) if isinstance(e, RuntimeError) else ""
            nxt.discard()
            if isinstance(e, OSError):
                raise os_error(f"cannot make its new version in {staging}", e) from None
            if why:
                raise StoreError(f"cannot make its new version in {staging}: {why}") from None
            raise
        return nxt

    def _take_next(self, keep: bool) -> NextDatabase:
        """The prepared next database if it is of the kind needed, else a new one."""
        nxt, self._prepared = self._prepared, None
        if nxt is not None and nxt.copied == (keep and self._file.exists()):
            return nxt
        if nxt is not None:
            nxt.discard()
        return self._next_database(keep)

    def _create_empty(self) -> None:
        """A writer's first statement on a path with no store: switch in an empty one with the tables."""
        nxt, self._prepared = self._prepared, None
        if nxt is None or nxt.copied:
            if nxt is not None:
                nxt.discard()
            nxt = self._next_database(keep=False)
        self._switch(nxt)

    def _switch(self, nxt: NextDatabase) -> None:
        """Close ``nxt`` cleanly and rename it over the store: the commit point of every write."""
        what = f"cannot switch {nxt.path} in as {self.path}"
        try:
            test_stop("close")
            try:
                nxt.close()
            except RuntimeError as e:
                raise StoreError(f"{what}: {engine_reason(str(e), self._file.parent)}") from None
            left = [nxt.path.name + s for s in SIDECARS if nxt.path.with_name(nxt.path.name + s).exists()]
            if left:  # LadybugDB could not finish its checkpoint (a full disk): the file is not whole
                raise StoreError(f"{what}: LadybugDB did not finish its checkpoint (left {', '.join(left)})")
            try:
                fsync(nxt.path)
                test_stop("switch")
                self._close_read()  # the old file's handle: readers of it keep their own
                os.replace(nxt.path, self._file)
            except OSError as e:
                raise os_error(what, e) from None
        except BaseException:
            nxt.discard()
            raise
        test_stop("switched")
        with contextlib.suppress(OSError):
            fsync(self._file.parent)
        nxt.discard()

    @contextlib.contextmanager
    def writing_kernel(self, kernel: KernelMeta) -> Iterator[Callable[[TableKey, pa.Table], None]]:
        """Write each table as it is handed over, on a writer thread, into the next database.

        The next database is a fresh one when the store holds no other kernel, else a copy of the
        store with ``kernel``'s old rows deleted. Each table is staged as a Parquet file in the
        staging directory when handed over; a writer thread ``COPY``s the files in order, each
        ``COPY`` committed on its own. ``COPY`` runs in LadybugDB's C++ code without the GIL, so the
        tables already handed over are written while the caller resolves the next ones. When the
        ``with`` body ends, the next database is closed (LadybugDB checkpoints) and renamed over
        the store (:meth:`_switch`); if the body or a write fails, it is thrown away and the store
        is unchanged.
        """
        failure = f"writing kernel {kernel.release} to {self.path} failed, the store is unchanged"
        self._writer()
        others = [k for k in self.kernels() if k != kernel.release]
        self._close_read()  # its memory (some 40 MB) is better spent on the COPY; reads reopen the new store
        try:
            nxt = self._take_next(keep=bool(others))
        except StoreError as e:
            raise StoreError(f"{failure}: {e}") from None
        conn = nxt.conn
        try:
            # Statements here rather than on the writer thread: each one there would wait for the
            # GIL while the caller resolves (deleting the old kernel takes one per node table).
            # Each statement commits on its own: the next database is all-or-nothing already (it
            # is renamed over the store only when whole, else thrown away), and one transaction
            # around every COPY held all the uncommitted rows in memory until its COMMIT. Whole
            # Debian 6.1 with its source: peak RSS 2,253,444 -> 1,697,704 kB (docs/source-speed.md).
            if nxt.copied:
                for n in NODES:
                    # Labels come from the schema, never from the user.
                    conn.execute(f"MATCH (n:{n.label}) WHERE n.kernel = $k DETACH DELETE n", {"k": kernel.release})
        except BaseException as e:
            why = engine_reason(str(e), self._file.parent) if isinstance(e, RuntimeError) else ""
            nxt.discard()
            if why:
                raise StoreError(f"{failure}: {why}") from None
            raise
        todo: queue.SimpleQueue = queue.SimpleQueue()
        failed: list[BaseException] = []
        writer = threading.Thread(target=self._write_tables, args=(conn, failure, todo, failed),
                                  name="ksymgraph-store-writer", daemon=True)
        writer.start()

        def put(key: TableKey, table: pa.Table | TableStream) -> None:
            if failed:  # stop resolving as soon as the write has failed
                raise failed[0]
            # Staged here, not on the writer thread: there each step of writing the file would
            # wait for the GIL while this thread resolves the next table.
            try:
                todo.put(self._stage(key, table, str(nxt.staging)))
            except OSError as e:
                raise StoreError(f"{failure}: cannot stage table {key} in {nxt.staging}: {reason(e)}") from None

        try:
            try:
                yield put
            except BaseException:
                todo.put(_ABORT)
                writer.join()
                raise
            todo.put(_END)
            writer.join()
            if failed:
                raise failed[0]
            try:
                self._switch(nxt)
            except StoreError as e:
                raise StoreError(f"{failure}: {e}") from None
        finally:
            nxt.discard()  # a no-op once switched in

    def _write_tables(self, conn, failure: str, todo: queue.SimpleQueue, failed: list[BaseException]) -> None:
        """The writer thread: COPY each staged table as it comes (each its own transaction), until
        told the tables end (or to stop: the caller then throws the next database away)."""
        test_stop("copy")
        try:
            while (item := todo.get()) is not _END:
                if item is _ABORT:
                    return
                table_name, path, options = item
                try:
                    self._copy(conn, table_name, path, options)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            test_stop("commit")
            # Write what the COPYs committed into the database file now, on this thread, rather
            # than in close() (the same work: the file is whole only once it is checkpointed).
            conn.execute("CHECKPOINT")
        except BaseException as e:  # the caller's thread raises it
            if isinstance(e, RuntimeError):  # LadybugDB's errors
                wrapped = StoreError(f"{failure}: {engine_reason(str(e), self._file.parent)}")
                wrapped.__cause__ = e
                e = wrapped
            failed.append(e)

    def _stage(self, key: TableKey, batch: pa.Table | TableStream, staging: str) -> tuple[str, str, str]:
        """Write ``batch`` as a Parquet file in ``staging``; the table name, file and ``COPY``
        options to load it with. A :class:`TableStream` (a relationship table) is written a chunk
        at a time, so that no more than one chunk of it is in memory."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from .columns import TableStream

        if isinstance(batch, TableStream):
            if isinstance(key, str):
                raise StoreError(f"internal error: node table {key} handed over in chunks")
            name, a, b = key
            options = f" (from='{a}', to='{b}')" if len(rel_table(name).pairs) > 1 else ""
            path = os.path.join(staging, "-".join(key) + ".parquet")
            with pq.ParquetWriter(path, batch.schema, compression="none", use_dictionary=False,
                                  write_statistics=False) as out:
                for chunk in batch.chunks():
                    out.write_table(chunk, row_group_size=_ROW_GROUP)
            return name, path, options
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

    def _copy(self, conn, table_name: str, path: str, options: str) -> None:
        conn.execute(f"COPY {table_name} FROM {path_literal(path)}{options}")

    def replace_kernel(self, batch: GraphBatch) -> None:
        with self.writing_kernel(batch.kernel) as put:
            for key, table in batch.tables():
                put(key, table)

    def delete_kernel(self, kernel: str) -> bool:
        self._writer()
        have = self.kernels()
        if kernel not in have:
            return False
        nxt = self._take_next(keep=len(have) > 1)
        try:
            if nxt.copied:
                nxt.conn.execute("BEGIN TRANSACTION")
                for n in NODES:
                    nxt.conn.execute(f"MATCH (n:{n.label}) WHERE n.kernel = $k DETACH DELETE n", {"k": kernel})
                nxt.conn.execute("COMMIT")
        except RuntimeError as e:
            why = engine_reason(str(e), self._file.parent)
            nxt.discard()
            raise StoreError(f"deleting kernel {kernel} from {self.path} failed, the store is unchanged: {why}") from None
        self._switch(nxt)
        return True


#: Rows per Parquet row group of a staged table.
_ROW_GROUP = 16384

#: What the caller's thread tells the writer thread: the tables end (checkpoint), or stop.
_END = object()
_ABORT = object()
