"""A real Debian 6.1 kernel, downloaded with apt-get and cached, checked against kmod's depmod.

* the transitive closure of DEPENDS_ON equals depmod's modules.dep, module for module;
* removing a seeded random set of 25 vmlinux exports from a copy of Module.symvers gives, as direct
  breaks, exactly the "needs unknown symbol" warnings of ``depmod -e``;
* exports read from the .ko files equal the module part of Module.symvers;
* the fast ELF reader agrees with pyelftools on a seeded sample of real modules.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import networkx as nx
import pytest

from ksymgraph.graph.projection import KernelProjection
from ksymgraph.loaders.modules import find_module_files, read_module_file
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.queries.whatif import failing_modules, parse_changes, what_if
from test_elf import pyelftools_interface

pytestmark = pytest.mark.realdata

WARNING = re.compile(r"^depmod: WARNING: (\S+) needs unknown symbol (\S+)$")


def depmod(root: Path, release: str, symvers: Path) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """Run ``depmod -b root -e -E symvers release``: (modules.dep as {module: deps}, unknown-symbol warnings)."""
    exe = shutil.which("depmod") or "/usr/sbin/depmod"
    p = subprocess.run([exe, "-b", str(root), "-e", "-E", str(symvers), release],
                       capture_output=True, text=True, check=True)
    moddir = root / "lib" / "modules" / release
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[str(moddir / mod)] = {str(moddir / d) for d in rest.split()}
    warnings = set()
    for line in p.stderr.splitlines():
        m = WARNING.match(line)
        if m:
            warnings.add((m.group(1), m.group(2)))
    return deps, warnings


@pytest.fixture(scope="module")
def depmod_root(tmp_path_factory, debian_kernel):
    """A hard-linked copy of the image's lib/modules, so depmod can write next to it."""
    root = tmp_path_factory.mktemp("depmod")
    dst = root / "lib" / "modules" / debian_kernel.release
    shutil.copytree(debian_kernel.modules_dir, dst, copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def proj(debian_loaded):
    store, summary = debian_loaded
    return KernelProjection.from_store(store, summary.kernel)


def _relocate(path: str, debian_kernel, depmod_root) -> str:
    rel = os.path.relpath(path, debian_kernel.modules_dir)
    return str(depmod_root / "lib" / "modules" / debian_kernel.release / rel)


def test_load_summary(debian_loaded, debian_kernel):
    _store, s = debian_loaded
    assert s.kernel == debian_kernel.release
    n_files = len(find_module_files(debian_kernel.modules_dir))
    assert n_files > 3000
    assert s.report.modules == n_files + 1  # + vmlinux
    assert s.skipped == []
    assert s.report.exports == sum(1 for _ in open(debian_kernel.symvers))


def test_depends_on_closure_equals_modules_dep(proj, debian_kernel, depmod_root):
    dep, _warnings = depmod(depmod_root, debian_kernel.release, debian_kernel.symvers)
    g = proj.to_networkx()
    ours = {}
    for name, m in proj.modules.items():
        if m.path:
            ours[_relocate(m.path, debian_kernel, depmod_root)] = {
                _relocate(proj.modules[d].path, debian_kernel, depmod_root) for d in nx.descendants(g, name)}
    assert set(ours) == set(dep)
    mismatches = {m: (ours[m] ^ dep[m]) for m in dep if ours[m] != dep[m]}
    assert mismatches == {}, f"{len(mismatches)} modules differ from modules.dep"


def test_removed_exports_equal_depmod_unknown_symbols(proj, debian_kernel, depmod_root, tmp_path):
    entries, skipped = read_symvers(debian_kernel.symvers)
    assert skipped == []
    used = sorted(e.export.symbol for e in entries if e.export.module == "vmlinux" and proj.importers(e.export.symbol))
    removed = set(random.Random(20240611).sample(used, 25))
    copy = tmp_path / "Module.symvers"
    with open(debian_kernel.symvers) as src, open(copy, "w") as dst:
        for line in src:
            if line.split("\t")[1] not in removed:
                dst.write(line)
    _dep, base_warnings = depmod(depmod_root, debian_kernel.release, debian_kernel.symvers)
    _dep, warnings = depmod(depmod_root, debian_kernel.release, copy)
    assert base_warnings == set()
    assert failing_modules(proj) == {}
    result = what_if(proj, parse_changes(unexport=sorted(removed)))
    direct = {(_relocate(b.module and proj.modules[b.module].path, debian_kernel, depmod_root), r.symbol)
              for b in result.broken for r in b.reasons if r.rule == "unknown-symbol"}
    print(f"\n{len(removed)} exports removed: depmod warns {len(warnings)} times, "
          f"ksymgraph finds {len(direct)} direct breaks, {result.summary['inherited']} inherited (depmod: none)")
    assert warnings, "the sample should break something"
    assert direct == warnings


def test_ko_exports_equal_module_symvers(debian_loaded, debian_kernel):
    store, summary = debian_loaded
    assert summary.report.symvers_mismatches == []
    entries, _ = read_symvers(debian_kernel.symvers)
    want = {(e.export.module, e.export.symbol, e.export.gpl, e.export.namespace, e.export.crc)
            for e in entries if e.export.module != "vmlinux"}
    ours = set()
    for path in find_module_files(debian_kernel.modules_dir):
        for e in read_module_file(path).exports:
            ours.add((e.module, e.symbol, e.gpl, e.namespace, e.crc))
    assert len(want) > 10_000
    assert ours == want


def test_elf_reader_agrees_with_pyelftools(debian_kernel):
    files = find_module_files(debian_kernel.modules_dir)
    for path in random.Random(7).sample(files, 300):
        m = read_module_file(path)
        exports, imports = pyelftools_interface(path)
        assert {(e.symbol, e.gpl) for e in m.exports} == exports, path
        assert {i.symbol for i in m.import_records()} == imports, path
