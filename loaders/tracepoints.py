"""Tracepoints: the functions and references the kernel's trace-event macros make, as the preprocessor makes them.

A trace header (``include/trace/events/sched.h``, a driver's ``foo_trace.h``) is a list of
``TRACE_EVENT(...)``, ``DECLARE_EVENT_CLASS(...)``, ``DEFINE_EVENT(...)`` invocations ending in
``#include <trace/define_trace.h>``. What they compile to depends on who reads them (6.1):

* **Every file that includes it** gets, through ``include/linux/tracepoint.h``'s ``DEFINE_EVENT``
  → ``DECLARE_TRACE`` → ``__DECLARE_TRACE``, a ``static inline void trace_<event>(proto)`` that
  tests ``__tracepoint_<event>.key`` and calls ``static_call(tp_func_<event>)`` — with
  ``CONFIG_HAVE_STATIC_CALL_INLINE``, ``__ADDRESSABLE(__SCK__tp_func_<event>)`` and
  ``&__SCT__tp_func_<event>`` (include/linux/static_call_types.h): a module calling
  ``trace_foo()`` imports ``__tracepoint_foo``, ``__SCK__tp_func_foo`` and ``__SCT__tp_func_foo``.
  Those inlines are recorded as functions of the trace header, so the resolver finds a caller's
  ``trace_foo(...)`` there like any header inline.
* **The one file that** ``#define CREATE_TRACE_POINTS`` before including it re-reads the header
  through ``include/trace/define_trace.h``: once with ``DEFINE_TRACE`` (the ``__tracepoint_`` and
  ``__traceiter_`` definitions), then under each stage of ``include/trace/trace_events.h``
  (``stages/*.h``: ``trace_raw_output_<class>`` calling ``trace_raw_output_prep``,
  ``trace_event_printf`` and ``trace_handle_return``; ``trace_event_raw_event_<class>`` calling
  ``trace_event_buffer_reserve`` and ``trace_event_buffer_commit``; ``event_class_<class>``
  initialised with ``trace_event_raw_init`` and ``trace_event_reg``), of ``include/trace/perf.h``
  under ``CONFIG_PERF_EVENTS`` (``perf_trace_<class>``: ``perf_trace_buf_alloc``,
  ``perf_trace_run_bpf_submit``) and of ``include/trace/bpf_probe.h`` under ``CONFIG_BPF_EVENTS``
  (``__bpf_trace_<class>``: ``CONCATENATE(bpf_trace_run, COUNT_ARGS(args))``, ``bpf_trace_run<N>``
  for an event of N arguments). The functions each stage makes are recorded as functions of that
  ``.c`` file, and the names its file-scope initialisers name as references of its
  :data:`~ksymgraph.loaders.ctree.FILE_SCOPE` pseudo-function.

Nothing is listed: the stage headers are read in order as the compiler reads them
(``#define``/``#undef``, ``#include "stages/..."``, ``#include <trace/...>``, and each
``#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)`` as a re-read of the trace header), in the text the
build's preprocessor leaves (:data:`~ksymgraph.loaders.macros.Compiled`: ``CONFIG_PERF_EVENTS``
unset leaves perf.h empty), and each event invocation is expanded as C's preprocessor expands it
(:func:`expand`: arguments expanded first, ``#``, ``##``, GNU ``, ## args``, rescanning, a name
never expanded inside itself), with the macros of the headers (the macro pass's table) under
those of the walk. What the build's preprocessor leaves undecided (``#ifndef MODULE`` in a header,
``#if defined(CONFIG_TRACEPOINTS) && !defined(NOTRACE)``) is decided here as far as the walk knows
(``#ifdef``/``#ifndef`` of a name the walk defined or undefined), else the first branch is taken.
In the expansion, ``IS_ENABLED(CONFIG_X)`` (and ``IS_BUILTIN``/``IS_MODULE``/``IS_REACHABLE``) is
decided by the build's preprocessor, and a statement under ``if (0)`` / ``if (0 && ...)`` is
dropped, as the compiler drops it (``__DO_TRACE``'s ``if (rcuidle)`` of ``trace_foo``, whose
``rcuidle`` is 0; ``IS_ENABLED(CONFIG_LOCKDEP) && (cond)``).

What is assumed: the header re-read at ``#include TRACE_INCLUDE(...)`` is the header that
includes ``<trace/define_trace.h>`` (``TRACE_INCLUDE_FILE``/``TRACE_INCLUDE_PATH`` name the
header itself in every in-tree trace header); the trace headers a ``CREATE_TRACE_POINTS`` file
creates are those it includes after the ``#define``, directly or through its own quoted headers
(three deep), but no other header it included before the ``#define`` (read then, its include
guard set since; a trace header's ``#include <trace/define_trace.h>`` is outside its guard);
an event invocation starts a line.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Callable, Iterable, Iterator, NamedTuple

from .cfiles import MAX_FILE_BYTES, read_source, real_root
from .ctree import FILE_SCOPE
from .records import Call, FunctionDef, LoaderError, Reference, Skipped

__all__ = ["TRACEPOINT_H", "DEFINE_TRACE_H", "MAX_TOKENS", "MAX_INCLUDE_DEPTH", "Definition", "MacroState",
           "Made", "TraceHeader", "expand", "functions_of", "for_each_tracepoint_record"]

#: Where 6.1 defines the tracepoint macros every includer of a trace header sees.
TRACEPOINT_H = "include/linux/tracepoint.h"
#: The header a trace header includes last; with ``CREATE_TRACE_POINTS`` it re-reads the header
#: under the stages of ``include/trace/``.
DEFINE_TRACE_H = "include/trace/define_trace.h"
#: Tokens one event invocation may expand to in one stage (a class with a big ``TP_STRUCT__entry``
#: is a few thousand); past it that invocation is skipped and said.
MAX_TOKENS = 1 << 18
#: How many quoted headers deep a ``CREATE_TRACE_POINTS`` file's includes are followed.
MAX_INCLUDE_DEPTH = 3

_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|##|\.\.\.|->|&&|\|\||<<=?|>>=?|[-+*/%&|^!=<>]=|\+\+|--'
                    r'|[A-Za-z_]\w*|\d[\w.]*|\S')
_IDENT = re.compile(r"[A-Za-z_]\w*")
#: Comments (replaced by spaces, newlines kept) and strings (kept: a ``"//"`` is no comment).
_COMMENT_OR_STRING = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_DIRECTIVE = re.compile(r"[ \t]*#[ \t]*(\w+)[ \t]*(.*)", re.S)
_DEFINE = re.compile(r"([A-Za-z_]\w*)(\(([^)]*)\))?(.*)", re.S)
_INCLUDE = re.compile(r'[<"]([^>"]+)[>"]')
_QUOTED = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*("[^"\n]+")', re.M)
_INVOCATION = re.compile(r"([A-Za-z_]\w*)[ \t]*\(")
_CREATE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+CREATE_TRACE_POINTS\b", re.M)
_DEFINES_TRACE = re.compile(rb"^[ \t]*#[ \t]*include[ \t]*<trace/define_trace\.h>", re.M)
_KCONFIG_TESTS = frozenset(["IS_ENABLED", "IS_BUILTIN", "IS_MODULE", "IS_REACHABLE"])
#: C's words and the kernel's attributes: never a callee or a referenced symbol.
_NOT_NAMES = frozenset(
    "if while for switch return sizeof typeof __typeof__ __builtin_constant_p __builtin_expect defined do "
    "__attribute__ __same_type _Generic __is_constexpr auto break case char const continue default double else "
    "enum extern float goto inline int long register restrict short signed static struct typedef union unsigned "
    "void volatile asm __asm__ __volatile__ __inline__ __inline _Bool bool true false __always_inline __init "
    "__exit __used __maybe_unused __user __iomem __percpu __rcu __force __must_check __cold __noreturn "
    "__section __aligned __aligned__ __weak notrace __refdata __builtin_offsetof offsetof __alignof__ "
    "__builtin_choose_expr __builtin_types_compatible_p NULL".split())


class Definition(NamedTuple):
    """One macro as the walk knows it."""

    params: tuple[str, ...] | None
    """Its parameters (``...`` as ``__VA_ARGS__``, ``args...`` as ``args``); None for an object-like macro."""
    variadic: bool
    """The last parameter takes the rest of the arguments."""
    body: tuple[str, ...]
    """Its body's tokens."""


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _params(spec: str) -> tuple[tuple[str, ...], bool]:
    params = [p.strip() for p in spec.split(",")] if spec.strip() else []
    variadic = bool(params) and params[-1].endswith("...")
    if variadic:
        params[-1] = params[-1][:-3].strip() or "__VA_ARGS__"
    return tuple(params), variadic


