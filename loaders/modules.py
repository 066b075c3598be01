"""Module files on disk: find them, decompress them, read them on all cores.

A module is ``NAME.ko``, or compressed as ``NAME.ko.xz`` (Debian since 6.x backports and trixie),
``NAME.ko.zst`` or ``NAME.ko.gz``. Reading goes through :func:`ksymgraph.loaders.elf.parse_module`
in a pool of worker processes; a file that cannot be read becomes a :class:`Skipped` record
naming it and the reason, and the others go on.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import multiprocessing
import os
from pathlib import Path
from typing import Iterator

from .elf import parse_module
from .records import LoaderError, ModuleData, Skipped

__all__ = ["MODULE_SUFFIXES", "ModuleFile", "is_module_file", "find_module_files", "read_module_file",
           "reading_modules", "for_each_module"]

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def is_module_file(name: str) -> bool:
    """True for a file name that ends like a kernel module."""
    return name.endswith(MODULE_SUFFIXES)


def find_module_files(root: str | Path, unreadable: list[Skipped] | None = None) -> list[str]:
    """Every module file under ``root`` (symlinks to directories not followed), sorted.

    A directory that cannot be listed is added to ``unreadable`` with the reason, and the walk
    goes on. (``os.walk`` would pass over it silently, and builds lists this walk does not need:
    0.025 s for a Debian kernel's tree, against 0.015 s.)
    """
    out: list[str] = []

    def scan(directory: str) -> None:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        scan(entry.path)
                    elif is_module_file(entry.name):
                        out.append(entry.path)
        except OSError as e:
            if unreadable is not None:
                unreadable.append(Skipped(directory, f"cannot list directory: {e.strerror or e}"))

    scan(os.fspath(root))
    out.sort()
    return out


def _decompress(path: str, raw: bytes) -> bytes:
    try:
        if path.endswith(".xz"):
            return lzma.decompress(raw)
        if path.endswith(".gz"):
            return gzip.decompress(raw)
        if path.endswith(".zst"):
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise LoaderError(path, f"cannot decompress: {e}") from e
    except Exception as e:  # zstandard.ZstdError has no common base we can name without importing it
        raise LoaderError(path, f"cannot decompress: {e}") from e
    return raw


class ModuleFile:
    """An uncompressed module file whose bytes are read where sliced (``os.pread``).

    A module's interface is its header, section table, symbol table and a few small sections;
    code and data are most of the file and are never read. Slices past the end are cut short,
    as they are of bytes.
    """

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, where: slice) -> bytes:
        start, stop, step = where.indices(self.size)
        if step != 1:
            raise ValueError("a module file is read in contiguous slices")
        return os.pread(self.fd, stop - start, start) if stop > start else b""


def read_module_file(path: str) -> ModuleData:
    """Read and parse one module file. Raises :class:`LoaderError` naming the file and the reason.

    An uncompressed module is read in place (:class:`ModuleFile`): only the header, the tables
    and the few sections the interface needs are read from disk.
    """
    try:
        if path.endswith(".ko"):
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size:  # else read it whole below: an empty file, or one like /proc/... with no size
                    return parse_module(ModuleFile(fd, size), path)
            finally:
                os.close(fd)
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:  # cannot open, or a read error halfway (EIO)
        raise LoaderError(path, e.strerror or str(e)) from e
    return parse_module(_decompress(path, raw), path)


def _read_or_skip(path: str) -> ModuleData | Skipped:
    try:
        return read_module_file(path)
    except LoaderError as e:
        return Skipped(e.path, e.reason)


@contextlib.contextmanager
def reading_modules(paths: list[str], workers: int | None = None) -> Iterator[Iterator[ModuleData | Skipped]]:
    """Start reading ``paths`` on ``workers`` processes at once; the ``with`` body gets the results
    (a :class:`ModuleData` or :class:`Skipped` per path, in completion order) as an iterator and
    may do other work before it takes them. ``workers=1`` reads in this process, as the results are
    taken. Leaving the body stops the workers.
    """
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 64:
        yield map(_read_or_skip, paths)
        return
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    # Four batches a worker: a worker pickles each name it interned once per batch, and the parent
    # unpickles a few large batches faster than many small ones (64-module batches of a Debian
    # kernel cost the load 0.05 s more).
    chunksize = max(16, -(-len(paths) // (workers * 4)))
    with ctx.Pool(workers) as pool:
        yield pool.imap_unordered(_read_or_skip, paths, chunksize=chunksize)


def for_each_module(paths: list[str], workers: int | None = None) -> Iterator[ModuleData | Skipped]:
    """Yield a :class:`ModuleData` or :class:`Skipped` for each path, reading on ``workers`` cores.

    Results come in completion order. ``workers=1`` reads in this process.
    """
    with reading_modules(paths, workers) as results:
        yield from results
