"""Runtime name lookups: symbols that code reaches by name instead of by linking.

A module that calls ``kallsyms_lookup_name("x")``, ``__symbol_get("x")``, ``symbol_get(x)`` or
registers a kprobe on ``.symbol_name = "x"`` depends on ``x`` although its ELF imports never name
it (LTTng 2.13 resolves its kernel symbols this way). The C loader (:mod:`ksymgraph.loaders.cparse`)
records, per file, the direct lookups it sees and two kinds of raw facts (the records are in
:mod:`ksymgraph.loaders.records`):

* ``StringArg`` — a call passing a symbol-like string (or a string constant) as argument *i*;
* ``ArgFlow`` — a function passing its own ``char *`` parameter *p* on as argument *i* of a call.

:func:`resolve_lookups` joins them over the whole tree: a function whose parameter flows into the
name argument of a lookup function (or of another such wrapper) is a wrapper, to a fixpoint, and
every symbol name passed to a lookup function or a wrapper becomes a ``LookUp``.

Function names are global here: two ``static`` functions of the same name in different files are
taken as one, which can only add wrappers, never lose one.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from .records import ArgFlow, LookUp, StringArg

__all__ = [
    "LOOKUP_FUNCTIONS",
    "IDENTIFIER_LOOKUPS",
    "find_wrappers",
    "resolve_lookups",
]


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
