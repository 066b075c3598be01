"""How well the source graph predicts what each module imports, with the compiled modules as the oracle.

For every in-tree module with source files attributed to it (``BUILT_INTO``), the *predicted*
imports are the exported symbols its source graph reaches: every predicting relationship
(:data:`PREDICTING`: ``CALLS``, ``REFERENCES``, ``COMPILER_INSERTS``, those the store holds) out
of the functions defined in its files and out of the module itself, followed through the
functions and macros defined in headers (``.h`` files) that are not exported — what the module's
code inlines or expands — transitively up to ``depth`` hops. A function of a ``.c`` file is
never followed: the module's own are the start, another module's (or vmlinux's) are reached only
as their export. A reached name counts when some *other* module (``vmlinux`` included) exports
it: that is what the ``.ko`` could import. The *actual* imports are the module's ``IMPORTS`` —
the undefined symbols of its ``.ko``, as the ELF loader stored them.

Nothing is excluded from either side: no symbol is filtered out of the imports because the
graph cannot know it, and nothing reached is dropped because it is rarely imported. Recall is
``both / imports`` and precision ``both / predicted``, micro-averaged over all modules
(:class:`Fidelity`), and per module (:class:`ModuleFidelity`).

Every query is parameterised Cypher on either store. A relationship type the store lacks (no
table in a store written before it existed, or no rows of the kernel) contributes nothing: it is
never asked for (:func:`present_relationships`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

from ..graph.schema import RELS
from ..graph.store import GraphStore
from .folding import edge_fold, fold_columns, follow

__all__ = ["PREDICTING", "MAX_DEPTH", "ModuleFidelity", "Fidelity", "fidelity", "predicted_imports",
           "present_relationships"]

#: Relationship types that predict an import, from a Function or from a Module. Types a store
#: does not hold are skipped.
PREDICTING = ("CALLS", "REFERENCES", "COMPILER_INSERTS")

#: How many header inlines or macros deep a prediction is followed.
MAX_DEPTH = 8

_MODULES = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)
WHERE m.kernel = $kernel AND m.name <> 'vmlinux' AND m.intree = true AND m.path <> ''
RETURN DISTINCT m.name AS module
"""
_IMPORTS = """
MATCH (m:Module)-[:IMPORTS]->(s:Symbol)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN m.name AS module, s.name AS symbol
"""
_EXPORTS = """
MATCH (m:Module)-[:EXPORTS]->(s:Symbol)
WHERE m.kernel = $kernel
RETURN s.name AS symbol, m.name AS module
"""
_EXPORTED_FUNCTIONS = """
MATCH (f:Function)-[:EXPORTED_AS]->(:Symbol)
WHERE f.kernel = $kernel
RETURN DISTINCT f.id AS id
"""
# The text below is formatted with a relationship type from PREDICTING only (a constant of this
# module, checked against the schema), never with user text.
# ({fold}: the relationship's folding property, queries/folding.py fold_columns, or NULL.)
_FROM_MODULE_FUNCTIONS = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(f:Function)-[r:{rtype}]->(t)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN DISTINCT m.name AS module, t.id AS id, t.name AS name, {fold} AS fold
"""
_FROM_MODULE = """
MATCH (m:Module)-[:{rtype}]->(t)
WHERE m.kernel = $kernel AND m.name IN $modules
RETURN DISTINCT m.name AS module, t.id AS id, t.name AS name, NULL AS args, NULL AS guard
"""
# Header-defined functions and macros: what a module's code inlines or expands. Functions of .c
# files are never followed (their module's own are the start; another module's, or vmlinux's,
# are reached only through their exports; a .c file built into nothing is not compiled).
_FROM_HEADERS = """
MATCH (h:Function)-[r:{rtype}]->(t)
WHERE h.kernel = $kernel AND h.file ENDS WITH '.h'
RETURN DISTINCT h.id AS source, t.id AS id, t.name AS name, {fold} AS fold
"""
_NO_FOLD = "NULL"


def _folded_rows(store: GraphStore, query: str, rtype: str, params: dict):
    """The rows of ``query`` (formatted with ``rtype`` and its folding property), their last column
    as the two of :func:`~ksymgraph.queries.folding.edge_fold`: (args, guard)."""
    fold = fold_columns(store, rtype) or _NO_FOLD
    for row in store.query(query.format(rtype=rtype, fold=fold), params).rows:
        *head, value = row
        yield (*head, *edge_fold(rtype, value))


def _share(part: int, whole: int) -> float:
    """``part / whole``, 1.0 when there is nothing to find (nothing imported, nothing predicted)."""
    return part / whole if whole else 1.0

class ModuleFidelity(NamedTuple):
    """Predicted against actual imports of one module."""

    module: str
    """The module's name."""
    imports: int
    """Symbols its ``.ko`` imports."""
    predicted: int
    """Exported symbols its source graph reaches."""
    both: int
    """Symbols in both."""
    missed: tuple[str, ...]
    """Imported but not predicted, sorted."""
    over: tuple[str, ...]
    """Predicted but not imported, sorted."""

    @property
    def recall(self) -> float:
        """``both / imports`` (1.0 for a module importing nothing)."""
        return _share(self.both, self.imports)

    @property
    def precision(self) -> float:
        """``both / predicted`` (1.0 for a module predicting nothing)."""
        return _share(self.both, self.predicted)

    @property
    def errors(self) -> int:
        """Missed plus over-predicted symbols: how the worst modules are ranked."""
        return len(self.missed) + len(self.over)