class MacroState:
    """The macros in effect at one point of a walk: what the walk itself defined (or undefined)
    over ``base``, the headers' function-like macros (``name → (params, variadic, body)``)."""

    def __init__(self, base: dict, overlay: dict[str, Definition | None] | None = None, cache: dict | None = None,
                 objects: dict | None = None):
        self.base = base
        self.objects = objects or {}
        self.overlay: dict[str, Definition | None] = dict(overlay or {})
        self._cache = {} if cache is None else cache

    def copy(self) -> "MacroState":
        return MacroState(self.base, self.overlay, self._cache, self.objects)

    def get(self, name: str) -> Definition | None:
        if name in self.overlay:
            return self.overlay[name]
        d = self._cache.get(name)
        if d is None and (name in self.base or name in self.objects):
            function_like = name in self.base
            m = self.base[name] if function_like else self.objects[name]
            params = tuple(p.decode("ascii", "replace") if isinstance(p, bytes) else p for p in m.params)
            body = m.body.decode("ascii", "replace") if isinstance(m.body, bytes) else m.body
            d = self._cache[name] = Definition(params if function_like else None, m.variadic, tuple(_tokens(body)))
        return d

    def defined_here(self, name: str) -> bool | None:
        """Whether the walk defined ``name`` (True) or undefined it (False); None if it did neither."""
        if name not in self.overlay:
            return None
        return self.overlay[name] is not None

    def define(self, text: str) -> None:
        m = _DEFINE.match(text.strip())
        if m is None:
            return
        if m.group(2) is not None and text.strip()[len(m.group(1))] == "(":
            params, variadic = _params(m.group(3))
            self.overlay[m.group(1)] = Definition(params, variadic, tuple(_tokens(m.group(4))))
        else:
            rest = text.strip()[len(m.group(1)):]
            self.overlay[m.group(1)] = Definition(None, False, tuple(_tokens(rest)))

    def undef(self, name: str) -> None:
        self.overlay[name] = None


