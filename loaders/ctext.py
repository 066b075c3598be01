"""C text without a parser: preprocessor directive spans and balanced parentheses, found in bytes.

The byte-level scans that the passes over a file's text before tree-sitter
(:mod:`ksymgraph.loaders.neutralise`) and the export search (:mod:`ksymgraph.loaders.cexports`)
share. They read a file's raw bytes and never decode them. Every scan here takes time linear in
what it reads, whatever the bytes: a hostile file cannot make one quadratic.
"""

from __future__ import annotations

import bisect
import re
from array import array

__all__ = ["WORD", "WORD_BYTES", "Spans", "TextPassIncomplete", "directives", "scan_paren", "closing_paren"]

#: A byte of a C identifier, as a regular expression class.
WORD = rb"[A-Za-z0-9_]"

#: The bytes of a C identifier.
WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

_DIRECTIVE_BODY_RE = re.compile(rb"#(?:[^\n]*\\\r?\n)*[^\n]*")
_BLANKS = b" \t"


class TextPassIncomplete(Exception):
    """A pass over a file's text gave up (its work would have grown faster than the file); the
    text is read as it was before the pass. The message says why."""


class Spans:
    """Sorted, non-overlapping (start, end) byte ranges, to ask whether an offset is inside one.
    (Kept in two arrays: a hostile file of 32 MiB of ``#`` lines has 16M of them.)"""

    def __init__(self, starts: array, ends: array):
        self._starts = starts
        self._ends = ends

    def __contains__(self, pos: int) -> bool:
        i = bisect.bisect_right(self._starts, pos) - 1
        return i >= 0 and pos < self._ends[i]

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self):
        """The (start, end) ranges, in order."""
        return zip(self._starts, self._ends)


def directives(src: bytes) -> Spans:
    """(start, end) of every preprocessor directive: a line whose first non-blank is ``#``, with
    its continuation lines. (Found from each ``#``: ``re`` is slow at ``^[ \t]*#`` over a file.)"""
    starts, ends = array("q"), array("q")
    i = src.find(b"#")
    while i >= 0:
        line_start = src.rfind(b"\n", 0, i) + 1
        if src[line_start:i].strip(_BLANKS):  # a "#" inside a line: no directive on this line
            nl = src.find(b"\n", i)
            if nl < 0:
                break
            i = src.find(b"#", nl)
            continue
        end = _DIRECTIVE_BODY_RE.match(src, i).end()
        starts.append(line_start)
        ends.append(end)
        i = src.find(b"#", end)
    return Spans(starts, ends)


def scan_paren(src: bytes, open_at: int, limit: int | None = None) -> tuple[int, int]:
    """(offset just after the parenthesis closing the one at ``open_at``, or -1; bytes read).

    -1 when there is none, when a ``;`` or ``{`` comes first (not an argument list after all), or
    when ``limit`` bytes were read without finding it. String and character literals are skipped.
    """
    depth = 0
    i = open_at
    n = len(src) if limit is None else min(len(src), open_at + limit)
    while i < n:
        c = src[i]
        if c == 0x28:  # (
            depth += 1
        elif c == 0x29:  # )
            depth -= 1
            if depth == 0:
                return i + 1, i + 1 - open_at
        elif c == 0x22 or c == 0x27:  # string or char literal
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == 0x5C else 1
            i = j
        elif c == 0x3B or c == 0x7B:  # ; or { : not an argument list after all
            return -1, i + 1 - open_at
        i += 1
    return -1, max(i - open_at, 0)


def closing_paren(src: bytes, open_at: int, limit: int | None = None) -> int:
    """The end of :func:`scan_paren`: the offset just after the matching ``)``, or -1."""
    return scan_paren(src, open_at, limit)[0]
