"""C source: function definitions, calls, export sites and runtime lookups, read with tree-sitter-c.

The loader reads a kernel tree (or an out-of-tree module's tree) and yields plain records; it never
talks to a store. Paths in records are relative to the tree root the caller gives.

Kernel sources are not quite C to a parser that does not run the preprocessor: annotations
(``__init``, ``__user``, ``__printf(1, 2)``, ``__acquires(x)``...), brace-less loop macros
(``list_for_each_entry(pos, head, member) {``) and function-defining macros
(``SYSCALL_DEFINE3(read, ...)``) make tree-sitter lose whole functions. :func:`neutralise_kernel_macros`
rewrites them first, in place and byte for byte (every replaced character becomes a space, newlines
stay), so that lines and byte offsets stay exact. What the parser still cannot read is counted in
:class:`ParseStats`.

Each file is parsed once and read with ONE combined tree-sitter query (function definitions, calls,
string arguments, initialisers, includes, error nodes). ``EXPORT_SYMBOL*`` sites are found by a byte
search and then checked against the tree (not in a comment, not in a ``#define`` body): they come out
of tree-sitter in too many shapes (expression statement, declaration, ``macro_type_specifier`` of the
next function, ERROR node) to be matched by patterns, and a text predicate on every identifier
would cost more than the parse.

Two APIs:

* :func:`parse_file` / :func:`for_each_record` — in-process, for small trees and tests;
* :func:`index_tree` — a whole kernel tree with a pool of worker processes, each writing its own
  Parquet shards (one directory per table under ``shard_dir``), with a manifest of content hashes
  so that a re-run re-parses only the files that changed.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from .lookups import IDENTIFIER_LOOKUPS, ArgFlow, LookUp, StringArg, find_wrappers, resolve_lookups
from .records import Skipped

__all__ = [
    "FunctionDef",
    "Call",
    "ExportSite",
    "ParseStats",
    "FileResult",
    "IndexResult",
    "TABLES",
    "neutralise_kernel_macros",
    "kernel_include_dirs",
    "resolve_include",
    "parse_source",
    "parse_file",
    "for_each_record",
    "resolve_file_lookups",
    "index_tree",
    "read_table",
    "unpack_source_tarball",
]


# --------------------------------------------------------------------------------------------
# Records


class FunctionDef(NamedTuple):
    """A function defined in source (macro-defined ones included: ``SYSCALL_DEFINE3(read, ...)``
    is ``sys_read``)."""

    name: str
    """The function's name."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the function's name (where ctags and cscope put it)."""
    end_line: int
    """1-based line of the closing brace."""
    static: bool
    """Declared ``static``."""
    inline: bool
    """Declared ``inline`` (``__always_inline`` and ``__inline__`` count)."""


class Call(NamedTuple):
    """A call inside a function body."""

    caller: str
    """The enclosing function."""
    callee: str
    """The called name; for a call through a struct member (``ops->fn()``), the member (``fn``)."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the callee's name."""
    via_member: bool
    """True for a call through a struct member (``ops->fn()``, ``s.fn()``)."""


class ExportSite(NamedTuple):
    """An ``EXPORT_SYMBOL*`` macro in source."""

    symbol: str
    """The exported symbol."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the macro."""
    gpl: bool
    """``_GPL`` variant (``EXPORT_SYMBOL_GPL``, ``EXPORT_SYMBOL_NS_GPL``...)."""
    namespace: str
    """The ``EXPORT_SYMBOL_NS*`` namespace (quotes removed), ``""`` for none."""
    function: str | None
    """The function of that name defined in the same file, else None (a variable, or defined
    elsewhere, e.g. in assembly)."""


class ParseStats(NamedTuple):
    """How well the parser read a set of files."""

    files: int
    """Files parsed."""
    functions: int
    """Function definitions found."""
    functions_with_errors: int
    """Function definitions whose subtree holds a parse error."""
    error_nodes: int
    """ERROR nodes in all trees."""

    def function_error_share(self) -> float:
        """Share of the functions found that a parse error touches (0.0 when none found)."""
        return self.functions_with_errors / self.functions if self.functions else 0.0

    def __add__(self, other):  # type: ignore[override]
        return ParseStats(*(a + b for a, b in zip(self, other)))


class FileResult(NamedTuple):
    """Everything read from one file."""

    file: str
    """The file, relative to the tree root."""
    functions: list[FunctionDef]
    """Function definitions."""
    calls: list[Call]
    """Calls inside function bodies."""
    exports: list[ExportSite]
    """``EXPORT_SYMBOL*`` sites."""
    lookups: list[LookUp]
    """Lookups seen in this file alone: kprobe ``.symbol_name``, ``symbol_get(x)``, and string
    literals passed straight to ``kallsyms_lookup_name`` and friends. Wrapper calls are resolved
    across files by :func:`ksymgraph.loaders.lookups.resolve_lookups`."""
    string_args: list[StringArg]
    """Symbol-like strings passed to calls (input of the wrapper analysis)."""
    arg_flows: list[ArgFlow]
    """``char *`` parameters passed on to calls (input of the wrapper analysis)."""
    includes: list[str]
    """Included files found on disk, relative to the tree root."""
    stats: ParseStats
    """Parse statistics of this file."""
    error: str | None
    """Why the file could not be read or was read only in part (None when all went well)."""


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
    """Files that could not be read (or not fully), with the reason."""
    parsed: int
    """Files parsed during this run (the rest were unchanged and reused)."""
    reused: int
    """Files whose rows were kept from an earlier run."""
    seconds: float
    """Wall time of the run."""


# --------------------------------------------------------------------------------------------
# Neutralising kernel macros

#: Annotations without arguments, replaced by spaces. Most come from
#: include/linux/compiler_types.h, compiler_attributes.h, init.h, cache.h and linkage.h.
ANNOTATIONS = (
    "__init __exit __initdata __initconst __exitdata __ref __refdata __refconst __meminit "
    "__meminitdata __meminitconst __init_memblock __initdata_memblock __init_or_module __cpuinit "
    "__devinit __devexit __devinitdata __net_init __net_exit __net_initdata __head __nosavedata "
    "__user __kernel __iomem __rcu __percpu __force __nocast __safe __private __bitwise __bitwise__ "
    "__must_check __cold __hot __pure __weak __visible __used __maybe_unused __always_unused "
    "__read_mostly __ro_after_init __lsm_ro_after_init __page_aligned_bss __page_aligned_data "
    "__cacheline_aligned __cacheline_aligned_in_smp ____cacheline_aligned "
    "____cacheline_aligned_in_smp ____cacheline_internodealigned_in_smp __aligned_largest "
    "__packed __noreturn __noclone __naked __flatten __malloc __nonstring __deprecated "
    "__latent_entropy __randomize_layout __no_randomize_layout __designated_init "
    "__attribute_const__ __sched __lockfunc __kprobes __irq_entry __softirq_entry __cpuidle "
    "__no_kcsan __no_sanitize_address __no_sanitize_thread __no_sanitize_undefined "
    "__no_sanitize_coverage __no_sanitize_or_inline __no_kasan_or_inline __no_profile __noscs "
    "__nostackprotector __nocfi __noendbr __noinitretpoline __no_fgcse __gnu_inline __ksym "
    "__bpf_kfunc __exitused __exit_call __weak asmlinkage notrace noinstr noinline "
    "noinline_for_stack __noinline __init_refok __ref_refok __xipram __tracepoint_string"
).split()

