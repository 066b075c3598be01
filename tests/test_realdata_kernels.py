"""One real Debian kernel of each line the archive carries, loaded by name and checked against kmod.

The lines: bullseye's newest 5.10, bookworm's 6.1.0-47 and 6.1.0-50 (two ABIs of one suite), the
newest bookworm-backports 6.12 that has a headers package, trixie's newest 6.12 (its security
suite included) and sid's 7.2 (the split linux-modules/-base/-headers packages). Each is loaded
with ``debian:RELEASE``, no suite given, into an embedded store, and:

* the transitive closure of DEPENDS_ON equals modules.dep from
  ``depmod -b ROOT -e -E Module.symvers RELEASE``, module for module (the system's kmod 30 reads
  all of them: .ko and .ko.xz, no newer kmod needed; its output is kept in the cache, see
  :func:`modules_dep`);
* the module exports in the store, which come from the ksymtabs of the .ko files, equal the module
  part of Module.symvers: symbol, namespace and CRC (none on either side without
  CONFIG_MODVERSIONS, as in Debian's 7.2); and, separately, GPL. 7.x moved the GPL
  flag into ``__kflagstab``, which loaders/elf.py does not read yet: that one comparison is an
  expected failure on 7.x (strict, so it turns into a failure once elf.py reads it);
* the kernel's config and package version reach the store's Kernel node and the SOURCE.

Downloads are cached in $KSYMGRAPH_CACHE; the fixture prints, per kernel, the download size and the
time taken to fetch (0 s once cached), load and run depmod.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, NamedTuple

import networkx as nx
import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.queries.diff import diff_kernels
from ksymgraph.queries.whatif import failing_modules, parse_changes, what_if
from ksymgraph.loaders import debian
from ksymgraph.loaders.kernel import resolve_source
from ksymgraph.loaders.modules import find_module_files
from ksymgraph.loaders.symvers import read_symvers

pytestmark = pytest.mark.realdata


def newest(suite: str, pattern: str) -> Callable[[], str]:
    """The newest release of ``suite`` matching ``pattern`` that has a headers package."""
    def pick() -> str:
        found = [k.release for k in debian.suite_kernels(suite) if re.fullmatch(pattern, k.release) and k.headers]
        if not found:
            pytest.fail(f"{suite} carries no kernel matching {pattern} with a headers package")
        return found[-1]  # suite_kernels is oldest first, in Debian's order
    return pick


#: Line → how to pick its release (every one loads as debian:RELEASE, the suite inferred).
LINES: dict[str, Callable[[], str]] = {
    "bullseye-5.10": newest("bullseye", r"5\.10\.0-\d+-amd64"),
    "bookworm-6.1.0-47": lambda: "6.1.0-47-amd64",
    "bookworm-6.1.0-50": lambda: "6.1.0-50-amd64",
    "bookworm-backports-6.12": newest("bookworm-backports", r"6\.12\.\d+\+deb12(?:\.\d+)?-amd64"),
    "trixie-6.12": newest("trixie", r"6\.12\.\d+\+deb13(?:\.\d+)?-amd64"),
    "sid-7.2": newest("sid", r"7\.2\.\d+\+deb14(?:\.\d+)?-amd64"),
}


class Loaded(NamedTuple):
    release: str
    packages: debian.KernelPackages
    store: object
    summary: object
    proj: KernelProjection


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """Each line's kernel, loaded once into a store of its own when a test first asks for it."""
    opened: dict[str, Loaded] = {}

    def get(line: str) -> Loaded:
        if line not in opened:
            release = LINES[line]()
            found = debian.find_kernel(release)
            t0 = time.perf_counter()
            pk = debian.fetch_kernel(release)
            t1 = time.perf_counter()
            store = open_store(tmp_path_factory.mktemp(line) / "graph.lbdb")
            summary = load_kernel(store, [f"debian:{release}"])
            t2 = time.perf_counter()
            proj = KernelProjection.from_store(store, summary.kernel)
            size = sum(p.size for p in found.packages if p.name in {s.split("=")[0] for s in pk.packages})
            print(f"\n{line}: {release} from {pk.suite} ({found.archive}), {len(pk.packages)} packages, "
                  f"{size / 1e6:.0f} MB download; fetch {t1 - t0:.1f} s, load {t2 - t1:.1f} s")
            opened[line] = Loaded(release, pk, store, summary, proj)
        return opened[line]

    yield get
    for k in opened.values():
        k.store.close()


