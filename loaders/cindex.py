"""The index of a whole C tree: worker processes writing Parquet shards, kept up to date incrementally.

:func:`index_tree` parses a kernel tree with a pool of worker processes (each file with
:func:`ksymgraph.loaders.cparse.parse_read_file`), each worker writing its batch's rows to its own
Parquet shard, one directory per table under ``shard_dir``. A manifest of every file's size,
mtime, content hash, includes and shard lets a re-run re-parse only the files that changed, and
drop the rows of files that changed or went away. Given a build's
:class:`~ksymgraph.loaders.preproc.PreprocContext` (and which files are parts of modules), each
file's conditionals are decided for that build; a file's entry records the digest of the context
it was parsed under, so a file is re-parsed when its bytes or its context change, and only then.
Lookups through wrappers are resolved over the whole index at the end (``lookups.parquet``).
:func:`read_table` reads a table back.

One process at a time writes an index directory: :func:`index_tree` holds its lock
(:func:`index_lock`) for the whole run, and every file is written through a temporary file of
its own (:mod:`ksymgraph.loaders.parquet`), so that two runs over one tree (two loads, a load and
a bench script) leave readable shards and a complete manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple

from .cfiles import file_signature, read_source, real_root, tree_files
from .cparse import PARSE_FAILED, PARSE_SECONDS, parse_read_file
from .includes import kernel_include_dirs
from .lookups import find_wrappers, resolve_lookups
from .parquet import TableWriter, record_schema, remove_temp_files, replace_parquet, replacing, write_table
from .preproc import PreprocContext
from .records import (ArgFlow, Call, ExportSite, FunctionDef, LoaderError, LookUp, ParseStats, Reference, Skipped,
                      StringArg)

__all__ = ["TABLES", "IndexResult", "TableWriter", "index_lock", "index_tree", "indexed_files", "read_table", "write_table"]

#: Tables written per shard, each ``<shard_dir>/<table>/<shard id>.parquet``.
TABLES = {
    "functions": FunctionDef,
    "calls": Call,
    "exports": ExportSite,
    "direct_lookups": LookUp,
    "string_args": StringArg,
    "arg_flows": ArgFlow,
    "references": Reference,
}

MANIFEST_VERSION = 4  # 3: FunctionDef.canary and .indirect; 4: Call.args, .guard, Reference.guard

#: The modules whose code decides what an index holds: a change to any of them re-indexes all.
_LOADER_MODULES = ("cparse.py", "ctree.py", "cqueries.py", "cexports.py", "ctext.py", "neutralise.py", "includes.py", "cfiles.py",
                   "lookups.py", "records.py", "cfold.py", "cindex.py", "parquet.py", "preproc.py", "ppcontext.py", "ppexpr.py")


class IndexResult(NamedTuple):
    """What :func:`index_tree` did."""

    shard_dir: Path
    """Root of the shards: one sub-directory of Parquet files per table, plus ``lookups.parquet``
    and ``manifest.json``."""
    shards: list[Path]
    """Shard files of every table (``<shard_dir>/<table>/<id>.parquet``)."""
    rows: dict[str, int]
    """Row count per table over the whole index (``lookups`` included)."""
    stats: ParseStats
    """Parse statistics over all indexed files."""
    errors: list[Skipped]
    """Files that could not be read (or not fully), includes not followed, directories that
    could not be listed, and preprocessor directives that are bad input (``file:line``), with the
    reason."""
    parsed: int
    """Files parsed during this run (the rest were unchanged and reused)."""
    reused: int
    """Files whose rows were kept from an earlier run."""
    seconds: float
    """Wall time of the run."""


# --------------------------------------------------------------------------------------------
# Reading an index back


def indexed_files(shard_dir: str | os.PathLike) -> set[str]:
    """The files an index holds (relative to its tree): the ``.c`` files it was given and the
    headers they include from code the build compiles (an ``#include`` in a dead branch is not
    followed: ``spinlock_api_up.h`` on an SMP build). Empty when there is no index there."""
    import json

    try:
        return set(json.loads((Path(shard_dir) / "manifest.json").read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def read_table(shard_dir: str | os.PathLike, table: str):
    """One table of an index as a ``pyarrow.Table`` (all shards; ``lookups`` too)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    shard_dir = Path(shard_dir)
    if table == "lookups":
        return pq.read_table(shard_dir / "lookups.parquet")
    if table not in TABLES:
        raise KeyError(f"no table {table!r}; tables: {', '.join([*TABLES, 'lookups'])}")
    files = sorted((shard_dir / table).glob("*.parquet"))
    return ds.dataset(files, format="parquet", schema=record_schema(TABLES[table])).to_table()