#: Annotations written as ``__inline``-like keywords: replaced by ``inline`` and spaces.
INLINE_ANNOTATIONS = ("__always_inline", "__inline_maybe_unused", "__fastpath_inline")

#: XFS and the decompressors spell ``static`` as ``STATIC`` (a ``#define``).
STATIC_ANNOTATIONS = ("STATIC",)

#: Annotations with an argument list (``__printf(1, 2)``): the name and the balanced parentheses
#: become spaces.
ANNOTATIONS_WITH_ARGS = (
    "__attribute__ __attribute __printf __scanf __section __aligned __acquires __releases "
    "__must_hold __cond_lock_annotation __cond_acquires __cond_releases __alloc_size "
    "__realloc_size __assume_aligned __cleanup __free __counted_by __alias __copy "
    "__noinstr_section __zero_call_used_regs __diag_ignore_all __nocfi_section"
).split()

#: Macros that define a function: (regex on the macro name, format of the function's name).
#: ``SYSCALL_DEFINEn(name, ...)`` defines ``sys_name`` (include/linux/syscalls.h; arch wrappers
#: such as ``__x64_sys_name`` are generated around it), ``COMPAT_SYSCALL_DEFINEn`` defines
#: ``compat_sys_name`` (include/linux/compat.h), ``BPF_CALL_n(name, ...)`` defines ``name``
#: (include/linux/filter.h), ``SYSCALL32_DEFINEn`` is ``COMPAT_SYSCALL_DEFINEn`` under CONFIG_COMPAT
#: (include/linux/syscalls.h, since 5.6), x86 ``DEFINE_IDTENTRY*(name)`` (arch/x86/include/asm/idtentry.h,
#: since 5.8) and powerpc ``DEFINE_INTERRUPT_HANDLER*(name)`` (since 5.12) define ``name``.
FUNCTION_MACROS = (
    (r"COMPAT_SYSCALL_DEFINE\d", "compat_sys_{}"),
    (r"SYSCALL32_DEFINE\d", "compat_sys_{}"),
    (r"SYSCALL_DEFINE\d", "sys_{}"),
    (r"BPF_CALL_\d", "{}"),
    (r"DEFINE_IDTENTRY\w*", "{}"),
    (r"DEFINE_INTERRUPT_HANDLER\w*", "{}"),
)

_WORD = rb"[A-Za-z0-9_]"
_ANNOTATION_KIND = {a.encode(): "blank" for a in ANNOTATIONS}
_ANNOTATION_KIND.update({a.encode(): "inline" for a in INLINE_ANNOTATIONS})
_ANNOTATION_KIND.update({a.encode(): "args" for a in ANNOTATIONS_WITH_ARGS})
_ANNOTATION_KIND.update({a.encode(): "static" for a in STATIC_ANNOTATIONS})
# Candidate words, then a dict look-up (an alternation of 150 words is several times slower in
# ``re``). Each pattern starts with a literal, which ``re`` finds by a fast search, where a
# leading ``\b`` or alternation makes it try every byte; the word boundary before is checked apart.
_ANNOT_RES = [re.compile(re.escape(w) + rb"\w*") for w in (b"__", b"asmlinkage", b"notrace", b"noinstr",
                                                            b"noinline", b"STATIC")]
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_FOR_EACH_RE = re.compile(rb"for_each")
_FUNC_MACRO_RE = re.compile(
    rb"^[ \t]*(" + b"|".join(m.encode() for m, _ in FUNCTION_MACROS) + rb")[ \t]*\([ \t]*([A-Za-z_]\w*)",
    re.M,
)
#: The literal start of each :data:`FUNCTION_MACROS` name, to skip files that name none of them.
_FUNC_MACRO_WORDS = tuple(re.match(r"\w+?(?=\\|$)", m).group().encode() for m, _ in FUNCTION_MACROS)
#: A type written as a macro argument: ``container_of(p, struct foo, list)``, ``min_t(unsigned
#: long, a, b)``, ``va_arg(ap, const char *)``. The C grammar has no expression of that shape.
_TYPE = (
    rb"\s*(?:(?:const|volatile)\s+)*"
    rb"(?:(?:struct|union|enum)\s+\w+"
    rb"|(?:(?:unsigned|signed)\s+)?(?:char|short|int|long\s+long(?:\s+int)?|long(?:\s+int)?|bool|_Bool|float|double|void)"
    rb"|unsigned|signed)"
    rb"(?:\s*(?:\*|const\b|volatile\b))*\s*"
)
#: A whole macro argument that is a type: it holds no brackets or commas, so it ends at the
#: first ``,`` or ``)``.
_TYPE_ARG_RE = re.compile(rb"[(,](" + _TYPE + rb")(?=[,)])")
#: Built-ins that take a type and that tree-sitter-c already reads.
_TYPE_TAKERS = {b"sizeof", b"typeof", b"__typeof__", b"__typeof", b"alignof", b"_Alignof", b"__alignof__",
                b"offsetof", b"__builtin_offsetof", b"_Generic", b"__builtin_types_compatible_p"}
#: What may come before a call in an expression (not a declaration's type).
#: (``*`` is not among them: ``struct page *alloc(void)`` is a definition.)
_EXPRESSION_BEFORE = set(b"=(,;{}:?!&|+-/%<>[^~")

_DIRECTIVE_BODY_RE = re.compile(rb"#(?:[^\n]*\\\r?\n)*[^\n]*")


def _directives(src: bytes) -> list[tuple[int, int]]:
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
    return out


def _annotation_words(src: bytes) -> list[tuple[int, int]]:
    """(start, end) of each word that may be an annotation (``__x``, ``notrace``...), in order."""
    found = []
    for pattern in _ANNOT_RES:
        for m in pattern.finditer(src):
            start = m.start()
            if start == 0 or src[start - 1] not in _WORD_BYTES:
                found.append((start, m.end()))
    found.sort()
    return found
