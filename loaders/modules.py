"""Module files on disk: find them, decompress them, read them on all cores.

A module is ``NAME.ko``, or compressed as ``NAME.ko.xz`` (Debian since 6.x backports and trixie),
``NAME.ko.zst`` or ``NAME.ko.gz``. Reading goes through :func:`ksymgraph.loaders.elf.parse_module`
in a pool of worker processes; a file that cannot be read becomes a :class:`Skipped` record
naming it and the reason, and the others go on.

The work per file is bounded, whatever the file holds:

* only regular files are read: a FIFO, device or socket named ``*.ko`` (or a symlink to one) is
  skipped with the reason, never opened for reading (a FIFO would block, ``/dev/zero`` never ends);
* a compressed module is decompressed as a stream that stops at :data:`MAX_MODULE_BYTES`, with
  the decoders' own memory bounded (:data:`XZ_MEMLIMIT`, :data:`ZSTD_MAX_WINDOW`); as the
  kernel's own decompressor (kernel/module/decompress.c) does, the first stream or frame is the
  module and what follows it is not read;
* an uncompressed module is read in place, only the sections its interface needs, each at most
  :data:`ksymgraph.loaders.elf.MAX_SECTION_BYTES` (a sparse file that claims a 1 GB ``.modinfo`` is
  refused, not read);
* a :class:`MemoryError` is a :class:`LoaderError` for that file;
* a worker process that dies (the OOM killer's SIGKILL, a crash) is reported as a
  :class:`Skipped` naming the file it was reading and how it died; a new worker takes the rest of
  its batch and the load goes on.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import lzma
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import stat
import threading
import zlib
from pathlib import Path
from typing import Iterator

from .elf import parse_module
from .records import LoaderError, ModuleData, Skipped

__all__ = ["MODULE_SUFFIXES", "MAX_MODULE_BYTES", "XZ_MEMLIMIT", "ZSTD_MAX_WINDOW", "ModuleFile", "is_module_file",
           "find_module_files", "read_module_file", "reading_modules", "for_each_module"]

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

#: The most bytes a compressed module may hold, and may decompress to. The largest real module,
#: Debian 7.2's amdgpu.ko, is 47 MB (19 MB in 6.1).
MAX_MODULE_BYTES = 256 << 20

#: The memory the xz decoder may use (its dictionary). Kbuild compresses modules with a 1 MiB
#: dictionary (``xz --lzma2=dict=1MiB`` in scripts/Makefile.modinst); xz's own presets go to 64 MiB.
XZ_MEMLIMIT = 128 << 20

#: The largest zstd window accepted: zstd's own default limit (``ZSTD_WINDOWLOG_LIMIT_DEFAULT``,
#: 2^27), which ``zstd -d`` applies too.
ZSTD_MAX_WINDOW = 1 << 27

_CHUNK = 1 << 20
_COMPRESSED = (".xz", ".gz", ".zst")


def is_module_file(name: str) -> bool:
    """True for a file name that ends like a kernel module."""
    return name.endswith(MODULE_SUFFIXES)


def find_module_files(root: str | Path, unreadable: list[Skipped] | None = None) -> list[str]:
    """Every module file under ``root`` (symlinks to directories not followed), sorted.

    A directory that cannot be listed is added to ``unreadable`` with the reason, and the walk
    goes on. (``os.walk`` would pass over it silently, and builds lists this walk does not need:
    0.025 s for a Debian kernel's tree, against 0.015 s.) Names of FIFOs, devices and sockets are
    listed too, so that reading them reports why they were skipped.
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


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(path: str, mode: int) -> LoaderError:
    if stat.S_ISDIR(mode):
        return LoaderError(path, os.strerror(errno.EISDIR))
    kind = next((k for test, k in _KINDS if test(mode)), f"file type {stat.S_IFMT(mode):#o}")
    if os.path.islink(path):
        return LoaderError(path, f"not a regular file: a symlink to {kind} ({os.path.realpath(path)}), not read")
    return LoaderError(path, f"not a regular file: {kind}, not read")


def _open_regular(path: str) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file (through symlinks): (fd, size).

    The type is checked before opening (opening a device can have effects of its own) and again
    on the open file (O_NONBLOCK: a FIFO swapped in meanwhile does not block the open).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _too_big(path: str, what: str) -> LoaderError:
    return LoaderError(path, f"{what} more than {MAX_MODULE_BYTES >> 20} MiB, the most this reader takes for a "
                             "module (the largest real one is under 50 MB); not read further")


def _read_capped(path: str, fd: int) -> bytes:
    """The whole of a regular file, at most :data:`MAX_MODULE_BYTES` (files in /proc report size 0)."""
    chunks, total = [], 0
    while chunk := os.read(fd, _CHUNK):
        total += len(chunk)
        if total > MAX_MODULE_BYTES:
            raise _too_big(path, "the file holds")
        chunks.append(chunk)
    return b"".join(chunks)


class _CappedInput:
    """The compressed bytes of ``fd``, read in chunks, at most :data:`MAX_MODULE_BYTES` in all."""

    def __init__(self, path: str, fd: int):
        self.path, self.fd, self.total = path, fd, 0

    def read(self, size: int = -1) -> bytes:
        chunk = os.read(self.fd, size if size > 0 else _CHUNK)
        self.total += len(chunk)
        if self.total > MAX_MODULE_BYTES:
            raise _too_big(self.path, "the compressed file holds")
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_CHUNK):
            yield chunk


