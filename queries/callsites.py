"""Where the source touches a broken symbol: call sites, and exported functions that could replace it.

A what-if says *that* a module breaks; with the kernel's (or an out-of-tree module's) source
loaded, :func:`add_source_evidence` adds *where*: for each broken module and symbol, the calls
to that symbol and the references of it (``REFERENCES``: data read, address taken, file-scope
initialisers) in the files built into that module (function, file, line, the chain of header
inlines and macros it goes through); and for each removed
export, the still-exported functions that call it within a few hops — candidates to offer in
its place. Both are plain Cypher on either store.

A site is a call gcc compiles (:mod:`.folding`): a ``memset`` of a small constant size is
expanded inline, and a call under a ``__builtin_constant_p()`` test that fails for the site's
arguments is folded away, so neither is listed; a path goes through header inlines and macros
only (another file's function is that function's call). Where that leaves no site of a symbol in
a module whose ``.ko`` imports it, every candidate is listed.

Every query is anchored on a symbol's name (``t.name = $symbol``), the one filter both engines
start a plan from: a list of ids or names (``x.id IN $ids``) is tested row by row against the whole
list over every edge scanned (a what-if for ``kfree`` spent 155 s in one such query), and LadybugDB
plans ``t.name IN $symbols`` through the variable-length pattern four times slower than one query
per name. So the calls through header inlines are asked one symbol at a time (up to
:data:`ONE_BY_ONE` symbols), the reverse walk asks for the callers within ``k`` calls of the
symbol (``[:CALLS*1..k]``) and keeps the ones first met at hop ``k``, and the exported functions are
read once and matched in Python.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from ..graph.store import GraphStore, StoreError
from .folding import edge_fold, fold_columns, path_compiled
from .records import CallSite, Replacement
from .whatif import WhatIfResult

__all__ = ["source_loaded", "has_references", "sites_by_module", "call_sites", "exported_callers",
           "exported_functions", "add_source_evidence", "MAX_FRONTIER", "ONE_BY_ONE"]

#: Frontier size past which the reverse walk stops widening (popular symbols have thousands of callers).
MAX_FRONTIER = 5000

#: Up to this many symbols, the calls through header inlines are asked one symbol at a time (each
#: query about 0.5 s on Debian 6.1's whole tree on LadybugDB, 2 s without the join hint); past it,
#: in one query for all (1.1 s for one symbol, 3.3 s for 482; 9 s and 13 s without the hint).
ONE_BY_ONE = 4


# Which modules to look in: the given ones, or every module (vmlinux's code never breaks). The
# two clauses are constants of this module, never user text.
_IN_MODULES = "m.name IN $modules"
_ANY_MODULE = "m.name <> 'vmlinux'"
_CALL_SITES = """
MATCH (m:Module)<-[b:BUILT_INTO]-(file:File)<-[d:DEFINED_IN]-(f:Function)-[c:CALLS]->(t)
WHERE m.kernel = $kernel AND {modules} AND t.name IN $symbols
{hint}
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line,
       {fold} AS fold
ORDER BY module, symbol, file, line
"""
_REFERENCE_SITES = """
MATCH (m:Module)<-[:BUILT_INTO]-(file:File)<-[:DEFINED_IN]-(f:Function)-[c:REFERENCES]->(t)
WHERE m.kernel = $kernel AND {modules} AND t.name IN $symbols
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line,
       c.kind AS kind, c.via AS via, {guard} AS guard
ORDER BY module, symbol, file, line
"""
# {symbols} is _ONE_SYMBOL or _SYMBOLS, {rels} _WITH_REFERENCES or _CALLS_ONLY, {kind} "c.kind" or
# "NULL", {path} one of _PATH: constants of this module.
_ONE_SYMBOL = "t.name = $symbol"
_SYMBOLS = "t.name IN $symbols"
_CALL_SITES_VIA_HEADERS = """
MATCH (m:Module)<-[b:BUILT_INTO]-(file:File)<-[d:DEFINED_IN]-(f:Function)-[c:{rels}]->(h:Function)-[r:{rels}*1..3]->(t)
WHERE m.kernel = $kernel AND {modules} AND {symbols}
  AND h.static = true AND h.file ENDS WITH '.h'
{hint}
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line,
       h.name AS via, h.id AS via_id, {kind} AS kind, {path}, {folds}
