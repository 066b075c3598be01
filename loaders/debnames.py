"""Debian's names for kernels: releases, suites, package names and versions — their shape, their
order, and which suite a release comes from.

Everything a user types after ``debian:`` is checked here against the archive's own character
sets before any path, apt file or option is made of it (:func:`validate_release`,
:func:`validate_suite`): a release is a package-name tail (``[0-9][a-z0-9.+-]*``, so never a path,
an option or a second line), and a suite must be one of :data:`SUITES`. :func:`debian_version_key`
orders versions and releases as ``dpkg --compare-versions`` does; :func:`suites_for_release` reads
the suite from the release (``+deb12`` → bookworm and its backports, ``5.10.0-NN`` → bullseye).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import KsymgraphError

__all__ = ["DebianError", "CODENAMES", "DEVELOPMENT", "SUITES", "ALIASES", "validate_release", "validate_suite",
           "check_package_name", "check_version", "release_flavour", "is_kernel_release", "is_package_name",
           "release_numbers", "debian_version_key",
           "suites_for_release", "suite_for_release", "system_suite", "shown"]

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


class DebianError(KsymgraphError):
    """A package or kernel could not be found, downloaded or unpacked, or a name is not valid."""


# Names -------------------------------------------------------------------------------------------

def shown(text: str) -> str:
    """User text as it may appear inside an error message: on one line, quoted."""
    return repr(text)


def validate_release(release: str) -> str:
    """``release`` when it is a Debian kernel release; else :class:`DebianError` saying why, on one line."""
    if not isinstance(release, str) or not _RELEASE_CHARS.fullmatch(release):
        raise DebianError(f"invalid release {shown(release)}: a Debian kernel release is a package-name tail "
                          "([0-9][a-z0-9.+-]*, at most 100 characters), e.g. 6.1.0-50-amd64")
    if not _RELEASE_SHAPE.fullmatch(release):
        raise DebianError(f"invalid release {shown(release)}: expected VERSION[-ABI]-FLAVOUR, e.g. "
                          "6.1.0-50-amd64, 6.12.57+deb13-cloud-amd64 or 7.2.13+deb14-rt-amd64")
    return release


def validate_suite(suite: str) -> str:
    """The suite of :data:`SUITES` that ``suite`` names (``unstable`` → ``sid``, ``bookworm-security``
    → ``bookworm``, which reads it); else :class:`DebianError` listing the known suites."""
    if not isinstance(suite, str) or len(suite) > 40 or not _SUITE_CHARS.fullmatch(suite):
        raise DebianError(f"invalid suite {shown(suite)}: a suite is a Debian codename such as bookworm "
                          f"([a-z][a-z0-9-]*); known suites: {', '.join(SUITES)}")
    suite = ALIASES.get(suite, suite)
    if suite not in SUITES:
        raise DebianError(f"unknown suite {shown(suite)}: known suites: {', '.join(SUITES)}")
    return suite


def check_package_name(name: str) -> str:
    if not _PACKAGE_CHARS.fullmatch(name) or len(name) > 200:
        raise DebianError(f"invalid package name {shown(name)}: Debian package names are [a-z0-9][a-z0-9+.-]+")
    return name


def check_version(version: str, what: str) -> str:
    if not _VERSION_CHARS.fullmatch(version) or len(version) > 100:
        raise DebianError(f"{what}: apt gave a version that is not a Debian version: {shown(version)}")
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


def system_suite() -> str | None:
    """The system's own codename (``VERSION_CODENAME`` of /etc/os-release); loaders/oot.py reads
    that suite's packages through the system's apt sources."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    return m.group(1) if m else None


def is_kernel_release(release: str) -> bool:
    """True for the release of a kernel image with an ABI (``6.1.0-50-amd64``), not of a metapackage
    (``6.1-amd64``), an unsigned, debug or common package."""
    return not release.endswith(_NOT_A_KERNEL) and bool(_ABI_RELEASE.fullmatch(release))


def is_package_name(name: str) -> bool:
    """True for a name that fits Debian's package-name rule (policy 5.6.1)."""
    return bool(_PACKAGE_CHARS.fullmatch(name))


def release_numbers(release: str) -> list[int]:
    """The version numbers of a release (``6.12.57+deb13-amd64`` → ``[6, 12, 57, 13]``)."""
    m = _RELEASE_SHAPE.fullmatch(release)
    return [int(x) for x in re.findall(r"\d+", m.group("version") if m else release)]
