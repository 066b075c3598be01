"""The ELF structures a module reader needs, read with bounds: the header, the section table, the
symbol and relocation tables, and string tables.

The classes mirror the structures they read (pyelftools' model) but read only what is asked for:
the header is unpacked with :mod:`struct`, and the section, symbol and relocation tables are viewed
as numpy record arrays, so only the few sections and symbols a module's interface needs are ever
decoded (:mod:`.elf` reads that interface). Both ELF classes and both byte orders are read.

Bounded work on hostile input: every section read is at most :data:`MAX_SECTION_BYTES`, every
table (undefined symbols, exports, version entries) at most :data:`MAX_TABLE_ENTRIES` entries, a
name at most ``KSYM_NAME_LEN - 1`` bytes (:data:`KSYM_NAME_LEN`), and the names decoded from one
module at most :data:`MAX_SECTION_BYTES` in all; string tables must end with a NUL, as
d979e3dffa93 ("module: Additional validation in elf_validity_cache_strtab") requires of a module
since 6.12. Sections are looked up by name as ``find_sec()`` does (the first section of that
name with ``SHF_ALLOC``), in time linear in the number of sections.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple, Protocol

import numpy as np

from .records import LoaderError

__all__ = ["KSYM_NAME_LEN", "MAX_SECTION_BYTES", "MAX_TABLE_ENTRIES", "SHN_UNDEF", "SHN_ABS", "SHT_SYMTAB",
           "SHT_RELA", "SHT_REL", "SHT_NOBITS", "SHF_ALLOC", "STB_GLOBAL", "STB_WEAK", "STT_FILE", "ET_REL",
           "ElfHeader", "FileImage", "StringTable", "ModuleElf", "shown"]

#: include/linux/kallsyms.h: the size of a symbol name buffer, NUL included, so a name has at
#: most 511 bytes. 512 since 6.1, b8a94bfb3395 ("kallsyms: increase maximum kernel symbol length
#: to 512"); 128 before.
KSYM_NAME_LEN = 512

#: The most bytes read of any one section. The largest section a real module's interface needs is
#: under 1.5 MB (the ``.symtab`` of Debian 7.2's amdgpu.ko: 1.3 MB; its ``.modinfo``: 4 KB, the
#: largest ``.modinfo``, option.ko's, 76 KB).
MAX_SECTION_BYTES = 16 << 20

#: The most entries of any one table read: undefined symbols, exports, ``__versions`` records,
#: extended version entries. A whole 7.2 kernel exports about 46,000 symbols, so no module can
#: import more than that many; the largest real tables hold a few thousand.
MAX_TABLE_ENTRIES = 1 << 18

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_REL = 9
SHT_NOBITS = 8
SHF_ALLOC = 2
STB_GLOBAL = 1
STB_WEAK = 2
STT_FILE = 4
ET_REL = 1

class ElfHeader(NamedTuple):
    """The fields of the ELF file header that a module reader needs."""

    bits: int
    """32 or 64 (``EI_CLASS``)."""
    little: bool
    """True for little-endian (``EI_DATA`` = ELFDATA2LSB)."""
    type: int
    """``e_type``: 1 (ET_REL) for a module."""
    machine: int
    """``e_machine``: 62 for x86_64, 3 for i386, 183 for aarch64, ..."""
    shoff: int
    """File offset of the section header table."""
    shentsize: int
    """Size of one section header."""
    shnum: int
    """Number of section headers."""
    shstrndx: int
    """Index of the section holding section names."""


@functools.lru_cache(maxsize=None)
def _shdr_dtype(bits: int, little: bool) -> np.dtype:
    """``Elf{32,64}_Shdr``, one record per section header."""
    e = "<" if little else ">"
    w = e + ("u8" if bits == 64 else "u4")
    u4 = e + "u4"
    return np.dtype([("name", u4), ("type", u4), ("flags", w), ("addr", w), ("offset", w), ("size", w),
                     ("link", u4), ("info", u4), ("addralign", w), ("entsize", w)])


@functools.lru_cache(maxsize=None)
def _sym_dtype(bits: int, little: bool) -> np.dtype:
    e = "<" if little else ">"
    if bits == 64:  # Elf64_Sym
        fields = [("name", e + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", e + "u2"),
                  ("value", e + "u8"), ("size", e + "u8")]
    else:  # Elf32_Sym
        fields = [("name", e + "u4"), ("value", e + "u4"), ("size", e + "u4"), ("info", "u1"),
                  ("other", "u1"), ("shndx", e + "u2")]
    return np.dtype(fields)


@functools.lru_cache(maxsize=None)
def _rel_dtype(bits: int, little: bool, rela: bool) -> np.dtype:
    e = "<" if little else ">"
    w = "8" if bits == 64 else "4"
    fields = [("offset", e + "u" + w), ("info", e + "u" + w)]
    if rela:
        fields.append(("addend", e + "i" + w))
    return np.dtype(fields)


class FileImage(Protocol):
    """A file's bytes, read where sliced (:class:`ksymgraph.loaders.modules.ModuleFile`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, where: slice) -> bytes: ...


