"""Source trees for ``ksymgraph load --source``: index each one and map its files to modules.

A kernel tree (it has ``Kbuild`` and ``arch/`` at the top) is attributed with its Kbuild
Makefiles evaluated under the kernel's ``.config`` (:mod:`ksymgraph.loaders.kbuild`); an
out-of-tree tree that has been built is attributed with its ``.mod`` files
(:mod:`ksymgraph.loaders.modobjects`). A non-header file that a compiled file ``#include`` s is
part of that translation unit and built into its modules (:mod:`ksymgraph.loaders.units`:
``sound/pci/echoaudio/echoaudio.c`` into ``snd_echo3g``, ``snd_layla24``...). ``debian`` as a tree
name means Debian's ``linux-source-X.Y`` package matching the kernel, fetched and unpacked into
the cache.

The index itself (Parquet shards, re-parsing only changed files) lives in the cache, keyed by the
tree's path, so nothing is written into the user's tree. With a ``.config``, every file's
preprocessor conditionals are decided for that build (:mod:`ksymgraph.loaders.preproc`): the
kernel's version from the tree's top Makefile (else the one given), ``MODULE`` from the
attribution (defined for the parts of modules, not for built-in code, not known for headers and
for files built both ways).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

from . import debian
from .cfiles import tree_files
from .debnames import DebianError, suite_for_release
from .records import LoaderError, Skipped

__all__ = ["SourceTree", "is_kernel_tree", "outside_build", "HOST_DIRS", "debian_source_tree", "unpack_source_tarball",
           "debian_headers_tree", "index_dir",
           "index_source_tree"]

#: Debian flavour suffix → the kernel's architecture directory.
ARCH_DIRS = {"amd64": "x86", "i386": "x86", "686": "x86", "686-pae": "x86", "arm64": "arm64", "armmp": "arm",
             "ppc64el": "powerpc", "s390x": "s390", "riscv64": "riscv", "loong64": "loongarch"}

#: The compiler's target (:attr:`~ksymgraph.loaders.ppcontext.PreprocContext.arch`) → its ``arch/`` directory.
TARGET_ARCH_DIRS = {"x86_64": "x86", "i386": "x86", "arm64": "arm64"}

#: Top-level directories of a kernel tree that no kernel object is compiled from and that no
#: kernel file includes: user-space and host programs with their own headers (``tools/``: perf,
#: the selftests, ``tools/include/linux/spinlock.h``; ``scripts/``: kconfig, modpost, the gcc
#: plugins) and the documentation's examples.
HOST_DIRS = ("tools/", "scripts/", "Documentation/", "usr/")


class SourceTree(NamedTuple):
    """One indexed source tree and how its files map to modules."""

    root: Path
    """The tree."""
    shard_dir: Path
    """Its index, written by :func:`ksymgraph.loaders.cindex.index_tree`."""
    prefix: str
    """Prefix of this tree's file paths in the graph: ``""`` for the kernel tree,
    ``<dirname>/`` for an out-of-tree one."""
    built_into: dict[str, str]
    """Source file (relative to ``root``) → module name (``vmlinux`` for built-in code)."""
    skipped: list[Skipped]
    """Files that could not be parsed, and attribution problems."""
    stats: object
    """The index's :class:`~ksymgraph.loaders.records.ParseStats`."""
    outside: tuple[str, ...] = ()
    """Path prefixes (relative to ``root``) of the files the build neither compiles nor includes
    (:func:`outside_build`): names defined there are not what the build's calls reach."""
    arch: str = ""
    """The ``arch/`` directory the build compiles for (``x86``); ``""``: not known."""
    modules: dict[str, tuple[str, ...]] = {}
    """Source file → every module it is compiled into, sorted (:attr:`built_into` has the first):
    a file Kbuild puts in several (liquidio's ``lio_core.c`` in ``liquidio`` and ``liquidio_vf``),
    and a file of :attr:`units` into each module of the files that include it."""
    units: dict[str, tuple[str, ...]] = {}
    """A non-header file that compiled files ``#include`` → those files, sorted: it is part of
    their translation units (:func:`~ksymgraph.loaders.units.translation_units`:
    ``sound/pci/echoaudio/echoaudio.c`` → ``echo3g.c``, ``layla24.c``...); it is in
    :attr:`built_into` too, with the module of the first."""


def is_kernel_tree(root: Path) -> bool:
    """True for the top of a kernel source tree."""
    return (root / "Kbuild").is_file() and (root / "arch").is_dir() and (root / "include" / "linux").is_dir()


