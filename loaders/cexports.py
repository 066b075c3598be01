"""``EXPORT_SYMBOL*`` sites in C source: found by a byte search, checked against the parse tree.

Export macros come out of tree-sitter in too many shapes (expression statement, declaration,
``macro_type_specifier`` of the next function, ERROR node) to be matched by query patterns, and a
text predicate on every identifier would cost more than the parse. So the macro names are found
in the text, and the tree only says whether a match is code: not in a comment, a string or a
``#define`` body.
"""

from __future__ import annotations

import re
from typing import Iterator

from .ctext import WORD, WORD_BYTES, closing_paren, directives
from .records import ExportSite

__all__ = ["SYMBOL_LIKE", "MAX_EXPORT_ARGS_BYTES", "export_matches", "export_sites"]

#: A symbol name (what a lookup or an export may name).
SYMBOL_LIKE = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$]*\Z")

# Literal first, for a fast search; the word boundary before is checked by export_matches.
_EXPORT_RE = re.compile(rb"EXPORT_(PER_CPU_)?(UNUSED_)?SYMBOL(_NS)?(_GPL)?(_FUTURE)?(?!" + WORD + rb")")

#: The longest argument list read as an export's (a symbol and a namespace: real ones are a few
#: dozen bytes).
MAX_EXPORT_ARGS_BYTES = 1024

#: Node types whose text is not code.
_NOT_CODE = ("comment", "preproc_arg", "string_literal", "string_content", "char_literal",
             "system_lib_string", "escape_sequence", "preproc_def", "preproc_function_def")


def export_matches(text: bytes) -> Iterator[re.Match]:
    """Every ``EXPORT_SYMBOL*`` macro name in ``text`` that is a whole word."""
    for m in _EXPORT_RE.finditer(text):
        if m.start() == 0 or text[m.start() - 1] not in WORD_BYTES:
            yield m


def export_sites(text: bytes, file: str, defined: set[str], root=None) -> list[ExportSite]:
    """The ``EXPORT_SYMBOL*`` sites of ``text`` (the file ``file``); ``defined`` holds the names of
    the functions the file defines.

    With ``root``, the file's tree-sitter root node, a match is kept unless the tree puts the
    macro's name inside a comment, a string or a ``#define`` body. Only the smallest node around
    the name is asked: error recovery can wrap real code in odd ancestors (a
    ``concatenated_string``). Without a tree, matches inside preprocessor directives are left out.
    """
    in_directive = None
    out = []
    line, counted = 1, 0  # lines are counted on from one match to the next
    for m in export_matches(text):
        if root is None:
            if in_directive is None:
                in_directive = directives(text)
            if m.start() in in_directive:
                continue
        else:
            node = root.descendant_for_byte_range(m.start(), m.end())
            if node is not None and (
                node.type in _NOT_CODE
                or (node.parent is not None and node.parent.type in ("string_literal", "char_literal"))
            ):
                continue
        line += text.count(b"\n", counted, m.start())
        counted = m.start()
        site = _export_site(text, m, file, line, defined)
        if site is not None:
            out.append(site)
    return out


def _export_site(text: bytes, m: re.Match, file: str, line: int, defined: set[str]) -> ExportSite | None:
    i = m.end()
    while i < len(text) and text[i] in b" \t\r\n":
        i += 1
    if i >= len(text) or text[i] != 0x28:
        return None
    end = closing_paren(text, i, MAX_EXPORT_ARGS_BYTES)
    if end < 0:
        return None
    args = _split_args(text[i:end])
    symbol = args[0]
    if not SYMBOL_LIKE.match(symbol):
        return None
    namespace = ""
    if m.group(3):  # _NS: a bare identifier in 6.1, a string literal since 6.13
        # (commit cdd30ebb1b9f "module: Convert symbol namespace to string literal")
        if len(args) < 2:
            return None
        namespace = args[1].strip('"')
    # EXPORT_SYMBOL_GPL_FUTURE exported to every module (with a warning) until 5.13 removed it
    # (commit f1c3d73e973c "module: remove EXPORT_SYMBOL_GPL_FUTURE"); EXPORT_UNUSED_SYMBOL* went
    # in the same release (commit 367948220fce "module: remove EXPORT_UNUSED_SYMBOL*").
    gpl = bool(m.group(4)) and not m.group(5)
    return ExportSite(symbol, file, line, gpl, namespace, symbol if symbol in defined else None)


def _split_args(text: bytes) -> list[str]:
    """Top-level comma-separated arguments of ``(a, b(c, d), e)``."""
    out, depth, cur = [], 0, bytearray()
    for c in text[1:-1]:
        if c == 0x2C and depth == 0:
            out.append(cur.decode("utf-8", "replace").strip())
            cur = bytearray()
            continue
        if c in b"([{":
            depth += 1
        elif c in b")]}":
            depth -= 1
        cur.append(c)
    out.append(cur.decode("utf-8", "replace").strip())
    return out