def shown(name: str) -> str:
    """A section or symbol name as an error message shows it: at most 80 characters."""
    return name if len(name) <= 80 else name[:77] + "..."


class StringTable:
    """A string table (``.strtab``, ``__ksymtab_strings``, ``__version_ext_names``): names are
    read at offsets, each ending at the next NUL, never past the table's end.

    The positions of the NULs are found once with numpy, so that the names at many offsets are cut
    out without a search per name; a table of ASCII (nearly always) is decoded once and sliced.
    """

    def __init__(self, data: bytes, what: str, path: str):
        self.data = data
        self.what = what
        self.path = path
        self._nuls: np.ndarray | None = None
        self._text: str | None = None

    def __len__(self) -> int:
        return len(self.data)

    def nuls(self) -> np.ndarray:
        """Offsets of the NUL bytes, ascending."""
        if self._nuls is None:
            self._nuls = np.flatnonzero(np.frombuffer(self.data, np.uint8) == 0)
        return self._nuls

    def names(self, offsets, limit: int = KSYM_NAME_LEN - 1) -> list[str]:
        """The names at ``offsets`` (a list or array of table offsets), each at most ``limit``
        bytes: the search for each name's NUL stops there, so no name costs more than that."""
        if isinstance(offsets, np.ndarray):
            offsets = offsets.tolist()
        if self._text is None and self.data.isascii():
            self._text = self.data.decode("ascii")
        text = self._text if self._text is not None else self.data
        find, nul = text.find, "\0" if self._text is not None else b"\0"
        stops = [find(nul, o, o + limit + 1) for o in offsets]
        if -1 in stops:
            self._refuse(offsets[stops.index(-1)], limit)
        total = sum(stops) - sum(offsets)
        if total > MAX_SECTION_BYTES:
            raise LoaderError(self.path, f"{self.what}: {len(offsets)} names of {total} bytes in all, more than "
                                         f"the {MAX_SECTION_BYTES >> 20} MiB this reader decodes from one table")
        if self._text is not None:
            return [text[a:b] for a, b in zip(offsets, stops)]
        return [text[a:b].decode("utf-8", "replace") for a, b in zip(offsets, stops)]

    def _refuse(self, offset: int, limit: int) -> None:
        if not 0 <= offset < len(self.data):
            raise LoaderError(self.path, f"{self.what}: offset {offset} is outside the table ({len(self.data)} bytes)")
        end = self.data.find(b"\0", offset)
        if end < 0:
            raise LoaderError(self.path, f"{self.what}: the name at offset {offset} has no NUL before the table ends")
        raise LoaderError(self.path, f"{self.what}: the name at offset {offset} is {end - offset} bytes long, more "
                                     f"than KSYM_NAME_LEN ({KSYM_NAME_LEN}) allows")

    def name(self, offset: int, limit: int = KSYM_NAME_LEN - 1) -> str:
        """The name at ``offset``."""
        if not 0 <= offset < len(self.data):
            self._refuse(offset, limit)
        return self.names([offset], limit)[0]