class Fidelity(NamedTuple):
    """Predicted against actual imports of every in-tree module with source, micro-averaged."""

    kernel: str
    """The kernel measured."""
    modules: list[ModuleFidelity]
    """One row per module, sorted by name."""
    relationships: tuple[str, ...]
    """The predicting relationship types the store has (of :data:`PREDICTING`)."""
    depth: int
    """How deep header inlines and macros were followed."""

    @property
    def imports(self) -> int:
        """Imports of all modules measured."""
        return sum(m.imports for m in self.modules)

    @property
    def predicted(self) -> int:
        """Predicted imports of all modules measured."""
        return sum(m.predicted for m in self.modules)

    @property
    def both(self) -> int:
        """Imports predicted, summed over modules."""
        return sum(m.both for m in self.modules)

    @property
    def recall(self) -> float:
        """Micro-averaged recall: ``both / imports``."""
        return _share(self.both, self.imports)

    @property
    def precision(self) -> float:
        """Micro-averaged precision: ``both / predicted``."""
        return _share(self.both, self.predicted)

    def worst(self, n: int = 20) -> list[ModuleFidelity]:
        """The ``n`` modules with the most missed plus over-predicted symbols."""
        return sorted(self.modules, key=lambda m: (-m.errors, m.module))[:n]

    def most_missed(self, n: int = 20) -> list[tuple[str, int]]:
        """(symbol, modules missing it), most often missed first."""
        return Counter(s for m in self.modules for s in m.missed).most_common(n)

    def most_over(self, n: int = 20) -> list[tuple[str, int]]:
        """(symbol, modules over-predicting it), most often over-predicted first."""
        return Counter(s for m in self.modules for s in m.over).most_common(n)

    def summary(self) -> str:
        """One line: modules, imports, predicted, both, recall and precision."""
        return (f"{len(self.modules)} modules: {self.imports} imports, {self.predicted} predicted, "
                f"{self.both} in both; recall {self.recall:.3f}, precision {self.precision:.3f}")


_PROBE = "MATCH ()-[r:{rtype}]->() WHERE r.kernel = $kernel RETURN r.kernel LIMIT 1"


def present_relationships(store: GraphStore, kernel: str, types: tuple[str, ...] = PREDICTING) -> tuple[str, ...]:
    """The types of ``types`` (of :data:`PREDICTING`) that the schema declares and that hold rows
    of ``kernel`` in ``store``. A store written before a type was added lacks its table: asking
    for it fails there, and the type contributes nothing."""
    from ..graph.store import StoreError

    out = []
    for r in RELS:
        if r.type not in types or r.type not in PREDICTING:
            continue
        try:
            if store.query(_PROBE.format(rtype=r.type), {"kernel": kernel}).rows:
                out.append(r.type)
        except StoreError:
            continue
    return tuple(out)


