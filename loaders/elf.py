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

The ELF structures themselves, and the bounds every read keeps to, are :mod:`.elffile`'s.
"""

from __future__ import annotations

import functools
import struct
import sys

import numpy as np

from .elffile import (
    KSYM_NAME_LEN,
    MAX_TABLE_ENTRIES,
    SHN_ABS,
    SHN_UNDEF,
    STB_GLOBAL,
    STB_WEAK,
    STT_FILE,
    FileImage,
    ModuleElf,
    StringTable,
    shown,
)
from .records import Export, Imports, LoaderError, ModuleData, ModuleInfo

__all__ = ["parse_module", "module_name_from_path"]

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


def module_name_from_path(path: str) -> str:
    """The kernel's name for a module file, as Kbuild makes ``KBUILD_MODNAME``: the base name
    without ``.ko`` (and a ``.xz``/``.zst``/``.gz`` after it), ``-`` → ``_``. A bare name
    (``nvme-core``) works too."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
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
            raise elf._fail(f"__ksymtab_{shown(sym)} is at byte {off} of __ksymtab, not at one of its "
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
                raise elf._fail(f"the namespace field of __ksymtab_{shown(name)} (byte {off + field}) is outside "
                                f"section {elf.section_name(ksym_idx)} ({len(ksym_bytes)} bytes)")
            (addend,) = struct.unpack_from(fmt, ksym_bytes, off + field)
        at = int(values[symidx]) + addend
        if not 0 <= at < len(strings):
            raise elf._fail(f"the namespace of {shown(name)} is at byte {at}, outside __ksymtab_strings")
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
                    raise elf._fail(f"{shown(n)} is at byte {value} of section {elf.section_name(si)}, "
                                    f"which has {len(crc_words[si])} bytes")
                (crcs[n[6:]],) = struct.unpack_from(word, crc_words[si], value)
        elif si == strings_idx and n.startswith("__kstrtabns_"):
            ns_syms[n[12:]] = value
    strings = StringTable(bytes(elf.section_bytes(strings_idx)) if strings_idx is not None else b"",
                          "__ksymtab_strings", elf.path)
    outside = next((s for s, off in ns_syms.items() if off >= len(strings)), None)
    if outside is not None:
        raise elf._fail(f"__kstrtabns_{shown(outside)} is at byte {ns_syms[outside]}, outside __ksymtab_strings "
                        f"({len(strings)} bytes)")
    by_label = dict(zip(ns_syms, strings.names(np.fromiter(ns_syms.values(), dtype=np.int64, count=len(ns_syms)))))
    exports: list[Export] = []
    for si, gpl in ksym_sections.items():
        too_long = next((s for s in entries[si] if len(s) > 127 and len(s.encode()) >= KSYM_NAME_LEN), None)
        if too_long is not None:
            raise elf._fail(f"the exported symbol {shown(too_long)} is {len(too_long.encode())} bytes long, "
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
