"""A private apt configuration per Debian suite, in the cache: apt reads any suite without
touching the system's apt state, and processes sharing the cache wait for each other.

Each suite named is read through its own configuration (``apt/<suite>/``: sources, lists, status
and preferences), built from the system's mirror URIs. A release suite brings its companions along
where the mirror has them (``bookworm`` reads ``bookworm``, ``bookworm-updates`` and
``bookworm-security``); a companion without a Release file (sid has no ``-updates``) is left out,
found from apt's own error, not guessed. Lists are read again after :data:`LISTS_MAX_AGE`. An
``flock`` per suite lets one process run ``apt-get update`` while the others wait and then read
its lists; readers hold it shared, so they see the lists of one update, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .debnames import CODENAMES, DebianError, shown, validate_suite

__all__ = ["MissingSuiteError", "LISTS_MAX_AGE", "PrivateApt", "apt_options", "locked", "write_atomic", "run"]

#: Seconds after which a suite's package lists are read again from the mirror.
LISTS_MAX_AGE = 24 * 3600

_NO_RELEASE_FILE = re.compile(r"^E: The repository '(\S+) (\S+) Release' does not have a Release file\.$")


class MissingSuiteError(DebianError):
    """The mirror has no Release file for a suite (it does not carry it, or no longer)."""


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
            raise DebianError(f"the system's apt sources name a mirror URI this cannot use: {shown(uri)}")
    if keyring and not re.fullmatch(r"/[^\s]+", keyring):
        keyring = ""  # an inline key block: let apt use its trusted keys instead
    return main, security, keyring


def _companions(suite: str) -> list[tuple[str, str]]:
    """(archive, suite) pairs a suite reads: ``main``/``security`` archive, suite name."""
    if suite in CODENAMES.values():
        return [("main", suite), ("main", f"{suite}-updates"), ("security", f"{suite}-security")]
    return [("main", suite)]


@contextlib.contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (made if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run(cmd: list[str], what: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
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


class PrivateApt:
    """The private apt configuration of one suite in the cache."""

    def __init__(self, suite: str, root: Path):
        """The configuration of ``suite`` (one of :data:`~ksymgraph.loaders.debnames.SUITES`) kept
        in ``root``."""
        self.suite = suite
        self.root = root
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
            with locked(self.lock):
                if force or self.updated() == before or time.time() - self.updated() >= LISTS_MAX_AGE:
                    self._update(had_lists=before > 0)  # unless another process did while this one waited
        stamp = self._stamp()
        if stamp and stamp.get("missing"):
            raise MissingSuiteError(f"suite {self.suite}: the mirror has no Release file for it "
                                    f"({stamp['missing']}); it may have moved to archive.debian.org")
        if stamp:
            self._heal_sources(stamp)

    def _heal_sources(self, stamp: dict) -> None:
        """Rewrite the sources file when it is not the one the last update read (another program,
        or an older ksymgraph, sharing the cache wrote its own): apt would not see the packages of
        the lists, and every download would fail with "Unable to locate package"."""
        path = self.root / "sources.sources"
        want = self._sources([(a, s) for a, s in _companions(self.suite) if s in stamp.get("suites", [])])
        try:
            have = path.read_text()
        except OSError:
            have = None
        if have != want:
            with locked(self.lock):
                write_atomic(path, want)

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
        with locked(self.lock.with_suffix(".read")):
            self._updatelocked(had_lists)

    def _updatelocked(self, had_lists: bool) -> None:
        r = self.root
        for d in (r / "lists" / "partial", r / "cache" / "archives" / "partial", r / "preferences.d"):
            d.mkdir(parents=True, exist_ok=True)
        (r / "status").touch()
        pairs = _companions(self.suite)
        write_atomic(r / "sources.sources", self._sources(pairs))
        done = run(["apt-get", *self.options(), "-q", "update"], f"apt-get update for suite {self.suite}",
                    check=False)
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        missing = set()
        for line in errors:
            m = _NO_RELEASE_FILE.match(line)
            if m:
                missing.add(m.group(2))
        others = [line for line in errors if not _NO_RELEASE_FILE.match(line)]
        if self.suite in missing:  # remembered for LISTS_MAX_AGE, as lists would be
            write_atomic(self.stamp, json.dumps({"time": time.time(), "suites": [],
                                                  "missing": f"apt-get update: {errors[0][:200]}"}))
            return
        if done.returncode != 0 and (others or not missing):
            if had_lists:
                return  # offline or a passing mirror fault: keep reading the lists of the last update
            raise DebianError(f"apt-get update for suite {self.suite} failed: "
                              f"{' / '.join(others or done.stderr.strip().splitlines()[-3:])}")
        kept = [(a, s) for a, s in pairs if s not in missing]
        write_atomic(r / "sources.sources", self._sources(kept))
        write_atomic(self.stamp, json.dumps({"time": time.time(), "suites": [s for _a, s in kept],
                                              "absent": sorted(missing)}))

    def run(self, args: list[str], what: str, cwd: Path | None = None, check: bool = True):
        """Run ``apt-get``/``apt-cache`` (``args[0]``) with this configuration; the caller has
        called :meth:`ensure` (not here: it holds the read lock, which an update takes exclusive)."""
        return run([args[0], *self.options(), *args[1:]], what, cwd=cwd, check=check)


def apt_options(suite: str | None, root: Path) -> list[str]:
    """apt options that read ``suite`` through its private configuration under ``root`` (its lists
    fresh); ``[]`` for the system's own sources (``suite`` None)."""
    if suite is None:
        return []
    apt = PrivateApt(validate_suite(suite), root / suite)
    apt.ensure()
    return apt.options()