def _decompress(path: str, fd: int) -> bytearray:
    """Decompress the module in ``fd`` (``.xz``, ``.gz`` or ``.zst``: from the file name) into at most
    :data:`MAX_MODULE_BYTES`: the first xz stream, gzip member or zstd frame."""
    out = bytearray()
    try:
        if path.endswith(".zst"):
            import zstandard

            dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
            # read_to_iter() stops at the end of the first frame and hands out bounded pieces;
            # a frame cut short just ends, so the size its header declares tells.
            declared = zstandard.frame_content_size(os.pread(fd, 18, 0))
            for chunk in dctx.read_to_iter(_CappedInput(path, fd), read_size=_CHUNK, write_size=_CHUNK):
                out += chunk
                if len(out) > MAX_MODULE_BYTES:
                    break
            if len(out) <= MAX_MODULE_BYTES and (len(out) != declared if declared >= 0 else not out):
                raise LoaderError(path, "cannot decompress: the compressed data ends before its frame does")
        else:
            gzip = not path.endswith(".xz")
            if gzip:
                d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # one gzip member
            else:
                d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
            for data in _CappedInput(path, fd):
                while True:
                    out += d.decompress(data, _CHUNK)  # a piece at a time: never a second copy of it all
                    if d.eof or len(out) > MAX_MODULE_BYTES:
                        break
                    if gzip:  # zlib hands back the input it has not used yet
                        data = d.unconsumed_tail
                        if not data:
                            break
                    elif d.needs_input:  # lzma keeps it, and says when it wants more
                        break
                    else:
                        data = b""
                if d.eof or len(out) > MAX_MODULE_BYTES:
                    break
            if not d.eof and len(out) <= MAX_MODULE_BYTES:
                raise LoaderError(path, "cannot decompress: the compressed data ends before its stream does")
    except LoaderError:
        raise
    except MemoryError:
        raise LoaderError(path, "out of memory while decompressing it") from None
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as e:
        raise LoaderError(path, f"cannot decompress: {e}") from e
    except Exception as e:  # zstandard.ZstdError has no common base we can name without importing it
        raise LoaderError(path, f"cannot decompress: {e}") from e
    if len(out) > MAX_MODULE_BYTES:
        raise _too_big(path, "it decompresses to")
    return out


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
        fd, size = _open_regular(path)
        try:
            if not path.endswith(_COMPRESSED):
                if size:  # else read it whole: an empty file, or one like /proc/... with no size
                    return parse_module(ModuleFile(fd, size), path)
                image: bytes | bytearray = _read_capped(path, fd)
            elif size == 0:
                raise LoaderError(path, "empty file")
            else:
                image = _decompress(path, fd)
        finally:
            os.close(fd)
    except OSError as e:  # cannot open, or a read error halfway (EIO)
        raise LoaderError(path, e.strerror or str(e)) from e
    except MemoryError:
        raise LoaderError(path, "out of memory while reading it") from None
    return parse_module(image, path)


def _read_or_skip(path: str) -> ModuleData | Skipped:
    try:
        return read_module_file(path)
    except LoaderError as e:
        return Skipped(e.path, e.reason)


# The worker pool ---------------------------------------------------------------------------------
#
# multiprocessing.Pool loses a task whose worker dies, and its imap then waits forever; a
# concurrent.futures pool breaks as a whole and cannot say which file was being read. So the
# pool here is small and its own: each worker reads batches of paths sent over its pipe and
# writes, before each file, the file's place in the batch to a shared counter. A thread of the
# parent waits on the pipes and on the processes' sentinels at once, hands out batches, queues
# the results, and, when a worker dies, reports the file it held and gives the rest of the
# batch to a new worker.

_SENDING = -2  # the counter's value while a worker sends its results


def _worker(conn, progress, slot: int, parent: int) -> None:
    """A worker: read each batch received, send back its results, until told to stop or the
    parent is gone."""
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt, ConnectionResetError):
        while True:
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return
            batch = conn.recv()
            if batch is None:
                return
            out = []
            for i, path in enumerate(batch):
                progress[slot] = i
                out.append(_read_or_skip(path))
            progress[slot] = _SENDING
            conn.send(out)


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the kernel's OOM killer sends it when memory runs out)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {exitcode}"


class _Worker:
    __slots__ = ("slot", "process", "conn", "batch", "retried")

    def __init__(self, slot: int, process, conn):
        self.slot = slot
        self.process = process
        self.conn = conn
        self.batch: list[str] | None = None
        self.retried = False


