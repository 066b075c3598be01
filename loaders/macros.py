"""Macros in headers: the source API that hides an export's ELF name, and the names macros make.

Between kernels an export often vanishes behind an unchanged API: 6.10's memory allocation
profiling, 7bd230a26648 ("mm/slab: enable slab allocation tagging for kmalloc and friends"),
turned ``kmalloc()`` into ``#define kmalloc(...) alloc_hooks(kmalloc_noprof(__VA_ARGS__))``, so
modules rebuilt against 6.10+ headers import ``__kmalloc_noprof`` where they imported
``__kmalloc``. tree-sitter does not expand macros, so this module reads every function-like
``#define NAME(params) body`` of the headers, and every object-like one whose name starts with a
lower-case letter (``#define current get_current()``), and records it as a function definition
(``static`` and ``inline``, like a header inline) with one call per identifier followed by ``(``
in its body, and per lower-case name passed as an argument to another macro (a function handed on
to be called, as ``module_usb_driver`` hands ``usb_register`` to ``module_driver``), and one
reference (:class:`~ksymgraph.loaders.records.Reference`) per other name in its body that may name
a symbol (``paravirt_type(op)`` names ``pv_ops``).

File-scope invocations of ``.c`` files (``module_param(debug, int, 0644);``) are calls from the
file's pseudo-function :data:`FILE_SCOPE`; each is also expanded with the headers' function-like
macros (:func:`expand_pasted`), because token pasting makes names no body spells:
``module_param_named``'s ``&param_ops_##type`` is ``&param_ops_int`` there, an import of the module.

Trace events are the preprocessor's work too, one it does several times over the same header
(:mod:`ksymgraph.loaders.tracepoints`): the pass reads include/linux/tracepoint.h and
include/trace/'s stage headers in order, as the compiler does, and adds (a) per trace header the
``static inline`` functions its events make for every includer (``trace_<event>``, whose body
refers to ``__tracepoint_<event>``, ``__SCK__tp_func_<event>`` and ``__SCT__tp_func_<event>``), as
functions of that header, which a caller's ``trace_<event>(...)`` resolves to like any header
inline; (b) per ``.c`` file that ``#define CREATE_TRACE_POINTS`` the functions define_trace.h's
stages make of each trace header it then includes (``trace_event_raw_event_<class>``,
``perf_trace_<class>``, ``__bpf_trace_<class>``, ``trace_raw_output_<class>``...), as functions of
that ``.c`` file, and what their file-scope initialisers name (``event_class_<class>``'s
``trace_event_raw_init``, ``trace_event_reg``) as references of its :data:`FILE_SCOPE`. They are
rows of the same three tables, so nothing in the graph code knows of them.

Records use the C loader's types (:class:`~ksymgraph.loaders.records.FunctionDef`,
:class:`~ksymgraph.loaders.records.Call`, :class:`~ksymgraph.loaders.records.Reference`) and are
written next to its shards (:mod:`ksymgraph.loaders.cindex`) as ``macros/*.parquet`` tables, which
the graph reads like the others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from .cfiles import MAX_FILE_BYTES, read_source, real_root, tree_files
from .cparse import MAX_PARSE_BYTES
from .ctree import FILE_SCOPE
from .parquet import TableWriter
from .records import Call, FunctionDef, LoaderError, Reference, Skipped
from .tracepoints import for_each_tracepoint_record

__all__ = ["Macro", "for_each_macro", "for_each_macro_record", "for_each_file_scope_call", "expand_pasted",
           "index_macros", "FILE_SCOPE", "MAX_CALLS", "MAX_EXPANSION_DEPTH", "MAX_EXPANSION_TOKENS"]

#: Any ``#define``: group 1 the name, group 2 the parameters of a function-like macro (a ``(``
#: right after the name), group 3 the rest of the line.
_DEFINE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?:\(([^)\n]*)\))?(.*)$", re.M)
#: An object-like macro worth a function of its own: a name starting (after underscores) with a
#: lower-case letter (``#define current get_current()``); ``#define FOO 0x10`` constants, which the
#: kernel spells in capitals and has by the hundred thousand, are not.
_OBJECT_NAME = re.compile(rb"_*[a-z]")
_CALL = re.compile(rb"\b([A-Za-z_]\w*)[ \t]*\(")
#: A function name handed to another macro as an argument (``module_driver(__usb_driver,
#: usb_register, usb_deregister)`` calls ``usb_register`` through its ``__register`` parameter).
_ARG = re.compile(rb"[(,][ \t]*([a-z_][a-z0-9_]*)[ \t]*(?=[,)])")
_IDENT = re.compile(rb"[A-Za-z_]\w*")
_HAS_LOWER = re.compile(rb"[a-z]")
#: What a macro body's references are read without: comments, strings and character constants.
_NOISE = re.compile(rb'/\*.*?(?:\*/|$)|//.*$|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
#: The most calls kept of one macro, or of one file's file scope (the kernel's most are 333, in
#: dcn20_dpp.h's TF_REG_LIST_SH_MASK_DCN20_COMMON, and 919); past it the rest are a skip. The same
#: bound holds for the references of one macro and of one file's expansions.
MAX_CALLS = 4096
#: How deep one file-scope invocation is expanded (macros inside macros), and how many tokens its
#: expansion may make in all: ``module_param`` is 4 deep and a few hundred tokens.
MAX_EXPANSION_DEPTH = 16
MAX_EXPANSION_TOKENS = 1 << 16
_NOT_CALLS = frozenset([b"if", b"while", b"for", b"switch", b"return", b"sizeof", b"typeof", b"__typeof__",
                        b"__builtin_constant_p", b"__builtin_expect", b"defined", b"do", b"__stringify",
                        b"__attribute__", b"__same_type", b"_Generic", b"__is_constexpr"])
#: Words of a macro body that never name a symbol: C's keywords and types, and the kernel's
#: attribute macros.
_NOT_REFERENCES = _NOT_CALLS | frozenset(
    b"auto break case char const continue default double else enum extern float goto inline int long register "
    b"restrict short signed static struct typedef union unsigned void volatile asm __asm__ __volatile__ "
    b"__inline__ __inline _Bool bool true false __always_inline __init __exit __used __maybe_unused __user "
    b"__iomem __percpu __rcu __force __must_check __cold __noreturn __section __aligned __weak __VA_ARGS__ "
    b"__LINE__ __FILE__ __func__ __COUNTER__ __alignof__ __builtin_offsetof".split())
_TAG_WORDS = (b"struct", b"union", b"enum")


class Macro(NamedTuple):
    """A function-like macro as :func:`expand_pasted` expands it."""

    name: str
    """The macro's name."""
    params: tuple[bytes, ...]
    """Its parameters in order (``...`` as ``__VA_ARGS__``; ``args...`` as ``args``)."""
    variadic: bool
    """The last parameter takes the rest of the arguments."""
    body: bytes
    """Its body, continuation lines joined, comments removed."""


