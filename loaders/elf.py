"""Kernel module ELF files: ``.modinfo``, ksymtab exports, ``__versions`` and undefined symbols.

The classes here mirror the ELF structures they read (header, section header, symbol,
relocation) and read only what a module's interface needs. pyelftools builds a Python object for
every section and symbol, which costs about 27 s for the 4,022 modules of a Debian 6.1 kernel;
here the header is unpacked with :mod:`struct` and the section, symbol and relocation tables are
viewed as numpy record arrays, so only the few sections and symbols that matter are ever decoded.
``tests/test_elf.py`` checks this reader against pyelftools on real modules.

Both ELF classes and both byte orders are read; the layout of ``__ksymtab`` is decided per file
from its size and relocation types, never from a kernel version.

Layouts of the export table, per entry (``struct kernel_symbol``):

* absolute pointers ``{value, name}``: before 4.19 on every architecture, and after it on those
  without ``CONFIG_HAVE_ARCH_PREL32_RELOCATIONS``;
* 32-bit place-relative offsets ``{value_offset, name_offset}`` (8 bytes): since 4.19,
  7290d58095712 ("module: use relative references for __ksymtab entries");
* the same plus ``namespace_offset`` (12 bytes, or a third pointer when absolute): since 5.4,
  8651ec01daed ("module: add support for symbol namespaces").

The namespace string is named by a local symbol ``__kstrtabns_<sym>`` from 5.4 to 6.4; since 6.5,
ddb5cdbafaaa ("kbuild: generate KSYMTAB entries by modpost"), only the relocation of the entry's
namespace field names it, so that is read when the symbol is absent.

The CRC of an export is ``__crc_<sym>``: an absolute symbol whose value is the CRC before 5.19,
and since 7b4537199a4a ("kbuild: link symbol CRCs at final link, removing
CONFIG_MODULE_REL_CRCS") a symbol in ``__kcrctab[_gpl]`` whose 32-bit word is the CRC.
"""

from __future__ import annotations

import functools
import struct
import sys
from typing import NamedTuple, Protocol

import numpy as np

from .records import Export, Imports, LoaderError, ModuleData, ModuleInfo

__all__ = [
    "ElfHeader",
    "FileImage",
    "ModuleElf",
    "parse_module",
    "module_name_from_path",
]

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_REL = 9
SHT_NOBITS = 8
STB_GLOBAL = 1
STB_WEAK = 2
ET_REL = 1

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
        ends = shdrs["offset"].astype(np.uint64) + shdrs["size"]
        past = (shdrs["type"] != SHT_NOBITS) & (ends > len(self.data))
        if past.any():
            end = int(ends[np.argmax(past)])
            raise self._fail(f"truncated: a section ends at byte {end}, file has {len(self.data)}")
        names = shdrs[h.shstrndx]
        return shdrs, bytes(self._bytes(int(names["offset"]), int(names["size"]), "section name table"))

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise self._fail(f"truncated: {what} ends at byte {offset + size}, file has {len(self.data)}")
        return self.data[offset : offset + size]

    def section_name(self, index: int) -> str:
        """The name of section ``index``."""
        return _cstr(self.shstrtab, self._name_offsets[index])

    def index(self, name: str) -> int | None:
        """Index of the section called ``name``, or None.

        The name may sit inside a longer one in ``.shstrtab`` (``.rela__ksymtab`` holds
        ``__ksymtab``: linkers share string tails), so every place it ends with a NUL is a candidate.
        """
        want = name.encode() + b"\0"
        at = self.shstrtab.find(want)
        while at >= 0:
            if at in self._name_offsets:
                return self._name_offsets.index(at)
            at = self.shstrtab.find(want, at + 1)
        return None

    def section_bytes(self, index: int) -> bytes:
        """The bytes of section ``index`` (empty for NOBITS)."""
        if self._types[index] == SHT_NOBITS:
            return b""
        offset, size = self._offsets[index], self._sizes[index]
        if offset + size > len(self.data):
            raise self._fail(f"truncated: section {self.section_name(index)} ends at byte {offset + size}, "
                             f"file has {len(self.data)}")
        return self.data[offset : offset + size]

    def symtab(self) -> tuple[np.ndarray, bytes]:
        """The symbol table as a record array, and its string table."""
        if SHT_SYMTAB not in self._types:
            raise self._fail("no symbol table (.symtab)")
        index = self._types.index(SHT_SYMTAB)
        link = int(self.shdrs["link"][index])
        if link >= len(self._types):
            raise self._fail("symbol table links to a missing string table")
        dt = _sym_dtype(self.header.bits, self.header.little)
        size = self._sizes[index]
        raw = self._bytes(self._offsets[index], size - size % dt.itemsize, ".symtab")
        return np.frombuffer(raw, dtype=dt), self.section_bytes(link)

    def relocations_for(self, target: int) -> tuple[np.ndarray, bool] | None:
        """The relocation entries applying to section ``target`` and whether they carry addends."""
        t = self.shdrs["type"]
        found = np.flatnonzero(((t == SHT_RELA) | (t == SHT_REL)) & (self.shdrs["info"] == target))
        if not len(found):
            return None
        s = self.shdrs[found[0]]
        rela = s["type"] == SHT_RELA
        dt = _rel_dtype(self.header.bits, self.header.little, rela)
        size = int(s["size"])
        raw = self._bytes(int(s["offset"]), size - size % dt.itemsize, self.section_name(int(found[0])))
        return np.frombuffer(raw, dtype=dt), bool(rela)


