"""The load rules on Debian's own kernels, against kmod's depmod and the modules' own vermagic.

* modversions: a kernel made of 6.1.0-47's modules with 6.1.0-50's Module.symvers (what a DKMS
  module built for -47 meets after the ABI bump): the (module, symbol) pairs ksymgraph refuses for
  their CRCs equal depmod -e -E's "disagrees about version of symbol" warnings, exactly;
* ``check`` of -47's zram.ko against the stored -50 kernel lists the same 56 symbols;
* vermagic: a module of Debian's -rt flavour checked against the same release's plain kernel is
  refused with the kernel's message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.loaders.debian import fetch_kernel, fetch_package
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.queries.check import check_modules
from ksymgraph.queries.whatif import failing_modules

pytestmark = pytest.mark.realdata

OLD_ABI = "6.1.0-47-amd64"
DISAGREES = re.compile(r"^depmod: WARNING: (\S+) disagrees about version of symbol (\S+)$")


@pytest.fixture(scope="module")
def kernel_47():
    return fetch_kernel(OLD_ABI)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, kernel_47, debian_kernel):
    """-47's modules with -50's Module.symvers, loaded as one kernel: (projection, load summary)."""
    with open_store(tmp_path_factory.mktemp("mixed") / "graph.lbdb") as store:
        s = load_kernel(store, [str(kernel_47.modules_dir)], kernel="47-on-50", symvers=str(debian_kernel.symvers))
        return KernelProjection.from_store(store, s.kernel), s


def depmod_disagreements(tmp_path: Path, modules_dir: Path, release: str, symvers: Path) -> set[tuple[str, str]]:
    """(module file relative to the tree, symbol) of every "disagrees about version" warning."""
    root = tmp_path / "root"
    shutil.copytree(modules_dir, root / "lib" / "modules" / release, copy_function=os.link)
    p = subprocess.run([shutil.which("depmod") or "/usr/sbin/depmod", "-b", str(root), "-e", "-E", str(symvers),
                        release], capture_output=True, text=True, check=True)
    base = root / "lib" / "modules" / release
    return {(os.path.relpath(m.group(1), base), m.group(2))
            for m in map(DISAGREES.match, p.stderr.splitlines()) if m}


def test_crc_refusals_equal_depmod_disagreements(mixed, kernel_47, debian_kernel, tmp_path):
    proj, summary = mixed
    assert summary.build.modversions is True and summary.build.vermagic.startswith(OLD_ABI)
    warnings = depmod_disagreements(tmp_path, kernel_47.modules_dir, OLD_ABI, debian_kernel.symvers)
    failing = failing_modules(proj)
    ours = {(os.path.relpath(proj.modules[m].path, kernel_47.modules_dir), r.symbol)
            for m, reasons in failing.items() for r in reasons if r.rule == "modversions"}
    print(f"\n{len(warnings)} depmod warnings, {len(ours)} CRC refusals, {len(failing)} of "
          f"{len(proj.modules)} modules refused")
    assert len(warnings) > 10_000
    assert ours == warnings
    # module_layout, which the kernel checks before any symbol (check_modstruct_version()), is in
    # both: where -47 recorded another module_layout CRC than -50 exports, the module is refused.
    entries, _ = read_symvers(debian_kernel.symvers)
    layout_50 = next(e.export.crc for e in entries if e.export.symbol == "module_layout")
    layout = {m: [r for r in rs if r.symbol == "module_layout"] for m, rs in failing.items()}
    for name, m in proj.modules.items():
        if m.path:
            assert bool(layout.get(name)) == (m.layout_crc != layout_50), name


def test_check_lists_zram_crcs(debian_loaded, debian_kernel, kernel_47, tmp_path):
    store, summary = debian_loaded
    zram = read_module_file(str(kernel_47.modules_dir / "kernel/drivers/block/zram/zram.ko"))
    proj = KernelProjection.from_store(store, summary.kernel)
    result = check_modules(proj, [zram])
    [verdict] = result.modules
    crcs = [r for r in verdict.reasons if r.rule == "modversions"]
    warnings = {s for f, s in depmod_disagreements(tmp_path, kernel_47.modules_dir, OLD_ABI, debian_kernel.symvers)
                if f == "kernel/drivers/block/zram/zram.ko"}
    assert verdict.loads is False
    assert len(crcs) == len(warnings) == 56  # module_layout among them
    assert {r.symbol for r in crcs} == warnings
    assert all(r.message == f"zram: disagrees about version of symbol {r.symbol}" for r in crcs)
    assert not [r for r in verdict.reasons if r.rule == "vermagic"]  # -47 on -50: the release is skipped


def test_rt_module_refused_by_the_plain_kernel(debian_loaded):
    store, summary = debian_loaded
    rt_release = summary.kernel.replace("-amd64", "-rt-amd64")
    image, _version = fetch_package(f"linux-image-{rt_release}")
    zram = read_module_file(str(image / "lib/modules" / rt_release / "kernel/drivers/block/zram/zram.ko"))
    proj = KernelProjection.from_store(store, summary.kernel)
    [verdict] = check_modules(proj, [zram]).modules
    magic = [r for r in verdict.reasons if r.rule == "vermagic"]
    assert zram.info.vermagic == f"{rt_release} SMP preempt_rt mod_unload modversions "
    assert [r.message for r in magic] == [
        f"zram: version magic '{zram.info.vermagic}' should be '{proj.build.vermagic}'"]
    assert proj.build.vermagic == f"{summary.kernel} SMP preempt mod_unload modversions "
    assert proj.build.source == f"config-{summary.kernel}"