ORDER BY module, symbol, file, line
"""
# The functions strictly between h and t on the path the query above matched (ids, names; none when
# h calls t itself), from which the site's chain is taken: LadybugDB's nodes() of a recursive
# relationship are those inner nodes (its docs, "Recursive relationship functions"; checked on
# 0.22: a path of three has two), and it has no list comprehension; Neo4j's r is the list of
# relationships, and nodes() wants a path. Constants of this module.
_PATH = {
    "ladybug": "properties(nodes(r), 'id') AS path_ids, properties(nodes(r), 'name') AS path_names, "
               "properties(nodes(r), 'file') AS path_files",
    "neo4j": "[x IN r[..-1] | endNode(x).id] AS path_ids, [x IN r[..-1] | endNode(x).name] AS path_names, "
             "[x IN r[..-1] | endNode(x).file] AS path_files",
}
# gcc's constant folding along the path (queries/folding.py): the type, ``fold`` (a call's) and
# ``guard`` (a reference's) of c and of each relationship of r, in order. {fold} and {guard} are
# c's property or NULL (a store written before it); constants of this module.
_FOLDS = {
    "ladybug": "label(c) AS c_type, {fold} AS c_fold, {guard} AS c_guard, "
               "list_transform(rels(r), x -> label(x)) AS r_types, {r_fold} AS r_folds, {r_guard} AS r_guards",
    "neo4j": "type(c) AS c_type, {fold} AS c_fold, {guard} AS c_guard, "
             "[x IN r | type(x)] AS r_types, {r_fold} AS r_folds, {r_guard} AS r_guards",
}
_PATH_PROPERTY = {"ladybug": "properties(rels(r), '{p}')", "neo4j": "[x IN r | x.{p}]"}
# LadybugDB's planner, left to itself, reads every function to project f's name and file (a hash
# join: 1.3 s for kfree's direct calls, 2.3 s through inlines); told to start from the symbol and
# walk back, 0.45 s and 0.5 s (1.1 s through inlines for t.name IN $symbols, against 9.2 s). Neo4j
# has no such clause.
_HINTS = {
    "direct": "HINT (((((t JOIN c) JOIN f) JOIN d) JOIN file) JOIN b) JOIN m",
    "via": "HINT (((((((t JOIN r) JOIN h) JOIN c) JOIN f) JOIN d) JOIN file) JOIN b) JOIN m",
}


def _hint(store: GraphStore, query: str) -> str:
    return _HINTS[query] if store.dialect == "ladybug" else ""


class _Folding(NamedTuple):
    """Where the store keeps gcc's constant folding: Cypher expressions (a property, or NULL in a
    store written before it had one) for a relationship ``c`` and the relationships of a path ``r``."""

    fold: str
    """``c.fold`` (a call's) or NULL."""
    guard: str
    """``c.guard`` (a reference's) or NULL."""
    r_fold: str
    """The ``fold`` of each relationship of ``r``, or NULL."""
    r_guard: str
    """The ``guard`` of each relationship of ``r``, or NULL."""


def _folding(store: GraphStore, refs: bool, dialect: str) -> _Folding:
    fold = fold_columns(store, "CALLS", "c")
    guard = fold_columns(store, "REFERENCES", "c") if refs else None
    return _Folding(fold or "NULL", guard or "NULL",
                    _PATH_PROPERTY[dialect].format(p="fold") if fold else "NULL",
                    _PATH_PROPERTY[dialect].format(p="guard") if guard else "NULL")


_IMPORTED = """
MATCH (m:Module)-[:IMPORTS]->(s:Symbol)
WHERE m.kernel = $kernel AND m.name IN $modules AND s.name IN $symbols
RETURN m.name AS module, s.name AS symbol
"""
_FIRST_HOP = """
MATCH (f:Function)-[:CALLS]->(t)
WHERE f.kernel = $kernel AND t.name = $symbol
RETURN DISTINCT f.id AS id
"""
# {hops} is an int.
_WITHIN_HOPS = """
MATCH (f:Function)-[:CALLS*1..{hops}]->(t)
WHERE f.kernel = $kernel AND t.name = $symbol
RETURN DISTINCT f.id AS id
"""
_EXPORTED = """
MATCH (f:Function)-[e:EXPORTED_AS]->(s:Symbol)
WHERE f.kernel = $kernel
RETURN f.id AS id, s.name AS export, e.gpl AS gpl, f.file AS file
"""


#: The relationships a via site's chain follows, in a store with REFERENCES and in one written
#: before them (an embedded store gains the table at its next write, and a read of a table it
#: lacks fails); constants of this module, never user text.
_WITH_REFERENCES = "CALLS|REFERENCES"
_CALLS_ONLY = "CALLS"
_HAS_REFERENCES = "MATCH (:Function)-[r:REFERENCES]->() RETURN r.line LIMIT 1"


def has_references(store: GraphStore) -> bool:
    """True when the store has the REFERENCES relationship (any store written since it exists)."""
    try:
        store.query(_HAS_REFERENCES)
    except StoreError:
        return False
    return True


def source_loaded(store: GraphStore, kernel: str) -> bool:
    """True when ``kernel`` has a source graph in ``store``."""
    rows = store.query("MATCH (f:Function) WHERE f.kernel = $kernel RETURN f.id LIMIT 1", {"kernel": kernel})
    return bool(rows.rows)


def call_sites(store: GraphStore, kernel: str, modules: list[str] | None, symbols: list[str]) -> list[CallSite]:
    """Calls to, and references of, any of ``symbols`` in the source files built into any of
    ``modules`` (None: into any module): direct ones; the names a file-scope macro's expansion
    makes (``module_param`` → ``param_ops_int``); and calls or references of header inlines or
    macros that reach them within three more calls or references (``module_usb_driver`` →
    ``module_driver`` → ``usb_register`` → ``usb_register_driver``), each with its chain."""
    if modules is not None and not modules or not symbols:
        return []
    params = {"kernel": kernel, "symbols": sorted(set(symbols))}
    clause = _ANY_MODULE
    if modules is not None:
        params["modules"], clause = sorted(set(modules)), _IN_MODULES
    refs = has_references(store)
    dialect = "ladybug" if store.dialect == "ladybug" else "neo4j"
    folding = _folding(store, refs, dialect)
    # (site, compiled): a call gcc does not make is no site — a memset of a small constant size
    # (expanded inline), one under a __builtin_constant_p() test that fails (queries/folding.py).
    found: list[tuple[CallSite, bool]] = []
    for r in dict.fromkeys(store.query(_CALL_SITES.format(modules=clause, hint=_hint(store, "direct"),
                                                          fold=folding.fold), params).rows):
        found.append((CallSite(*r[:5]), path_compiled([(r[1], *edge_fold("CALLS", r[5]))])))
    rels = _WITH_REFERENCES if refs else _CALLS_ONLY
    for module, symbol, function, file, line, kind, via, guard in dict.fromkeys(
            store.query(_REFERENCE_SITES.format(modules=clause, guard=folding.guard), params).rows if refs else ()):
        chain = (*via.split(" → "), symbol) if via else ()
        found.append((CallSite(module, symbol, function, file, line, chain[0] if chain else None, "reference",
                               kind, chain), path_compiled([(symbol, *edge_fold("REFERENCES", guard))])))
    kind = "c.kind" if refs else "NULL"  # (a call has no kind: null in a store with both)
    path = _PATH[dialect]
    folds = _FOLDS[dialect].format(**folding._asdict())
    if len(params["symbols"]) <= ONE_BY_ONE:
        query = _CALL_SITES_VIA_HEADERS.format(modules=clause, rels=rels, kind=kind, symbols=_ONE_SYMBOL,
                                               hint=_hint(store, "via"), path=path, folds=folds)
        rows = [r for symbol in params["symbols"] for r in store.query(query, {**params, "symbol": symbol}).rows]
    else:
        query = _CALL_SITES_VIA_HEADERS.format(modules=clause, rels=rels, kind=kind, symbols=_SYMBOLS,
                                               hint=_hint(store, "via"), path=path, folds=folds)
        rows = store.query(query, params).rows
    # Only header inlines and macros are expanded into the module's code: a path through another
    # file's function (vmlinux's __alloc_skb calling memset) is that function's call, not this line's.
    rows = [_ViaRow(*r) for r in rows]
    rows = [r for r in rows if all(f.endswith(".h") for f in r.path_files or ())]
    found += _via_sites(rows, {(c.module, c.symbol, c.file, c.line) for c, _ in found})
    # Where gcc's folding, as the graph reads it, leaves no site of a symbol in a module whose .ko
    # imports it, the graph's folding was wrong there and every candidate is listed: it takes a
    # sizeof or a constant to be small, which gcc may not (kzalloc(sizeof(struct ace_skb)) calls
    # kmalloc_large in acenic), and knows no local's value.
    compiled = {(c.module, c.symbol) for c, ok in found if ok}
    unsure = {(c.module, c.symbol) for c, ok in found if not ok} - compiled
    if unsure:
        unsure &= _imported(store, kernel, sorted({m for m, _ in unsure}), sorted({s for _, s in unsure}))
    return sorted((c for c, ok in found if ok or (c.module, c.symbol) in unsure), key=_site_order)


def _imported(store: GraphStore, kernel: str, modules: list[str], symbols: list[str]) -> set[tuple[str, str]]:
    """The (module, symbol) pairs of ``modules`` × ``symbols`` whose .ko imports the symbol."""
    return {tuple(r) for r in store.query(_IMPORTED, {"kernel": kernel, "modules": modules, "symbols": symbols}).rows}


class _ViaRow(NamedTuple):
    """A row of the via query: a path from a module's function through a header inline to a symbol."""

    module: str
    symbol: str
    function: str
    file: str
    line: int
    via: str
    via_id: str
    kind: str | None
    path_ids: list | None
    path_names: list | None
    path_files: list | None
    c_type: str
    c_fold: str | None
    c_guard: str | None
    r_types: list | None
    r_folds: list | None
    r_guards: list | None


def _compiled_via(row: _ViaRow) -> bool:
    """Whether gcc compiles the path of a via row through to its symbol: the call or reference
    ``c`` into the inline, then each relationship of ``r`` (queries/folding.py)."""
    types = [row.c_type, *(row.r_types or ())]
    folds = [row.c_fold, *(row.r_folds or [None] * (len(types) - 1))]
    guards = [row.c_guard, *(row.r_guards or [None] * (len(types) - 1))]
    names = [row.via, *(row.path_names or ()), row.symbol]
    return path_compiled((name, *edge_fold(rtype, fold if rtype == "CALLS" else guard))
                         for name, rtype, fold, guard in zip(names, types, folds, guards))


def _via_sites(rows: list[_ViaRow], have: set[tuple]) -> list[tuple[CallSite, bool]]:
    """(site, compiled) for each site of the via rows not among the direct ones ``have``; a site
    gcc compiles through some path is compiled, with the chain of one such path."""
    rows = [r for r in rows if (r.module, r.symbol, r.file, r.line) not in have]
    compiled = [(r, _compiled_via(r)) for r in rows]
    # A site's chain and inline come from its compiled paths when it has some, else from all.
    live = {(r.module, r.symbol, r.file, r.line) for r, ok in compiled if ok}
    rows = [r for r, ok in compiled if ok or (r.module, r.symbol, r.file, r.line) not in live]
    chains = _chains(rows)
    # A site reached through two inlines keeps the first by name: the engine's order of such
    # ties is not fixed, the answer is. (Rows that differ only in the path are one site.)
    rows.sort(key=lambda r: (r.module, r.symbol, r.file, r.line, r.via, r.function, r.via_id, r.kind or ""))
    out, seen = [], set()
    for r in rows:
        site = (r.module, r.symbol, r.file, r.line)
        if site in seen:
            continue  # (reached through two inlines)
        seen.add(site)
        out.append((CallSite(r.module, r.symbol, r.function, r.file, r.line, r.via,
                             "call" if r.kind is None else "reference", r.kind,
                             chains.get((*site, r.via_id), ())), site in live))
    return out


def _site_order(c: CallSite) -> tuple:
    """By module, symbol, file and line; at one line, the direct call first, then by inline and
    function (the engine's order of such ties is not fixed: the JSON stays the same run to run)."""
    return c.module, c.symbol, c.file, c.line, c.via is not None, c.via or "", c.function


def _chains(rows: Iterable[_ViaRow]) -> dict[tuple, tuple[str, ...]]:
    """(module, symbol, file, line, header inline or macro id) → the chain of names from the inline
    to the symbol, out of the paths the via query matched for that site: the shortest, and of those
    the one a breadth-first walk in order of id takes (the one before issue 14's point 5 did: each
    node keeps the first of its predecessors by id, and the symbol the first node by id that
    reaches it), that is the least by the ids read from the symbol's end back to the inline's.
    (That walk also stopped widening past :data:`MAX_FRONTIER` pairs, leaving such sites without a
    chain; every site here has one.)"""
    best: dict[tuple, tuple[tuple, tuple[str, ...]]] = {}
    for r in rows:
        ids, names = r.path_ids or (), r.path_names or ()
        rank = (len(ids), tuple(reversed(ids)))
        key = (r.module, r.symbol, r.file, r.line, r.via_id)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, (r.via, *names, r.symbol))
    return {key: chain for key, (_rank, chain) in best.items()}