#: Turns a file's text into the text its build compiles (``(rel, text) → text``, same length and
#: lines): :func:`ksymgraph.loaders.preproc.preprocess` under the build's ``.config``, so that a
#: ``#define`` in a dead branch (``#ifdef CONFIG_INLINE_SPIN_LOCK``) defines nothing.
Compiled = Callable[[str, bytes], bytes]


def _read_lines(root: str, rel: str, limit: int, skipped: list[Skipped] | None,
                compiled: Compiled | None = None) -> bytes | None:
    try:
        data = read_source(root, rel, limit)[0]
    except LoaderError as e:
        if skipped is not None:
            skipped.append(Skipped(rel, e.reason))
        return None
    return data if compiled is None else compiled(rel, data)


def for_each_macro(root: str | os.PathLike, files: Iterable[str],
                   skipped: list[Skipped] | None = None) -> Iterator[tuple[FunctionDef, list[Call]]]:
    """Each macro of ``files`` (relative to ``root``) with the calls in its body: the function-like
    ones, and the object-like ones with a lower-case name (see :func:`for_each_macro_record`)."""
    for d, calls, _refs, _macro in for_each_macro_record(root, files, skipped):
        yield d, calls


def for_each_macro_record(root: str | os.PathLike, files: Iterable[str], skipped: list[Skipped] | None = None,
                          compiled: Compiled | None = None, bodies: _Bodies | None = None
                          ) -> Iterator[tuple[FunctionDef, list[Call], list[Reference], Macro | None]]:
    """Each macro of ``files`` (relative to ``root``): its definition, the calls and the references
    in its body, and (function-like ones) the :class:`Macro` to expand it with. Files are read as
    :func:`~ksymgraph.loaders.cfiles.read_source` reads (then made what the build compiles with
    ``compiled``); those that cannot be are added to ``skipped``, as is a macro with more than
    :data:`MAX_CALLS` calls or references."""
    root_s = real_root(root)
    for rel in files:
        data = _read_lines(root_s, rel, MAX_FILE_BYTES, skipped, compiled)
        if data is not None:
            yield from _macros_of(data, rel, skipped, bodies)


