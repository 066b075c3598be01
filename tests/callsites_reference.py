"""The call-site and replacement queries of ksymgraph before issue 14's speed work, kept verbatim as
the reference the faster path must agree with, row for row: the replacement walk as it was at
commit 15c904f (``queries/callsites.py``), the call sites as the references work made them (branch
``refs``, commit f460e75: calls and ``REFERENCES``, their chains through header inlines and macros,
all symbols in one query); tests/test_whatif_speed_equivalence.py and tests/bench/bench_whatif_source.py compare the
whole what-if JSON of both. Not used by ksymgraph itself.

One thing is not verbatim, :func:`fixed_ties`: the old path took, of two functions first met at one
hop that export one name, whichever the engine's scan returned first; the new one takes the first by
file (then export, gpl). The comparison runs the old queries with that order added."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from ksymgraph.graph.store import GraphStore, StoreError
from ksymgraph.queries.records import CallSite, Replacement
from ksymgraph.queries.whatif import WhatIfResult

__all__ = ["source_loaded", "sites_by_module", "call_sites", "exported_callers", "add_source_evidence"]

#: Frontier size past which the reverse walk stops widening (popular symbols have thousands of callers).
MAX_FRONTIER = 5000


# Which modules to look in: the given ones, or every module (vmlinux's code never breaks). The
# two clauses are constants of this module, never user text.
_IN_MODULES = "m.name IN $modules"
_ANY_MODULE = "m.name <> 'vmlinux'"
_CALL_SITES = """
MATCH (m:Module)<-[:BUILT_INTO]-(file:File)<-[:DEFINED_IN]-(f:Function)-[c:CALLS]->(t)
WHERE m.kernel = $kernel AND {modules} AND t.name IN $symbols
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
_CALL_SITES_VIA_HEADERS = """
MATCH (m:Module)<-[:BUILT_INTO]-(file:File)<-[:DEFINED_IN]-(f:Function)-[c:{rels}]->(h:Function)-[:{rels}*1..3]->(t)
WHERE m.kernel = $kernel AND {modules} AND t.name IN $symbols
  AND h.static = true AND h.file ENDS WITH '.h'
RETURN DISTINCT m.name AS module, t.name AS symbol, f.name AS function, f.file AS file, c.line AS line,
       h.name AS via, h.id AS via_id, {kind} AS kind
ORDER BY module, symbol, file, line
"""
#: One hop of the walk that names a via site's chain (header inlines and macros are few).
_OUT_EDGES = """
MATCH (a:Function)-[:{rels}]->(b)
WHERE a.id IN $ids
RETURN DISTINCT a.id AS src, b.id AS dst, b.name AS name
"""
_FIRST_HOP = """
MATCH (f:Function)-[:CALLS]->(t)
WHERE f.kernel = $kernel AND t.name = $symbol
RETURN DISTINCT f.id AS id
"""
_NEXT_HOP = """
MATCH (f:Function)-[:CALLS]->(g:Function)
WHERE g.id IN $ids
RETURN DISTINCT f.id AS id
"""
_EXPORTED = """
MATCH (f:Function)-[e:EXPORTED_AS]->(s:Symbol)
WHERE f.id IN $ids
RETURN s.name AS export, e.gpl AS gpl, f.file AS file
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
    direct = [CallSite(*r) for r in store.query(_CALL_SITES.format(modules=clause), params).rows]
    refs = has_references(store)
    rels = _WITH_REFERENCES if refs else _CALLS_ONLY
    for module, symbol, function, file, line, kind, via in (
            store.query(_REFERENCE_SITES.format(modules=clause), params).rows if refs else ()):
        chain = (*via.split(" → "), symbol) if via else ()
        direct.append(CallSite(module, symbol, function, file, line, chain[0] if chain else None, "reference",
                               kind, chain))
    have = {(c.module, c.symbol, c.file, c.line) for c in direct}
    kind = "c.kind" if refs else "NULL"  # (a call has no kind: null in a store with both)
    rows = [r for r in store.query(_CALL_SITES_VIA_HEADERS.format(modules=clause, rels=rels, kind=kind), params).rows
            if (r[0], r[1], r[3], r[4]) not in have]
    # A site reached through two inlines keeps the first by name: the engine's order of such
    # ties is not fixed, the answer is.
    rows.sort(key=lambda r: (r[0], r[1], r[3], r[4], r[5], r[2], r[6], r[7] or ""))
    chains = _chains(store, {(r[6], r[5]) for r in rows}, set(params["symbols"]), rels)
    via = []
    for module, symbol, function, file, line, h_name, h_id, kind in rows:
        if (module, symbol, file, line) in have:
            continue  # (reached through two inlines)
        have.add((module, symbol, file, line))
        via.append(CallSite(module, symbol, function, file, line, h_name, "call" if kind is None else "reference",
                            kind, chains.get((h_id, symbol), ())))
    return sorted(direct + via, key=lambda c: (c.module, c.symbol, c.file, c.line))


def _chains(store: GraphStore, starts: set[tuple[str, str]], targets: set[str], rels: str = _WITH_REFERENCES,
            hops: int = 3) -> dict[tuple[str, str], tuple[str, ...]]:
    """(start id, target name) → the shortest chain of names from the start (``(id, name)`` of a
    header inline or macro) through calls and references to that target, within ``hops``; one
    query per hop for all starts together, the frontier bounded by :data:`MAX_FRONTIER`."""
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    level = {(sid, sid): (name,) for sid, name in starts}
    seen = set(level)
    for _hop in range(hops):
        if not level or len(level) > MAX_FRONTIER:
            break
        out: dict[str, list[tuple[str, str]]] = {}
        for src, dst, name in store.query(_OUT_EDGES.format(rels=rels), {"ids": sorted({n for _, n in level})}).rows:
            out.setdefault(src, []).append((dst, name))
        nxt = {}
        for (start, node), path in sorted(level.items()):
            for dst, name in out.get(node, ()):
                if name in targets and (start, name) not in found:
                    found[(start, name)] = (*path, name)
                if (start, dst) not in seen:
                    seen.add((start, dst))
                    nxt[(start, dst)] = (*path, name)
        level = nxt
    return found


def exported_callers(store: GraphStore, kernel: str, symbol: str, hops: int = 2,
                     exclude: frozenset[str] = frozenset()) -> list[Replacement]:
    """Exported functions that reach ``symbol`` within ``hops`` calls (nearest first)."""
    found: dict[str, Replacement] = {}
    seen: set[str] = set()
    frontier = [r[0] for r in store.query(_FIRST_HOP, {"kernel": kernel, "symbol": symbol}).rows]
    for hop in range(1, hops + 1):
        frontier = [i for i in frontier if i not in seen]
        if not frontier:
            break
        seen.update(frontier)
        for export, gpl, file in store.query(_EXPORTED, {"ids": frontier}).rows:
            if export != symbol and export not in exclude and export not in found:
                found[export] = Replacement(symbol, export, bool(gpl), file, hop)
        if hop == hops or len(frontier) > MAX_FRONTIER:
            break
        frontier = [r[0] for r in store.query(_NEXT_HOP, {"ids": frontier}).rows]
    return sorted(found.values(), key=lambda r: (r.hops, r.gpl, r.export))


def add_source_evidence(result: WhatIfResult, store: GraphStore, hops: int = 2) -> WhatIfResult:
    """``result`` with call sites per broken module and replacements per removed export."""
    if not source_loaded(store, result.kernel):
        return result
    direct = [(b.module, r.symbol) for b in result.broken for r in b.reasons if r.rule != "dependency"]
    removed = frozenset(c.target for c in result.changes if c.kind == "unexport")
    replacements = {sym: exported_callers(store, result.kernel, sym, hops, removed) for sym in sorted(removed)}
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


@contextlib.contextmanager
def fixed_ties() -> Iterator[None]:
    """Within the block, the old export-site query returns its rows by file, export, gpl (and is
    otherwise unchanged): the tie rule of the new path, for a comparison row for row."""
    global _EXPORTED
    old = _EXPORTED
    _EXPORTED = old.rstrip() + "\nORDER BY file, export, gpl\n"
    try:
        yield
    finally:
        _EXPORTED = old