def exported_callers(store: GraphStore, kernel: str, symbol: str, hops: int = 2,
                     exclude: frozenset[str] = frozenset(), exported: list[tuple] | None = None) -> list[Replacement]:
    """Exported functions that reach ``symbol`` within ``hops`` calls (nearest first).

    ``exported``: the kernel's (function id, export, gpl, file) rows, when the caller has read them
    already (:func:`exported_functions`)."""
    if exported is None:
        exported = exported_functions(store, kernel)
    found: dict[str, Replacement] = {}
    seen: set[str] = set()
    params = {"kernel": kernel, "symbol": symbol}
    frontier = [r[0] for r in store.query(_FIRST_HOP, params).rows]
    for hop in range(1, hops + 1):
        frontier = [i for i in frontier if i not in seen]  # first met at this hop
        if not frontier:
            break
        seen.update(frontier)
        here = set(frontier)
        for fid, export, gpl, file in exported:
            if fid in here and export != symbol and export not in exclude and export not in found:
                found[export] = Replacement(symbol, export, bool(gpl), file, hop)
        if hop == hops or len(frontier) > MAX_FRONTIER:
            break
        frontier = [r[0] for r in store.query(_WITHIN_HOPS.format(hops=int(hop + 1)), params).rows]
    return sorted(found.values(), key=lambda r: (r.hops, r.gpl, r.export))


