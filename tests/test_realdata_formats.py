"""Module formats from Debian 6.1 to 7.2, on the real packages: exports read from every ``.ko``
equal Module.symvers, import CRCs and the layout CRC equal the kernel's, and the export-table
sections each kernel's modules carry are the ones the format history says.

* bookworm 6.1 (``.ko``) and trixie 6.12 (``.ko.xz``): ``__ksymtab`` + ``__ksymtab_gpl``, CRCs in
  ``__kcrctab[_gpl]``, ``__versions`` (``CONFIG_MODVERSIONS=y``);
* sid 7.2 (``.ko.xz``, in ``linux-modules-7.2.N+deb14-amd64``, fetched through a private apt
  configuration): one ``__ksymtab`` and ``__kflagstab``, no ``_gpl`` sections, and no CRCs at all:
  Debian builds 7.2 without ``CONFIG_MODVERSIONS`` (its Module.symvers says ``0x00000000``).
"""

from __future__ import annotations

import io
import lzma
import random
import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ksymgraph.loaders.debian import available_releases, fetch_package
from ksymgraph.loaders.modules import find_module_files, for_each_module, read_module_file
from ksymgraph.loaders.symvers import read_symvers
from test_elf import pyelftools_interface

pytestmark = pytest.mark.realdata

EXPORT_SECTIONS = {"__ksymtab", "__ksymtab_gpl", "__kcrctab", "__kcrctab_gpl", "__kflagstab", "__ksymtab_strings",
                   "__versions", "__version_ext_crcs", "__version_ext_names"}


class Kernel72:
    """The modules, Module.symvers and config of Debian's 7.2 from sid."""

    def __init__(self, release: str, modules_dir: Path, symvers: Path, config: Path):
        self.release, self.modules_dir, self.symvers, self.config = release, modules_dir, symvers, config


@pytest.fixture(scope="module")
def kernel72() -> Kernel72:
    names = available_releases(r"^linux-modules-7\.2\.[0-9]+\+deb14-amd64$", suite="sid")
    if not names:
        pytest.fail("no linux-modules-7.2.N+deb14-amd64 in sid")
    name = max(names, key=lambda n: int(re.search(r"7\.2\.(\d+)", n).group(1)))
    release = name[len("linux-modules-"):]
    modules, _version = fetch_package(name, "sid")
    headers, _version = fetch_package(f"linux-headers-{release}", "sid")
    build = headers / "usr" / "src" / f"linux-headers-{release}"
    return Kernel72(release, modules / "usr" / "lib" / "modules" / release, build / "Module.symvers", build / ".config")


def read_all(modules_dir: Path) -> list:
    results = list(for_each_module(find_module_files(modules_dir)))
    assert [r for r in results if not hasattr(r, "info")] == []
    return results


def module_exports(symvers: Path) -> tuple[set, dict]:
    entries, skipped = read_symvers(symvers)
    assert skipped == []
    exports = {(e.export.module, e.export.symbol, e.export.gpl, e.export.namespace, e.export.crc)
               for e in entries if e.export.module != "vmlinux"}
    return exports, {e.export.symbol: e.export.crc for e in entries}


def image(path: str) -> bytes:
    """A module file's ELF image (decompressed with the standard library, not the reader)."""
    with open(path, "rb") as f:
        data = f.read()
    return lzma.decompress(data) if path.endswith(".xz") else data


def export_sections(modules_dir: Path, sample: int = 150) -> dict[frozenset, int]:
    """How many of a seeded sample of modules carry each set of export-table sections (pyelftools)."""
    out: dict[frozenset, int] = {}
    for path in random.Random(3).sample(find_module_files(modules_dir), sample):
        names = frozenset(s.name for s in ELFFile(io.BytesIO(image(path))).iter_sections()) & EXPORT_SECTIONS
        out[names] = out.get(names, 0) + 1
    return out


def test_72_exports_equal_module_symvers(kernel72):
    """All 7.2 exports of modules, GPL-only (from __kflagstab) and namespace as Module.symvers has
    them; no CRCs, since Debian's 7.2 has no CONFIG_MODVERSIONS."""
    assert "# CONFIG_MODVERSIONS is not set" in kernel72.config.read_text().splitlines()
    want, crcs = module_exports(kernel72.symvers)
    assert set(crcs.values()) == {0}
    results = read_all(kernel72.modules_dir)
    assert len(results) > 4000
    ours = {(e.module, e.symbol, e.gpl, e.namespace) for m in results for e in m.exports}
    assert ours == {w[:4] for w in want}
    assert sum(1 for w in want if w[2]) > 9000  # the GPL-only ones, read as plain before __kflagstab
    assert {e.crc for m in results for e in m.exports} == {None}
    assert {i for m in results for i in m.imports.crcs} == {None}
    assert {(m.info.modversions, m.info.layout_crc) for m in results} == {(False, None)}


def test_72_export_sections(kernel72):
    """7.2's modules: __ksymtab + __kflagstab, never a _gpl section, no CRC or version section."""
    found = export_sections(kernel72.modules_dir)
    assert set(found) == {frozenset(), frozenset({"__ksymtab", "__kflagstab", "__ksymtab_strings"})}


def test_72_flags_by_entry_equal_flags_by_symbol(kernel72):
    """The reader takes entry i's flag from byte i of __kflagstab, as the kernel does; the
    __flags_<sym> symbols modpost emits name the same bytes, and every byte is 0 or 1."""
    for path in random.Random(5).sample(find_module_files(kernel72.modules_dir), 300):
        data = image(path)
        flagstab = ELFFile(io.BytesIO(data)).get_section_by_name("__kflagstab")
        if flagstab is not None:
            assert set(flagstab.data()) <= {0, 1}, path
        exports, _imports = pyelftools_interface(data)
        assert {(e.symbol, e.gpl) for e in read_module_file(path).exports} == exports, path


def test_612_exports_imports_and_layout_equal_module_symvers(trixie_kernel):
    """Trixie's 6.12 (.ko.xz): exports equal Module.symvers with their CRCs, every import's
    __versions CRC is the CRC Module.symvers gives its exporter, and every module's layout CRC is
    module_layout's."""
    want, crcs = module_exports(trixie_kernel.symvers)
    results = read_all(trixie_kernel.modules_dir)
    assert {(e.module, e.symbol, e.gpl, e.namespace, e.crc) for m in results for e in m.exports} == want
    imports = [(i.symbol, i.crc) for m in results for i in m.import_records()]
    assert len(imports) > 150_000
    assert [(s, c) for s, c in imports if crcs.get(s) != c] == []
    assert {(m.info.modversions, m.info.layout_crc) for m in results} == {(True, crcs["module_layout"])}


def test_612_export_sections(trixie_kernel):
    found = export_sections(trixie_kernel.modules_dir)
    assert frozenset({"__versions"}) in found
    assert any("__ksymtab_gpl" in s and "__kcrctab_gpl" in s for s in found)
    assert all("__versions" in s and not s & {"__kflagstab", "__version_ext_crcs", "__version_ext_names"}
               for s in found)


def test_61_imports_and_layout_equal_module_symvers(debian_kernel):
    """Bookworm's 6.1 (.ko): every import's CRC and every layout CRC as Module.symvers has them."""
    _want, crcs = module_exports(debian_kernel.symvers)
    results = read_all(debian_kernel.modules_dir)
    imports = [(i.symbol, i.crc) for m in results for i in m.import_records()]
    assert len(imports) > 150_000
    assert [(s, c) for s, c in imports if crcs.get(s) != c] == []
    assert {(m.info.modversions, m.info.layout_crc) for m in results} == {(True, crcs["module_layout"])}