@pytest.fixture(params=list(LINES), ids=list(LINES))
def loaded(request, kernels):
    return kernels(request.param)


def _depmod() -> tuple[str, str]:
    exe = shutil.which("depmod") or "/usr/sbin/depmod"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.split()
    return exe, "-".join(version[:3])  # "kmod-version-30"


def modules_dep(pk: debian.KernelPackages, root: Path) -> dict[str, set[str]]:
    """modules.dep of ``depmod -b root -e -E Module.symvers release`` on a hard-linked copy of the
    modules: {module path relative to the release directory: its dependencies, the same way}.

    depmod spends 10–14 s decompressing a kernel of .ko.xz modules, so its modules.dep (and that
    it warned of no unknown symbol) is kept in the cache under the kmod version, the release and
    its package version: the same depmod on the same files, run once.
    """
    exe, kmod = _depmod()
    kept = debian.cache_dir() / "oracle" / kmod / f"{pk.release}_{pk.version}.modules.dep"
    if not kept.is_file():
        moddir = root / "lib" / "modules" / pk.release
        shutil.copytree(pk.modules_dir, moddir, copy_function=os.link)
        t0 = time.perf_counter()
        p = subprocess.run([exe, "-b", str(root), "-e", "-E", str(pk.symvers), pk.release],
                           capture_output=True, text=True)
        print(f"depmod {pk.release}: {time.perf_counter() - t0:.1f} s")
        assert p.returncode == 0, p.stderr
        assert "needs unknown symbol" not in p.stderr, p.stderr[:2000]
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{kept.name}.{os.getpid()}")
        shutil.copyfile(moddir / "modules.dep", tmp)
        os.replace(tmp, kept)
    deps = {}
    for line in kept.read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = set(rest.split())
    return deps


def test_loads_by_name_with_config_and_version(loaded):
    pk, s = loaded.packages, loaded.summary
    assert s.kernel == loaded.release
    assert s.skipped == []
    files = find_module_files(pk.modules_dir)
    assert len(files) > 3000
    assert s.report.modules == len(files) + 1  # + vmlinux
    assert s.report.exports == sum(1 for _ in open(pk.symvers))
    src = resolve_source(f"debian:{loaded.release}")
    assert src.version == pk.version and re.fullmatch(r"\d+\.\d+\.\d+-\S+", pk.version)
    assert src.config == pk.config and "CONFIG_MODULES=y\n" in pk.config.read_text()
    # Where the config lives: the image's boot/ up to 6.12, linux-base's usr/lib/modules/REL from 7.2.
    split = loaded.release.startswith("7.")
    want = f"usr/lib/modules/{loaded.release}/config" if split else f"boot/config-{loaded.release}"
    assert pk.config.as_posix().endswith(want)
    assert pk.config.parents[4 if split else 1].name.startswith("linux-base-" if split else "linux-image-")
    rows = loaded.store.query("MATCH (k:Kernel) WHERE k.release = $k RETURN k.version AS v, k.arch AS a",
                              {"k": loaded.release}).rows
    assert rows == [(pk.version, "amd64")]


def test_depends_on_closure_equals_modules_dep(loaded, tmp_path):
    pk, proj = loaded.packages, loaded.proj
    dep = modules_dep(pk, tmp_path)
    g = proj.to_networkx()

    def rel(name: str) -> str:
        return os.path.relpath(proj.modules[name].path, pk.modules_dir)

    ours = {rel(name): {rel(d) for d in nx.descendants(g, name)} for name, m in proj.modules.items() if m.path}
    assert set(ours) == set(dep)
    mismatches = {m: ours[m] ^ dep[m] for m in dep if ours[m] != dep[m]}
    assert mismatches == {}, f"{len(mismatches)} modules differ from modules.dep"
    assert sum(map(len, dep.values())) > 5000


def test_no_in_tree_module_already_fails(loaded):
    """The kernel's own modules all load under its own load rules: vermagic, CRCs, namespaces
    (7.2's ``module:`` namespaces among them), GPL-only exports."""
    build = loaded.proj.build
    config = loaded.packages.config.read_text()
    assert build.modversions is ("CONFIG_MODVERSIONS=y\n" in config)
    assert build.force_load is ("CONFIG_MODULE_FORCE_LOAD=y\n" in config)
    assert build.vermagic.startswith(loaded.release + " SMP ")
    assert failing_modules(loaded.proj) == {}


