"""Kernel module ELF files: ``.modinfo``, ksymtab exports, symbol versions and undefined symbols.

The classes here mirror the ELF structures they read (header, section header, symbol,
relocation) and read only what a module's interface needs. pyelftools builds a Python object for
every section and symbol, which costs about 27 s for the 4,022 modules of a Debian 6.1 kernel;
here the header is unpacked with :mod:`struct` and the section, symbol and relocation tables are
viewed as numpy record arrays, so only the few sections and symbols that matter are ever decoded.
``tests/test_elf.py`` checks this reader against pyelftools on real modules.

Both ELF classes and both byte orders are read; the layout of ``__ksymtab`` is decided per file
from its sections, sizes and relocation types, never from a kernel version.

Layouts of the export table, per entry (``struct kernel_symbol``):

* absolute pointers ``{value, name}``: before 4.19 on every architecture, and after it on those
  without ``CONFIG_HAVE_ARCH_PREL32_RELOCATIONS``;
* 32-bit place-relative offsets ``{value_offset, name_offset}`` (8 bytes): since 4.19,
  7290d58095712 ("module: use relative references for __ksymtab entries");
* the same plus ``namespace_offset`` (12 bytes, or a third pointer when absolute): since 5.4,
  8651ec01daed ("module: add support for symbol namespaces").

GPL-only exports sit in their own ``__ksymtab_gpl`` (and ``__kcrctab_gpl``) up to 7.0. Since 7.1
there is one ``__ksymtab`` and, parallel to it, ``__kflagstab``: one byte per entry, entry *i*'s
flags in byte *i*, bit 0 ``KSYM_FLAG_GPL_ONLY``. 9743311b4535 ("module: add kflagstab section to
vmlinux and modules") and 16d0e04f546f ("module: populate kflagstab in modpost") added it;
55fcb926b6d8 ("module: use kflagstab instead of *_gpl sections") made the loader read it
(``find_exported_symbol_in_section()``: ``sym_flags & KSYM_FLAG_GPL_ONLY``, and a module with
exports but no ``__kflagstab`` is refused: "no flags for exported symbols"); f18540256b70
("module: remove *_gpl sections from vmlinux and modules") dropped the ``_gpl`` sections. The
kernel tests no other bit (a ``KSYM_FLAG_PROTECTED``, bit 1, was proposed with the series and not
merged), so other bits are ignored here too. A kernel that reads ``__kflagstab`` ignores a
``__ksymtab_gpl`` (b4760ff2a5e4, "module: deprecate usage of *_gpl sections in module loader",
warns "ignoring obsolete section"), so a module with both exports only what ``__ksymtab`` holds.
A ``__kflagstab`` shorter than ``__ksymtab``'s entries, which the kernel would read past, is a
:class:`LoaderError`.

The namespace string is named by a local symbol ``__kstrtabns_<sym>`` (still so in Debian's
6.1, 6.12 and 7.2 modules); where the symbol is missing, as ddb5cdbafaaa ("kbuild: generate
KSYMTAB entries by modpost") allows since 6.5, the relocation of the entry's namespace field
names it, so that is read.

The CRC of an export is ``__crc_<sym>``: an absolute symbol whose value is the CRC before 5.19,
and since 7b4537199a4a ("kbuild: link symbol CRCs at final link, removing
CONFIG_MODULE_REL_CRCS") a symbol in ``__kcrctab[_gpl]`` whose 32-bit word is the CRC.

Symbol versions of imports (``CONFIG_MODVERSIONS``): ``__versions`` holds ``{unsigned long crc;
char name[64 - sizeof(long)]}`` records. Since 6.14 a module may also carry extended versions,
54ac1ac8edeb ("modules: Support extended MODVERSIONS info") and fc7d5e3210ae ("modpost: Produce
extended MODVERSIONS information"): ``__version_ext_crcs`` (one 32-bit CRC per entry) and
``__version_ext_names`` (the names, NUL-terminated, in the same order), which hold names of any
length; e8639b7ef0f8 ("modpost: Allow extended modversions without basic MODVERSIONS") lets a
module carry them alone. As ``check_version()`` in kernel/module/version.c does, when the extended
sections are present they alone give the CRCs (``__versions`` is then not read for imports), and
the first entry of a name wins. The kernel's checks are kept (``elf_validity_cache_index_versions()``):
one extended section without the other, or more CRCs than names, is a :class:`LoaderError`. Where
the kernel would still load the module the reader does as it does: names beyond the last CRC are
ignored, and so is a last ``__versions`` record or extended CRC cut short (the kernel counts whole
records, ``sh_size / sizeof(struct modversion_info)``). A ``__versions`` CRC wider than 32 bits,
which modpost never writes and which can never equal an export's 32-bit CRC, is a
:class:`LoaderError`.

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
import sys
from typing import NamedTuple, Protocol

import numpy as np

from .records import Export, Imports, LoaderError, ModuleData, ModuleInfo

__all__ = [
    "KSYM_NAME_LEN",
    "MAX_SECTION_BYTES",
    "MAX_TABLE_ENTRIES",
    "ElfHeader",
    "FileImage",
    "ModuleElf",
    "parse_module",
    "module_name_from_path",
]

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
KSYM_FLAG_GPL_ONLY = 1

#: The longest prefix of the symbols that name export entries, CRCs and strings.
_LABEL_PREFIXES = ("__ksymtab_", "__crc_", "__kstrtabns_", "__kstrtab_")
_LABEL_NAME_MAX = KSYM_NAME_LEN - 1 + max(map(len, _LABEL_PREFIXES))

#: The ``.modinfo`` keys a module's record keeps.
_MODINFO_KEYS = frozenset(["name", "license", "vermagic", "srcversion", "intree", "depends", "import_ns"])

#: Relocation types that make a ksymtab entry place-relative (PREL32), per e_machine.
PC_RELATIVE_RELOCS = {
    62: {2, 24},  # x86_64: R_X86_64_PC32, R_X86_64_PC64
    3: {2},  # i386: R_386_PC32
    183: {261, 260},  # aarch64: R_AARCH64_PREL32, R_AARCH64_PREL64
    40: {3},  # arm: R_ARM_REL32
    21: {26},  # ppc64: R_PPC64_REL32
    20: {26},  # ppc: R_PPC_REL32
    22: {5},  # s390: R_390_PC32
    243: {57},  # riscv: R_RISCV_32_PCREL
}


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


def _shown(name: str) -> str:
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
        find, size, nul = text.find, len(text), "\0" if self._text is not None else b"\0"
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
                what = f"section {_shown(self.section_name(what))}"
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
            raise self._fail(f"truncated: section {_shown(self.section_name(index))} ends at byte {offset + size}, "
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
            raise self._fail(f"truncated: section {_shown(self.section_name(i))} ends at byte {self._offsets[i] + size}, "
                             f"file has {len(self.data)}")
        raw = self.data[self._offsets[i]: self._offsets[i] + size - size % dt.itemsize]
        return np.frombuffer(raw, dtype=dt), rela


def module_name_from_path(path: str) -> str:
    """The kernel's name for a module file: base name without ``.ko[.xz|.zst|.gz]``, ``-`` → ``_``."""
    base = path.rsplit("/", 1)[-1]
    cut = base.find(".ko")
    if cut > 0:
        base = base[:cut]
    return base.replace("-", "_")


