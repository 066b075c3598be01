"""Debian kernel packages: download with ``apt-get download``, unpack into a cache.

A source named ``debian:<release>`` (``debian:6.1.0-50-amd64``, ``debian:6.12.57+deb13-amd64``)
is turned into a directory tree holding ``/lib/modules/<release>``, ``/boot/config-<release>`` and
the headers' ``Module.symvers``. Packages come from the system's configured apt sources; a release
from another suite (``+deb13`` means trixie) is fetched through a private apt configuration in the
cache, built from the system's own mirror URI, which never changes the system's apt state.

The cache lives in ``$KSYMGRAPH_CACHE`` or ``~/.cache/ksymgraph``; an unpacked package is reused,
and unpacking goes to a temporary directory renamed into place, so an interrupted run leaves
nothing half-written.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from ..errors import KsymgraphError

__all__ = [
    "DebianError",
    "KernelPackages",
    "cache_dir",
    "suite_for_release",
    "fetch_package",
    "fetch_kernel",
    "available_releases",
]

#: Debian release numbers in package versions (``+deb13``) and their suite names.
SUITES = {"11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}


class DebianError(KsymgraphError):
    """A package could not be found, downloaded or unpacked."""


class KernelPackages(NamedTuple):
    """The unpacked files of one Debian kernel release."""

    release: str
    """The kernel release string, e.g. ``6.1.0-50-amd64``."""
    version: str
    """The Debian package version, e.g. ``6.1.176-1``."""
    modules_dir: Path
    """``lib/modules/<release>`` (``usr/lib/modules/<release>`` since trixie) in the unpacked image package."""
    symvers: Path | None
    """The headers package's ``Module.symvers``."""
    config: Path | None
    """``boot/config-<release>`` from the image package."""


def cache_dir() -> Path:
    """The cache root: ``$KSYMGRAPH_CACHE`` or ``~/.cache/ksymgraph``."""
    root = os.environ.get("KSYMGRAPH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ksymgraph"
    )
    return Path(root)


def suite_for_release(release: str) -> str | None:
    """The suite a release belongs to when it names one (``+deb13`` → ``trixie``), else None."""
    m = re.search(r"\+deb(\d+)", release)
    return SUITES.get(m.group(1)) if m else None


def _system_mirror() -> tuple[str, str]:
    """(URI, Signed-By keyring) of the system's Debian main archive, read from its apt config."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        if not path.is_file():
            continue
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            uris = fields.get("URIs", "").split()
            if uris and "security" not in uris[0]:
                return uris[0], fields.get("Signed-By", "").strip()
    sources = Path("/etc/apt/sources.list")
    if sources.is_file():
        for line in sources.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                uri = parts[1] if not parts[1].startswith("[") else parts[2]
                return uri, ""
    raise DebianError("no Debian archive URI found in /etc/apt/sources.list{,.d}")


def _private_apt(suite: str) -> list[str]:
    """apt options for a private configuration that reads ``suite``; runs ``apt-get update`` once."""
    root = cache_dir() / "apt" / suite
    lists = root / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (root / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    uri, keyring = _system_mirror()
    signed = f"Signed-By: {keyring}\n" if keyring else ""
    (root / "sources.sources").write_text(
        f"Types: deb\nURIs: {uri}\nSuites: {suite} {suite}-updates\nComponents: main\n{signed}"
    )
    opts = [
        "-o", f"Dir::Etc::sourcelist={root / 'sources.sources'}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache::archives={root / 'archives'}",
        "-o", "APT::Get::List-Cleanup=0",
    ]
    if not any(lists.glob("*Packages*")):
        _run(["apt-get", *opts, "update"], f"apt-get update for suite {suite}")
    return opts


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise DebianError(f"{what}: {cmd[0]} is not installed") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DebianError(f"{what} failed: {' / '.join(tail)}")
    return done.stdout


def _apt_opts(suite: str | None) -> list[str]:
    return _private_apt(suite) if suite else []


def available_releases(pattern: str, suite: str | None = None) -> list[str]:
    """Package names matching ``pattern`` (a regex for apt-cache search), sorted."""
    out = _run(["apt-cache", *_apt_opts(suite), "search", "--names-only", pattern], "apt-cache search")
    return sorted(line.split(" - ", 1)[0] for line in out.splitlines() if line.strip())


def fetch_package(name: str, suite: str | None = None) -> tuple[Path, str]:
    """Download and unpack package ``name``; returns (unpacked directory, package version).

    Reuses the cache when that package is already unpacked there.
    """
    pkgroot = cache_dir() / "debs"
    pkgroot.mkdir(parents=True, exist_ok=True)
    done = sorted(pkgroot.glob(f"{name}_*.unpacked"))
    if done:
        d = done[-1]
        return d, d.name[len(name) + 1 : -len(".unpacked")]
    with tempfile.TemporaryDirectory(dir=pkgroot, prefix=".dl-") as tmp:
        _run(["apt-get", *_apt_opts(suite), "download", name], f"apt-get download {name}", cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise DebianError(f"apt-get download {name} produced no .deb")
        deb = debs[0]
        version = deb.name.split("_")[1].replace("%3a", ":")
        unpack = Path(tmp) / "unpack"
        _run(["dpkg-deb", "-x", str(deb), str(unpack)], f"dpkg-deb -x {deb.name}")
        final = pkgroot / f"{name}_{version}.unpacked"
        os.replace(unpack, final)
    return final, version


def fetch_kernel(release: str, suite: str | None = None) -> KernelPackages:
    """Fetch (or reuse) the image and headers packages of a Debian kernel ``release``."""
    suite = suite or suite_for_release(release)
    if suite and suite == _system_suite():
        suite = None
    image = None
    errors = []
    for name in (f"linux-image-{release}", f"linux-image-{release}-unsigned"):
        try:
            image, version = fetch_package(name, suite)
            break
        except DebianError as e:
            errors.append(str(e))
    if image is None:
        raise DebianError(f"no image package for {release}: {'; '.join(errors)}")
    # Since trixie the image ships its modules under /usr/lib/modules (merged /usr).
    candidates = [image / "lib" / "modules" / release, image / "usr" / "lib" / "modules" / release]
    modules_dir = next((d for d in candidates if d.is_dir()), None)
    if modules_dir is None:
        raise DebianError(f"{image} holds no lib/modules/{release} nor usr/lib/modules/{release}")
    headers, _ = fetch_package(f"linux-headers-{release}", suite)
    symvers = next(iter(sorted(headers.glob("usr/src/*/Module.symvers"))), None)
    config = image / "boot" / f"config-{release}"
    return KernelPackages(release, version, modules_dir, symvers, config if config.is_file() else None)


def _system_suite() -> str | None:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    return m.group(1) if m else None
