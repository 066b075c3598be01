"""Translation units: the non-header files a compiled file ``#include`` s, which the compiler builds as part of it.

Some drivers keep their code in a ``.c`` file that the file Kbuild compiles includes: 6.1's
``sound/pci/echoaudio/echo3g.c`` is a few ``#define`` s and ``#include "echoaudio.c"``,
``#include "echo3g_dsp.c"``...; ``drivers/usb/host/ehci-hcd.c`` includes ``ehci-q.c`` and the
others; ``kernel/sched/build_policy.c`` includes ``rt.c`` and ``deadline.c``. The included file is
no object of its own (no Makefile names it): it is compiled into the including file's object,
its functions, ``static`` or not, are that object's, and calls between the two files are calls
within one translation unit.

Which files include which is what the index recorded (:mod:`ksymgraph.loaders.cindex`'s
manifest: each file's includes as :func:`~ksymgraph.loaders.includes.resolve_includes` found
them, under the preprocessor's decisions of the build — an ``#include`` in a dead branch is not
there); nothing is parsed again here. A non-header file is one whose name does not end in ``.h``:
``.c`` mostly, also ``.inl`` and files without an extension (arm's ``nwfpe/softfloat-macros``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["indexed_includes", "translation_units", "unit_modules"]


def indexed_includes(shard_dir: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Each file an index holds → the files of its tree it includes, as the index followed them
    (relative to the tree, in the order written). Empty when there is no index there."""
    try:
        import orjson

        loads = orjson.loads
    except ImportError:  # pragma: no cover - orjson is a declared dependency
        import json

        loads = json.loads
    try:
        files = loads((Path(shard_dir) / "manifest.json").read_bytes())["files"]
        return {rel: tuple(entry.get("includes") or ()) for rel, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _is_header(rel: str) -> bool:
    return rel.endswith(".h")


def translation_units(includes: Mapping[str, Sequence[str]], compiled: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each non-header file that some ``compiled`` file includes, directly or through other
    files (headers, other included ``.c`` files) → those compiled files, sorted: the translation
    units it is part of (``sound/pci/echoaudio/echoaudio.c`` → ``darla20.c``, ``echo3g.c``, ...).

    ``includes`` maps a file to the files it includes (:func:`indexed_includes`). A file is no
    unit of its own here (``kernel/locking/qspinlock.c`` includes itself); a compiled file that
    another compiled file includes (``fs/binfmt_elf.c``, in ``fs/compat_binfmt_elf.c``) is in
    both. Work: one walk up the includers of each included non-header file."""
    compiled = set(compiled)
    includers: dict[str, list[str]] = {}
    for rel, targets in includes.items():
        for target in targets:
            includers.setdefault(target, []).append(rel)
    out: dict[str, tuple[str, ...]] = {}
    for target in sorted(t for t in includers if not _is_header(t)):
        seen, todo = {target}, [target]
        while todo:
            for up in includers.get(todo.pop(), ()):
                if up not in seen:
                    seen.add(up)
                    todo.append(up)
        roots = sorted((seen - {target}) & compiled)
        if roots:
            out[target] = tuple(roots)
    return out


def unit_modules(units: Mapping[str, Sequence[str]], modules: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Every module each file is compiled into: ``modules`` (a compiled file → its modules) with,
    for each included file of ``units``, the modules of the files whose units it is part of
    (``echoaudio.c`` → ``snd_darla20``, ``snd_echo3g``...). Sorted names, one tuple per file."""
    out = {rel: set(mods) for rel, mods in modules.items()}
    for rel, roots in units.items():
        into = out.setdefault(rel, set())
        for root in roots:
            into.update(modules.get(root, ()))
    return {rel: tuple(sorted(mods)) for rel, mods in out.items() if mods}
