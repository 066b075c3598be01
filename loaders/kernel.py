"""Kernel sources: turn a ``SOURCE`` argument into module files, a Module.symvers and a .config.

A source is one of:

* ``debian:<release>`` — a Debian kernel, fetched with ``apt-get download`` from the suite the
  release names (see :mod:`ksymgraph.loaders.debian`); ``debian:<release>@<suite>`` names the
  suite explicitly;
* a directory: a build tree or ``/lib/modules/<release>`` (every module file below it), with the
  ``Module.symvers`` found in it or in its ``build/`` link, if any;
* a single module file, or a ``Module.symvers`` file on its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from . import debian
from .debnames import DebianError
from .modules import find_module_files, is_module_file
from .records import LoaderError, Skipped

__all__ = ["KernelSource", "resolve_source", "arch_from_release", "is_series", "series_releases"]


class KernelSource(NamedTuple):
    """What one SOURCE argument provides."""

    spec: str
    """The argument as given."""
    module_files: list[str]
    """Module files to read."""
    symvers: Path | None
    """Module.symvers to read, if any."""
    config: Path | None
    """The kernel's .config, if known."""
    release: str
    """Kernel release the source names (``""`` when it does not say)."""
    version: str
    """Package version, ``""`` when unknown."""
    skipped: tuple[Skipped, ...] = ()
    """Directories under it that could not be listed, with the reason; for ``debian:``, a headers
    package the archive no longer has when vmlinux's exports could not be read from vmlinuz either."""
    notes: tuple[str, ...] = ()
    """What the source lacks and how it was made up for, with nothing lost (a kernel without a
    headers package: vmlinux's exports read from its vmlinuz)."""


_RELEASE_DIR = re.compile(r"^\d+\.\d+")


def arch_from_release(release: str) -> str:
    """Debian flavour suffix of a release (``6.1.0-50-amd64`` → ``amd64``), else ``""``."""
    m = re.search(r"-(amd64|arm64|armmp(?:-lpae)?|i386|686(?:-pae)?|ppc64el|s390x|riscv64|loong64)$", release)
    if m:
        return m.group(1)
    m = re.search(r"-(?:cloud|rt)-(amd64|arm64)$", release)
    return m.group(1) if m else ""


def _debian_source(spec: str, symvers: str | Path | None) -> KernelSource:
    """``debian:RELEASE[@SUITE]``: the kernel's packages fetched (or reused) by :mod:`.debian`.

    The release and suite are checked there before anything is made of them; the spec is shown
    quoted in errors when it holds characters that do not print (a newline stays on its line).
    """
    shown = spec if spec.isprintable() else repr(spec)
    release, at, suite = spec[len("debian:"):].partition("@")
    if not release:
        raise LoaderError(shown, "expected debian:RELEASE[@SUITE], e.g. debian:6.1.0-50-amd64 "
                                 "(`ksymgraph kernels --available` lists the releases)")
    if at and not suite:
        raise LoaderError(shown, f"no suite after '@' (known suites: {', '.join(debian.SUITES)})")
    try:
        pk = debian.fetch_kernel(release, suite if at else None)
    except DebianError as e:
        raise LoaderError(shown, str(e)) from e
    # A missing headers package made up for (pk.symvers read from vmlinuz) is a note; one that
    # was not (vmlinux's exports unknown) loses exports, and is a skip.
    unreadable: list[Skipped] = [Skipped(what, why) for what, why in pk.notes if not symvers and pk.symvers is None]
    notes = tuple(f"{what}: {why}" for what, why in pk.notes if not symvers and pk.symvers is not None)
    return KernelSource(spec, find_module_files(pk.modules_dir, unreadable),
                        Path(symvers) if symvers else pk.symvers, pk.config, release, pk.version,
                        tuple(unreadable), notes)


#: What a release pattern of ``debian:PATTERN@SUITE`` may hold: a release's characters and ``*``/``?``.
_PATTERN = re.compile(r"[0-9a-z.+*?-]{1,100}")


def is_series(spec: str) -> bool:
    """True for ``debian:PATTERN[@SUITE]`` whose release part holds ``*`` or ``?`` (a series of kernels)."""
    return spec.startswith("debian:") and any(c in spec.partition("@")[0] for c in "*?")


def series_releases(spec: str) -> list[tuple[str, str]]:
    """(release, suite) of every kernel a series spec names, oldest first.

    ``debian:*@SUITE`` is every kernel the suite carries (all flavours); a pattern narrows it with
    shell wildcards on the release (``debian:6.12.*+deb12-amd64@bookworm-backports``: the plain
    amd64 flavour); without ``@SUITE`` every suite is searched. Raises :class:`LoaderError` for a
    pattern or suite that is not valid, or one that matches nothing.
    """
    import fnmatch

    shown = spec if spec.isprintable() else repr(spec)
    pattern, at, suite = spec[len("debian:"):].partition("@")
    if not _PATTERN.fullmatch(pattern):
        raise LoaderError(shown, "a series is debian:PATTERN[@SUITE], PATTERN made of a release's characters "
                                 "and * or ? (e.g. debian:*@bookworm-backports, debian:6.12.*+deb12-amd64)")
    try:
        kernels = debian.available_kernels(suite if at else None)
    except DebianError as e:
        raise LoaderError(shown, str(e)) from e
    found = [(k.release, k.suite) for k in kernels if fnmatch.fnmatchcase(k.release, pattern)]
    if not found:
        raise LoaderError(shown, f"no kernel {'in ' + suite if at else 'in any suite'} matches {pattern!r} "
                                 "(`ksymgraph kernels --available` lists them)")
    first = {}
    for release, s in found:  # a release in two suites (a backport, then the release) is taken once
        first.setdefault(release, s)
    return list(first.items())


def resolve_source(spec: str, symvers: str | Path | None = None) -> KernelSource:
    """Resolve one SOURCE argument; raises :class:`LoaderError` when it names nothing usable."""
    if spec.startswith("debian:"):
        return _debian_source(spec, symvers)
    path = Path(spec)
    if not path.exists():
        raise LoaderError(spec, "no such file or directory")
    if path.is_file() or (not path.is_dir() and is_module_file(path.name)):  # a FIFO or device too: the
        if path.name.endswith("symvers"):                                    # reader says why it skips it
            return KernelSource(spec, [], path, None, "", "")
        if is_module_file(path.name):
            return KernelSource(spec, [str(path)], Path(symvers) if symvers else None, None, "", "")
        raise LoaderError(spec, "not a module (.ko, .ko.xz, .ko.zst, .ko.gz), a Module.symvers or a directory")
    unreadable: list[Skipped] = []
    files = find_module_files(path, unreadable)
    found = symvers
    if found is None:
        for cand in (path / "Module.symvers", path / "build" / "Module.symvers"):
            if cand.is_file():
                found = cand
                break
    release = path.name if _RELEASE_DIR.match(path.name) and path.parent.name == "modules" else ""
    config = None
    for cand in (path / ".config", path / "build" / ".config"):
        if cand.is_file():
            config = cand
            break
    if not files and found is None:
        raise LoaderError(spec, "no module files and no Module.symvers found in this directory")
    return KernelSource(spec, files, Path(found) if found else None, config, release, "", tuple(unreadable))