def outside_build(root: Path, arch: str) -> tuple[str, ...]:
    """The path prefixes of kernel tree ``root`` that a build for ``arch`` (an ``arch/``
    directory, ``x86``) never sees: :data:`HOST_DIRS` and every other architecture's directory
    (``arch/arm/include/asm/delay.h`` defines a ``udelay()`` no x86 file includes). Without an
    ``arch``, only :data:`HOST_DIRS`."""
    others = []
    if arch:
        try:
            others = sorted(f"arch/{d.name}/" for d in (root / "arch").iterdir() if d.is_dir() and d.name != arch)
        except OSError:
            others = []
    return (*HOST_DIRS, *others)


def debian_source_tree(release: str) -> Path:
    """Debian's kernel source for ``release`` (``6.1.0-50-amd64`` → ``linux-source-6.1``), unpacked once."""
    m = re.match(r"(\d+\.\d+)", release)
    if not m:
        raise LoaderError(f"debian:{release}", "cannot tell the kernel series from the release")
    suite = suite_for_release(release)
    try:
        pkg, _version = debian.fetch_package(f"linux-source-{m.group(1)}", suite)
    except DebianError as e:
        raise LoaderError(f"linux-source-{m.group(1)}", str(e)) from e
    tarballs = sorted(pkg.glob("usr/src/linux-source-*.tar.*"))
    if not tarballs:
        raise LoaderError(str(pkg), "no usr/src/linux-source-*.tar.* in the package")
    return unpack_source_tarball(tarballs[0], debian.cache_dir() / "src" / pkg.name)


def unpack_source_tarball(tarball: str | os.PathLike, dest_root: str | os.PathLike) -> Path:
    """Extract a kernel source tarball (``linux-source-6.1.tar.xz``) once under ``dest_root``.

    Returns the top directory of the tree (``<dest_root>/linux-source-6.1``). Extraction goes
    to a temporary directory that is renamed into place, so an interrupted run leaves nothing
    half-written; a second call reuses the tree.
    """
    tarball = Path(tarball)
    dest_root = Path(dest_root)
    name = tarball.name
    for suffix in (".tar.xz", ".tar.gz", ".tar.bz2", ".tar.zst", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    final = dest_root / name
    if final.is_dir():
        return final
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=".unpack-") as tmp:
        if tarball.name.endswith(".tar.xz") and _have("tar") and _have("xz"):
            import subprocess

            subprocess.run(["tar", "-xJf", str(tarball), "-C", tmp], check=True)
        else:
            with tarfile.open(tarball) as tf:
                tf.extractall(tmp, filter="data")
        entries = [p for p in Path(tmp).iterdir()]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
        if top == Path(tmp):
            inner = Path(tmp) / name
            inner.mkdir()
            for p in entries:
                os.replace(p, inner / p.name)
            top = inner
        os.replace(top, final)
    return final