# --------------------------------------------------------------------------------------------
# Workers


#: ``lookup_sig`` of a file that gives the wrapper analysis nothing.
_NO_LOOKUP_INPUT = hashlib.sha1(repr([[], [], []]).encode()).hexdigest()


def _lookup_signature(result) -> str:
    """Hash of what the whole-tree wrapper analysis reads from a file: when it is unchanged, a
    re-index need not resolve the lookups again. (Sorted: the loader collects some of these
    through sets, in no fixed order.)"""
    rows = (result.lookups, result.string_args, result.arg_flows)
    return hashlib.sha1(repr([sorted(map(repr, r)) for r in rows]).encode()).hexdigest()


def _index_batch(job) -> tuple[str, list[dict], dict[str, int]]:
    """Worker: parse a batch of files and write one shard per table. Returns (shard id, one entry
    per file for the manifest, row count per table)."""
    root_s, files, include_dirs, shard_dir, shard_id, seconds, pp = job
    root = Path(root_s)
    base, digests, modules = pp if pp is not None else (None, {}, {})
    rows: dict[str, list] = {t: [] for t in TABLES}
    entries = []
    resolved: dict = {}
    for rel in files:
        entry = {"file": rel, "shard": shard_id}
        entries.append(entry)
        try:
            src, st = read_source(root_s, rel)
        except LoaderError as e:
            entry.update(error=e.reason, sha1=None, includes=[], refused=[], stats=list(ParseStats(0, 0, 0, 0, 1)))
            continue
        entry["size"], entry["mtime_ns"] = st.st_size, st.st_mtime_ns
        entry["sha1"] = hashlib.sha1(src).hexdigest()
        context = None
        if base is not None:
            module = modules.get(rel)
            context = base if module is base.module else base._replace(module=module)
            entry["ctx"] = digests[module]
        result = parse_read_file(src, rel, root, include_dirs, resolved, seconds, context)
        entry.update(error=result.error, includes=result.includes, refused=result.includes_refused,
                     stats=list(result.stats), lookup_sig=_lookup_signature(result))
        if result.error and result.error.startswith(PARSE_FAILED):
            # a failure of this code, not of the file: parsed again next time, never reused (a load
            # that ran while ksymgraph was being upgraded once kept 71 such files of LTTng's tree)
            entry["sha1"] = None
        if result.directive_notes:
            entry["notes"] = [list(n) for n in result.directive_notes]
        rows["functions"] += result.functions
        rows["calls"] += result.calls
        rows["exports"] += result.exports
        rows["direct_lookups"] += result.lookups
        rows["string_args"] += result.string_args
        rows["arg_flows"] += result.arg_flows
        rows["references"] += result.references
    for table, record_type in TABLES.items():
        write_table(Path(shard_dir) / table / f"{shard_id}.parquet", record_type, rows[table])
    return shard_id, entries, {t: len(r) for t, r in rows.items()}


def _batches(root: Path, files: list[str], target_bytes: int, max_files: int) -> list[list[str]]:
    batches, cur, size = [], [], 0
    for rel in files:
        try:
            n = os.path.getsize(root / rel)
        except OSError:
            n = 0
        cur.append(rel)
        size += n
        if size >= target_bytes or len(cur) >= max_files:
            batches.append(cur)
            cur, size = [], 0
    if cur:
        batches.append(cur)
    return batches


# --------------------------------------------------------------------------------------------
# The manifest