class _Budget(Exception):
    pass


#: A token of an expansion: its text and the names it must not be expanded by again (its hide set).
Token = tuple


def _collect(stack: list) -> tuple[list[list[Token]], bool]:
    """Pop a parenthesised argument list off ``stack`` (its ``(`` on top): the arguments, and
    whether the list was closed."""
    stack.pop()
    args: list[list[Token]] = [[]]
    depth = 1
    while stack:
        tok = stack.pop()
        t = tok[0]
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth == 0:
                return args, True
        elif t == "," and depth == 1:
            args.append([])
            continue
        args[-1].append(tok)
    return args, False


def _substitute(d: Definition, args: list[list[Token]], hs: frozenset, state: MacroState,
                decide: Callable | None, budget: list[int]) -> list[Token]:
    argmap: dict[str, list[Token]] = {}
    params = d.params or ()
    for i, p in enumerate(params):
        if d.variadic and i == len(params) - 1:
            rest: list[Token] = []
            for j, a in enumerate(args[i:]):
                if j:
                    rest.append((",", frozenset()))
                rest.extend(a)
            argmap[p] = rest
        else:
            argmap[p] = args[i] if i < len(args) else []
    expanded: dict[str, list[Token]] = {}
    raw: dict[str, list[Token]] = {}

    def painted(toks: list[Token]) -> list[Token]:
        """``toks`` with ``hs`` added to each one's hide set (as C's rescan sees the result)."""
        return [(x, h if h is hs else hs if h <= hs else h | hs) for x, h in toks]

    def raw_arg(name: str) -> list[Token]:
        if name not in raw:
            raw[name] = painted(argmap[name])
        return raw[name]

    body = d.body
    out: list[Token] = []
    i = 0
    while i < len(body):
        t = body[i]
        if t == "#" and i + 1 < len(body) and body[i + 1] in argmap:
            out.append(('"' + " ".join(a[0] for a in argmap[body[i + 1]]).replace('"', "'") + '"', hs))
            i += 2
            continue
        if t == "##" and i + 1 < len(body):
            nxt = body[i + 1]
            right = raw_arg(nxt) if nxt in argmap else [(nxt, hs)]
            if out and out[-1][0] == "," and d.variadic and nxt == params[-1]:
                # GNU: ``, ## args`` drops the comma when there are no arguments, else is the comma
                # and the arguments unexpanded (kernel.h's COUNT_ARGS: ``__COUNT_ARGS(, ##X, 12, ...)``)
                if not right:
                    out.pop()
                out.extend(right)
            elif out and right:
                left = out.pop()
                out.append((left[0] + right[0][0], hs))
                out.extend(right[1:])
            else:
                out.extend(right)
            i += 2
            continue
        if t in argmap:
            if i + 1 < len(body) and body[i + 1] == "##":
                out.extend(raw_arg(t))
            else:
                if t not in expanded:
                    expanded[t] = painted(_expand(argmap[t], state, decide, budget))
                out.extend(expanded[t])
        else:
            out.append((t, hs))
        i += 1
    return out