_BLANK = bytes.maketrans(bytes(range(256)), b" " * 256)


def _blank(buf: bytearray, start: int, end: int) -> None:
    """Turn buf[start:end] into spaces, keeping newlines."""
    chunk = bytes(buf[start:end])
    buf[start:end] = b"\n".join(part.translate(_BLANK) for part in chunk.split(b"\n"))


def _closing_paren(src: bytes, open_at: int) -> int:
    """Offset just after the parenthesis closing the one at ``open_at``, or -1."""
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


def _in_spans(starts: list[int], ends: list[int], pos: int) -> bool:
    i = bisect.bisect_right(starts, pos) - 1
    return i >= 0 and pos < ends[i]


def _prev_significant(src: bytes, pos: int) -> bytes:
    """The last non-blank byte before ``pos`` (comments skipped), or b'' at the start."""
    i = pos - 1
    while i >= 0:
        c = src[i]
        if c in b" \t\r\n\\":
            i -= 1
            continue
        if c == 0x2F and i > 0 and src[i - 1] == 0x2A:  # end of a /* comment */
            j = src.rfind(b"/*", 0, i - 1)
            if j < 0:
                return b"/"
            i = j - 1
            continue
        line_start = src.rfind(b"\n", 0, i) + 1
        k = src.find(b"//", line_start, i + 1)
        if k >= 0 and src.count(b'"', line_start, k) % 2 == 0:
            i = k - 1
            continue
        return src[i : i + 1]
    return b""


def _prev_word(src: bytes, pos: int) -> bytes:
    m = re.search(rb"(\w+)\s*$", src[max(0, pos - 40) : pos])
    return m.group(1) if m else b""


def _open_paren_before(src: bytes, pos: int, limit: int = 4000) -> int:
    """Offset of the parenthesis that encloses ``pos``, scanning back at most ``limit`` bytes."""
    depth = 0
    i = pos - 1
    stop = max(0, pos - limit)
    while i >= stop:
        c = src[i]
        if c == 0x29 or c == 0x5D or c == 0x7D:  # ) ] }
            depth += 1
        elif c == 0x28 or c == 0x5B or c == 0x7B:  # ( [ {
            if depth == 0:
                return i if c == 0x28 else -1
            depth -= 1
        elif c == 0x3B:  # ;
            return -1
        i -= 1
    return -1


def _neutralise_type_args(src: bytes, buf: bytearray, d_starts: list[int], d_ends: list[int]) -> None:
    """``container_of(p, struct foo, list)`` -> ``container_of(p, 0         , list)``: a type
    passed to a macro (``min_t``, ``list_entry``, ``va_arg``, ``DEFINE_PER_CPU``...) becomes ``0``
    when the macro is called in an expression or a statement."""
    for m in _TYPE_ARG_RE.finditer(src):
        start, end = m.span(1)
        if _in_spans(d_starts, d_ends, start) or src[start:end].strip() == b"void":
            continue
        paren = m.start() if src[m.start()] == 0x28 else _open_paren_before(src, m.start())
        if paren <= 0:
            continue
        j = paren - 1
        while j >= 0 and src[j] in b" \t":
            j -= 1
        k = j
        while k >= 0 and (chr(src[k]).isalnum() or src[k] == 0x5F):
            k -= 1
        name = src[k + 1 : j + 1]
        if not name or name[:1].isdigit() or name in _TYPE_TAKERS:
            continue  # a cast, a grouping, or a built-in that takes types
        prev = _prev_significant(src, k + 1)
        if not (prev == b"" or prev[0] in _EXPRESSION_BEFORE or _prev_word(src, k + 1) in (b"return", b"case")):
            continue  # a declaration: int foo(struct bar *, int);
        first = start
        while first < end and src[first] in b" \t\n":
            first += 1
        _blank(buf, first, end)
        buf[first] = 0x30  # "0"


_IF_RE = re.compile(rb"[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b")
_ELSE_RE = re.compile(rb"else\b")


def _neutralise_else_guards(src: bytes, buf: bytearray, directives: list[tuple[int, int]]) -> None:
    """``#ifdef X`` / ``else if (...) ...`` / ``#endif`` inside an if-else chain: tree-sitter
    cannot continue an ``if`` across a directive, so a group whose code starts with ``else``
    and has no ``#else``/``#elif`` loses its two directive lines (both arms were read anyway)."""
    stack: list[tuple[int, int, bool]] = []  # (start, end, has an #else/#elif)
    for start, end in directives:
        m = _IF_RE.match(src, start)
        if m is None:
            continue
        word = m.group(1)
        if word in (b"if", b"ifdef", b"ifndef"):
            stack.append((start, end, False))
        elif word in (b"elif", b"else"):
            if stack:
                stack[-1] = (stack[-1][0], stack[-1][1], True)
        elif stack:
            if_start, if_end, has_else = stack.pop()
            if not has_else and _ELSE_RE.match(src[if_end : if_end + 200].lstrip()):
                _blank(buf, if_start, if_end)
                _blank(buf, start, end)


