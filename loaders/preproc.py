"""The preprocessor's conditionals decided under one kernel build: dead branches blanked before tree-sitter.

A C file read without a preprocessor shows every branch of every ``#if`` at once: the inlines of a
header for configurations the kernel was not built with, the ``#if LINUX_VERSION_CODE <
KERNEL_VERSION(...)`` branches for older kernels. :func:`preprocess` decides each
``#if/#ifdef/#ifndef/#elif/#else/#endif`` of one file under a :class:`PreprocContext` (the
kernel's ``.config``, its version, whether the file is built into a module, the architecture) in
one pass, and blanks the branches that are not compiled byte for byte (every character a space,
newlines kept), so that lines and byte offsets stay exact: the contract of the passes over a
file's text in :data:`ksymgraph.loaders.cparse.TEXT_PASSES`. The directive lines of a
conditional decided throughout are blanked too, so the parser sees plain C.

What a condition may use, as the compiler would see it:

* the ``.config``: ``CONFIG_X=y`` is ``#define CONFIG_X 1``, ``=m`` is ``#define CONFIG_X_MODULE 1``,
  a number or a string is defined as itself, an option not set is not defined — as
  ``include/generated/autoconf.h`` has it; ``IS_BUILTIN``, ``IS_MODULE``, ``IS_REACHABLE`` and
  ``IS_ENABLED`` as ``include/linux/kconfig.h`` defines them (6.1: ``IS_BUILTIN(option)`` is
  ``__is_defined(option)``, 1 only when the option is defined as ``1``; ``IS_MODULE(option)`` is
  ``__is_defined(option##_MODULE)``; ``IS_REACHABLE(option)`` is ``IS_BUILTIN(option) ||
  (IS_MODULE(option) && __is_defined(MODULE))``; ``IS_ENABLED(option)`` is ``IS_BUILTIN(option) ||
  IS_MODULE(option)``), and kconfig.h's ``__LITTLE_ENDIAN``/``__BIG_ENDIAN`` from
  ``CONFIG_CPU_BIG_ENDIAN``; kconfig.h is included in every compilation unit (``-include`` in
  the top Makefile's ``LINUXINCLUDE``);
* ``MODULE``, defined for the parts of a module and not for built-in code (6.1 scripts/Makefile.lib:
  ``modkern_cflags`` is ``$(KBUILD_CFLAGS_MODULE)`` when ``part-of-module``, the object being in
  ``real-obj-m``; the top Makefile sets ``KBUILD_CFLAGS_MODULE := -DMODULE``);
  unknown (conditions on it kept) for headers and for files built both ways;
* the version: ``LINUX_VERSION_CODE``, ``KERNEL_VERSION(a,b,c)`` and ``LINUX_VERSION_MAJOR``/
  ``PATCHLEVEL``/``SUBLEVEL`` as the top Makefile writes ``include/generated/uapi/linux/version.h``
  (6.1: ``KERNEL_VERSION(a,b,c)`` is ``(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))``,
  and the code's sublevel is clamped at 255 likewise);
* the architecture: ``__KERNEL__`` (``-D__KERNEL__`` in the top Makefile), the compiler's
  predefined macros of the target (:data:`ARCH_PREDEFINES`; the few its headers define for every
  file, :data:`ARCH_HEADER_MACROS`, such as ``BITS_PER_LONG``; ``__GNUC__``/``__clang__`` from
  ``CONFIG_GCC_VERSION``/``CONFIG_CC_IS_CLANG``), the other architectures' predefined macros,
  ``__ASSEMBLY__`` and ``__CHECKER__`` not defined (:data:`KNOWN_UNDEFINED`);
* the object-like and function-like macros the file itself defines above the condition
  (``#define``/``#undef`` in branches that are compiled; one in a branch kept undecided makes the
  name unknown from there on), and the extra ones a context carries (``defines``: a tree's
  version macros, such as LTTng's ``LTTNG_KERNEL_VERSION``);
* integer expressions with the C operators, integer suffixes and character constants, in the
  preprocessor's 64-bit arithmetic (``intmax_t``/``uintmax_t``); ``defined X``/``defined(X)``;
  an identifier known not to be defined is 0, as in C.

What the pass cannot decide keeps every branch, and is counted: a condition on a macro whose value
it does not know (one defined in a header the file includes), an unknown function-like macro
(``__has_attribute(x)``), a macro that pastes or stringifies. ``&&``, ``||`` and ``?:`` are
decided from the side that is known where C would be (``0 && unknown`` is 0). Bad input — a
condition that does not parse, ``#else`` without ``#if``, an unterminated conditional, a macro that
recurses — is reported with its line, the conditional is kept whole, and the rest of the file is
decided as usual. The work is bounded: the scan is linear in the file, each condition's expansion
is capped at :data:`MAX_STEPS` tokens and :data:`MAX_DEPTH` nested macros, and a file's at
:data:`WORK_PER_BYTE` times its length.

The context and what it defines are :mod:`ksymgraph.loaders.ppcontext`; the expression language
(tokens, macro expansion, evaluation) is :mod:`ksymgraph.loaders.ppexpr`; this module re-exports
the public names of the first.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .ppcontext import (ARCH_HEADER_MACROS, ARCH_PREDEFINES, KNOWN_UNDEFINED, PreprocContext, command_line_defines,
                        context_for_build, env as _env, tree_version, version_code)
from .ppexpr import (EVALUATOR_NAMES, MAX_DEPTH, MAX_STEPS, UNDEF as _UNDEF, UNK, UNKNOWN as _UNKNOWN, BadInput as _BadInput,
                     Eval as _Eval, Expander as _Expander, Macro as _Macro, Undecidable as _Undecidable,
                     parse_define as _parse_define, tokens as _tokens)

__all__ = [
    "shared_header_macros",
    "macros_only_elsewhere",
    "PreprocContext",
    "PreprocResult",
    "ARCH_PREDEFINES",
    "ARCH_HEADER_MACROS",
    "KNOWN_UNDEFINED",
    "MAX_STEPS",
    "MAX_DEPTH",
    "WORK_PER_BYTE",
    "MAX_NOTES",
    "preprocess",
    "context_for_build",
    "version_code",
    "tree_version",
    "command_line_defines",
    "version_macros",
]

#: A file's conditions together may expand this many tokens per byte of the file (plus
#: :data:`MAX_STEPS`); past it the rest of the file's conditions are kept, with a note.
WORK_PER_BYTE = 16
#: Notes kept per file (the rest are counted in one more).
MAX_NOTES = 20


class PreprocResult(NamedTuple):
    """One file after :func:`preprocess`."""

    text: bytes
    """The file with its dead branches (and the directives of conditionals decided throughout)
    blanked: same length, same newlines."""
    decided: int
    """Conditions (``#if``, ``#ifdef``, ``#ifndef``, ``#elif``) evaluated to true or false."""
    kept: int
    """Conditions that could not be decided: every branch they choose between is kept."""
    lines_blanked: int
    """Lines of dead branches blanked."""
    notes: list[tuple[int, str]]
    """(line, message) for bad input and for conditions given up, at most :data:`MAX_NOTES` (and one
    saying how many more)."""


# --------------------------------------------------------------------------------------------
# The scan

_SCAN_RE = re.compile(rb"/\*|//|\"|'|\n[ \t]*#")
_LINE_COMMENT_RE = re.compile(rb"//(?:[^\\\n]|\\(?:\r?\n|.))*", re.S)
_STRING_RE = re.compile(rb"\"(?:[^\"\\\n]|\\(?:\r?\n|.))*\"?", re.S)
_CHAR_RE = re.compile(rb"'(?:[^'\\\n]|\\(?:\r?\n|.))*'?", re.S)
_DIRECTIVE_PART_RE = re.compile(rb"/\*|//|\\\r?\n|\n|\"|'")
_LEAD_RE = re.compile(rb"[ \t]*#")
_NAME_RE = re.compile(r"\s*([A-Za-z_]\w*)?(.*)", re.S)
_BLANK_TABLE = bytes(10 if i == 10 else 32 for i in range(256))


def _directive(src: bytes, at: int) -> tuple[int, str]:
    """(end, text) of the directive whose ``#`` line starts at ``at``: continuation lines and
    comments (which may span lines) belong to it; the text has comments as spaces and
    continuations removed."""
    n = len(src)
    parts = []
    pos = at
    while True:
        m = _DIRECTIVE_PART_RE.search(src, pos)
        if m is None:
            parts.append(src[pos:])
            return n, b"".join(parts).decode("latin-1")
        parts.append(src[pos : m.start()])
        tok = m.group()
        if tok == b"\n":
            return m.start(), b"".join(parts).decode("latin-1")
        if tok == b"/*":
            end = src.find(b"*/", m.end())
            pos = n if end < 0 else end + 2
            parts.append(b" ")
        elif tok == b"//":
            end = _LINE_COMMENT_RE.match(src, m.start()).end()
            parts.append(b" ")
            return end, b"".join(parts).decode("latin-1")
        elif tok in (b'"', b"'"):
            end = (_STRING_RE if tok == b'"' else _CHAR_RE).match(src, m.start()).end()
            parts.append(src[m.start() : end])
            pos = end
        else:  # backslash-newline
            pos = m.end()


def _directives(src: bytes) -> list[tuple[int, int, str]]:
    """(start of line, end, text) of every directive that is not inside a comment or a literal."""
    out = []
    n = len(src)
    first = _LEAD_RE.match(src, 0)
    pos = 0
    if first:
        end, text = _directive(src, first.end() - 1)
        out.append((0, end, text))
        pos = end
    while pos < n:
        m = _SCAN_RE.search(src, pos)
        if m is None:
            break
        tok = m.group()
        if tok == b"/*":
            end = src.find(b"*/", m.end())
            pos = n if end < 0 else end + 2
        elif tok == b"//":
            pos = _LINE_COMMENT_RE.match(src, m.start()).end()
        elif tok == b'"':
            pos = _STRING_RE.match(src, m.start()).end()
        elif tok == b"'":
            pos = _CHAR_RE.match(src, m.start()).end()
        else:
            start = m.start() + 1
            end, text = _directive(src, m.end() - 1)
            out.append((start, end, text))
            pos = end
    return out


class _Chain:
    """One ``#if`` ... ``#endif`` being read."""

    __slots__ = ("line", "outer_live", "outer_sure", "taken", "maybe", "decided", "live", "sure",
                 "branch_from", "lines", "dead", "seen_else", "broken")

    def __init__(self, line: int, outer_live: bool, outer_sure: bool):
        self.line = line
        self.outer_live = outer_live
        self.outer_sure = outer_sure
        self.taken = False  # a branch so far is known to be the one compiled
        self.maybe = False  # a branch so far was kept undecided
        self.decided = True  # every condition so far was decided
        self.live = False  # the current branch is kept
        self.sure = False  # ... and known to be compiled
        self.branch_from = 0
        self.lines: list[tuple[int, int]] = []  # the chain's directive lines
        self.dead: list[tuple[int, int]] = []  # its dead branches
        self.seen_else = False
        self.broken = False


class _File:
    """The state of one file's pass."""

    def __init__(self, src: bytes, ctx: PreprocContext):
        self.src = src
        self.env = _env(ctx)
        self.local: dict[str, object] = {}
        self.decided = 0
        self.kept = 0
        self.notes: list[tuple[int, str]] = []
        self.more_notes = 0
        self.budget = [WORK_PER_BYTE * len(src) + MAX_STEPS]
        self.exhausted = False  # the budget is spent: the rest of the conditions are kept

    def note(self, line: int, message: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append((line, message))
        else:
            self.more_notes += 1

    def lookup(self, name: str):
        m = self.local.get(name)
        if m is not None:
            return m
        return self.env.lookup(name)

    def condition(self, kind: str, rest: str, line: int):
        """The value of a condition: True, False, or None (kept)."""
        try:
            if kind in ("ifdef", "ifndef", "elifdef", "elifndef"):
                toks = _tokens(rest)
                if not toks or toks[0][0] != "id":  # (extra tokens after the name: ignored, as cpp does)
                    raise _BadInput(f"#{kind} needs a name")
                m = self.lookup(toks[0][1])
                if m is _UNKNOWN:
                    return None
                defined = m is not _UNDEF
                return defined if kind in ("ifdef", "elifdef") else not defined
            toks = _tokens(rest)  # (strings may be arguments of __has_include("x.h"): unknown, not bad)
            expanded = _Expander(self.lookup, self.budget).expand(toks)
            if any(k in ("id", "str", "bad") for k, _ in expanded):
                raise _BadInput("not an integer expression after expansion")
            value = _Eval(expanded).parse()
            return None if value is UNK else bool(value[0])
        except _BadInput as e:
            self.note(line, f"#{kind} {rest.strip()[:80]}: {e}; every branch kept")
            return None
        except _Undecidable:
            if self.budget[0] < 0 and not self.exhausted:
                self.exhausted = True
                self.note(line, f"the file's macro expansion budget ({WORK_PER_BYTE} tokens a byte) is spent: "
                                "this condition and the ones after it kept")
            return None
        except (RecursionError, ValueError, OverflowError) as e:
            self.note(line, f"#{kind} {rest.strip()[:80]}: cannot be evaluated ({e}); every branch kept")
            return None


def preprocess(src: bytes, ctx: PreprocContext) -> PreprocResult:
    """Decide ``src``'s conditionals under ``ctx`` and blank what is not compiled (see the module's
    docstring); never raises for bad input, which is in ``notes``."""
    return _preprocess(src, ctx)[0]


def _preprocess(src: bytes, ctx: PreprocContext) -> tuple[PreprocResult, _File]:
    f = _File(src, ctx)
    directives = _directives(src)
    line_at = _LineIndex(src)
    guard = _include_guard(directives)
    if guard is not None:
        f.local[guard] = _UNDEF
    stack: list[_Chain] = []
    live, sure = True, True  # the region being read is kept / known to be compiled
    blank: list[tuple[int, int]] = []
    for start, end, text in directives:
        m = _NAME_RE.match(text, text.index("#") + 1)
        kind, rest = m.group(1) or "", m.group(2)
        if kind in ("if", "ifdef", "ifndef"):
            c = _Chain(line_at(start), live, sure)
            c.lines.append((start, end))
            c.branch_from = end
            stack.append(c)
            if live:
                value = None if f.exhausted else f.condition(kind, rest, c.line)
                _enter(f, c, value)
            live, sure = c.live, c.sure
        elif kind in ("elif", "else", "elifdef", "elifndef"):
            if not stack:
                f.note(line_at(start), f"#{kind} without #if: ignored")
                continue
            c = stack[-1]
            if c.seen_else:
                f.note(line_at(start), f"#{kind} after #else (the #if at line {c.line}): every branch kept")
                c.broken = True
            c.lines.append((start, end))
            if c.outer_live and not c.live:
                c.dead.append((c.branch_from, start))
            c.branch_from = end
            if kind == "else":
                c.seen_else = True
            if not c.outer_live or c.taken:
                c.live = c.sure = False
            elif kind == "else":
                _enter(f, c, True, counted=False)
            else:
                value = None if f.exhausted else f.condition(kind, rest, line_at(start))
                _enter(f, c, value)
            live, sure = c.live, c.sure
        elif kind == "endif":
            if not stack:
                f.note(line_at(start), "#endif without #if: ignored")
                continue
            c = stack.pop()
            c.lines.append((start, end))
            if c.outer_live and not c.live:
                c.dead.append((c.branch_from, start))
            if c.outer_live and not c.broken:
                blank += c.dead
                if c.decided:
                    blank += c.lines
            live, sure = c.outer_live, c.outer_sure
        elif live and kind in ("define", "undef"):
            _define(f, kind, rest, sure)
    for c in stack:
        f.note(c.line, "#if without #endif: every branch kept")
    text = src
    lines_blanked = 0
    if blank:
        buf = bytearray(src)
        for a, b in blank:
            if b > a:
                chunk = src[a:b]
                lines_blanked += max(chunk.count(b"\n") - 1, 0)  # (it starts at the end of a directive line)
                buf[a:b] = chunk.translate(_BLANK_TABLE)
        text = bytes(buf)
    notes = f.notes
    if f.more_notes:
        notes = notes + [(notes[-1][0], f"and {f.more_notes} more preprocessor notes")]
    return PreprocResult(text, f.decided, f.kept, lines_blanked, notes), f


def _enter(f: _File, c: _Chain, value: bool | None, counted: bool = True) -> None:
    """Start a branch of ``c`` whose condition is ``value`` (the chain's region is kept, and no
    branch before is known to be taken)."""
    if counted:
        if value is None:
            f.kept += 1
        else:
            f.decided += 1
    if value is None:
        c.maybe = True
        c.decided = False
        c.live, c.sure = True, False
    elif value:
        c.live, c.sure = True, c.outer_sure and not c.maybe
        c.taken = True
    else:
        c.live = c.sure = False


def _define(f: _File, kind: str, rest: str, sure: bool) -> None:
    """A ``#define`` or ``#undef`` in a kept region; one not known to be compiled makes the name unknown."""
    m = re.match(r"\s*([A-Za-z_]\w*)", rest)
    if not m:
        return
    name = m.group(1)
    if not sure:
        f.local[name] = _UNKNOWN
    elif kind == "undef":
        f.local[name] = _UNDEF
    else:
        parsed = _parse_define(rest.strip())
        f.local[name] = _UNKNOWN if parsed is None else parsed[1]


def _include_guard(directives: list[tuple[int, int, str]]) -> str | None:
    """The name of the include guard when the file's first directive is ``#ifndef X``, its second
    ``#define X`` and its last ``#endif``: X is not defined when the file's text is first read."""
    if len(directives) < 3:
        return None
    first = re.match(r"\s*#\s*ifndef\s+([A-Za-z_]\w*)\s*$", directives[0][2])
    second = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)\b", directives[1][2])
    last = re.match(r"\s*#\s*endif\b", directives[-1][2])
    if first and second and last and first.group(1) == second.group(1):
        return first.group(1)
    return None


class _LineIndex:
    """Line numbers of offsets asked for in increasing order, counted incrementally."""

    def __init__(self, src: bytes):
        self.src = src
        self.pos = 0
        self.line = 1

    def __call__(self, offset: int) -> int:
        if offset < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.src.count(b"\n", self.pos, offset)
        self.pos = offset
        return self.line


# --------------------------------------------------------------------------------------------
# A tree's own defines: its version macros, read through the pass

_VERSION_NAMES = ("LINUX_VERSION_CODE", "KERNEL_VERSION")

_CONDITION_RE = re.compile(r"\s*#\s*(?:if|ifdef|ifndef|elif|elifdef|elifndef)\b(.*)", re.S)
_IDENT_RE = re.compile(r"[A-Za-z_]\w*")


def version_macros(headers, ctx: PreprocContext) -> tuple[tuple[str, str], ...]:
    """The version macros a tree's headers define, for the context of the files that include
    them: each header (``(name, bytes)`` pairs) decided under ``ctx``, and the macros it defines
    for certain kept when they are constant (their bodies use only numbers, operators, their
    parameters and other such macros) and reach ``LINUX_VERSION_CODE`` or ``KERNEL_VERSION``, or
    one of these (LTTng's ``LTTNG_KERNEL_VERSION(a, b, c)``, ``LTTNG_KERNEL_RANGE(...)``); a name
    two headers define differently is left out. As (``NAME`` or ``NAME(a, b)``, body) pairs for
    :attr:`PreprocContext.defines`."""
    found: dict[str, _Macro | None] = {}
    for _name, src in headers:
        if b"VERSION" not in src:
            continue
        _result, f = _preprocess(src, ctx)
        for name, m in f.local.items():
            if not isinstance(m, _Macro):
                continue
            old = found.get(name, m)
            same = old is m or (old is not None and (old.params, old.variadic, old.text) == (m.params, m.variadic, m.text))
            found[name] = m if same else None
    macros = {k: m for k, m in found.items() if m is not None}
    env = _env(ctx)

    def names(m: _Macro) -> set[str]:
        return {v for k, v in m.body if k == "id" and v not in (m.params or ()) and v != "defined"}

    # constant: the names used are constant macros of the tree, or macros the context defines
    constant = set(macros)
    changed = True
    while changed:
        changed = False
        for k in list(constant):
            m = macros[k]
            if any(t[0] in ("str", "bad") or t == ("op", "#") or t == ("op", "##") for t in m.body) or \
                    not all(n in constant or isinstance(env.lookup(n), _Macro) for n in names(m)):
                constant.discard(k)
                changed = True
    # ... and reaching the version
    version = set()
    changed = True
    while changed:
        changed = False
        for k in constant - version:
            if names(macros[k]) & (version | set(_VERSION_NAMES)):
                version.add(k)
                changed = True
    needed = set(version)
    todo = list(version)
    while todo:
        for n in names(macros[todo.pop()]):
            if n in constant and n not in needed:
                needed.add(n)
                todo.append(n)
    return tuple(_as_define(k, macros[k]) for k in sorted(needed))


def _as_define(name: str, m: _Macro) -> tuple[str, str]:
    """(``NAME`` or ``NAME(a, b)``, body) of a macro, as :attr:`PreprocContext.defines` holds it."""
    params = list(m.params or ())
    if m.variadic:
        params[-1] = "..." if params[-1] == "__VA_ARGS__" else params[-1] + "..."
    return (name if m.params is None else f"{name}({', '.join(params)})"), m.text


def shared_header_macros(headers, ctx: PreprocContext) -> tuple[tuple[str, str], ...]:
    """The macros the kernel's shared headers (``include/``, ``arch/<arch>/include/``: ``(name,
    bytes)`` pairs) define for certain under ``ctx``, for the context of every file of the build.

    A generic header decides on what the architecture's header defined before including it:
    6.1's include/asm-generic/bug.h defines ``BUG()`` (calling ``panic()``) only ``#ifndef
    HAVE_ARCH_BUG``, which arch/x86/include/asm/bug.h defines before its ``#include
    <asm-generic/bug.h>``; jiffies.h picks ``_msecs_to_jiffies()`` by ``HZ`` (``CONFIG_HZ``, from
    asm-generic/param.h) and ``MSEC_PER_SEC`` (vdso/time64.h). One file at a time cannot see that;
    this pass reads the shared headers first, each decided under ``ctx``, and keeps each macro that
    a header defines in a region compiled for certain and leaves defined at its end. Left out: a
    name two headers define differently, one a header ``#undef`` s at its end, a header's include
    guard (whether a header was included depends on the file), and the names the context already
    decides (``PAGE_SIZE``, the ``.config``, ``IS_ENABLED``), and a macro that pastes or stringifies
    (``__AC(X, Y)``: ``X##Y``, which conditions do not need). The risk taken is order: a macro counts as defined
    before the header defining it is included, as the kernel's arch-overrides-generic convention
    has it."""
    env = _env(ctx)
    found: dict[str, _Macro | None] = {}
    guards: set[str] = set()
    tested: set[str] = set()
    for _name, src in headers:
        if b"define" not in src:
            continue
        directives = _directives(src)
        for _start, _end, text in directives:
            m = _CONDITION_RE.match(text)
            if m:
                tested.update(_IDENT_RE.findall(m.group(1)))
        result, f = _preprocess(src, ctx)
        guard = _include_guard(directives)
        if guard is not None:
            guards.add(guard)
        for name, m in f.local.items():
            if m is _UNKNOWN:
                continue  # defined in a branch not decided: where it matters, a sure one decides
            if not isinstance(m, _Macro):
                found[name] = None  # #undef'd at the end of a header
                continue
            old = found.get(name, m)
            same = old is m or (old is not None and (old.params, old.variadic, old.text) == (m.params, m.variadic, m.text))
            found[name] = m if same else None
    macros = {k: m for k, m in found.items()
              if m is not None and k not in guards and k not in EVALUATOR_NAMES and env.lookup(k) is _UNKNOWN
              and not any(t == ("op", "#") or t == ("op", "##") for t in m.body)}
    # only what a condition tests, and the macros their bodies use (HZ → CONFIG_HZ): the context
    # goes to every index worker with each batch
    needed, todo = set(), [n for n in tested if n in macros]
    while todo:
        n = todo.pop()
        if n in needed:
            continue
        needed.add(n)
        todo.extend(v for k, v in macros[n].body if k == "id" and v in macros and v not in needed)
    return tuple(_as_define(k, macros[k]) for k in sorted(needed))


_DEFINED_RE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)", re.M)
_TESTED_RE = re.compile(rb"^[ \t]*#[ \t]*(?:if|ifdef|ifndef|elif)\b([^\n]*)", re.M)
_TESTED_NAME_RE = re.compile(rb"[A-Za-z_]\w*")
_DASH_D_RE = re.compile(rb"-D[ \t]*([A-Za-z_]\w*)")
#: Names a build defines in headers it generates, that other architectures define in source: the
#: ``.config``'s, and the system calls (x86's arch/x86/include/generated/uapi/asm/unistd_64.h,
#: made from syscall_64.tbl; asm-generic/unistd.h's for others).
_GENERATED_PREFIXES = (b"CONFIG_", b"__NR_", b"__NR3264_")