def _expand(tokens: list[Token], state: MacroState, decide: Callable | None, budget: list[int]) -> list[Token]:
    out: list[Token] = []
    stack = tokens[::-1]
    while stack:
        tok = stack.pop()
        t, hs = tok
        if decide is not None and t in _KCONFIG_TESTS and len(stack) >= 3 and stack[-1][0] == "(" \
                and stack[-3][0] == ")" and stack[-2][0].startswith("CONFIG_"):
            value = decide(t, stack[-2][0])
            if value is not None:
                del stack[-3:]
                out.append(("1" if value else "0", hs))
                continue
        d = state.get(t)  # (only an identifier names a macro)
        if d is None or t in hs:
            out.append(tok)
            continue
        if d.params is None:
            body = _substitute(d, [], hs | {t}, state, decide, budget)
        else:
            if not stack or stack[-1][0] != "(":
                out.append(tok)
                continue
            args, closed = _collect(stack)
            if not closed:
                out.append(tok)
                break
            body = _substitute(d, args, hs | {t}, state, decide, budget)
        budget[0] -= len(body) + 1
        if budget[0] < 0:
            raise _Budget()
        stack.extend(reversed(body))
    return out


def expand(text: str, state: MacroState, decide: Callable[[str, str], bool | None] | None = None,
           limit: int = MAX_TOKENS) -> list[str] | None:
    """``text`` macro-expanded under ``state`` as C's preprocessor expands it, as tokens; None
    when the expansion passes ``limit`` tokens. ``decide(test, option)`` decides
    ``IS_ENABLED(CONFIG_X)`` and its kin (None: not known)."""
    try:
        return [t for t, _h in _expand([(t, frozenset()) for t in _tokens(text)], state, decide, [limit])]
    except _Budget:
        return None


# --------------------------------------------------------------------------------------------
# What expanded code defines, calls and refers to


def _matching(toks: list[str], i: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] == open_:
            depth += 1
        elif toks[j] == close:
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


def _statement_end(toks: list[str], i: int) -> int:
    """The index past the statement that starts at ``toks[i]``."""
    if i < len(toks) and toks[i] == "{":
        return _matching(toks, i, "{", "}") + 1
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] in "({[":
            depth += 1
        elif toks[j] in ")}]":
            depth -= 1
        elif toks[j] == ";" and depth == 0:
            return j + 1
    return len(toks)