class ModuleElf:
    """A module's ELF image: header, section headers, symbols, relocations.

    ``data`` is the whole image as bytes, or a :class:`FileImage` that reads only the slices
    asked for.

    ``shdrs`` is the section header table viewed as a record array (fields as in ``Elf64_Shdr``
    without the ``sh_`` prefix); a module has 40 to 100 sections and the interface needs about six,
    so names are looked up in ``.shstrtab`` only for the sections asked for. The fields read per
    section are also kept as lists, where indexing costs less than a numpy scalar.
    """

    def __init__(self, data: bytes | FileImage, path: str = "<memory>"):
        self.data = data
        self.path = path
        self.header = self._read_header()
        self.shdrs, self.shstrtab = self._read_section_headers()
        self._name_offsets = self.shdrs["name"].tolist()
        self._types = self.shdrs["type"].tolist()
        self._offsets = self.shdrs["offset"].tolist()
        self._sizes = self.shdrs["size"].tolist()
        self._alloc_by_name_offset: dict[int, int] | None = None

    def _fail(self, reason: str) -> LoaderError:
        return LoaderError(self.path, reason)

    def _read_header(self) -> ElfHeader:
        if len(self.data) == 0:
            raise self._fail("empty file")
        d = bytes(self.data[:64])  # e_ident and the rest of Elf64_Ehdr (Elf32_Ehdr is 52 bytes)
        if len(d) < 16 or d[:4] != b"\x7fELF":
            raise self._fail("not an ELF file (bad magic)")
        bits = {1: 32, 2: 64}.get(d[4])
        little = {1: True, 2: False}.get(d[5])
        if bits is None or little is None:
            raise self._fail(f"unknown ELF class {d[4]} or byte order {d[5]}")
        e = "<" if little else ">"
        fmt = e + ("HHIQQQIHHHHHH" if bits == 64 else "HHIIIIIHHHHHH")
        if len(d) < 16 + struct.calcsize(fmt):
            raise self._fail("truncated ELF header")
        (etype, machine, _ver, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
         shentsize, shnum, shstrndx) = struct.unpack_from(fmt, d, 16)
        if etype != ET_REL:
            raise self._fail(f"not a kernel module: ELF type {etype}, expected 1 (relocatable)")
        want = 64 if bits == 64 else 40
        if shentsize != want:
            raise self._fail(f"bad section header size {shentsize}, expected {want}")
        if shoff + shnum * shentsize > len(self.data) or shnum == 0:
            raise self._fail(f"truncated: section table ends at {shoff + shnum * shentsize}, "
                             f"file has {len(self.data)} bytes")
        if shstrndx >= shnum:
            raise self._fail(f"section name table index {shstrndx} out of range")
        return ElfHeader(bits, little, etype, machine, shoff, shentsize, shnum, shstrndx)

    def _read_section_headers(self) -> tuple[np.ndarray, bytes]:
        h = self.header
        table = self._bytes(h.shoff, h.shnum * h.shentsize, "section header table")
        shdrs = np.frombuffer(table, _shdr_dtype(h.bits, h.little))
        ends = shdrs["offset"].astype(np.float64) + shdrs["size"]  # exact below 2^53, and never wraps
        past = (shdrs["type"] != SHT_NOBITS) & (ends > len(self.data))
        if past.any():
            end = int(shdrs["offset"][np.argmax(past)]) + int(shdrs["size"][np.argmax(past)])
            raise self._fail(f"truncated: a section ends at byte {end}, file has {len(self.data)}")
        names = shdrs[h.shstrndx]
        size = int(names["size"])
        self._check_size(size, "the section name table")
        shstrtab = bytes(self._bytes(int(names["offset"]), size, "section name table"))
        # As elf_validity_cache_secstrings() requires: names end within the table.
        if not shstrtab.endswith(b"\0"):
            raise self._fail("the section name table (.shstrtab) does not end with a NUL")
        return shdrs, shstrtab

    def _check_size(self, size: int, what: str | int) -> None:
        """Refuse a section of more than :data:`MAX_SECTION_BYTES` (``what``: its index, or words)."""
        if size > MAX_SECTION_BYTES:
            if isinstance(what, int):
                what = f"section {shown(self.section_name(what))}"
            raise self._fail(f"{what} is {size} bytes, more than the {MAX_SECTION_BYTES >> 20} MiB this reader "
                             "reads of one section (a real module's largest is under 2 MB)")

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise self._fail(f"truncated: {what} ends at byte {offset + size}, file has {len(self.data)}")
        return self.data[offset : offset + size]

    def section_name(self, index: int) -> str:
        """The name of section ``index`` (cut short when absurdly long)."""
        off = self._name_offsets[index]
        end = self.shstrtab.find(b"\0", off, off + 256)
        return self.shstrtab[off : end if end >= 0 else off + 256].decode("utf-8", "replace")

    def index(self, name: str) -> int | None:
        """Index of the section called ``name``, or None: as the kernel's ``find_sec()``, the first
        section with that name and ``SHF_ALLOC`` (a section without it is ignored).

        The name may sit inside a longer one in ``.shstrtab`` (``.rela__ksymtab`` holds
        ``__ksymtab``: linkers share string tails), so every place it ends with a NUL is a
        candidate; each is looked up in a map of the ``SHF_ALLOC`` sections' name offsets built at
        the first lookup, so a lookup takes time linear in the table sizes (a list's ``index()``
        per candidate made 65,535 sections and 200,000 names quadratic).
        """
        by_offset = self._alloc_by_name_offset
        if by_offset is None:
            flags, offsets = self.shdrs["flags"].tolist(), self._name_offsets
            by_offset = self._alloc_by_name_offset = {}
            for i in range(len(offsets) - 1, 0, -1):  # downwards, so that the lowest index stays
                if flags[i] & SHF_ALLOC:
                    by_offset[offsets[i]] = i
        want = name.encode() + b"\0"
        table = self.shstrtab
        best = None
        at = table.find(want)
        while at >= 0:
            i = by_offset.get(at)
            if i is not None and (best is None or i < best):
                best = i
            at = table.find(want, at + 1)
        return best

    def section_size(self, index: int) -> int:
        """The size of section ``index`` in the file (0 for NOBITS)."""
        return 0 if self._types[index] == SHT_NOBITS else self._sizes[index]

    def section_bytes(self, index: int) -> bytes:
        """The bytes of section ``index`` (empty for NOBITS), at most :data:`MAX_SECTION_BYTES`."""
        if self._types[index] == SHT_NOBITS:
            return b""
        offset, size = self._offsets[index], self._sizes[index]
        self._check_size(size, index)
        if offset + size > len(self.data):
            raise self._fail(f"truncated: section {shown(self.section_name(index))} ends at byte {offset + size}, "
                             f"file has {len(self.data)}")
        return self.data[offset : offset + size]

    def symtab(self) -> tuple[np.ndarray, StringTable]:
        """The symbol table as a record array, and its string table."""
        if SHT_SYMTAB not in self._types:
            raise self._fail("no symbol table (.symtab)")
        index = self._types.index(SHT_SYMTAB)
        link = int(self.shdrs["link"][index])
        if link >= len(self._types):
            raise self._fail("symbol table links to a missing string table")
        dt = _sym_dtype(self.header.bits, self.header.little)
        size = self._sizes[index]
        self._check_size(size, "the symbol table (.symtab)")
        raw = self._bytes(self._offsets[index], size - size % dt.itemsize, ".symtab")
        syms = np.frombuffer(raw, dtype=dt)
        strtab = self.section_bytes(link)
        # The checks of elf_validity_cache_strtab() (d979e3dffa93): not empty, NUL at both ends,
        # every symbol's name inside.
        if not strtab or strtab[0] != 0 or strtab[-1] != 0:
            raise self._fail("the symbol string table (.strtab) is empty or does not begin and end with a NUL")
        if len(syms) and int(syms["name"].max()) >= len(strtab):
            raise self._fail("a symbol's name is outside the symbol string table (.strtab)")
        return syms, StringTable(bytes(strtab), ".strtab", self.path)

    def relocations_for(self, target: int) -> tuple[np.ndarray, bool] | None:
        """The relocation entries applying to section ``target`` and whether they carry addends."""
        t = self.shdrs["type"]
        found = np.flatnonzero(((t == SHT_RELA) | (t == SHT_REL)) & (self.shdrs["info"] == target))
        if not len(found):
            return None
        i = int(found[0])
        rela = self._types[i] == SHT_RELA
        dt = _rel_dtype(self.header.bits, self.header.little, rela)
        size = self._sizes[i]
        self._check_size(size, i)
        if self._offsets[i] + size > len(self.data):
            raise self._fail(f"truncated: section {shown(self.section_name(i))} ends at byte {self._offsets[i] + size}, "
                             f"file has {len(self.data)}")
        raw = self.data[self._offsets[i]: self._offsets[i] + size - size % dt.itemsize]
        return np.frombuffer(raw, dtype=dt), rela