def neutralise_kernel_macros(src: bytes) -> bytes:
    """Rewrite kernel annotations and macros that confuse a C parser; same length, same lines.

    * annotations (``__init``, ``__user``, ``notrace``...) become spaces, annotations with
      arguments (``__printf(1, 2)``, ``__attribute__((x))``, ``__acquires(l)``) too, and
      ``__always_inline`` becomes ``inline``;
    * a brace-less loop macro in statement position (any name containing ``for_each``, e.g.
      ``list_for_each_entry(pos, head, member) {``) becomes ``while`` with the same arguments,
      a comma expression, so that the calls in its arguments stay visible;
    * a type passed as a macro argument in an expression (``container_of(p, struct foo, list)``,
      ``min_t(unsigned long, a, b)``) becomes ``0`` and spaces;
    * ``#ifdef``/``#endif`` around an ``else if`` branch of an if-else chain are blanked;
    * ``SYSCALL_DEFINE3(read, ...)`` and the other :data:`FUNCTION_MACROS` become
      ``int sys_read()`` padded with spaces.

    Preprocessor directives (``#define`` bodies included) are left alone.
    """
    buf = bytearray(src)
    directives = _directives(src)
    d_starts = [s for s, _ in directives]
    d_ends = [e for _, e in directives]

    for start, stop in _annotation_words(src):
        kind = _ANNOTATION_KIND.get(src[start:stop])
        if kind is None or _in_spans(d_starts, d_ends, start):
            continue
        if kind == "blank":
            buf[start:stop] = b" " * (stop - start)
        elif kind == "inline":
            buf[start:stop] = b"inline".ljust(stop - start)
        elif kind == "static":
            buf[start:stop] = b"static"
        else:
            paren = stop
            while paren < len(src) and src[paren] in b" \t\n":
                paren += 1
            end = _closing_paren(src, paren) if paren < len(src) and src[paren] == 0x28 else -1
            if end > 0:
                _blank(buf, start, end)

    for m in _FOR_EACH_RE.finditer(src):
        start, stop = m.start(), m.end()
        while start > 0 and (chr(src[start - 1]).isalnum() or src[start - 1] == 0x5F):
            start -= 1
        while stop < len(src) and (chr(src[stop]).isalnum() or src[stop] == 0x5F):
            stop += 1
        paren = stop
        while paren < len(src) and src[paren] in b" \t":
            paren += 1
        if paren >= len(src) or src[paren] != 0x28 or stop - start < 5:
            continue
        if _in_spans(d_starts, d_ends, start):
            continue
        prev = _prev_significant(src, start)
        if prev not in (b";", b"{", b"}", b")", b":", b"") and not (
            prev.isalpha() and _prev_word(src, start) in (b"else", b"do")
        ):
            continue  # a definition, a declaration or an expression
        end = _closing_paren(src, paren)
        if end < 0:
            continue
        rest = src[end : end + 200].lstrip()
        if not rest or rest[:1] in b";,)=+-*/%&|^<>?.[]":
            continue  # used as an expression or a call statement, not a loop head
        buf[start:stop] = b"while".ljust(stop - start)

    _neutralise_type_args(src, buf, d_starts, d_ends)
    _neutralise_else_guards(src, buf, directives)

    # (The pattern is anchored at line starts, which ``re`` tries one by one: look only in files
    # that name one of the macros.)
    has_macro = any(w in src for w in _FUNC_MACRO_WORDS)
    for m in _FUNC_MACRO_RE.finditer(src) if has_macro else ():
        if _in_spans(d_starts, d_ends, m.start(1)):
            continue
        paren = src.index(b"(", m.end(1))
        end = _closing_paren(src, paren)
        if end < 0:
            continue
        macro = m.group(1).decode()
        fmt = next(f for pat, f in FUNCTION_MACROS if re.fullmatch(pat, macro))
        text = f"int {fmt.format(m.group(2).decode())}()".encode()
        line_end = src.find(b"\n", m.start(1), end)
        room = (line_end if line_end >= 0 else end) - m.start(1)
        if len(text) > room:
            continue
        _blank(buf, m.start(1), end)
        buf[m.start(1) : m.start(1) + len(text)] = text
    return bytes(buf)


# --------------------------------------------------------------------------------------------
# Includes


def kernel_include_dirs(arch: str = "x86") -> list[str]:
    """The include directories a kernel build passes for ``arch`` (``LINUXINCLUDE`` in the top
    Makefile), relative to the tree root. For files under ``arch/<other>/`` the loader swaps in
    that architecture's directories."""
    return [f"arch/{arch}/include", f"arch/{arch}/include/uapi", "include", "include/uapi"]


_ARCH_DIR_RE = re.compile(r"^arch/([^/]+)/")


def _dirs_for(file: str, include_dirs: list[str]) -> list[str]:
    m = _ARCH_DIR_RE.match(file)
    if not m:
        return include_dirs
    return [_ARCH_DIR_RE.sub(f"arch/{m.group(1)}/", d) for d in include_dirs]


def resolve_include(root: Path, file: str, target: str, system: bool, include_dirs: list[str],
                    cache: dict | None = None) -> str | None:
    """The file an ``#include`` names, relative to ``root``, or None when not in the tree.

    ``#include "x.h"`` looks next to ``file`` first, then in ``include_dirs`` (as gcc does with
    ``-I``); ``#include <x.h>`` looks only in ``include_dirs``. ``cache``, a dict kept for one
    pass over a tree, saves the file system look-ups for includes already resolved from the same
    directory.
    """
    if cache is not None:
        key = (os.path.dirname(file), target, system)
        if key not in cache:
            cache[key] = resolve_include(root, file, target, system, include_dirs)
        return cache[key]
    candidates = []
    if not system:
        candidates.append(os.path.normpath(os.path.join(os.path.dirname(file), target)))
    candidates += [os.path.normpath(os.path.join(d, target)) for d in _dirs_for(file, include_dirs)]
    for rel in candidates:
        if rel.startswith(".."):
            continue
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


# --------------------------------------------------------------------------------------------
# Parsing one file

QUERY = """
(function_definition) @func
(call_expression function: (_) @call)
(argument_list (string_literal) @arg.str)
(init_declarator value: (string_literal) @var.str)
(initializer_pair value: (string_literal) @field.init)
(initializer_pair value: (identifier) @field.initvar)
(assignment_expression left: (field_expression) right: (string_literal) @field.assign)
(assignment_expression left: (field_expression) right: (identifier) @field.assignvar)
(preproc_include path: (_) @include)
(ERROR) @error
"""

# Literal first, for a fast search; the word boundary before is checked by _export_matches.
_EXPORT_RE = re.compile(rb"EXPORT_(PER_CPU_)?(UNUSED_)?SYMBOL(_NS)?(_GPL)?(_FUTURE)?(?!" + _WORD + rb")")


def _export_matches(text: bytes) -> Iterator[re.Match]:
    """Every ``EXPORT_SYMBOL*`` macro name in ``text`` that is a whole word."""
    for m in _EXPORT_RE.finditer(text):
        if m.start() == 0 or text[m.start() - 1] not in _WORD_BYTES:
            yield m
_SYMBOL_LIKE = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$]*\Z")
_NOT_CODE = ("comment", "preproc_arg", "string_literal", "string_content", "char_literal",
             "system_lib_string", "escape_sequence", "preproc_def", "preproc_function_def")
_DECLARATOR_FIELDS = ("pointer_declarator", "parenthesized_declarator", "attributed_declarator",
                      "function_declarator", "array_declarator", "init_declarator")

_parser = None
_query = None


def _tree_sitter():
    """The process's parser and compiled query, made on first use (once per worker)."""
    global _parser, _query
    if _parser is None:
        import tree_sitter
        import tree_sitter_c

        lang = tree_sitter.Language(tree_sitter_c.language())
        _parser = tree_sitter.Parser(lang)
        _query = tree_sitter.Query(lang, QUERY)
    return _parser, _query


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _string_value(node) -> str | None:
    """The content of a plain string literal node (no escapes, no prefix), else None."""
    raw = node.text
    if len(raw) < 2 or raw[:1] != b'"' or raw[-1:] != b'"' or b"\\" in raw:
        return None
    return raw[1:-1].decode("utf-8", "replace")


