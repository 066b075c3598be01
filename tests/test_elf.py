"""The ELF reader on hermetic modules: every ksymtab layout (7.1+'s ``__kflagstab`` among them),
symbol versions (``__versions`` and 6.14+'s extended ones), both ELF classes, both byte orders,
compressed files, and agreement with pyelftools."""

from __future__ import annotations

import gzip
import io
import lzma
import struct
from pathlib import Path

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
    assert m.info.modversions is True
    assert m.info.layout_crc == recorded_versions(ko).get("module_layout")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", COMPILERS)
def test_kflagstab_every_layout_and_arch(tmp_path, arch, layout):
    """7.1+: one __ksymtab, GPL-only a bit of __kflagstab; no __ksymtab_gpl, no __kcrctab_gpl."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko", arch, layout, ("KFLAGSTAB",))
    with open(ko, "rb") as f:
        names = {s.name for s in ELFFile(f).iter_sections()}
    assert {"__ksymtab", "__kflagstab", "__kcrctab"} <= names
    assert not names & {"__ksymtab_gpl", "__kcrctab_gpl"}
    m = read_module_file(str(ko))
    assert {e.symbol: (e.gpl, e.namespace, e.crc) for e in m.exports} == CORE_A_EXPORTS
    assert {(e.symbol, e.gpl) for e in m.exports} == pyelftools_interface(str(ko))[0]


def test_kflagstab_other_bits_are_ignored(tmp_path):
    """The kernel tests KSYM_FLAG_GPL_ONLY (bit 0) alone; a byte 0xfe is not GPL-only, 0x03 is."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko", defines=("KFLAGSTAB",))
    data = bytearray(ko.read_bytes())
    flags = section(ko, "__kflagstab")
    at = flags["sh_offset"]
    assert bytes(data[at:at + 4]) == b"\0\1\1\0"  # a_plain, a_gpl, a_ns, a_data as defined
    data[at:at + 4] = b"\xfe\x03\x02\x01"
    ko.write_bytes(data)
    assert {e.symbol: e.gpl for e in read_module_file(str(ko)).exports} == {
        "a_plain": False, "a_gpl": True, "a_ns": False, "a_data": True}


def test_kflagstab_makes_ksymtab_gpl_obsolete(tmp_path):
    """A module with __kflagstab and a __ksymtab_gpl (never built by a released kernel): a kernel that
    reads __kflagstab ignores __ksymtab_gpl, and so does the reader."""
    src = tmp_path / "both.c"
    src.write_text('#include "fixture_module.h"\n'
                   "int old_gpl(int x) { return x; }\n"
                   '__KSYMTAB_ENTRY(old_gpl, "_gpl", "");\n'
                   "int new_gpl(int x) { return x; }\n"
                   "EXPORT_SYMBOL_GPL(new_gpl);\n"
                   'MODULE_LICENSE("GPL");\n')
    m = read_module_file(str(compile_module(src, tmp_path / "both.ko", defines=("KFLAGSTAB",))))
    assert [(e.symbol, e.gpl) for e in m.exports] == [("new_gpl", True)]


@pytest.mark.parametrize("basic", [True, False], ids=["with-versions", "ext-only"])
@pytest.mark.parametrize("arch", COMPILERS)
def test_extended_modversions(tmp_path, arch, basic):
    """6.14+: __version_ext_crcs/__version_ext_names, with or without __versions; a name longer than a
    __versions record holds is only there; module_layout's CRC is the layout CRC, not an import."""
    long_name = "a_symbol_whose_name_is_far_too_long_for_a_versions_record_of_64_bytes"
    src = tmp_path / "ext.c"
    src.write_text('#include "fixture_module.h"\n'
                   f"extern int {long_name}(int);\n"
                   "extern void kfree(const void *p);\n"
                   f"int f(int x) {{ kfree(0); return {long_name}(x); }}\n"
                   'MODULE_LICENSE("GPL");\n'
                   "MODULE_VERSION_CRC(kfree, 0x037a0cba);\n"
                   f"MODULE_VERSION_CRC_LONG({long_name}, 0xfedcba98);\n")
    defines = ("EXT_MODVERSIONS", "LAYOUT_CRC=0x8badf00d", *(() if basic else ("NO_BASIC_MODVERSIONS",)))
    ko = compile_module(src, tmp_path / "ext.ko", arch, defines=defines)
    assert ("__versions" in sections(ko)) is basic
    m = read_module_file(str(ko))
    assert {(i.symbol, i.crc) for i in m.import_records()} == {("kfree", 0x037A0CBA), (long_name, 0xFEDCBA98)}
    assert m.info.modversions is True
    assert m.info.layout_crc == 0x8BADF00D