def _have(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def debian_headers_tree(release: str) -> tuple[Path, list[str]]:
    """Debian's ``linux-headers-<abi>-common`` of ``release`` and the headers a build of its
    architecture sees (``include/`` and ``arch/<arch>/include/``): enough to tell renames
    behind kept APIs (:mod:`ksymgraph.queries.renames`) without the whole source."""
    from .kernel import arch_from_release

    flavour = arch_from_release(release)
    if not flavour:
        raise LoaderError(f"debian:{release}", "cannot tell the flavour (e.g. -amd64) from the release")
    common = release[: -len(flavour)] + "common"
    try:
        pkg, _version = debian.fetch_package(f"linux-headers-{common}", suite_for_release(release))
    except DebianError as e:
        raise LoaderError(f"linux-headers-{common}", str(e)) from e
    root = next(iter(sorted(pkg.glob("usr/src/linux-headers-*"))), None)
    if root is None:
        raise LoaderError(str(pkg), "no usr/src/linux-headers-* in the package")
    arch = ARCH_DIRS.get(flavour, flavour)
    files = [f for f in tree_files(root).headers if f.startswith(("include/", f"arch/{arch}/include/"))]
    return root, files


def index_dir(root: Path, build: str = "") -> Path:
    """The cache directory of ``root``'s index; indexes of trees that no longer exist are removed.

    ``build``: the digest of the build its conditionals are decided for (""
    when every branch is read): an index per build, so that a load with a ``.config`` and one
    without (or with another) each re-parse only what changed since their own last run."""
    import shutil

    base = debian.cache_dir() / "index"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        marker = old / "tree"
        if marker.is_file() and not Path(marker.read_text().strip()).is_dir():
            shutil.rmtree(old, ignore_errors=True)
    key = hashlib.sha1(str(root).encode() + (b"\0" + build.encode() if build else b"")).hexdigest()[:16]
    shard_dir = base / f"{root.name}-{key}"
    shard_dir.mkdir(exist_ok=True)
    (shard_dir / "tree").write_text(str(root) + "\n")
    return shard_dir


def _module_flags(built: dict[str, set[str]]) -> dict[str, bool | None]:
    """``MODULE`` of each source file from the modules it is built into: defined when it goes
    into modules only, not when into vmlinux only, not known when both."""
    flags: dict[str, bool | None] = {}
    for rel, modules in built.items():
        into_vmlinux = "vmlinux" in modules
        flags[rel] = None if into_vmlinux and len(modules) > 1 else not into_vmlinux
    return flags


def _parse_version(version: str | None) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not m or m.group(3) is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _with_tree_defines(root: Path, headers: list[str], context):
    """``context`` with what an out-of-tree tree adds to its files' compilation: the ``-D`` flags of
    its build (its ``.o.cmd`` files) and the version macros its headers define (LTTng's
    ``LTTNG_KERNEL_VERSION``...), so that a file's ``#if`` on them is decided."""
    from .cfiles import read_source
    from .preproc import command_line_defines, version_macros

    context = context._replace(defines=context.defines + command_line_defines(root))

    def read(rel: str):
        try:
            return rel, read_source(str(root), rel)[0]
        except LoaderError:
            return rel, b""

    return context._replace(defines=context.defines + version_macros(map(read, headers), context))


_ASM_GENERIC = ("include/asm-generic/", "include/uapi/asm-generic/")
_KBUILD_LIST_RE = re.compile(r"^\s*(generic|mandatory|generated)-y\s*\+?=\s*(.*?)\s*$", re.M)
#: ``#include <asm-generic/x.h>``, and ``<uapi/asm-generic/x.h>`` (include/asm-generic/ioctl.h's)
_ASM_GENERIC_INCLUDE_RE = re.compile(rb'^\s*#\s*include\s*[<"]((?:uapi/)?asm-generic/[^>"]+)[>"]', re.M)


def _asm_generic_headers(root: Path, headers: list[str], arch: str) -> set[str]:
    """The ``include/asm-generic/`` (and uapi) headers a build for ``arch`` includes: the wrappers
    Kbuild generates for the arch's ``generic-y`` and for the ``mandatory-y`` headers it lacks
    (scripts/Makefile.asm-generic, 6.1 lines 22-30), and the asm-generic headers the others
    ``#include``, transitively. The rest are other architectures' (asm-generic/page.h defines a
    ``__va()`` for nommu ones, which x86's asm/page.h would take for its own)."""
    from .cfiles import read_source

    have = set(headers)
    found: set[str] = set()
    if arch:
        for asm, generic in ((f"arch/{arch}/include/asm", "include/asm-generic"),
                             (f"arch/{arch}/include/uapi/asm", "include/uapi/asm-generic")):
            lists: dict[str, list[str]] = {"generic": [], "mandatory": [], "generated": []}
            for kbuild in (root / asm / "Kbuild", root / generic / "Kbuild"):
                try:
                    text = kbuild.read_text(errors="replace")
                except OSError:
                    continue
                for kind, names in _KBUILD_LIST_RE.findall(text):
                    if kind == "mandatory" and kbuild.parent != root / generic:
                        continue
                    lists[kind] += names.split()
            wanted = set(lists["generic"]) | {f for f in lists["mandatory"] if f"{asm}/{f}" not in have}
            # the wrapper is `#include <asm-generic/F>`: include/ comes before include/uapi/
            found |= {_first_of(have, f"include/asm-generic/{f}", f"{generic}/{f}") for f in wanted - set(lists["generated"])}
    todo = [h for h in headers if not h.startswith(_ASM_GENERIC) and h.startswith(("include/", f"arch/{arch}/include/"))]
    todo += sorted(found)
    seen = set(todo)
    while todo:
        rel = todo.pop()
        try:
            text = read_source(str(root), rel)[0]
        except LoaderError:
            continue
        for name in _ASM_GENERIC_INCLUDE_RE.findall(text):
            name = name.decode("utf-8", "replace")
            target = _first_of(have, f"include/{name}", f"include/uapi/{name}")
            if target in have and target not in seen:
                seen.add(target)
                found.add(target)
                todo.append(target)
    return found


def _first_of(have: set[str], *paths: str) -> str:
    """The first of ``paths`` that ``have`` holds (the include path's order), else the last."""
    return next((p for p in paths if p in have), paths[-1])


def _with_shared_header_macros(root: Path, headers: list[str], context, arch: str):
    """``context`` with the macros the kernel's shared headers (``include/`` but the asm-generic
    headers other architectures use, ``arch/<arch>/include/``) define for certain (:func:`~ksymgraph.loaders.preproc.shared_header_macros`): ``HAVE_ARCH_BUG``,
    ``HZ``..., so that a generic header's ``#ifndef HAVE_ARCH_BUG`` is decided."""
    from .cfiles import read_source
    from .preproc import shared_header_macros

    shared = ("include/", f"arch/{arch}/include/") if arch else ("include/",)
    generic = _asm_generic_headers(root, headers, arch)

    def read():
        for rel in headers:
            if rel.startswith(shared) and (not rel.startswith(_ASM_GENERIC) or rel in generic):
                try:
                    yield rel, read_source(str(root), rel)[0]
                except LoaderError:
                    continue  # the index names it when it reads it

    return context._replace(defines=context.defines + shared_header_macros(read(), context))


#: The version of what :func:`_with_macros_only_elsewhere` caches (a change re-reads the tree).
_ELSEWHERE_VERSION = 3
_MAKEFILE_NAMES = ("Makefile", "Kbuild")


def _with_macros_only_elsewhere(root: Path, headers: list[str], c_files: list[str], context, arch: str,
                                outside: tuple[str, ...]):
    """``context`` with the names its files test that only other architectures define
    (:func:`~ksymgraph.loaders.preproc.macros_only_elsewhere`) as not defined. Read once per tree
    and architecture, and cached by the files' sizes and times (the tree has 70,000 files; reading
    them takes half a minute, their signatures a second)."""
    import json

    from .cfiles import read_source
    from .preproc import macros_only_elsewhere

    if not arch:
        return context
    generic = _asm_generic_headers(root, headers, arch)
    others = tuple(p for p in outside if p.startswith("arch/"))
    visible = [f for f in (*headers, *c_files) if not f.startswith(outside)
               and (not f.startswith(_ASM_GENERIC) or f in generic)]
    elsewhere = [f for f in headers if f.startswith(others) or (f.startswith(_ASM_GENERIC) and f not in generic)]
    makefiles = []
    for top, dirs, names in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = "" if rel_top == "." else rel_top + "/"
        dirs[:] = sorted(d for d in dirs if not (rel_top + d + "/").startswith(outside) and not d.startswith("."))
        makefiles += [rel_top + n for n in sorted(names) if n in _MAKEFILE_NAMES or n.endswith(".mk")]
    h = hashlib.sha1(f"{_ELSEWHERE_VERSION}\0{arch}\0".encode())
    for group in (visible, elsewhere, makefiles):
        h.update(b"\1")
        for rel in group:
            try:
                st = os.stat(root / rel)
            except OSError:
                continue
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    cache = index_dir(root, f"macros-only-elsewhere-{arch}") / "only_elsewhere.json"
    key = h.hexdigest()
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return context._replace(undefined=tuple(saved["names"]))
    except (OSError, ValueError, KeyError):
        pass

    def read(files):
        for rel in files:
            try:
                yield rel, read_source(str(root), rel)[0]
            except LoaderError:
                continue  # the index names it when it reads it

    names = macros_only_elsewhere(read(visible), read(elsewhere), read(makefiles))
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "names": list(names)}))
    os.replace(tmp, cache)
    return context._replace(undefined=names)


