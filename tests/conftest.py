"""Shared test fixtures: hermetic modules compiled with gcc, and real Debian kernels.

Hermetic modules are small C files in ``tests/fixtures/modules`` compiled with ``gcc -c``; the
header there gives them ``.modinfo``, ksymtab entries, CRCs and ``__versions`` like a real module.
Real kernels are fetched with ``apt-get download`` into ``$KSYMGRAPH_CACHE`` (default
``~/.cache/ksymgraph``) and reused across runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MODULE_SOURCES = FIXTURES / "modules"
FIXTURE_RELEASE = "6.1.0-fixture"

#: (name, command) of the compilers that give each ELF class and byte order.
COMPILERS = {
    "x86_64": ["gcc"],
    "i386": ["gcc", "-m32"],
    "s390x": ["s390x-linux-gnu-gcc-12"],
    "s390": ["s390x-linux-gnu-gcc-12", "-m31"],
}
LAYOUTS = {"prel32-ns": [], "ns-reloc": ["-DLAYOUT_NS_RELOC"], "absolute": ["-DLAYOUT_ABSOLUTE"]}


def compile_module(src: Path, out: Path, arch: str = "x86_64", layout: str = "prel32-ns",
                   defines: tuple[str, ...] = ()) -> Path:
    """Compile one fixture C file into a module-like object ``out``."""
    cc = COMPILERS[arch]
    if shutil.which(cc[0]) is None:
        pytest.fail(f"compiler {cc[0]} is missing: .ci/run installs it (apt-get install gcc-12-s390x-linux-gnu)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*cc, *LAYOUTS[layout], *(f"-D{d}" for d in defines), "-O1", "-fno-pic", "-I", str(MODULE_SOURCES), "-c", str(src), "-o", str(out)],
                   check=True)
    return out


FIXTURE_RELEASE_B = "6.12.0-fixture"


def index_small_tree(base: Path, files: dict[str, str], config: str):
    """A small kernel-shaped tree ``base/linux`` written from ``files`` (path → text, dedented), its
    ``.config`` ``base/config`` from ``config``, indexed in a cache of its own (``base/cache``):
    (root, config path, :class:`~ksymgraph.loaders.trees.SourceTree`)."""
    import textwrap

    from ksymgraph.loaders import trees

    root = base / "linux"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    config_path = base / "config"
    config_path.write_text(config)
    mp = pytest.MonkeyPatch()
    mp.setenv("KSYMGRAPH_CACHE", str(base / "cache"))
    try:
        return root, config_path, trees.index_source_tree(root, config_path, workers=1)
    finally:
        mp.undo()


@contextlib.contextmanager
def fresh_store(tmp_path_factory, name: str):
    """An embedded store in a new temporary directory ``name``, closed at the end."""
    from ksymgraph.graph.connect import open_store

    s = open_store(tmp_path_factory.mktemp(name) / "graph.lbdb")
    try:
        yield s
    finally:
        s.close()


def compile_tree(root: Path, sources: list[Path], headers: list[Path], gcc: list[str],
                 text=lambda t: t) -> Path:
    """An out-of-tree-style built tree in ``root``: ``headers`` copied, each of ``sources`` written
    (through ``text``) and compiled by ``gcc`` into ``<stem>.ko``, with Kbuild's ``<stem>.mod``."""
    if shutil.which(gcc[0]) is None:
        pytest.fail(f"{gcc[0]} is missing: .ci/run installs it")
    root.mkdir(parents=True, exist_ok=True)
    for h in headers:
        shutil.copy(h, root)
    for src in sources:
        (root / src.name).write_text(text(src.read_text()))
        subprocess.run([*gcc, "-I", str(root), "-c", str(root / src.name), "-o", str(root / f"{src.stem}.ko")],
                       check=True)
        (root / f"{src.stem}.mod").write_text(f"{root / src.stem}.o\n")
    return root


def build_fixture_kernel(root: Path, defines: tuple[str, ...] = ()) -> Path:
    """Compile the in-tree fixture modules into ``root/kernel`` with a vmlinux Module.symvers."""
    for src in sorted(MODULE_SOURCES.glob("*.c")):
        if src.stem == "prop_d":
            continue
        compile_module(src, root / "kernel" / f"{src.stem}.ko", defines=defines)
    (root / "build").mkdir(parents=True)
    shutil.copy(MODULE_SOURCES / "vmlinux.symvers", root / "build" / "Module.symvers")
    return root