def _declarator_name(node):
    """The identifier node a declarator declares (descending through pointers, parentheses...)."""
    while node is not None and node.type in _DECLARATOR_FIELDS:
        node = _inner_declarator(node)  # int (*get(int))(int): parentheses have no field
    if node is not None and node.type in ("identifier", "field_identifier", "type_identifier"):
        return node
    return None


def _char_params(func_declarator) -> dict[str, int]:
    """``{name: index}`` of a function's ``char *`` parameters."""
    params = func_declarator.child_by_field_name("parameters")
    out: dict[str, int] = {}
    if params is None or b"char" not in params.text:
        return out
    index = 0
    for p in params.named_children:
        if p.type != "parameter_declaration":
            if p.type == "variadic_parameter":
                index += 1
            continue
        decl = p.child_by_field_name("declarator")
        if decl is not None and decl.type == "pointer_declarator":
            type_node = p.child_by_field_name("type")
            if type_node is not None and type_node.text == b"char":
                name = _declarator_name(decl)
                if name is not None:
                    out[_text(name)] = index
        index += 1
    return out


def _function_declarator(node):
    """The function_declarator under a definition's declarator, or None."""
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        if d.type not in _DECLARATOR_FIELDS:
            return None
        d = _inner_declarator(d)
    return d


def _inner_declarator(node):
    if node.type == "parenthesized_declarator":
        return node.named_children[0] if node.named_children else None
    return node.child_by_field_name("declarator")


def _arg_index(arg_node) -> int:
    index = 0
    for sib in arg_node.parent.named_children:
        if sib.id == arg_node.id:
            return index
        if sib.type != "comment":
            index += 1
    return index


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


class _Functions:
    """Function spans of one file, to find the function enclosing a byte offset."""

    def __init__(self):
        self.starts: list[int] = []
        self.spans: list[tuple[int, int, str]] = []

    def add(self, start: int, end: int, name: str) -> None:
        self.spans.append((start, end, name))

    def freeze(self) -> None:
        self.spans.sort()
        self.starts = [s for s, _, _ in self.spans]

    def at(self, pos: int) -> str | None:
        i = bisect.bisect_right(self.starts, pos) - 1
        while i >= 0:
            start, end, name = self.spans[i]
            if pos < end:
                return name
            if i == 0 or self.spans[i - 1][1] <= start:
                return None
            i -= 1
        return None


def parse_source(src: bytes, file: str) -> FileResult:
    """Parse the bytes of one file named ``file`` (used only to fill the records' ``file``);
    ``includes`` are left unresolved (as written) — :func:`parse_file` resolves them."""
    error = None
    try:
        src.decode("utf-8")
    except UnicodeDecodeError as e:
        error = f"invalid UTF-8 at byte {e.start} (read with replacement characters)"
    text = neutralise_kernel_macros(src)
    if b"{" not in text and not file.endswith(".c"):
        return _braceless_header(text, file, error)
    parser, query = _tree_sitter()
    tree = parser.parse(text)
    import tree_sitter

    caps = tree_sitter.QueryCursor(query).captures(tree.root_node)
    funcs = _Functions()
    functions: list[FunctionDef] = []
    char_params: dict[str, dict[str, int]] = {}
    with_errors = 0

    for node in caps.get("func", ()):
        decl = _function_declarator(node)
        name_node = _declarator_name(decl) if decl is not None else None
        if name_node is None:
            continue
        name = _text(name_node)
        static = inline = False
        for child in node.children:
            if child.type == "storage_class_specifier":
                word = child.text
                if word == b"static":
                    static = True
                elif word in (b"inline", b"__inline", b"__inline__"):
                    inline = True
            elif child.type == "compound_statement":
                break
        functions.append(FunctionDef(name, file, name_node.start_point[0] + 1, node.end_point[0] + 1, static, inline))
        funcs.add(node.start_byte, node.end_byte, name)
        if node.has_error:
            with_errors += 1
        cp = _char_params(decl)
        if cp:
            char_params[name] = cp

    # A macro-defined function tree-sitter did not recognise: ``MACRO(args)`` at file scope
    # followed by a block (``TEST_F(fixture, name) { ... }``); ctags names it after the macro.
    # Only calls outside every function found so far can be one.
    funcs.freeze()
    call_nodes = caps.get("call", ())
    callers = [funcs.at(node.start_byte) for node in call_nodes]
    for node, caller in zip(call_nodes, callers):
        if caller is not None:
            continue
        call = node.parent
        stmt = call.parent
        if (
            stmt.type == "expression_statement"
            and stmt.parent is not None
            and stmt.parent.type in ("translation_unit", "preproc_if", "preproc_ifdef", "preproc_else")
            and node.type == "identifier"
            and stmt.next_named_sibling is not None
            and stmt.next_named_sibling.type == "compound_statement"
            and stmt.child_count == 2  # the call and a MISSING ";"
            and stmt.children[1].is_missing
        ):
            body = stmt.next_named_sibling
            name = _text(node)
            functions.append(FunctionDef(name, file, node.start_point[0] + 1, body.end_point[0] + 1, False, False))
            funcs.add(stmt.start_byte, body.end_byte, name)
            if body.has_error or call.has_error:
                with_errors += 1
    if len(funcs.spans) != len(funcs.starts):  # macro-defined functions were added
        funcs.freeze()
        callers = [funcs.at(node.start_byte) for node in call_nodes]

    # String constants: ``const char *name = "sym";`` (per function, or file scope under None).
    string_vars: dict[tuple[str | None, str], str] = {}
    for node in caps.get("var.str", ()):
        value = _string_value(node)
        name = _declarator_name(node.parent.child_by_field_name("declarator"))
        if value is not None and name is not None and _SYMBOL_LIKE.match(value):
            string_vars[(funcs.at(node.start_byte), _text(name))] = value

    def string_of(ident, function: str | None) -> str | None:
        """The string constant an identifier names, seen from ``function`` (None: file scope)."""
        name = _text(ident)
        return string_vars.get((function, name)) or string_vars.get((None, name))

    # Struct fields initialised with strings: ``.save_func_name = "save_stack_trace"``.
    field_strings: dict[str, list[str]] = {}
    lookups: list[LookUp] = []
    for kind in ("field.init", "field.initvar", "field.assign", "field.assignvar"):
        for node in caps.get(kind, ()):
            value = (_string_value(node) if kind in ("field.init", "field.assign")
                     else string_of(node, funcs.at(node.start_byte)))
            if value is None or not _SYMBOL_LIKE.match(value):
                continue
            if kind.startswith("field.init"):
                designators = node.parent.children_by_field_name("designator")
                if not designators or designators[-1].type != "field_designator":
                    continue
                fields = [_text(d)[1:] for d in designators if d.type == "field_designator"]
                target = None
            else:
                target = node.parent.child_by_field_name("left")
                fields = [_text(target.child_by_field_name("field"))]
            field = fields[-1]
            field_strings.setdefault(field, []).append(value)
            if field == "symbol_name":
                how = _probe_kind(node, fields, target, text)
                lookups.append(LookUp(value, how, file, node.start_point[0] + 1, funcs.at(node.start_byte)))

    calls: list[Call] = []
    string_args: list[StringArg] = []
    arg_flows: list[ArgFlow] = []
    for node, caller in zip(call_nodes, callers):
        if caller is None:
            continue
        callee_node = node
        while callee_node.type in ("parenthesized_expression", "pointer_expression"):
            inner = callee_node.named_children
            if not inner:
                break
            callee_node = inner[-1] if callee_node.type == "pointer_expression" else inner[0]
        if callee_node.type == "identifier":
            via_member = False
            name_node = callee_node
        elif callee_node.type == "field_expression":
            via_member = True
            name_node = callee_node.child_by_field_name("field")
            if name_node is None:
                continue
        else:
            continue
        callee = _text(name_node)
        line = name_node.start_point[0] + 1
        calls.append(Call(caller, callee, file, line, via_member))
        if via_member:
            continue
        lookup = callee in IDENTIFIER_LOOKUPS
        params = char_params.get(caller)
        if not (lookup or params or string_vars or field_strings):
            continue  # nothing in this call's arguments can name a symbol
        args = node.parent.child_by_field_name("arguments")
        if args is None or args.named_child_count == 0:
            continue
        if lookup:
            first = args.named_children[0]
            if first.type == "identifier":
                lookups.append(LookUp(_text(first), callee, file, line, caller))
            continue
        index = -1
        for arg in args.named_children:
            if arg.type == "comment":
                continue
            index += 1
            if arg.type == "identifier":
                ident = _text(arg)
                if params and ident in params:
                    arg_flows.append(ArgFlow(caller, params[ident], callee, index, file, line))
                    continue
                value = string_of(arg, caller)
                if value is not None:
                    string_args.append(StringArg(caller, callee, index, value, file, line))
            elif arg.type == "field_expression":
                fld = arg.child_by_field_name("field")
                for value in field_strings.get(_text(fld), ()) if fld is not None else ():
                    string_args.append(StringArg(caller, callee, index, value, file, line))

    for node in caps.get("arg.str", ()):
        value = _string_value(node)
        if value is None or not _SYMBOL_LIKE.match(value):
            continue
        call = node.parent.parent
        fn = call.child_by_field_name("function") if call.type == "call_expression" else None
        if fn is None or fn.type != "identifier":
            continue
        string_args.append(
            StringArg(funcs.at(node.start_byte), _text(fn), _arg_index(node), value, file, fn.start_point[0] + 1)
        )

    defined = {f.name for f in functions}
    exports = _exports(text, file, tree.root_node, defined)
    includes = [_text(n) for n in caps.get("include", ())]
    errors = len(caps.get("error", ()))
    stats = ParseStats(1, len(functions), with_errors, errors)
    return FileResult(file, functions, calls, exports, lookups, string_args, arg_flows, includes, stats, error)