def _params(spec: bytes) -> tuple[tuple[bytes, ...], bool]:
    params = [p.strip() for p in spec.split(b",")] if spec.strip() else []
    variadic = bool(params) and params[-1].endswith(b"...")
    if variadic:
        params[-1] = params[-1][:-3].strip() or b"__VA_ARGS__"
    return tuple(params), variadic


class _Bodies:
    """What the body pass leaves for :func:`_upper_case_chains`: the object-like macros with an
    upper-case name (``__PAGE_OFFSET``), and every other macro's body."""

    def __init__(self):
        self.upper: dict[str, list[tuple[str, int, bytes]]] = {}
        """name → (file, line, body) of each definition."""
        self.others: list[tuple[str, str, int, bytes, frozenset[bytes]]] = []
        """(name, file, line, body, parameters) of the macros the pass records."""


def _macros_of(data: bytes, rel: str, skipped: list[Skipped] | None, bodies: _Bodies | None = None
               ) -> Iterator[tuple[FunctionDef, list[Call], list[Reference], Macro | None]]:
    """The macros of one file: each ``#define NAME`` line and its continuation lines, found by one
    search over the text (a file of 32 MiB is never split into lines). With ``bodies``, the bodies
    of upper-case object-like macros are kept there (and those of the others)."""
    line, counted, done_until = 1, 0, 0
    for m in _DEFINE.finditer(data):
        if m.start() < done_until:
            continue  # a continuation line of the macro before
        function_like = m.group(2) is not None
        name_b = m.group(1)
        upper = not function_like and not _OBJECT_NAME.match(name_b)
        if not function_like and not m.group(3).strip() or upper and (bodies is None or not _HAS_LETTERS.search(m.group(3))):
            continue
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
        name = name_b.decode("ascii")
        params, variadic = _params(m.group(2) or b"")
        clean = [_NOISE.sub(b" ", text.rstrip().removesuffix(b"\\")) for text in body]
        if upper:
            bodies.upper.setdefault(name, []).append((rel, line, b" ".join(clean)))
            continue
        if not function_like and not any(_HAS_LOWER.search(w) for t in clean for w in _IDENT.findall(t)):
            continue  # #define foo_max 16
        if bodies is not None:
            bodies.others.append((name, rel, line, b" ".join(clean), frozenset(params)))
        calls, refs = _body_records(name, set(params), clean, rel, line, skipped, _body_guards(clean, params))
        macro = Macro(name, params, variadic, b" ".join(clean)) if function_like else None
        yield (FunctionDef(name, rel, line, line + len(body) - 1, True, True,
                           canary=_declares_guarded_local(b" ".join(clean), set(params))),
               calls, refs, macro)


#: A local a macro body declares (``struct wait_queue_entry __wq_entry;``): group 1 its name.
_AGGREGATE_LOCAL = re.compile(rb"\b(?:struct|union)\s+\w+\s+([A-Za-z_]\w*)\s*[;=]")
#: An array a macro body declares (``char __buf[16];``): group 1 its name.
_ARRAY_LOCAL = re.compile(rb"\b(?:char|short|int|long|u8|u16|u32|u64|s8|s16|s32|s64)\s+([A-Za-z_]\w*)\s*\[")


def _declares_guarded_local(body: bytes, params: set[bytes]) -> bool:
    """True for a statement macro (``({ ... })``, ``do { ... } while (0)``) whose body declares a
    local that gcc's ``-fstack-protector-strong`` guards, where the macro is expanded (what
    :attr:`~ksymgraph.loaders.records.FunctionDef.canary` says of a function): an array, or a
    struct or union whose address it takes (``___wait_event``'s ``&__wq_entry``). A parameter's
    name is the caller's variable, not the macro's."""
    if b"({" not in body and not re.search(rb"\bdo\s*\{", body):
        return False
    def local(m) -> bool:  # (a static local is no stack variable)
        start = max(body.rfind(b";", 0, m.start()), body.rfind(b"{", 0, m.start())) + 1
        return m.group(1) not in params and re.search(rb"\bstatic\b", body[start : m.start()]) is None

    if any(local(m) for m in _ARRAY_LOCAL.finditer(body)):
        return True
    return any(local(m) and re.search(rb"&\s*" + re.escape(m.group(1)) + rb"\b", body)
               for m in _AGGREGATE_LOCAL.finditer(body))