def _from(label: str, types: tuple[str, ...]) -> tuple[str, ...]:
    """The types of ``types`` the schema has from nodes of ``label``."""
    return tuple(r.type for r in RELS if r.type in types and any(a == label for a, _ in r.pairs))


def predicted_imports(store: GraphStore, kernel: str, modules: list[str], depth: int = MAX_DEPTH,
                      types: tuple[str, ...] | None = None) -> dict[str, set[str]]:
    """module → the exported symbols (exported by another module) its source graph reaches through
    the relationship ``types`` (default: those of :data:`PREDICTING` the store holds).

    The walk folds constants as gcc does after inlining (:mod:`ksymgraph.queries.folding`): it
    carries the constness of each parameter of the header function it is in, skips a call whose
    ``__builtin_constant_p()`` guard fails there (``kmalloc(sizeof(*p), ...)`` never reaches
    ``__kmalloc``), and a ``memset``/``memcpy`` of a small constant size, which gcc expands inline.
    A module's own functions start with no parameter constant."""
    if types is None:
        types = present_relationships(store, kernel)
    params = {"kernel": kernel, "modules": modules}
    exporters: dict[str, set[str]] = defaultdict(set)
    for symbol, module in store.query(_EXPORTS, {"kernel": kernel}).rows:
        exporters[symbol].add(module)
    # Exported functions are reached as their export and not followed further.
    stop = {r[0] for r in store.query(_EXPORTED_FUNCTIONS, {"kernel": kernel}).rows}
    # header function -> (target id, name, args, guard)
    edges: dict[str, list[tuple[str, str, str | None, str | None]]] = defaultdict(list)
    for rtype in _from("Function", types):
        for source, tid, name, args, guard in _folded_rows(store, _FROM_HEADERS, rtype, {"kernel": kernel}):
            if source not in stop:
                edges[source].append((tid, name, args, guard))
    reached: dict[str, set[str]] = defaultdict(set)  # module -> names reached
    start: dict[str, set[tuple]] = defaultdict(set)  # module -> (header function, frame) it reaches directly
    rows = [r for t in _from("Function", types) for r in _folded_rows(store, _FROM_MODULE_FUNCTIONS, t, params)]
    rows += [r for t in _from("Module", types) for r in store.query(_FROM_MODULE.format(rtype=t), params).rows]
    for module, tid, name, args, guard in rows:
        compiled, frame = follow((), name, args, guard)
        if not compiled:
            continue
        reached[module].add(name)
        if tid in edges:
            start[module].add((tid, frame))
    for module, frontier in start.items():
        names, seen = reached[module], set(frontier)
        for _hop in range(depth):
            nxt = set()
            for fid, frame in frontier:
                for tid, name, args, guard in edges[fid]:
                    compiled, callee = follow(frame, name, args, guard)
                    if not compiled:
                        continue
                    names.add(name)
                    if tid in edges and (tid, callee) not in seen:
                        nxt.add((tid, callee))
            seen |= nxt
            frontier = nxt
            if not frontier:
                break
    return {m: {n for n in reached.get(m, ()) if exporters.get(n, set()) - {m}} for m in modules}


def fidelity(store: GraphStore, kernel: str | None = None, depth: int = MAX_DEPTH,
             types: tuple[str, ...] = PREDICTING) -> Fidelity:
    """Predicted against actual imports for every in-tree module of ``kernel`` (default: the
    store's only kernel) that has source files attributed to it, through the relationship
    ``types`` of :data:`PREDICTING` the store holds (pass fewer to see what one contributes)."""
    kernel = store.resolve_kernel(kernel)
    types = present_relationships(store, kernel, types)
    modules = sorted(r[0] for r in store.query(_MODULES, {"kernel": kernel}).rows)
    actual: dict[str, set[str]] = defaultdict(set)
    for module, symbol in store.query(_IMPORTS, {"kernel": kernel, "modules": modules}).rows:
        actual[module].add(symbol)
    predicted = predicted_imports(store, kernel, modules, depth, types)
    rows = []
    for m in modules:
        a, p = actual.get(m, set()), predicted.get(m, set())
        rows.append(ModuleFidelity(m, len(a), len(p), len(a & p), tuple(sorted(a - p)), tuple(sorted(p - a))))
    return Fidelity(kernel, rows, types, depth)
