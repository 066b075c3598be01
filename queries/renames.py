"""Renames: an export that vanished while the source API that reached it stayed.

Between Debian's 6.1 and 6.12 about 1,270 exports disappear, but many are ELF-level renames:
``kmalloc()`` still exists, it just reaches ``__kmalloc_noprof`` where it reached ``__kmalloc``;
``__alloc_percpu()`` is now a macro over ``pcpu_alloc_noprof()``. A module using the API only
needs a rebuild. :func:`find_renames` tells them apart with both kernels' header graphs (header
``static inline`` functions and function-like macros, :mod:`ksymgraph.loaders.macros`):

1. the *APIs* of a vanished export X in kernel A: X itself, and every header inline or macro of
   A that calls X;
2. for each API still defined in B's headers (as an inline or a macro), the exports of B it
   reaches through header inlines and macros, up to a few calls deep, that A did not export.

An API that reaches such a new export Y of B gives the verdict "rebuild needed, API kept (now via Y)";
``how`` says which path was found. An API gone from B's headers, or one that reaches no export,
leaves X a real break.
"""

from __future__ import annotations

from ..graph.store import GraphStore
from .records import Rename

__all__ = ["find_renames", "headers_loaded"]


_A_WRAPPERS = """
MATCH (w:Function)-[:CALLS]->(t)
WHERE w.kernel = $kernel AND t.name IN $symbols AND w.static = true AND w.file ENDS WITH '.h'
RETURN DISTINCT t.name AS symbol, w.name AS api, w.file AS file
"""
_B_APIS = """
MATCH (w:Function)
WHERE w.kernel = $kernel AND w.name IN $names AND w.static = true AND w.file ENDS WITH '.h'
RETURN w.id AS id, w.name AS name, w.file AS file, w.is_macro AS is_macro
"""
_B_CALLS = """
MATCH (w:Function)-[:CALLS]->(g:Function)
WHERE w.id IN $ids
RETURN w.id AS src, g.id AS dst, g.name AS name, g.static AS static, g.file AS file
"""
_B_CALLS_OUT = """
MATCH (w:Function)-[:CALLS]->(s:Symbol)
WHERE w.id IN $ids
RETURN w.id AS src, s.name AS name
"""
_B_EXPORTED = """
MATCH (m:Module)-[:EXPORTS]->(s:Symbol)
WHERE m.kernel = $kernel AND s.name IN $names
RETURN DISTINCT s.name AS name
"""


def headers_loaded(store: GraphStore, kernel: str) -> bool:
    """True when ``kernel`` has header functions or macros in the store."""
    rows = store.query("MATCH (f:Function) WHERE f.kernel = $kernel AND f.file ENDS WITH '.h' RETURN f.id LIMIT 1",
                       {"kernel": kernel})
    return bool(rows.rows)


def find_renames(store: GraphStore, a: str, b: str, symbols: list[str], depth: int = 4) -> dict[str, list[Rename]]:
    """For each vanished export in ``symbols``, the APIs that still reach an export in ``b``."""
    if not symbols:
        return {}
    apis: dict[str, dict[str, str]] = {s: {s: "the export's own name"} for s in symbols}
    for sym, api, file in store.query(_A_WRAPPERS, {"kernel": a, "symbols": sorted(symbols)}).rows:
        apis[sym].setdefault(api, f"{api} ({file}) called {sym} in {a}")
    names = sorted({api for d in apis.values() for api in d})
    start = store.query(_B_APIS, {"kernel": b, "names": names}).rows
    # Walk each API's calls through B's header inlines and macros, remembering the path.
    paths: dict[str, list[str]] = {fid: [name] for fid, name, _f, _m in start}
    origin: dict[str, str] = {fid: fid for fid, *_ in start}
    defined_in = {fid: (name, file, bool(m)) for fid, name, file, m in start}
    reached: dict[str, set[tuple[str, tuple[str, ...]]]] = {fid: set() for fid in paths}
    frontier = list(paths)
    seen = set(frontier)
    for _ in range(depth):
        if not frontier:
            break
        nxt = []
        for src, dst, name, static, file in store.query(_B_CALLS, {"ids": frontier}).rows:
            root = origin[src]
            path = paths[src] + [name]
            reached[root].add((name, tuple(path)))
            if static and file.endswith(".h") and dst not in seen:
                seen.add(dst)
                origin[dst], paths[dst] = root, path
                nxt.append(dst)
        for src, name in store.query(_B_CALLS_OUT, {"ids": frontier}).rows:
            reached[origin[src]].add((name, tuple(paths[src] + [name])))
        frontier = nxt
    candidates = sorted({name for r in reached.values() for name, _ in r})
    exported = set()
    if candidates:
        # A rename's target is an export B has and A had not: an API that merely also calls an
        # old export (snprintf, say) proves nothing.
        exported = {r[0] for r in store.query(_B_EXPORTED, {"kernel": b, "names": candidates}).rows}
        exported -= {r[0] for r in store.query(_B_EXPORTED, {"kernel": a, "names": candidates}).rows}
    out: dict[str, list[Rename]] = {}
    for sym, by_api in apis.items():
        found = []
        for fid, (api, file, is_macro) in defined_in.items():
            if api not in by_api:
                continue
            hits = sorted(((len(p), name, p) for name, p in reached[fid] if name in exported and name != sym))
            if not hits:
                continue
            _n, via, path = hits[0]
            kind = "macro" if is_macro else "inline"
            found.append(Rename(sym, api, via, f"{by_api[api]}; in {b} {api} is a {kind} in {file}: "
                                               f"{' -> '.join(path)}"))
        if found:
            # the vanished name itself first, then wrappers, each once
            found.sort(key=lambda r: (r.api != sym, r.api))
            out[sym] = list({r.api: r for r in found}.values())
    return out
