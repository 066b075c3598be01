"""The embedded store's files on disk, and how a new version of the store replaces the old one.

A LadybugDB database is one file (``PATH``) while closed, with sidecar files (:data:`SIDECARS`)
while it writes or recovers. The embedded store never writes ``PATH`` in place: it builds the next
version in a staging directory beside it (:class:`NextDatabase`), syncs it, and renames it over
``PATH`` — the one commit point. This module holds those file operations, the one-line errors
they give (a full disk, a directory that cannot be written), and the test-only hook that stops a
writing process at a chosen point (:data:`TEST_STOP_ENV`).

Why not one transaction in place, as before: LadybugDB 0.22.0 does not keep a transaction all or
nothing when the process dies during its commit's checkpoint. A transaction that deletes a table's
rows (or drops and recreates the table) and then ``COPY``\\s new rows in, killed with ``SIGKILL``
during ``COMMIT``, comes back with an empty table in most runs: neither the old rows nor the new.
Often a read-only open then fails with "Cannot open database in read-only mode while checkpoint
recovery is pending" until a writer opens it; some runs find the WAL corrupt. The README's section
on the store says how to reproduce it.

Writers take ``PATH.lock`` (``flock``, never removed) for as long as they are open, so that two
loads cannot both build from the same old store; a second writer gets a clear :class:`StoreError`.
Holding it, a writer removes the staging directories that killed writers left behind and lets
LadybugDB recover a store that an older ksymgraph (or another program) left with a pending
checkpoint. A reader that finds such a store does the same through a short writer open when it
can take the lock, and otherwise says in one line what to run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

from .store import StoreError

__all__ = ["TEST_STOP_ENV", "STOP_POINTS", "SIDECARS", "NextDatabase", "copy_file", "fsync", "test_stop",
           "glob_escape", "os_error", "engine_reason", "reason", "path_literal", "lock_path", "take_writer_lock",
           "staging_dirs", "remove_staging_if_unlocked"]

#: Test-only: ``KSYMGRAPH_TEST_STOP=POINT[:SECONDS]`` makes a writing process stop itself
#: (``SIGSTOP``) when it reaches POINT of a write, or SECONDS after, so that a test can look at the
#: store and kill the writer exactly there (tests/test_crash_safety.py). Never set it otherwise.
TEST_STOP_ENV = "KSYMGRAPH_TEST_STOP"

#: Where :data:`TEST_STOP_ENV` can stop a write, in order: the writer thread starts its ``COPY``s
#: (each commits on its own, and LadybugDB checkpoints as its log fills); the tables are written and
#: the last checkpoint begins; the new database is being closed; it is about to be renamed over the
#: store; it has just been renamed.
STOP_POINTS = ("copy", "commit", "close", "switch", "switched")

#: The files LadybugDB keeps beside a database while it writes or recovers one (suffixes of PATH).
SIDECARS = (".wal", ".wal.checkpoint", ".shadow")


class NextDatabase:
    """A database being built in a staging directory, to be renamed over the store."""

    def __init__(self, staging: Path, path: Path, copied: bool):
        self.staging = staging
        """The staging directory (Parquet files, the database, its sidecar files)."""
        self.path = path
        """The database file."""
        self.copied = copied
        """True when it started as a copy of the store (which holds other kernels)."""
        self.db = self.conn = None

    def close(self) -> None:
        """Close the database cleanly (LadybugDB checkpoints and removes its sidecar files)."""
        conn, db, self.conn, self.db = self.conn, self.db, None, None
        if conn is not None:
            conn.close()
        if db is not None:
            db.close()

    def discard(self) -> None:
        """Close (ignoring errors) and remove the staging directory."""
        with contextlib.suppress(RuntimeError):
            self.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` in the kernel (``copy_file_range``: a reflink where the filesystem can)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        while done < size:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
            if n == 0:
                break
            done += n
        if done < size:  # copy_file_range stopped short: finish the ordinary way
            fin.seek(done)
            fout.seek(done)
            shutil.copyfileobj(fin, fout)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_stop(point: str) -> None:
    """Test-only: stop this process at ``point`` (or some seconds after) if :data:`TEST_STOP_ENV` says so."""
    spec = os.environ.get(TEST_STOP_ENV)
    if not spec:
        return
    name, _, delay = spec.partition(":")
    if name != point:
        return

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGSTOP)

    if delay and float(delay) > 0:
        timer = threading.Timer(float(delay), stop)
        timer.daemon = True
        timer.start()
    else:
        stop()


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


_NO_SPACE = ("No space left", "[errno 28]", "Cannot write to file")


def _space_hint(text: str) -> str:
    return ": free some space, or use a --db on a larger disk" if any(m in text for m in _NO_SPACE) else ""


def reason(e: OSError) -> str:
    """An OSError's reason, with a hint when the disk is full."""
    text = e.strerror or str(e)
    return text + (_space_hint("No space left") if e.errno == errno.ENOSPC else _space_hint(text))