_CONSTANT_P = re.compile(rb"__builtin_constant_p\s*\(\s*(?:\(\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*))\s*\)")


def _group_end(text: bytes, start: int) -> int:
    """The index past the bracketed group (``{...}``, ``(...)``) opening at ``text[start]``, or past
    the statement (up to its ``;``) starting there."""
    if text[start : start + 1] not in (b"{", b"("):
        semi = text.find(b";", start)
        return len(text) if semi < 0 else semi + 1
    depth = 0
    for j in range(start, len(text)):
        ch = text[j : j + 1]
        if ch in (b"{", b"("):
            depth += 1
        elif ch in (b"}", b")"):
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _skip_space(text: bytes, i: int) -> int:
    while i < len(text) and text[i : i + 1].isspace():
        i += 1
    return i


def _body_guards(lines: list[bytes], params: list[bytes]) -> list[tuple[int, int, str]]:
    """(start, end, guard) over a macro body's lines joined by ``\n``: the code each
    ``__builtin_constant_p(param)`` of the body holds for (:mod:`ksymgraph.loaders.cfold`), as the
    C loader reads an inline's. asm-generic/delay.h's ``udelay(n)`` is ``if
    (__builtin_constant_p(n)) { ... __const_udelay(...); } else { __udelay(n); }``: ``udelay(10)``
    calls ``__const_udelay`` only. ``if (__builtin_constant_p(p))`` and its ``else``, and
    ``__builtin_constant_p(p) ? a : b``."""
    text = b"\n".join(lines)
    if b"__builtin_constant_p" not in text:
        return []
    out = []
    for m in _CONSTANT_P.finditer(text):
        param = m.group(1) or m.group(2)
        if param not in params:
            continue
        k = params.index(param)
        before = text[: m.start()].rstrip()
        after = _skip_space(text, m.end())
        if before.endswith(b"(") and before[:-1].rstrip().endswith(b"if") and text[after : after + 1] == b")":
            then = _skip_space(text, after + 1)
            then_end = _group_end(text, then)
            out.append((then, then_end, f"c{k}"))
            other = _skip_space(text, then_end)
            if text[other : other + 4] == b"else" and not text[other + 4 : other + 5].isalnum():
                alt = _skip_space(text, other + 4)
                out.append((alt, _group_end(text, alt), f"n{k}"))
        elif text[after : after + 1] == b"?":
            depth, colon, j = 0, -1, after + 1
            while j < len(text):
                ch = text[j : j + 1]
                if ch in (b"(", b"{"):
                    depth += 1
                elif ch in (b")", b"}"):
                    if depth == 0:
                        break
                    depth -= 1
                elif ch == b":" and depth == 0 and colon < 0:
                    colon = j
                j += 1
            if colon > 0:
                out.append((after + 1, colon, f"c{k}"))
                out.append((colon + 1, j, f"n{k}"))
    return out


def _guard_of(guards: list[tuple[int, int, str]], pos: int) -> str:
    return ";".join(g for start, end, g in guards if start <= pos < end)


