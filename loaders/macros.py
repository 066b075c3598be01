"""Function-like macros in headers: the source API that hides an export's ELF name.

Between kernels an export often vanishes behind an unchanged API: 6.10's memory allocation
profiling, 7bd230a26648 ("mm/slab: enable slab allocation tagging for kmalloc and friends"),
turned ``kmalloc()`` into ``#define kmalloc(...) alloc_hooks(kmalloc_noprof(__VA_ARGS__))``, so
modules rebuilt against 6.10+ headers import ``__kmalloc_noprof`` where they imported
``__kmalloc``. tree-sitter does not expand macros, so this module reads every function-like
``#define NAME(params) body`` of the headers and records it as a function definition (``static``
and ``inline``, like a header inline) with one call per identifier followed by ``(`` in its body,
and per lower-case name passed as an argument to another macro (a function handed on to be
called, as ``module_usb_driver`` hands ``usb_register`` to ``module_driver``).

Records use the C loader's types (:class:`~ksymgraph.loaders.records.FunctionDef`,
:class:`~ksymgraph.loaders.records.Call`) and are written next to its shards
(:mod:`ksymgraph.loaders.cindex`) as ``macros/*.parquet`` tables, which the graph reads like the
others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from .cfiles import MAX_FILE_BYTES, read_source, real_root, tree_files
from .cindex import TableWriter
from .cparse import MAX_PARSE_BYTES
from .records import Call, FunctionDef, LoaderError, Skipped

__all__ = ["for_each_macro", "for_each_file_scope_call", "index_macros", "FILE_SCOPE", "MAX_CALLS"]

#: The pseudo-function that holds a ``.c`` file's file-scope macro invocations.
FILE_SCOPE = "(file scope)"

_DEFINE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)\(([^)\n]*)\)(.*)$", re.M)
_CALL = re.compile(rb"\b([A-Za-z_]\w*)[ \t]*\(")
#: A function name handed to another macro as an argument (``module_driver(__usb_driver,
#: usb_register, usb_deregister)`` calls ``usb_register`` through its ``__register`` parameter).
_ARG = re.compile(rb"[(,][ \t]*([a-z_][a-z0-9_]*)[ \t]*(?=[,)])")
#: The most calls kept of one macro, or of one file's file scope (the kernel's most are 333, in
#: dcn20_dpp.h's TF_REG_LIST_SH_MASK_DCN20_COMMON, and 919); past it the rest are a skip.
MAX_CALLS = 4096
_NOT_CALLS = frozenset([b"if", b"while", b"for", b"switch", b"return", b"sizeof", b"typeof", b"__typeof__",
                        b"__builtin_constant_p", b"__builtin_expect", b"defined", b"do", b"__stringify",
                        b"__attribute__", b"__same_type", b"_Generic", b"__is_constexpr"])


def _read_lines(root: str, rel: str, limit: int, skipped: list[Skipped] | None) -> bytes | None:
    try:
        return read_source(root, rel, limit)[0]
    except LoaderError as e:
        if skipped is not None:
            skipped.append(Skipped(rel, e.reason))
        return None


def for_each_macro(root: str | os.PathLike, files: Iterable[str],
                   skipped: list[Skipped] | None = None) -> Iterator[tuple[FunctionDef, list[Call]]]:
    """Each function-like macro of ``files`` (relative to ``root``) with the calls in its body.
    Files are read as :func:`~ksymgraph.loaders.cfiles.read_source` reads; those that cannot be
    are added to ``skipped``, as is a macro with more than :data:`MAX_CALLS` calls."""
    root_s = real_root(root)
    for rel in files:
        data = _read_lines(root_s, rel, MAX_FILE_BYTES, skipped)
        if data is not None:
            yield from _macros_of(data, rel, skipped)


def _macros_of(data: bytes, rel: str, skipped: list[Skipped] | None) -> Iterator[tuple[FunctionDef, list[Call]]]:
    """The function-like macros of one file: each ``#define NAME(`` line and its continuation
    lines, found by one search over the text (a file of 32 MiB is never split into lines)."""
    line, counted, done_until = 1, 0, 0
    for m in _DEFINE.finditer(data):
        if m.start() < done_until:
            continue  # a continuation line of the macro before
        line += data.count(b"\n", counted, m.start())
        counted = m.start()
        end = data.find(b"\n", m.start())
        end = len(data) if end < 0 else end
        body, current = [m.group(3)], data[m.start() : end]
        while current.rstrip().endswith(b"\\") and end < len(data):
            nxt = data.find(b"\n", end + 1)
            nxt = len(data) if nxt < 0 else nxt
            current = data[end + 1 : nxt]
            body.append(current)
            end = nxt
        done_until = end
        name = m.group(1).decode("ascii")
        params = {p.strip() for p in m.group(2).split(b",")}
        calls = []
        for n, text in enumerate(body):
            seen = set()
            for c in (*_CALL.finditer(text), *_ARG.finditer(text)):
                callee = c.group(1)
                if callee in _NOT_CALLS or callee in params or callee in seen or callee.decode("ascii") == name:
                    continue
                seen.add(callee)
                calls.append(Call(name, callee.decode("ascii"), rel, line + n, False))
            if len(calls) > MAX_CALLS:
                del calls[MAX_CALLS:]
                if skipped is not None:
                    skipped.append(Skipped(f"{rel}:{line}", f"macro {name}: more than {MAX_CALLS} calls, "
                                                             "the rest not recorded"))
                break
        yield FunctionDef(name, rel, line, line + len(body) - 1, True, True), calls


_FILE_SCOPE_CALL = re.compile(rb"^([A-Za-z_]\w*)[ \t]*\(.*\)[ \t]*;", re.M)


def for_each_file_scope_call(root: str | os.PathLike, files: Iterable[str],
                             skipped: list[Skipped] | None = None) -> Iterator[tuple[FunctionDef, list[Call]]]:
    """File-scope macro invocations of ``.c`` files (``module_usb_driver(foo_driver);``,
    ``module_init(foo_init);``), as calls from a pseudo-function :data:`FILE_SCOPE` per file.

    Drivers register through such macros (``module_usb_driver`` → ``module_driver`` →
    ``usb_register`` → ``usb_register_driver``); without them a what-if finds no call site in
    most drivers. A statement at column 0 is taken as file scope (kernel style indents bodies).
    Files larger than the C parser takes (:data:`~ksymgraph.loaders.cparse.MAX_PARSE_BYTES`) are
    not read, as the index does not read them, and are added to ``skipped``.
    """
    root_s = real_root(root)
    for rel in files:
        data = _read_lines(root_s, rel, MAX_PARSE_BYTES, skipped)
        if data is None:
            continue
        calls = []
        line, pos = 1, 0
        for m in _FILE_SCOPE_CALL.finditer(data):
            line += data.count(b"\n", pos, m.start())
            pos = m.start()
            name = m.group(1)
            if name not in _NOT_CALLS:
                if len(calls) == MAX_CALLS:
                    if skipped is not None:
                        skipped.append(Skipped(rel, f"more than {MAX_CALLS} file-scope calls, the rest not recorded"))
                    break
                calls.append(Call(FILE_SCOPE, name.decode("ascii"), rel, line, False))
        if calls:
            yield FunctionDef(FILE_SCOPE, rel, 1, data.count(b"\n") + 1, True, False), calls


def index_macros(root: str | os.PathLike, shard_dir: str | os.PathLike, files: Iterable[str] | None = None,
                 c_files: Iterable[str] = ()) -> tuple[int, list[Skipped]]:
    """Write the macros of ``files`` (default: every header under ``root``) and the file-scope
    macro calls of ``c_files`` as ``macros/functions`` and ``macros/calls`` Parquet tables in
    ``shard_dir``, a row group at a time; returns the number of macros and the files (and
    directories) that could not be read."""
    skipped: list[Skipped] = []
    if files is None:
        listing = tree_files(root)
        files, skipped = listing.headers, list(listing.skipped)
    out = Path(shard_dir) / "macros"
    out.mkdir(parents=True, exist_ok=True)
    with TableWriter(out / "functions.parquet", FunctionDef) as defs, TableWriter(out / "calls.parquet", Call) as calls:
        for d, cs in for_each_macro(root, files, skipped):
            defs.add(d)
            calls.extend(cs)
        n = defs.count + len(defs.rows)
        for d, cs in for_each_file_scope_call(root, c_files, skipped):
            defs.add(d)
            calls.extend(cs)
    return n, skipped
