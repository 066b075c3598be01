"""The store interface shared by the embedded (LadybugDB) and Neo4j stores, and how to open one.

A store holds several kernels. Writing one replaces that kernel as a unit: readers see either the
old kernel or the new one, never a mix. Reading is Cypher with ``$parameters``; user text is
always passed as a parameter, never formatted into a statement. How to open one, by path or
URI, is :mod:`ksymgraph.graph.connect`.

A query a user types runs through :meth:`GraphStore.raw_query`: read-only, and refused before it
runs when it would read or write files or load code (each store knows its engine's statements:
``file_access_in``), unless the caller allows file access. :func:`cypher_code` gives the code of a
query, without its string literals and comments, for those checks.
"""

from __future__ import annotations

import abc
import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from ..errors import KsymgraphError

if TYPE_CHECKING:  # pyarrow is imported by whoever builds tables, not to open a store
    import pyarrow as pa

    from ..loaders.records import KernelMeta
    from .build import GraphBatch
    from .columns import TableStream
    from .schema import TableKey

__all__ = ["StoreError", "QueryRefused", "Rows", "GraphStore", "cypher_code"]


class StoreError(KsymgraphError):
    """A store could not be opened, written or queried; the message says why and what to do."""


class QueryRefused(StoreError):
    """A query was refused before it ran: it would read or write files or load code."""


def cypher_code(cypher: str) -> str:
    """``cypher`` with its string literals and comments blanked out: the code a parser reads.

    The lexical rules are openCypher's, which LadybugDB's and Neo4j's grammars share: ``'...'``
    and ``"..."`` strings with backslash escapes, ``/* ... */`` comments and ``//`` comments to
    the end of the line (CR or LF), and names in backticks (kept, without the backticks: a
    quoted name is still a name, ``CALL `read_parquet`(...)`` still calls the function). A
    string or comment that is not closed is kept as code, and a ``//`` comment ends at a CR even
    where an engine reads on: whatever is in doubt is treated as code, so nothing can hide from a
    check of the words.
    """
    out: list[str] = []
    i, n = 0, len(cypher)
    while i < n:
        c = cypher[i]
        if c in "'\"":
            j = i + 1
            while j < n and cypher[j] != c:
                j += 2 if cypher[j] == "\\" else 1
            if j >= n:  # not closed
                out.append(cypher[i:])
                break
            out.append(" ")
            i = j + 1
        elif c == "`":
            j = i + 1
            while j < n and (cypher[j] != "`" or cypher.startswith("``", j)):
                j += 2 if cypher[j] == "`" else 1
            out.append(" " + cypher[i + 1:j].replace("`", " ") + " ")
            i = j + 1
        elif cypher.startswith("/*", i):
            j = cypher.find("*/", i + 2)
            if j < 0:
                out.append(cypher[i:])
                break
            out.append(" ")
            i = j + 2
        elif cypher.startswith("//", i):
            ends = [k for k in (cypher.find("\n", i), cypher.find("\r", i)) if k >= 0]
            out.append(" ")
            i = min(ends) if ends else n
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Rows(NamedTuple):
    """The result of a read query."""

    columns: list[str]
    """Column names, in RETURN order."""
    rows: list[tuple]
    """One tuple per result row."""

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def column(self, name: str) -> list:
        """The values of one column."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


class GraphStore(abc.ABC):
    """What every store offers: replace a kernel, list kernels, run Cypher."""

    #: Dialect key for per-engine query variants: ``"ladybug"`` or ``"neo4j"``.
    dialect: str = ""

    @abc.abstractmethod
    def replace_kernel(self, batch: GraphBatch) -> None:
        """Write one kernel's graph, replacing any kernel of the same name as a unit."""

    @contextlib.contextmanager
    def writing_kernel(self, kernel: KernelMeta) -> Iterator[Callable[[TableKey, pa.Table], None]]:
        """Replace ``kernel`` with tables handed over one at a time, as a unit.

        The ``with`` body gets a function to call with each table (node tables before the
        relationship tables that join them, as :func:`~ksymgraph.graph.build.build_kernel_graph`
        hands them to its ``ready``). The kernel is replaced when the body ends; if it raises,
        the store is left as it was. This default collects the tables and calls
        :meth:`replace_kernel`; a store may write each table as it comes.
        """
        nodes: dict[str, pa.Table] = {}
        rels: dict[tuple[str, str, str], pa.Table] = {}

        def put(key: TableKey, table: pa.Table | TableStream) -> None:
            from .columns import TableStream

            if isinstance(table, TableStream):
                table = table.table()
            if isinstance(key, str):
                nodes[key] = table
            else:
                rels[key] = table

        yield put
        from .build import GraphBatch

        self.replace_kernel(GraphBatch(kernel, nodes, rels))

    def prepare_write(self) -> None:
        """Get ready for :meth:`replace_kernel` (create tables, connect, warm up) while the caller
        does other work: :func:`ksymgraph.graph.load.load_kernel` calls it while worker processes
        read the module files. Optional; the writing methods prepare by themselves when needed."""

    @abc.abstractmethod
    def delete_kernel(self, kernel: str) -> bool:
        """Remove a kernel; True if it was there."""

    @abc.abstractmethod
    def query(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        """Run a read query with parameters (ksymgraph's own queries; a user's go to :meth:`raw_query`)."""

    @abc.abstractmethod
    def file_access_in(self, cypher: str) -> str | None:
        """Why ``cypher`` would read or write files or load code on this engine, or None."""

    def raw_query(self, cypher: str, params: dict[str, Any] | None = None, allow_file_access: bool = False) -> Rows:
        """Run a query a user typed, with parameters, read-only.

        Unless ``allow_file_access``, a query that would read or write files or load code (for
        LadybugDB ``COPY``, ``LOAD FROM``, ``LOAD EXTENSION``, ``INSTALL``, ``ATTACH``, ``EXPORT`` /
        ``IMPORT DATABASE``, ...; for Neo4j ``LOAD CSV``) is refused with :class:`QueryRefused`
        before it runs. Writes are refused by the engine either way: the query runs on a read-only
        handle (LadybugDB) or in a read transaction (Neo4j).
        """
        if not allow_file_access:
            why = self.file_access_in(cypher)
            if why:
                raise QueryRefused(f"refused to run the query on {self.describe()}: {why}. Queries run read-only and "
                                   "without file access; pass --allow-file-access (allow_file_access=True) to run it")
        return self.query(cypher, params)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store."""

    def kernels(self) -> list[str]:
        """Names of the kernels in the store, sorted."""
        rows = self.query("MATCH (k:Kernel) RETURN k.release AS release ORDER BY release")
        return [r[0] for r in rows.rows]

    def resolve_kernel(self, kernel: str | None) -> str:
        """``kernel`` if the store has it; the only kernel when None; else a StoreError saying which exist."""
        have = self.kernels()
        if kernel is None:
            if len(have) == 1:
                return have[0]
            if not have:
                raise StoreError(f"{self.describe()} holds no kernel yet: run `ksymgraph load SOURCE` first")
            raise StoreError(f"{self.describe()} holds several kernels; pick one with --kernel: {', '.join(have)}")
        if kernel not in have:
            raise StoreError(f"kernel {kernel!r} is not in {self.describe()}; it holds: {', '.join(have) or 'none'}")
        return kernel

    def describe(self) -> str:
        """A short name for messages: the path or URI."""
        return self.dialect

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
