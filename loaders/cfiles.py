"""The files of a C source tree that the loader reads: which ones, and how they are read.

:func:`c_files` lists a tree's ``.c`` files; :func:`read_source` reads one file's bytes and
:func:`file_signature` gives the (size, mtime) an incremental index compares.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["c_files", "read_source", "file_signature"]


def c_files(root: Path) -> list[str]:
    """Every ``.c`` file under ``root`` (hidden directories left out), relative to it, sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rel = os.path.relpath(d, root)
        for f in files:
            if f.endswith(".c"):
                out.append(f if rel == "." else os.path.join(rel, f))
    out.sort()
    return out


def read_source(path: str | Path) -> bytes:
    """The bytes of a source file (``OSError`` when it cannot be read)."""
    with open(path, "rb") as f:
        return f.read()


def file_signature(path: str | Path) -> tuple[int, int]:
    """(size, mtime in ns) of ``path``: what an incremental index compares before hashing."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
