"""References and calls through macros on real data: two drivers of linux-source-6.1 with the real
headers their macros come from, joined with their ``.ko`` files from Debian's 6.1 image.

The oracle is the compiler: each symbol checked is first found among the module's real imports
(its undefined symbols, read from the ``.ko``), then as a site of the source graph with the chain
of 6.1's own macros (include/linux/moduleparam.h, i2c.h, device/driver.h, mutex.h, spinlock.h).
Copying the dozen files keeps this under a few seconds (the whole tree is tests/test_source_realdata.py's).
"""

from __future__ import annotations

import re
import shutil

import pytest

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders import cparse, macros, trees
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.queries.callsites import call_sites

pytestmark = pytest.mark.realdata

DRIVERS = ("drivers/misc/eeprom/at24.c", "drivers/misc/eeprom/max6875.c")
HEADERS = ("include/linux/i2c.h", "include/linux/moduleparam.h", "include/linux/mutex.h", "include/linux/printk.h",
           "include/linux/jiffies.h", "include/linux/spinlock.h", "include/linux/device/driver.h",
           "arch/x86/include/asm/current.h")


def lines_of(path, pattern: str) -> list[int]:
    """1-based lines matching ``pattern`` (found independently of the loader)."""
    return [n for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)]


@pytest.fixture(scope="module")
def kernel_source(debian_kernel):
    return trees.debian_source_tree(debian_kernel.release)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, debian_kernel, kernel_source):
    """(store, tree): at24.ko and max6875.ko of the Debian kernel, with Module.symvers, and a tree of
    their two C files and the real headers, attributed by .mod files."""
    tree = tmp_path_factory.mktemp("real") / "eeprom-src"
    for rel in (*DRIVERS, *HEADERS):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(kernel_source / rel, tree / rel)
    for rel in DRIVERS:
        (tree / rel).with_suffix(".mod").write_text(f"{tree / rel[:-2]}.o\n")
    kos = [str(debian_kernel.modules_dir / "kernel" / rel.replace(".c", ".ko")) for rel in DRIVERS]
    store = open_store(tmp_path_factory.mktemp("realdb") / "graph.lbdb")
    load_kernel(store, kos, kernel=debian_kernel.release, symvers=str(debian_kernel.symvers), workers=1,
                source_dirs=[str(tree)])
    yield store, tree
    store.close()


def imports_of(debian_kernel, rel: str) -> set[str]:
    return set(read_module_file(str(debian_kernel.modules_dir / "kernel" / rel.replace(".c", ".ko"))).imports.symbols)


def test_at24_module_param_jiffies_and_mutex_init(loaded, debian_kernel):
    store, tree = loaded
    wanted = {"param_ops_uint", "jiffies", "__mutex_init", "i2c_register_driver", "i2c_del_driver"}
    assert wanted <= imports_of(debian_kernel, DRIVERS[0])
    sites = call_sites(store, debian_kernel.release, ["at24"], sorted(wanted))
    src = tree / DRIVERS[0]
    by = {}
    for s in sites:
        by.setdefault(s.symbol, []).append((s.line, s.kind, s.reference, s.through))
    assert {s.symbol for s in sites} == wanted
    # module_param_named(io_limit, at24_io_limit, uint, 0): &param_ops_##type made by pasting
    assert by["param_ops_uint"] == [
        (n, "reference", "initialiser", "reference (initialiser) module_param_named → param_ops_uint")
        for n in lines_of(src, r"^module_param_named\(")]
    # every read of jiffies in a function body (the #include line and comments aside)
    assert [line for line, *_ in by["jiffies"]] == lines_of(src, r"^\s+.*\bjiffies\b")
    assert {tuple(k) for _, *k in by["jiffies"]} == {("reference", "read", "reference (read)")}
    assert by["__mutex_init"] == [(n, "call", None, "mutex_init → __mutex_init")
                                  for n in lines_of(src, r"\bmutex_init\(")]
    assert by["i2c_register_driver"] == [(n, "call", None, "i2c_add_driver → i2c_register_driver")
                                         for n in lines_of(src, r"i2c_add_driver\(")]


def test_max6875_module_i2c_driver(loaded, debian_kernel):
    store, tree = loaded
    wanted = {"i2c_register_driver", "i2c_del_driver", "jiffies", "__mutex_init"}
    assert wanted <= imports_of(debian_kernel, DRIVERS[1])
    sites = call_sites(store, debian_kernel.release, ["max6875"], sorted(wanted))
    src = tree / DRIVERS[1]
    (line,) = lines_of(src, r"^module_i2c_driver\(")
    got = {(s.symbol, s.line, s.function, s.through) for s in sites if s.line == line}
    assert got == {
        ("i2c_register_driver", line, "(file scope)", "module_i2c_driver → i2c_add_driver → i2c_register_driver"),
        ("i2c_del_driver", line, "(file scope)", "module_i2c_driver → i2c_del_driver"),
    }
    assert {s.symbol for s in sites} == wanted


def test_spin_lock_and_printk_chains_in_the_real_headers(kernel_source):
    recs = {d.name: [c.callee for c in cs] for d, cs, _r, _m in
            macros.for_each_macro_record(kernel_source, ["include/linux/spinlock.h", "include/linux/printk.h",
                                                         "arch/x86/include/asm/current.h"])}
    assert "_raw_spin_lock" in recs["raw_spin_lock"]
    assert "_printk" in recs["printk"]            # printk_index_wrap(_printk, fmt, ##__VA_ARGS__)
    assert recs["current"] == ["get_current"]     # #define current get_current()
    r = cparse.parse_file(kernel_source / "include/linux/spinlock.h", kernel_source, [])
    assert ("spin_lock", "raw_spin_lock") in {(c.caller, c.callee) for c in r.calls}
    r = cparse.parse_file(kernel_source / "arch/x86/include/asm/current.h", kernel_source, [])
    assert ("get_current", "current_task") in {(x.function, x.symbol) for x in r.references}
