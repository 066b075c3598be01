"""Module.symvers: the build's list of every export, with CRC, owner, type and namespace.

One line per export, tab-separated::

    crc <TAB> symbol <TAB> owner <TAB> EXPORT_SYMBOL[_GPL] <TAB> namespace

The namespace column moved to the end in 5.7, 5190044c2965 ("modpost: move the namespace field
in Module.symvers last"); from 5.4 to 5.6 it was third::

    crc <TAB> symbol <TAB> namespace <TAB> owner <TAB> EXPORT_SYMBOL[_GPL]

and before 5.4 there was no namespace column. All three are accepted: the column holding
``EXPORT_SYMBOL*`` tells which layout a line has. ``owner`` is ``vmlinux`` or the module's path
in the build tree without ``.ko`` (``drivers/usb/storage/usb-storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

from .elf import module_name_from_path
from .records import Export, Skipped

__all__ = ["SymversEntry", "parse_symvers_line", "for_each_symvers_entry", "read_symvers"]

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


def parse_symvers_line(line: str) -> SymversEntry:
    """Parse one line; raises ValueError with the reason when it is malformed."""
    cols = line.rstrip("\r\n").split("\t")
    if len(cols) < 4:
        raise ValueError(f"expected at least 4 tab-separated columns, found {len(cols)}")
    if cols[3] in EXPORT_TYPES:  # crc sym owner type [ns]   (5.7 and later, and before 5.4)
        crc_s, sym, owner, kind = cols[:4]
        ns = cols[4] if len(cols) > 4 else ""
    elif len(cols) >= 5 and cols[4] in EXPORT_TYPES:  # crc sym ns owner type   (5.4 to 5.6)
        crc_s, sym, ns, owner, kind = cols[:5]
    else:
        raise ValueError(f"no EXPORT_SYMBOL* type in column 4 or 5: {cols[3]!r}")
    if not sym or not owner:
        raise ValueError("empty symbol or owner column")
    try:
        crc = int(crc_s, 16)
    except ValueError:
        raise ValueError(f"bad CRC {crc_s!r}") from None
    module = "vmlinux" if owner == "vmlinux" else module_name_from_path(owner)
    return SymversEntry(Export(module, sym, EXPORT_TYPES[kind], ns.strip(), crc), owner)


def for_each_symvers_entry(path: str | Path) -> Iterator[SymversEntry | Skipped]:
    """Yield each entry of a Module.symvers file, or a :class:`Skipped` for a bad line.

    Lines that are not valid UTF-8 or do not parse are reported, with file and line number, and
    the rest of the file is still read.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Skipped(f"{path}:{lineno}", f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                yield parse_symvers_line(line)
            except ValueError as e:
                yield Skipped(f"{path}:{lineno}", str(e))


def read_symvers(path: str | Path) -> tuple[list[SymversEntry], list[Skipped]]:
    """All entries of a Module.symvers file, and the lines skipped."""
    entries: list[SymversEntry] = []
    skipped: list[Skipped] = []
    for item in for_each_symvers_entry(path):
        (skipped if isinstance(item, Skipped) else entries).append(item)
    return entries, skipped