def test_extended_versions_win_over_basic_ones(tmp_path):
    """check_version(): with extended versions present, __versions is not consulted. A __versions CRC
    changed by hand does not change what the reader reports; an extended one does."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko",
                        defines=("EXT_MODVERSIONS", "LAYOUT_CRC=0x12345678"))
    data = bytearray(ko.read_bytes())
    versions = section(ko, "__versions")
    ext = section(ko, "__version_ext_crcs")
    for i in range(versions["sh_size"] // 64):  # every __versions CRC to 0xdead
        struct.pack_into("<Q", data, versions["sh_offset"] + 64 * i, 0xDEAD)
    ko.write_bytes(data)
    m = read_module_file(str(ko))
    assert {(i.symbol, i.crc) for i in m.import_records()} == {("kfree", 0x037A0CBA), ("_printk", 0x92997ED8)}
    assert m.info.layout_crc == 0x12345678
    struct.pack_into("<I", data, ext["sh_offset"], 0xBEEF)  # the first extended entry: module_layout
    ko.write_bytes(data)
    assert read_module_file(str(ko)).info.layout_crc == 0xBEEF


def test_no_versions_no_modversions(tmp_path):
    src = tmp_path / "plain.c"
    src.write_text('#include "fixture_module.h"\n'
                   "extern void kfree(const void *p);\n"
                   "void f(void) { kfree(0); }\n"
                   'MODULE_LICENSE("GPL");\n')
    ko = compile_module(src, tmp_path / "plain.ko", defines=("NO_MODVERSIONS",))
    assert "__versions" not in sections(ko)
    m = read_module_file(str(ko))
    assert m.info.modversions is False and m.info.layout_crc is None
    assert [(i.symbol, i.crc) for i in m.import_records()] == [("kfree", None)]


def test_first_versions_record_of_a_name_wins(tmp_path):
    """Two __versions records for one name: check_version() stops at the first."""
    src = tmp_path / "twice.c"
    src.write_text('#include "fixture_module.h"\n'
                   "extern void kfree(const void *p);\n"
                   "void f(void) { kfree(0); }\n"
                   "MODULE_VERSION_CRC(kfree, 0x11111111);\n"
                   "MODULE_VERSION_CRC(kfree, 0x22222222);\n")
    ko = compile_module(src, tmp_path / "twice.ko")
    with open(ko, "rb") as f:
        raw = ELFFile(f).get_section_by_name("__versions").data()
    records = [struct.unpack_from("<Q56s", raw, at) for at in range(0, len(raw), 64)]
    kfree = [crc for crc, name in records if name.rstrip(b"\0") == b"kfree"]  # in the order gcc put them
    assert sorted(kfree) == [0x11111111, 0x22222222]
    assert [i.crc for i in read_module_file(str(ko)).import_records()] == [kfree[0]]


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


def sections(path: Path) -> set[str]:
    """The section names of an ELF file, read with pyelftools."""
    with open(path, "rb") as f:
        return {s.name for s in ELFFile(f).iter_sections()}


def section(path: Path, name: str) -> dict:
    """The header of section ``name`` (sh_offset, sh_size, ...) and where it sits in the section
    table (``at``: the file offset of its header), read with pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for i, s in enumerate(elf.iter_sections()):
            if s.name == name:
                return {**dict(s.header), "at": elf["e_shoff"] + i * elf["e_shentsize"],
                        "bits": elf.elfclass, "little": elf.little_endian}
    raise KeyError(name)


