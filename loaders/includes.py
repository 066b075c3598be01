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

from .cfiles import inside_tree

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


def _resolve(root: Path, file: str, target: str, system: bool, include_dirs: list[str]) -> tuple[str | None, str | None]:
    """(the file, relative to ``root``; or why the include is not followed). Both None: not in
    the tree (``<stdio.h>``, a header of another tree)."""
    if not target or "\0" in target:
        return None, "not a file name"
    if os.path.isabs(target):
        return None, "an absolute path"
    local = [] if system else [os.path.normpath(os.path.join(os.path.dirname(file), target))]
    candidates = local + [os.path.normpath(os.path.join(d, target)) for d in _dirs_for(file, include_dirs)]
    if target.startswith("asm/"):
        candidates += [f"include/asm-generic/{target[4:]}", f"include/uapi/asm-generic/{target[4:]}"]
    for rel in candidates:
        if inside_tree(rel) and os.path.isfile(os.path.join(root, rel)):
            return rel, None
    # Not found (a header of another tree, or one found through a -I its Makefile adds) unless
    # it leaves the tree where the compiler looks first: next to the file for "x.h", or from
    # an include directory for <x.h>.
    escapes = not inside_tree(local[0]) if local else not all(inside_tree(rel) for rel in candidates)
    return None, ("it leads outside the tree" if escapes else None)


def resolve_include(root: Path, file: str, target: str, system: bool, include_dirs: list[str],
                    cache: dict | None = None) -> str | None:
    """The file an ``#include`` names, relative to ``root``, or None when it is not in the tree
    or not followed (see :func:`resolve_includes`).

    ``#include "x.h"`` looks next to ``file`` first, then in ``include_dirs`` (as gcc does with
    ``-I``); ``#include <x.h>`` looks only in ``include_dirs``. An ``asm/x.h`` the architecture does
    not have is ``include/asm-generic/x.h`` (or ``include/uapi/asm-generic/x.h``): the build
    generates ``arch/<arch>/include/generated/asm/x.h`` holding ``#include <asm-generic/x.h>`` for
    every header of ``generic-y`` and ``mandatory-y`` the architecture lacks
    (scripts/Makefile.asm-generic; include/asm-generic/Kbuild), which a source tree has not got
    (6.1's x86 ``asm/rwonce.h``: READ_ONCE and WRITE_ONCE). ``cache``, a dict kept for one
    pass over a tree, saves the file system look-ups for includes already resolved from the same
    directory.
    """
    return _resolve_cached(root, file, target, system, include_dirs, cache)[0]


def _resolve_cached(root: Path, file: str, target: str, system: bool, include_dirs: list[str],
                    cache: dict | None) -> tuple[str | None, str | None]:
    if cache is None:
        return _resolve(root, file, target, system, include_dirs)
    key = (os.path.dirname(file), target, system)
    found = cache.get(key)
    if found is None:
        found = cache[key] = _resolve(root, file, target, system, include_dirs)
    return found


def resolve_includes(root: Path, file: str, written: Iterable[str], include_dirs: list[str],
                     cache: dict | None = None) -> tuple[list[str], list[str]]:
    """(the files of the tree that ``file``'s includes name, each once, in the order written;
    the includes not followed, with the reason: ``#include "/etc/passwd" not followed: an
    absolute path``).

    ``written`` holds the includes as the parser read them, delimiters kept (``<linux/slab.h>``,
    ``"local.h"``); those not found in the tree are left out. An include is not followed, and is
    returned in the second list, when it names an absolute path or one that leaves the tree
    (``"../../../../etc/passwd"``) from ``file`` and from every include directory: nothing outside
    the tree is ever looked for.
    """
    out: list[str] = []
    refused: list[str] = []
    for inc in written:
        if len(inc) >= 2 and inc[0] in "<\"":
            target, reason = _resolve_cached(root, file, inc[1:-1], inc[0] == "<", include_dirs, cache)
            if target is not None and target not in out:
                out.append(target)
            elif reason is not None:
                refused.append(f"#include {inc} not followed: {reason}")
    return out, refused