def _load_manifest(shard_dir: Path, root: Path, include_dirs: list[str]) -> dict:
    path = shard_dir / "manifest.json"
    empty = {"version": MANIFEST_VERSION, "loader": _loader_fingerprint(), "root": str(root),
             "include_dirs": include_dirs, "files": {}, "shards": {}, "next_shard": 0}
    try:
        manifest = _json_loads(path.read_bytes())
    except (OSError, ValueError):
        return empty
    if (
        manifest.get("version") != MANIFEST_VERSION
        or manifest.get("include_dirs") != include_dirs
        or manifest.get("loader") != empty["loader"]
    ):
        return empty
    return manifest


def _loader_fingerprint() -> str:
    """Hash of this loader's code and the grammar's version: a new loader re-indexes everything."""
    h = hashlib.sha1()
    for module in _LOADER_MODULES:
        h.update((Path(__file__).parent / module).read_bytes())
    try:
        from importlib.metadata import version

        h.update(version("tree-sitter-c").encode() + version("tree-sitter").encode())
    except Exception:
        pass
    return h.hexdigest()


def _save_manifest(shard_dir: Path, manifest: dict) -> None:
    with replacing(shard_dir / "manifest.json") as tmp:
        tmp.write_bytes(_json_dumps(manifest))


# The manifest of a kernel tree is 23 MB of JSON: orjson reads and writes it in a quarter of the
# time, which is most of a one-file re-index; the standard library does the same job without it.
try:
    import orjson

    _json_loads, _json_dumps = orjson.loads, orjson.dumps
except ImportError:  # pragma: no cover - orjson is a declared dependency
    def _json_loads(data: bytes):
        return json.loads(data)

    def _json_dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


