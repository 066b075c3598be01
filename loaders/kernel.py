"""Kernel sources: turn a ``SOURCE`` argument into module files, a Module.symvers and a .config.

A source is one of:

* ``debian:<release>`` — a Debian kernel, fetched with ``apt-get download`` (see
  :mod:`ksymgraph.loaders.debian`); ``debian:<release>@<suite>`` names the suite explicitly;
* a directory: a build tree or ``/lib/modules/<release>`` (every module file below it), with the
  ``Module.symvers`` found in it or in its ``build/`` link, if any;
* a single module file, or a ``Module.symvers`` file on its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from . import debian
from .modules import find_module_files, is_module_file
from .records import LoaderError, Skipped

__all__ = ["KernelSource", "resolve_source", "arch_from_release"]


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
    """Directories under it that could not be listed, with the reason."""


_RELEASE_DIR = re.compile(r"^\d+\.\d+")


def arch_from_release(release: str) -> str:
    """Debian flavour suffix of a release (``6.1.0-50-amd64`` → ``amd64``), else ``""``."""
    m = re.search(r"-(amd64|arm64|armmp(?:-lpae)?|i386|686(?:-pae)?|ppc64el|s390x|riscv64|loong64)$", release)
    if m:
        return m.group(1)
    m = re.search(r"-(?:cloud|rt)-(amd64|arm64)$", release)
    return m.group(1) if m else ""


def resolve_source(spec: str, symvers: str | Path | None = None) -> KernelSource:
    """Resolve one SOURCE argument; raises :class:`LoaderError` when it names nothing usable."""
    if spec.startswith("debian:"):
        release, _, suite = spec[len("debian:"):].partition("@")
        if not release:
            raise LoaderError(spec, "expected debian:<release>, e.g. debian:6.1.0-50-amd64")
        try:
            pk = debian.fetch_kernel(release, suite or None)
        except debian.DebianError as e:
            raise LoaderError(spec, str(e)) from e
        unreadable: list[Skipped] = []
        return KernelSource(spec, find_module_files(pk.modules_dir, unreadable),
                            Path(symvers) if symvers else pk.symvers, pk.config, release, pk.version,
                            tuple(unreadable))
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
