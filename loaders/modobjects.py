"""Which source files a built module was compiled from, read from a build tree's ``.mod`` files.

Since 5.3, 8c1eed1ae59e ("kbuild: create *.mod with full directory path and remove
MODVERDIR"), Kbuild writes ``<module>.mod`` next to each module it links, listing the object
files that make it up (space-separated on the first line at first, one per line in later
kernels; until 5.11 a second line held its undefined symbols).
In a built out-of-tree tree (``make -C <headers> M=<dir>``) this maps every ``.c`` file to its
module without evaluating the module's own Makefiles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .elf import module_name_from_path
from .records import ModObject

__all__ = ["for_each_mod_object", "files_by_module"]


def for_each_mod_object(root: str | os.PathLike) -> Iterator[ModObject]:
    """Yield the source file of every object listed by the ``.mod`` files under ``root``."""
    root = Path(root).resolve()
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".mod"):
                continue
            module = module_name_from_path(name[: -len(".mod")])
            # Object names separated by spaces (5.3) or one per line (later); the undefined
            # symbols of 5.3 to 5.11 follow on a line of their own and do not end in ".o".
            objects = Path(dirpath, name).read_text(errors="replace").split()
            for obj in objects:
                if obj.endswith(".o"):
                    src = _source_of(root, Path(dirpath), obj)
                    if src is not None:
                        yield ModObject(src, module)


def _source_of(root: Path, moddir: Path, obj: str) -> str | None:
    """The source file of object ``obj`` relative to ``root``, or None.

    ``.mod`` files name objects by the path they were built at; a tree built elsewhere and moved
    (a DKMS build renamed into a cache) is matched by the longest tail of that path found in it.
    """
    parts = Path(obj).parts
    candidates = [root.joinpath(*parts[i:]) for i in range(len(parts))] + [moddir / parts[-1]]
    if not os.path.isabs(obj):
        candidates.insert(0, moddir / obj)
    for path in candidates:
        for suffix in (".c", ".S"):
            src = path.with_suffix(suffix)
            if src.is_file():
                try:
                    return str(src.resolve().relative_to(root))
                except ValueError:
                    break  # outside the tree
    return None


def files_by_module(root: str | os.PathLike) -> dict[str, str]:
    """{source file: module} for a built tree (the first module wins for a shared file)."""
    out: dict[str, str] = {}
    for rec in for_each_mod_object(root):
        out.setdefault(rec.file, rec.module)
    return out
