"""Debian kernels by name: names checked before use, Debian's version order, the suite index, the cache.

Hermetic where the logic is pure: names are refused before any path, apt file or option is made
of them (the cache directory stays empty), :func:`debian_version_key` is held against
``dpkg --compare-versions`` itself on real release strings and on generated versions, and the
suite index is built from apt output written out here. The tests marked ``realdata`` fetch for
real, into a fresh cache: a suite without ``-updates`` on a first run, a metapackage that must not
be cached, two processes fetching one package at once, a fetch killed half-way.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ksymgraph.loaders import debian
from ksymgraph.loaders.apt import MissingSuiteError
from ksymgraph.loaders.debian import AvailableKernel, KernelPackage, closest_kernels, index_from_apt
from ksymgraph.loaders.debnames import (
    DebianError,
    debian_version_key,
    release_flavour,
    suite_for_release,
    suites_for_release,
    validate_release,
    validate_suite,
)
from ksymgraph.loaders.kernel import resolve_source
from ksymgraph.loaders.records import LoaderError

#: Real release strings of the archive (bullseye to sid, security and backports), oldest first.
RELEASES = [
    "5.10.0-30-amd64", "5.10.0-32-amd64", "5.10.0-46-amd64",
    "6.1.0-0.deb11.48-amd64", "6.1.0-0.deb11.52-amd64",
    "6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-57-amd64",
    "6.12.43+deb12-amd64", "6.12.57+deb12-amd64", "6.12.90+deb12-amd64", "6.12.90+deb12.1-amd64",
    "6.12.95+deb12-amd64", "6.12.115+deb13-amd64", "6.12.115+deb13.1-amd64", "6.12.118+deb13-amd64",
    "6.16.3+deb13-amd64", "6.19.6+deb13-amd64", "7.2.6+deb13-amd64", "7.2.12+deb14-amd64", "7.2.13+deb14-amd64",
]
#: Real package versions of those kernels (backports, binNMU-less security uploads).
VERSIONS = ["5.10.226-1", "5.10.237-1", "6.1.170-3", "6.1.176-1", "6.1.176-1+deb12u1", "6.12.43-1~bpo12+1",
            "6.12.90-1~bpo12+1", "6.12.90-1", "6.12.117-1", "7.2.13-1", "7.2.13-1+b1", "1:7.2.13-1"]


def dpkg_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0


def dpkg_eq(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0


# Names are data ----------------------------------------------------------------------------------

@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KSYMGRAPH_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("release", RELEASES + ["6.1.0-50-cloud-amd64", "7.2.13+deb14-rt-amd64", "6.1.0-50-686-pae"])
def test_real_releases_are_valid(release):
    assert validate_release(release) == release


@pytest.mark.parametrize("release", [
    "../../X", "6.1.0-50-amd64/../../etc", "-oAPT::Get::Foo=1", "6.1.0-50-amd64\nTypes: deb", "6.1.0-50-AMD64",
    "", "6.1.0-50", "6.1.0 50-amd64", "6.1.0-50-amd64;rm", "6" * 101 + "-amd64", "linux-image-6.1.0-50-amd64",
])
def test_bad_releases_are_refused_on_one_line(release):
    with pytest.raises(DebianError) as e:
        validate_release(release)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suite", ["../../X", "bookworm\nX", "-obookworm", "Bookworm", "bookworm/updates", "",
                                   "stable", "buster", "x" * 50, "bookworm security"])
def test_bad_suites_are_refused_on_one_line(suite):
    with pytest.raises(DebianError) as e:
        validate_suite(suite)
    msg = str(e.value)
    assert "\n" not in msg and "bookworm-backports" in msg  # names the suites that exist


def test_suite_aliases():
    assert validate_suite("unstable") == "sid"
    assert validate_suite("bookworm-security") == validate_suite("bookworm-updates") == "bookworm"
    assert validate_suite("trixie-backports") == "trixie-backports"


@pytest.mark.parametrize("spec", ["debian:6.1.0-50-amd64@../../X", "debian:6.1.0-50-amd64@bookworm\nX",
                                  "debian:../../X-amd64", "debian:6.1.0-50-amd64\n@bookworm", "debian:6.1.0-50-amd64@",
                                  "debian:", "debian:6.1.0-50-amd64@-o"])
def test_debian_specs_refused_before_anything_is_made(spec, empty_cache):
    with pytest.raises(LoaderError) as e:
        resolve_source(spec)
    assert "\n" not in str(e.value)
    assert not empty_cache.exists()  # no lock, apt directory or download made of it


def test_load_refuses_a_bad_suite_with_one_line(empty_cache, tmp_path):
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "load", "debian:6.1.0-50-amd64@../../X", "--db",
                        str(tmp_path / "g.lbdb")], capture_output=True, text=True)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "invalid suite '../../X'" in p.stderr
    assert not empty_cache.exists()


# Debian's version order --------------------------------------------------------------------------

def test_release_order_is_dpkgs():
    shuffled = RELEASES[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled, key=debian_version_key) == RELEASES
    # and dpkg agrees on each neighbour, read as VERSION[-ABI]
    versions = [r.rsplit("-amd64", 1)[0] for r in RELEASES]
    for a, b in zip(versions, versions[1:]):
        assert dpkg_lt(a, b), (a, b)


@pytest.mark.parametrize("a", VERSIONS)
@pytest.mark.parametrize("b", VERSIONS)
def test_real_versions_order_as_dpkg(a, b):
    assert (debian_version_key(a) < debian_version_key(b)) == dpkg_lt(a, b)
    assert (debian_version_key(a) == debian_version_key(b)) == dpkg_eq(a, b)


@pytest.mark.parametrize("a, b", [("0", "0~"), ("1.0", "1.0~"), ("1.0", "1.0.0"), ("1~", "1"),
                                  ("1~~", "1~"), ("1a", "1"), ("1+", "1.") , ("1.01", "1.1"), ("0:1", "1"),
                                  ("1-1", "1-1~"), ("1-0", "1"), ("0.-1", "0.0-b")])
def test_edge_versions_order_as_dpkg(a, b):
    for x, y in ((a, b), (b, a)):
        assert (debian_version_key(x) < debian_version_key(y)) == dpkg_lt(x, y), (x, y)
        assert (debian_version_key(x) == debian_version_key(y)) == dpkg_eq(x, y), (x, y)


_part = st.text(alphabet="0123456789abz.+~", min_size=0, max_size=6)
_version = st.builds(lambda e, d, u, r: f"{e}{d}{u}{'-' + r if r else ''}",
                     st.sampled_from(["", "", "1:", "2:"]), st.sampled_from("0123456789"), _part,
                     st.text(alphabet="0123456789abz.+~", min_size=0, max_size=5).filter(lambda s: "-" not in s))


@settings(max_examples=300, deadline=None)
@given(_version, _version)
def test_generated_versions_order_as_dpkg(a, b):
    assert (debian_version_key(a) < debian_version_key(b)) == dpkg_lt(a, b), (a, b)
    assert (debian_version_key(a) == debian_version_key(b)) == dpkg_eq(a, b), (a, b)


def test_flavour_orders_after_version():
    assert debian_version_key("6.1.0-50-amd64") < debian_version_key("6.1.0-50-cloud-amd64")
    assert debian_version_key("6.1.0-50-rt-amd64") < debian_version_key("6.1.0-51-amd64")


# Suites of a release -----------------------------------------------------------------------------

@pytest.mark.parametrize("release, suites", [
    ("5.10.0-32-amd64", ["bullseye"]),
    ("6.1.0-0.deb11.52-amd64", ["bullseye", "bullseye-backports"]),
    ("6.1.0-47-amd64", ["bookworm"]),
    ("6.1.0-50-rt-amd64", ["bookworm"]),
    ("6.12.95+deb12-amd64", ["bookworm", "bookworm-backports"]),
    ("6.12.118+deb13-cloud-amd64", ["trixie", "trixie-backports"]),
    ("7.2.6+deb13-amd64", ["trixie", "trixie-backports"]),
    ("7.2.13+deb14-amd64", ["forky", "forky-backports", "sid"]),
    ("4.19.0-27-amd64", []),
])
def test_suites_for_release(release, suites):
    assert suites_for_release(release) == suites
    assert suite_for_release(release) == (suites[0] if suites else None)


# The suite index, from apt output ----------------------------------------------------------------

def _stanza(name, version, depends="kmod", size=1000):
    return f"Package: {name}\nVersion: {version}\nInstalled-Size: 15\nDepends: {depends}\nSize: {size}\n" \
           "Description: a kernel\n continued line\n"


def test_index_of_both_layouts_and_of_what_cannot_be_fetched():
    rel_a, rel_b, rel_c, rel_d = "6.1.0-50-amd64", "7.2.13+deb14-amd64", "7.1.13+deb13-amd64", "6.1.0-48-amd64"
    split = lambda r: f"linux-base-{r} (= 7.2.13-1), linux-binary-{r} (= 7.2.13-1), linux-modules-{r} (= 7.2.13-1)"
    names = [f"linux-image-{rel_a}", f"linux-image-{rel_a}-unsigned", f"linux-image-{rel_a}-dbg",
             f"linux-headers-{rel_a}", "linux-image-amd64", "linux-image-6.1-amd64", f"linux-headers-{rel_a[:-5]}common",
             f"linux-image-{rel_b}", f"linux-modules-{rel_b}", f"linux-base-{rel_b}", f"linux-binary-{rel_b}",
             f"linux-headers-{rel_b}", f"linux-image-{rel_c}", f"linux-binary-{rel_c}", f"linux-image-{rel_d}-unsigned"]
    shown = "\n".join([
        _stanza(f"linux-image-{rel_a}", "6.1.176-1", size=70305560), _stanza(f"linux-image-{rel_a}-unsigned", "6.1.176-1"),
        _stanza(f"linux-headers-{rel_a}", "6.1.176-1"), _stanza("linux-image-amd64", "6.1.176-1"),
        _stanza("linux-image-6.1-amd64", "6.1.176-1"),
        _stanza(f"linux-image-{rel_b}", "7.2.13-1", depends="initramfs-tools | dracut, " + split(rel_b)),
        _stanza(f"linux-modules-{rel_b}", "7.2.13-1"), _stanza(f"linux-base-{rel_b}", "7.2.13-1"),
        _stanza(f"linux-binary-{rel_b}", "7.2.13-1"), _stanza(f"linux-headers-{rel_b}", "7.2.13-1"),
        _stanza(f"linux-image-{rel_c}", "7.1.13-1~bpo13+1", depends=split(rel_c)),
        _stanza(f"linux-binary-{rel_c}", "7.1.13-1~bpo13+1"), _stanza(f"linux-image-{rel_d}-unsigned", "6.1.172-1"),
    ])
    madison = textwrap.dedent(f"""\
        linux-image-{rel_a} | 6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
        linux-image-{rel_a} | 6.1.176-1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
        linux-image-{rel_b} |  7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages
        """)
    index = index_from_apt("bookworm", names, shown, madison)
    assert list(index.kernels) == [rel_d, rel_a, rel_b]
    a = index.kernels[rel_a]
    assert (a.version, a.archive, a.headers) == ("6.1.176-1", "bookworm,bookworm-security", True)
    assert [(p.name, p.holds) for p in a.packages] == [
        (f"linux-image-{rel_a}", ("modules", "config", "kernel")), (f"linux-headers-{rel_a}", ("headers", "config"))]
    assert a.packages[0].size == 70305560
    b = index.kernels[rel_b]
    assert [(p.name, p.holds) for p in b.packages] == [
        (f"linux-modules-{rel_b}", ("modules",)), (f"linux-base-{rel_b}", ("config",)),
        (f"linux-headers-{rel_b}", ("headers", "config")), (f"linux-binary-{rel_b}", ("kernel",))]
    assert b.package("config").name == f"linux-base-{rel_b}" and b.package("kernel").name == f"linux-binary-{rel_b}"
    d = index.kernels[rel_d]  # only the unsigned image: taken, no headers
    assert d.packages[0].name == f"linux-image-{rel_d}-unsigned" and not d.headers
    assert index.unfetchable == {rel_c: f"linux-image-{rel_c} is a metapackage and its linux-modules-{rel_c} "
                                        "is no longer in bookworm"}


def test_index_refuses_a_version_that_is_not_debian():
    with pytest.raises(DebianError):
        index_from_apt("sid", ["linux-image-6.1.0-50-amd64"], _stanza("linux-image-6.1.0-50-amd64", "../x"), "")


def _k(release, suite="bookworm"):
    return AvailableKernel(release, suite, "1", suite, (KernelPackage(f"linux-image-{release}", "1", ("modules",), 0),))


def test_closest_kernels_by_flavour_then_version_distance_then_name():
    pool = [_k(r) for r in ["6.1.0-47-amd64", "6.1.0-57-amd64", "6.1.0-50-cloud-amd64", "5.10.0-46-amd64",
                            "6.12.95+deb12-amd64", "6.1.0-0.deb11.52-amd64", "6.1.0-49-amd64"]]
    got = [k.release for k in closest_kernels("6.1.0-51-amd64", pool)]
    assert got == ["6.1.0-49-amd64", "6.1.0-47-amd64", "6.1.0-57-amd64", "6.1.0-0.deb11.52-amd64",
                   "6.12.95+deb12-amd64", "5.10.0-46-amd64", "6.1.0-50-cloud-amd64"]


# Fetching for real, into a fresh cache -----------------------------------------------------------

realdata = pytest.mark.realdata


@realdata
@pytest.mark.parametrize("suite", ["sid", "bookworm-backports"])
def test_suite_without_updates_works_on_a_first_run(suite, empty_cache):
    kernels = debian.suite_kernels(suite)
    assert kernels and all(k.suite == suite for k in kernels)
    sources = (empty_cache / "apt" / suite / "sources.sources").read_text()
    assert f"{suite}-updates" not in sources and "Suites: " + suite in sources


@realdata
def test_release_suite_reads_updates_and_security(empty_cache):
    kernels = debian.suite_kernels("bookworm")
    sources = (empty_cache / "apt" / "bookworm" / "sources.sources").read_text()
    assert "bookworm-security" in sources and "bookworm-updates" in sources
    assert any("bookworm-security" in k.archive for k in kernels)  # kernels only the security suite has
    assert {"6.1.0-47-amd64", "6.1.0-50-amd64"} <= {k.release for k in kernels}


@realdata
def test_missing_suite_is_one_clear_error_and_remembered(empty_cache):
    with pytest.raises(MissingSuiteError, match="no Release file") as e:
        debian.suite_kernels("bullseye-backports")
    assert "\n" not in str(e.value)
    stamp = (empty_cache / "apt" / "bullseye-backports" / "updated.json").stat().st_mtime
    with pytest.raises(MissingSuiteError):
        debian.suite_kernels("bullseye-backports")
    assert (empty_cache / "apt" / "bullseye-backports" / "updated.json").stat().st_mtime == stamp


@functools.cache
def _sid_kernel() -> AvailableKernel:
    return next(k for k in debian.suite_kernels("sid") if k.release.endswith("+deb14-amd64"))


@realdata
def test_metapackage_is_never_cached_as_the_kernel(empty_cache):
    k = _sid_kernel()
    image = f"linux-image-{k.release}"
    # An unpack of the metapackage left by an older version of this code is not taken either.
    stale = empty_cache / "debs" / f"{image}_{k.version}.unpacked"
    stale.mkdir(parents=True)
    with pytest.raises(DebianError, match="holds no lib/modules") as e:
        debian.fetch_package(image, "sid", k.version, debian._holds_modules(k.release))
    assert "nothing was cached" in str(e.value)
    assert list((empty_cache / "debs").glob(f"{image}*")) == []
    assert [p.name for p in (empty_cache / "debs").iterdir() if not p.name.startswith(".locks")] == []


_CHILD = """
import sys
from ksymgraph.loaders import debian
root, version = debian.fetch_package(sys.argv[1], sys.argv[2], sys.argv[3], debian._holds(sys.argv[4]))
print(root, version)
"""


@realdata
def test_two_processes_fetching_one_package_both_succeed(empty_cache):
    k = _sid_kernel()
    p = k.package("config")  # linux-base-…: 0.5 MB
    rel = f"usr/lib/modules/{k.release}/config"
    env = {**os.environ, "KSYMGRAPH_CACHE": str(empty_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, p.name, "sid", p.version, rel], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [o[1] for o in outs]
    assert outs[0][0] == outs[1][0] == f"{empty_cache / 'debs' / f'{p.name}_{p.version}.unpacked'} {p.version}\n"
    assert (empty_cache / "debs" / f"{p.name}_{p.version}.unpacked" / rel).is_file()
    assert [d.name for d in (empty_cache / "debs").glob(".dl-*")] == []


@realdata
def test_fetch_killed_while_unpacking_leaves_nothing_half_written(empty_cache, tmp_path):
    k = _sid_kernel()
    p = k.package("headers")  # 1.7 MB, thousands of files
    rel = f"usr/src/linux-headers-{k.release}/Module.symvers"
    # dpkg-deb that unpacks part of the package and then hangs, so the fetch is killed mid-unpack.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "dpkg-deb").write_text("#!/bin/sh\n/usr/bin/dpkg-deb --fsys-tarfile \"$2\" | tar -x -C \"$3\" "
                                   "--wildcards '*/include/*' 2>/dev/null; mkdir -p \"$3\"; touch \"$3/started\"; "
                                   "exec sleep 600\n")
    (shim / "dpkg-deb").chmod(0o755)
    env = {**os.environ, "KSYMGRAPH_CACHE": str(empty_cache), "PATH": f"{shim}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, p.name, "sid", p.version, rel], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not list((empty_cache / "debs").glob(".dl-*/unpack/started")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    debs = empty_cache / "debs"
    assert list(debs.glob("*.unpacked")) == []  # only a temporary directory is left
    assert len(list(debs.glob(f".dl-{p.name}_*"))) == 1
    root, version = debian.fetch_package(p.name, "sid", p.version, debian._holds(rel))
    assert (root / rel).is_file() and version == p.version
    assert list(debs.glob(".dl-*")) == []  # the next run removed what the killed one left


@realdata
def test_every_available_kernel_is_found_by_release_alone():
    """Every kernel of every suite (216 on 2026-12-01: 5.10 to 7.3, amd64, cloud and rt) is found
    by its release alone, in the suite its name points to first."""
    kernels = debian.available_kernels()
    where: dict[str, set[str]] = {}
    for k in kernels:
        where.setdefault(k.release, set()).add(k.suite)
    assert {"bullseye", "bookworm", "bookworm-backports", "trixie", "trixie-backports", "forky", "sid"} <= {
        k.suite for k in kernels}
    for release, suites in where.items():
        found = debian.find_kernel(release)
        assert found.suite in suites, release
        assert found.suite == next(s for s in suites_for_release(release) if s in suites), release
    flavours = {release_flavour(k.release) for k in kernels}
    assert {"amd64", "cloud-amd64", "rt-amd64"} <= flavours
    split = {k.release for k in kernels if k.package("modules").name.startswith("linux-modules-")}
    assert split and all(r.startswith("7.") for r in split)


def test_sources_written_by_another_program_are_healed(tmp_path):
    """A sources file that is not the one the last update read (an older ksymgraph sharing the
    cache wrote ``Suites: trixie trixie-updates`` alone) is rewritten, so apt sees the packages of
    the lists it has (trixie-security's kernels among them)."""
    import json as _json

    from ksymgraph.loaders.apt import PrivateApt

    apt = PrivateApt("trixie", tmp_path / "trixie")
    apt.root.mkdir(parents=True)
    (apt.root / "updated.json").write_text(_json.dumps({"time": 9e12, "suites": ["trixie", "trixie-security"],
                                                        "absent": ["trixie-updates"]}))
    stale = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates\nComponents: main\n"
    (apt.root / "sources.sources").write_text(stale)
    apt.ensure()  # lists "fresh" (the stamp is in the future): no update, only the heal
    text = (apt.root / "sources.sources").read_text()
    assert "Suites: trixie\n" in text and "Suites: trixie-security\n" in text and "trixie-updates" not in text