def exported_functions(store: GraphStore, kernel: str) -> list[tuple]:
    """(function id, export, gpl, file) of every export site of ``kernel``'s source, by file, export,
    gpl: where two functions first met at one hop export one name (``notify_wx_assoc_event`` in
    rtl8192e and rtl8192u), the replacement named is the one in the first file."""
    return sorted(store.query(_EXPORTED, {"kernel": kernel}).rows,
                  key=lambda r: (r[3] or "", r[1] or "", bool(r[2]), r[0]))


def add_source_evidence(result: WhatIfResult, store: GraphStore, hops: int = 2) -> WhatIfResult:
    """``result`` with call sites per broken module and replacements per removed export."""
    if not source_loaded(store, result.kernel):
        return result
    direct = [(b.module, r.symbol) for b in result.broken for r in b.reasons if r.rule != "dependency"]
    removed = frozenset(c.target for c in result.changes if c.kind == "unexport")
    exported = exported_functions(store, result.kernel) if removed else []
    replacements = {sym: exported_callers(store, result.kernel, sym, hops, removed, exported) for sym in sorted(removed)}
    return result._replace(call_sites=sites_by_module(store, result.kernel, direct), replacements=replacements)


def sites_by_module(store: GraphStore, kernel: str, pairs: Iterable[tuple[str, str]]) -> dict[str, list[CallSite]]:
    """module → the calls, in that module's files, to the symbols ``pairs`` names for it
    (``(module, symbol)`` pairs)."""
    wanted = set(pairs)
    out: dict[str, list[CallSite]] = {}
    for s in call_sites(store, kernel, [m for m, _ in wanted], [s for _, s in wanted]):
        if (s.module, s.symbol) in wanted:
            out.setdefault(s.module, []).append(s)
    return out
