"""The ELF reader on hermetic modules: every ksymtab layout, both ELF classes, both byte orders,
compressed files, and agreement with pyelftools."""

from __future__ import annotations

import gzip
import lzma
import struct

import pytest
import zstandard
from elftools.elf.elffile import ELFFile

from conftest import COMPILERS, LAYOUTS, MODULE_SOURCES, compile_module
from ksymgraph.loaders.elf import module_name_from_path
from ksymgraph.loaders.modules import find_module_files, read_module_file

CORE_A_EXPORTS = {
    # symbol: (gpl, namespace, crc)
    "a_plain": (False, "", 0x11110000),
    "a_gpl": (True, "", 0x22220000),
    "a_ns": (True, "A_NS", 0x44440000),
    "a_data": (False, "", 0xDEADBEEF),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", COMPILERS)
def test_exports_imports_every_layout_and_arch(tmp_path, arch, layout):
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko", arch, layout)
    m = read_module_file(str(ko))
    got = {e.symbol: (e.gpl, e.namespace, e.crc) for e in m.exports}
    want = dict(CORE_A_EXPORTS)
    if layout == "absolute":  # before 5.4 there are no namespaces
        want["a_ns"] = (True, "", 0x44440000)
    assert got == want
    assert {(i.symbol, i.crc, i.weak) for i in m.import_records()} == {("kfree", 0x037A0CBA, False), ("_printk", 0x92997ED8, False)}
    assert m.info.name == "core_a"
    assert m.info.license == "GPL"
    assert m.info.intree is True
    assert m.info.vermagic.startswith("6.1.0-fixture ")


def test_modinfo_fields(tmp_path):
    ko = compile_module(MODULE_SOURCES / "user_b.c", tmp_path / "user_b.ko")
    m = read_module_file(str(ko))
    assert m.info.import_ns == ("A_NS",)
    assert m.info.depends == ("core_a",)
    assert m.info.license == "GPL v2"
    assert [(e.symbol, e.gpl) for e in m.exports] == [("b_fn", True)]
    assert {i.symbol for i in m.import_records()} == {"a_plain", "a_ns"}


def test_weak_import_flagged(tmp_path):
    m = read_module_file(str(compile_module(MODULE_SOURCES / "weak_e.c", tmp_path / "weak_e.ko")))
    assert {(i.symbol, i.weak) for i in m.import_records()} == {("maybe_there", True), ("_printk", False)}
    assert m.exports == []


def test_duplicate_undefined_name_keeps_the_first(tmp_path):
    """ld never writes one undefined name twice, but a hand-edited file can: the first entry wins,
    with its own binding. Here the second undefined symbol is renamed to the first and made weak."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko")
    data = bytearray(ko.read_bytes())
    with open(ko, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        base, size = symtab["sh_offset"], symtab["sh_entsize"]
        und = [(i, sym) for i, sym in enumerate(symtab.iter_symbols())
               if sym["st_shndx"] == "SHN_UNDEF" and sym.name]
    assert sorted(sym.name for _i, sym in und) == ["_printk", "kfree"]
    (_i, first), (second, _sym) = und
    at = base + second * size  # Elf64_Sym: st_name (u32), then st_info (bind << 4 | type)
    struct.pack_into("<I", data, at, first["st_name"])
    data[at + 4] = (2 << 4) | (data[at + 4] & 0xF)  # STB_WEAK
    patched = tmp_path / "core_a_dup.ko"
    patched.write_bytes(data)
    crcs = {"kfree": 0x037A0CBA, "_printk": 0x92997ED8}
    assert [(i.symbol, i.crc, i.weak) for i in read_module_file(str(patched)).import_records()] == [
        (first.name, crcs[first.name], False)]


def test_module_name_from_path():
    assert module_name_from_path("/x/drivers/usb/storage/usb-storage.ko.zst") == "usb_storage"
    assert module_name_from_path("a/b/snd-hda-codec.ko") == "snd_hda_codec"
    assert module_name_from_path("drivers/md/dm-mod") == "dm_mod"


@pytest.mark.parametrize("suffix,compress", [
    (".ko.xz", lzma.compress),
    (".ko.gz", gzip.compress),
    (".ko.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_compressed_modules(tmp_path, suffix, compress):
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "build" / "core_a.ko")
    packed = tmp_path / "mods" / f"core_a{suffix}"
    packed.parent.mkdir()
    packed.write_bytes(compress(ko.read_bytes()))
    assert find_module_files(tmp_path / "mods") == [str(packed)]
    m = read_module_file(str(packed))
    assert m.info.name == "core_a"
    assert {e.symbol for e in m.exports} == set(CORE_A_EXPORTS)


def pyelftools_interface(path: str) -> tuple[set, set]:
    """Exports (symbol, gpl) and imports (symbol) the slow, obvious way, with pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        names = {i: s.name for i, s in enumerate(elf.iter_sections())}
        exports, imports = set(), set()
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if shndx == "SHN_UNDEF":
                if sym.name and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                    imports.add(sym.name)
            elif isinstance(shndx, int) and sym.name.startswith("__ksymtab_"):
                sec = names[shndx]
                if sec in ("__ksymtab", "__ksymtab_gpl"):
                    exports.add((sym.name[len("__ksymtab_"):], sec == "__ksymtab_gpl"))
    return exports, imports


@pytest.mark.parametrize("arch", COMPILERS)
def test_agrees_with_pyelftools(tmp_path, arch):
    for src in sorted(MODULE_SOURCES.glob("*.c")):
        ko = compile_module(src, tmp_path / f"{src.stem}.ko", arch)
        m = read_module_file(str(ko))
        exports, imports = pyelftools_interface(str(ko))
        assert {(e.symbol, e.gpl) for e in m.exports} == exports, src.name
        assert {i.symbol for i in m.import_records()} == imports, src.name
