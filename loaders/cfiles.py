"""The files of a source tree that the loaders read: which ones, and how, so that no tree can hang,
exhaust or escape them.

A tree given to ``--source`` may be hostile or merely odd. What is read from it:

* only regular files: a FIFO would block the reader for ever, a device (a ``.c`` that is a link
  to ``/dev/zero``) would fill memory; both are skipped with the reason, before they are opened;
* only files inside the tree: a link that resolves outside it (to ``/etc/passwd``) is not read
  (the path the open file really has is checked, ``/proc/self/fd``, so a link in any directory of
  the path counts);
* at most :data:`MAX_FILE_BYTES` of any file (:data:`MAX_MAKEFILE_BYTES` of a Makefile);
* directories that cannot be listed are reported, not passed over in silence.

Every file not read is reported as a :class:`~ksymgraph.loaders.records.Skipped` with the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from .records import LoaderError, Skipped

__all__ = ["MAX_FILE_BYTES", "MAX_MAKEFILE_BYTES", "TreeFiles", "walk_tree", "tree_files", "read_source",
           "file_signature", "real_root", "inside_tree"]

#: The largest file read from a source tree. The largest of linux-source-6.1 is a generated
#: register header of 23.9 MB (drivers/gpu/drm/amd/include/asic_reg/dcn/dcn_3_2_0_sh_mask.h,
#: 400k ``#define`` lines and not a brace); its largest ``.c`` file is 1.7 MB.
MAX_FILE_BYTES = 32 << 20

#: The largest Makefile, Kbuild, ``.mod`` or ``.config`` file read (the kernel's are below 100 kB).
MAX_MAKEFILE_BYTES = 4 << 20

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class TreeFiles(NamedTuple):
    """The source files of a tree, as one walk found them."""

    c: list[str]
    """``.c`` files, relative to the root, sorted."""
    headers: list[str]
    """``.h`` files, relative to the root, sorted."""
    skipped: list[Skipped]
    """Directories that could not be listed, with the reason."""


def real_root(root: str | os.PathLike) -> str:
    """``root`` with every link resolved: what :func:`read_source` checks paths against."""
    return os.path.realpath(root)


def walk_tree(root: str | os.PathLike, skipped: list[Skipped], hidden: bool = True):
    """``(directory relative to root, its file names)`` for every directory under ``root``
    (``.`` first; hidden ones left out unless ``hidden``; links to directories not followed);
    a directory that cannot be listed is added to ``skipped``."""
    root = str(root)

    def unlistable(e: OSError) -> None:
        where = os.path.relpath(e.filename, root) if e.filename else "."
        skipped.append(Skipped(where + "/", f"directory not read: {e.strerror or e}"))

    for d, dirs, files in os.walk(root, onerror=unlistable):
        if not hidden:
            dirs[:] = [x for x in dirs if not x.startswith(".")]
        yield os.path.relpath(d, root), files


def tree_files(root: str | os.PathLike) -> TreeFiles:
    """Every ``.c`` and ``.h`` file under ``root`` (hidden directories left out, links to
    directories not followed). Names only: :func:`read_source` decides what is read."""
    c: list[str] = []
    headers: list[str] = []
    skipped: list[Skipped] = []
    for rel, files in walk_tree(root, skipped, hidden=False):
        for f in files:
            if f.endswith(".c"):
                c.append(f if rel == "." else os.path.join(rel, f))
            elif f.endswith(".h"):
                headers.append(f if rel == "." else os.path.join(rel, f))
    c.sort()
    headers.sort()
    skipped.sort()
    return TreeFiles(c, headers, skipped)


def inside_tree(rel: str) -> bool:
    """True for a normalised relative path that stays in its tree (not absolute, no leading
    ``..``, no NUL byte): a name a tree's files may give for another of its files."""
    return not (os.path.isabs(rel) or rel == ".." or rel.startswith("../") or "\0" in rel)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def _open_path(fd: int, path: str) -> str:
    """The path the kernel has for an open file (every link resolved)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the name instead
        return os.path.realpath(path)


def read_source(root: str, rel: str, limit: int = MAX_FILE_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes of the file ``rel`` of the tree ``root`` (a :func:`real_root`) and its status.

    Raises :class:`~ksymgraph.loaders.records.LoaderError` (naming ``rel``, with the reason) for a
    file that cannot be read, that is not a regular file, that resolves outside the tree, or that
    is larger than ``limit`` bytes; none of those is opened except to learn where it resolves."""
    path = os.path.join(root, rel)
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise LoaderError(rel, f"unreadable: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        where = os.path.realpath(path)
        link = f" ({where})" if where != os.path.join(root, rel) else ""
        raise LoaderError(rel, f"not a regular file: {_kind(st.st_mode)}{link}")
    if st.st_size > limit:
        raise LoaderError(rel, f"too large: {st.st_size} bytes (the limit is {limit})")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise LoaderError(rel, f"unreadable: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
            raise LoaderError(rel, f"not a regular file: {_kind(st.st_mode)}")
        where = _open_path(fd, path)
        if not _inside(where, root):
            raise LoaderError(rel, f"outside the tree: it resolves to {where}")
        chunks, total = [], 0
        while total <= limit:  # the size it has, then one read to see the end (it may grow)
            chunk = os.read(fd, min(limit + 1 - total, max(st.st_size + 1 - total, 1 << 16)))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as e:
        raise LoaderError(rel, f"unreadable: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise LoaderError(rel, f"too large: more than {limit} bytes")
    return data, st


def file_signature(path: str | Path) -> tuple[int, int]:
    """(size, mtime in ns) of ``path``: what an incremental index compares before hashing."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
