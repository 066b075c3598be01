"""C text without a parser: preprocessor directive spans and balanced parentheses, found in bytes.

The byte-level scans that the passes over a file's text before tree-sitter
(:mod:`ksymgraph.loaders.neutralise`) and the export search (:mod:`ksymgraph.loaders.cexports`)
share. They read a file's raw bytes and never decode them.
"""

from __future__ import annotations

import bisect
import re

__all__ = ["WORD", "WORD_BYTES", "Spans", "directives", "closing_paren"]

#: A byte of a C identifier, as a regular expression class.
WORD = rb"[A-Za-z0-9_]"

#: The bytes of a C identifier.
WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

_DIRECTIVE_BODY_RE = re.compile(rb"#(?:[^\n]*\\\r?\n)*[^\n]*")


class Spans:
    """Sorted, non-overlapping (start, end) byte ranges, to ask whether an offset is inside one."""

    def __init__(self, spans: list[tuple[int, int]]):
        self.spans = spans
        """The ranges, in order."""
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]

    def __contains__(self, pos: int) -> bool:
        i = bisect.bisect_right(self._starts, pos) - 1
        return i >= 0 and pos < self._ends[i]


def directives(src: bytes) -> Spans:
    """(start, end) of every preprocessor directive: a line whose first non-blank is ``#``, with
    its continuation lines. (Found from each ``#``: ``re`` is slow at ``^[ \t]*#`` over a file.)"""
    out = []
    i = src.find(b"#")
    while i >= 0:
        line_start = src.rfind(b"\n", 0, i) + 1
        if src[line_start:i].strip(b" \t"):  # a "#" inside a line: not a directive
            i = src.find(b"#", i + 1)
            continue
        end = _DIRECTIVE_BODY_RE.match(src, i).end()
        out.append((line_start, end))
        i = src.find(b"#", end)
    return Spans(out)


def closing_paren(src: bytes, open_at: int) -> int:
    """Offset just after the parenthesis closing the one at ``open_at``, or -1 (none, or a ``;``
    or ``{`` first: not an argument list after all). String and character literals are skipped."""
    depth = 0
    i = open_at
    n = len(src)
    while i < n:
        c = src[i]
        if c == 0x28:  # (
            depth += 1
        elif c == 0x29:  # )
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == 0x22 or c == 0x27:  # string or char literal
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == 0x5C else 1
            i = j
        elif c == 0x3B or c == 0x7B:  # ; or { : not an argument list after all
            return -1
        i += 1
    return -1
