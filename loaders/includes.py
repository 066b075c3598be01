"""``#include`` resolution: which file of a source tree an include names, as a kernel build finds it.

A file's includes are read as written (``<linux/slab.h>``, ``"local.h"``) by the parser; this
module turns them into files of the tree, relative to its root, against the include directories
a kernel build passes (``LINUXINCLUDE``), with the architecture's own directories for files under
``arch/<arch>/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

__all__ = ["kernel_include_dirs", "resolve_include", "resolve_includes"]


def kernel_include_dirs(arch: str = "x86") -> list[str]:
    """The include directories a kernel build passes for ``arch`` (``LINUXINCLUDE`` in the top
    Makefile), relative to the tree root. For files under ``arch/<other>/`` the loader swaps in
    that architecture's directories."""
    return [f"arch/{arch}/include", f"arch/{arch}/include/uapi", "include", "include/uapi"]


_ARCH_DIR_RE = re.compile(r"^arch/([^/]+)/")


def _dirs_for(file: str, include_dirs: list[str]) -> list[str]:
    m = _ARCH_DIR_RE.match(file)
    if not m:
        return include_dirs
    return [_ARCH_DIR_RE.sub(f"arch/{m.group(1)}/", d) for d in include_dirs]


def resolve_include(root: Path, file: str, target: str, system: bool, include_dirs: list[str],
                    cache: dict | None = None) -> str | None:
    """The file an ``#include`` names, relative to ``root``, or None when not in the tree.

    ``#include "x.h"`` looks next to ``file`` first, then in ``include_dirs`` (as gcc does with
    ``-I``); ``#include <x.h>`` looks only in ``include_dirs``. ``cache``, a dict kept for one
    pass over a tree, saves the file system look-ups for includes already resolved from the same
    directory.
    """
    if cache is not None:
        key = (os.path.dirname(file), target, system)
        if key not in cache:
            cache[key] = resolve_include(root, file, target, system, include_dirs)
        return cache[key]
    candidates = []
    if not system:
        candidates.append(os.path.normpath(os.path.join(os.path.dirname(file), target)))
    candidates += [os.path.normpath(os.path.join(d, target)) for d in _dirs_for(file, include_dirs)]
    for rel in candidates:
        if rel.startswith(".."):
            continue
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


def resolve_includes(root: Path, file: str, written: Iterable[str], include_dirs: list[str],
                     cache: dict | None = None) -> list[str]:
    """The files of the tree that ``file``'s includes name, each once, in the order written.

    ``written`` holds the includes as the parser read them, delimiters kept (``<linux/slab.h>``,
    ``"local.h"``); those not found in the tree are left out."""
    out: list[str] = []
    for inc in written:
        if len(inc) >= 2 and inc[0] in "<\"":
            target = resolve_include(root, file, inc[1:-1], inc[0] == "<", include_dirs, cache)
            if target is not None and target not in out:
                out.append(target)
    return out
