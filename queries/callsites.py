"""Where the source touches a broken symbol: call sites, and exported functions that could replace it.

A what-if says *that* a module breaks; with the kernel's (or an out-of-tree module's) source
loaded, :func:`add_source_evidence` adds *where*: for each broken module and symbol, the calls
to that symbol and the references of it (``REFERENCES``: data read, address taken, file-scope
initialisers) in the files built into that module (function, file, line, the chain of header
inlines and macros it goes through); and for each removed
export, the still-exported functions that call it within a few hops — candidates to offer in
its place. Both are plain Cypher on either store.

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

from typing import Iterable

from ..graph.store import GraphStore, StoreError
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
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line
ORDER BY module, symbol, file, line
"""
_REFERENCE_SITES = """
MATCH (m:Module)<-[:BUILT_INTO]-(file:File)<-[:DEFINED_IN]-(f:Function)-[c:REFERENCES]->(t)
WHERE m.kernel = $kernel AND {modules} AND t.name IN $symbols
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line,
       c.kind AS kind, c.via AS via
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
       h.name AS via, h.id AS via_id, {kind} AS kind, {path}
ORDER BY module, symbol, file, line
"""
# The functions strictly between h and t on the path the query above matched (ids, names; none when
# h calls t itself), from which the site's chain is taken: LadybugDB's nodes() of a recursive
# relationship are those inner nodes (its docs, "Recursive relationship functions"; checked on
# 0.22: a path of three has two), and it has no list comprehension; Neo4j's r is the list of
# relationships, and nodes() wants a path. Constants of this module.
_PATH = {
    "ladybug": "properties(nodes(r), 'id') AS path_ids, properties(nodes(r), 'name') AS path_names",
    "neo4j": "[x IN r[..-1] | endNode(x).id] AS path_ids, [x IN r[..-1] | endNode(x).name] AS path_names",
}
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
    direct = [CallSite(*r) for r in store.query(_CALL_SITES.format(modules=clause, hint=_hint(store, "direct")),
                                                params).rows]
    refs = has_references(store)
    rels = _WITH_REFERENCES if refs else _CALLS_ONLY
    for module, symbol, function, file, line, kind, via in (
            store.query(_REFERENCE_SITES.format(modules=clause), params).rows if refs else ()):
        chain = (*via.split(" → "), symbol) if via else ()
        direct.append(CallSite(module, symbol, function, file, line, chain[0] if chain else None, "reference",
                               kind, chain))
    have = {(c.module, c.symbol, c.file, c.line) for c in direct}
    kind = "c.kind" if refs else "NULL"  # (a call has no kind: null in a store with both)
    path = _PATH["ladybug" if store.dialect == "ladybug" else "neo4j"]
    if len(params["symbols"]) <= ONE_BY_ONE:
        query = _CALL_SITES_VIA_HEADERS.format(modules=clause, rels=rels, kind=kind, symbols=_ONE_SYMBOL,
                                               hint=_hint(store, "via"), path=path)
        rows = [r for symbol in params["symbols"] for r in store.query(query, {**params, "symbol": symbol}).rows]
    else:
        query = _CALL_SITES_VIA_HEADERS.format(modules=clause, rels=rels, kind=kind, symbols=_SYMBOLS,
                                               hint=_hint(store, "via"), path=path)
        rows = store.query(query, params).rows
    rows = [r for r in rows if (r[0], r[1], r[3], r[4]) not in have]
    chains = _chains(rows)
    # A site reached through two inlines keeps the first by name: the engine's order of such
    # ties is not fixed, the answer is. (Rows that differ only in the path are one site.)
    rows.sort(key=lambda r: (r[0], r[1], r[3], r[4], r[5], r[2], r[6], r[7] or ""))
    via = []
    for module, symbol, function, file, line, h_name, h_id, kind, _ids, _names in rows:
        if (module, symbol, file, line) in have:
            continue  # (reached through two inlines)
        have.add((module, symbol, file, line))
        via.append(CallSite(module, symbol, function, file, line, h_name, "call" if kind is None else "reference",
                            kind, chains.get((h_id, symbol), ())))
    return sorted(direct + via, key=_site_order)


def _site_order(c: CallSite) -> tuple:
    """By module, symbol, file and line; at one line, the direct call first, then by inline and
    function (the engine's order of such ties is not fixed: the JSON stays the same run to run)."""
    return c.module, c.symbol, c.file, c.line, c.via is not None, c.via or "", c.function


def _chains(rows: Iterable[tuple]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(header inline or macro id, symbol) → the chain of names from it to the symbol, out of the
    paths the via query matched (its rows: ..., symbol at 1, via at 5, via_id at 6, then the ids and
    names of the functions between): the shortest, and of those the one a breadth-first walk in
    order of id takes (the one before issue 14's point 5 did: each node keeps the first of its
    predecessors by id, and the symbol the first node by id that reaches it), that is the least by
    the ids read from the symbol's end back to the inline's. (That walk also stopped widening past
    :data:`MAX_FRONTIER` pairs, leaving such sites without a chain; every site here has one.)"""
    best: dict[tuple[str, str], tuple[tuple, tuple[str, ...]]] = {}
    for r in rows:
        symbol, h_name, h_id, ids, names = r[1], r[5], r[6], r[8] or (), r[9] or ()
        rank = (len(ids), tuple(reversed(ids)))
        key = (h_id, symbol)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, (h_name, *names, symbol))
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