@pytest.fixture(scope="session")
def fixture_tree(tmp_path_factory) -> Path:
    """A fake ``lib/modules/6.1.0-fixture`` tree: in-tree fixture modules and a vmlinux Module.symvers.

    ``prop_d`` (proprietary, out-of-tree) is left out; it is in :func:`extra_modules`.
    """
    return build_fixture_kernel(tmp_path_factory.mktemp("kernel") / "lib" / "modules" / FIXTURE_RELEASE)


@pytest.fixture(scope="session")
def fixture_tree_b(tmp_path_factory) -> Path:
    """The fixture kernel one release later (``-DKERNEL_B``): see tests/fixtures/modules/core_a.c."""
    root = tmp_path_factory.mktemp("kernel_b") / "lib" / "modules" / FIXTURE_RELEASE_B
    return build_fixture_kernel(root, ("KERNEL_B",))


@pytest.fixture(scope="session")
def extra_modules(tmp_path_factory) -> Path:
    """A directory of out-of-tree modules built against the fixture kernel."""
    d = tmp_path_factory.mktemp("extra")
    compile_module(MODULE_SOURCES / "prop_d.c", d / "prop_d.ko")
    return d


@pytest.fixture
def db_path(tmp_path) -> Path:
    """A fresh embedded database path."""
    return tmp_path / "graph.lbdb"


@pytest.fixture
def fixture_store(db_path, fixture_tree, extra_modules):
    """An embedded store holding the fixture kernel plus the out-of-tree module."""
    from ksymgraph.graph.load import load_kernel
    from ksymgraph.graph.connect import open_store

    store = open_store(db_path)
    load_kernel(store, [str(fixture_tree), str(extra_modules)], workers=1)
    yield store
    store.close()


# Real Debian kernels -----------------------------------------------------------------------------

#: The bookworm kernel the real-data tests use unless $KSYMGRAPH_TEST_RELEASE names another.
PREFERRED_RELEASE = "6.1.0-50-amd64"


def debian_release() -> str:
    """The Debian 6.1 release to test with: $KSYMGRAPH_TEST_RELEASE, the preferred one, or the newest."""
    env = os.environ.get("KSYMGRAPH_TEST_RELEASE")
    if env:
        return env
    from ksymgraph.loaders.debian import available_releases

    names = available_releases(r"^linux-image-6\.1\.0-[0-9]+-amd64$")
    releases = [n[len("linux-image-"):] for n in names]
    if PREFERRED_RELEASE in releases:
        return PREFERRED_RELEASE
    if not releases:
        pytest.fail("no linux-image-6.1.0-NN-amd64 in the configured apt sources (run apt-get update)")
    return max(releases, key=lambda r: int(r.split("-")[1]))


@pytest.fixture(scope="session")
def debian_kernel():
    """The real Debian kernel's unpacked packages (downloaded once, cached)."""
    from ksymgraph.loaders.debian import fetch_kernel

    return fetch_kernel(debian_release())


@pytest.fixture(scope="session")
def debian_loaded(tmp_path_factory, debian_kernel):
    """(store, load summary) of an embedded store with the real Debian kernel loaded."""
    from ksymgraph.graph.load import load_kernel
    from ksymgraph.graph.connect import open_store

    store = open_store(tmp_path_factory.mktemp("real") / "graph.lbdb")
    summary = load_kernel(store, [f"debian:{debian_kernel.release}"])
    yield store, summary
    store.close()


def trixie_release() -> str:
    """The newest Debian trixie 6.12 release (``6.12.NN+deb13-amd64``), or $KSYMGRAPH_TEST_RELEASE_B."""
    env = os.environ.get("KSYMGRAPH_TEST_RELEASE_B")
    if env:
        return env
    from ksymgraph.loaders.debian import available_releases

    names = available_releases(r"^linux-image-6\.12\.[0-9]+\+deb13-amd64$", suite="trixie")
    if not names:
        pytest.fail("no linux-image-6.12.NN+deb13-amd64 in trixie")
    return max((n[len("linux-image-"):] for n in names), key=lambda r: int(r.split(".")[2].split("+")[0]))


@pytest.fixture(scope="session")
def trixie_kernel():
    """Debian trixie's 6.12 kernel (``.ko.xz`` modules), fetched through a private apt configuration."""
    from ksymgraph.loaders.debian import fetch_kernel

    return fetch_kernel(trixie_release(), "trixie")