def _cstr(buf: bytes, offset: int) -> str:
    end = buf.find(b"\0", offset)
    if end < 0:
        end = len(buf)
    return buf[offset:end].decode("utf-8", "replace")


def module_name_from_path(path: str) -> str:
    """The kernel's name for a module file: base name without ``.ko[.xz|.zst|.gz]``, ``-`` → ``_``."""
    base = path.rsplit("/", 1)[-1]
    cut = base.find(".ko")
    if cut > 0:
        base = base[:cut]
    return base.replace("-", "_")


def _read_modinfo(elf: ModuleElf) -> dict[str, list[str]]:
    idx = elf.index(".modinfo")
    out: dict[str, list[str]] = {}
    if idx is None:
        return out
    # NUL and "=" are single bytes in UTF-8: decoding the section once equals decoding each item.
    for item in elf.section_bytes(idx).decode("utf-8", "replace").split("\0"):
        key, sep, value = item.partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


@functools.lru_cache(maxsize=None)
def _versions_dtype(bits: int, little: bool) -> np.dtype:
    w = bits // 8
    return np.dtype([("crc", f"{'<' if little else '>'}u{w}"), ("name", f"S{64 - w}")])


def _read_versions(elf: ModuleElf) -> dict[str, int]:
    """``__versions``: {unsigned long crc; char name[64 - sizeof(long)]} records."""
    idx = elf.index("__versions")
    if idx is None:
        return {}
    raw = elf.section_bytes(idx)
    raw = raw[: len(raw) - len(raw) % 64]
    recs = np.frombuffer(raw, dtype=_versions_dtype(elf.header.bits, elf.header.little))
    crcs = (recs["crc"] & 0xFFFFFFFF).tolist()
    fields = recs["name"].tolist()  # bytes without the trailing NULs
    names = b"\0".join(fields).decode("utf-8", "replace").split("\0")  # decoded at once
    if len(names) != len(fields):  # a name with a NUL inside, and bytes after it
        names = [n.split(b"\0", 1)[0].decode("utf-8", "replace") for n in fields]
    return dict(zip(names, crcs))


def _names(name_offsets: np.ndarray, strtab: bytes) -> list[str]:
    """The names at ``name_offsets`` (``st_name`` values) in ``strtab``. Symbol names are nearly
    always ASCII: then the table is decoded once and sliced, rather than decoded name by name."""
    offsets = name_offsets.tolist()
    if not strtab.endswith(b"\0"):
        strtab += b"\0"
    if strtab.isascii():
        text = strtab.decode("ascii")
        find = text.find
        n = len(text)
        return [text[o : find("\0", o)] if o < n else "" for o in offsets]
    return [_cstr(strtab, o) for o in offsets]


def _namespace_by_relocation(elf: ModuleElf, ksym_idx: int, entry_offsets: dict[str, int],
                             syms: np.ndarray, strings_idx: int | None) -> dict[str, str]:
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
    by_offset = {int(r["offset"]): r for r in rels}
    strings = elf.section_bytes(strings_idx)
    ksym_bytes = elf.section_bytes(ksym_idx)
    out = {}
    for name, off in entry_offsets.items():
        r = by_offset.get(off + field)
        if r is None:
            continue
        symidx = int(r["info"]) >> shift
        if symidx >= len(syms) or int(syms["shndx"][symidx]) != strings_idx:
            continue
        if rela:
            addend = int(r["addend"])
        else:  # REL: the addend is stored in the place itself
            fmt = ("<" if h.little else ">") + ("i" if prel32 or h.bits == 32 else "q")
            (addend,) = struct.unpack_from(fmt, ksym_bytes, off + field)
        ns = _cstr(strings, int(syms["value"][symidx]) + addend)
        if ns:
            out[name] = ns
    return out