class _Pool:
    """Workers reading ``batches`` of paths; :meth:`results` yields what they read."""

    def __init__(self, batches: list[list[str]], workers: int):
        self.pending = collections.deque((b, False) for b in batches)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.context = fork = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        self.progress = fork.RawArray("q", workers)
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.wake_r, self.wake_w = fork.Pipe(duplex=False)
        for slot in range(min(workers, len(batches))):
            self._start(slot, fork)
        self.thread = threading.Thread(target=self._run, name="module-readers", daemon=True)
        self.thread.start()

    def _start(self, slot: int, ctx) -> None:
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child_end, self.progress, slot, os.getpid()), daemon=True,
                        name=f"module-reader-{slot}")
        p.start()
        child_end.close()
        self.workers[slot] = w = _Worker(slot, p, parent_end)
        self._feed(w)

    def _feed(self, w: _Worker) -> None:
        batch, retried = self.pending.popleft() if self.pending else (None, False)
        w.batch, w.retried = batch, retried
        self.progress[w.slot] = -1
        with contextlib.suppress(OSError):  # it died: its sentinel says so next
            w.conn.send(batch)

    def _run(self) -> None:
        try:
            while self.workers and not self.stopping:
                waiting = {}
                for w in self.workers.values():
                    waiting[w.conn] = waiting[w.process.sentinel] = w
                ready = multiprocessing.connection.wait([*waiting, self.wake_r])
                if self.stopping:
                    break
                for obj in ready:  # results first: a worker may have sent its last and exited
                    w = waiting.get(obj)
                    if w is None or obj is not w.conn or self.workers.get(w.slot) is not w:
                        continue
                    try:
                        out = w.conn.recv()
                    except (EOFError, OSError):  # it died
                        self._ended(w)
                        continue
                    self.queue.put(out)
                    if w.batch is not None:
                        self._feed(w)
                for obj in ready:
                    w = waiting.get(obj)
                    if w is not None and obj is w.process.sentinel and self.workers.get(w.slot) is w \
                            and not w.conn.poll():
                        self._ended(w)
        except BaseException as e:  # a bug here must not leave the reader waiting
            self.queue.put(e)
        finally:
            self._stop_workers()
            self.queue.put(None)

    def _ended(self, w: _Worker) -> None:
        del self.workers[w.slot]
        w.process.join()
        w.conn.close()
        batch = w.batch
        if batch is None:  # told to stop, and stopped
            return
        how = _how_it_died(w.process.exitcode)
        at = self.progress[w.slot]
        if 0 <= at < len(batch):
            self.queue.put([Skipped(batch[at], f"the worker process reading it died: {how}")])
            rest = batch[:at] + batch[at + 1:]  # what it read before is lost with it: read again
            if rest:
                self.pending.appendleft((rest, False))
        elif at == _SENDING and w.retried:
            self.queue.put([Skipped(p, f"the worker process died twice while sending what it read of this "
                                       f"file and {len(batch) - 1} others: {how}") for p in batch])
        else:  # before it began the batch, or while sending its results: once more
            self.pending.appendleft((batch, at == _SENDING))
        if self.pending:
            # Forked from this thread, as multiprocessing.Pool forks its replacements from its own
            # handler thread. (Spawning would run the main script again, which a script without an
            # ``if __name__ == "__main__"`` guard cannot bear.) The worker touches nothing of what
            # other threads hold: it reads files and sends records.
            self._start(w.slot, self.context)

    def _stop_workers(self) -> None:
        for w in self.workers.values():
            if w.process.is_alive():
                w.process.terminate()
        for w in self.workers.values():
            w.process.join()
            w.conn.close()
        self.workers.clear()

    def results(self) -> Iterator[ModuleData | Skipped]:
        while (item := self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield from item

    def close(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self.wake_w.send_bytes(b"x")
        self.thread.join()
        self.wake_r.close()
        self.wake_w.close()


@contextlib.contextmanager
def reading_modules(paths: list[str], workers: int | None = None) -> Iterator[Iterator[ModuleData | Skipped]]:
    """Start reading ``paths`` on ``workers`` processes at once; the ``with`` body gets the results
    (a :class:`ModuleData` or :class:`Skipped` per path, in completion order) as an iterator and
    may do other work before it takes them. ``workers=1`` reads in this process, as the results are
    taken. Leaving the body stops the workers.

    A worker that dies is replaced; the file it was reading is a :class:`Skipped` saying how it
    died, and the rest of its batch is read by the new worker.
    """
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 64:
        yield map(_read_or_skip, paths)
        return
    # Four batches a worker: a worker pickles each name it interned once per batch, and the parent
    # unpickles a few large batches faster than many small ones (64-module batches of a Debian
    # kernel cost the load 0.05 s more).
    size = max(16, -(-len(paths) // (workers * 4)))
    pool = _Pool([paths[i:i + size] for i in range(0, len(paths), size)], workers)
    try:
        yield pool.results()
    finally:
        pool.close()


def for_each_module(paths: list[str], workers: int | None = None) -> Iterator[ModuleData | Skipped]:
    """Yield a :class:`ModuleData` or :class:`Skipped` for each path, reading on ``workers`` cores.

    Results come in completion order. ``workers=1`` reads in this process.
    """
    with reading_modules(paths, workers) as results:
        yield from results
