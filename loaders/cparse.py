"""One C file, parsed: function definitions, calls, export sites and run-time lookups, with tree-sitter-c.

Paths in records are relative to the tree root the caller gives; the loader never talks to a
store. A file's bytes go through the passes over the text of :data:`TEXT_PASSES` (each keeps the
length and the newlines, so that lines and byte offsets stay exact: given a build's
:class:`~ksymgraph.loaders.preproc.PreprocContext`, first the preprocessor's conditionals decided
and their dead branches blanked, :mod:`ksymgraph.loaders.preproc`; then the neutralising of
kernel macros, :mod:`ksymgraph.loaders.neutralise`), then through tree-sitter, and the tree is read
by :mod:`ksymgraph.loaders.ctree`. ``EXPORT_SYMBOL*`` sites are found in the text and checked
against the tree (:mod:`ksymgraph.loaders.cexports`). What the parser still cannot read is counted
in :class:`~ksymgraph.loaders.records.ParseStats`.

No file can take the parse down with it: a file larger than :data:`MAX_PARSE_BYTES` (with a
brace: a header of ``#define`` lines only is read by expression, up to
:data:`~ksymgraph.loaders.cfiles.MAX_FILE_BYTES`) or that takes more than :data:`PARSE_SECONDS`
(tree-sitter's parse is cancelled through its progress callback; the passes, the query and the
reading of the tree, each linear in the file, check the clock between and as they go) is skipped
with the reason; calls nested deeper than :data:`~ksymgraph.loaders.ctree.MAX_DEPTH` levels are
counted and reported.

:func:`parse_source` reads bytes; :func:`parse_file` reads one file of a tree and resolves its
includes; :func:`for_each_record` parses a small tree in-process (an out-of-tree module, tests),
following includes. A whole kernel tree goes through :func:`ksymgraph.loaders.cindex.index_tree`.
"""

from __future__ import annotations

import operator
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .cexports import export_sites
from .cfiles import read_source, real_root, tree_files
from .ctext import TextPassIncomplete
from .cqueries import GUARD_QUERY
from .ctree import MACRO_QUERY, MAX_DEPTH, QUERY, REF_QUERY, TreeRecords, nodes_deeper_than
from .includes import kernel_include_dirs, resolve_includes
from .lookups import resolve_lookups
from .neutralise import neutralise_kernel_macros
from .preproc import PreprocContext, preprocess
from .records import FileResult, LoaderError, LookUp, ParseStats, Skipped

__all__ = ["TEXT_PASSES", "MAX_PARSE_BYTES", "PARSE_SECONDS", "PARSE_FAILED", "PARSE_MEMORY", "parse_source", "parse_read_file", "parse_file",
           "for_each_record", "resolve_file_lookups"]

#: The passes over a file's text before tree-sitter reads it, in order. Each takes the bytes and
#: returns bytes of the same length with the newlines where they were (blanking, never moving); a
#: pass that gives up raises :class:`~ksymgraph.loaders.ctext.TextPassIncomplete` and the file is
#: parsed without it (the reason goes with the file). The preprocessor pass
#: (:func:`~ksymgraph.loaders.preproc.preprocess`) keeps the same contract and runs before these
#: when a file is parsed with a context (it needs one: the build it decides for).
TEXT_PASSES: tuple[Callable[[bytes], bytes], ...] = (neutralise_kernel_macros,)

#: The largest file handed to tree-sitter. The largest file of linux-source-6.1 with a brace in it
#: is 1.7 MB (drivers/net/wireless/realtek/rtw89/rtw8852a_table.c); a tree takes tens of bytes per
#: byte of source, so this bounds a worker's memory too.
MAX_PARSE_BYTES = 4 << 20

#: The time one file may take, from its text passes to its last record. The slowest file of
#: linux-source-6.1 takes under 3 s on a busy machine (rtw8852a_table.c); a 1 MB binary file
#: used to take 37.6 s in tree-sitter's parse alone.
PARSE_SECONDS = 20.0

#: How a file's error begins when this code, not the file, failed (an exception from the parser's
#: passes): the index reports it and parses the file again next time.
PARSE_FAILED = "parse failed:"