def _module_exports(loaded) -> list[tuple]:
    return loaded.store.query(
        "MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE m.kernel = $k AND m.name <> 'vmlinux' "
        "RETURN m.name AS module, s.name AS symbol, e.gpl AS gpl, e.namespace AS ns, e.crc AS crc",
        {"k": loaded.release}).rows


def test_ko_exports_equal_module_symvers(loaded):
    entries, skipped = read_symvers(loaded.packages.symvers)
    assert skipped == []
    # Without CONFIG_MODVERSIONS (Debian's 7.2) modpost writes 0x00000000 for every CRC and the
    # .ko files have no __kcrctab: no CRC on either side.
    modversions = "CONFIG_MODVERSIONS=y\n" in loaded.packages.config.read_text()
    want = {(e.export.module, e.export.symbol, e.export.namespace, e.export.crc if modversions else None)
            for e in entries if e.export.module != "vmlinux"}
    ours = {(m, s, ns, crc) for m, s, _gpl, ns, crc in _module_exports(loaded)}
    assert len(want) > 10_000
    assert ours == want


def test_ko_export_gpl_equals_module_symvers(loaded):
    # 7.x: one __ksymtab with __kflagstab's GPL bit, no __ksymtab_gpl (loaders/elf.py)
    assert loaded.summary.report.symvers_mismatches == []
    entries, _ = read_symvers(loaded.packages.symvers)
    want = {(e.export.module, e.export.symbol, e.export.gpl) for e in entries if e.export.module != "vmlinux"}
    ours = {(m, s, gpl) for m, s, gpl, _ns, _crc in _module_exports(loaded)}
    assert any(g for _m, _s, g in want)
    assert ours == want


# vmlinux's exports from the image itself (loaders/vmlinux.py) ------------------------------------

@pytest.mark.parametrize("line", list(LINES))
def test_vmlinuz_exports_equal_module_symvers(line):
    """On kernels that have both, the exports read from vmlinuz equal Module.symvers's vmlinux part."""
    from ksymgraph.loaders.vmlinux import vmlinuz_exports

    pk = debian.fetch_kernel(LINES[line](), vmlinuz=True)
    assert pk.vmlinuz is not None and pk.notes == ()
    entries, _ = read_symvers(pk.symvers)
    want = {(e.export.symbol, e.export.gpl, e.export.namespace, e.export.crc)
            for e in entries if e.export.module == "vmlinux"}
    t0 = time.perf_counter()
    exports = vmlinuz_exports(pk.vmlinuz)
    print(f"\n{pk.release}: {len(exports)} exports read from {pk.vmlinuz.name} in {time.perf_counter() - t0:.1f} s")
    modversions = "CONFIG_MODVERSIONS=y\n" in pk.config.read_text()
    assert all(e.crc is not None for e in exports) == modversions
    ours = {(e.symbol, e.gpl, e.namespace, e.crc if modversions else 0) for e in exports}  # modpost writes 0
    assert len(exports) == len(ours) > 9000
    assert any(e.gpl for e in exports) and any(e.namespace for e in exports)
    assert ours == want


@pytest.fixture(scope="module")
def without_headers(tmp_path_factory):
    """The newest bookworm-backports kernel that has no headers package, loaded by name."""
    found = [k for k in debian.suite_kernels("bookworm-backports")
             if re.fullmatch(r"6\.12\.\d+\+deb12(?:\.\d+)?-amd64", k.release) and not k.headers]
    if not found:
        pytest.fail("bookworm-backports has no 6.12 kernel without headers any more: pick another line")
    release = found[-1].release
    root = tmp_path_factory.mktemp("no-headers")
    store = open_store(root / "graph.lbdb")
    t0 = time.perf_counter()
    summary = load_kernel(store, [f"debian:{release}"])
    print(f"\n{release} (no headers): fetched and loaded in {time.perf_counter() - t0:.1f} s")
    yield debian.fetch_kernel(release), store, summary
    store.close()
    shutil.rmtree(root, ignore_errors=True)


