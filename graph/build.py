"""Resolve loader records into one kernel's graph, as columnar batches ready for any store.

This is the middle of the pipeline (read → **resolve** → write): it merges modules read from
``.ko`` files with the exports of Module.symvers, names every symbol once, derives
``DEPENDS_ON`` the way depmod does (A imports a symbol that module B exports), and lays the
result out as one Arrow table per node label and relationship type.

Exports of a module present as a ``.ko`` come from its own ksymtab (what the kernel will load);
Module.symvers supplies vmlinux's exports and those of modules that were not given as files.
Where both describe a module, the differences are counted in the report.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from ksymgraph.graph.schema import NODES, arrow_schema, node_id
from ksymgraph.loaders.elf import ModuleData
from ksymgraph.loaders.records import Export, ModuleInfo, Skipped
from ksymgraph.loaders.symvers import SymversEntry

if TYPE_CHECKING:
    from ksymgraph.loaders.trees import SourceTree

__all__ = [
    "GPL_COMPATIBLE_LICENSES",
    "license_is_gpl_compatible",
    "KernelMeta",
    "LookUpEdge",
    "BuildReport",
    "GraphBatch",
    "build_kernel_graph",
]

#: include/linux/license.h: license_is_gpl_compatible().
GPL_COMPATIBLE_LICENSES = frozenset(
    ["GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"]
)


def license_is_gpl_compatible(license: str) -> bool:
    """True when the kernel lets a module with this ``MODULE_LICENSE`` use GPL-only exports."""
    return license in GPL_COMPATIBLE_LICENSES


class KernelMeta(NamedTuple):
    """What a store keeps about one kernel."""

    release: str
    """The name the kernel is stored under (its release string unless ``--kernel`` says otherwise)."""
    version: str
    """Package or source version (``6.1.176-1``), ``""`` when unknown."""
    arch: str
    """Architecture (``amd64``, ``x86_64``, ...), ``""`` when unknown."""
    source: str
    """The sources it was loaded from, as given on the command line."""


class LookUpEdge(NamedTuple):
    """A symbol a module reaches by name at run time (``kallsyms_lookup_name``, kprobe, symbol_get)."""

    module: str
    """The module doing the lookup."""
    symbol: str
    """The symbol named."""
    how: str
    """The mechanism: ``kallsyms_lookup_name``, ``kprobe``, ``symbol_get``, ..."""
    file: str
    """Source file of the lookup."""
    line: int
    """Line of the lookup."""


class BuildReport(NamedTuple):
    """Counts and findings of the resolve step, for the load summary."""

    modules: int
    """Module nodes, vmlinux included."""
    exports: int
    """EXPORTS relationships."""
    imports: int
    """IMPORTS relationships."""
    depends: int
    """DEPENDS_ON relationships."""
    symbols: int
    """Symbol nodes."""
    duplicates: list[Skipped]
    """Module files dropped because another file had the same module name."""
    symvers_mismatches: list[str]
    """Exports on which a module's ksymtab and Module.symvers disagree."""
    source: dict[str, int] = {}
    """Rows written from source trees, per table (empty without source)."""
    unmapped: list[str] = []
    """With source: the modules read from files that no source file is attributed to."""


class GraphBatch(NamedTuple):
    """One kernel's graph as Arrow tables, keyed by node label and by (type, from, to)."""

    kernel: KernelMeta
    """The kernel these tables belong to."""
    nodes: dict[str, pa.Table]
    """Node label → table with ``id``, ``kernel`` and the label's properties."""
    rels: dict[tuple[str, str, str], pa.Table]
    """(type, from label, to label) → table with ``from``, ``to``, ``kernel`` and properties."""


