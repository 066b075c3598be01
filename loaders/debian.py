"""Debian kernel packages: which kernels the archive carries, and fetching one into a cache.

A source named ``debian:<release>[@<suite>]`` (``debian:6.1.0-50-amd64``,
``debian:7.2.13+deb14-amd64``) becomes the unpacked files of that kernel: its modules, its
``.config``, the headers' ``Module.symvers`` and, where needed, its ``vmlinuz``. The suite is
inferred from the release when it is not named (:func:`suites_for_release`): ``5.10.0-NN`` is
bullseye, ``6.1.0-NN`` bookworm, ``+debNN`` the suites of Debian NN (its release suite with
``-updates`` and ``-security``, then its backports, and sid for the release in development).

Suites and their kernels
    Each suite is read through a private apt configuration in the cache (:mod:`.apt`), which
    never changes the system's apt state; names are checked first (:mod:`.debnames`). What a suite
    carries is
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
import json
import os
import shutil
import tempfile
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from .apt import MissingSuiteError, PrivateApt, apt_options, locked, run, write_atomic
from .debnames import (
    SUITES,
    DebianError,
    check_package_name,
    check_version,
    debian_version_key,
    is_kernel_release,
    is_package_name,
    release_flavour,
    release_numbers,
    suites_for_release,
    validate_release,
    validate_suite,
)

__all__ = ["KernelPackage", "AvailableKernel", "KernelPackages", "cache_dir", "SuiteIndex", "index_from_apt",
           "available_kernels", "suite_kernels", "find_kernel", "closest_kernels", "fetch_package", "fetch_kernel",
           "available_releases"]


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


def _apt(suite: str) -> PrivateApt:
    """The private apt configuration of ``suite`` in the cache."""
    return PrivateApt(suite, cache_dir() / "apt" / suite)


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
        return KernelPackage(name, check_version(f["Version"], name), holds, size)

    releases = {n[len("linux-image-"):].removesuffix("-unsigned") for n in have if n.startswith("linux-image-")}
    for release in sorted(releases, key=debian_version_key):
        if not is_kernel_release(release):
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
    apt = _apt(suite)
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
    with locked(apt.lock.with_suffix(".read"), shared=True):
        names = apt.run(["apt-cache", "pkgnames", "linux-"], f"apt-cache pkgnames for suite {suite}").stdout.split()
        names = [n for n in names if is_package_name(n)]
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
        write_atomic(path, json.dumps(data))
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


def closest_kernels(release: str, kernels: list[AvailableKernel]) -> list[AvailableKernel]:
    """``kernels`` ordered by closeness to ``release``: same flavour first, then by the distance of
    each version number in turn (major, minor, patch, ABI), then by name."""
    want = release_numbers(release)
    flavour = release_flavour(release)

    def key(k: AvailableKernel):
        distance = tuple(abs(a - b) for a, b in zip_longest(want, release_numbers(k.release), fillvalue=0))
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
    out = run(["apt-cache", *apt_options(suite, cache_dir() / "apt"), "search", "--names-only", "--", pattern], "apt-cache search").stdout
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
    name = check_package_name(name)
    if version is not None:
        check_version(version, name)
    apt = _apt(validate_suite(suite)) if suite is not None else None
    pkgroot = cache_dir() / "debs"
    pkgroot.mkdir(parents=True, exist_ok=True)
    with locked(pkgroot / ".locks" / f"{name}.lock"):
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


def _download_unpack(name: str, version: str | None, apt: PrivateApt | None, pkgroot: Path,
                     check: Callable[[Path], str | None] | None) -> tuple[Path, str]:
    target = f"{name}={version}" if version else name
    with tempfile.TemporaryDirectory(dir=pkgroot, prefix=f".dl-{name}_") as tmp:
        what = f"apt-get download {target}" + (f" from {apt.suite}" if apt else "")
        if apt is None:
            run(["apt-get", "download", "--", target], what, cwd=Path(tmp))
        else:
            apt.ensure()
            with locked(apt.lock.with_suffix(".read"), shared=True):
                apt.run(["apt-get", "download", "--", target], what, cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise DebianError(f"{what} produced {len(debs)} .deb files, expected one")
        deb = debs[0]
        got = check_version(deb.name.split("_")[1].replace("%3a", ":"), name)
        if version is not None and got != version:
            raise DebianError(f"{what} gave version {got}")
        unpack = Path(tmp) / "unpack"
        run(["dpkg-deb", "-x", str(deb), str(unpack)], f"dpkg-deb -x {deb.name}")
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