def macros_only_elsewhere(visible, elsewhere, makefiles) -> tuple[str, ...]:
    """The names the build's own files test in a conditional that only other architectures define:
    defined in a file of ``elsewhere`` (``(name, bytes)`` of the other architectures' ``arch/*/``
    and of the asm-generic headers this one does not use), and in no file of ``visible`` (the
    headers and C files the build sees) and by no ``-D`` of ``makefiles`` (its Makefiles and
    Kbuild files). Such a name is not defined in any compilation of this build (unless a file
    defines it itself, which the preprocessor sees): 6.1's include/linux/uaccess.h tests
    ``INLINE_COPY_FROM_USER``, which arm64's, s390's and asm-generic's uaccess.h define and
    x86's does not, so x86 calls the out-of-line ``_copy_from_user()`` of lib/usercopy.c.

    Names the compiler or a generated header may define are never among them: they are defined in
    no architecture's source either (``__GNUC__``, include/generated/'s ``NR_PAGEFLAGS``), but for
    those of :data:`_GENERATED_PREFIXES` (``__NR_open``, which x86 generates and others write), left
    out; a ``CONFIG_`` name is the ``.config``'s to decide."""
    defined: set[bytes] = set()
    tested: set[bytes] = set()
    for _rel, src in visible:
        defined.update(_DEFINED_RE.findall(src))
        for rest in _TESTED_RE.findall(src):
            tested.update(_TESTED_NAME_RE.findall(rest))
    for _rel, src in makefiles:
        defined.update(_DASH_D_RE.findall(src))
    wanted = tested - defined
    other: set[bytes] = set()
    for _rel, src in elsewhere:
        other.update(n for n in _DEFINED_RE.findall(src) if n in wanted)
    return tuple(sorted(n.decode("ascii") for n in other
                        if not n.startswith(_GENERATED_PREFIXES) and n not in (b"defined", b"__has_include")))
