"""Bad input: every broken file gets a clear error naming it and the reason; the rest loads; the
summary counts what was skipped. Plus a fuzz test of the ELF reader."""

from __future__ import annotations

import os
import random
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MODULE_SOURCES, compile_module
from ksymgraph.cli import main
from ksymgraph.graph.load import LoadError, load_kernel
from ksymgraph.graph.connect import open_store
from ksymgraph.loaders.elf import parse_module
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.loaders.records import LoaderError
from ksymgraph.loaders.symvers import read_symvers
from test_elf import patch_section, section


@pytest.fixture(scope="module")
def good_ko(tmp_path_factory):
    return compile_module(MODULE_SOURCES / "core_a.c", tmp_path_factory.mktemp("good") / "core_a.ko").read_bytes()


@pytest.fixture
def bad_tree(tmp_path, good_ko):
    """A module directory with one good module and one of every kind of bad file."""
    d = tmp_path / "mods"
    d.mkdir()
    (d / "good.ko").write_bytes(good_ko)
    (d / "empty.ko").write_bytes(b"")
    (d / "truncated.ko").write_bytes(good_ko[: len(good_ko) // 3])
    (d / "text.ko").write_bytes(b"this is not an ELF file\n")
    (d / "random.ko").write_bytes(random.Random(1).randbytes(4096))
    (d / "exec.ko").write_bytes(good_ko[:16] + b"\x02\x00" + good_ko[18:])  # ET_EXEC
    (d / "bad.ko.xz").write_bytes(b"\xfd7zXZ\x00garbage")
    (d / "dangling.ko").symlink_to(d / "does-not-exist")
    (d / "adir.ko").mkdir()
    (d / "Module.symvers").write_bytes(
        b"0x12345678\tgood_sym\tvmlinux\tEXPORT_SYMBOL\t\n"
        b"0x1234\tonly_two\n"
        b"zzzz\tbad_crc\tvmlinux\tEXPORT_SYMBOL\t\n"
        b"0x1\tbad_type\tvmlinux\tEXPORT_SOMETHING\t\n"
        b"0x2\tbad\xff\xfeutf8\tvmlinux\tEXPORT_SYMBOL\t\n"
        b"0x3\tns_third\tNS\tvmlinux\tEXPORT_SYMBOL_GPL\n"
    )
    return d


EXPECTED_REASONS = {
    "empty.ko": "empty file",
    "truncated.ko": "truncated",
    "text.ko": "not an ELF file",
    "random.ko": "not an ELF file",
    "exec.ko": "not a kernel module: ELF type 2",
    "bad.ko.xz": "cannot decompress",
    "dangling.ko": "No such file or directory",
    "adir.ko": "Is a directory",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REASONS))
def test_each_bad_file_names_file_and_reason(bad_tree, name):
    with pytest.raises(LoaderError) as e:
        read_module_file(str(bad_tree / name))
    assert e.value.path == str(bad_tree / name)
    assert EXPECTED_REASONS[name] in e.value.reason
    assert str(e.value).startswith(str(bad_tree / name) + ": ")


def test_unreadable_file(tmp_path, good_ko):
    p = tmp_path / "secret.ko"
    if os.geteuid() == 0:
        # root reads mode-000 files; /proc/self/mem opens but fails to read at offset 0.
        p.symlink_to("/proc/self/mem")
        reason = "Input/output error"
    else:
        p.write_bytes(good_ko)
        p.chmod(0)
        reason = "Permission denied"
    with pytest.raises(LoaderError, match=reason) as e:
        read_module_file(str(p))
    assert e.value.path == str(p)


def test_bad_symvers_lines_are_reported_and_rest_read(bad_tree):
    entries, skipped = read_symvers(bad_tree / "Module.symvers")
    assert [(e.export.symbol, e.export.gpl, e.export.namespace) for e in entries] == [
        ("good_sym", False, ""), ("ns_third", True, "NS")]
    where = {s.path.rsplit(":", 1)[1]: s.reason for s in skipped}
    assert set(where) == {"2", "3", "4", "5"}
    assert "found 2" in where["2"]
    assert "bad CRC" in where["3"]
    assert "EXPORT_SYMBOL" in where["4"]
    assert "invalid UTF-8" in where["5"]


def test_load_goes_on_and_counts_skips(bad_tree, tmp_path):
    with open_store(tmp_path / "db") as store:
        s = load_kernel(store, [str(bad_tree)], kernel="bad-kernel", workers=1)
        assert s.report.modules == 2  # vmlinux + good (core_a)
        # every bad file but the directory (not a file, so never listed) and 4 bad symvers lines
        assert len(s.skipped) == len(EXPECTED_REASONS) - 1 + 4
        mods = store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name ORDER BY m.name", {"k": "bad-kernel"})
        assert mods.column("m.name") == ["good", "vmlinux"]  # no modinfo name: from the file name


def test_cli_load_prints_skips(bad_tree, tmp_path, capsys):
    # 3: loaded, but some inputs were skipped (documented in `ksymgraph load --help`)
    assert main(["load", str(bad_tree), "--kernel", "k", "--db", str(tmp_path / "db"), "--no-progress"]) == 3
    out, err = capsys.readouterr()
    assert "loaded kernel k" in out and "2 modules" in out
    assert f"skipped {len(EXPECTED_REASONS) - 1 + 4} inputs" in err
    assert f"{bad_tree / 'empty.ko'}: empty file" in err


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(LoadError, match="no such file or directory"):
        with open_store(tmp_path / "db") as store:
            load_kernel(store, [str(tmp_path / "nope")])
    assert main(["load", str(tmp_path / "nope"), "--db", str(tmp_path / "db2")]) == 2
    assert "nope: no such file or directory" in capsys.readouterr().err


def test_missing_path_among_good_sources_is_skipped(tmp_path, bad_tree):
    with open_store(tmp_path / "db") as store:
        s = load_kernel(store, [str(bad_tree), str(tmp_path / "nope")], kernel="k", workers=1)
    assert any(x.path == str(tmp_path / "nope") and "no such file" in x.reason for x in s.skipped)


# Fuzzing: mutated modules and random bytes raise LoaderError and nothing else. ----------------------

def _mutations(good: bytes):
    return st.one_of(
        st.binary(max_size=512),
        st.integers(0, len(good)).map(lambda n: good[:n]),
        st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=16).map(
            lambda edits: _apply(good, edits)),
    )


