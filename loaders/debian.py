"""Debian kernel packages: which kernels the archive carries, and fetching one into a cache.

A source named ``debian:<release>[@<suite>]`` (``debian:6.1.0-50-amd64``,
``debian:7.2.13+deb14-amd64``) becomes the unpacked files of that kernel: its modules, its
``.config``, the headers' ``Module.symvers`` and, where needed, its ``vmlinuz``. The suite is
inferred from the release when it is not named (:func:`suites_for_release`): ``5.10.0-NN`` is
bullseye, ``6.1.0-NN`` bookworm, ``+debNN`` the suites of Debian NN (its release suite with
``-updates`` and ``-security``, then its backports, and sid for the release in development).

Suites and their kernels
    Each suite named here is read through a private apt configuration in the cache
    (``apt/<suite>/``: its own sources, lists, status and preferences), built from the system's
    mirror URIs, which never changes the system's apt state. A release suite brings its
    companions along where the mirror has them (``bookworm`` reads ``bookworm``,
    ``bookworm-updates`` and ``bookworm-security``); a companion without a Release file (sid has
    no ``-updates``) is left out, found from apt's own error, not guessed. What a suite carries is
    :func:`available_kernels`: one :class:`AvailableKernel` per release, with the packages that
    hold its files. Two layouts exist:

    * up to 7.1, ``linux-image-<release>`` holds the modules (``[usr/]lib/modules/<release>``),
      ``boot/config-<release>`` and ``boot/vmlinuz-<release>``;
    * from 7.2 (forky, sid, trixie-backports) ``linux-image-<release>`` is a 15 kB metapackage:
      the modules are in ``linux-modules-<release>``, the kernel in ``linux-binary-<release>``
      (``usr/lib/modules/<release>/vmlinuz``), the config and System.map in
      ``linux-base-<release>``.

    Either way ``linux-headers-<release>`` holds ``Module.symvers`` and ``.config``, when the
    archive still has it (bookworm-backports keeps only its newest one). Without it, vmlinux's
    exports are read from ``vmlinuz`` (:mod:`ksymgraph.loaders.vmlinux`) into a Module.symvers
    kept in the cache (``vmlinux/<release>_<version>/``), and the kernel says so in its notes.

User text stays data
    A release and a suite are checked against Debian's own character sets before anything is made
    of them (:func:`validate_release`, :func:`validate_suite`): a release is a package-name tail
    (``[0-9][a-z0-9.+-]*``, so never a path, an option or a second line), and a suite must be one
    this module knows (:data:`SUITES`); only known names reach an apt sources file.

The cache
    ``$KSYMGRAPH_CACHE`` or ``~/.cache/ksymgraph``, shared by every process on the machine. A
    package is downloaded and unpacked into a temporary directory next to its final place, checked
    (a modules package must hold module files: a metapackage is never taken for the kernel), and
    renamed into place; an interrupted run leaves only a temporary directory, removed by the next
    run. A lock per package (``flock``) makes a second process wait for the first and then reuse
    its result; a lock per suite does the same for ``apt-get update``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from ..errors import KsymgraphError

__all__ = [
    "DebianError",
    "MissingSuiteError",
    "CODENAMES",
    "SUITES",
    "LISTS_MAX_AGE",
    "KernelPackage",
    "AvailableKernel",
    "KernelPackages",
    "cache_dir",
    "validate_release",
    "validate_suite",
    "debian_version_key",
    "release_flavour",
    "suite_for_release",
    "suites_for_release",
    "SuiteIndex",
    "index_from_apt",
    "available_kernels",
    "suite_kernels",
    "find_kernel",
    "closest_kernels",
    "fetch_package",
    "fetch_kernel",
    "available_releases",
]

#: Debian release numbers and their codenames (``+deb13`` in a release means trixie).
CODENAMES = {11: "bullseye", 12: "bookworm", 13: "trixie", 14: "forky"}
#: The development suite: it carries the kernels of the newest codename too.
DEVELOPMENT = "sid"
#: Every suite a ``debian:`` source may name, oldest first. A release suite reads its ``-updates``
#: and ``-security`` companions too; backports and sid stand alone.
SUITES: tuple[str, ...] = tuple(
    s for n in sorted(CODENAMES) for s in (CODENAMES[n], f"{CODENAMES[n]}-backports")) + (DEVELOPMENT,)
#: Names accepted for a suite of :data:`SUITES`.
ALIASES = {"unstable": DEVELOPMENT, **{f"{c}-{k}": c for c in CODENAMES.values() for k in ("updates", "security")}}
#: Kernel series whose Debian releases carry no ``+debNN`` (``5.10.0-32-amd64``): their suite.
SERIES_SUITES = {"5.10": "bullseye", "6.1": "bookworm"}
#: Seconds after which a suite's package lists are read again from the mirror.
LISTS_MAX_AGE = 24 * 3600

# Debian policy 5.6.1: package names are [a-z0-9][a-z0-9+.-]+. A release is what follows
# "linux-image-", so it starts with the kernel's version number.
_RELEASE_CHARS = re.compile(r"[0-9][a-z0-9.+-]{0,99}")
# A Debian kernel release: version, Debian ABI, flavour (which has a letter: "686-pae", "amd64").
_RELEASE_SHAPE = re.compile(
    r"(?P<version>\d+\.\d+(?:\.\d+)?(?:-\d+(?:\.deb\d+\.\d+)?|\+deb\d+(?:\.\d+)?)?)"
    r"-(?P<flavour>(?=[a-z0-9-]*[a-z])[a-z0-9]+(?:-[a-z0-9]+)*)")
# A listed release has an ABI: three version numbers and an ABI ("6.1-amd64" is a metapackage).
_ABI_RELEASE = re.compile(r"\d+\.\d+\.\d+(?:-\d+(?:\.deb\d+\.\d+)?|\+deb\d+(?:\.\d+)?)-[a-z0-9-]+")
_NOT_A_KERNEL = ("-unsigned", "-dbg", "-signed-template", "-common", "-common-rt")
# Suite names (Debian's archive: codenames, "-" and a word): checked before the known list.
_SUITE_CHARS = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# Debian policy 5.6.12: [epoch:]upstream[-revision], upstream starting with a digit.
_VERSION_CHARS = re.compile(r"(?:\d+:)?[0-9][A-Za-z0-9.+~:-]*")
_PACKAGE_CHARS = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_NO_RELEASE_FILE = re.compile(r"^E: The repository '(\S+) (\S+) Release' does not have a Release file\.$")


class DebianError(KsymgraphError):
    """A package or kernel could not be found, downloaded or unpacked, or a name is not valid."""


class MissingSuiteError(DebianError):
    """The mirror has no Release file for a suite (it does not carry it, or no longer)."""


class KernelPackage(NamedTuple):
    """One package of a Debian kernel, as the archive lists it."""

    name: str
    """The package name, e.g. ``linux-modules-7.2.13+deb14-amd64``."""
    version: str
    """Its version, e.g. ``7.2.13-1``."""
    holds: tuple[str, ...]
    """What it holds of the kernel: ``modules``, ``config``, ``kernel`` (vmlinuz), ``headers`` (Module.symvers)."""
    size: int
    """Download size in bytes (the archive's ``Size``)."""


class AvailableKernel(NamedTuple):
    """A kernel the archive carries: what ``debian:RELEASE@SUITE`` fetches."""

    release: str
    """The kernel release, e.g. ``6.1.0-50-amd64``."""
    suite: str
    """The suite to name after ``@`` (one of :data:`SUITES`)."""
    version: str
    """The package version, e.g. ``6.1.176-1``."""
    archive: str
    """The archive suites it is in, comma-separated (``bookworm,bookworm-security``)."""
    packages: tuple[KernelPackage, ...]
    """The packages holding its files (modules first)."""

    @property
    def headers(self) -> bool:
        """True when a headers package (so a Module.symvers) exists."""
        return any("headers" in p.holds for p in self.packages)

    def package(self, holds: str) -> KernelPackage | None:
        """The first package holding ``holds`` (``modules``, ``config``, ``kernel``, ``headers``)."""
        return next((p for p in self.packages if holds in p.holds), None)


class KernelPackages(NamedTuple):
    """The unpacked files of one Debian kernel release."""

    release: str
    """The kernel release string, e.g. ``6.1.0-50-amd64``."""
    version: str
    """The Debian package version, e.g. ``6.1.176-1``."""
    modules_dir: Path
    """``[usr/]lib/modules/<release>`` in the unpacked package that holds the modules."""
    symvers: Path | None
    """The headers package's ``Module.symvers``; None when the archive has no headers package."""
    config: Path | None
    """The kernel's config: ``boot/config-<release>`` (image), ``usr/lib/modules/<release>/config``
    (``linux-base``, 7.2 on) or the headers' ``.config``."""
    suite: str = ""
    """The suite it was fetched from."""
    packages: tuple[str, ...] = ()
    """The packages fetched, ``name=version``."""
    vmlinuz: Path | None = None
    """The compressed kernel image, when fetched (always with the image layout)."""
    notes: tuple[tuple[str, str], ...] = ()
    """(what, why) for what the archive lacks and how it was made up for: without a headers
    package, vmlinux's exports are read from vmlinuz into a Module.symvers in the cache."""


def cache_dir() -> Path:
    """The cache root: ``$KSYMGRAPH_CACHE`` or ``~/.cache/ksymgraph``."""
    root = os.environ.get("KSYMGRAPH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ksymgraph"
    )
    return Path(root)


# Names -------------------------------------------------------------------------------------------

def _shown(text: str) -> str:
    """User text as it may appear inside an error message: on one line, quoted."""
    return repr(text)


def validate_release(release: str) -> str:
    """``release`` when it is a Debian kernel release; else :class:`DebianError` saying why, on one line."""
    if not isinstance(release, str) or not _RELEASE_CHARS.fullmatch(release):
        raise DebianError(f"invalid release {_shown(release)}: a Debian kernel release is a package-name tail "
                          "([0-9][a-z0-9.+-]*, at most 100 characters), e.g. 6.1.0-50-amd64")
    if not _RELEASE_SHAPE.fullmatch(release):
        raise DebianError(f"invalid release {_shown(release)}: expected VERSION[-ABI]-FLAVOUR, e.g. "
                          "6.1.0-50-amd64, 6.12.57+deb13-cloud-amd64 or 7.2.13+deb14-rt-amd64")
    return release


def validate_suite(suite: str) -> str:
    """The suite of :data:`SUITES` that ``suite`` names (``unstable`` → ``sid``, ``bookworm-security``
    → ``bookworm``, which reads it); else :class:`DebianError` listing the known suites."""
    if not isinstance(suite, str) or len(suite) > 40 or not _SUITE_CHARS.fullmatch(suite):
        raise DebianError(f"invalid suite {_shown(suite)}: a suite is a Debian codename such as bookworm "
                          f"([a-z][a-z0-9-]*); known suites: {', '.join(SUITES)}")
    suite = ALIASES.get(suite, suite)
    if suite not in SUITES:
        raise DebianError(f"unknown suite {_shown(suite)}: known suites: {', '.join(SUITES)}")
    return suite


def _check_package_name(name: str) -> str:
    if not _PACKAGE_CHARS.fullmatch(name) or len(name) > 200:
        raise DebianError(f"invalid package name {_shown(name)}: Debian package names are [a-z0-9][a-z0-9+.-]+")
    return name


def _check_version(version: str, what: str) -> str:
    if not _VERSION_CHARS.fullmatch(version) or len(version) > 100:
        raise DebianError(f"{what}: apt gave a version that is not a Debian version: {_shown(version)}")
    return version


def release_flavour(release: str) -> str:
    """The flavour of a Debian kernel release (``6.1.0-50-cloud-amd64`` → ``cloud-amd64``), ``""`` if none."""
    m = _RELEASE_SHAPE.fullmatch(release)
    return m.group("flavour") if m else ""


# Debian version order ----------------------------------------------------------------------------

def _char_order(c: str) -> int:
    # dpkg lib/dpkg/version.c order(): '~' before the end, the end before letters, letters before
    # everything else.
    if c == "~":
        return -1
    if "a" <= c.lower() <= "z":
        return ord(c)
    return ord(c) + 256


_END = ((0,), 0)


def _verrev_key(s: str) -> tuple:
    """A sort key for one part (upstream or revision) that orders as dpkg's verrevcmp() does.

    The part is read as (non-digits, number) pairs; the first pair is always there (``""`` and
    ``"0"`` both give ``((0,), 0)``, as dpkg finds them equal), the others start with a
    non-digit, and the key ends in ``_END``, which compares with a pair as the end of a string
    does in dpkg.
    """
    pairs = []
    for i, (lex, num) in enumerate(re.findall(r"(\D*)(\d*)", s)):
        if i and not lex and not num:
            continue
        pairs.append((tuple(_char_order(c) for c in lex) + (0,), int(num) if num else 0))
    return tuple(pairs) + (_END,)


def debian_version_key(text: str) -> tuple:
    """A sort key ordering Debian versions as ``dpkg --compare-versions`` does, and kernel releases
    by their Debian version then flavour.

    ``6.1.176-1 < 6.1.176-1+deb12u1``, ``6.12.90-1~bpo12+1 < 6.12.90-1``; releases:
    ``6.1.0-47-amd64 < 6.1.0-50-amd64``, ``6.12.43+deb12-amd64 < 6.12.57+deb12-amd64 <
    6.12.90+deb12-amd64 < 6.12.90+deb12.1-amd64``. A release is read as the Debian version
    ``VERSION[-ABI]`` (``6.1.0-50``: upstream ``6.1.0``, revision ``50``) with its flavour last.
    """
    flavour = ""
    m = _RELEASE_SHAPE.fullmatch(text) if _ABI_RELEASE.fullmatch(text) else None  # "0.0-b" is a version
    if m:
        text, flavour = m.group("version"), m.group("flavour")
    epoch = 0
    e = re.match(r"(\d+):", text)
    if e:
        epoch, text = int(e.group(1)), text[e.end():]
    upstream, sep, revision = text.rpartition("-")
    if not sep:
        upstream, revision = revision, ""
    return (epoch, _verrev_key(upstream), _verrev_key(revision), flavour)


# Suites ------------------------------------------------------------------------------------------

def suites_for_release(release: str) -> list[str]:
    """The suites a release may come from, most likely first; ``[]`` when the release does not say.

    ``+debNN`` and ``-0.debNN.M`` (a backport to Debian NN in its security suite) name Debian NN:
    its release suite (with ``-updates`` and ``-security``), its backports, and sid for the
    codename in development. ``5.10.0-NN`` is bullseye's and ``6.1.0-NN`` bookworm's.
    """
    m = re.search(r"\+deb(\d+)\b", release) or re.search(r"-0\.deb(\d+)\.\d+-", release)
    if m:
        code = CODENAMES.get(int(m.group(1)))
        if code is None:
            return []
        out = [code, f"{code}-backports"]
        if int(m.group(1)) == max(CODENAMES):
            out.append(DEVELOPMENT)
        return [s for s in out if s in SUITES]
    m = re.match(r"(\d+\.\d+)\.0-\d+-", release)
    if m and m.group(1) in SERIES_SUITES:
        return [SERIES_SUITES[m.group(1)]]
    return []


def suite_for_release(release: str) -> str | None:
    """The most likely suite of a release (the first of :func:`suites_for_release`), else None.

    Without a look-up in the archive: :func:`find_kernel` says where a release really is.
    """
    suites = suites_for_release(release)
    return suites[0] if suites else None


def _system_suite() -> str | None:
    """The system's own codename (``VERSION_CODENAME`` of /etc/os-release); loaders/oot.py reads
    that suite's packages through the system's apt sources."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    return m.group(1) if m else None


def _system_mirror() -> tuple[str, str, str]:
    """(archive URI, security archive URI, Signed-By keyring) read from the system's apt sources."""
    main = security = keyring = ""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        if not path.is_file():
            continue
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#"))
            uris = fields.get("URIs", "").split()
            if not uris:
                continue
            if "security" in uris[0]:
                security = security or uris[0]
            else:
                main = main or uris[0]
                keyring = keyring or fields.get("Signed-By", "").strip()
    sources = Path("/etc/apt/sources.list")
    if not main and sources.is_file():
        for line in sources.read_text(errors="replace").splitlines():
            parts = [p for p in line.split() if not p.startswith("[")]
            if len(parts) >= 3 and parts[0] == "deb":
                if "security" in parts[1]:
                    security = security or parts[1]
                else:
                    main = main or parts[1]
    if not main:
        raise DebianError("no Debian archive URI in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources: "
                          "add the Debian mirror there (e.g. http://deb.debian.org/debian)")
    main = main.rstrip("/")
    security = (security or (main + "-security" if main.endswith("/debian") else "")).rstrip("/")
    for uri in (main, security):
        if uri and not re.fullmatch(r"(?:https?|file)://[^\s'\"]+", uri):
            raise DebianError(f"the system's apt sources name a mirror URI this cannot use: {_shown(uri)}")
    if keyring and not re.fullmatch(r"/[^\s]+", keyring):
        keyring = ""  # an inline key block: let apt use its trusted keys instead
    return main, security, keyring


def _companions(suite: str) -> list[tuple[str, str]]:
    """(archive, suite) pairs a suite reads: ``main``/``security`` archive, suite name."""
    if suite in CODENAMES.values():
        return [("main", suite), ("main", f"{suite}-updates"), ("security", f"{suite}-security")]
    return [("main", suite)]


@contextlib.contextmanager
def _locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (made if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _run(cmd: list[str], what: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise DebianError(f"{what}: {cmd[0]} is not installed (apt-get install apt dpkg)") from e
    if check and done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.startswith("E:")]
        tail = tail or (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DebianError(f"{what} failed: {' / '.join(tail[-3:])}")
    return done


class _Apt:
    """The private apt configuration of one suite in the cache."""

    def __init__(self, suite: str):
        self.suite = suite
        self.root = cache_dir() / "apt" / suite
        self.lock = self.root / "lock"
        self.stamp = self.root / "updated.json"

    def options(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::sourcelist={r / 'sources.sources'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::Etc::preferences={r / 'preferences'}",
            "-o", f"Dir::Etc::preferencesparts={r / 'preferences.d'}",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::State::status={r / 'status'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
            "-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
            "-o", "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false",
        ]

    def _stamp(self) -> dict | None:
        try:
            data = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "time" in data else None

    def updated(self) -> float:
        """When the lists were last read from the mirror (0 when never)."""
        s = self._stamp()
        return float(s["time"]) if s else 0.0

    def ensure(self, force: bool = False) -> None:
        """Read the lists from the mirror unless fresh (:data:`LISTS_MAX_AGE`), one process at a time."""
        if force or time.time() - self.updated() >= LISTS_MAX_AGE:
            before = self.updated()
            with _locked(self.lock):
                if force or self.updated() == before or time.time() - self.updated() >= LISTS_MAX_AGE:
                    self._update(had_lists=before > 0)  # unless another process did while this one waited
        stamp = self._stamp()
        if stamp and stamp.get("missing"):
            raise MissingSuiteError(f"suite {self.suite}: the mirror has no Release file for it "
                                    f"({stamp['missing']}); it may have moved to archive.debian.org")

    def _sources(self, pairs: list[tuple[str, str]]) -> str:
        main, security, keyring = _system_mirror()
        uris = {"main": main, "security": security}
        stanzas = []
        for archive in ("main", "security"):
            suites = [s for a, s in pairs if a == archive]
            if not suites or not uris[archive]:
                continue
            stanza = f"Types: deb\nURIs: {uris[archive]}\nSuites: {' '.join(suites)}\nComponents: main\n"
            if keyring:
                stanza += f"Signed-By: {keyring}\n"
            stanzas.append(stanza)
        return "\n".join(stanzas)

    def _update(self, had_lists: bool) -> None:
        # Readers (apt-cache, apt-get download) hold this lock shared: they see the lists and the
        # sources of one update, whole.
        with _locked(self.lock.with_suffix(".read")):
            self._update_locked(had_lists)

    def _update_locked(self, had_lists: bool) -> None:
        r = self.root
        for d in (r / "lists" / "partial", r / "cache" / "archives" / "partial", r / "preferences.d"):
            d.mkdir(parents=True, exist_ok=True)
        (r / "status").touch()
        pairs = _companions(self.suite)
        _write_atomic(r / "sources.sources", self._sources(pairs))
        done = _run(["apt-get", *self.options(), "-q", "update"], f"apt-get update for suite {self.suite}",
                    check=False)
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        missing = set()
        for line in errors:
            m = _NO_RELEASE_FILE.match(line)
            if m:
                missing.add(m.group(2))
        others = [line for line in errors if not _NO_RELEASE_FILE.match(line)]
        if self.suite in missing:  # remembered for LISTS_MAX_AGE, as lists would be
            _write_atomic(self.stamp, json.dumps({"time": time.time(), "suites": [],
                                                  "missing": f"apt-get update: {errors[0][:200]}"}))
            return
        if done.returncode != 0 and (others or not missing):
            if had_lists:
                return  # offline or a passing mirror fault: keep reading the lists of the last update
            raise DebianError(f"apt-get update for suite {self.suite} failed: "
                              f"{' / '.join(others or done.stderr.strip().splitlines()[-3:])}")
        kept = [(a, s) for a, s in pairs if s not in missing]
        _write_atomic(r / "sources.sources", self._sources(kept))
        _write_atomic(self.stamp, json.dumps({"time": time.time(), "suites": [s for _a, s in kept],
                                              "absent": sorted(missing)}))

    def run(self, args: list[str], what: str, cwd: Path | None = None, check: bool = True):
        """Run ``apt-get``/``apt-cache`` (``args[0]``) with this configuration; the caller has
        called :meth:`ensure` (not here: it holds the read lock, which an update takes exclusive)."""
        return _run([args[0], *self.options(), *args[1:]], what, cwd=cwd, check=check)


def _apt_opts(suite: str | None) -> list[str]:
    if suite is None:
        return []
    apt = _Apt(validate_suite(suite))
    apt.ensure()
    return apt.options()


# What a suite carries ----------------------------------------------------------------------------

def _parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Fields of each stanza of ``apt-cache show`` output (continuation lines joined)."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def _dependency_names(field: str) -> set[str]:
    return {alt.split()[0] for dep in field.split(",") for alt in dep.split("|") if alt.split()}


def _parse_madison(text: str) -> dict[str, list[str]]:
    """``{package: [archive suite, ...]}`` from ``apt-cache madison`` output."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3:
            where = cols[2].split()
            suite = where[1].split("/")[0] if len(where) >= 2 else ""
            if suite and suite not in out.setdefault(cols[0], []):
                out[cols[0]].append(suite)
    return out


class SuiteIndex(NamedTuple):
    """What one suite carries: the kernels that can be fetched, and the ones that cannot (why)."""

    kernels: dict[str, AvailableKernel]
    """Release → kernel."""
    unfetchable: dict[str, str]
    """Release → why it cannot be fetched (a metapackage whose modules package is gone)."""


def index_from_apt(suite: str, names: list[str], shown: str, madison: str) -> SuiteIndex:
    """Build a suite's index from the package names (``apt-cache pkgnames linux-``), ``apt-cache show``
    of its kernel packages and ``apt-cache madison`` of its images. Pure: no apt call."""
    have = set(names)
    fields = {f["Package"]: f for f in _parse_stanzas(shown)}
    where = _parse_madison(madison)
    kernels: dict[str, AvailableKernel] = {}
    unfetchable: dict[str, str] = {}

    def pkg(name: str, holds: tuple[str, ...]) -> KernelPackage | None:
        f = fields.get(name)
        if f is None or "Version" not in f:
            return None
        size = int(f["Size"]) if f.get("Size", "").isdigit() else 0
        return KernelPackage(name, _check_version(f["Version"], name), holds, size)

    releases = {n[len("linux-image-"):].removesuffix("-unsigned") for n in have if n.startswith("linux-image-")}
    for release in sorted(releases, key=debian_version_key):
        if release.endswith(_NOT_A_KERNEL) or not _ABI_RELEASE.fullmatch(release):
            continue
        image_name = f"linux-image-{release}"
        if image_name not in fields and f"{image_name}-unsigned" in fields:
            image_name += "-unsigned"
        f = fields.get(image_name)
        if f is None:
            continue
        depends = _dependency_names(f.get("Depends", "") + "," + f.get("Pre-Depends", ""))
        modules_name = f"linux-modules-{release}"
        packages: list[KernelPackage | None]
        if modules_name in depends:  # 7.2 on: the image is a metapackage
            if modules_name not in have:
                unfetchable[release] = (f"{image_name} is a metapackage and its {modules_name} is no longer "
                                        f"in {suite}")
                continue
            packages = [pkg(modules_name, ("modules",)), pkg(f"linux-base-{release}", ("config",)),
                        pkg(f"linux-headers-{release}", ("headers", "config")),
                        pkg(f"linux-binary-{release}", ("kernel",))]
        else:
            packages = [pkg(image_name, ("modules", "config", "kernel")),
                        pkg(f"linux-headers-{release}", ("headers", "config"))]
        found = tuple(p for p in packages if p is not None)
        if not found or "modules" not in found[0].holds:
            unfetchable[release] = f"apt lists no version of the package holding {release}'s modules"
            continue
        archive = ",".join(where.get(image_name, [])) or suite
        kernels[release] = AvailableKernel(release, suite, found[0].version, archive, found)
    return SuiteIndex(kernels, unfetchable)


_INDEX_VERSION = 1
_indexes: dict[str, tuple[float, SuiteIndex]] = {}


def _suite_index(suite: str) -> SuiteIndex:
    """The index of a suite: from memory, from ``apt/<suite>/kernels.json``, or built with apt."""
    apt = _Apt(suite)
    apt.ensure()
    stamp = apt.updated()
    hit = _indexes.get(suite)
    if hit and hit[0] == stamp:
        return hit[1]
    path = apt.root / "kernels.json"
    try:
        data = json.loads(path.read_text())
        if data.get("stamp") == stamp and data.get("format") == _INDEX_VERSION:
            index = SuiteIndex(
                {k[0]: AvailableKernel(*k[:4], tuple(KernelPackage(p[0], p[1], tuple(p[2]), p[3]) for p in k[4]))
                 for k in data["kernels"]}, dict(data["unfetchable"]))
            _indexes[suite] = (stamp, index)
            return index
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    with _locked(apt.lock.with_suffix(".read"), shared=True):
        names = apt.run(["apt-cache", "pkgnames", "linux-"], f"apt-cache pkgnames for suite {suite}").stdout.split()
        names = [n for n in names if _PACKAGE_CHARS.fullmatch(n)]
        wanted = [n for n in names if n.startswith(("linux-image-", "linux-modules-", "linux-base-", "linux-binary-",
                                                    "linux-headers-"))
                  and not n.endswith(("-dbg", "-common", "-common-rt", "-signed-template"))]
        shown = apt.run(["apt-cache", "show", "--no-all-versions", "--", *wanted],
                        f"apt-cache show for suite {suite}").stdout if wanted else ""
        images = [n for n in wanted if n.startswith("linux-image-")]
        madison = apt.run(["apt-cache", "madison", "--", *images],
                          f"apt-cache madison for suite {suite}").stdout if images else ""
    index = index_from_apt(suite, names, shown, madison)
    data = {"format": _INDEX_VERSION, "stamp": stamp, "unfetchable": index.unfetchable,
            "kernels": [[k.release, k.suite, k.version, k.archive, [list(p) for p in k.packages]]
                        for k in index.kernels.values()]}
    with contextlib.suppress(OSError):
        _write_atomic(path, json.dumps(data))
    _indexes[suite] = (stamp, index)
    return index


def suite_kernels(suite: str) -> list[AvailableKernel]:
    """Every kernel of one suite (of :data:`SUITES`, aliases allowed) that can be fetched, oldest first.

    This is what ``debian:*@SUITE`` means. Raises :class:`DebianError` when the mirror does not
    have the suite or apt cannot read it.
    """
    suite = validate_suite(suite)
    return sorted(_suite_index(suite).kernels.values(), key=lambda k: debian_version_key(k.release))


def available_kernels(suite: str | None = None) -> list[AvailableKernel]:
    """Every kernel that can be fetched from ``suite``, or from every suite of :data:`SUITES` that
    the mirror has (a suite it lacks, such as bullseye-backports, is left out), oldest first."""
    if suite is not None:
        return suite_kernels(suite)
    out: list[AvailableKernel] = []
    for s in SUITES:
        try:
            out.extend(_suite_index(s).kernels.values())
        except MissingSuiteError:
            continue
    return sorted(out, key=lambda k: (debian_version_key(k.release), SUITES.index(k.suite)))


def _version_numbers(release: str) -> list[int]:
    m = _RELEASE_SHAPE.fullmatch(release)
    return [int(n) for n in re.findall(r"\d+", m.group("version") if m else release)]


def closest_kernels(release: str, kernels: list[AvailableKernel]) -> list[AvailableKernel]:
    """``kernels`` ordered by closeness to ``release``: same flavour first, then by the distance of
    each version number in turn (major, minor, patch, ABI), then by name."""
    want = _version_numbers(release)
    flavour = release_flavour(release)

    def key(k: AvailableKernel):
        distance = tuple(abs(a - b) for a, b in zip_longest(want, _version_numbers(k.release), fillvalue=0))
        return (release_flavour(k.release) != flavour, distance, k.release, k.suite)

    return sorted(kernels, key=key)


def find_kernel(release: str, suite: str | None = None) -> AvailableKernel:
    """Where ``release`` can be fetched: in ``suite``, or (none given) in the suites the release
    names (:func:`suites_for_release`), else in any suite.

    Raises :class:`DebianError`, on one line: for a name that is not valid; for a release found in
    another suite than the one given (naming the suite to give instead); for a release nowhere
    (listing the closest releases that exist, closest first).
    """
    release = validate_release(release)
    given = validate_suite(suite) if suite is not None else None
    tried = [given] if given else suites_for_release(release)
    reasons = []
    for s in tried:
        try:
            index = _suite_index(s)
        except MissingSuiteError:
            if s == given:
                raise
            continue
        if release in index.kernels:
            return index.kernels[release]
        if release in index.unfetchable:
            reasons.append(index.unfetchable[release])
    others = [s for s in SUITES if s not in tried]
    for s in others:
        try:
            index = _suite_index(s)
        except MissingSuiteError:
            continue
        if release in index.kernels:
            if given is None:
                return index.kernels[release]
            k = index.kernels[release]
            raise DebianError(f"kernel {release} is not in {given}; it is in {k.suite} ({k.archive}): "
                              f"use debian:{release}@{k.suite}")
        if release in index.unfetchable:
            reasons.append(index.unfetchable[release])
    if reasons:
        raise DebianError(f"kernel {release} cannot be fetched: {'; '.join(reasons)}")
    pool = available_kernels()
    near = closest_kernels(release, [k for k in pool if k.suite in tried] or pool)
    listed = ", ".join(f"{k.release} ({k.suite})" for k in near[:8])
    more = f" and {len(near) - 8} more" if len(near) > 8 else ""
    where = f"{' or '.join(tried)}, nor in any other suite" if tried else f"any suite ({', '.join(SUITES)})"
    raise DebianError(f"no Debian kernel {release} in {where}; available, closest first: {listed}{more} "
                      "(`ksymgraph kernels --available` lists them all)")


def available_releases(pattern: str, suite: str | None = None) -> list[str]:
    """Package names matching ``pattern`` (a regex for ``apt-cache search --names-only``), sorted.

    ``suite`` None reads the system's apt sources.
    """
    out = _run(["apt-cache", *_apt_opts(suite), "search", "--names-only", "--", pattern], "apt-cache search").stdout
    return sorted(line.split(" - ", 1)[0] for line in out.splitlines() if line.strip())


# Fetching ----------------------------------------------------------------------------------------

def _remove_tree(path: Path) -> None:
    """Remove a directory: renamed aside first, so no reader sees it half removed."""
    aside = path.with_name(f".old-{path.name}-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.replace(path, aside)
        shutil.rmtree(aside, ignore_errors=True)


def fetch_package(name: str, suite: str | None = None, version: str | None = None,
                  check: Callable[[Path], str | None] | None = None) -> tuple[Path, str]:
    """Download and unpack package ``name``; returns (unpacked directory, package version).

    ``suite`` None reads the system's apt sources; else the suite's private configuration.
    With ``version`` exactly that version is fetched and reused; without, any unpacked version in
    the cache is reused. ``check(unpacked)`` returns why an unpacked package is not what it should
    be (None when it is): such a package is neither cached nor returned, and one already cached
    that fails it is fetched again. Concurrent calls for one package wait for each other and
    share the result.
    """
    name = _check_package_name(name)
    if version is not None:
        _check_version(version, name)
    apt = _Apt(validate_suite(suite)) if suite is not None else None
    pkgroot = cache_dir() / "debs"
    pkgroot.mkdir(parents=True, exist_ok=True)
    with _locked(pkgroot / ".locks" / f"{name}.lock"):
        for stale in pkgroot.glob(f".dl-{name}_*"):  # left by an interrupted run (only the lock holder makes them)
            shutil.rmtree(stale, ignore_errors=True)
        if version is not None:
            cached = [pkgroot / f"{name}_{version}.unpacked"]
        else:
            cached = sorted(pkgroot.glob(f"{name}_*.unpacked"), key=lambda p: debian_version_key(p.name[len(name) + 1:-9]))
        for d in reversed(cached):
            if not d.is_dir():
                continue
            why = check(d) if check else None
            if why is None:
                return d, d.name[len(name) + 1: -len(".unpacked")]
            _remove_tree(d)  # a bad unpack of an earlier version of this code: fetch it again
        try:
            return _download_unpack(name, version, apt, pkgroot, check)
        except DebianError as e:
            if apt is None or "404" not in str(e):
                raise
            apt.ensure(force=True)  # the lists are older than the archive: read them again, once
            return _download_unpack(name, version, apt, pkgroot, check)


def _download_unpack(name: str, version: str | None, apt: _Apt | None, pkgroot: Path,
                     check: Callable[[Path], str | None] | None) -> tuple[Path, str]:
    target = f"{name}={version}" if version else name
    with tempfile.TemporaryDirectory(dir=pkgroot, prefix=f".dl-{name}_") as tmp:
        what = f"apt-get download {target}" + (f" from {apt.suite}" if apt else "")
        if apt is None:
            _run(["apt-get", "download", "--", target], what, cwd=Path(tmp))
        else:
            apt.ensure()
            with _locked(apt.lock.with_suffix(".read"), shared=True):
                apt.run(["apt-get", "download", "--", target], what, cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise DebianError(f"{what} produced {len(debs)} .deb files, expected one")
        deb = debs[0]
        got = _check_version(deb.name.split("_")[1].replace("%3a", ":"), name)
        if version is not None and got != version:
            raise DebianError(f"{what} gave version {got}")
        unpack = Path(tmp) / "unpack"
        _run(["dpkg-deb", "-x", str(deb), str(unpack)], f"dpkg-deb -x {deb.name}")
        why = check(unpack) if check else None
        if why is not None:
            raise DebianError(f"{name} {got} ({deb.stat().st_size} bytes): {why}; nothing was cached")
        final = pkgroot / f"{name}_{got}.unpacked"
        if final.exists():
            _remove_tree(final)
        os.replace(unpack, final)
    return final, got


def _release_dir(root: Path, release: str) -> Path | None:
    """``[usr/]lib/modules/<release>`` in an unpacked package, if there."""
    return next((d for d in (root / "usr" / "lib" / "modules" / release, root / "lib" / "modules" / release)
                 if d.is_dir()), None)


def _holds_modules(release: str) -> Callable[[Path], str | None]:
    def check(root: Path) -> str | None:
        d = _release_dir(root, release)
        if d is None:
            return f"holds no lib/modules/{release} nor usr/lib/modules/{release}"
        kernel = d / "kernel"
        for _dirpath, _dirs, files in os.walk(kernel):
            if any(f.endswith((".ko", ".ko.xz", ".ko.zst", ".ko.gz")) for f in files):
                return None
        return f"holds no module files under {kernel.relative_to(root)} (a metapackage?)"
    return check


def _holds(*relpaths: str) -> Callable[[Path], str | None]:
    def check(root: Path) -> str | None:
        for rel in relpaths:
            if (root / rel).is_file():
                return None
        return f"holds none of {', '.join(relpaths)}"
    return check


def fetch_kernel(release: str, suite: str | None = None, vmlinuz: bool = False) -> KernelPackages:
    """Fetch (or reuse) the packages of a Debian kernel ``release``: its modules, its config and its
    headers' Module.symvers; its vmlinuz too with ``vmlinuz`` (the image layout always has it).

    ``suite`` None infers it (:func:`find_kernel`). Raises :class:`DebianError` with the reason
    and what to do instead.
    """
    k = find_kernel(release, suite)
    fetched: list[str] = []

    def get(p: KernelPackage, check: Callable[[Path], str | None]) -> Path:
        root, version = fetch_package(p.name, k.suite, p.version, check)
        fetched.append(f"{p.name}={version}")
        return root

    mod_pkg = k.package("modules")
    assert mod_pkg is not None
    mod_root = get(mod_pkg, _holds_modules(release))
    modules_dir = _release_dir(mod_root, release)
    assert modules_dir is not None
    config = kernel_image = None
    if "config" in mod_pkg.holds:
        config = next((c for c in (mod_root / "boot" / f"config-{release}", modules_dir / "config") if c.is_file()),
                      None)
    if "kernel" in mod_pkg.holds:
        kernel_image = next((c for c in (mod_root / "boot" / f"vmlinuz-{release}", modules_dir / "vmlinuz")
                             if c.is_file()), None)
    base = k.package("config")
    if config is None and base is not None and base is not mod_pkg and "headers" not in base.holds:
        rel = f"usr/lib/modules/{release}/config"
        config = get(base, _holds(rel)) / rel
    symvers = None
    headers = k.package("headers")
    if headers is not None:
        src = f"usr/src/linux-headers-{release}"
        root = get(headers, _holds(f"{src}/Module.symvers"))
        symvers = root / src / "Module.symvers"
        if config is None and (root / src / ".config").is_file():
            config = root / src / ".config"
    binary = k.package("kernel")
    if (vmlinuz or symvers is None) and kernel_image is None and binary is not None and binary is not mod_pkg:
        places = (f"usr/lib/modules/{release}/vmlinuz", f"boot/vmlinuz-{release}")
        root = get(binary, _holds(*places))
        kernel_image = next(root / p for p in places if (root / p).is_file())
    notes: list[tuple[str, str]] = []
    if symvers is None:
        symvers, why = _symvers_from_vmlinuz(release, k, kernel_image)
        notes.append((f"linux-headers-{release}", why))
    return KernelPackages(release, k.version, modules_dir, symvers, config, k.suite, tuple(fetched), kernel_image,
                          tuple(notes))


def _symvers_from_vmlinuz(release: str, k: AvailableKernel, image: Path | None) -> tuple[Path | None, str]:
    """A Module.symvers of vmlinux's exports read from ``image`` (:mod:`.vmlinux`), kept in the cache
    under the release and version; and what to tell the user."""
    from .records import LoaderError
    from .vmlinux import vmlinuz_exports, write_symvers

    missing = f"not in {k.suite} (the archive keeps no headers package for this kernel)"
    if image is None:
        return None, f"{missing}, and no vmlinuz either: vmlinux's exports are unknown"
    out = cache_dir() / "vmlinux" / f"{release}_{k.version}" / "Module.symvers"
    if not out.is_file():
        try:
            exports = vmlinuz_exports(image)
        except LoaderError as e:
            return None, f"{missing}; vmlinux's exports cannot be read from {image.name}: {e.reason}"
        write_symvers(exports, out)
    return out, f"{missing}: vmlinux's exports read from {image.name} instead (modules' from their .ko files)"