def _body_records(name: str, params: set[bytes], lines: list[bytes], rel: str, line: int,
                  skipped: list[Skipped] | None,
                  guards: list[tuple[int, int, str]] = ()) -> tuple[list[Call], list[Reference]]:
    """The calls (an identifier followed by ``(``, or a lower-case name passed to another macro)
    and the references (every other identifier that may name a symbol) of one macro body; a call
    under a ``__builtin_constant_p()`` of a parameter has its guard (:func:`_body_guards`)."""
    calls: list[Call] = []
    refs: list[Reference] = []
    name_b = name.encode("ascii")
    offset = 0
    for n, text in enumerate(lines):
        at, offset = offset, offset + len(text) + 1
        seen = set()
        for c in (*_CALL.finditer(text), *_ARG.finditer(text)):
            callee = c.group(1)
            if (callee in _NOT_REFERENCES or callee in params or callee in seen or callee == name_b
                    or text[: c.start(1)].rstrip().endswith(b"#")):
                continue  # (a keyword, a parameter, or pasted: ``__driver##_init(void)``)
            seen.add(callee)
            calls.append(Call(name, callee.decode("ascii"), rel, line + n, False,
                              guard=_guard_of(guards, at + c.start(1)) if guards else ""))
        for r in _IDENT.finditer(text):
            word = r.group()
            if (word in seen or word in params or word in _NOT_REFERENCES or word == name_b
                    or not _HAS_LOWER.search(word) or word[:1].isdigit()):
                continue
            before, after = text[: r.start()].rstrip(), text[r.end():].lstrip()
            if before.endswith((b".", b"->", b"#")) or after.startswith((b"(", b"#")) or before.endswith(_TAG_WORDS):
                continue  # a member, a call, pasted or stringified, a struct tag
            if r.start() and (text[r.start() - 1 : r.start()].isalnum() or text[r.start() - 1 : r.start()] == b"_"):
                continue  # (inside a number: 0x10ul)
            seen.add(word)
            kind = "address" if before.endswith(b"&") and not before.endswith(b"&&") else "read"
            refs.append(Reference(name, word.decode("ascii"), rel, line + n, kind))
        if len(calls) > MAX_CALLS or len(refs) > MAX_CALLS:
            what = "calls" if len(calls) > MAX_CALLS else "references"
            del calls[MAX_CALLS:], refs[MAX_CALLS:]
            if skipped is not None:
                skipped.append(Skipped(f"{rel}:{line}", f"macro {name}: more than {MAX_CALLS} {what}, "
                                                         "the rest not recorded"))
            break
    return calls, refs


# --------------------------------------------------------------------------------------------
# Expanding file-scope invocations

_TOKEN = re.compile(rb'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|##|[A-Za-z_]\w*|\d\w*|\S')


def _tokens(text: bytes) -> list[bytes]:
    return _TOKEN.findall(text)


def _arguments_at(toks: list, i: int) -> tuple[list[bytes], int] | None:
    """The arguments of the invocation whose ``(`` is ``toks[i]`` (each as text) and the index past
    its ``)``; None when it is not closed."""
    args, cur, depth = [], [], 0
    for j in range(i, len(toks)):
        t = toks[j][0]
        if t == b"(":
            depth += 1
            if depth == 1:
                continue
        elif t == b")":
            depth -= 1
            if depth == 0:
                args.append(b" ".join(cur))
                return ([] if args == [b""] else args), j + 1
        elif t == b"," and depth == 1:
            args.append(b" ".join(cur))
            cur = []
            continue
        cur.append(t)
    return None


def _substitute(macro: Macro, args: list[bytes]) -> list[tuple[bytes, bool]]:
    """The body with the arguments in place of the parameters, ``#param`` made a string and
    ``a ## b`` pasted; each token with whether pasting made it."""
    argmap = dict(zip(macro.params, args))
    if macro.variadic and macro.params:
        argmap[macro.params[-1]] = b", ".join(args[len(macro.params) - 1 :])
    toks = _tokens(macro.body)
    out: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == b"#" and i + 1 < len(toks) and toks[i + 1] in argmap:
            out.append((b'""', False))
            i += 2
            continue
        if t == b"##" and i + 1 < len(toks):
            nxt = toks[i + 1]
            right = _tokens(argmap[nxt]) if nxt in argmap else [nxt]
            left = out.pop()[0] if out else b""
            if right:
                merged = left + right[0]
                out.append((merged, bool(_IDENT.fullmatch(merged)) and bool(left) and bool(right[0])))
                out += [(r, False) for r in right[1:]]
            elif left and left != b",":  # (GNU: `, ## __VA_ARGS__` with none drops the comma)
                out.append((left, False))
            i += 2
            continue
        if t in argmap and not (i + 1 < len(toks) and toks[i + 1] == b"##"):
            out += [(a, False) for a in _tokens(argmap[t])]
        elif t in argmap:
            out.append((argmap[t].strip(), False))  # pasted next: the argument as written
        else:
            out.append((t, False))
        i += 1
    return out