def _dead_ifs_dropped(toks: list[str]) -> list[str]:
    """``toks`` without the statements under ``if (0)`` or ``if (0 && ...)`` (an ``else`` kept)."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i] == "if" and i + 2 < len(toks) and toks[i + 1] == "(" and toks[i + 2] == "0" \
                and i + 3 < len(toks) and toks[i + 3] in (")", "&&"):
            close = _matching(toks, i + 1, "(", ")")
            end = _statement_end(toks, close + 1)
            if end < len(toks) and toks[end] == "else":
                end += 1
            i = end
            continue
        out.append(toks[i])
        i += 1
    return out


def _declared(toks: list[str]) -> set[str]:
    """The names ``toks`` declares (a parameter's, a local's): a name after a type word or ``*``,
    before ``;``, ``=``, ``,``, ``)`` or ``[``."""
    names = set()
    for i in range(1, len(toks) - 1):
        t = toks[i]
        if not _IDENT.fullmatch(t) or t in _NOT_NAMES or toks[i + 1] not in (";", "=", ",", ")", "["):
            continue
        before = toks[i - 1]
        if before == "*" or (_IDENT.fullmatch(before) and before not in ("return", "case", "else", "goto")):
            names.add(t)
    return names


def _names(toks: list[str], skip: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The callees and the (name, kind) references of ``toks``, first occurrence each."""
    calls: dict[str, None] = {}
    refs: dict[str, str] = {}
    for i, t in enumerate(toks):
        if not _IDENT.fullmatch(t) or t in _NOT_NAMES or t in skip or not re.search("[a-z]", t):
            continue
        before = toks[i - 1] if i else ""
        if before in (".", "->", "struct", "union", "enum", "#"):
            continue
        if i + 1 < len(toks) and toks[i + 1] == "(":
            calls.setdefault(t, None)
        elif t not in calls:
            refs.setdefault(t, "address" if before == "&" else "read")
    return list(calls), [(n, k) for n, k in refs.items() if n not in calls]


class Made(NamedTuple):
    """A function an expansion defines."""

    name: str
    """Its name (``trace_event_raw_event_sched_switch``)."""
    static: bool
    """Declared ``static``."""
    inline: bool
    """Declared ``inline``."""
    calls: list[str]
    """What its body calls."""
    refs: list[tuple[str, str]]
    """What its body refers to otherwise, with the kind (``read``, ``address``)."""


def functions_of(toks: list[str]) -> tuple[list[Made], list[str]]:
    """The functions the expanded tokens ``toks`` define (a name, a parameter list and a body at
    file scope), and the names the file-scope initialisers (after ``=``) refer to."""
    toks = _dead_ifs_dropped(toks)
    made: list[Made] = []
    initialised: dict[str, None] = {}
    start = 0  # the first token of the current file-scope declaration
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "{" and i and toks[i - 1] == ")":
            close = i - 1
            depth, j = 0, close
            while j >= start:
                if toks[j] == ")":
                    depth += 1
                elif toks[j] == "(":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            name = toks[j - 1] if j > start else ""
            end = _matching(toks, i, "{", "}")
            if _IDENT.fullmatch(name) and name not in _NOT_NAMES:
                head = toks[start : j - 1]
                body = toks[i + 1 : end]
                skip = _declared(toks[j : close + 1] + [")"]) | _declared(body) | {name}
                calls, refs = _names(body, skip)
                made.append(Made(name, "static" in head, "inline" in head or "__always_inline" in head, calls, refs))
            i = end + 1
            start = i
            continue
        if t in ("(", "[") or (t == "{" and not (i and toks[i - 1] == ")")):
            # an initialiser's braces or a declarator's parentheses: skip them whole
            end = _matching(toks, i, t, {"(": ")", "[": "]", "{": "}"}[t])
            if "=" in toks[start:i]:
                for n, _k in _names(toks[i : end + 1], set())[1]:
                    initialised.setdefault(n, None)
                for n in _names(toks[i : end + 1], set())[0]:
                    initialised.setdefault(n, None)
            i = end + 1
            continue
        if t == ";":
            decl = toks[start:i]
            if "=" in decl:
                at = decl.index("=")
                for n, _k in _names(decl[at + 1 :], set())[1]:
                    initialised.setdefault(n, None)
            start = i + 1
        i += 1
    return made, list(initialised)


# --------------------------------------------------------------------------------------------
# The walk: headers read in order, as the compiler reads them


class _Walker:
    """Reads files as the macro pass reads them (under the build), in order, keeping a
    :class:`MacroState`; calls back at event invocations and at ``TRACE_INCLUDE`` re-reads."""

    def __init__(self, root: str, compiled, skipped: list[Skipped] | None):
        self.root, self.compiled, self.skipped = root, compiled, skipped
        self.texts: dict[str, list[tuple[int, str]] | None] = {}

    def lines(self, rel: str) -> list[tuple[int, str]] | None:
        """The logical lines of ``rel`` (continuations joined, comments blanked), with their line."""
        if rel in self.texts:
            return self.texts[rel]
        try:
            data = read_source(self.root, rel, MAX_FILE_BYTES)[0]
        except LoaderError as e:
            if self.skipped is not None:
                self.skipped.append(Skipped(rel, e.reason))
            self.texts[rel] = None
            return None
        if self.compiled is not None:
            data = self.compiled(rel, data)
        text = data.decode("utf-8", "replace")
        # A comment is one space (C's phase 3, after line splicing): one that spans lines inside a
        # #define continues it (tracepoint.h's __DO_TRACE has such comments); its newlines are
        # kept as spliced ones, so the lines keep their numbers.
        text = _COMMENT_OR_STRING.sub(lambda m: m.group() if m.group()[0] in "\"'" else
                                      re.sub(r"[^\n]", " ", m.group()).replace("\n", "\\\n"), text)
        out: list[tuple[int, str]] = []
        raw = text.split("\n")
        n = 0
        while n < len(raw):
            line, first = raw[n], n + 1
            while line.rstrip().endswith("\\") and n + 1 < len(raw):
                n += 1
                line = line.rstrip()[:-1] + " " + raw[n]
            out.append((first, line))
            n += 1
        self.texts[rel] = out
        return out

    def walk(self, rel: str, state: MacroState, on_line: Callable, on_include: Callable) -> None:
        """Read ``rel`` under ``state`` (changed as its ``#define``/``#undef`` say): each
        non-directive line to ``on_line(rel, index, lines)`` (which returns the index to go on
        from), each ``#include`` to ``on_include(rel, spec, line, state)``."""
        lines = self.lines(rel)
        if lines is None:
            return
        # the conditional stack: (live, a branch was taken) per level
        conds: list[tuple[bool, bool]] = []
        i = 0
        while i < len(lines):
            line_no, text = lines[i]
            live = all(c[0] for c in conds)
            m = _DIRECTIVE.match(text)
            if m is None:
                i = on_line(rel, i, lines) if live and text.strip() else i + 1
                continue
            word, rest = m.group(1), m.group(2).strip()
            if word in ("if", "ifdef", "ifndef"):
                value = True
                if word != "if":
                    known = state.defined_here(rest.split()[0]) if rest else None
                    if known is not None:
                        value = known if word == "ifdef" else not known
                conds.append((value, value))
            elif word in ("elif", "else") and conds:
                _live, taken = conds[-1]
                conds[-1] = (not taken, True)
            elif word == "endif" and conds:
                conds.pop()
            elif not live:
                pass
            elif word == "define":
                state.define(rest)
            elif word == "undef":
                state.undef(rest.split()[0] if rest else "")
            elif word == "include":
                on_include(rel, rest, line_no, state)
            i += 1


def _invocation(lines: list[tuple[int, str]], i: int, state: MacroState) -> tuple[str, int] | None:
    """The macro invocation that starts line ``i`` (a function-like macro of ``state``'s walk,
    at the line's start), as text, and the index of the line after it; None if there is none."""
    text = lines[i][1]
    m = _INVOCATION.match(text)
    if m is None or state.defined_here(m.group(1)) is not True:
        return None
    d = state.get(m.group(1))
    if d is None or d.params is None:
        return None
    parts, depth, j = [], 0, i
    while j < len(lines):
        part = lines[j][1]
        if j > i and _DIRECTIVE.match(part):
            return None
        parts.append(part)
        for t in _tokens(part):
            if t == "(":
                depth += 1
            elif t == ")":
                depth -= 1
        j += 1
        if depth <= 0:
            return "\n".join(parts), j
    return None


class TraceHeader(NamedTuple):
    """What one trace header defines for every file that includes it."""

    state: MacroState
    """The macros after reading it (its own helpers included), to re-read it with."""
    made: list[tuple[int, Made]]
    """The functions its invocations make (``trace_<event>``...), with the invocation's line."""
    creates: bool
    """It includes ``<trace/define_trace.h>`` in a live branch: a ``CREATE_TRACE_POINTS`` file re-reads it."""


def for_each_tracepoint_record(root: str | os.PathLike, headers: Iterable[str], c_files: Iterable[str],
                               table: dict, compiled=None, skipped: list[Skipped] | None = None,
                               objects: dict | None = None) -> Iterator[tuple[FunctionDef | None, list[Call], list[Reference]]]:
    """The functions the trace headers among ``headers`` make for their includers (records of the
    header), and those each ``CREATE_TRACE_POINTS`` file of ``c_files`` makes by re-reading them
    through define_trace.h (records of the ``.c`` file; the file-scope initialisers' names as
    ``initialiser`` references of its :data:`FILE_SCOPE`, with no definition: the graph makes one).
    ``table`` is the headers' function-like macros by name (:class:`~ksymgraph.loaders.macros.Macro`);
    ``objects`` the object-like ones (``STATIC_CALL_KEY_PREFIX``), by name, as
    :class:`~ksymgraph.loaders.macros.Macro` with no parameters. ``compiled`` makes a file's text
    what the build compiles. Nothing is made in a tree without
    ``include/linux/tracepoint.h`` (an out-of-tree module's)."""
    root_s = real_root(root)
    headers = list(headers)
    if TRACEPOINT_H not in headers and not os.path.isfile(os.path.join(root_s, TRACEPOINT_H)):
        return
    walker = _Walker(root_s, compiled, skipped)
    decide = _kconfig_decider(compiled)
    nothing = lambda rel, i, lines: i + 1  # noqa: E731
    ignore = lambda rel, spec, line, state: None  # noqa: E731
    base = MacroState(table, objects=objects)
    walker.walk(TRACEPOINT_H, base, nothing, ignore)
    known = set(headers)
    trace_headers: dict[str, TraceHeader | None] = {}

    def text_of(rel: str) -> bytes:
        try:
            return read_source(root_s, rel, MAX_FILE_BYTES)[0]
        except LoaderError:
            return b""

    is_trace: dict[str, bool] = {}

    def is_trace_header(rel: str) -> bool:
        if rel not in is_trace:
            is_trace[rel] = _DEFINES_TRACE.search(text_of(rel)) is not None
        return is_trace[rel]

    def expanded(text: str, state: MacroState, where: str) -> list[str] | None:
        toks = expand(text, state, decide)
        if toks is None and skipped is not None:
            skipped.append(Skipped(where, f"trace event expands to more than {MAX_TOKENS} tokens: not recorded"))
        return toks

    def first_read(rel: str, state: MacroState | None = None) -> TraceHeader | None:
        """Read ``rel`` as its includers see it: under ``state`` (its includer's, which a wrapper
        such as brcms_trace_events.h changes before it includes its trace headers), else under
        tracepoint.h's. A quoted include of another trace header reads that one in turn, there."""
        if rel in trace_headers:
            return trace_headers[rel]
        trace_headers[rel] = None  # (a header that includes itself)
        state = base.copy() if state is None else state
        made: list[tuple[int, Made]] = []
        creates = [False]

        def on_line(r, i, lines):
            inv = _invocation(lines, i, state)
            if inv is None:
                return i + 1
            toks = expanded(inv[0], state, f"{r}:{lines[i][0]}")
            if toks is not None:
                made.extend((lines[i][0], f) for f in functions_of(toks)[0])
            return inv[1]

        def on_include(r, spec, line, st):
            if "trace/define_trace.h" in spec:
                creates[0] = True  # (live: the walk calls back for live lines only)
            elif spec.startswith('"'):
                for cand in _candidates(r, spec):
                    if cand in known and is_trace_header(cand):
                        first_read(cand, st)
                        break

        walker.walk(rel, state, on_line, on_include)
        trace_headers[rel] = TraceHeader(state.copy(), made, creates[0])
        return trace_headers[rel]

    # The headers that include trace headers first (a wrapper's overrides hold for those), then
    # the trace headers not read through one.
    trace = [rel for rel in headers if is_trace_header(rel)]
    traced = set(trace)
    wrappers = [rel for rel in headers if rel not in traced
                and any(cand in traced for m in _QUOTED.finditer(text_of(rel))
                        for cand in _candidates(rel, m.group(1).decode("utf-8", "replace")))]
    for rel in wrappers:
        first_read(rel)
    for rel in trace:
        th = first_read(rel)
    for rel in [*wrappers, *trace]:
        th = trace_headers.get(rel)
        for line, f in th.made if th else ():
            yield _records(f, rel, line)

    for rel in c_files:
        lines = walker.lines(rel) if _creates(root_s, rel) else None
        if not lines:
            continue
        created = _created_headers(walker, rel, lines, known, is_trace_header)
        scope: dict[str, None] = {}
        for header, line in created:
            th = first_read(header) if is_trace_header(header) else None
            if th is None or not th.creates:
                continue  # (define_trace.h included under a dead #if: brcmsmac without CONFIG_BRCM_TRACING)
            for f, names in _stages(walker, header, th.state, expanded, f"{rel}:{line}"):
                if f is not None:
                    yield _records(f, rel, line)
                for n in names:
                    scope.setdefault(n, None)
            if scope:
                yield None, [], [Reference(FILE_SCOPE, n, rel, line, "initialiser", f"{header} → define_trace.h")
                                 for n in scope]
                scope = {}


def _records(f: Made, rel: str, line: int) -> tuple[FunctionDef, list[Call], list[Reference]]:
    return (FunctionDef(f.name, rel, line, line, f.static, f.inline),
            [Call(f.name, c, rel, line, False) for c in f.calls],
            [Reference(f.name, n, rel, line, k) for n, k in f.refs])


def _creates(root: str, rel: str) -> bool:
    try:
        return _CREATE.search(read_source(root, rel, MAX_FILE_BYTES)[0]) is not None
    except LoaderError:
        return False


def _candidates(rel: str, spec: str) -> list[str]:
    m = _INCLUDE.search(spec)
    if m is None:
        return []
    name = m.group(1)
    quoted = spec.lstrip().startswith('"')
    out = [posixpath.normpath(posixpath.join(posixpath.dirname(rel), name))] if quoted else []
    return out + [posixpath.join("include", name)]


def _created_headers(walker: _Walker, rel: str, lines, known: set[str], is_trace: Callable[[str], bool]
                     ) -> list[tuple[str, int]]:
    """The headers ``rel`` includes after its ``#define CREATE_TRACE_POINTS`` (directly, or
    through its own quoted headers), with the line of the include in ``rel``."""
    out: dict[str, int] = {}
    # (a header the file included before the #define was read then, its include guard set since:
    # nvme's core.c includes "nvme.h" before, and trace.h includes it again; but a trace header's
    # define_trace.h include is outside its guard, so one included before, as l2tp_core.c includes
    # "trace.h", is created all the same)
    before: set[str] = set()

    def follow(r: str, lns, line_of: int | None, depth: int, after_define: bool) -> None:
        seen_define = after_define
        for line_no, text in lns:
            m = _DIRECTIVE.match(text)
            if m is None:
                continue
            word, rest = m.group(1), m.group(2).strip()
            if word == "define" and rest.split()[:1] == ["CREATE_TRACE_POINTS"]:
                seen_define = True
            elif word == "include" and not seen_define:
                before.update(_candidates(r, rest))
            elif word == "include" and seen_define:
                for cand in _candidates(r, rest):
                    if cand in known and cand not in out and (cand not in before or is_trace(cand)):
                        out[cand] = line_of if line_of is not None else line_no
                        if depth < MAX_INCLUDE_DEPTH and rest.startswith('"') and cand.endswith(".h"):
                            sub = walker.lines(cand)
                            if sub:
                                follow(cand, sub, out[cand], depth + 1, True)
                        break

    follow(rel, lines, None, 0, False)
    return list(out.items())


def _stages(walker: _Walker, header: str, state0: MacroState, expanded, where: str
            ) -> Iterator[tuple[Made | None, list[str]]]:
    """The functions and file-scope initialisers' names define_trace.h's re-reads of ``header``
    make, stage by stage."""
    state = state0.copy()
    state.define("CREATE_TRACE_POINTS")
    out: list[tuple[Made | None, list[str]]] = []

    def reread(rel, spec, line, st):
        if "TRACE_INCLUDE" in spec:
            def on_line(r, i, lines):
                inv = _invocation(lines, i, st)
                if inv is None:
                    return i + 1
                toks = expanded(inv[0], st, where)
                if toks is not None:
                    made, names = functions_of(toks)
                    out.extend((f, []) for f in made)
                    out.append((None, names))
                return inv[1]

            walker.walk(header, st, on_line, lambda *a: None)
            return
        for cand in _candidates(rel, spec):
            if cand.startswith("include/trace/") and not cand.startswith("include/trace/events/") \
                    and cand not in active and walker.lines(cand) is not None:
                active.add(cand)  # (a stage header that includes itself is read once)
                walker.walk(cand, st, lambda r, i, lines: i + 1, reread)
                active.discard(cand)
                return

    active = {DEFINE_TRACE_H}
    walker.walk(DEFINE_TRACE_H, state, lambda r, i, lines: i + 1, reread)
    yield from out


def _kconfig_decider(compiled) -> Callable[[str, str], bool | None] | None:
    """``IS_ENABLED(CONFIG_X)`` and its kin decided by the build's preprocessor (``compiled``)."""
    if compiled is None:
        return None
    memo: dict[tuple[str, str], bool | None] = {}

    def decide(test: str, option: str) -> bool | None:
        key = (test, option)
        if key not in memo:
            probe = f"#if {test}({option})\nyes\n#else\nno\n#endif\n".encode()
            text = compiled("include/linux/__ksymgraph_tracepoints__.h", probe)
            yes, no = b"yes" in text, b"no" in text
            memo[key] = yes if yes != no else None
        return memo[key]

    return decide