class _Tables:
    """Rows per table, as tuples in schema order, turned into Arrow columns at the end."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.nodes: dict[str, list[tuple]] = defaultdict(list)
        self.rels: dict[tuple[str, str, str], list[tuple]] = defaultdict(list)
        self.seen: dict[str, set[str]] = defaultdict(set)

    def node(self, label: str, key: tuple[str, ...], *values) -> str:
        """Add a node once (by id); ``values`` are its properties in schema order. Returns its id."""
        nid = node_id(self.kernel, *key)
        seen = self.seen[label]
        if nid not in seen:
            seen.add(nid)
            self.nodes[label].append((nid, self.kernel, *values))
        return nid

    def rels_of(self, rtype: str, src_label: str, dst_label: str) -> list[tuple]:
        """The row list of one relationship table: append ``(from_id, to_id, kernel, *props)``."""
        return self.rels[(rtype, src_label, dst_label)]

    def arrow(self) -> tuple[dict[str, pa.Table], dict[tuple[str, str, str], pa.Table]]:
        nodes = {d.label: _table(arrow_schema(d.label), self.nodes[d.label]) for d in NODES if self.nodes.get(d.label)}
        rels = {key: _table(arrow_schema(key), rows) for key, rows in self.rels.items() if rows}
        return nodes, rels


def _table(schema: pa.Schema, rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    return pa.table([pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema)


def _pick_modules(modules: Iterable[ModuleData]) -> tuple[dict[str, ModuleData], list[Skipped]]:
    """One ModuleData per name: the last one wins. Callers list modules in source order, so an
    out-of-tree build given after a distribution kernel replaces its module of the same name."""
    chosen: dict[str, ModuleData] = {}
    dropped: list[Skipped] = []
    for m in modules:
        old = chosen.get(m.info.name)
        if old is not None:
            dropped.append(Skipped(old.info.path, f"duplicate module name {m.info.name!r} (using {m.info.path})"))
        chosen[m.info.name] = m
    return chosen, dropped


def build_kernel_graph(
    meta: KernelMeta,
    modules: Iterable[ModuleData],
    symvers: Iterable[SymversEntry] = (),
    lookups: Iterable[LookUpEdge] = (),
    sources: Iterable["SourceTree"] = (),
) -> tuple[GraphBatch, BuildReport]:
    """Resolve one kernel's records into a :class:`GraphBatch` and a :class:`BuildReport`.

    ``modules`` may come from several sources (a distribution kernel plus out-of-tree builds):
    list them in source order, later sources override earlier ones. ``sources`` are indexed
    source trees (:mod:`ksymgraph.graph.source`) whose functions, calls, export sites and
    lookups join the binary graph.
    """
    sources = list(sources)
    with_source = {m for tree in sources for m in tree.built_into.values()}
    k = meta.release
    t = _Tables(k)
    t.node("Kernel", ("kernel",), k, meta.version, meta.arch, meta.source)
    chosen, duplicates = _pick_modules(modules)

    # Exports: ksymtab of the .ko files; Module.symvers for vmlinux and absent modules.
    exports: dict[tuple[str, str], Export] = {}
    for m in chosen.values():
        for e in m.exports:
            exports[(e.module, e.symbol)] = e
    symvers_only: set[str] = set()
    mismatches: list[str] = []
    for entry in symvers:
        e = entry.export
        if e.module in chosen:
            have = exports.get((e.module, e.symbol))
            if have is None:
                mismatches.append(f"{e.symbol}: in Module.symvers for {e.module}, not in its ksymtab")
            elif (have.gpl, have.namespace, have.crc) != (e.gpl, e.namespace, e.crc) and have.crc is not None:
                mismatches.append(f"{e.symbol}: {e.module} ksymtab says gpl={have.gpl} ns={have.namespace!r} "
                                  f"crc={have.crc:#x}, Module.symvers gpl={e.gpl} ns={e.namespace!r} crc={e.crc:#x}")
            continue
        symvers_only.add(e.module)
        exports.setdefault((e.module, e.symbol), e)

    # Modules: (name, path, license, gpl_compatible, vermagic, srcversion, intree, import_ns, in_tree_source).
    mod_ids = {"vmlinux": t.node("Module", ("vmlinux",), "vmlinux", "", "GPL", True, "", "", True, [], None)}
    for name in sorted(chosen):
        i: ModuleInfo = chosen[name].info
        mod_ids[name] = t.node("Module", (name,), name, i.path, i.license, license_is_gpl_compatible(i.license),
                               i.vermagic, i.srcversion, i.intree, list(i.import_ns), name in with_source)
    for name in sorted(symvers_only - set(mod_ids)):
        mod_ids[name] = t.node("Module", (name,), name, "", "", None, "", "", True, [], None)

    # Symbols: everything exported, imported or looked up, once.
    lookups = [lu for lu in lookups if lu.module in mod_ids]
    names = {sym for _mod, sym in exports}
    names.update(i.symbol for m in chosen.values() for i in m.imports)
    names.update(lu.symbol for lu in lookups)
    sym_ids = {n: t.node("Symbol", (n,), n, "unknown") for n in sorted(names)}

    exporters: dict[str, list[str]] = defaultdict(list)
    rows = t.rels_of("EXPORTS", "Module", "Symbol")
    for (mod, sym), e in sorted(exports.items()):
        rows.append((mod_ids[mod], sym_ids[sym], k, e.gpl, e.namespace, e.crc))
        exporters[sym].append(mod)
        if e.namespace:
            t.node("Namespace", (e.namespace,), e.namespace)

    # Imports, and the DEPENDS_ON edges derived from them as depmod derives them.
    rows = t.rels_of("IMPORTS", "Module", "Symbol")
    depends: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in sorted(chosen):
        m = chosen[name]
        mid = mod_ids[name]
        unique = {i.symbol: i for i in reversed(m.imports)}
        rows.extend((mid, sym_ids[s], k, i.crc, i.weak) for s, i in unique.items())
        for s in unique:
            for owner in exporters.get(s, ()):
                if owner != "vmlinux" and owner != name:
                    depends[(name, owner)].add(s)
        for ns in m.info.import_ns:
            t.rels_of("IMPORTS_NS", "Module", "Namespace").append((mid, t.node("Namespace", (ns,), ns), k))
    n_imports = len(rows)
    t.rels_of("DEPENDS_ON", "Module", "Module").extend(
        (mod_ids[a], mod_ids[b], k, sorted(syms)) for (a, b), syms in sorted(depends.items()))
    t.rels_of("LOOKS_UP", "Module", "Symbol").extend(
        (mod_ids[lu.module], sym_ids[lu.symbol], k, lu.how, lu.file, lu.line) for lu in lookups)

    nodes, rels = t.arrow()
    source_counts: dict[str, int] = {}
    if sources:
        from ksymgraph.graph.source import source_tables

        st = source_tables(k, sources, mod_ids, set(sym_ids.values()))
        # A symbol some non-static function implements is a function (the binaries cannot tell).
        implemented = st.rels[("IMPLEMENTS", "Function", "Symbol")]["to"]
        sym = nodes["Symbol"]
        kind = pc.if_else(pc.is_in(sym["id"], implemented), pa.scalar("function"), sym["kind"])
        nodes["Symbol"] = sym.set_column(sym.column_names.index("kind"), "kind", kind)
        _merge(nodes, st.nodes)
        _merge(rels, st.rels)
        source_counts = dict(st.counts, modules_with_source=len(set(chosen) & with_source))
    report = BuildReport(
        modules=len(mod_ids), exports=len(exports), imports=n_imports, depends=len(depends),
        symbols=nodes["Symbol"].num_rows if "Symbol" in nodes else 0, duplicates=duplicates,
        symvers_mismatches=mismatches, source=source_counts,
        unmapped=sorted(set(chosen) - with_source) if sources else [])
    return GraphBatch(meta, nodes, rels), report


def _merge(into: dict, more: dict) -> None:
    """Append ``more``'s tables to ``into``'s, cast to the schema's column types."""
    for key, table in more.items():
        if table.num_rows == 0:
            continue
        schema = arrow_schema(key)
        table = table.select(schema.names).cast(schema)
        into[key] = pa.concat_tables([into[key], table]) if key in into else table