def patch_section(path: Path, name: str, *, size: int | None = None, name_shift: int = 0) -> None:
    """Rewrite the header of section ``name`` in place: its ``sh_size``, or its ``sh_name`` moved by
    ``name_shift`` bytes (``+1`` turns ``__versions`` into ``_versions``: the section is gone)."""
    s = section(path, name)
    data = bytearray(path.read_bytes())
    e = "<" if s["little"] else ">"
    if size is not None:
        if s["bits"] == 64:
            struct.pack_into(e + "Q", data, s["at"] + 32, size)
        else:
            struct.pack_into(e + "I", data, s["at"] + 20, size)
    if name_shift:
        struct.pack_into(e + "I", data, s["at"], s["sh_name"] + name_shift)
    path.write_bytes(data)


def recorded_versions(path: Path) -> dict[str, int]:
    """The CRCs a module file records, read with pyelftools and struct: from the extended sections
    when it has them, else from __versions (the first record of a name wins)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        e = "<" if elf.little_endian else ">"
        crcs, names = elf.get_section_by_name("__version_ext_crcs"), elf.get_section_by_name("__version_ext_names")
        if crcs is not None:
            pairs = zip(names.data().split(b"\0"), struct.unpack(f"{e}{crcs['sh_size'] // 4}I", crcs.data()))
        else:
            raw = elf.get_section_by_name("__versions").data() if elf.get_section_by_name("__versions") else b""
            record = e + ("Q56s" if elf.elfclass == 64 else "I60s")
            pairs = ((name.rstrip(b"\0"), crc) for crc, name in struct.iter_unpack(record, raw))
        out: dict[str, int] = {}
        for name, crc in pairs:
            out.setdefault(name.decode(), crc)
        return out


def pyelftools_interface(path: str | bytes) -> tuple[set, set]:
    """Exports (symbol, gpl) and imports (symbol) the slow, obvious way, with pyelftools, of a file
    or of an image's bytes. With a ``__kflagstab``, GPL-only is bit 0 of the byte its
    ``__flags_<sym>`` symbol names (the reader finds it by entry index instead)."""
    with (io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")) as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        names = {i: s.name for i, s in enumerate(elf.iter_sections())}
        flagstab = elf.get_section_by_name("__kflagstab")
        flags = {sym.name[len("__flags_"):]: flagstab.data()[sym["st_value"]] & 1
                 for sym in symtab.iter_symbols() if sym.name.startswith("__flags_")} if flagstab else None
        exports, imports = set(), set()
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if shndx == "SHN_UNDEF":
                if sym.name and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                    imports.add(sym.name)
            elif isinstance(shndx, int) and sym.name.startswith("__ksymtab_"):
                sec = names[shndx]
                name = sym.name[len("__ksymtab_"):]
                if flags is not None and sec == "__ksymtab":
                    exports.add((name, bool(flags[name])))
                elif flags is None and sec in ("__ksymtab", "__ksymtab_gpl"):
                    exports.add((name, sec == "__ksymtab_gpl"))
    return exports, imports


@pytest.mark.parametrize("defines", [(), ("KFLAGSTAB", "EXT_MODVERSIONS")], ids=["6.1", "7.1"])
@pytest.mark.parametrize("arch", COMPILERS)
def test_agrees_with_pyelftools(tmp_path, arch, defines):
    for src in sorted(MODULE_SOURCES.glob("*.c")):
        ko = compile_module(src, tmp_path / f"{src.stem}.ko", arch, defines=defines)
        m = read_module_file(str(ko))
        exports, imports = pyelftools_interface(str(ko))
        assert {(e.symbol, e.gpl) for e in m.exports} == exports, src.name
        assert {i.symbol for i in m.import_records()} == imports, src.name
