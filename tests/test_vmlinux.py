"""vmlinux's exports from a kernel image, on images built here: gcc links fixture exports into a
vmlinux-like executable (so the PREL32 entries are resolved, as in vmlinux), which is wrapped in
a bzImage header and compressed as Debian's kernels are (xz with the x86 BCJ filter, zstd).

The real kernels are in tests/test_realdata_kernels.py (vmlinuz against Module.symvers).
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ksymgraph.loaders.records import Export, LoaderError
from ksymgraph.loaders.vmlinux import elf_sections, extract_vmlinux, read_vmlinux_exports, write_symvers
from ksymgraph.loaders.symvers import read_symvers

FIXTURE_HEADER = Path(__file__).parent / "fixtures" / "modules"

SOURCE = r"""
#include "fixture_module.h"
int f_plain(int x) { return x + 1; }
int f_gpl(int x) { return x + 2; }
int f_ns(int x) { return x + 3; }
int f_ns_gpl(int x) { return x + 4; }
int d_data = 42;
#ifdef FLAGSTAB
/* 7.x: one __ksymtab, one __kflagstab byte per entry (bit 0: GPL only), no _gpl tables. */
#define FLAGGED(sym, ns, flag) __KSYMTAB(sym, "", ns); \
	asm(".section \"__kflagstab\",\"a\"\n.byte " #flag "\n.previous\n")
FLAGGED(f_plain, "", 0);
FLAGGED(f_gpl, "", 1);
FLAGGED(f_ns, "NS_A", 0);
FLAGGED(f_ns_gpl, "NS_B", 1);
FLAGGED(d_data, "", 0);
#else
EXPORT_SYMBOL(f_plain);
EXPORT_SYMBOL_GPL(f_gpl);
EXPORT_SYMBOL_NS(f_ns, NS_A);
EXPORT_SYMBOL_NS_GPL(f_ns_gpl, NS_B);
EXPORT_SYMBOL_CRC(d_data, 0xdeadbeef);
#endif
void _start(void) {}
"""

WANT_61 = {Export("vmlinux", "f_plain", False, "", 0x11110000), Export("vmlinux", "f_gpl", True, "", 0x22220000),
           Export("vmlinux", "f_ns", False, "NS_A", 0x33330000), Export("vmlinux", "f_ns_gpl", True, "NS_B", 0x44440000),
           Export("vmlinux", "d_data", False, "", 0xdeadbeef)}
WANT_7X = {e._replace(crc=None) for e in WANT_61}


def link_vmlinux(tmp_path: Path, *defines: str) -> bytes:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: .ci/run installs it")
    src = tmp_path / "vmlinux.c"
    src.write_text(SOURCE)
    out = tmp_path / "vmlinux"
    subprocess.run(["gcc", "-O1", "-fno-pic", "-no-pie", "-nostdlib", "-static", *(f"-D{d}" for d in defines),
                    "-I", str(FIXTURE_HEADER), str(src), "-o", str(out)], check=True)
    subprocess.run(["strip", "-s", str(out)], check=True)  # as objcopy -S makes vmlinux.bin
    return out.read_bytes()


def bzimage(payload: bytes, header: bool = True) -> bytes:
    """A bzImage: boot sector and one setup sector, then protected-mode code holding the payload."""
    setup = bytearray(1024)
    setup[0x1F1] = 1  # setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F if header else 0x0206)
    pm_code = b"\x90" * 0x100  # the decompressor's code, before the payload
    struct.pack_into("<II", setup, 0x248, len(pm_code), len(payload))
    return bytes(setup) + pm_code + payload + struct.pack("<I", 12345)  # + the size the build appends


def xz(data: bytes) -> bytes:  # scripts/xz_wrap.sh: --check=crc32 --x86 --lzma2
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                         filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2}])


def zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(data)


@pytest.mark.parametrize("compress", [xz, zstd])
@pytest.mark.parametrize("header", [True, False], ids=["payload-header", "magic-scan"])
def test_exports_from_a_bzimage(tmp_path, compress, header):
    elf = link_vmlinux(tmp_path)
    assert extract_vmlinux(bzimage(compress(elf), header)) == elf
    assert set(read_vmlinux_exports(elf)) == WANT_61


def test_flagstab_layout(tmp_path):
    elf = link_vmlinux(tmp_path, "FLAGSTAB")
    sections, _order, _ptr = elf_sections(elf)
    assert "__kflagstab" in sections and "__ksymtab_gpl" not in sections
    assert set(read_vmlinux_exports(extract_vmlinux(bzimage(zstd(elf))))) == WANT_7X


def test_written_symvers_reads_back(tmp_path):
    path = write_symvers(sorted(WANT_61), tmp_path / "Module.symvers")
    entries, skipped = read_symvers(path)
    assert skipped == [] and {e.export for e in entries} == WANT_61
    assert not list(tmp_path.glob(".Module.symvers.*"))
    path = write_symvers(sorted(WANT_7X), tmp_path / "Module.symvers")  # no CRC: 0, as modpost writes it
    assert {e.export for e in read_symvers(path)[0]} == {e._replace(crc=0) for e in WANT_7X}


@pytest.mark.parametrize("image, reason", [
    (b"", "no compressed vmlinux ELF"), (b"MZ" + b"\0" * 4000, "no compressed vmlinux ELF"),
    (bzimage(b"\xfd7zXZ\x00garbage"), "cannot decompress the xz payload"),
    (bzimage(b"BZh91AY&SY" + b"\0" * 64), "bzip2-compressed, which this reader does not decompress"),
])
def test_unreadable_images_say_why(image, reason):
    with pytest.raises(LoaderError, match=reason):
        extract_vmlinux(image, "vmlinuz-x")


def test_truncated_elf_says_why(tmp_path):
    elf = link_vmlinux(tmp_path)
    with pytest.raises(LoaderError, match="truncated or malformed section table"):
        read_vmlinux_exports(elf[: len(elf) // 2])
