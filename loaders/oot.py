"""Out-of-tree modules built DKMS-style against a Debian kernel's headers, without installing anything.

:func:`build_dkms_modules` does what DKMS does for a ``*-dkms`` package — ``make -C <headers>
M=<source> modules`` — but entirely inside the ksymgraph cache:

1. the DKMS source package (``lttng-modules-dkms`` unpacks to ``usr/src/lttng-modules-2.13.9/``)
   and the kernel's build files are fetched with :func:`ksymgraph.loaders.debian.fetch_package`;
2. the build files are laid out in one private root, ``<cache>/oot/headers/<release>/usr/...``,
   mirroring ``/usr``: ``usr/src/linux-headers-<release>`` (the flavour's ``.config``,
   ``Module.symvers``, generated headers), ``usr/src/linux-headers-<...>-common`` (the source
   headers and the top Makefile) and ``usr/lib/linux-kbuild-<X.Y>`` (``fixdep``, ``modpost``,
   ``objtool``). The packages link them with relative symlinks (``scripts ->
   ../../lib/linux-kbuild-6.1/scripts``), which keep working inside the private root; the one
   absolute path, the flavour Makefile's ``include /usr/src/linux-headers-<...>-common/Makefile``,
   is rewritten to the private copy. The names of the ``-common`` and ``linux-kbuild`` packages
   are read from those two links, not guessed from the release string;
3. the source is copied into a temporary directory in the cache, patched where the kernel's
   headers require it (see :data:`SOURCE_PATCHES`), built, its ``.ko`` files gathered under
   ``modules/``, and the whole entry renamed into place when complete: nothing half-written is
   ever reused. A later call with the same package, release and make arguments returns the
   cached ``modules/`` directory at once.

LTTng 2.13.9 on Debian's 6.1.0-50 (6.1.176): the stable series backported a third argument to the
``hrtimer_start`` tracepoint (``bool was_armed``), so LTTng's ``lttng-probe-timer`` fails with
"conflicting types for 'trace_hrtimer_start'". The patch ``hrtimer-start-was-armed`` adds the
argument to LTTng's probe prototype (the recorded fields are unchanged), and is applied only when
the kernel's ``include/trace/events/timer.h`` declares it. Every other probe builds as shipped;
the build yields 48 modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ..errors import KsymgraphError
from . import debian
from .debnames import DebianError, suite_for_release, system_suite

__all__ = [
    "OotError",
    "SourcePatch",
    "OotBuild",
    "SOURCE_PATCHES",
    "dkms_source_dir",
    "lttng_source_dir",
    "kernel_build_dir",
    "build_dkms_modules",
    "read_build",
]

#: Bump when the layout of a cached build entry or the patches change: old entries are ignored.
_CACHE_FORMAT = 1


class OotError(KsymgraphError):
    """An out-of-tree build could not be prepared or failed; the message says why (and the log's tail)."""


class SourcePatch(NamedTuple):
    """A minimal source edit that a module package needs on some kernels' headers."""

    name: str
    """Short name, recorded in the build's manifest."""
    package: str
    """The DKMS package it applies to."""
    file: str
    """File to edit, relative to the package's source tree."""
    old: str
    """Text that must occur exactly once in ``file``."""
    new: str
    """Its replacement."""
    needed: Callable[[Path], bool]
    """Given the kernel's ``-common`` headers directory: does this kernel need the patch?"""
    why: str
    """What changed in the kernel and what the patch does."""


def _hrtimer_start_has_was_armed(common: Path) -> bool:
    header = common / "include" / "trace" / "events" / "timer.h"
    try:
        text = header.read_text(errors="replace")
    except OSError:
        return False
    m = re.search(r"TRACE_EVENT\(hrtimer_start,\s*TP_PROTO\(([^)]*)\)", text)
    return bool(m) and "was_armed" in m.group(1)


#: Patches applied to a source copy before building, each only when its ``needed`` test holds.
SOURCE_PATCHES: tuple[SourcePatch, ...] = (
    SourcePatch(
        "hrtimer-start-was-armed",
        "lttng-modules-dkms",
        "include/instrumentation/events/timer.h",
        "\tTP_PROTO(struct hrtimer *hrtimer, enum hrtimer_mode mode),\n\n\tTP_ARGS(hrtimer, mode),\n",
        "\tTP_PROTO(struct hrtimer *hrtimer, enum hrtimer_mode mode, bool was_armed),\n\n"
        "\tTP_ARGS(hrtimer, mode, was_armed),\n",
        _hrtimer_start_has_was_armed,
        "6.1 stable kernels (Debian 6.1.176) give the hrtimer_start tracepoint a third argument, "
        "'bool was_armed'; LTTng 2.13.9's probe declares two and lttng-probe-timer fails with "
        "\"conflicting types for 'trace_hrtimer_start'\". The patch adds the argument to LTTng's "
        "probe prototype; the fields LTTng records stay the same.",
    ),
)


class OotBuild(NamedTuple):
    """A cached out-of-tree build, as its manifest records it."""

    package: str
    """The DKMS source package, e.g. ``lttng-modules-dkms``."""
    version: str
    """Its Debian version."""
    release: str
    """The kernel release built against."""
    make_args: list[str]
    """Extra ``make`` arguments (``CONFIG_LTTNG=m``)."""
    patches: list[str]
    """Names of the :data:`SOURCE_PATCHES` applied."""
    modules: list[str]
    """The ``.ko`` files, relative to :attr:`modules_dir`."""
    modules_dir: Path
    """Directory holding the ``.ko`` files (what :func:`build_dkms_modules` returns)."""
    source_dir: Path
    """The built (and patched) copy of the source tree, with its objects and ``Module.symvers``."""
    seconds: float
    """Wall time of the build when it ran (0 for nothing)."""


def _oot_root() -> Path:
    return debian.cache_dir() / "oot"


def _suite(release: str) -> str | None:
    suite = suite_for_release(release)
    if suite and suite == system_suite():  # the system's own suite needs no private apt config
        return None
    return suite


def dkms_source_dir(package: str, suite: str | None = None) -> Path:
    """The source tree of a DKMS package (``usr/src/<name>-<version>/`` in it), fetched and cached."""
    try:
        root, _version = debian.fetch_package(package, suite)
    except DebianError as e:
        raise OotError(str(e)) from e
    trees = sorted(p for p in (root / "usr" / "src").glob("*") if p.is_dir())
    if len(trees) != 1:
        raise OotError(f"{package}: expected one directory under usr/src, found {[p.name for p in trees]}")
    return trees[0]


def lttng_source_dir() -> Path:
    """The unpacked LTTng modules source tree (``.../usr/src/lttng-modules-2.13.9`` on bookworm)."""
    return dkms_source_dir("lttng-modules-dkms")


def _fetch(name: str, suite: str | None) -> Path:
    try:
        return debian.fetch_package(name, suite)[0]
    except DebianError as e:
        raise OotError(str(e)) from e


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory, hard-linking files where the file system allows (the cache is one tree)."""

    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)


def kernel_build_dir(release: str, suite: str | None = None) -> Path:
    """A private root with the kernel's build files; returns its ``usr/src/linux-headers-<release>``.

    ``make -C`` that directory with ``M=<module source>`` builds modules for ``release`` without
    anything installed under ``/usr``. Prepared once per release and reused.
    """
    suite = suite if suite is not None else _suite(release)
    root = _oot_root() / "headers" / release
    arch_dir = root / "usr" / "src" / f"linux-headers-{release}"
    if (root / ".complete").is_file():
        return arch_dir
    arch_pkg = _fetch(f"linux-headers-{release}", suite)
    arch_src = arch_pkg / "usr" / "src" / f"linux-headers-{release}"
    makefile = (arch_src / "Makefile").read_text()
    m = re.search(r"^include\s+/usr/src/(linux-headers-[^/\s]+)/Makefile\s*$", makefile, re.M)
    if not m:
        raise OotError(f"{arch_src}/Makefile does not include a -common headers Makefile: {makefile.strip()!r}")
    common_name = m.group(1)
    common_src = _fetch(common_name, suite) / "usr" / "src" / common_name
    link = os.readlink(common_src / "scripts") if (common_src / "scripts").is_symlink() else ""
    k = re.fullmatch(r"\.\./\.\./lib/(linux-kbuild-[^/]+)/scripts", link)
    if not k:
        raise OotError(f"{common_src}/scripts is not a link to ../../lib/linux-kbuild-X.Y/scripts: {link!r}")
    kbuild_name = k.group(1)
    kbuild_src = _fetch(kbuild_name, suite) / "usr" / "lib" / kbuild_name

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{release}-"))
    try:
        (tmp / "usr" / "src").mkdir(parents=True)
        (tmp / "usr" / "lib").mkdir(parents=True)
        _copy_tree(arch_src, tmp / "usr" / "src" / arch_src.name)
        _copy_tree(common_src, tmp / "usr" / "src" / common_name)
        _copy_tree(kbuild_src, tmp / "usr" / "lib" / kbuild_name)
        mk = tmp / "usr" / "src" / arch_src.name / "Makefile"
        mk.unlink()  # a hard link into the package cache: replace, never write through
        # The path of the final root, not tmp: the directory is renamed into place below.
        mk.write_text(f"include {root}/usr/src/{common_name}/Makefile\n")
        (tmp / ".complete").write_text(json.dumps({"release": release, "common": common_name,
                                                   "kbuild": kbuild_name}) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp made it private; the cache is readable like the packages in it
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / ".complete").is_file():  # lost a race to another process: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return arch_dir


def _entry_key(package: str, version: str, release: str, make_args: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, list(make_args)]).encode()).hexdigest()[:10]
    return f"{package}_{version}_{release}_{digest}"


def read_build(modules_dir: str | os.PathLike) -> OotBuild:
    """The :class:`OotBuild` recorded next to a ``modules/`` directory that :func:`build_dkms_modules` returned."""
    entry = Path(modules_dir).parent
    try:
        m = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise OotError(f"{entry}: not an out-of-tree build entry ({e})") from e
    return OotBuild(m["package"], m["version"], m["release"], m["make_args"], m["patches"], m["modules"],
                    entry / "modules", entry / "build", m["seconds"])


def _apply_patches(package: str, src: Path, common: Path) -> list[str]:
    applied = []
    for p in SOURCE_PATCHES:
        if p.package != package or not p.needed(common):
            continue
        f = src / p.file
        text = f.read_text()
        if text.count(p.old) != 1:
            raise OotError(f"patch {p.name}: {p.file} does not contain the expected text once; "
                           f"the kernel needs it ({p.why})")
        f.write_text(text.replace(p.old, p.new))
        applied.append(p.name)
    return applied


def build_dkms_modules(package: str = "lttng-modules-dkms", release: str = "6.1.0-50-amd64",
                       make_args: Sequence[str] = ("CONFIG_LTTNG=m",), jobs: int = 2,
                       suite: str | None = None) -> Path:
    """Build ``package``'s modules against kernel ``release``; returns the directory of ``.ko`` files.

    The result is cached in ``<cache>/oot/builds/<package>_<version>_<release>_<hash>/`` (``modules/``
    with the ``.ko`` files in the source tree's layout, ``build/`` the built source copy,
    ``build.log``, ``manifest.json``; see :func:`read_build`) and reused by later calls. The
    kernel's compiler (``gcc-12`` for Debian 6.1) must be installed.
    """
    suite = suite if suite is not None else _suite(release)
    source = dkms_source_dir(package, suite)
    version = debian.fetch_package(package, suite)[1]
    builds = _oot_root() / "builds"
    entry = builds / _entry_key(package, version, release, make_args)
    if (entry / "manifest.json").is_file():
        return entry / "modules"

    headers = kernel_build_dir(release, suite)
    common_name = json.loads((headers.parent.parent.parent / ".complete").read_text())["common"]
    common = headers.parent / common_name
    cc = re.search(r"^CC\s*=.*\)gcc(-\d+)?\s*$", (common / "Makefile").read_text(), re.M)
    compiler = f"gcc{cc.group(1) or ''}" if cc else "gcc"
    if shutil.which(compiler) is None:
        raise OotError(f"{release} is built with {compiler}, which is not installed (apt-get install {compiler})")

    builds.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=builds, prefix=f".{entry.name}-"))
    try:
        # Build under tmp and rename the finished entry into place: it becomes visible only
        # when complete. (The .cmd files keep the temporary paths; nothing rebuilds from them.)
        work = tmp / "build"
        shutil.copytree(source, work, symlinks=True)
        patches = _apply_patches(package, work, common)
        cmd = ["make", "-C", str(headers), f"M={work}", *make_args, "modules", f"-j{max(1, jobs)}"]
        t0 = time.perf_counter()
        with open(tmp / "build.log", "w") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "LC_ALL": "C"})
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            lines = (tmp / "build.log").read_text(errors="replace").splitlines()
            errors = [ln for ln in lines if "error:" in ln][:5] or lines[-5:]
            raise OotError(f"building {package} {version} against {release} failed "
                           f"(make exit {done.returncode}):\n  " + "\n  ".join(errors))
        kos = sorted(p.relative_to(work) for p in work.rglob("*.ko"))
        if not kos:
            raise OotError(f"building {package} {version} against {release} produced no .ko files")
        for rel in kos:
            (tmp / "modules" / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(work / rel, tmp / "modules" / rel)
        (tmp / "manifest.json").write_text(json.dumps({
            "package": package, "version": version, "release": release, "make_args": list(make_args),
            "patches": patches, "modules": [str(k) for k in kos], "seconds": round(seconds, 1),
            "command": cmd}, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry / "modules"
