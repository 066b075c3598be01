"""In-memory projections of one kernel's graph, for algorithms that Cypher does badly.

The what-if cascade is a fixpoint over "module imports symbol, symbol exported by module"; as a
loop of Python set operations it takes milliseconds, as one recursive Cypher pattern seconds.
:class:`KernelProjection` reads the few tables that need from any store with portable Cypher,
and :meth:`KernelProjection.to_networkx` gives the module dependency graph to networkx for
closures, drawing and other algorithms. The tables are read in a fixed order (``ORDER BY``): the
what-if's answers depend on the order of its inputs, and each engine returns unordered rows in its
own order, so without it the same kernel gave other reasons on LadybugDB and on Neo4j.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, NamedTuple

from ..loaders.records import ModuleData
from .store import GraphStore

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["ModuleNode", "ExportEdge", "ImportEdge", "LookUp", "KernelProjection"]


class ModuleNode(NamedTuple):
    """A module as the load rules see it."""

    name: str
    """Module name (``vmlinux`` for the kernel itself)."""
    path: str
    """Path of its file, ``""`` if it was only named by Module.symvers."""
    license: str
    """``MODULE_LICENSE``."""
    gpl_compatible: bool
    """May it use GPL-only exports?"""
    intree: bool
    """Built from the kernel tree."""
    import_ns: frozenset[str]
    """Namespaces it imports."""


class ExportEdge(NamedTuple):
    """One export of a symbol."""

    module: str
    """The exporting module."""
    gpl: bool
    """GPL-only."""
    namespace: str
    """Namespace, ``""`` for none."""


class ImportEdge(NamedTuple):
    """One import of a module."""

    symbol: str
    """The imported symbol."""
    weak: bool
    """Weak undefined: may stay unresolved."""


class LookUp(NamedTuple):
    """A symbol a module reaches by name at run time."""

    symbol: str
    """The symbol looked up."""
    how: str
    """Mechanism: ``kallsyms_lookup_name``, ``kprobe``, ``symbol_get``, ..."""
    file: str
    """Source file."""
    line: int
    """Source line."""


_MODULES = """
MATCH (m:Module) WHERE m.kernel = $kernel
RETURN m.name AS name, m.path AS path, m.license AS license, m.gpl_compatible AS gpl_compatible,
       m.intree AS intree, m.import_ns AS import_ns
ORDER BY name
"""
_EXPORTS = """
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE m.kernel = $kernel
RETURN s.name AS symbol, m.name AS module, e.gpl AS gpl, e.namespace AS namespace
ORDER BY symbol, module
"""
_IMPORTS = """
MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE m.kernel = $kernel
RETURN m.name AS module, s.name AS symbol, i.weak AS weak
ORDER BY module, symbol
"""
_LOOKUPS = """
MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol) WHERE m.kernel = $kernel
RETURN m.name AS module, s.name AS symbol, l.how AS how, l.file AS file, l.line AS line
ORDER BY module, symbol, how, file, line
"""


class KernelProjection:
    """One kernel's modules, exports, imports and lookups as Python dictionaries."""

    def __init__(self, kernel: str, version: str = ""):
        self.kernel = kernel
        self.version = version
        self.modules: dict[str, ModuleNode] = {}
        self.exports: dict[str, list[ExportEdge]] = defaultdict(list)
        self.imports: dict[str, list[ImportEdge]] = defaultdict(list)
        self.lookups: dict[str, list[LookUp]] = defaultdict(list)
        self._importers: dict[str, set[str]] | None = None
        #: Modules failing with no change, filled once by :func:`ksymgraph.queries.whatif.failing_modules`.
        self.failing: dict | None = None

    @classmethod
    def from_store(cls, store: GraphStore, kernel: str) -> "KernelProjection":
        """Read the projection of ``kernel`` from any store."""
        p = {"kernel": kernel}
        ver = store.query("MATCH (k:Kernel) WHERE k.release = $kernel RETURN k.version", p).rows
        proj = cls(kernel, ver[0][0] if ver else "")
        for name, path, lic, gplc, intree, ns in store.query(_MODULES, p).rows:
            proj.modules[name] = ModuleNode(name, path or "", lic or "", bool(gplc) if gplc is not None else True,
                                            bool(intree), frozenset(ns or ()))
        for sym, mod, gpl, ns in store.query(_EXPORTS, p).rows:
            proj.exports[sym].append(ExportEdge(mod, bool(gpl), ns or ""))
        for mod, sym, weak in store.query(_IMPORTS, p).rows:
            proj.imports[mod].append(ImportEdge(sym, bool(weak)))
        for mod, sym, how, file, line in store.query(_LOOKUPS, p).rows:
            proj.lookups[mod].append(LookUp(sym, how, file or "", line or 0))
        return proj

    def with_modules(self, extra: Iterable[ModuleData],
                     lookups: dict[str, list[LookUp]] | None = None) -> "KernelProjection":
        """A copy with out-of-tree modules added (replacing same-named ones) and, optionally,
        the run-time lookups they make, for ``check`` and upgrade impact."""
        proj = KernelProjection(self.kernel, self.version)
        proj.modules = dict(self.modules)
        proj.exports = defaultdict(list, {k: list(v) for k, v in self.exports.items()})
        proj.imports = defaultdict(list, self.imports)
        proj.lookups = defaultdict(list, self.lookups)
        for m in extra:
            name = m.info.name
            if name in proj.modules:
                for sym in list(proj.exports):
                    proj.exports[sym] = [e for e in proj.exports[sym] if e.module != name]
            proj.modules[name] = ModuleNode(name, m.info.path, m.info.license,
                                            m.info.gpl_compatible, m.info.intree,
                                            frozenset(m.info.import_ns))
            for e in m.exports:
                proj.exports[e.symbol].append(ExportEdge(name, e.gpl, e.namespace))
            edges: dict[str, ImportEdge] = {}  # a rename may map two imports onto one symbol
            for s, w in zip(m.imports.symbols, m.imports.weak):
                edges.setdefault(s, ImportEdge(s, w))
            proj.imports[name] = list(edges.values())
            proj.lookups[name] = list((lookups or {}).get(name, []))
        return proj

    def importers(self, symbol: str) -> set[str]:
        """Modules that import ``symbol``."""
        if self._importers is None:
            idx: dict[str, set[str]] = defaultdict(set)
            for mod, imps in self.imports.items():
                for i in imps:
                    idx[i.symbol].add(mod)
            self._importers = idx
        return self._importers.get(symbol, set())

    def exported_by(self, module: str) -> list[tuple[str, ExportEdge]]:
        """(symbol, export) pairs of one module."""
        return [(s, e) for s, es in self.exports.items() for e in es if e.module == module]

    def to_networkx(self) -> "nx.DiGraph":
        """Module dependency graph: edge A → B with ``symbols`` when A imports what B exports."""
        import networkx as nx  # here, not at the top: the CLI's load and what-if never need it

        g = nx.DiGraph()
        for name, m in self.modules.items():
            g.add_node(name, intree=m.intree, license=m.license, path=m.path)
        for mod, imps in self.imports.items():
            for i in imps:
                for e in self.exports.get(i.symbol, ()):
                    if e.module in (mod, "vmlinux"):
                        continue
                    if g.has_edge(mod, e.module):
                        g[mod][e.module]["symbols"].append(i.symbol)
                    else:
                        g.add_edge(mod, e.module, symbols=[i.symbol])
        return g