def _probe_kind(node, fields: list[str], target, text: bytes) -> str:
    """``kretprobe`` when a ``.symbol_name`` belongs to a ``struct kretprobe``, else ``kprobe``."""
    if "kp" in fields[:-1]:
        return "kretprobe"
    if target is not None:  # rp.kp.symbol_name = ..., rp->kp.symbol_name = ...
        base = target.child_by_field_name("argument")
        if base is not None and base.type == "field_expression":
            inner = base.child_by_field_name("field")
            if inner is not None and inner.text == b"kp":
                return "kretprobe"
        while base is not None and base.type in ("field_expression", "subscript_expression", "parenthesized_expression"):
            base = base.child_by_field_name("argument") or (base.named_children[0] if base.named_children else None)
        if base is not None and base.type == "identifier":
            if re.search(rb"struct\s+kretprobe\s*\**\s*" + re.escape(base.text) + rb"\b", text):
                return "kretprobe"
        return "kprobe"
    up = node.parent
    while up is not None:
        if up.type == "initializer_pair":
            for d in up.children_by_field_name("designator"):
                if d.text == b".kp":
                    return "kretprobe"
        if up.type == "declaration":
            t = up.child_by_field_name("type")
            if t is not None and b"kretprobe" in t.text:
                return "kretprobe"
            break
        up = up.parent
    return "kprobe"


def _exports(text: bytes, file: str, root, defined: set[str]) -> list[ExportSite]:
    """``EXPORT_SYMBOL*`` sites: found by a byte search, kept unless the tree puts the macro's name
    inside a comment, a string or a ``#define`` body. Only the smallest node around the name is
    asked: error recovery can wrap real code in odd ancestors (a ``concatenated_string``)."""
    out = []
    for m in _export_matches(text):
        if root is not None:
            node = root.descendant_for_byte_range(m.start(), m.end())
            if node is not None and (
                node.type in _NOT_CODE
                or (node.parent is not None and node.parent.type in ("string_literal", "char_literal"))
            ):
                continue
        site = _export_site(text, m, file, defined)
        if site is not None:
            out.append(site)
    return out


def _export_site(text: bytes, m, file: str, defined: set[str]) -> ExportSite | None:
    i = m.end()
    while i < len(text) and text[i] in b" \t\r\n":
        i += 1
    if i >= len(text) or text[i] != 0x28:
        return None
    end = _closing_paren(text, i)
    if end < 0:
        return None
    args = _split_args(text[i:end])
    symbol = args[0]
    if not _SYMBOL_LIKE.match(symbol):
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
    line = text.count(b"\n", 0, m.start()) + 1
    return ExportSite(symbol, file, line, gpl, namespace, symbol if symbol in defined else None)


