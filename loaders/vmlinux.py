"""vmlinux's exports read from the kernel image itself, for a kernel whose Module.symvers is gone.

Debian keeps a headers package (and so a Module.symvers) only for some kernels: bookworm-backports
has one for its newest kernel alone. The exports of vmlinux are in the kernel image all the same:

1. ``vmlinuz`` is an x86 bzImage: real-mode setup (``setup_sects`` sectors after the boot sector)
   then the protected-mode code, whose ``payload_offset`` and ``payload_length`` fields (boot
   protocol 2.08, Documentation/arch/x86/boot.rst) locate the compressed vmlinux. Debian compresses
   it with xz (5.10, 6.1), zstd (6.12 on) or, for the cloud flavour of 6.1, lz4. When the header
   does not say, the compressor's magic is looked for after it, as scripts/extract-vmlinux does.
2. The payload is ``vmlinux.bin``: vmlinux with its symbol table stripped (``objcopy -S``) but its
   section headers kept, followed on x86 by the relocations the decompressor applies.
3. ``__ksymtab`` (and ``__ksymtab_gpl`` before 7.x) hold one ``struct kernel_symbol`` per export,
   sorted by name. With ``CONFIG_HAVE_ARCH_PREL32_RELOCATIONS`` (x86_64 since 4.19) these are three
   32-bit offsets, value, name and namespace, each relative to the address of its own field
   (include/linux/export-internal.h, ``.long sym - .``); in vmlinux they are resolved, so the
   name's address is the field's address plus the offset, within ``__ksymtab_strings``. Without it
   they are three absolute pointers. A namespace offset of 0, or an empty string, is no namespace.
4. ``__kcrctab`` (``__kcrctab_gpl``) hold the modversions CRCs as 32-bit values in the same order
   (absent without ``CONFIG_MODVERSIONS``). 7.x has one ``__ksymtab`` and a ``__kflagstab`` of one
   byte per symbol in the same order, bit 0 ``KSYM_FLAG_GPL_ONLY`` (include/linux/module_symbol.h;
   "module loader: use kflagstab instead of *_gpl sections", Siddharth Nayyar, 2025).

:func:`vmlinuz_exports` yields the same :class:`~ksymgraph.loaders.records.Export` records the
vmlinux lines of a Module.symvers give, and :func:`write_symvers` writes them in that format.
"""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Iterable, NamedTuple

from .records import Export, LoaderError

__all__ = ["Section", "extract_vmlinux", "elf_sections", "read_vmlinux_exports", "vmlinuz_exports",
           "write_symvers"]

#: Compressor magics (arch/x86/boot/compressed/Makefile's suffixes), first bytes of the payload.
MAGICS = {
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "gzip": b"\x1f\x8b\x08",
    "lz4": b"\x02\x21\x4c\x18",  # the legacy frame `lz4 -l` writes
    "lzma": b"\x5d\x00\x00",
    "bzip2": b"BZh",
    "lzo": b"\x89LZO",
}


class Section(NamedTuple):
    """One section header of an ELF file."""

    name: str
    """Its name (``__ksymtab``)."""
    addr: int
    """Its load address."""
    offset: int
    """Where its bytes are in the file."""
    size: int
    """Its size in bytes."""


def _decompress(kind: str, data: bytes, path: str) -> bytes:
    """The first stream of ``data``; trailing bytes (the size the build appends) are ignored."""
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if kind == "lzma":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if kind == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if kind == "lz4":
            exe = shutil.which("lz4")
            if exe is None:
                raise LoaderError(path, "the kernel is lz4-compressed and the lz4 command is missing "
                                        "(apt-get install lz4)")
            done = subprocess.run([exe, "-d", "-c", "-q"], input=data, capture_output=True)
            if not done.stdout:
                raise LoaderError(path, f"lz4 -d: {done.stderr.decode(errors='replace').strip()[:200]}")
            return done.stdout
    except LoaderError:
        raise
    except Exception as e:  # lzma.LZMAError, zlib.error, zstandard.ZstdError: no common base to name
        raise LoaderError(path, f"cannot decompress the {kind} payload: {e}") from e
    raise LoaderError(path, f"the kernel is {kind}-compressed, which this reader does not decompress")