def parse_module(data: bytes, path: str) -> ModuleData:
    """Read one module image (already decompressed). Raises :class:`LoaderError` on bad input."""
    elf = ModuleElf(data, path)
    try:
        return _parse(elf, path)
    except LoaderError:
        raise
    except (ValueError, IndexError, struct.error, OverflowError) as e:
        raise LoaderError(path, f"malformed module: {e}") from e


def _parse(elf: ModuleElf, path: str) -> ModuleData:
    modinfo = _read_modinfo(elf)
    name = modinfo.get("name", [""])[0] or module_name_from_path(path)

    def one(key: str) -> str:
        return modinfo.get(key, [""])[0]

    info = ModuleInfo(
        name=name.replace("-", "_"),
        path=path,
        license=one("license"),
        vermagic=one("vermagic"),
        srcversion=one("srcversion"),
        intree=one("intree") == "Y",
        depends=tuple(d for d in one("depends").split(",") if d),
        import_ns=tuple(modinfo.get("import_ns", [])),
    )
    syms, strtab = elf.symtab()
    shndx = syms["shndx"]

    # Imports: undefined global or weak symbols with a name.
    bind = syms["info"] >> 4
    und = np.flatnonzero((shndx == SHN_UNDEF) & (syms["name"] != 0) & ((bind == STB_GLOBAL) | (bind == STB_WEAK)))
    # Interned: most modules import the same few hundred names, and a worker pickles each
    # interned name once per batch of results, and the parent unpickles them in half the time.
    und_names = list(map(sys.intern, _names(syms["name"][und], strtab)))
    weak = (bind[und] == STB_WEAK).tolist()
    if len(set(und_names)) != len(und_names):  # the same name twice: keep the first
        first = {n: i for i, n in reversed(list(enumerate(und_names)))}
        keep = sorted(first.values())
        und_names, weak = [und_names[i] for i in keep], [weak[i] for i in keep]
    versions = _read_versions(elf)
    imports = Imports(und_names, list(map(versions.get, und_names)), weak)
    info = info._replace(modversions=elf.index("__versions") is not None, layout_crc=versions.get("module_layout"))

    # Exports: __ksymtab_<sym> symbols in __ksymtab / __ksymtab_gpl.
    exports: list[Export] = []
    ksym_sections = {}
    for sec, gpl in (("__ksymtab", False), ("__ksymtab_gpl", True)):
        idx = elf.index(sec)
        if idx is not None:
            ksym_sections[idx] = gpl
    if ksym_sections:
        crc_sections = {i for i in (elf.index("__kcrctab"), elf.index("__kcrctab_gpl")) if i is not None}
        strings_idx = elf.index("__ksymtab_strings")
        interesting = shndx == SHN_ABS
        for i in (*ksym_sections, *crc_sections, *([strings_idx] if strings_idx is not None else [])):
            interesting |= shndx == i
        cand = syms[interesting]
        entries: dict[int, dict[str, int]] = {i: {} for i in ksym_sections}
        crcs: dict[str, int] = {}
        ns_syms: dict[str, int] = {}
        crc_words = {i: elf.section_bytes(i) for i in crc_sections}
        word = "<I" if elf.header.little else ">I"
        for n, si, value in zip(_names(cand["name"], strtab), cand["shndx"].tolist(), cand["value"].tolist()):
            if si in ksym_sections and n.startswith("__ksymtab_"):
                entries[si][n[10:]] = value
            elif n.startswith("__crc_"):
                if si == SHN_ABS:
                    crcs[n[6:]] = value & 0xFFFFFFFF
                elif si in crc_words:
                    (crcs[n[6:]],) = struct.unpack_from(word, crc_words[si], value)
            elif si == strings_idx and n.startswith("__kstrtabns_"):
                ns_syms[n[12:]] = value
        strings = elf.section_bytes(strings_idx) if strings_idx is not None else b""
        for si, gpl in ksym_sections.items():
            if ns_syms:
                namespaces = {s: _cstr(strings, off) for s, off in ns_syms.items()}
            else:
                namespaces = _namespace_by_relocation(elf, si, entries[si], syms, strings_idx)
            for s in sorted(entries[si]):
                exports.append(Export(info.name, s, gpl, namespaces.get(s, ""), crcs.get(s)))
    return ModuleData(info, exports, imports)
