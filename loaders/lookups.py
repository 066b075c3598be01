"""Runtime name lookups: symbols that code reaches by name instead of by linking.

A module that calls ``kallsyms_lookup_name("x")``, ``__symbol_get("x")``, ``symbol_get(x)`` or
registers a kprobe on ``.symbol_name = "x"`` depends on ``x`` although its ELF imports never name
it (LTTng 2.13 resolves its kernel symbols this way). The C loader (:mod:`ksymgraph.loaders.csource`)
records, per file, the direct lookups it sees and two kinds of raw facts:

* :class:`StringArg` — a call passing a symbol-like string (or a string constant) as argument *i*;
* :class:`ArgFlow` — a function passing its own ``char *`` parameter *p* on as argument *i* of a call.

:func:`resolve_lookups` joins them over the whole tree: a function whose parameter flows into the
name argument of a lookup function (or of another such wrapper) is a wrapper, to a fixpoint, and
every symbol name passed to a lookup function or a wrapper becomes a :class:`LookUp`.

Function names are global here: two ``static`` functions of the same name in different files are
taken as one, which can only add wrappers, never lose one.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

__all__ = [
    "LookUp",
    "StringArg",
    "ArgFlow",
    "LOOKUP_FUNCTIONS",
    "IDENTIFIER_LOOKUPS",
    "find_wrappers",
    "resolve_lookups",
]


class LookUp(NamedTuple):
    """A symbol reached by name at run time."""

    symbol: str
    """The symbol's name as written in the source."""
    how: str
    """``kallsyms_lookup_name``, ``__symbol_get``, ``symbol_get``, ``symbol_request``,
    ``module_kallsyms_lookup_name``, ``kprobe``, ``kretprobe`` or ``wrapper:<function>``."""
    file: str
    """Source file (relative to the tree root) of the call or initialiser naming the symbol."""
    line: int
    """1-based line of the call (or of the ``.symbol_name`` initialiser or assignment)."""
    function: str | None
    """The function containing that line, or None at file scope."""


class StringArg(NamedTuple):
    """A call that passes a symbol-like string as one of its arguments."""

    caller: str | None
    """The function making the call (None at file scope)."""
    callee: str
    """The called function's name."""
    arg_index: int
    """0-based position of the argument."""
    value: str
    """The string's content: a literal, or the literal a ``const char *`` variable or a struct
    field was initialised with in the same file."""
    file: str
    """Source file of the call, relative to the tree root."""
    line: int
    """1-based line of the call's function name."""


class ArgFlow(NamedTuple):
    """A function passing one of its ``char *`` parameters on to a call, unchanged."""

    function: str
    """The function whose parameter flows."""
    param_index: int
    """0-based position of that parameter."""
    callee: str
    """The function it is passed to."""
    arg_index: int
    """0-based position of the argument in that call."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the call."""


#: Functions that look a symbol up by the name in their first argument (a string).
LOOKUP_FUNCTIONS = {
    "kallsyms_lookup_name": 0,
    "module_kallsyms_lookup_name": 0,
    "__symbol_get": 0,
}

#: Macros that take the symbol as a bare identifier (``symbol_get(x)`` stringifies ``x``).
IDENTIFIER_LOOKUPS = ("symbol_get", "symbol_request")


def find_wrappers(flows: Iterable[ArgFlow]) -> dict[tuple[str, int], str]:
    """Wrappers of the lookup functions: ``{(function, param_index): how}``, to a fixpoint.

    The lookup functions themselves are included with their own names as ``how``.
    """
    found: dict[tuple[str, int], str] = {(f, i): f for f, i in LOOKUP_FUNCTIONS.items()}
    by_callee: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for flow in flows:
        if flow.function == flow.callee:
            continue
        by_callee.setdefault((flow.callee, flow.arg_index), []).append((flow.function, flow.param_index))
    todo = list(found)
    while todo:
        key = todo.pop()
        for wrapper in by_callee.get(key, ()):
            if wrapper not in found:
                found[wrapper] = f"wrapper:{wrapper[0]}"
                todo.append(wrapper)
    return found


def resolve_lookups(
    string_args: Iterable[StringArg],
    flows: Iterable[ArgFlow],
    direct: Iterable[LookUp] = (),
) -> Iterator[LookUp]:
    """All lookups: ``direct`` ones (kprobes, ``symbol_get``) and every symbol-like string passed
    to a lookup function or to one of its wrappers (see :func:`find_wrappers`)."""
    yield from direct
    wrappers = find_wrappers(flows)
    for arg in string_args:
        how = wrappers.get((arg.callee, arg.arg_index))
        if how is None:
            continue
        if how.startswith("wrapper:"):
            how = f"wrapper:{arg.callee}"
        yield LookUp(arg.value, how, arg.file, arg.line, arg.caller)