def _apply(good: bytes, edits) -> bytes:
    b = bytearray(good)
    for pos, val in edits:
        b[pos] = val
    return bytes(b)


def test_fuzz_elf_reader(good_ko):
    # Header and section-table bytes matter most: bias a share of the edits there.
    shoff = int.from_bytes(good_ko[0x28:0x30], "little")
    hot = good_ko[:64] + good_ko[shoff:]
    count = 0

    @settings(max_examples=10_000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=_mutations(good_ko), header=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=4))
    def check(data, header):
        nonlocal count
        count += 1
        for blob in (data, _apply(data, [(p, v) for p, v in header if p < len(data)])):
            try:
                parse_module(blob, "fuzz.ko")
            except LoaderError:
                pass

    check()
    assert count >= 10_000
    assert hot  # the section table offset is inside the file


def test_unlistable_directory_is_reported_and_the_rest_found(tmp_path, good_ko, monkeypatch):
    """A directory of modules that cannot be listed is a skip with its reason, not a silent gap.
    (Root lists any directory, so the failure is injected at os.scandir.)"""
    from ksymgraph.graph.load import read_kernel

    (tmp_path / "kernel" / "ok").mkdir(parents=True)
    (tmp_path / "kernel" / "locked").mkdir()
    (tmp_path / "kernel" / "ok" / "good.ko").write_bytes(good_ko)
    (tmp_path / "kernel" / "locked" / "hidden.ko").write_bytes(good_ko)
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _meta, modules, _entries, skipped, _config, _n, _notes = read_kernel([str(tmp_path / "kernel")], kernel="k", workers=1)
    assert [m.info.name for m in modules] == ["good"]
    assert [(s.path, s.reason) for s in skipped] == [
        (str(tmp_path / "kernel" / "locked"), "cannot list directory: Permission denied")]


# Bad symbol-version and flag sections: the kernel's own checks, or its own reading. ---------------

@pytest.fixture
def ext_ko(tmp_path):
    """core_a with __versions, extended versions (module_layout, kfree, _printk) and __kflagstab."""
    return compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko",
                          defines=("EXT_MODVERSIONS", "LAYOUT_CRC=0x12345678", "KFLAGSTAB"))


def _error(path) -> LoaderError:
    with pytest.raises(LoaderError) as e:
        read_module_file(str(path))
    assert e.value.path == str(path)
    return e.value