def _read_modinfo(elf: ModuleElf) -> dict[str, list[str]]:
    """The ``.modinfo`` entries a module record keeps (:data:`_MODINFO_KEYS`), each key's values
    in order; ``import_ns`` once per namespace."""
    idx = elf.index(".modinfo")
    out: dict[str, list[str]] = {}
    if idx is None:
        return out
    # NUL and "=" are single bytes in UTF-8: decoding the section once equals decoding each item.
    for item in bytes(elf.section_bytes(idx)).decode("utf-8", "replace").split("\0"):
        key, sep, value = item.partition("=")
        if sep and key in _MODINFO_KEYS:
            out.setdefault(key, []).append(value)
    if "import_ns" in out:  # the kernel asks whether a namespace is among them: once is enough
        out["import_ns"] = list(dict.fromkeys(out["import_ns"]))
    return out


@functools.lru_cache(maxsize=None)
def _versions_dtype(bits: int, little: bool) -> np.dtype:
    w = bits // 8
    return np.dtype([("crc", f"{'<' if little else '>'}u{w}"), ("name", f"S{64 - w}")])


def _check_entries(elf: ModuleElf, n: int, what: str) -> None:
    if n > MAX_TABLE_ENTRIES:
        raise elf._fail(f"{what} has {n} entries, more than the {MAX_TABLE_ENTRIES} this reader accepts "
                        "(a whole kernel exports about 46,000 symbols)")


def _first_of_each(names: list[str], crcs: list[int]) -> dict[str, int]:
    """{name: crc} with the first entry of a name winning, as the kernel's search does."""
    out = dict(zip(names, crcs))
    return out if len(out) == len(names) else dict(zip(reversed(names), reversed(crcs)))