def test_kernel_without_headers_loads_with_vmlinuz_exports(without_headers, tmp_path):
    from ksymgraph.loaders.vmlinux import vmlinuz_exports

    pk, store, summary = without_headers
    assert pk.symvers.parent.parent.name == "vmlinux" and pk.vmlinuz is not None
    # The load summary says where vmlinux's exports came from: a note, nothing was skipped.
    assert summary.skipped == []
    assert [n for n in summary.notes if n.startswith(f"linux-headers-{pk.release}: ")] == [
        f"linux-headers-{pk.release}: not in bookworm-backports (the archive keeps no headers package for this "
        f"kernel): vmlinux's exports read from {pk.vmlinuz.name} instead (modules' from their .ko files)"]
    exports = vmlinuz_exports(pk.vmlinuz)
    rows = store.query("MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE m.kernel = $k AND m.name = 'vmlinux' "
                       "RETURN s.name, e.gpl, e.namespace, e.crc", {"k": pk.release}).rows
    assert set(rows) == {(e.symbol, e.gpl, e.namespace, e.crc) for e in exports}
    # depmod, given these exports as Module.symvers, finds every symbol the modules need
    # (no "needs unknown symbol") and the same dependencies.
    dep = modules_dep(pk, tmp_path)
    proj = KernelProjection.from_store(store, pk.release)
    g = proj.to_networkx()

    def rel(name: str) -> str:
        return os.path.relpath(proj.modules[name].path, pk.modules_dir)

    ours = {rel(name): {rel(d) for d in nx.descendants(g, name)} for name, m in proj.modules.items() if m.path}
    assert ours == dep


# 7.2: module-restricted exports, one export table with flags, no modversions --------------------

def test_module_namespace_export_breaks_only_the_modules_it_names(kernels):
    k = kernels("sid-7.2")
    users = sorted(k.proj.importers("write_ibpb"))
    assert [e.namespace for e in k.proj.exports["write_ibpb"]] == ["module:kvm,kvm-amd,kvm-intel"]
    r = what_if(k.proj, parse_changes(unexport=["write_ibpb"]))
    direct = {b.module for b in r.broken if b.direct}
    assert {"kvm_amd", "kvm_intel"} <= direct and direct == set(users)
    assert r.already_broken == []


def test_diff_61_to_72_crc_unknown_and_gpl_as_symvers(kernels, tmp_path):
    a, b = kernels("bookworm-6.1.0-50"), kernels("sid-7.2")
    with open_store(tmp_path / "two.lbdb") as store:
        for k in (a, b):
            load_kernel(store, [f"debian:{k.release}"])
        d = diff_kernels(store, a.release, b.release)
    assert d.changes["crc"] == []  # 7.2 has no CRCs: unknown, never "changed"

    def symvers(k):
        return {e.export.symbol: e.export for e in read_symvers(k.packages.symvers)[0]}

    sa, sb = symvers(a), symvers(b)
    both = sa.keys() & sb.keys()
    assert {e.symbol for e in d.changes["gpl_only"]} == {s for s in both if sb[s].gpl and not sa[s].gpl}
    assert {e.symbol for e in d.changes["not_gpl_only"]} == {s for s in both if sa[s].gpl and not sb[s].gpl}


def test_non_gpl_module_refused_gpl_only_module_exports_on_72(kernels):
    """A module with a non-GPL licence importing what 7.2's kvm exports (GPL-only, read from its
    __kflagstab) gets a gpl-only break for each, in modpost's words."""
    from ksymgraph.queries.check import check_modules

    k = kernels("sid-7.2")
    amd = k.proj.module_data("kvm_amd")
    blob = amd._replace(info=amd.info._replace(name="blob", path="/tmp/blob.ko", license="Proprietary", intree=False))
    from_kvm = {s for s in blob.imports.symbols for e in k.proj.exports.get(s, ()) if e.module == "kvm" and e.gpl}
    assert len(from_kvm) > 50
    [verdict] = check_modules(k.proj, [blob]).modules
    gpl = {r.symbol for r in verdict.reasons if r.rule == "gpl-only"}
    assert from_kvm <= gpl
    assert f"GPL-incompatible module blob.ko uses GPL-only symbol '{sorted(from_kvm)[0]}'" in {
        r.message for r in verdict.reasons}