_INCLUDE_RE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"][^>"\n]+[>"])', re.M)


def _braceless_header(text: bytes, file: str, error: str | None) -> FileResult:
    """A header without a single brace (register definitions): nothing for tree-sitter to find
    beyond its includes and exports, so it is not parsed."""
    includes = [m.group(1).decode("utf-8", "replace") for m in _INCLUDE_RE.finditer(text)]
    exports = []
    directives = _directives(text)
    starts, ends = [s for s, _ in directives], [e for _, e in directives]
    for m in _export_matches(text):
        if not _in_spans(starts, ends, m.start()):
            site = _export_site(text, m, file, set())
            if site is not None:
                exports.append(site)
    return FileResult(file, [], [], exports, [], [], [], includes, ParseStats(1, 0, 0, 0), error)


def _read(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def parse_file(path: str | os.PathLike, root: str | os.PathLike, include_dirs: list[str] | None = None) -> FileResult:
    """Parse one file of the tree at ``root``; never raises for a bad file (see ``error``).

    ``includes`` holds the included files that exist in the tree (relative to ``root``),
    resolved against ``include_dirs`` (default: :func:`kernel_include_dirs`).
    """
    root = Path(root)
    path = Path(path)
    rel = os.path.relpath(path if path.is_absolute() else root / path, root)
    include_dirs = kernel_include_dirs() if include_dirs is None else include_dirs
    try:
        src = _read(root / rel)
    except OSError as e:
        return FileResult(rel, [], [], [], [], [], [], [], ParseStats(0, 0, 0, 0), f"unreadable: {e.strerror or e}")
    try:
        result = parse_source(src, rel)
    except Exception as e:  # a parser bug must not stop a whole tree
        return FileResult(rel, [], [], [], [], [], [], [], ParseStats(0, 0, 0, 0), f"parse failed: {e!r}")
    resolved = []
    for inc in result.includes:
        if len(inc) >= 2 and inc[0] in "<\"":
            target = resolve_include(root, rel, inc[1:-1], inc[0] == "<", include_dirs)
            if target is not None and target not in resolved:
                resolved.append(target)
    return result._replace(includes=resolved)


def _walk_c_files(root: Path) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rel = os.path.relpath(d, root)
        for f in files:
            if f.endswith(".c"):
                out.append(f if rel == "." else os.path.join(rel, f))
    out.sort()
    return out


def for_each_record(
    root: str | os.PathLike,
    files: Iterable[str] | None = None,
    include_dirs: list[str] | None = None,
    headers: bool = True,
) -> Iterator[FileResult]:
    """Parse ``files`` (default: every ``.c`` file under ``root``) and, when ``headers``, every
    header they include, transitively, each once; yields one :class:`FileResult` per file.

    Runs in-process: meant for small trees (an out-of-tree module) and tests. Lookups through
    wrappers need the whole set: pass the results to :func:`resolve_file_lookups`.
    """
    root = Path(root)
    todo = list(files) if files is not None else _walk_c_files(root)
    seen = set(todo)
    while todo:
        rel = todo.pop(0)
        result = parse_file(rel, root, include_dirs)
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



# --------------------------------------------------------------------------------------------
# Whole trees: worker shards and an incremental manifest

#: Tables written per shard, each ``<shard_dir>/<table>/<shard id>.parquet``.
TABLES = {
    "functions": FunctionDef,
    "calls": Call,
    "exports": ExportSite,
    "direct_lookups": LookUp,
    "string_args": StringArg,
    "arg_flows": ArgFlow,
}

MANIFEST_VERSION = 1


def _schema(record_type):
    """The Arrow schema of a record type: its fields, in order, as string/int32/bool columns."""
    import typing

    import pyarrow as pa

    arrow = {str: pa.string(), int: pa.int32(), bool: pa.bool_()}
    fields = []
    for name, hint in typing.get_type_hints(record_type).items():
        base = next(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
        fields.append(pa.field(name, arrow[base], nullable=True))
    return pa.schema(fields)


def _write_table(path: Path, record_type, rows: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(record_type)
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _file_signature(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


#: ``lookup_sig`` of a file that gives the wrapper analysis nothing.
_NO_LOOKUP_INPUT = hashlib.sha1(repr([[], [], []]).encode()).hexdigest()


def _index_batch(job) -> tuple[str, list[dict], dict[str, int]]:
    """Worker: parse a batch of files and write one shard per table. Returns (shard id, one entry
    per file for the manifest, row count per table)."""
    root, files, include_dirs, shard_dir, shard_id = job
    root = Path(root)
    rows: dict[str, list] = {t: [] for t in TABLES}
    entries = []
    resolved: dict = {}
    for rel in files:
        path = root / rel
        entry = {"file": rel, "shard": shard_id}
        try:
            src = _read(path)
            entry["size"], entry["mtime_ns"] = _file_signature(path)
        except OSError as e:
            entry.update(error=f"unreadable: {e.strerror or e}", sha1=None, includes=[], stats=[0, 0, 0, 0])
            entries.append(entry)
            continue
        entry["sha1"] = hashlib.sha1(src).hexdigest()
        try:
            result = parse_source(src, rel)
        except Exception as e:
            entry.update(error=f"parse failed: {e!r}", includes=[], stats=[0, 0, 0, 0])
            entries.append(entry)
            continue
        includes = []
        for inc in result.includes:
            if len(inc) >= 2 and inc[0] in "<\"":
                target = resolve_include(root, rel, inc[1:-1], inc[0] == "<", include_dirs, resolved)
                if target is not None and target not in includes:
                    includes.append(target)
        # What the whole-tree wrapper analysis reads from this file: when it is unchanged, a re-index
        # need not resolve the lookups again.
        # (sorted: the loader collects some of these through sets, in no fixed order)
        lookup_input = repr([sorted(map(repr, rows)) for rows in (result.lookups, result.string_args,
                                                                   result.arg_flows)]).encode()
        entry.update(error=result.error, includes=includes, stats=list(result.stats),
                     lookup_sig=hashlib.sha1(lookup_input).hexdigest())
        entries.append(entry)
        rows["functions"] += result.functions
        rows["calls"] += result.calls
        rows["exports"] += result.exports
        rows["direct_lookups"] += result.lookups
        rows["string_args"] += result.string_args
        rows["arg_flows"] += result.arg_flows
    for table, record_type in TABLES.items():
        _write_table(Path(shard_dir) / table / f"{shard_id}.parquet", record_type, rows[table])
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
    for module in ("csource.py", "lookups.py"):
        h.update((Path(__file__).parent / module).read_bytes())
    try:
        from importlib.metadata import version

        h.update(version("tree-sitter-c").encode() + version("tree-sitter").encode())
    except Exception:
        pass
    return h.hexdigest()


def _save_manifest(shard_dir: Path, manifest: dict) -> None:
    tmp = shard_dir / "manifest.json.tmp"
    tmp.write_bytes(_json_dumps(manifest))
    os.replace(tmp, shard_dir / "manifest.json")


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
            tmp = path.with_suffix(".tmp")
            pq.write_table(t, tmp, compression="zstd")
            os.replace(tmp, path)
            info["rows"][table] = t.num_rows
        if remaining:
            info["files"] = remaining
        else:
            del manifest["shards"][shard_id]


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
    return ds.dataset(files, format="parquet", schema=_schema(TABLES[table])).to_table()


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
) -> IndexResult:
    """Index a whole tree into Parquet shards, re-parsing only what changed since the last run.

    ``files`` (default: every ``.c`` file under ``root``) and, when ``headers``, the headers
    they include, transitively (resolved against ``include_dirs``, default
    :func:`kernel_include_dirs`), are parsed by ``workers`` processes; each worker writes its
    batch's rows to its own shard. ``shard_dir`` (default ``<root>/.ksymgraph-index``) holds a
    manifest of every file's size, mtime, SHA-1 and shard: a file whose size and mtime are
    unchanged is not read again; one whose content hash is unchanged is not parsed again; the
    rows of a changed or deleted file are dropped from its old shard. Lookups through wrappers are
    resolved over the whole index at the end (``lookups.parquet``).
    """
    started = time.monotonic()
    root = Path(root).resolve()
    root_s = str(root)
    include_dirs = kernel_include_dirs() if include_dirs is None else list(include_dirs)
    shard_dir = Path(shard_dir) if shard_dir is not None else root / ".ksymgraph-index"
    for table in TABLES:
        (shard_dir / table).mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(shard_dir, root, include_dirs)
    if not manifest["files"]:
        for table in TABLES:  # a fresh index: no stale shards from an older manifest
            for old in (shard_dir / table).glob("*.parquet"):
                old.unlink()
    known: dict[str, dict] = manifest["files"]

    wanted = list(files) if files is not None else _walk_c_files(root)
    seen: set[str] = set()
    parsed = 0
    lookups_changed = False
    pool = None
    bar = None
    try:
        todo = wanted
        while todo:
            todo = [f for f in dict.fromkeys(todo) if f not in seen]
            seen.update(todo)
            to_parse = []
            next_todo: list[str] = []
            gone: dict[str, set[str]] = {}
            for rel in todo:
                entry = known.get(rel)
                if entry is not None and entry.get("sha1"):
                    try:
                        sig = _file_signature(os.path.join(root_s, rel))  # str: pathlib costs 0.4 s here
                    except OSError:
                        sig = None
                    if sig == (entry.get("size"), entry.get("mtime_ns")):
                        if headers:
                            next_todo += entry["includes"]
                        continue
                    if sig is not None:
                        try:
                            sha1 = hashlib.sha1(_read(os.path.join(root_s, rel))).hexdigest()
                        except OSError:
                            sha1 = None
                        if sha1 == entry["sha1"]:
                            entry["size"], entry["mtime_ns"] = sig
                            if headers:
                                next_todo += entry["includes"]
                            continue
                if entry is not None:
                    gone.setdefault(entry["shard"], set()).add(rel)
                to_parse.append(rel)
            _drop_files(shard_dir, manifest, gone)
            if to_parse:
                batches = _batches(root, to_parse, batch_bytes, batch_files)
                jobs = []
                for batch in batches:
                    shard_id = f"{manifest['next_shard']:06d}"
                    manifest["next_shard"] += 1
                    jobs.append((str(root), batch, include_dirs, str(shard_dir), shard_id))
                if workers > 1 and len(jobs) > 1 and pool is None:
                    pool = multiprocessing.get_context("fork").Pool(workers)
                if progress and bar is None:
                    from tqdm import tqdm

                    bar = tqdm(total=0, unit="file", file=sys.stderr, desc="parsing", dynamic_ncols=True)
                if bar is not None:
                    bar.total += len(to_parse)
                    bar.refresh()
                results = pool.imap_unordered(_index_batch, jobs) if pool is not None and len(jobs) > 1 else map(_index_batch, jobs)
                for shard_id, entries, rows in results:
                    manifest["shards"][shard_id] = {"files": [e["file"] for e in entries], "rows": rows}
                    for e in entries:
                        old = known.get(e["file"])
                        if old is None or old.get("lookup_sig") != e.get("lookup_sig"):
                            lookups_changed = True
                        known[e["file"]] = e
                        if headers:
                            next_todo += e["includes"]
                    parsed += len(entries)
                    if bar is not None:
                        bar.update(len(entries))
            todo = next_todo
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()

    # Files no longer wanted (deleted, or headers no longer included).
    gone = {}
    for rel in [f for f in known if f not in seen]:
        gone.setdefault(known[rel]["shard"], set()).add(rel)
        if known[rel].get("lookup_sig") != _NO_LOOKUP_INPUT:
            lookups_changed = True
        del known[rel]
    _drop_files(shard_dir, manifest, gone)
    _save_manifest(shard_dir, manifest)

    lookups_file = shard_dir / "lookups.parquet"
    if lookups_changed or not lookups_file.is_file():
        lookups = _write_lookups(shard_dir)
    else:
        import pyarrow.parquet as pq

        lookups = pq.read_metadata(lookups_file).num_rows
    rows = {t: 0 for t in TABLES}
    shards = []
    for shard_id, info in manifest["shards"].items():
        for t in TABLES:
            rows[t] += info["rows"][t]
            shards.append(shard_dir / t / f"{shard_id}.parquet")
    rows["lookups"] = lookups
    stats = ParseStats(*(sum(column) for column in zip(*(e["stats"] for e in known.values())))) if known \
        else ParseStats(0, 0, 0, 0)
    errors = [Skipped(rel, e["error"]) for rel, e in sorted(known.items()) if e.get("error")]
    return IndexResult(shard_dir, shards, rows, stats, errors, parsed, len(known) - parsed,
                       time.monotonic() - started)


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
    _write_table(shard_dir / "lookups.parquet", LookUp, found)
    return len(found)


# --------------------------------------------------------------------------------------------
# Source tarballs


def unpack_source_tarball(tarball: str | os.PathLike, dest_root: str | os.PathLike) -> Path:
    """Extract a kernel source tarball (``linux-source-6.1.tar.xz``) once under ``dest_root``.

    Returns the top directory of the tree (``<dest_root>/linux-source-6.1``). Extraction goes
    to a temporary directory that is renamed into place, so an interrupted run leaves nothing
    half-written; a second call reuses the tree.
    """
    tarball = Path(tarball)
    dest_root = Path(dest_root)
    name = tarball.name
    for suffix in (".tar.xz", ".tar.gz", ".tar.bz2", ".tar.zst", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    final = dest_root / name
    if final.is_dir():
        return final
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=".unpack-") as tmp:
        if tarball.name.endswith(".tar.xz") and _have("tar") and _have("xz"):
            import subprocess

            subprocess.run(["tar", "-xJf", str(tarball), "-C", tmp], check=True)
        else:
            with tarfile.open(tarball) as tf:
                tf.extractall(tmp, filter="data")
        entries = [p for p in Path(tmp).iterdir()]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
        if top == Path(tmp):
            inner = Path(tmp) / name
            inner.mkdir()
            for p in entries:
                os.replace(p, inner / p.name)
            top = inner
        os.replace(top, final)
    return final


def _have(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None