def _read_versions(elf: ModuleElf) -> dict[str, int] | None:
    """``__versions``: {unsigned long crc; char name[64 - sizeof(long)]} records; None without
    the section. Whole records only, as ``check_version()`` counts them."""
    idx = elf.index("__versions")
    if idx is None:
        return None
    dt = _versions_dtype(elf.header.bits, elf.header.little)
    raw = elf.section_bytes(idx)
    _check_entries(elf, len(raw) // dt.itemsize, "__versions")
    recs = np.frombuffer(raw[: len(raw) - len(raw) % dt.itemsize], dtype=dt)
    crcs = recs["crc"].tolist()
    if crcs and max(crcs) > 0xFFFFFFFF:
        bad = recs[crcs.index(max(crcs))]
        raise elf._fail(f"__versions: the CRC of {bad['name'].decode('utf-8', 'replace')!r} is {int(bad['crc']):#x}, "
                        "wider than 32 bits (modpost writes 32-bit CRCs; the kernel would never match it)")
    fields = recs["name"].tolist()  # bytes without the trailing NULs
    names = b"\0".join(fields).decode("utf-8", "replace").split("\0")  # decoded at once
    if len(names) != len(fields):  # a name with a NUL inside, and bytes after it
        names = [n.split(b"\0", 1)[0].decode("utf-8", "replace") for n in fields]
    return _first_of_each(names, crcs)


def _read_ext_versions(elf: ModuleElf) -> dict[str, int] | None:
    """``__version_ext_crcs`` + ``__version_ext_names`` (6.14+); None when the module has neither.

    The checks are ``elf_validity_cache_index_versions()``'s; names past the last CRC are ignored,
    as ``for_each_modversion_info_ext()`` never reaches them.
    """
    crc_idx, name_idx = elf.index("__version_ext_crcs"), elf.index("__version_ext_names")
    if crc_idx is None and name_idx is None:
        return None
    if crc_idx is None or name_idx is None:
        have, lacks = ("__version_ext_names", "__version_ext_crcs") if crc_idx is None else (
            "__version_ext_crcs", "__version_ext_names")
        raise elf._fail(f"{have} without {lacks}: the kernel refuses such a module "
                        "(extended version crc+name presence does not match)")
    raw = elf.section_bytes(crc_idx)
    n = len(raw) // 4
    _check_entries(elf, n, "__version_ext_crcs")
    crcs = np.frombuffer(raw[: 4 * n], dtype=("<" if elf.header.little else ">") + "u4").tolist()
    names = StringTable(bytes(elf.section_bytes(name_idx)), "__version_ext_names", elf.path)
    nuls = names.nuls()
    if len(nuls) < n:
        raise elf._fail(f"__version_ext_crcs has {n} CRCs but __version_ext_names only {len(nuls)} names: "
                        "the kernel refuses such a module (more extended version crcs than names)")
    starts = np.concatenate(([0], nuls[: n - 1] + 1)) if n else np.zeros(0, dtype=np.int64)
    return _first_of_each(names.names(starts), crcs)


def _ksymtab_entry_size(elf: ModuleElf, idx: int, n_labels: int) -> int:
    """``sizeof(struct kernel_symbol)`` of a module that has ``__kflagstab`` (7.1+, so with a
    namespace field): 12 bytes with PREL32 entries, three pointers without."""
    pointers = 3 * (elf.header.bits // 8)
    rel = elf.relocations_for(idx)
    if rel is not None and len(rel[0]):
        mask = 0xFFFFFFFF if elf.header.bits == 64 else 0xFF
        return 12 if int(rel[0]["info"][0]) & mask in PC_RELATIVE_RELOCS.get(elf.header.machine, set()) else pointers
    return 12 if elf.section_size(idx) == 12 * n_labels else pointers


def _gpl_flags(elf: ModuleElf, ksym_idx: int, flags_idx: int, entries: dict[str, int]) -> dict[str, bool]:
    """Each export's ``KSYM_FLAG_GPL_ONLY`` bit: entry *i* of ``__ksymtab`` has byte *i* of
    ``__kflagstab``, as ``find_exported_symbol_in_section()`` reads it."""
    size = _ksymtab_entry_size(elf, ksym_idx, len(entries))
    count = elf.section_size(ksym_idx) // size
    flags = elf.section_bytes(flags_idx)
    if len(flags) < count:
        raise elf._fail(f"__kflagstab has {len(flags)} bytes for the {count} entries of __ksymtab "
                        "(one flag byte per entry); the kernel would read past its end")
    out = {}
    for sym, off in entries.items():
        i, rest = divmod(off, size)
        if rest or i >= count:
            raise elf._fail(f"__ksymtab_{_shown(sym)} is at byte {off} of __ksymtab, not at one of its "
                            f"{count} entries of {size} bytes")
        out[sym] = bool(flags[i] & KSYM_FLAG_GPL_ONLY)
    return out


def _namespace_by_relocation(elf: ModuleElf, ksym_idx: int, entry_offsets: dict[str, int],
                             syms: np.ndarray, strings_idx: int | None,
                             strings: StringTable) -> dict[str, str]:
    """Namespaces read through the relocation of each entry's namespace field (6.5 and later)."""
    if strings_idx is None:
        return {}
    rel = elf.relocations_for(ksym_idx)
    if rel is None:
        return {}
    rels, rela = rel
    h = elf.header
    shift, mask = (32, 0xFFFFFFFF) if h.bits == 64 else (8, 0xFF)
    pcrel = PC_RELATIVE_RELOCS.get(h.machine, set())
    if not len(rels):
        return {}
    prel32 = int(rels["info"][0]) & mask in pcrel
    field = 8 if prel32 else 2 * (h.bits // 8)
    infos = rels["info"].tolist()
    addends = rels["addend"].tolist() if rela else None
    by_offset = {off: i for i, off in reversed(list(enumerate(rels["offset"].tolist())))}
    ksym_bytes = elf.section_bytes(ksym_idx)
    shndx, values = syms["shndx"], syms["value"]
    fmt = ("<" if h.little else ">") + ("i" if prel32 or h.bits == 32 else "q")
    out = {}
    for name, off in entry_offsets.items():
        r = by_offset.get(off + field)
        if r is None:
            continue
        symidx = infos[r] >> shift
        if symidx >= len(syms) or int(shndx[symidx]) != strings_idx:
            continue
        if rela:
            addend = addends[r]
        else:  # REL: the addend is stored in the place itself
            if off + field + struct.calcsize(fmt) > len(ksym_bytes):
                raise elf._fail(f"the namespace field of __ksymtab_{_shown(name)} (byte {off + field}) is outside "
                                f"section {elf.section_name(ksym_idx)} ({len(ksym_bytes)} bytes)")
            (addend,) = struct.unpack_from(fmt, ksym_bytes, off + field)
        at = int(values[symidx]) + addend
        if not 0 <= at < len(strings):
            raise elf._fail(f"the namespace of {_shown(name)} is at byte {at}, outside __ksymtab_strings")
        ns = strings.name(at)
        if ns:
            out[name] = ns
    return out


def parse_module(data: bytes | FileImage, path: str) -> ModuleData:
    """Read one module image (already decompressed). Raises :class:`LoaderError` on bad input,
    never anything else (a :class:`MemoryError` too becomes one)."""
    try:
        elf = ModuleElf(data, path)
        return _parse(elf, path)
    except LoaderError:
        raise
    except MemoryError:
        raise LoaderError(path, "out of memory while reading it") from None
    except (ValueError, IndexError, struct.error, OverflowError) as e:
        raise LoaderError(path, f"malformed module: {e}") from e


def _parse(elf: ModuleElf, path: str) -> ModuleData:
    modinfo = _read_modinfo(elf)
    name = modinfo.get("name", [""])[0] or module_name_from_path(path)

    def one(key: str) -> str:
        return modinfo.get(key, [""])[0]

    syms, strtab = elf.symtab()
    shndx = syms["shndx"]

    # Imports: undefined global or weak symbols with a name.
    bind = syms["info"] >> 4
    und = np.flatnonzero((shndx == SHN_UNDEF) & (syms["name"] != 0) & ((bind == STB_GLOBAL) | (bind == STB_WEAK)))
    _check_entries(elf, len(und), "the undefined symbols of .symtab")
    # Interned: most modules import the same few hundred names, and a worker pickles each
    # interned name once per batch of results, and the parent unpickles them in half the time.
    und_names = list(map(sys.intern, strtab.names(syms["name"][und])))
    weak = (bind[und] == STB_WEAK).tolist()
    if len(set(und_names)) != len(und_names):  # the same name twice: keep the first
        first = {n: i for i, n in reversed(list(enumerate(und_names)))}
        keep = sorted(first.values())
        und_names, weak = [und_names[i] for i in keep], [weak[i] for i in keep]
    versions = _read_versions(elf)
    ext = _read_ext_versions(elf)
    by_name = ext if ext is not None else versions or {}  # check_version(): extended ones alone when present
    imports = Imports(und_names, list(map(by_name.get, und_names)), weak)

    info = ModuleInfo(
        name=name.replace("-", "_"),
        path=path,
        license=one("license"),
        vermagic=one("vermagic"),
        srcversion=one("srcversion"),
        intree=one("intree") == "Y",
        depends=tuple(d for d in one("depends").split(",") if d),
        import_ns=tuple(modinfo.get("import_ns", [])),
        modversions=versions is not None or ext is not None,
        layout_crc=by_name.get("module_layout"),
    )
    return ModuleData(info, _exports(elf, info.name, syms, strtab), imports)


def _exports(elf: ModuleElf, module: str, syms: np.ndarray, strtab: StringTable) -> list[Export]:
    """The module's ksymtab entries: ``__ksymtab_<sym>`` symbols in ``__ksymtab`` (and, without
    ``__kflagstab``, ``__ksymtab_gpl``)."""
    ksymtab, ksymtab_gpl = elf.index("__ksymtab"), elf.index("__ksymtab_gpl")
    if ksymtab is None and ksymtab_gpl is None:  # most modules export nothing
        return []
    flags_idx = elf.index("__kflagstab")
    ksym_sections: dict[int, bool] = {}
    if ksymtab is not None:
        ksym_sections[ksymtab] = False
    if ksymtab_gpl is not None and flags_idx is None:  # ignored beside __kflagstab, as the kernel does
        ksym_sections[ksymtab_gpl] = True
    shndx = syms["shndx"]
    crc_sections = {i for i in (elf.index("__kcrctab"), elf.index("__kcrctab_gpl")) if i is not None}
    strings_idx = elf.index("__ksymtab_strings")
    interesting = (shndx == SHN_ABS) & ((syms["info"] & 0xF) != STT_FILE) & (syms["name"] != 0)
    for i in (*ksym_sections, *crc_sections, *([strings_idx] if strings_idx is not None else [])):
        interesting |= shndx == i
    cand = syms[interesting]
    _check_entries(elf, len(cand), "the export symbols of .symtab")
    entries: dict[int, dict[str, int]] = {i: {} for i in ksym_sections}
    crcs: dict[str, int] = {}
    ns_syms: dict[str, int] = {}
    crc_words = {i: elf.section_bytes(i) for i in crc_sections}
    word = "<I" if elf.header.little else ">I"
    for n, si, value in zip(strtab.names(cand["name"], _LABEL_NAME_MAX), cand["shndx"].tolist(),
                            cand["value"].tolist()):
        if si in ksym_sections and n.startswith("__ksymtab_"):
            entries[si][n[10:]] = value
        elif n.startswith("__crc_"):
            if si == SHN_ABS:
                crcs[n[6:]] = value & 0xFFFFFFFF
            elif si in crc_words:
                if not 0 <= value <= len(crc_words[si]) - 4:
                    raise elf._fail(f"{_shown(n)} is at byte {value} of section {elf.section_name(si)}, "
                                    f"which has {len(crc_words[si])} bytes")
                (crcs[n[6:]],) = struct.unpack_from(word, crc_words[si], value)
        elif si == strings_idx and n.startswith("__kstrtabns_"):
            ns_syms[n[12:]] = value
    strings = StringTable(bytes(elf.section_bytes(strings_idx)) if strings_idx is not None else b"",
                          "__ksymtab_strings", elf.path)
    outside = next((s for s, off in ns_syms.items() if off >= len(strings)), None)
    if outside is not None:
        raise elf._fail(f"__kstrtabns_{_shown(outside)} is at byte {ns_syms[outside]}, outside __ksymtab_strings "
                        f"({len(strings)} bytes)")
    by_label = dict(zip(ns_syms, strings.names(np.fromiter(ns_syms.values(), dtype=np.int64, count=len(ns_syms)))))
    exports: list[Export] = []
    for si, gpl in ksym_sections.items():
        too_long = next((s for s in entries[si] if len(s) > 127 and len(s.encode()) >= KSYM_NAME_LEN), None)
        if too_long is not None:
            raise elf._fail(f"the exported symbol {_shown(too_long)} is {len(too_long.encode())} bytes long, "
                            f"more than KSYM_NAME_LEN ({KSYM_NAME_LEN}) allows")
        if ns_syms:
            namespaces = by_label
        else:
            namespaces = _namespace_by_relocation(elf, si, entries[si], syms, strings_idx, strings)
        flags = _gpl_flags(elf, si, flags_idx, entries[si]) if flags_idx is not None else None
        for s in sorted(entries[si]):
            exports.append(Export(module, s, flags[s] if flags is not None else gpl, namespaces.get(s, ""),
                                  crcs.get(s)))
    return exports
