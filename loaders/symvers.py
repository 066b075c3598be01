"""Module.symvers: the build's list of every export, with CRC, owner, type and namespace.

One line per export, tab-separated::

    crc <TAB> symbol <TAB> owner <TAB> EXPORT_SYMBOL[_GPL] <TAB> namespace

The namespace column moved to the end in 5.7, 5190044c2965 ("modpost: move the namespace field
in Module.symvers last"); from 5.4 to 5.6 it was third::

    crc <TAB> symbol <TAB> namespace <TAB> owner <TAB> EXPORT_SYMBOL[_GPL]

and before 5.4 there was no namespace column. All three are accepted: the column holding
``EXPORT_SYMBOL*`` tells which layout a line has. ``owner`` is ``vmlinux`` or the module's path
in the build tree without ``.ko`` (``drivers/usb/storage/usb-storage``).

Fields are held to what the kernel can mean, and a line that is not is skipped with the reason
(the rest of the file is still read): a CRC is a 32-bit value (modpost writes ``0x%08x``; the
kernel compares it as a ``u32``), a symbol name has at most ``KSYM_NAME_LEN - 1`` bytes, and a
line at most :data:`MAX_LINE_BYTES`; a longer one is passed over without being held in memory.
A file of more than :data:`MAX_ENTRIES` exports is refused whole: it is not a kernel's, and a
load of it would hold gigabytes (10 million lines needed 11.7 GB, issue 17).
The owner and namespace strings of a file are shared between its lines (a Module.symvers names
a few thousand owners on 30,000 lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

from .elf import module_name_from_path
from .elffile import KSYM_NAME_LEN
from .records import Export, LoaderError, Skipped

__all__ = ["MAX_LINE_BYTES", "MAX_ENTRIES", "SymversEntry", "parse_symvers_line", "for_each_symvers_entry", "read_symvers"]

#: The longest line read: a CRC, a symbol name (511 bytes at most), an owner path (PATH_MAX, 4,096
#: bytes), the export type and a namespace, with room to spare.
MAX_LINE_BYTES = 16 << 10

#: The most exports a Module.symvers may list: eight times the largest of every Debian kernel from
#: 5.10 to 7.3 (30,890 lines, 7.2.11+deb13-amd64). A load of this many takes about 0.5 GB.
MAX_ENTRIES = 1 << 18


EXPORT_TYPES = {
    "EXPORT_SYMBOL": False,
    "EXPORT_SYMBOL_GPL": True,
    # Removed in 5.13 (367948220fce "module: remove EXPORT_SYMBOL_GPL_FUTURE"): loads as non-GPL.
    "EXPORT_SYMBOL_GPL_FUTURE": False,
    # Removed in 5.13 (f1c3d73e9731 "module: remove EXPORT_UNUSED_SYMBOL*").
    "EXPORT_UNUSED_SYMBOL": False,
    "EXPORT_UNUSED_SYMBOL_GPL": True,
}


class SymversEntry(NamedTuple):
    """One line of Module.symvers."""

    export: Export
    """The export, its module named as the kernel names it (``usb_storage``)."""
    owner: str
    """The owner column as written: ``vmlinux`` or a build-tree path (``drivers/usb/storage/usb-storage``)."""


def parse_symvers_line(line: str, _shared: dict | None = None) -> SymversEntry:
    """Parse one line; raises ValueError with the reason when it is malformed.

    ``_shared`` (a dict kept across the lines of one file) makes equal owner, module and
    namespace strings one object."""
    cols = line.rstrip("\r\n").split("\t")
    if len(cols) < 4:
        raise ValueError(f"expected at least 4 tab-separated columns, found {len(cols)}")
    if cols[3] in EXPORT_TYPES:  # crc sym owner type [ns]   (5.7 and later, and before 5.4)
        crc_s, sym, owner, kind = cols[:4]
        ns = cols[4] if len(cols) > 4 else ""
    elif len(cols) >= 5 and cols[4] in EXPORT_TYPES:  # crc sym ns owner type   (5.4 to 5.6)
        crc_s, sym, ns, owner, kind = cols[:5]
    else:
        raise ValueError(f"no EXPORT_SYMBOL* type in column 4 or 5: {cols[3][:80]!r}")
    if not sym or not owner:
        raise ValueError("empty symbol or owner column")
    if len(sym) > 127 and len(sym.encode()) >= KSYM_NAME_LEN:
        raise ValueError(f"symbol name of {len(sym.encode())} bytes, longer than KSYM_NAME_LEN ({KSYM_NAME_LEN}) allows")
    try:
        crc = int(crc_s, 16)  # as modpost's strtoul() reads it: "0x" or not
    except ValueError:
        raise ValueError(f"bad CRC {crc_s[:40]!r}") from None
    if not 0 <= crc <= 0xFFFFFFFF:
        raise ValueError(f"CRC {crc_s[:40]} is {'negative' if crc < 0 else 'wider than 32 bits'}: "
                         "a CRC is a 32-bit unsigned value")
    if ns:
        ns = ns.strip()
    if _shared is None:
        module = "vmlinux" if owner == "vmlinux" else module_name_from_path(owner)
    else:
        known = _shared.get(owner)
        if known is None:
            known = _shared[owner] = (owner, "vmlinux" if owner == "vmlinux" else module_name_from_path(owner))
        owner, module = known
        ns = _shared.setdefault(ns, ns)
    return SymversEntry(Export(module, sym, EXPORT_TYPES[kind], ns, crc), owner)


def _lines(f) -> Iterator[bytes | int]:
    """The lines of binary file ``f``, read a MiB at a time; for a line longer than
    :data:`MAX_LINE_BYTES`, its length instead (it is passed over, never held whole)."""
    rest = b""
    overlong = 0  # bytes of an over-long line passed so far
    while block := f.read(1 << 20):
        lines = block.split(b"\n")
        if overlong:
            if len(lines) == 1:
                overlong += len(block)
                continue
            yield overlong + len(lines[0])
            overlong, lines[0] = 0, None
        elif rest:
            lines[0] = rest + lines[0]
        rest = lines.pop()
        for line in lines:
            if line is None:
                continue
            yield line if len(line) <= MAX_LINE_BYTES else len(line)
        if len(rest) > MAX_LINE_BYTES:
            overlong, rest = len(rest), b""
    if overlong:
        yield overlong
    elif rest:
        yield rest if len(rest) <= MAX_LINE_BYTES else len(rest)


def for_each_symvers_entry(path: str | Path) -> Iterator[SymversEntry | Skipped]:
    """Yield each entry of a Module.symvers file, or a :class:`Skipped` for a bad line.

    Lines that are not valid UTF-8, are longer than :data:`MAX_LINE_BYTES` or do not parse are
    reported, with file and line number, and the rest of the file is still read. Raises
    :class:`LoaderError` at the entry after :data:`MAX_ENTRIES` (the caller keeps none of the file).
    """
    shared: dict = {}
    entries = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(_lines(f), 1):
            if isinstance(raw, int):
                yield Skipped(f"{path}:{lineno}", f"line of {raw} bytes, longer than the {MAX_LINE_BYTES} "
                                                  "bytes a Module.symvers line can need")
                continue
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Skipped(f"{path}:{lineno}", f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                entry = parse_symvers_line(line, shared)
            except ValueError as e:
                yield Skipped(f"{path}:{lineno}", str(e))
                continue
            entries += 1
            if entries > MAX_ENTRIES:
                raise LoaderError(f"{path}:{lineno}", f"more than {MAX_ENTRIES:,} exports, where the largest "
                                  "Debian kernel lists 30,890: not a kernel's Module.symvers, so none of it "
                                  "is read (split it, or check what wrote it)")
            yield entry


def read_symvers(path: str | Path) -> tuple[list[SymversEntry], list[Skipped]]:
    """All entries of a Module.symvers file, and the lines skipped."""
    entries: list[SymversEntry] = []
    skipped: list[Skipped] = []
    for item in for_each_symvers_entry(path):
        (skipped if isinstance(item, Skipped) else entries).append(item)
    return entries, skipped