def expand_pasted(table: dict[str, Macro], name: str, args: list[bytes],
                  budget: list[int] | None = None, chain: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Expand the invocation ``name(args)`` with the macros of ``table``, and yield each name that
    token pasting makes and that is not called (``&param_ops_##type`` of ``module_param(x, int,
    0644)`` → ``param_ops_int``), with the macros it was made in (``module_param``,
    ``module_param_named``). Names written in a macro's body are its own calls and references;
    only pasted ones need the arguments. Bounded by :data:`MAX_EXPANSION_DEPTH` and, over the whole
    invocation, :data:`MAX_EXPANSION_TOKENS` (``budget``: the tokens left)."""
    macro = table.get(name)
    budget = [MAX_EXPANSION_TOKENS] if budget is None else budget
    chain = (*chain, name)
    if macro is None or len(chain) > MAX_EXPANSION_DEPTH or budget[0] <= 0:
        return
    toks = _substitute(macro, args)
    budget[0] -= len(toks)
    if budget[0] <= 0:
        return
    for i, (t, pasted) in enumerate(toks):
        if not _IDENT.fullmatch(t) or t[:1].isdigit():
            continue
        called = i + 1 < len(toks) and toks[i + 1][0] == b"("
        word = t.decode("ascii", "replace")
        if called and word in table and word not in chain:
            found = _arguments_at(toks, i + 1)
            if found is not None:
                yield from expand_pasted(table, word, found[0], budget, chain)
        elif pasted and not called:
            yield word, chain


_FILE_SCOPE_CALL = re.compile(rb"^([A-Za-z_]\w*)[ \t]*\(.*\)[ \t]*;", re.M)


def for_each_file_scope_call(root: str | os.PathLike, files: Iterable[str],
                             skipped: list[Skipped] | None = None,
                             table: dict[str, Macro] | None = None, compiled: Compiled | None = None
                             ) -> Iterator[tuple[FunctionDef, list[Call], list[Reference]]]:
    """File-scope macro invocations of ``.c`` files (``module_usb_driver(foo_driver);``,
    ``module_init(foo_init);``), as calls from a pseudo-function :data:`FILE_SCOPE` per file.

    Drivers register through such macros (``module_usb_driver`` → ``module_driver`` →
    ``usb_register`` → ``usb_register_driver``); without them a what-if finds no call site in
    most drivers. A statement at column 0 is taken as file scope (kernel style indents bodies).
    Files larger than the C parser takes (:data:`~ksymgraph.loaders.cparse.MAX_PARSE_BYTES`) are
    not read, as the index does not read them, and are added to ``skipped``.

    With ``table`` (the function-like macros of the headers, by name), each invocation is also
    expanded (:func:`expand_pasted`) and the names its token pasting makes are the third item,
    ``initialiser`` references of :data:`FILE_SCOPE` whose ``via`` is the macro chain
    (``module_param → module_param_named`` for ``param_ops_int``); without it, that list is empty.
    With ``compiled``, only what the build compiles is read (a ``module_param`` under a dead
    ``#ifdef`` makes no reference).
    """
    root_s = real_root(root)
    for rel in files:
        data = _read_lines(root_s, rel, MAX_PARSE_BYTES, skipped, compiled)
        if data is None:
            continue
        calls: list[Call] = []
        refs: list[Reference] = []
        line, pos = 1, 0
        for m in _FILE_SCOPE_CALL.finditer(data):
            line += data.count(b"\n", pos, m.start())
            pos = m.start()
            name = m.group(1)
            if name in _NOT_CALLS:
                continue
            if len(calls) == MAX_CALLS:
                if skipped is not None:
                    skipped.append(Skipped(rel, f"more than {MAX_CALLS} file-scope calls, the rest not recorded"))
                break
            word = name.decode("ascii")
            calls.append(Call(FILE_SCOPE, word, rel, line, False))
            if table is not None and word in table and len(refs) < MAX_CALLS:
                toks = [(t, False) for t in _tokens(m.group(0))]
                found = _arguments_at(toks, 1) if len(toks) > 1 and toks[1][0] == b"(" else None
                if found is not None:
                    seen = set()
                    for symbol, chain in expand_pasted(table, word, found[0]):
                        if symbol not in seen and _HAS_LOWER.search(symbol.encode()):
                            seen.add(symbol)
                            refs.append(Reference(FILE_SCOPE, symbol, rel, line, "initialiser", " → ".join(chain)))
        if calls:
            d = FunctionDef(FILE_SCOPE, rel, 1, data.count(b"\n") + 1, True, False)
            yield d, calls, refs[:MAX_CALLS]


_MACRO_ARG = re.compile(rb"[(,][ \t]*([A-Za-z_]\w*)[ \t]*(?=[,)])")
_HAS_UPPER = re.compile(rb"[A-Z]")
_HAS_LETTERS = re.compile(rb"(?<![\w])[A-Za-z_]")  # an identifier, not only numbers


def _macros_handed_on(table: dict[str, Macro], where: dict[str, tuple[str, int]]) -> Iterator[Call]:
    """The calls of each macro of ``table`` to a function-like macro it hands to another macro as
    an argument, to be called there: 6.1's ``WARN_ONCE(condition, format...)`` is
    ``DO_ONCE_LITE_IF(condition, WARN, 1, format)``, which calls ``WARN(format)`` — and so
    ``__warn_printk``. A lower-case name passed on is a call already (:func:`_body_records`); an
    upper-case one is taken only when it names a function-like macro (``GFP_KERNEL`` does not)."""
    for name, m in table.items():
        seen = set()
        for a in _MACRO_ARG.finditer(m.body):
            arg = a.group(1)
            if arg in seen or arg in m.params or not _HAS_UPPER.search(arg):
                continue
            seen.add(arg)
            callee = arg.decode("ascii")
            if callee != name and callee in table:
                yield Call(name, callee, where[name][0], where[name][1], False)


_WORD = re.compile(rb"[A-Za-z_]\w*|\d\w*")
#: Lower-case words of an upper-case macro's body that name no symbol: sparse's annotations.
_ANNOTATIONS = frozenset(b"__force __iomem __user __percpu __rcu __bitwise __kernel __private __safe __nocast".split())


def _upper_case_chains(bodies: _Bodies) -> Iterator[tuple[FunctionDef | None, list[Reference]]]:
    """The object-like macros with an upper-case name that lead to a symbol, and the references to
    them: x86's ``__va(x)`` adds ``PAGE_OFFSET``, which is ``((unsigned long)__PAGE_OFFSET)``, which
    under ``CONFIG_DYNAMIC_MEMORY_LAYOUT`` is ``page_offset_base`` — an import of every module
    using ``__va()``. An upper-case macro is kept when its body names a lower-case identifier other
    than C's words, a ``*_t`` type or an annotation (``__force``), or one such macro; most
    upper-case macros are constants (``#define REG_CTRL 0x10``, ``GFP_KERNEL``'s flags) and are
    not. Each kept one is a macro (a function of the graph) referring to those names; every other
    macro refers to the kept ones its body names."""
    def names(body: bytes) -> list[bytes]:  # identifiers, not the letters of a number (0x10, 16UL)
        return [w for w in _WORD.findall(body) if not w[:1].isdigit()]

    def lower_words(body: bytes) -> list[bytes]:
        return [w for w in names(body) if _HAS_LOWER.search(w) and w not in _NOT_REFERENCES
                and w not in _ANNOTATIONS and not w.endswith(b"_t")]

    words = {name: [set(names(b)) for _f, _l, b in defs] for name, defs in bodies.upper.items()}
    keep = {name for name, defs in bodies.upper.items() if any(lower_words(b) for _f, _l, b in defs)}
    grown = True
    while grown:
        grown = False
        for name, sets in words.items():
            if name not in keep and any(w.decode("ascii") in keep for ws in sets for w in ws):
                keep.add(name)
                grown = True

    def refs_of(name: str, rel: str, line: int, body: bytes, params: frozenset[bytes], own: bool) -> list[Reference]:
        seen, out = set(), []
        for w in (lower_words(body) if own else []) + [w for w in names(body) if w.decode("ascii") in keep]:
            if w in seen or w in params or w.decode("ascii") == name:
                continue
            seen.add(w)
            out.append(Reference(name, w.decode("ascii"), rel, line, "read"))
        return out[:MAX_CALLS]

    for name in sorted(keep):
        for rel, line, body in bodies.upper[name]:
            yield FunctionDef(name, rel, line, line, True, True), refs_of(name, rel, line, body, frozenset(), True)
    for name, rel, line, body, params in bodies.others:
        rs = refs_of(name, rel, line, body, params, False)
        if rs:
            yield None, rs


def _pass_key(root: str | os.PathLike, files: list[str], c_files: list[str], build: str) -> str:
    """What the macro pass's tables depend on: this module's and the preprocessor's code, the
    build (``build``: its digest), and each file's path, size and modification time."""
    import hashlib

    h = hashlib.sha1(b"macro-pass-2\0" + build.encode() + b"\0")
    here = Path(__file__).parent
    for module in ("macros.py", "tracepoints.py", "cfiles.py", "preproc.py", "ppcontext.py", "ppexpr.py", "records.py"):
        h.update((here / module).read_bytes())
    root_s = real_root(root)
    for kind, names in ((b"h", files), (b"c", c_files)):
        for rel in names:
            try:
                st = os.stat(os.path.join(root_s, rel))
                h.update(b"%s %s %d %d\n" % (kind, rel.encode("utf-8", "surrogateescape"), st.st_size, st.st_mtime_ns))
            except OSError:
                h.update(b"%s %s missing\n" % (kind, rel.encode("utf-8", "surrogateescape")))
    return h.hexdigest()


def index_macros(root: str | os.PathLike, shard_dir: str | os.PathLike, files: Iterable[str] | None = None,
                 c_files: Iterable[str] = (), compiled: Compiled | None = None,
                 build: str = "", walked: Compiled | None = None) -> tuple[int, list[Skipped]]:
    """Write the macros of ``files`` (default: every header under ``root``) and the file-scope
    macro calls of ``c_files`` as ``macros/functions``, ``macros/calls`` and ``macros/references``
    Parquet tables in ``shard_dir``, a row group at a time; returns the number of macros and the
    files (and directories) that could not be read.

    ``compiled`` makes each file the text its build compiles first (the preprocessor under the
    build's ``.config``); ``build`` names that build (its digest). The tables are written again only
    when the files, the build or this code changed since the last pass into ``shard_dir``
    (``macros/pass.json`` holds what the last one was for, and what it skipped).

    The function-like macros are kept (by name, the first definition of each) while the headers are
    read, to expand the file-scope invocations of ``c_files`` with (:func:`expand_pasted`), and the
    trace events of the trace headers and of the ``CREATE_TRACE_POINTS`` files
    (:func:`~ksymgraph.loaders.tracepoints.for_each_tracepoint_record`), whose walk reads files in
    order as ``walked`` makes them (the build's preprocessor without what one file cannot know;
    default ``compiled``)."""
    import json

    skipped: list[Skipped] = []
    if files is None:
        listing = tree_files(root)
        files, skipped = listing.headers, list(listing.skipped)
    files, c_files = list(files), list(c_files)
    out = Path(shard_dir) / "macros"
    out.mkdir(parents=True, exist_ok=True)
    key = _pass_key(root, files, c_files, build if compiled is not None else "")
    done = out / "pass.json"
    try:
        last = json.loads(done.read_text())
        if last.get("key") == key and all((out / f"{t}.parquet").is_file() for t in ("functions", "calls", "references")):
            return last["macros"], skipped + [Skipped(p, r) for p, r in last["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    done.unlink(missing_ok=True)
    table: dict[str, Macro] = {}
    where: dict[str, tuple[str, int]] = {}
    bodies = _Bodies()
    own: list[Skipped] = []
    with TableWriter(out / "functions.parquet", FunctionDef) as defs, TableWriter(out / "calls.parquet", Call) as calls, \
            TableWriter(out / "references.parquet", Reference) as refs:
        for d, cs, rs, macro in for_each_macro_record(root, files, own, compiled, bodies):
            defs.add(d)
            calls.extend(cs)
            refs.extend(rs)
            if macro is not None and macro.name not in table:
                table[macro.name] = macro
                where[macro.name] = (d.file, d.line)
        calls.extend(_macros_handed_on(table, where))
        for d, rs in _upper_case_chains(bodies):
            if d is not None:
                defs.add(d)
            refs.extend(rs)
        # (the object-like upper-case ones, first definition each, for the trace-event expansion:
        # static_call_types.h's STATIC_CALL_KEY_PREFIX makes __SCK__tp_func_<event>)
        objects = {name: Macro(name, (), False, defs_[0][2]) for name, defs_ in bodies.upper.items()}
        del bodies
        n = defs.count + len(defs.rows)
        for d, cs, rs in for_each_file_scope_call(root, c_files, own, table, compiled):
            defs.add(d)
            calls.extend(cs)
            refs.extend(rs)
        # What the trace-event macros make, read through define_trace.h's stages (tracepoints.py).
        for d, cs, rs in for_each_tracepoint_record(root, files, c_files, table, walked or compiled, own, objects):
            if d is not None:
                defs.add(d)
            calls.extend(cs)
            refs.extend(rs)
    tmp = out / f".pass.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key, "macros": n, "skipped": [[s.path, s.reason] for s in own]}))
    os.replace(tmp, done)
    return n, skipped + own
