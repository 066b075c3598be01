"""Which source files a built module was compiled from, read from a build tree's ``.mod`` files.

Since 5.3, 8c1eed1ae59e ("kbuild: create *.mod with full directory path and remove
MODVERDIR"), Kbuild writes ``<module>.mod`` next to each module it links, listing the object
files that make it up (the first line; before 5.12 a second line held its undefined symbols).
In a built out-of-tree tree (``make -C <headers> M=<dir>``) this maps every ``.c`` file to its
module without evaluating the module's own Makefiles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

from ksymgraph.loaders.elf import module_name_from_path

__all__ = ["ModObject", "for_each_mod_object", "files_by_module"]


class ModObject(NamedTuple):
    """One source file of a built module."""

    file: str
    """The ``.c`` file (or ``.S``), relative to the tree root."""
    module: str
    """The module's name (``lttng_tracer``)."""


def for_each_mod_object(root: str | os.PathLike) -> Iterator[ModObject]:
    """Yield the source file of every object listed by the ``.mod`` files under ``root``."""
    root = Path(root).resolve()
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".mod"):
                continue
            module = module_name_from_path(name[: -len(".mod")])
            text = Path(dirpath, name).read_text(errors="replace").splitlines()
            objects = text[0].split() if text else []
            for obj in objects:
                if not obj.endswith(".o"):
                    continue
                path = Path(obj) if os.path.isabs(obj) else (root / obj)
                if not path.exists() and not os.path.isabs(obj):
                    path = Path(dirpath, obj)
                for suffix in (".c", ".S"):
                    src = path.with_suffix(suffix)
                    if src.is_file():
                        try:
                            yield ModObject(str(src.resolve().relative_to(root)), module)
                        except ValueError:
                            pass  # an object outside the tree
                        break


def files_by_module(root: str | os.PathLike) -> dict[str, str]:
    """{source file: module} for a built tree (the first module wins for a shared file)."""
    out: dict[str, str] = {}
    for rec in for_each_mod_object(root):
        out.setdefault(rec.file, rec.module)
    return out