def index_source_tree(root: str | Path, config: Path | None = None, workers: int | None = None,
                      progress: bool = False, files: list[str] | None = None,
                      version: str | None = None) -> SourceTree:
    """Index ``root`` (re-parsing only what changed since the last run) and attribute its files.

    ``files`` limits the index to those files (relative to ``root``); by default every ``.c``
    file with the headers it includes, or every header of a tree without ``.c`` files. With a
    ``config``, conditionals are decided for that build, with the version of the tree's top
    Makefile or else ``version`` (the kernel's, ``6.1.192-3``); without one, every branch is read.
    """
    from .cindex import index_lock, index_tree, indexed_files
    from .kbuild import evaluate_kbuild, read_config
    from .modobjects import files_by_module
    from .preproc import context_for_build, tree_version
    from .units import indexed_includes, translation_units, unit_modules

    root = Path(root).resolve()
    if not root.is_dir():
        raise LoaderError(str(root), "not a directory")
    from .macros import index_macros

    if files is None:
        listing = tree_files(root)
        headers, c_files, walked = listing.headers, listing.c, listing.skipped
        has_c = bool(c_files)
        # A headers-only tree (a linux-headers package) is indexed header by header.
        files = c_files if has_c else headers
    else:
        headers, c_files, walked = [f for f in files if f.endswith(".h")], [f for f in files if f.endswith(".c")], []
        has_c = False
    kernel = is_kernel_tree(root)
    skipped: list[Skipped] = []
    context = None
    if config is not None:
        try:
            context = context_for_build(read_config(config), tree_version(root) or _parse_version(version))
        except LoaderError as e:
            skipped.append(Skipped(e.path, f"{e.reason}: preprocessor conditionals not decided (every branch read), "
                                           "files not attributed to modules"))
    else:
        skipped.append(Skipped(str(root), "no .config given (--config): preprocessor conditionals not decided, "
                                          "every branch read"))
    if context is not None and not kernel and has_c:
        context = _with_tree_defines(root, headers, context)
    arch = TARGET_ARCH_DIRS.get(context.arch, "") if context is not None else ""
    outside = outside_build(root, arch) if kernel else ()
    # (tracepoints.py reads tracepoint.h and include/trace/ in order, file after file: without the
    # shared headers' macros, which decide tracepoint.h's own `#ifndef DECLARE_TRACE` dead)
    plain = context
    if context is not None and kernel:
        context = _with_shared_header_macros(root, headers, context, arch)
        context = _with_macros_only_elsewhere(root, headers, c_files, context, arch, outside)
    shard_dir = index_dir(root, "" if context is None else context.digest())
    # Attributed before the index: MODULE of each file comes from it.
    built: dict[str, str] = {}
    built_sets: dict[str, set[str]] = {}
    if not has_c:
        pass  # headers only: nothing is built from them
    elif kernel:
        if config is None:
            skipped.append(Skipped(str(root), "no .config given (--config): files not attributed to modules"))
        elif context is not None:
            for rec in evaluate_kbuild(root, context.config, skipped=skipped):
                built.setdefault(rec.file, rec.module)
                built_sets.setdefault(rec.file, set()).add(rec.module)
    else:
        built = files_by_module(root, skipped)
        built_sets = {rel: {module} for rel, module in built.items()}
        if not built:
            skipped.append(Skipped(str(root), "no .mod files (is the tree built?): files not attributed to modules"))
    # One lock over the index and the macro pass (index_tree takes it again: re-entrant).
    with index_lock(shard_dir, progress):
        result = index_tree(root, files=files, workers=workers or 2, shard_dir=shard_dir, progress=progress,
                            preproc=context, modules=_module_flags(built_sets))
        # The macros the build sees: those of the headers its code includes (the ones the index
        # followed: not spinlock_api_up.h on SMP), none of other architectures or of tools/, and
        # none under a dead #if (spinlock_api_smp.h's `#define _raw_spin_lock` needs
        # CONFIG_INLINE_SPIN_LOCK, which Debian's 6.1 has not set).
        # (a kernel tree has every header its files include; another tree may include one through
        # a header it lacks: at24.c's <linux/moduleparam.h> comes through <linux/module.h>)
        included = indexed_files(shard_dir) if kernel else set()
        _macros, macro_skips = index_macros(
            root, shard_dir, [f for f in headers if not f.startswith(outside) and (not included or f in included)],
            [f for f in c_files if not f.startswith(outside)],
            _compiled_text(context, _module_flags(built_sets)), "" if context is None else context.digest(),
            _compiled_text(plain, _module_flags(built_sets)))
        # A .c file that a compiled file includes is compiled as part of it (echo3g.c's
        # `#include "echoaudio.c"`): built into the includer's modules, by the includes the index followed.
        units = translation_units(indexed_includes(shard_dir), built) if built else {}
    modules = unit_modules(units, built_sets)
    for rel, roots in units.items():
        built.setdefault(rel, built[roots[0]])
    # (the macro pass reads the same files again: a file it cannot read is named once)
    skipped = list(dict.fromkeys([*walked, *result.errors, *macro_skips, *skipped]))
    return SourceTree(root, shard_dir, "" if kernel else f"{root.name}/", built, skipped, result.stats,
                      outside, arch, modules, units)


def _compiled_text(context, modules: dict[str, bool | None]):
    """The macro pass's view of a file under ``context``: the text the preprocessor leaves
    (``MODULE`` as the file is built; not known for headers), or None without a build."""
    if context is None:
        return None
    from .preproc import preprocess

    contexts = {m: context._replace(module=m) for m in (True, False, None)}

    def compiled(rel: str, data: bytes) -> bytes:
        return preprocess(data, contexts[modules.get(rel)]).text

    return compiled