def test_truncated_versions_reads_whole_records(tmp_path):
    """check_version() counts whole records (sh_size / sizeof(struct modversion_info)), so a
    __versions cut inside its last record still loads, without that record: the reader does the
    same, and that import (or module_layout) has no CRC."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko")
    versions = section(ko, "__versions")
    with open(ko, "rb") as f:
        raw = f.read()[versions["sh_offset"]:versions["sh_offset"] + versions["sh_size"]]
    records = [(name.rstrip(b"\0").decode(), crc) for crc, name in struct.iter_unpack("<Q56s", raw)]
    assert len(records) >= 2
    kept = dict(records[:-1])  # the last record is the one cut
    patch_section(ko, "__versions", size=versions["sh_size"] - 10)
    m = read_module_file(str(ko))
    assert {i.symbol: i.crc for i in m.import_records()} == {s: kept.get(s) for s in ("kfree", "_printk")}
    assert m.info.layout_crc == kept.get("module_layout")


def test_versions_crc_wider_than_32_bits(tmp_path):
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko")
    data = bytearray(ko.read_bytes())
    struct.pack_into("<Q", data, section(ko, "__versions")["sh_offset"], 0x1_0000_0001)
    ko.write_bytes(data)
    e = _error(ko)
    assert "__versions" in e.reason and "wider than 32 bits" in e.reason


def test_more_extended_crcs_than_names(ext_ko):
    names = section(ext_ko, "__version_ext_names")
    patch_section(ext_ko, "__version_ext_names", size=names["sh_size"] - 1)  # the last NUL gone
    e = _error(ext_ko)
    assert "__version_ext_crcs has 3 CRCs but __version_ext_names only 2 names" in e.reason
    assert "refuses" in e.reason


@pytest.mark.parametrize("gone,left", [("__version_ext_names", "__version_ext_crcs"),
                                        ("__version_ext_crcs", "__version_ext_names")])
def test_one_extended_section_without_the_other(ext_ko, gone, left):
    patch_section(ext_ko, gone, name_shift=1)  # "_version_ext_...": no longer found
    e = _error(ext_ko)
    assert e.reason.startswith(f"{left} without {gone}")


def test_more_extended_names_than_crcs(ext_ko):
    """The kernel walks the CRCs and never reaches a name past the last one: loaded, and the name
    left without a CRC (_printk, the last) gets none, although __versions has one: with extended
    versions present, check_version() does not look there."""
    crcs = section(ext_ko, "__version_ext_crcs")
    patch_section(ext_ko, "__version_ext_crcs", size=crcs["sh_size"] - 4)
    m = read_module_file(str(ext_ko))
    assert {(i.symbol, i.crc) for i in m.import_records()} == {("kfree", 0x037A0CBA), ("_printk", None)}
    assert m.info.layout_crc == 0x12345678


def test_extended_crcs_cut_inside_a_crc(ext_ko):
    """sh_size / sizeof(u32) entries: a CRC cut short is not one."""
    crcs = section(ext_ko, "__version_ext_crcs")
    patch_section(ext_ko, "__version_ext_crcs", size=crcs["sh_size"] - 1)
    assert {(i.symbol, i.crc) for i in read_module_file(str(ext_ko)).import_records()} == {
        ("kfree", 0x037A0CBA), ("_printk", None)}


def test_kflagstab_shorter_than_ksymtab(ext_ko):
    patch_section(ext_ko, "__kflagstab", size=3)
    e = _error(ext_ko)
    assert e.reason == ("__kflagstab has 3 bytes for the 4 entries of __ksymtab (one flag byte per entry); "
                        "the kernel would read past its end")


def test_kflagstab_longer_than_ksymtab_is_read_as_the_kernel_reads_it(ext_ko):
    """Entry i's flags are byte i; bytes past the last entry are never read."""
    patch_section(ext_ko, "__kflagstab", size=section(ext_ko, "__kflagstab")["sh_size"] + 1)
    assert {e.symbol: e.gpl for e in read_module_file(str(ext_ko)).exports} == {
        "a_plain": False, "a_gpl": True, "a_ns": True, "a_data": False}


# Found by tests/bench/fuzz_inputs.py: each once a "malformed module: <Python error>". -----------

def _patch_symbol(path, name: str, value: int) -> None:
    """Set st_value of symbol ``name`` (an x86_64 or i386 module)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        index = next(i for i, s in enumerate(symtab.iter_symbols()) if s.name == name)
        at, bits = symtab["sh_offset"] + index * symtab["sh_entsize"], elf.elfclass
    data = bytearray(path.read_bytes())
    if bits == 64:
        struct.pack_into("<Q", data, at + 8, value)
    else:
        struct.pack_into("<I", data, at + 4, value)
    path.write_bytes(data)


def test_fuzz_rel_namespace_field_outside_ksymtab(tmp_path):
    """i386 (REL relocations: the addend is in the place), namespace only by relocation, and a
    __ksymtab cut to 8 bytes: the namespace field of its first entry is past the end."""
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko", "i386", "ns-reloc")
    patch_section(ko, "__ksymtab_gpl", size=8)
    e = _error(ko)
    assert e.reason.startswith("the namespace field of __ksymtab_")
    assert e.reason.endswith("is outside section __ksymtab_gpl (8 bytes)")


def test_fuzz_kstrtabns_symbol_past_2_63(tmp_path):
    ko = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko")
    _patch_symbol(ko, "__kstrtabns_a_ns", 2**64 - 1)
    assert _error(ko).reason == (f"__kstrtabns_a_ns is at byte {2**64 - 1}, outside __ksymtab_strings "
                                 f"({section(ko, '__ksymtab_strings')['sh_size']} bytes)")
