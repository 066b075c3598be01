"""Opening a store: the embedded LadybugDB database by path, or a Neo4j server by URI.

The one place that knows every store class; the interface they share is
:class:`ksymgraph.graph.store.GraphStore`, which knows none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import GraphStore

__all__ = ["default_db_path", "open_store"]


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
        from .neo4j_store import Neo4jStore

        return Neo4jStore(neo4j)
    from .embedded import EmbeddedStore

    return EmbeddedStore(Path(db) if db else default_db_path(), read_only=read_only, lazy=lazy)
