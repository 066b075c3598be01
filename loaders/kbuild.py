"""Kbuild: which source file is built into which module, under a kernel ``.config``.

The kernel's build descends from the top-level ``Kbuild`` file through ``obj-y += dir/`` and
``obj-$(CONFIG_X) += dir/`` into every directory, reads that directory's ``Kbuild`` (or, when there
is none, its ``Makefile``) and collects ``obj-y`` (built into vmlinux) and ``obj-m`` (one ``.ko``
each). An object is either one source file (``foo.o`` from ``foo.c``) or a composite listed by
``foo-y``, ``foo-objs`` or ``foo-$(CONFIG_Y)``. :func:`evaluate_kbuild` re-does that walk with a small
evaluator of the make subset Kbuild files use (:mod:`ksymgraph.loaders.make`), which reads only
files inside the tree and bounds its work; a directory, object or source file that would lie
outside the tree is not entered, and what is not read is reported.

A directory entered only through ``obj-m += dir/`` is not linked into vmlinux, as in Kbuild: its
``obj-y`` objects are dropped (its ``obj-y`` sub-directories are still entered, in the same
mode), its ``obj-m`` objects are modules.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Iterator, Mapping

from .cfiles import MAX_MAKEFILE_BYTES, inside_tree, read_source, real_root
from .make import Makefile
from .elf import module_name_from_path
from .records import BuiltInto, LoaderError, Skipped

__all__ = [
    "read_config",
    "evaluate_kbuild",
    "evaluate_makefile",
    "kbuild_coverage",
]


_CONFIG_RE = re.compile(r"^(CONFIG_\w+)=(.*)$")
_NOT_SET_RE = re.compile(r"^# (CONFIG_\w+) is not set")


def read_config(path: str | os.PathLike) -> dict[str, str]:
    """``{CONFIG_X: value}`` of a ``.config``: ``y``, ``m``, numbers, or strings without quotes.
    Options that are ``not set`` are absent. Only a regular file is read, of at most
    :data:`~ksymgraph.loaders.cfiles.MAX_MAKEFILE_BYTES` (a :class:`~ksymgraph.loaders.records.LoaderError`
    otherwise)."""
    real = os.path.realpath(path)
    try:
        data = read_source(os.path.dirname(real), os.path.basename(real), MAX_MAKEFILE_BYTES)[0]
    except LoaderError as e:
        raise LoaderError(path, e.reason) from None
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        m = _CONFIG_RE.match(line)
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            out[m.group(1)] = value
    return out


class _Words(Mapping):
    """Every variable of an evaluated makefile, its words expanded when first asked for (a
    variable that cannot be is reported then, and has none)."""

    def __init__(self, mk: Makefile):
        self._mk = mk
        self._words: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> list[str]:
        if name not in self._mk.vars:
            raise KeyError(name)
        if name not in self._words:
            self._words[name] = self._mk.words(name)
        return self._words[name]

    def __iter__(self):
        return iter(self._mk.vars)

    def __len__(self) -> int:
        return len(self._mk.vars)


def evaluate_makefile(root: str | os.PathLike, directory: str, variables: dict[str, str],
                      skipped: list[Skipped] | None = None) -> Mapping[str, list[str]]:
    """Evaluate the Kbuild makefile of ``directory`` (``Kbuild`` preferred over ``Makefile``) with
    ``variables`` (the ``.config`` and the arch variables) and return every variable's words.
    What could not be read or evaluated is added to ``skipped``."""
    root_s = real_root(root)
    mk = Makefile(root_s, directory, _base_variables(variables, directory), skipped)
    for name in ("Kbuild", "Makefile"):
        rel = os.path.normpath(os.path.join(directory, name))
        if os.path.lexists(os.path.join(root_s, rel)):
            mk.read(rel)
            break
    return _Words(mk)


def _base_variables(variables: dict[str, str], directory: str) -> dict[str, str]:
    base = dict(variables)
    base.update(srctree=".", objtree=".", src=directory, obj=directory)
    return base


# --------------------------------------------------------------------------------------------
# The walk


def _arch_variables(root: str, config: dict[str, str], arch: str, skipped: list[Skipped]) -> dict[str, str]:
    """``SRCARCH``, ``BITS`` and ``ARCH_CORE``/``ARCH_LIB``/``ARCH_DRIVERS`` from the arch Makefile
    (``core-y``, ``libs-y``, ``drivers-y``), as the top Makefile exports them to ``./Kbuild``."""
    is_64 = config.get("CONFIG_64BIT") == "y"
    variables = dict(config)
    variables.update(SRCARCH=arch, ARCH=arch, BITS="64" if is_64 else "32")
    mk = Makefile(root, f"arch/{arch}", _base_variables(variables, f"arch/{arch}"), skipped)
    mk.vars.update({"core-y": ("", False), "drivers-y": ("", False), "libs-y": ("lib/", False)})
    if os.path.lexists(os.path.join(root, "arch", arch, "Makefile")):
        mk.read(f"arch/{arch}/Makefile")
    core = mk.words("core-y")
    libs = [w for w in mk.words("libs-y") if w.endswith("/")]
    drivers = mk.words("drivers-y") + mk.words("drivers-m")
    variables.update(ARCH_CORE=" ".join(core), ARCH_LIB=" ".join(libs), ARCH_DRIVERS=" ".join(drivers))
    return variables


def _source_of(root: str, obj: str) -> str | None:
    stem = obj[:-2]
    if not inside_tree(stem):
        return None
    for ext in (".c", ".S", ".rs"):
        if os.path.isfile(os.path.join(root, stem + ext)):
            return stem + ext
    return None


def _components(mk_vars: dict[str, list[str]], name: str, mode: str) -> list[str] | None:
    """Parts of composite object ``name`` (without ``.o``), or None when it is not composite."""
    parts = mk_vars.get(f"{name}-objs", []) + mk_vars.get(f"{name}-y", [])
    if mode == "m":
        parts += mk_vars.get(f"{name}-m", [])
    return parts if parts else None


def evaluate_kbuild(root: str | os.PathLike, config: str | os.PathLike | dict[str, str], arch: str = "x86",
                    skipped: list[Skipped] | None = None) -> Iterator[BuiltInto]:
    """Every source file built into vmlinux or a module under ``config`` (a ``.config`` path or
    :func:`read_config`'s dict), walking Kbuild from the tree's top-level ``Kbuild`` file.

    Makefiles that cannot be read or evaluated to the end, includes not followed and
    directories outside the tree are added to ``skipped`` (with the reason)."""
    root = real_root(root)
    skipped = [] if skipped is None else skipped
    if not isinstance(config, dict):
        config = read_config(config)
    variables = _arch_variables(root, config, arch, skipped)
    top = evaluate_makefile(root, ".", variables, skipped)
    dirs = [(d, "y") for d in top.get("obj-y", [])] + [(d, "m") for d in top.get("obj-m", [])]
    if not dirs:  # older kernels list the top directories in the Makefile, not in ./Kbuild
        dirs = [(d, "y") for d in ("init/", "kernel/", "mm/", "fs/", "ipc/", "security/", "crypto/",
                                    "block/", "drivers/", "sound/", "net/", "lib/", "virt/",
                                    f"arch/{arch}/")]
    seen_dirs: set[tuple[str, str]] = set()
    emitted: set[tuple[str, str]] = set()
    todo = [(os.path.normpath(d.rstrip("/")), mode) for d, mode in dirs if d.endswith("/")]
    while todo:
        directory, mode = todo.pop(0)
        if (directory, mode) in seen_dirs:
            continue
        seen_dirs.add((directory, mode))
        if not inside_tree(directory):
            skipped.append(Skipped(directory + "/", "not entered: outside the tree"))
            continue
        if not os.path.isdir(os.path.join(root, directory)):
            continue
        mk_vars = evaluate_makefile(root, directory, variables, skipped)
        objects = []
        for o in mk_vars.get("obj-y", []) + mk_vars.get("lib-y", []):
            if mode == "y":
                objects.append((o, "y"))
            elif o.endswith("/"):  # Kbuild descends anyway; nothing there reaches vmlinux
                objects.append((o, "m"))
        objects += [(o, "m") for o in mk_vars.get("obj-m", [])]
        for sub in mk_vars.get("subdir-y", []) + mk_vars.get("subdir-m", []):
            objects.append((sub.rstrip("/") + "/", "m"))
        for obj, obj_mode in objects:
            if obj.endswith("/"):
                todo.append((os.path.normpath(os.path.join(directory, obj)), obj_mode))
                continue
            if not obj.endswith(".o"):
                continue
            name = obj[:-2]
            if obj_mode == "m":
                ko = os.path.normpath(os.path.join(directory, name + ".ko"))
                module = module_name_from_path(ko)
            else:
                ko, module = None, "vmlinux"
            for src in _expand_object(root, directory, mk_vars, name, obj_mode, 0):
                if (src, module) not in emitted:
                    emitted.add((src, module))
                    yield BuiltInto(src, module, ko)


def _expand_object(root: str, directory: str, mk_vars, name: str, mode: str, depth: int) -> Iterator[str]:
    parts = _components(mk_vars, name, mode) if depth < 4 else None
    if parts is None:
        src = _source_of(root, os.path.normpath(os.path.join(directory, name + ".o")))
        if src is not None:
            yield src
        return
    for part in parts:
        if part.endswith(".o") and part[:-2] != name:
            yield from _expand_object(root, directory, mk_vars, part[:-2], mode, depth + 1)
        elif part.endswith(".o"):
            src = _source_of(root, os.path.normpath(os.path.join(directory, part)))
            if src is not None:
                yield src


def kbuild_coverage(records: Iterable[BuiltInto], ko_names: Iterable[str]) -> tuple[float, list[str]]:
    """Share of the modules in ``ko_names`` (``.ko`` paths, base names or module names) that
    ``records`` give at least one source file, and the sorted list of those they do not."""
    mapped = {r.module for r in records if r.module != "vmlinux"}
    wanted = sorted({module_name_from_path(k) for k in ko_names})
    if not wanted:
        return 0.0, []
    unmapped = [m for m in wanted if m not in mapped]
    return 1 - len(unmapped) / len(wanted), unmapped