def _drop_files(shard_dir: Path, manifest: dict, gone: dict[str, set[str]]) -> None:
    """Rewrite each shard in ``gone`` ({shard id: files}) without those files' rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for shard_id, files in gone.items():
        info = manifest["shards"].get(shard_id)
        if info is None:
            continue
        remaining = [f for f in info["files"] if f not in files]
        for table in TABLES:
            path = shard_dir / table / f"{shard_id}.parquet"
            if not remaining:
                path.unlink(missing_ok=True)
                continue
            t = pq.read_table(path)
            keep = pc.invert(pc.is_in(t["file"], value_set=pa.array(sorted(files), type=pa.string())))
            t = t.filter(keep)
            replace_parquet(t, path)
            info["rows"][table] = t.num_rows
        if remaining:
            info["files"] = remaining
        else:
            del manifest["shards"][shard_id]


# --------------------------------------------------------------------------------------------
# The lock of an index directory


class _HeldLocks(threading.local):
    """The index directories this thread holds the lock of (their real paths): taken again by the
    same thread (``index_source_tree`` holds it over ``index_tree`` and the macro pass), the lock
    is not taken twice, which would wait forever (``flock`` on a second open file of one path
    blocks, in one process too). A forked child starts with none: it must take the lock to write
    (its parent's open file shares the lock, but the parent may be writing too)."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()


_held = _HeldLocks()
os.register_at_fork(after_in_child=lambda: _held.dirs.clear())


@contextlib.contextmanager
def index_lock(shard_dir: str | os.PathLike, progress: bool = False) -> Iterator[None]:
    """Hold the index directory ``shard_dir`` alone while it is written: two loads of one tree
    (two users, two terminals) once wrote the same shard files at once and left them unreadable
    ("Couldn't deserialize thrift"). A second writer waits for the first (saying so with
    ``progress``), then finds the index up to date. Re-entrant within a thread; another thread or
    process waits."""
    import fcntl

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(shard_dir)
    held = _held.dirs
    if key in held:
        yield
        return
    with open(shard_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another ksymgraph that is indexing into {shard_dir} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# index_tree


class _Indexer:
    """One run of :func:`index_tree`: rounds of files to parse (the files asked for, then the
    headers they include, then theirs...), each file looked at once."""

    def __init__(self, root: Path, shard_dir: Path, include_dirs: list[str], headers: bool, workers: int,
                 progress: bool, batch_bytes: int, batch_files: int, seconds: float,
                 preproc: PreprocContext | None = None, modules: Mapping[str, bool | None] | None = None):
        self.root = root
        self.root_s = str(root)  # str joins: pathlib costs 0.4 s over a kernel tree here
        self.shard_dir = shard_dir
        self.include_dirs = include_dirs
        self.headers = headers
        self.workers = workers
        self.progress = progress
        self.batch_bytes, self.batch_files = batch_bytes, batch_files
        self.seconds = seconds
        self.preproc = None if preproc is None else preproc._replace(module=None)
        self.modules = dict(modules or {})
        #: The digest of each file's context, by its MODULE (a tree has at most three contexts).
        self.digests = {} if preproc is None else \
            {m: self.preproc._replace(module=m).digest() for m in (True, False, None)}
        #: Directories the walk could not list.
        self.unlisted: list[Skipped] = []
        self.manifest = _open_manifest(shard_dir, root, include_dirs)
        self.known: dict[str, dict] = self.manifest["files"]
        self.seen: set[str] = set()
        self.parsed = 0
        self.lookups_changed = False
        self.pool = None
        self.bar = None

    def run(self, wanted: list[str]) -> None:
        """Index ``wanted`` and, when ``headers``, what they include, transitively; then drop the
        files no longer wanted and save the manifest."""
        try:
            todo = wanted
            while todo:
                todo = [f for f in dict.fromkeys(todo) if f not in self.seen]
                self.seen.update(todo)
                todo = self.index_round(todo)
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if self.bar is not None:
                self.bar.close()
        self.drop_unwanted()
        _save_manifest(self.shard_dir, self.manifest)

    def index_round(self, todo: list[str]) -> list[str]:
        """Re-use the unchanged files of ``todo``, parse the others; returns their includes."""
        to_parse: list[str] = []
        next_todo: list[str] = []
        gone: dict[str, set[str]] = {}
        for rel in todo:
            entry = self.known.get(rel)
            if entry is not None and self.unchanged(rel, entry):
                if self.headers:
                    next_todo += entry["includes"]
                continue
            if entry is not None:
                gone.setdefault(entry["shard"], set()).add(rel)
            to_parse.append(rel)
        _drop_files(self.shard_dir, self.manifest, gone)
        if to_parse:
            next_todo += self.parse(to_parse)
        return next_todo

    def unchanged(self, rel: str, entry: dict) -> bool:
        """The file's size and mtime are as recorded, or else its content hash is (the new size
        and mtime are recorded then)."""
        if not entry.get("sha1"):
            return False
        if entry.get("ctx") != self.digests.get(self.modules.get(rel)):  # parsed for another build
            return False
        path = os.path.join(self.root_s, rel)
        try:
            sig = file_signature(path)
        except OSError:
            return False
        if sig == (entry.get("size"), entry.get("mtime_ns")):
            return True
        try:
            sha1 = hashlib.sha1(read_source(self.root_s, rel)[0]).hexdigest()
        except LoaderError:
            return False
        if sha1 != entry["sha1"]:
            return False
        entry["size"], entry["mtime_ns"] = sig
        return True

    def parse(self, to_parse: list[str]) -> list[str]:
        """Parse ``to_parse`` in batches, one shard each; returns the files they include."""
        jobs = [(self.root_s, batch, self.include_dirs, str(self.shard_dir), self.new_shard(), self.seconds,
                 self.job_context(batch))
                for batch in _batches(self.root, to_parse, self.batch_bytes, self.batch_files)]
        if self.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="file", file=sys.stderr, desc="parsing", dynamic_ncols=True)
        if self.bar is not None:
            self.bar.total += len(to_parse)
            self.bar.refresh()
        included: list[str] = []
        for shard_id, entries, rows in self.results(jobs):
            self.manifest["shards"][shard_id] = {"files": [e["file"] for e in entries], "rows": rows}
            for e in entries:
                old = self.known.get(e["file"])
                if old is None or old.get("lookup_sig") != e.get("lookup_sig"):
                    self.lookups_changed = True
                self.known[e["file"]] = e
                if self.headers:
                    included += e["includes"]
            self.parsed += len(entries)
            if self.bar is not None:
                self.bar.update(len(entries))
        return included

    def job_context(self, batch: list[str]):
        """What a worker needs to decide the conditionals of ``batch``: the build's context, the
        digest of each of its variants, and the ``MODULE`` of each file (None without a context)."""
        if self.preproc is None:
            return None
        return self.preproc, self.digests, {rel: self.modules[rel] for rel in batch if rel in self.modules}

    def new_shard(self) -> str:
        shard_id = f"{self.manifest['next_shard']:06d}"
        self.manifest["next_shard"] += 1
        return shard_id

    def results(self, jobs: list[tuple]):
        """The result of each job (:func:`_index_batch`) as it is done, in the worker pool when
        there is more than one job. A worker that dies (a crash in tree-sitter, the kernel's OOM
        killer) does not hang the run: the jobs it left run again one at a time, each in a
        process of its own; a job that kills that one too is split into its files, and a file
        that kills the process it has to itself is recorded as not parsed."""
        if self.workers <= 1 or len(jobs) <= 1:
            yield from map(_index_batch, jobs)
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
        futures = {self.pool.submit(_index_batch, job): job for job in jobs}
        left = []
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                left.append(futures[future])
        if left:
            self.pool.shutdown()
            self.pool = None
            for job in sorted(left, key=lambda j: j[4]):
                yield from self.alone(job)

    def alone(self, job: tuple, split: bool = True):
        """The result of ``job`` run in a process of its own (see :meth:`results`)."""
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as single:
                yield single.submit(_index_batch, job).result()
            return
        except BrokenProcessPool:
            pass
        root_s, files, include_dirs, shard_dir, shard_id, seconds, pp = job
        for table in TABLES:  # whatever the dead process wrote of this shard
            (self.shard_dir / table / f"{shard_id}.parquet").unlink(missing_ok=True)
        if split and len(files) > 1:
            for rel in files:
                yield from self.alone((root_s, [rel], include_dirs, shard_dir, self.new_shard(), seconds, pp),
                                      split=False)
            return
        for table, record_type in TABLES.items():
            write_table(self.shard_dir / table / f"{shard_id}.parquet", record_type, [])
        entry = {"file": files[0], "shard": shard_id, "sha1": None, "includes": [], "refused": [],
                 "stats": list(ParseStats(0, 0, 0, 0, 1)),
                 "error": "not parsed: the process parsing it died (a crash in the parser, or killed for its memory)"}
        yield shard_id, [entry], {t: 0 for t in TABLES}

    def drop_unwanted(self) -> None:
        """Drop the rows of files no longer wanted (deleted, or headers no longer included)."""
        gone: dict[str, set[str]] = {}
        for rel in [f for f in self.known if f not in self.seen]:
            gone.setdefault(self.known[rel]["shard"], set()).add(rel)
            if self.known[rel].get("lookup_sig") != _NO_LOOKUP_INPUT:
                self.lookups_changed = True
            del self.known[rel]
        _drop_files(self.shard_dir, self.manifest, gone)

    def result(self, started: float) -> IndexResult:
        """What the run did, with the row counts of the whole index."""
        lookups_file = self.shard_dir / "lookups.parquet"
        if self.lookups_changed or not lookups_file.is_file():
            lookups = _write_lookups(self.shard_dir)
        else:
            import pyarrow.parquet as pq

            lookups = pq.read_metadata(lookups_file).num_rows
        rows = {t: 0 for t in TABLES}
        shards = []
        for shard_id, info in self.manifest["shards"].items():
            for t in TABLES:
                rows[t] += info["rows"][t]
                shards.append(self.shard_dir / t / f"{shard_id}.parquet")
        rows["lookups"] = lookups
        known = self.known
        stats = ParseStats(*(sum(column) for column in zip(*(e["stats"] for e in known.values())))) if known \
            else ParseStats(0, 0, 0, 0)
        errors = list(self.unlisted)
        for rel, e in sorted(known.items()):
            if e.get("error"):
                errors.append(Skipped(rel, e["error"]))
            errors += [Skipped(rel, refused) for refused in e.get("refused", ())]
            errors += [Skipped(*note) for note in e.get("notes", ())]
        return IndexResult(self.shard_dir, shards, rows, stats, errors, self.parsed, len(known) - self.parsed,
                           time.monotonic() - started)


def _open_manifest(shard_dir: Path, root: Path, include_dirs: list[str]) -> dict:
    """The manifest of the index in ``shard_dir`` (made, with its table directories, if need be);
    a fresh one when the old one is from another loader, and then no stale shard is left. The
    temporary files a killed run left are removed (the caller holds the lock: no other writer's)."""
    remove_temp_files(shard_dir)
    for table in TABLES:
        (shard_dir / table).mkdir(parents=True, exist_ok=True)
        remove_temp_files(shard_dir / table)
    manifest = _load_manifest(shard_dir, root, include_dirs)
    if not manifest["files"]:
        for table in TABLES:
            for old in (shard_dir / table).glob("*.parquet"):
                old.unlink()
    return manifest


def index_tree(
    root: str | os.PathLike,
    files: Iterable[str] | None = None,
    include_dirs: list[str] | None = None,
    workers: int = 2,
    shard_dir: str | os.PathLike | None = None,
    headers: bool = True,
    progress: bool = True,
    batch_bytes: int = 2 << 20,
    batch_files: int = 200,
    seconds: float = PARSE_SECONDS,
    preproc: PreprocContext | None = None,
    modules: Mapping[str, bool | None] | None = None,
) -> IndexResult:
    """Index a whole tree into Parquet shards, re-parsing only what changed since the last run.

    ``files`` (default: every ``.c`` file under ``root``) and, when ``headers``, the headers
    they include, transitively (resolved against ``include_dirs``, default
    :func:`~ksymgraph.loaders.includes.kernel_include_dirs`), are parsed by ``workers`` processes;
    each worker writes its batch's rows to its own shard. ``shard_dir`` (default
    ``<root>/.ksymgraph-index``) holds a manifest of every file's size, mtime, SHA-1 and shard: a
    file whose size and mtime are unchanged is not read again; one whose content hash is unchanged
    is not parsed again; the rows of a changed or deleted file are dropped from its old shard.
    Lookups through wrappers are resolved over the whole index at the end (``lookups.parquet``).

    Files are read as :func:`~ksymgraph.loaders.cfiles.read_source` reads (regular files inside
    the tree, up to a size) and parsed within ``seconds`` each
    (:func:`~ksymgraph.loaders.cparse.parse_source`); those that are not, and the directories the
    walk cannot list, are in ``errors`` with the reason.

    ``preproc``: the build whose preprocessor conditionals are decided in every file
    (:mod:`ksymgraph.loaders.preproc`; its ``module`` is ignored), with ``MODULE`` defined for the
    files that ``modules`` maps to True, not defined for those it maps to False, and not known
    for the rest (headers); None reads every branch, as before. A file parsed under another
    context than this run's is parsed again.

    The run holds ``shard_dir``'s lock (:func:`index_lock`): a second run into it waits for the
    first.
    """
    started = time.monotonic()
    root = Path(real_root(root))
    include_dirs = kernel_include_dirs() if include_dirs is None else list(include_dirs)
    shard_dir = Path(shard_dir) if shard_dir is not None else root / ".ksymgraph-index"
    with index_lock(shard_dir, progress):
        indexer = _Indexer(root, shard_dir, include_dirs, headers, workers, progress, batch_bytes, batch_files,
                           seconds, preproc, modules)
        if files is None:
            listing = tree_files(root)
            indexer.unlisted = listing.skipped
            files = listing.c
        indexer.run(list(files))
        return indexer.result(started)


def _write_lookups(shard_dir: Path) -> int:
    """Resolve lookups through wrappers over the whole index into ``lookups.parquet``.

    Only the string arguments passed to a lookup function or a wrapper are turned into Python
    records (filtered in Arrow first), which keeps an incremental run short."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def records(table, record_type):
        cols = [table[name].to_pylist() for name in record_type._fields]
        return [record_type(*row) for row in zip(*cols)]

    flows = records(read_table(shard_dir, "arg_flows"), ArgFlow)
    wrappers = find_wrappers(flows)
    args = read_table(shard_dir, "string_args")
    args = args.filter(pc.is_in(args["callee"], value_set=pa.array(sorted({f for f, _ in wrappers}), type=pa.string())))
    found = list(resolve_lookups(records(args, StringArg), flows, records(read_table(shard_dir, "direct_lookups"), LookUp)))
    write_table(shard_dir / "lookups.parquet", LookUp, found)
    return len(found)