#: The memory one file's parse may add to its process, tree-sitter's tree and the records read
#: from it together. No file of linux-source-6.1 needs 100 MiB; 1.6 MB of fuzzed C (unclosed
#: calls repeated: 400k nodes straight under the root) made a tree of 670 MB.
PARSE_MEMORY = 512 << 20

#: How often (in checks of the clock) the resident set is looked at: tree-sitter's progress
#: callback comes every few hundred bytes parsed, the readers' checks every 1,024 nodes.
_MEMORY_EVERY = 64

_START_BYTE = operator.attrgetter("start_byte")
#: How much text tree-sitter is handed at a time (it asks for more through a callback, the only
#: way to give it a progress callback that can cancel the parse).
_CHUNK = 1 << 16
#: What the read callback hands out. The binding (py-tree-sitter 0.26.1, parser_read_wrapper)
#: never releases the object the callback returns: a fresh slice each time leaked the whole text
#: of every file (a worker grew to 490 MB over the kernel tree). One buffer, filled for each
#: call, leaks nothing but a reference to itself (and a small view for a file's last chunk).
#: The callback is not reentrant: one parse at a time per process, as with the parser itself.
_SCRATCH = bytearray(_CHUNK)
_SCRATCH_VIEW = memoryview(_SCRATCH)
#: The longest byte range one query runs over (see :func:`_captures`); most files are shorter.
_QUERY_CHUNK = 128 << 10
_INCLUDE_RE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"][^>"\n]+[>"])', re.M)

_parser = None
_query = None
_macro_query = None
_call_kind = None
_ident_kind = None
_ref_query = None
_guard_query = None
#: A text that may hold a condition gcc folds (:data:`~ksymgraph.loaders.cqueries.GUARD_QUERY`).
_MAY_FOLD = re.compile(rb"__builtin_constant_p|if\s*\(\s*(?:sizeof|__alignof__|_Alignof)")


class _Skip(Exception):
    """A file not parsed; the message says why."""


def _resident_bytes() -> int | None:
    """The process's resident set now (``/proc/self/statm``), or None where there is no /proc."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            return int(os.read(fd, 128).split()[1]) * _PAGE
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _Deadline:
    """When one file's parse gives up: past its time, or past :data:`PARSE_MEMORY` more memory
    than the process had when it began (looked at every :data:`_MEMORY_EVERY` checks)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        start = _resident_bytes()
        self.memory_at = None if start is None else start + PARSE_MEMORY
        self.checks = 0
        self.reason = ""

    def passed(self) -> bool:
        if time.monotonic() > self.at:
            self.reason = f"over the parse deadline of {self.seconds:g} s: not parsed"
            return True
        self.checks += 1
        if self.memory_at is not None and not self.checks % _MEMORY_EVERY:
            rss = _resident_bytes()
            if rss is not None and rss > self.memory_at:
                self.reason = f"over the parse memory limit ({PARSE_MEMORY >> 20} MiB more): not parsed"
                return True
        return False

    def check(self) -> None:
        if self.passed():
            raise _Skip(self.reason)


def _tree_sitter():
    """The process's parser and compiled queries, made on first use (once per worker)."""
    global _parser, _query, _macro_query, _call_kind, _ident_kind, _ref_query, _guard_query
    if _parser is None:
        import tree_sitter
        import tree_sitter_c

        lang = tree_sitter.Language(tree_sitter_c.language())
        _parser = tree_sitter.Parser(lang)
        _query = tree_sitter.Query(lang, QUERY)
        _macro_query = tree_sitter.Query(lang, MACRO_QUERY)
        _ref_query = tree_sitter.Query(lang, REF_QUERY)
        _guard_query = tree_sitter.Query(lang, GUARD_QUERY)
        _call_kind = lang.id_for_node_kind("call_expression", True)
        _ident_kind = lang.id_for_node_kind("identifier", True)
    return _parser, _query


def _parse_tree(text: bytes, deadline: _Deadline):
    """tree-sitter's tree of ``text``, or :class:`_Skip` when the deadline passes first."""
    parser, _ = _tree_sitter()

    def read(offset: int, _point):
        # (Node.text of a tree read through a view crashes in this binding: the loader never
        # asks a node for its text, it slices the text it has.)
        chunk = text[offset : offset + _CHUNK]
        n = len(chunk)
        if not n:
            return b""
        _SCRATCH[:n] = chunk
        return _SCRATCH if n == _CHUNK else _SCRATCH_VIEW[:n]

    def give_up(_offset: int, _has_error: bool) -> bool:
        return deadline.passed()

    try:
        tree = parser.parse(read, progress_callback=give_up)
    except ValueError:  # "Parsing failed": cancelled
        tree = None
    if tree is None:
        parser.reset()  # else the next parse would resume this one
        raise _Skip(deadline.reason or "tree-sitter could not parse it")
    return tree


def _captures(tree, size: int, deadline: _Deadline, guards: bool = False) -> tuple[dict, list]:
    """The captures of :data:`~ksymgraph.loaders.ctree.QUERY`, each in document order, and the
    matches of :data:`~ksymgraph.loaders.ctree.MACRO_QUERY` (with ``guards``, the captures of
    :data:`~ksymgraph.loaders.cqueries.GUARD_QUERY` too); no pattern starts deeper than
    :data:`~ksymgraph.loaders.ctree.MAX_DEPTH`.

    A file longer than :data:`_QUERY_CHUNK` is queried a byte range at a time, the deadline
    checked between ranges, and a node met in two ranges kept once: the query's cost grows
    faster than the range it covers (2 MB of mangled C took 17 s in one piece, 0.8 s in 64 kB
    ones). tree-sitter's query cursor takes a progress callback too, but in the installed
    binding, 0.26.1, calling it crashes the process."""
    import tree_sitter

    _tree_sitter()
    caps: dict[str, list] = {}
    matches: list = []
    seen: set = set()
    ranges = [(a, min(a + _QUERY_CHUNK, size)) for a in range(0, size, _QUERY_CHUNK)] or [(0, 0)]
    for i, (start, end) in enumerate(ranges):
        deadline.check()
        cursor = tree_sitter.QueryCursor(_query)
        cursor.set_max_start_depth(MAX_DEPTH)
        macros = tree_sitter.QueryCursor(_macro_query)
        macros.set_max_start_depth(MAX_DEPTH)
        cursors = [cursor]
        if guards:
            cursors.append(tree_sitter.QueryCursor(_guard_query))
            cursors[-1].set_max_start_depth(MAX_DEPTH)
        if len(ranges) > 1:
            last = end + 1 if i == len(ranges) - 1 else end  # (an empty node at the very end)
            for c in (*cursors, macros):
                c.set_byte_range(start, last)
        for name, nodes in (item for c in cursors for item in c.captures(tree.root_node).items()):
            if len(ranges) > 1:
                nodes = [n for n in nodes if (name, n.id) not in seen and not seen.add((name, n.id))]
            caps.setdefault(name, []).extend(nodes)
        for match in macros.matches(tree.root_node):
            stmt = match[1]["stmt"][0]
            if len(ranges) == 1 or (stmt.id not in seen and not seen.add(stmt.id)):
                matches.append(match)
    # Each capture's nodes come in a set (four includes come out as a, c, b, d), and which one
    # comes last decides which string a name is taken to hold: back into document order.
    for nodes in caps.values():
        nodes.sort(key=_START_BYTE)
    return caps, matches


def _ref_chunks(tree, size: int, deadline: _Deadline):
    """The captures of :data:`~ksymgraph.loaders.ctree.REF_QUERY`, one sorted list per byte range
    of :data:`_QUERY_CHUNK` (an identifier is in the range it starts in), made as they are read."""
    import tree_sitter

    ranges = [(a, min(a + _QUERY_CHUNK, size)) for a in range(0, size, _QUERY_CHUNK)] or [(0, 0)]
    for i, (start, end) in enumerate(ranges):
        deadline.check()
        cursor = tree_sitter.QueryCursor(_ref_query)
        cursor.set_max_start_depth(MAX_DEPTH)
        if len(ranges) > 1:
            cursor.set_byte_range(start, end + 1 if i == len(ranges) - 1 else end)
        nodes = cursor.captures(tree.root_node).get("ref", [])
        if len(ranges) > 1:
            nodes = [n for n in nodes if start <= n.start_byte < end or (i == len(ranges) - 1 and n.start_byte >= start)]
        nodes.sort(key=_START_BYTE)
        yield nodes


class _Preproc:
    """What the preprocessor pass did to one file: its counts and its notes (``file:line``)."""

    __slots__ = ("decided", "kept", "lines_blanked", "notes")

    def __init__(self):
        self.decided = self.kept = self.lines_blanked = 0
        self.notes: list[Skipped] = []


def _run_passes(src: bytes, deadline: _Deadline, file: str = "", context: PreprocContext | None = None,
                pp: _Preproc | None = None) -> tuple[bytes, list[str]]:
    """The text after the preprocessor pass (with a ``context``; its counts and notes go to
    ``pp``) and :data:`TEXT_PASSES`, and why any of them gave up."""
    text, notes = src, []
    if context is not None:
        result = preprocess(src, context)
        text = result.text
        if pp is not None:
            pp.decided, pp.kept, pp.lines_blanked = result.decided, result.kept, result.lines_blanked
            pp.notes = [Skipped(f"{file}:{line}", f"preprocessor: {message}") for line, message in result.notes]
        deadline.check()
    for text_pass in TEXT_PASSES:
        try:
            text = text_pass(text)
        except TextPassIncomplete as e:
            notes.append(str(e))
        deadline.check()
    return text, notes


def _utf8_error(src: bytes) -> str | None:
    try:
        src.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte {e.start} (read with replacement characters)"
    return None


def _braceless_header(text: bytes, file: str, error: str | None, pp: _Preproc | None = None) -> FileResult:
    """A header without a single brace (register definitions): nothing for tree-sitter to find
    beyond its includes and exports, so it is not parsed."""
    includes = [m.group(1).decode("utf-8", "replace") for m in _INCLUDE_RE.finditer(text)]
    exports = export_sites(text, file, set())
    pp = pp or _Preproc()
    return FileResult(file, [], [], exports, [], [], [], includes, [],
                      ParseStats(1, 0, 0, 0, 0, 0, 0, pp.decided, pp.kept, pp.lines_blanked), error, pp.notes)


def _unread(rel: str, error: str) -> FileResult:
    """A file not parsed, with the reason."""
    return FileResult(rel, [], [], [], [], [], [], [], [], ParseStats(0, 0, 0, 0, 1), error)


def parse_source(src: bytes, file: str, seconds: float = PARSE_SECONDS,
                 context: PreprocContext | None = None) -> FileResult:
    """Parse the bytes of one file named ``file`` (used only to fill the records' ``file``);
    ``includes`` are left unresolved (as written) — :func:`parse_file` resolves them. A file over
    :data:`MAX_PARSE_BYTES` or ``seconds`` comes back empty with the reason in ``error``. With a
    ``context``, the preprocessor's conditionals are decided for that build first (the branches
    not compiled are not read; see :mod:`ksymgraph.loaders.preproc`); without one, every branch
    is read."""
    try:
        return _parse(src, file, _Deadline(seconds), context)
    except _Skip as e:
        return _unread(file, str(e))


def _parse(src: bytes, file: str, deadline: _Deadline, context: PreprocContext | None = None) -> FileResult:
    error = _utf8_error(src)
    pp = _Preproc()
    if b"{" not in src and not file.endswith(".c"):
        if context is not None:  # (its includes and exports may be in dead branches)
            src = _run_passes(src, deadline, file, context, pp)[0]
        return _braceless_header(src, file, error, pp)
    if len(src) > MAX_PARSE_BYTES:
        raise _Skip(f"too large to parse: {len(src)} bytes (the limit is {MAX_PARSE_BYTES})")
    text, notes = _run_passes(src, deadline, file, context, pp)
    if b"{" not in text and not file.endswith(".c"):  # (its braces were on blanked #if lines)
        return _braceless_header(text, file, error, pp)
    tree = _parse_tree(text, deadline)
    deadline.check()
    caps, macro_matches = _captures(tree, len(text), deadline, _MAY_FOLD.search(text) is not None)
    deadline.check()
    deep, deep_refs = nodes_deeper_than(tree.root_node, MAX_DEPTH, (_call_kind, _ident_kind), deadline.check)
    reader = TreeRecords(file, text, caps, macro_matches, deadline.check,
                         lambda: _ref_chunks(tree, len(text), deadline), src if len(src) == len(text) else None)
    # Deeper than the limit, a node costs its depth to find: exports are checked without the tree.
    exports, includes = reader.read(None if deep else tree.root_node)
    if deep:
        notes.append(f"read in part: {deep} calls nested deeper than {MAX_DEPTH} levels not recorded")
    if deep_refs:
        notes.append(f"read in part: {deep_refs} identifiers nested deeper than {MAX_DEPTH} levels not read "
                     "as references")
    if error is not None:
        notes.insert(0, error)
    stats = ParseStats(1, len(reader.functions), reader.with_errors, len(caps.get("error", ())), 0, deep, 0,
                       pp.decided, pp.kept, pp.lines_blanked, references_too_deep=deep_refs)
    return FileResult(file, reader.functions, reader.calls, exports, reader.lookups, reader.string_args,
                      reader.arg_flows, includes, [], stats, "; ".join(notes) or None, pp.notes,
                      references=reader.references)


def parse_read_file(src: bytes, rel: str, root: Path, include_dirs: list[str], cache: dict | None = None,
                    seconds: float = PARSE_SECONDS, context: PreprocContext | None = None) -> FileResult:
    """Parse the bytes ``src`` of the file ``rel`` of the tree ``root`` (under ``context``, see
    :func:`parse_source`) and resolve its includes (``cache``: see
    :func:`~ksymgraph.loaders.includes.resolve_include`); never raises for a bad file (see ``error``)."""
    try:
        result = parse_source(src, rel, seconds, context)
    except Exception as e:  # a parser bug must not stop a whole tree
        return _unread(rel, f"{PARSE_FAILED} {e!r}")
    includes, refused = resolve_includes(root, rel, result.includes, include_dirs, cache)
    return result._replace(includes=includes, includes_refused=refused,
                           stats=result.stats._replace(includes_refused=len(refused)))


def parse_file(path: str | os.PathLike, root: str | os.PathLike, include_dirs: list[str] | None = None,
               seconds: float = PARSE_SECONDS, context: PreprocContext | None = None) -> FileResult:
    """Parse one file of the tree at ``root``; never raises for a bad file (see ``error``).

    ``includes`` holds the included files that exist in the tree (relative to ``root``),
    resolved against ``include_dirs`` (default: :func:`~ksymgraph.loaders.includes.kernel_include_dirs`).
    The file is read as :func:`~ksymgraph.loaders.cfiles.read_source` reads: only a regular file
    inside the tree, up to :data:`~ksymgraph.loaders.cfiles.MAX_FILE_BYTES`.
    """
    root = Path(root)
    path = Path(path)
    rel = os.path.relpath(path if path.is_absolute() else root / path, root)
    include_dirs = kernel_include_dirs() if include_dirs is None else include_dirs
    real = real_root(root)
    try:
        src, _st = read_source(real, rel)
    except LoaderError as e:
        return _unread(rel, e.reason)
    return parse_read_file(src, rel, Path(real), include_dirs, None, seconds, context)


def for_each_record(
    root: str | os.PathLike,
    files: Iterable[str] | None = None,
    include_dirs: list[str] | None = None,
    headers: bool = True,
    seconds: float = PARSE_SECONDS,
    context: PreprocContext | None = None,
) -> Iterator[FileResult]:
    """Parse ``files`` (default: every ``.c`` file under ``root``) and, when ``headers``, every
    header they include, transitively, each once; yields one :class:`~ksymgraph.loaders.records.FileResult`
    per file (and one, with the reason in ``error``, per directory that could not be listed).
    ``context``: the build whose conditionals are decided (see :func:`parse_source`), for every file.

    Runs in-process: meant for small trees (an out-of-tree module) and tests. Lookups through
    wrappers need the whole set: pass the results to :func:`resolve_file_lookups`.
    """
    root = Path(root)
    if files is None:
        listing = tree_files(root)
        for skip in listing.skipped:
            yield _unread(skip.path, skip.reason)
        files = listing.c
    todo = list(files)
    seen = set(todo)
    while todo:
        rel = todo.pop(0)
        result = parse_file(rel, root, include_dirs, seconds, context)
        yield result
        if headers:
            for inc in result.includes:
                if inc not in seen:
                    seen.add(inc)
                    todo.append(inc)


def resolve_file_lookups(results: Iterable[FileResult]) -> list[LookUp]:
    """All lookups of a set of parsed files, wrappers followed across files."""
    results = list(results)
    return list(
        resolve_lookups(
            (a for r in results for a in r.string_args),
            (f for r in results for f in r.arg_flows),
            (lk for r in results for lk in r.lookups),
        )
    )