def extract_vmlinux(image: bytes, path: str = "vmlinuz") -> bytes:
    """The vmlinux ELF inside a bzImage (or ``image`` itself when it is an ELF file already)."""
    if image[:4] == b"\x7fELF":
        return image
    candidates: list[int] = []
    if len(image) >= 0x250 and image[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", image, 0x206)[0] >= 0x208:
        setup_sects = image[0x1F1] or 4
        payload_offset, payload_length = struct.unpack_from("<II", image, 0x248)
        start = (setup_sects + 1) * 512 + payload_offset
        if payload_length and start + payload_length <= len(image):
            candidates.append(start)
    for magic in MAGICS.values():  # extract-vmlinux's way: every place a compressor's magic starts
        i = image.find(magic, 0x200)
        while i >= 0 and len(candidates) < 64:
            candidates.append(i)
            i = image.find(magic, i + 1)
    errors = []
    seen = set()
    for start in candidates:
        if start in seen:
            continue
        seen.add(start)
        kind = next((k for k, m in MAGICS.items() if image.startswith(m, start)), None)
        if kind is None:
            continue
        try:
            out = _decompress(kind, image[start:], path)
        except LoaderError as e:
            errors.append(e.reason)
            continue
        if out[:4] == b"\x7fELF":
            return out
    raise LoaderError(path, "no compressed vmlinux ELF found in the image"
                      + (f" ({'; '.join(dict.fromkeys(errors))[:300]})" if errors else ""))


def elf_sections(elf: bytes, path: str = "vmlinux") -> tuple[dict[str, Section], str, int]:
    """(sections by name, struct byte order ``<``/``>``, pointer size) of an ELF file's section headers."""
    if elf[:4] != b"\x7fELF" or elf[4] not in (1, 2) or elf[5] not in (1, 2):
        raise LoaderError(path, "not an ELF file")
    bits64 = elf[4] == 2
    order = "<" if elf[5] == 1 else ">"
    if bits64:
        shoff, = struct.unpack_from(order + "Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x3A)
        fmt = order + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(order + "I", elf, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x2E)
        fmt = order + "IIIIIIIIII"
    if shentsize != struct.calcsize(fmt) or shoff + shnum * shentsize > len(elf) or shstrndx >= shnum:
        raise LoaderError(path, f"truncated or malformed section table ({shnum} headers at {shoff}, "
                                f"file has {len(elf)} bytes)")
    raw = [struct.unpack_from(fmt, elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx]
    names_at = strtab[4]
    sections = {}
    for h in raw:
        end = elf.find(b"\0", names_at + h[0])
        name = elf[names_at + h[0]:end].decode("ascii", "replace")
        if h[1] != 8:  # SHT_NOBITS has no bytes in the file
            sections[name] = Section(name, h[3], h[4], h[5])
    return sections, order, 8 if bits64 else 4


def read_vmlinux_exports(elf: bytes, path: str = "vmlinux") -> list[Export]:
    """Every export of a vmlinux ELF, in ``__ksymtab`` order (then ``__ksymtab_gpl``)."""
    sections, order, ptr = elf_sections(elf, path)
    strings = sections.get("__ksymtab_strings")
    if strings is None or "__ksymtab" not in sections:
        raise LoaderError(path, "no __ksymtab or __ksymtab_strings section (a kernel without CONFIG_MODULES?)")
    lo, hi = strings.addr, strings.addr + strings.size

    def string_at(addr: int, what: str) -> str:
        if not lo <= addr < hi:
            raise LoaderError(path, f"{what} points at {addr:#x}, outside __ksymtab_strings")
        start = strings.offset + addr - lo
        return elf[start:elf.index(b"\0", start)].decode("utf-8", "replace")

    def entries(sec: Section) -> list[tuple[str, str]]:
        data = elf[sec.offset:sec.offset + sec.size]
        # PREL32: three s32, each relative to its own field's address, when every name lands in
        # the strings; else three absolute pointers.
        if sec.size % 12 == 0:
            out = []
            for i, (_value, name, ns) in enumerate(struct.iter_unpack(order + "iii", data)):
                at = sec.addr + 12 * i
                if not lo <= at + 4 + name < hi:
                    break
                out.append((string_at(at + 4 + name, f"{sec.name}[{i}].name"),
                            string_at(at + 8 + ns, f"{sec.name}[{i}].namespace") if ns else ""))
            else:
                return out
        if sec.size % (3 * ptr):
            raise LoaderError(path, f"{sec.name} has {sec.size} bytes, neither 12-byte PREL32 entries "
                                    f"nor {3 * ptr}-byte pointer entries")
        fmt = order + ("QQQ" if ptr == 8 else "III")
        return [(string_at(name, f"{sec.name}[{i}].name"), string_at(ns, f"{sec.name}[{i}].namespace") if ns else "")
                for i, (_value, name, ns) in enumerate(struct.iter_unpack(fmt, data))]

    def crcs(name: str, count: int) -> list[int | None]:
        sec = sections.get(name)
        if sec is None:
            return [None] * count
        if sec.size != 4 * count:
            raise LoaderError(path, f"{name} has {sec.size} bytes for {count} exports")
        return [c for (c,) in struct.iter_unpack(order + "I", elf[sec.offset:sec.offset + sec.size])]

    out: list[Export] = []
    flags = sections.get("__kflagstab")
    for table, crc_table, gpl in (("__ksymtab", "__kcrctab", False), ("__ksymtab_gpl", "__kcrctab_gpl", True)):
        sec = sections.get(table)
        if sec is None:
            continue
        syms = entries(sec)
        if flags is not None and table == "__ksymtab":
            if flags.size != len(syms):
                raise LoaderError(path, f"__kflagstab has {flags.size} bytes for {len(syms)} exports")
            gpl_of = [bool(b & 1) for b in elf[flags.offset:flags.offset + flags.size]]  # KSYM_FLAG_GPL_ONLY
        else:
            gpl_of = [gpl] * len(syms)
        for (name, ns), is_gpl, crc in zip(syms, gpl_of, crcs(crc_table, len(syms))):
            out.append(Export("vmlinux", name, is_gpl, ns, crc))
    return out


def vmlinuz_exports(path: str | Path) -> list[Export]:
    """Every export of the vmlinux inside the kernel image at ``path``; :class:`LoaderError` if unreadable."""
    p = str(path)
    try:
        image = Path(path).read_bytes()
    except OSError as e:
        raise LoaderError(p, e.strerror or str(e)) from e
    return read_vmlinux_exports(extract_vmlinux(image, p), p)


def write_symvers(exports: Iterable[Export], path: str | Path) -> Path:
    """Write ``exports`` as Module.symvers lines (``crc, symbol, owner, type, namespace``), atomically.

    A missing CRC is written as ``0x00000000``, as modpost writes it without CONFIG_MODVERSIONS.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            for e in exports:
                kind = "EXPORT_SYMBOL_GPL" if e.gpl else "EXPORT_SYMBOL"
                f.write(f"0x{(e.crc or 0):08x}\t{e.symbol}\t{e.module}\t{kind}\t{e.namespace}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
