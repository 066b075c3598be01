"""Rebuild impact: what a module would import once rebuilt against another kernel's headers.

A module that loads on kernel A can fail on kernel B after a plain rebuild, with no change of its
own: B's header inlines and macros call other symbols than A's did. In 6.8, 6.7.3 and 6.6.15,
5ec8e8ea8b77 ("mm/sparsemem: fix race in accessing memory_section->usage") made ``pfn_valid()``,
an inline of ``include/linux/mmzone.h``, call ``rcu_read_lock()``, whose inline calls
``__rcu_read_lock`` under ``CONFIG_PREEMPT_RCU`` — an ``EXPORT_SYMBOL_GPL`` of
``kernel/rcu/tree_plugin.h``; every non-GPL module calling ``pfn_valid()`` (OpenZFS, NVIDIA) was
then refused: ``GPL-incompatible module zfs.ko uses GPL-only symbol '__rcu_read_lock'``.

:func:`predict_rebuild` answers it from a store holding kernel A with the module's source (an
out-of-tree tree loaded with ``--source DIR`` and its ``.mod`` files, or the kernel's own source for
an in-tree module) and kernel B with its headers (``--source debian-headers``):

1. the module's own functions: those defined in the files built into it in A (``BUILT_INTO``),
   with the file-scope macro calls of its ``.c`` files, and the inlines of its own private headers;
2. their calls (and references, when the store has a ``REFERENCES`` relationship) to anything
   else are taken by *name* into B: a name B exports is an import; a name B's kernel headers
   (``include/``, ``arch/*/include/``) define as ``static inline`` functions or function-like
   macros is followed through every definition B has of it — never through A's; anything else
   is the end of the walk;
3. a name B does not export is an import the loader cannot resolve (``unknown-symbol``) when it is
   a symbol at all: A exported it, or the module imported it as built against A. Other names the
   walk ends at (compiler builtins, function pointers, names of types) are listed as
   ``unresolved`` and count nowhere;
4. the load rules of B (:mod:`ksymgraph.queries.loadrules`: GPL-only with the module's licence,
   namespaces it imports, unknown symbols, the cascade) are applied to that predicted import set,
   with the module's vermagic and CRCs those of a build against B; every break keeps the chain of
   names that leads to its symbol (``pfn_valid → rcu_read_lock → __rcu_read_lock``) and the
   module's function and line that start it.

A name B both exports and defines in a header (``#ifdef CONFIG_X`` an ``extern``, ``#else`` a
``static inline`` stub) is taken as the export. Without the preprocessor pass every ``#if`` branch
of B's headers counts, so a name defined twice is followed through both definitions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Iterator, NamedTuple

from ..graph.projection import ExportEdge, ImportEdge, KernelProjection, ModuleNode
from ..graph.schema import RELS
from ..graph.store import GraphStore
from ..loaders.records import Export, Imports, ModuleData, ModuleInfo
from .diff import rebuilt_against
from .folding import Frame, edge_fold, fold_columns, follow
from .library import QueryError
from .loadrules import LoadRules, sort_reasons
from .renames import headers_loaded
from .whatif import failing_modules

__all__ = ["RebuildImport", "RebuildBreak", "RebuiltModule", "RebuildPrediction", "predict_rebuild",
           "is_kernel_header", "edge_types"]

#: A kernel header relative to its tree: what ``-I include -I arch/$(SRCARCH)/include`` finds.
_KERNEL_HEADER = re.compile(r"(?:include|arch/[^/]+/include)/")

#: Ids per query when a walk asks the store about many functions at once.
_BATCH = 2000
#: Past this many private-header functions to read, their calls are read in one scan instead.
_SCAN_PAST = 2 * _BATCH

_OWN_FUNCTIONS = """
MATCH (f:Function)-[:DEFINED_IN]->(file:File)-[:BUILT_INTO]->(m:Module)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN m.name AS module, f.id AS id, f.name AS name, f.file AS file
"""
#: One query per relationship type (a constant of this module, never user text) and target label.
_EDGES_TO_FUNCTION = """
MATCH (f:Function)-[c:{rel}]->(g:Function)
WHERE f.id IN $ids
RETURN f.id AS src, {line} AS line, g.id AS id, g.name AS name, g.file AS file, g.static AS static, {fold} AS fold
"""
_EDGES_TO_SYMBOL = """
MATCH (f:Function)-[c:{rel}]->(s:Symbol)
WHERE f.id IN $ids
RETURN f.id AS src, {line} AS line, NULL AS id, s.name AS name, '' AS file, false AS static, {fold} AS fold
"""
#: The same, for every function of the files built into some modules (one scan, not one per id batch).
_MODULE_EDGES_TO_FUNCTION = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(f:Function)-[c:{rel}]->(g:Function)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN f.id AS src, {line} AS line, g.id AS id, g.name AS name, g.file AS file, g.static AS static, {fold} AS fold
"""
_MODULE_EDGES_TO_SYMBOL = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(f:Function)-[c:{rel}]->(s:Symbol)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN f.id AS src, {line} AS line, NULL AS id, s.name AS name, '' AS file, false AS static, {fold} AS fold
"""
#: Calls and references out of the header functions of a kernel, but those of its top ``include/``
#: (the module-private headers of a kernel tree, and every header of other trees).
_PRIVATE_HEADER_EDGES_TO_FUNCTION = """
MATCH (f:Function)-[c:{rel}]->(g:Function)
WHERE f.kernel = $kernel AND f.static = true AND f.file ENDS WITH '.h' AND NOT f.file STARTS WITH 'include/'
RETURN f.id AS src, {line} AS line, g.id AS id, g.name AS name, g.file AS file, g.static AS static, {fold} AS fold
"""
_PRIVATE_HEADER_EDGES_TO_SYMBOL = """
MATCH (f:Function)-[c:{rel}]->(s:Symbol)
WHERE f.kernel = $kernel AND f.static = true AND f.file ENDS WITH '.h' AND NOT f.file STARTS WITH 'include/'
RETURN f.id AS src, {line} AS line, NULL AS id, s.name AS name, '' AS file, false AS static, {fold} AS fold
"""
_ALL_HEADER_DEFS = """
MATCH (f:Function)
WHERE f.kernel = $kernel AND f.static = true AND f.file ENDS WITH '.h'
RETURN f.id AS id, f.name AS name, f.file AS file, f.is_macro AS is_macro
"""
_ALL_HEADER_EDGES = """
MATCH (f:Function)-[c:{rel}]->(t:{label})
WHERE f.kernel = $kernel AND f.static = true AND f.file ENDS WITH '.h'
RETURN f.id AS src, t.name AS name, {fold} AS fold
"""


def edge_types() -> list[tuple[str, bool, tuple[str, ...]]]:
    """(relationship type, has a ``line`` property, target labels) of the relationships a
    function's code reaches other code or data by: ``CALLS``, and ``REFERENCES`` when the schema
    has it (data reads, address-taken functions)."""
    out = []
    for rel in RELS:
        if rel.type not in ("CALLS", "REFERENCES"):
            continue
        targets = tuple(t for f, t in rel.pairs if f == "Function" and t in ("Function", "Symbol"))
        if targets:
            out.append((rel.type, any(p.name == "line" for p in rel.props), targets))
    return out


def is_kernel_header(path: str, own_tops: frozenset[str] = frozenset()) -> bool:
    """Is ``path`` (as the graph names files) one of the kernel's headers, under ``include/`` or
    ``arch/*/include/`` of the kernel tree (no prefix) or of a headers tree (one leading
    directory, ``linux-headers-6.12.38+deb13-common/``)? A leading directory in ``own_tops`` is
    the module's own tree: its ``include/`` is the module's."""
    if not path.endswith(".h"):
        return False
    if _KERNEL_HEADER.match(path):
        return True
    top, _, rest = path.partition("/")
    return top not in own_tops and bool(_KERNEL_HEADER.match(rest))


def _json_with_chain(record) -> dict:
    """A record with a ``chain`` of names (:class:`RebuildImport`, :class:`RebuildBreak`) as JSON:
    its fields, the chain as a list."""
    d = record._asdict()
    d["chain"] = list(record.chain)
    return d


class RebuildImport(NamedTuple):
    """One symbol a module is predicted to import once rebuilt against kernel B."""

    symbol: str
    """The symbol."""
    exported_by: str
    """The module of B that exports it (``vmlinux`` for the kernel); ``""``: B does not export it."""
    gpl: bool
    """B exports it GPL-only."""
    namespace: str
    """B's namespace of the export (``""``: none)."""
    chain: tuple[str, ...]
    """The names from the module's call to the symbol: ``("pfn_valid", "rcu_read_lock",
    "__rcu_read_lock")``; ``(symbol,)`` for a direct call."""
    function: str
    """The module's function that starts the chain."""
    file: str
    """Its file."""
    line: int | None
    """The line of its call (or reference) of the chain's first name."""

    @property
    def through(self) -> str:
        """The chain as text, with where it starts: ``f (x.c:12): pfn_valid → rcu_read_lock → X``."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{self.function} ({where}): {' → '.join(self.chain)}"

    to_json = _json_with_chain


class RebuildBreak(NamedTuple):
    """One reason the rebuilt module would be refused by kernel B, with how the rebuild reaches it."""

    rule: str
    """The load rule (:data:`ksymgraph.queries.loadrules.RULES`)."""
    symbol: str
    """The symbol concerned."""
    message: str
    """The kernel's or modpost's words."""
    via_module: str | None
    """For ``dependency``: the failing module of B that exports the symbol."""
    chain: tuple[str, ...]
    """The chain of names that leads the rebuilt module to the symbol (empty for vermagic)."""
    through: str
    """The chain as text, with the module's function and line that start it."""

    to_json = _json_with_chain


class RebuiltModule(NamedTuple):
    """The prediction for one module."""

    module: str
    """Module name."""
    path: str
    """Its file as built against A (``""`` when only named)."""
    license: str
    """``MODULE_LICENSE``: decides the GPL-only rule."""
    source: bool
    """Whether A's source defines functions in files built into the module (``BUILT_INTO``);
    without, nothing is predicted (no source loaded, or ``.c`` files that only ``#include`` their
    code from a header, as LTTng's ring-buffer clients do: the graph has no include edges)."""
    loads: bool | None
    """Would B load it once rebuilt? None without source."""
    imports: list[RebuildImport]
    """The predicted imports (B's exports, and names B does not export that are symbols), by symbol."""
    breaks: list[RebuildBreak]
    """Why B would refuse it, its own reasons first."""
    new: list[str]
    """Predicted imports the module does not import as built against A."""
    dropped: list[str]
    """Imports of the module as built against A that the rebuild would no longer make."""
    unresolved: list[str]
    """Names the walk ended at that are no symbol either kernel exports (builtins, function
    pointers, types): not imports."""

    def to_json(self) -> dict:
        return {"module": self.module, "path": self.path, "license": self.license, "source": self.source,
                "loads": self.loads, "imports": [i.to_json() for i in self.imports],
                "breaks": [b.to_json() for b in self.breaks], "new": self.new, "dropped": self.dropped,
                "unresolved": len(self.unresolved)}


class RebuildPrediction(NamedTuple):
    """What a set of modules of kernel A would import, and whether they would load, once rebuilt
    against kernel B's headers."""

    a: str
    """Kernel A: the one the modules were built against."""
    b: str
    """Kernel B: the one they are rebuilt against."""
    headers: bool
    """Whether B's headers are in the store (without them only direct calls are followed)."""
    modules: list[RebuiltModule]
    """One per module, in the order asked."""

    @property
    def summary(self) -> dict:
        by_rule: dict[str, int] = {}
        for m in self.modules:
            for rule in sorted({b.rule for b in m.breaks}):
                by_rule[rule] = by_rule.get(rule, 0) + 1
        return {"modules": len(self.modules), "with_source": sum(m.source for m in self.modules),
                "fail": sum(m.loads is False for m in self.modules),
                "load": sum(m.loads is True for m in self.modules), "by_rule": by_rule}

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "headers": self.headers,
                "modules": [m.to_json() for m in self.modules], "summary": self.summary}


class _Edge(NamedTuple):
    """A call (or reference) out of a function, as read from the store."""

    line: int | None
    target_id: str | None
    """The Function it reaches (None: a Symbol)."""
    name: str
    file: str
    static: bool
    args: str | None
    """gcc's constant folding of the call (queries/folding.py): its arguments' classes."""
    guard: str | None
    """... and the conditions on its function's parameters under which it is compiled."""


def _edge_rows(store: GraphStore, to_function: str, to_symbol: str, params: Iterable[dict]) -> Iterator[tuple]:
    """(function id, :class:`_Edge`) of each call and reference the queries ``to_function`` and
    ``to_symbol`` (formatted per relationship type) return for each of ``params``; calls through
    a struct member (``->fn``: no symbol) are left out."""
    params = list(params)
    for rel, has_line, targets in edge_types():
        fmt = {"rel": rel, "line": "c.line" if has_line else "null", "fold": fold_columns(store, rel, "c") or "NULL"}
        queries = [q for q, label in ((to_function, "Function"), (to_symbol, "Symbol")) if label in targets]
        for query in queries:
            for p in params:
                for src, ln, gid, name, file, static, fold in store.query(query.format(**fmt), p).rows:
                    if gid is None and name.startswith("->"):
                        continue
                    yield src, _Edge(ln, gid, name, file or "", bool(static), *edge_fold(rel, fold))


def _header_edges(store: GraphStore, kernel: str) -> dict[str, list[_Edge]]:
    """Calls and references out of every header function of ``kernel`` outside its top
    ``include/``, by function: one scan, for walks that need thousands of them."""
    out: dict[str, list[_Edge]] = {}
    for src, e in _edge_rows(store, _PRIVATE_HEADER_EDGES_TO_FUNCTION, _PRIVATE_HEADER_EDGES_TO_SYMBOL,
                             [{"kernel": kernel}]):
        out.setdefault(src, []).append(e)
    return out


def _edges(store: GraphStore, ids: list[str]) -> dict[str, list[_Edge]]:
    """Calls and references out of functions ``ids``, by function."""
    out: dict[str, list[_Edge]] = {i: [] for i in ids}
    batches = ({"ids": ids[start:start + _BATCH]} for start in range(0, len(ids), _BATCH))
    for src, e in _edge_rows(store, _EDGES_TO_FUNCTION, _EDGES_TO_SYMBOL, batches):
        out[src].append(e)
    return out


def _module_edges(store: GraphStore, kernel: str, modules: list[str], own: dict[str, dict[str, tuple[str, str]]],
                  per_query: int = 200) -> dict[str, list[_Edge]]:
    """Calls and references out of every function of ``modules``' own files, by function."""
    out: dict[str, list[_Edge]] = {fid: [] for m in modules for fid in own[m]}
    batches = ({"kernel": kernel, "modules": modules[start:start + per_query]}
               for start in range(0, len(modules), per_query))
    for src, e in _edge_rows(store, _MODULE_EDGES_TO_FUNCTION, _MODULE_EDGES_TO_SYMBOL, batches):
        out.setdefault(src, []).append(e)
    # A file built into two modules lists its edges once per module: keep one of each.
    return {fid: list(dict.fromkeys(es)) for fid, es in out.items()}


class _Headers:
    """Kernel B's header inlines and macros, by name: the names each one's definitions call. Read
    whole, in a few queries (Debian 6.12's headers: 38k definitions, 48k calls)."""

    def __init__(self, store: GraphStore, kernel: str):
        rows = [r for r in store.query(_ALL_HEADER_DEFS, {"kernel": kernel}).rows if is_kernel_header(r[2])]
        # An upper-case "function" that is also a macro is a definition whose name a macro makes
        # (``static int CONCATENATE(GENL_MAGIC_FAMILY, _genl_register)(void)`` in
        # genl_magic_func.h, which tree-sitter reads as a function CONCATENATE): the preprocessor
        # expands every call of that name, so only the macro is followed.
        macros = {name for _fid, name, _file, is_macro in rows if is_macro}
        defs = {fid: name for fid, name, _file, is_macro in rows
                if is_macro or name not in macros or name != name.upper()}
        self.callees: dict[str, list[tuple[str, str | None, str | None]]] = {name: [] for name in defs.values()}
        """name → (callee, args, guard) of the calls and references its definitions make, gcc's
        folding of each (queries/folding.py); a name missing: B's headers do not define it."""
        seen: dict[str, set[tuple]] = {name: set() for name in self.callees}
        for rel, _line, targets in edge_types():
            fold = fold_columns(store, rel, "c") or "NULL"
            for label in targets:
                for src, callee, value in store.query(_ALL_HEADER_EDGES.format(rel=rel, label=label, fold=fold),
                                                      {"kernel": kernel}).rows:
                    name = defs.get(src)
                    edge = (callee, *edge_fold(rel, value))
                    if name is None or callee == name or callee.startswith("->") or edge in seen[name]:
                        continue
                    seen[name].add(edge)
                    self.callees[name].append(edge)


def _own_functions(store: GraphStore, kernel: str, modules: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """module → {function id: (name, file)} of the functions defined in the files built into it."""
    out: dict[str, dict[str, tuple[str, str]]] = {m: {} for m in modules}
    for start in range(0, len(modules), _BATCH):
        for mod, fid, name, file in store.query(_OWN_FUNCTIONS, {"kernel": kernel,
                                                                 "modules": modules[start:start + _BATCH]}).rows:
            out[mod][fid] = (name, file)
    return out


class _Origin(NamedTuple):
    """Where a name was first reached: from the module's function (``parent`` None) or from a name."""

    parent: str | None
    function: str
    file: str
    line: int | None


def _own_code(store: GraphStore, kernel: str, own: dict[str, dict[str, tuple[str, str]]],
              a_edges: dict[str, list[_Edge]]) -> dict[str, dict[str, tuple[str, str]]]:
    """Each module's own code in A: its functions, and the inlines and macros of its private
    headers that they reach (fetched level by level for all modules at once; past a few thousand,
    every private header's at once)."""
    scanned = False
    code = {m: dict(fs) for m, fs in own.items()}
    tops = {m: frozenset(f.partition("/")[0] for _n, f in fs.values() if "/" in f) for m, fs in own.items()}
    files = {m: {f for _n, f in fs.values()} for m, fs in own.items()}
    frontier = {m: list(fs) for m, fs in own.items()}
    while any(frontier.values()):
        missing = sorted({f for fs in frontier.values() for f in fs if f not in a_edges})
        if len(missing) > _SCAN_PAST and not scanned:
            scanned = True
            for fid, es in _header_edges(store, kernel).items():
                a_edges.setdefault(fid, es)
        if scanned:
            # the scan read every header function outside the top include/: those it did not
            # return have no calls
            where = {fid: code[m][fid][1] for m, fids in frontier.items() for fid in fids}
            missing = [f for f in missing if f not in a_edges and (where[f].startswith("include/") or
                                                                   not where[f].endswith(".h"))]
        if missing:
            a_edges.update(_edges(store, missing))
        nxt: dict[str, list[str]] = {}
        for m, fids in frontier.items():
            for fid in fids:
                for e in a_edges.get(fid, ()):
                    if e.target_id is not None and e.target_id not in code[m] and (
                            e.file in files[m] or (e.file.endswith(".h") and not is_kernel_header(e.file, tops[m]))):
                        code[m][e.target_id] = (e.name, e.file)
                        nxt.setdefault(m, []).append(e.target_id)
        frontier = nxt
    return code


def _walk(code: dict[str, tuple[str, str]], b_exports: dict[str, list[ExportEdge]], headers: _Headers,
          a_edges: dict[str, list[_Edge]]) -> tuple[dict[str, _Origin], set[str]]:
    """Every kernel name one module's code reaches, with where each was first reached (a
    breadth-first walk, so each chain is a shortest one), and the names that ended the walk.

    The walk folds constants as gcc does after inlining (queries/folding.py), carrying the
    constness of each parameter of the inline it is in: ``kmalloc(sizeof(*p), ...)`` rebuilt
    against B reaches B's ``kmalloc_trace``, not its ``__kmalloc``. The module's own functions
    start with no parameter constant; its private headers' inlines with nothing known."""
    origins: dict[str, _Origin] = {}
    frontier: list[tuple[str, Frame]] = []
    for fid in sorted(code):
        fname, ffile = code[fid]
        start: Frame = None if ffile.endswith(".h") else ()
        for e in _rebuilt_edges(fname, ffile, a_edges.get(fid, ())):
            if e.target_id is not None and e.target_id in code:
                continue
            compiled, frame = follow(start, e.name, e.args, e.guard)
            if not compiled:
                continue
            if e.name not in origins:
                origins[e.name] = _Origin(None, fname, ffile, e.line)
            frontier.append((e.name, frame))
    # Kernel names, in B: exports end the walk, header inlines and macros are followed.
    ends: set[str] = set()
    seen = set(frontier)
    frontier = sorted(seen, key=_by_name)
    while frontier:
        nxt = []
        for name, frame in frontier:
            callees = None if name in b_exports else headers.callees.get(name)
            if callees is None:
                ends.add(name)
                continue
            o = origins[name]
            for callee, args, guard in callees:
                compiled, callee_frame = follow(frame, callee, args, guard)
                if not compiled:
                    continue
                if callee not in origins:
                    origins[callee] = _Origin(name, o.function, o.file, o.line)
                if (callee, callee_frame) not in seen:
                    seen.add((callee, callee_frame))
                    nxt.append((callee, callee_frame))
        frontier = nxt
    return origins, ends


#: Prefixes of the names tracepoint.h makes of an event's name (6.1 and 6.12: the key, the static
#: call's key and trampoline, the iterator, the probe stub).
_EVENT_NAMES = ("__tracepoint_", "__SCK__tp_func_", "__SCT__tp_func_", "__traceiter_", "__probestub_")
#: The macro of include/linux/tracepoint.h that makes an event's ``trace_<event>()`` inline.
_TRACE_INLINE_MACRO = "__DECLARE_TRACE"


def _rebuilt_edges(name: str, file: str, edges: Iterable[_Edge]) -> list[_Edge]:
    """The edges of one of the module's functions that a rebuild against B keeps. A trace header's
    ``trace_<event>()`` inline, as the tracepoint pass makes it (loaders/tracepoints.py: one line,
    A's ``__DECLARE_TRACE`` expanded down to A's per-cpu and preemption internals), is made by B's
    tracepoint.h once rebuilt: it keeps the names made of the event's own
    (``__tracepoint_<event>``, ``__SCK__tp_func_<event>``...) and reaches the rest through B's
    ``__DECLARE_TRACE``, not through A's internals (A's ``cpu_number``, which 6.2 folded into
    ``pcpu_hot``)."""
    edges = list(edges)
    if not (name.startswith("trace_") and file.endswith(".h") and edges and len({e.line for e in edges}) == 1):
        return edges
    event = name[len("trace_"):]
    kept = [e for e in edges if e.name.startswith(_EVENT_NAMES) and e.name.endswith(event)]
    return [*kept, _Edge(edges[0].line, None, _TRACE_INLINE_MACRO, "", False, None, None)]


def _by_name(state: tuple[str, Frame]) -> tuple:
    """A walk's state (name, frame) in a fixed order (frames of None first)."""
    name, frame = state
    return name, frame is not None, frame or ()


def _chain(origins: dict[str, _Origin], name: str) -> tuple[str, ...]:
    out = [name]
    while origins[out[-1]].parent is not None:
        out.append(origins[out[-1]].parent)
    return tuple(reversed(out))


def predict_rebuild(store: GraphStore, a: str, b: str, names: Iterable[str] = (),
                    files: Iterable[ModuleData] = (), alone: bool = False) -> RebuildPrediction:
    """What modules of kernel ``a`` (``names``, or ``files`` built against it whose source ``a``
    holds) would import once rebuilt against kernel ``b``'s headers, and whether ``b`` would load
    them (see the module's docstring).

    The modules are rebuilt as a set: they replace ``b``'s modules of the same name, with the
    exports they had in ``a``, and fail with each other (the cascade), as ``diff --modules`` takes
    an out-of-tree tree. With ``alone``, each is rebuilt on its own among ``b``'s own modules,
    which keep their exports: the question for every in-tree module of ``a`` at once, where a set
    of 6.1's modules replacing 6.12's would fail through each other's 6.1 exports."""
    pa = KernelProjection.from_store(store, a)
    pb = KernelProjection.from_store(store, b)
    names, files = list(names), list(files)
    missing = [n for n in names if n not in pa.modules]
    if missing:
        raise QueryError(f"not modules of kernel {a}: {', '.join(missing)}")
    subset: list[ModuleData] = list(files) + _modules_data(pa, names)
    wanted = list(dict.fromkeys(m.info.name for m in subset))
    own = _own_functions(store, a, wanted)
    b_exports = {s: es for s, es in pb.exports.items() if es}
    a_exports = {s for s, es in pa.exports.items() if es}
    with_source = [n for n in wanted if own[n]]
    headers = _Headers(store, b) if with_source else None
    a_edges = _module_edges(store, a, with_source, own)
    code = _own_code(store, a, {n: own[n] for n in with_source}, a_edges)
    walked: dict[str, tuple[dict[str, _Origin], set[str]]] = {}
    rebuilt: list[ModuleData] = []
    for m in subset:
        name = m.info.name
        if not own[name] or name in walked:
            continue
        origins, ends = walked[name] = _walk(code[name], b_exports, headers, a_edges)
        built = set(m.imports.symbols)
        # A name the module exports itself is its own (a per-cpu variable its code reads, now that
        # references are followed): the linker resolves it inside the module, never an import.
        own_exports = {e.symbol for e in m.exports}
        symbols = sorted(n for n in ends if n not in own_exports and (n in b_exports or n in a_exports or n in built))
        rebuilt.append(rebuilt_against(m._replace(imports=Imports(symbols, [None] * len(symbols),
                                                                  [False] * len(symbols))), pb))
    if not rebuilt:
        failing = {}
    elif alone:
        failing = _alone(pb, rebuilt)
    else:
        failing = failing_modules(pb.with_modules(rebuilt, {r.info.name: [] for r in rebuilt}))
    out = []
    for m in subset:
        name = m.info.name
        if name not in walked:
            out.append(RebuiltModule(name, m.info.path, m.info.license, False, None, [], [], [], [], []))
            continue
        origins, ends = walked[name]
        predicted = next(r for r in rebuilt if r.info.name == name).imports.symbols
        imports = []
        for sym in predicted:
            o = origins[sym]
            e = _first_export(b_exports.get(sym, ()))
            imports.append(RebuildImport(sym, e.module if e else "", bool(e and e.gpl), e.namespace if e else "",
                                         _chain(origins, sym), o.function, o.file, o.line))
        by_symbol = {i.symbol: i for i in imports}
        breaks = []
        for r in failing.get(name, []):
            hit = by_symbol.get(r.symbol)
            breaks.append(RebuildBreak(r.rule, r.symbol, r.message, r.via_module, hit.chain if hit else (),
                                       hit.through if hit else ""))
        built = set(m.imports.symbols)
        out.append(RebuiltModule(name, m.info.path, m.info.license, True, not breaks, imports, breaks,
                                 sorted(set(predicted) - built), sorted(built - set(predicted)),
                                 sorted(ends - set(predicted))))
    return RebuildPrediction(a, b, headers_loaded(store, b), out)


def _modules_data(proj: KernelProjection, names: list[str]) -> list[ModuleData]:
    """:meth:`KernelProjection.module_data` of each of ``names``, the exports read in one pass
    (module_data reads them all once per module: minutes for 4,000)."""
    if len(names) < 8:
        return [proj.module_data(n) for n in names]
    wanted = set(names)
    exports: dict[str, list[Export]] = defaultdict(list)
    for sym, edges in proj.exports.items():
        for e in edges:
            if e.module in wanted:
                exports[e.module].append(Export(e.module, sym, e.gpl, e.namespace, e.crc))
    out = []
    for name in names:
        n = proj.modules[name]
        info = ModuleInfo(n.name, n.path, n.license, n.vermagic, "", n.intree, (), tuple(sorted(n.import_ns)),
                          n.modversions, n.layout_crc)
        edges = proj.imports.get(name, [])
        out.append(ModuleData(info, exports[name], Imports([i.symbol for i in edges], [i.crc for i in edges],
                                                           [i.weak for i in edges])))
    return out


def _alone(kernel: KernelProjection, rebuilt: list[ModuleData]) -> dict[str, list]:
    """B's load rules for each rebuilt module on its own: its imports and licence in place of
    B's module of that name, B's exports as they are, B's own failing modules failing."""
    failed = frozenset(failing_modules(kernel))
    proj = KernelProjection(kernel.kernel, kernel.version, kernel.build)
    proj.modules, proj.exports = dict(kernel.modules), kernel.exports
    proj.imports, proj.lookups = defaultdict(list, kernel.imports), defaultdict(list, kernel.lookups)
    for m in rebuilt:
        i = m.info
        proj.modules[i.name] = ModuleNode(i.name, i.path, i.license, i.gpl_compatible, i.intree,
                                          frozenset(i.import_ns), i.vermagic, i.modversions, i.layout_crc)
        proj.imports[i.name] = [ImportEdge(s, w, c) for s, w, c in zip(m.imports.symbols, m.imports.weak,
                                                                        m.imports.crcs)]
        proj.lookups[i.name] = []
    rules = LoadRules(proj)
    out = {}
    for m in rebuilt:
        reasons = rules.reasons(m.info.name, failed)
        if reasons:
            out[m.info.name] = sort_reasons(reasons)
    return out


def _first_export(edges: Iterable[ExportEdge]) -> ExportEdge | None:
    """The export ``find_symbol()`` finds first: vmlinux's, then the modules' by name."""
    return min(edges, key=lambda e: (e.module != "vmlinux", e.module), default=None)