def os_error(what: str, e: OSError) -> StoreError:
    """A one-line StoreError for an OSError: what failed, the file, the reason, and a hint."""
    where = f" ({e.filename})" if e.filename else ""
    hint = ": use a --db where you can write" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
    return StoreError(f"{what}{where}: {reason(e)}{hint}")


def engine_reason(msg: str, disk: Path | None = None) -> str:
    """LadybugDB's message on one line, shortened where it is long, with a hint when the disk is full
    (or, for an I/O error writing on ``disk``, its free space and the same hint).

    A failed commit's message says "the committed data is durable and will be recovered on
    restart": true of the staging database, which this store then throws away, so only the
    error under it is kept; a failed write becomes "cannot write FILE: REASON"."""
    text = " ".join(msg.split())
    m = re.search(r"Original error: (.*)", text) or re.search(r"post-commit checkpoint failed[^:]*: (.*)", text)
    if m:
        text = f"LadybugDB's checkpoint failed: {m.group(1)}"
    text = re.sub(r"(?:IO exception: )?Cannot write to file\. path: (\S+) .*?Error: (.*)", r"cannot write \1: \2", text)
    hint = _space_hint(text)
    if not hint and disk is not None and "IO exception" in text:
        # Out of room, a checkpoint can fail reading back a page whose write did not land
        # ("Cannot read from file: … numBytesRead: 0"), a message that names no disk.
        hint = f" ({free_space(disk)} free on the disk holding {disk})" + _space_hint("No space left")
    return text + hint


def free_space(path: Path) -> str:
    """The free space of the file system holding ``path``, in MiB, for a message."""
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB"
    except OSError as e:
        return f"unknown ({e.strerror})"


def path_literal(path: str) -> str:
    """A file path as a Cypher string literal (``COPY … FROM`` takes no parameter for it)."""
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def lock_path(file: Path) -> Path:
    """The writers' lock of the store at ``file``: ``PATH.lock``, never removed."""
    return file.with_name(file.name + ".lock")


def take_writer_lock(file: Path, shown: Path, wait: float) -> int:
    """Take ``PATH.lock`` for a writer, waiting up to ``wait`` s (a reader may hold it for a
    moment); the file descriptor (closing it releases the lock). ``shown``: the store's path as
    the user gave it, for the message."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise os_error(f"cannot write the store at {shown}", e) from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StoreError(f"{shown} is being written by another process (it holds {lock_path(file)}); "
                                 "wait for it to finish or use another --db") from None
            time.sleep(0.02)


def staging_dirs(file: Path) -> list[Path]:
    """The staging directories beside the store at ``file`` (its next versions, or dead writers')."""
    return sorted(file.parent.glob(f"{glob_escape(file.name)}.staging-*"))


def remove_staging_if_unlocked(file: Path) -> None:
    """Remove the staging directories dead writers left beside ``file``, if no writer holds the
    lock now (a reader's clean-up: a writer at work may own them)."""
    if not staging_dirs(file):
        return
    try:
        fd = os.open(lock_path(file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return  # not ours to clean
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # a writer is at work: they may be its own
    try:
        for d in staging_dirs(file):
            shutil.rmtree(d, ignore_errors=True)
    finally:
        os.close(fd)
