"""The walk through header inlines as gcc compiles it: which calls of an inline's body a caller
really makes, once gcc has folded the inline's ``__builtin_constant_p()`` tests with the caller's
arguments, and which ``memset``/``memcpy`` calls it expands inline instead.

The C loader records, per call, the constness of its arguments and the conditions on its
function's parameters under which it is compiled (:mod:`ksymgraph.loaders.cfold`, the format of
``CALLS.fold`` and ``REFERENCES.guard``). A walk carries a *frame* — the class of each parameter of
the function it is in — from call to call (:func:`follow`). Every reader of a path through header
inlines applies these rules through :func:`follow` or :func:`path_compiled`: the fidelity measure
(:mod:`.fidelity`), a what-if's call sites (:mod:`.callsites`), and the rebuild prediction
(:mod:`.rebuild`). The rules live here, not in the loader, so that changing one re-reads no
source tree.
"""

from __future__ import annotations

from typing import Iterable

from ..errors import KsymgraphError
from ..graph.store import GraphStore
from ..loaders.cfold import NOT_CONSTANT, UNKNOWN, join_classes, split_fold

__all__ = ["INLINE_BUILTINS", "Frame", "callee_frame", "guard_holds", "expanded_inline", "follow", "path_compiled",
           "edge_fold", "fold_columns"]

#: Builtins gcc expands inline when their size (the argument at that index) is a small constant
#: (at most :data:`ksymgraph.loaders.cfold.SMALL_LIMIT`, class ``c``).
INLINE_BUILTINS = {"memset": 2, "memcpy": 2, "__builtin_memset": 2, "__builtin_memcpy": 2}

#: A frame: the class (``c``, ``C``, ``-``, ``?``) of each parameter of the function a walk is in
#: (a parameter past its end is not constant); None where nothing is known (a macro's call).
Frame = tuple | None


def _classes(indexes: str, frame: Frame) -> list[str]:
    """The classes of the parameters ``0.1`` in ``frame``."""
    if frame is None:
        return [UNKNOWN]
    return [frame[int(i)] if int(i) < len(frame) else NOT_CONSTANT for i in indexes.split(".")]


def callee_frame(args: str | None, frame: Frame) -> Frame:
    """The frame of the called function: each argument's class, the caller's parameters read in
    ``frame``. ``args`` None (a call the C loader did not read: a macro's) gives None."""
    if args is None:
        return None
    if not args:
        return ()
    return tuple(join_classes(_classes(t[1:], frame)) if t[:1] == "p" else t for t in args.split(","))


def guard_holds(guard: str | None, frame: Frame) -> bool:
    """Whether a call with ``guard`` is compiled in a function whose parameters are ``frame``
    (a parameter missing from the frame is not constant; an unknown one allows both branches)."""
    if not guard:
        return True
    if frame is None:
        return "x" not in guard.split(";")
    for cond in guard.split(";"):
        kind, indexes = cond[:1], cond[1:]
        if kind == "x":
            return False
        classes = _classes(indexes, frame)
        if kind == "c" and NOT_CONSTANT in classes:
            return False
        if kind == "n" and all(c in ("c", "C") for c in classes):
            return False
        if kind == "b" and all(c == "c" for c in classes):
            return False
        if kind == "s" and any(c == "C" for c in classes):
            return False
    return True


def expanded_inline(name: str, frame: Frame) -> bool:
    """Whether a call of ``name`` whose arguments are ``frame`` is expanded inline by gcc (a
    ``memset`` of a small constant size), so that it calls no symbol."""
    at = INLINE_BUILTINS.get(name)
    return at is not None and frame is not None and at < len(frame) and frame[at] == "c"


def follow(frame: Frame, name: str, args: str | None, guard: str | None) -> tuple[bool, Frame]:
    """One step of a walk: whether a call (or reference) of ``name`` with ``args`` and ``guard``,
    made in a function whose parameters are ``frame``, is compiled as a call of (or reference to)
    ``name``; and the frame of ``name`` when it is entered (an inline's body)."""
    if not guard_holds(guard, frame):
        return False, None
    callee = callee_frame(args, frame)
    return not expanded_inline(name, callee), callee


def path_compiled(steps: Iterable[tuple[str, str | None, str | None]]) -> bool:
    """Whether a chain of calls from a module's own function (no parameter constant) is compiled
    through to its end: ``steps`` are (name reached, args, guard) of each edge, in order."""
    frame: Frame = ()
    for name, args, guard in steps:
        compiled, frame = follow(frame, name, args, guard)
        if not compiled:
            return False
    return True


def edge_fold(rtype: str, fold: str | None) -> tuple[str | None, str | None]:
    """(args, guard) of an edge of type ``rtype`` from what the store holds for it: a call's
    ``CALLS.fold`` (``args|guard``), a reference's ``REFERENCES.guard`` (its arguments: none)."""
    if rtype == "CALLS":
        return split_fold(fold)
    return None, fold


#: The property that holds each relationship type's folding (ksymgraph.loaders.cfold).
_FOLD_PROPERTY = {"CALLS": "fold", "REFERENCES": "guard"}


def fold_columns(store: GraphStore, rtype: str, var: str = "r") -> str | None:
    """The property of ``var`` (a relationship of type ``rtype``) that holds its folding, as a
    Cypher expression (``r.fold``), or None when ``rtype`` has none or the store was written before
    it had one (reading it fails there)."""
    prop = _FOLD_PROPERTY.get(rtype)
    if prop is None:
        return None
    try:
        store.query(f"MATCH ()-[x:{rtype}]->() RETURN x.{prop} LIMIT 1")  # names from this module only
    except KsymgraphError:
        return None
    return f"{var}.{prop}"
