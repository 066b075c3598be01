"""The one base of every error ksymgraph raises on purpose.

Every layer raises its own subclass (:class:`~ksymgraph.loaders.records.LoaderError` for a file
that cannot be read, :class:`~ksymgraph.graph.store.StoreError` for a store, ...), each with a
message that names the file, kernel or server concerned and says what to do next. The command
line catches :class:`KsymgraphError` alone: it prints the message as one line and exits 2. Any
other exception is a bug, and keeps its traceback.

This module imports nothing of the project, so that every layer may import it.
"""

from __future__ import annotations

__all__ = ["KsymgraphError"]


class KsymgraphError(Exception):
    """An error with a message meant for the user: what failed, why, and the next step."""
