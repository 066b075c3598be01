"""The store interface shared by the embedded (LadybugDB) and Neo4j stores, and how to open one.

A store holds several kernels. Writing one replaces that kernel as a unit: readers see either the
old kernel or the new one, never a mix. Reading is Cypher with ``$parameters``; user text is
always passed as a parameter, never formatted into a statement.
"""

from __future__ import annotations

import abc
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

if TYPE_CHECKING:  # pyarrow is imported by whoever builds tables, not to open a store
    import pyarrow as pa

    from ksymgraph.graph.build import GraphBatch
    from ksymgraph.graph.schema import TableKey
    from ksymgraph.loaders.records import KernelMeta

__all__ = ["StoreError", "Rows", "GraphStore", "default_db_path", "open_store"]


class StoreError(Exception):
    """A store could not be opened, written or queried; the message says why and what to do."""


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

        def put(key: TableKey, table: pa.Table) -> None:
            if isinstance(key, str):
                nodes[key] = table
            else:
                rels[key] = table

        yield put
        from ksymgraph.graph.build import GraphBatch

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
        """Run a read query with parameters."""

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


def default_db_path() -> Path:
    """``$KSYMGRAPH_DB``, else ``~/.local/share/ksymgraph/graph.lbdb``."""
    env = os.environ.get("KSYMGRAPH_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "ksymgraph" / "graph.lbdb"


def open_store(db: str | os.PathLike | None = None, neo4j: str | None = None, read_only: bool = False,
               lazy: bool = False) -> GraphStore:
    """Open the embedded store at ``db`` (default :func:`default_db_path`), or Neo4j at ``neo4j``.

    ``neo4j`` defaults to ``$NEO4J_URI`` only when no ``db`` is given and that variable is set.
    ``lazy`` opens the embedded store at its first statement (an error such as another writer
    holding it is then raised there).
    """
    if neo4j is None and db is None:
        neo4j = os.environ.get("NEO4J_URI") or None
    if neo4j:
        from ksymgraph.graph.neo4j_store import Neo4jStore

        return Neo4jStore(neo4j)
    from ksymgraph.graph.embedded import EmbeddedStore

    return EmbeddedStore(Path(db) if db else default_db_path(), read_only=read_only, lazy=lazy)
