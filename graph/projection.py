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

from ..loaders.records import BuildOptions, LookUpEdge, ModuleData
from .store import GraphStore

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["ModuleNode", "ExportEdge", "ImportEdge", "KernelProjection", "export_rows"]


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
    vermagic: str = ""
    """Its ``vermagic`` modinfo string (``""``: none)."""
    modversions: bool = False
    """It carries symbol versions (``__versions``): built with ``CONFIG_MODVERSIONS``."""
    layout_crc: int | None = None
    """The CRC it recorded for ``module_layout``."""


class ExportEdge(NamedTuple):
    """One export of a symbol."""

    module: str
    """The exporting module."""
    gpl: bool
    """GPL-only."""
    namespace: str
    """Namespace, ``""`` for none."""
    crc: int | None = None
    """Its modversions CRC; None when the kernel has none."""


class ImportEdge(NamedTuple):
    """One import of a module."""

    symbol: str
    """The imported symbol."""
    weak: bool
    """Weak undefined: may stay unresolved."""
    crc: int | None = None
    """The CRC the module recorded for it in ``__versions``; None when it recorded none."""


_KERNEL = """
MATCH (k:Kernel) WHERE k.release = $kernel
RETURN k.version AS version, k.vermagic AS vermagic, k.modversions AS modversions, k.force_load AS force_load,
       k.missing_ns_allowed AS missing_ns_allowed, k.build_from AS build_from
"""
_MODULES = """
MATCH (m:Module) WHERE m.kernel = $kernel
RETURN m.name AS name, m.path AS path, m.license AS license, m.gpl_compatible AS gpl_compatible,
       m.intree AS intree, m.import_ns AS import_ns, m.vermagic AS vermagic, m.modversions AS modversions,
       m.layout_crc AS layout_crc
ORDER BY name
"""
_EXPORTS = """
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE m.kernel = $kernel
RETURN s.name AS symbol, m.name AS module, e.gpl AS gpl, e.namespace AS namespace, e.crc AS crc
ORDER BY symbol, module
"""


def export_rows(store, kernel: str) -> list[tuple]:
    """Every export of ``kernel`` as ``(symbol, module, gpl, namespace, crc)``, ordered by symbol
    then module: the one query both the projection and ``diff`` read exports with."""
    return store.query(_EXPORTS, {"kernel": kernel}).rows


_IMPORTS = """
MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE m.kernel = $kernel
RETURN m.name AS module, s.name AS symbol, i.weak AS weak, i.crc AS crc
ORDER BY module, symbol
"""
_LOOKUPS = """
MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol) WHERE m.kernel = $kernel
RETURN m.name AS module, s.name AS symbol, l.how AS how, l.file AS file, l.line AS line
ORDER BY module, symbol, how, file, line
"""


class KernelProjection:
    """One kernel's modules, exports, imports and lookups as Python dictionaries."""

    def __init__(self, kernel: str, version: str = "", build: BuildOptions | None = None):
        self.kernel = kernel
        self.version = version
        #: How the kernel was built, as far as the load rules care.
        self.build = build if build is not None else BuildOptions.unknown()
        self.modules: dict[str, ModuleNode] = {}
        self.exports: dict[str, list[ExportEdge]] = defaultdict(list)
        self.imports: dict[str, list[ImportEdge]] = defaultdict(list)
        self.lookups: dict[str, list[LookUpEdge]] = defaultdict(list)
        self._importers: dict[str, set[str]] | None = None
        #: Modules failing with no change, filled once by :func:`ksymgraph.queries.whatif.failing_modules`.
        self.failing: dict | None = None

    @classmethod
    def from_store(cls, store: GraphStore, kernel: str) -> "KernelProjection":
        """Read the projection of ``kernel`` from any store."""
        p = {"kernel": kernel}
        k = store.query(_KERNEL, p).rows
        version, vermagic, modversions, force, missing_ns, build_from = k[0] if k else ("", "", None, None, None, "")
        proj = cls(kernel, version or "", BuildOptions(vermagic or "", modversions, force, missing_ns,
                                                       build_from or "unknown (loaded by an older ksymgraph)"))
        for name, path, lic, gplc, intree, ns, magic, mv, layout in store.query(_MODULES, p).rows:
            proj.modules[name] = ModuleNode(name, path or "", lic or "", bool(gplc) if gplc is not None else True,
                                            bool(intree), frozenset(ns or ()), magic or "", bool(mv), layout)
        for sym, mod, gpl, ns, crc in export_rows(store, kernel):
            proj.exports[sym].append(ExportEdge(mod, bool(gpl), ns or "", crc))
        for mod, sym, weak, crc in store.query(_IMPORTS, p).rows:
            proj.imports[mod].append(ImportEdge(sym, bool(weak), crc))
        for mod, sym, how, file, line in store.query(_LOOKUPS, p).rows:
            proj.lookups[mod].append(LookUpEdge(mod, sym, how, file or "", line or 0))
        return proj

    def with_modules(self, extra: Iterable[ModuleData],
                     lookups: dict[str, list[LookUpEdge]] | None = None) -> "KernelProjection":
        """A copy with out-of-tree modules added (replacing same-named ones) and, optionally,
        the run-time lookups they make, for ``check`` and upgrade impact."""
        proj = KernelProjection(self.kernel, self.version, self.build)
        proj.modules = dict(self.modules)
        proj.exports = defaultdict(list, {k: list(v) for k, v in self.exports.items()})
        proj.imports = defaultdict(list, self.imports)
        proj.lookups = defaultdict(list, self.lookups)
        # A module named twice: the last one wins. The exports of every module replaced are
        # dropped in one pass (one pass per module made 4,000 replacements take minutes).
        extra = list({m.info.name: m for m in extra}.values())
        replaced = {m.info.name for m in extra if m.info.name in proj.modules}
        if replaced:
            for sym, edges in proj.exports.items():
                if any(e.module in replaced for e in edges):
                    proj.exports[sym] = [e for e in edges if e.module not in replaced]
        for m in extra:
            name = m.info.name
            proj.modules[name] = ModuleNode(name, m.info.path, m.info.license,
                                            m.info.gpl_compatible, m.info.intree,
                                            frozenset(m.info.import_ns), m.info.vermagic, m.info.modversions,
                                            m.info.layout_crc)
            for e in m.exports:
                proj.exports[e.symbol].append(ExportEdge(name, e.gpl, e.namespace, e.crc))
            edges: dict[str, ImportEdge] = {}  # a rename may map two imports onto one symbol
            for s, w, c in zip(m.imports.symbols, m.imports.weak, m.imports.crcs):
                edges.setdefault(s, ImportEdge(s, w, c))
            proj.imports[name] = list(edges.values())
            proj.lookups[name] = list((lookups or {}).get(name, []))
        return proj

    def module_data(self, name: str) -> ModuleData:
        """Module ``name`` as the loaders' record (its exports and imports with their CRCs), for
        checking it against another kernel."""
        from ..loaders.records import Export, Imports, ModuleInfo

        n = self.modules[name]
        info = ModuleInfo(n.name, n.path, n.license, n.vermagic, "", n.intree, (), tuple(sorted(n.import_ns)),
                          n.modversions, n.layout_crc)
        exports = [Export(name, s, e.gpl, e.namespace, e.crc) for s, e in self.exported_by(name)]
        edges = self.imports.get(name, [])
        return ModuleData(info, exports, Imports([i.symbol for i in edges], [i.crc for i in edges],
                                                 [i.weak for i in edges]))

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
