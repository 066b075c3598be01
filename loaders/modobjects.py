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

from .cfiles import MAX_MAKEFILE_BYTES, inside_tree, read_source, real_root, walk_tree
from .elf import module_name_from_path
from .records import LoaderError, ModObject, Skipped

__all__ = ["for_each_mod_object", "files_by_module"]


def for_each_mod_object(root: str | os.PathLike, skipped: list[Skipped] | None = None) -> Iterator[ModObject]:
    """Yield the source file of every object listed by the ``.mod`` files under ``root``.

    ``.mod`` files are read as :func:`~ksymgraph.loaders.cfiles.read_source` reads (regular files
    inside the tree, up to :data:`~ksymgraph.loaders.cfiles.MAX_MAKEFILE_BYTES`); those that
    cannot be, and directories that cannot be listed, are added to ``skipped``."""
    root = Path(real_root(root))
    skipped = [] if skipped is None else skipped
    for reldir, files in walk_tree(root, skipped):
        dirpath = root / reldir
        for name in sorted(files):
            if not name.endswith(".mod"):
                continue
            module = module_name_from_path(name[: -len(".mod")])
            rel = os.path.normpath(os.path.join(reldir, name))
            try:
                text = read_source(str(root), rel, MAX_MAKEFILE_BYTES)[0].decode("utf-8", "replace")
            except LoaderError as e:
                skipped.append(Skipped(rel, e.reason))
                continue
            # Object names separated by spaces (5.3) or one per line (later); the undefined
            # symbols of 5.3 to 5.11 follow on a line of their own and do not end in ".o".
            for obj in text.split():
                if obj.endswith(".o") and "\0" not in obj:
                    src = _source_of(root, Path(dirpath), obj)
                    if src is not None:
                        yield ModObject(src, module)


def _source_of(root: Path, moddir: Path, obj: str) -> str | None:
    """The source file of object ``obj`` relative to ``root``, or None.

    ``.mod`` files name objects by the path they were built at; a tree built elsewhere and moved
    (a DKMS build renamed into a cache) is matched by the longest tail of that path found in it.
    A name that would lie outside the tree is not looked for.
    """
    parts = Path(obj).parts
    candidates = [root.joinpath(*parts[i:]) for i in range(len(parts))] + [moddir / parts[-1]]
    if not os.path.isabs(obj):
        candidates.insert(0, moddir / obj)
    for path in candidates:
        if not inside_tree(os.path.relpath(os.path.normpath(path), root)):
            continue
        for suffix in (".c", ".S"):
            src = path.with_suffix(suffix)
            if src.is_file():
                try:
                    return str(src.resolve().relative_to(root))
                except ValueError:
                    break  # outside the tree
    return None


def files_by_module(root: str | os.PathLike, skipped: list[Skipped] | None = None) -> dict[str, str]:
    """{source file: module} for a built tree (the first module wins for a shared file); what
    could not be read is added to ``skipped``."""
    out: dict[str, str] = {}
    for rec in for_each_mod_object(root, skipped):
        out.setdefault(rec.file, rec.module)
    return out
