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
    """Columns per table, turned into Arrow tables at the end.

    Columns, not rows: the largest table (IMPORTS, 185k rows for a Debian kernel) is filled by
    extending its columns a module at a time, with no tuple per row. Nodes and the ends of
    relationships are held by name; Arrow makes the ids (``kernel|name``, :func:`node_id`) and the
    ``kernel`` column at the end, rather than Python making half a million strings.
    """

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.columns: dict[str | tuple[str, str, str], list[list]] = {}
        self.seen: dict[str, set[str]] = defaultdict(set)

    def of(self, key: str | tuple[str, str, str]) -> list[list]:
        """The columns of a node label (name, props...) or of a relationship key
        (from name, to name, props...), props in :func:`arrow_schema` order."""
        cols = self.columns.get(key)
        if cols is None:
            cols = self.columns[key] = [[] for _ in range(len(arrow_schema(key)) - 1)]
        return cols

    def node(self, label: str, name: str, *values) -> None:
        """Add a node once (by name); ``values`` are its properties in schema order."""
        seen = self.seen[label]
        if name not in seen:
            seen.add(name)
            for col, v in zip(self.of(label), (name, *values)):
                col.append(v)

    def extend(self, key: str | tuple[str, str, str], *columns: list) -> None:
        """Add many rows at once, a list per column, as :meth:`of` orders them. Nodes added this way
        must be new."""
        if isinstance(key, str):
            self.seen[key].update(columns[0])
        for col, values in zip(self.of(key), columns):
            col.extend(values)

    def rel(self, rtype: str, src_label: str, dst_label: str, src: str, dst: str, *values) -> None:
        """Add one relationship between the nodes named ``src`` and ``dst``."""
        for col, v in zip(self.of((rtype, src_label, dst_label)), (src, dst, *values)):
            col.append(v)

    def count(self, key: str | tuple[str, str, str]) -> int:
        """Rows added so far to one table."""
        return len(self.columns[key][0]) if key in self.columns else 0

    def arrow(self) -> tuple[dict[str, pa.Table], dict[tuple[str, str, str], pa.Table]]:
        kernel = pa.scalar(self.kernel)
        tables = {}
        for key, cols in self.columns.items():
            if not cols[0]:
                continue
            schema = arrow_schema(key)
            ends = 1 if isinstance(key, str) else 2  # id, or from and to
            arrays = [pc.binary_join_element_wise(kernel, pa.array(c, pa.string()), "|") for c in cols[:ends]]
            arrays.append(pa.repeat(kernel, len(cols[0])))
            arrays += [pa.array(c, type=f.type) for c, f in zip(cols[ends:], list(schema)[ends + 1:])]
            tables[key] = pa.table(arrays, schema=schema)
        nodes = {d.label: tables[d.label] for d in NODES if d.label in tables}
        rels = {key: t for key, t in tables.items() if isinstance(key, tuple)}
        return nodes, rels


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
    t.node("Kernel", "kernel", k, meta.version, meta.arch, meta.source)
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
    t.node("Module", "vmlinux", "vmlinux", "", "GPL", True, "", "", True, [], None)
    for name in sorted(chosen):
        i: ModuleInfo = chosen[name].info
        t.node("Module", name, name, i.path, i.license, license_is_gpl_compatible(i.license),
               i.vermagic, i.srcversion, i.intree, list(i.import_ns), name in with_source)
    for name in sorted(symvers_only - t.seen["Module"]):
        t.node("Module", name, name, "", "", None, "", "", True, [], None)
    module_names = t.seen["Module"]

    # Symbols: everything exported, imported or looked up, once.
    lookups = [lu for lu in lookups if lu.module in module_names]
    names = {sym for _mod, sym in exports}
    for m in chosen.values():
        names.update(m.imports.symbols)
    names.update(lu.symbol for lu in lookups)
    names = sorted(names)
    t.extend("Symbol", names, names, ["unknown"] * len(names))

    ordered = [e for _key, e in sorted(exports.items())]
    t.extend(("EXPORTS", "Module", "Symbol"), [e.module for e in ordered], [e.symbol for e in ordered],
             [e.gpl for e in ordered], [e.namespace for e in ordered], [e.crc for e in ordered])
    for ns in sorted({e.namespace for e in ordered if e.namespace}):
        t.node("Namespace", ns, ns)
    # Who exports what, vmlinux aside: only these exports make one module depend on another.
    module_exporters: dict[str, list[str]] = defaultdict(list)
    for e in ordered:
        if e.module != "vmlinux":
            module_exporters[e.symbol].append(e.module)

    # Imports, and the DEPENDS_ON edges derived from them as depmod derives them.
    depends: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in sorted(chosen):
        m = chosen[name]
        symbols = m.imports.symbols
        t.extend(("IMPORTS", "Module", "Symbol"), [name] * len(symbols), symbols, m.imports.crcs, m.imports.weak)
        for s in symbols:
            for owner in module_exporters.get(s, ()):
                if owner != name:
                    depends[(name, owner)].add(s)
        for ns in m.info.import_ns:
            t.node("Namespace", ns, ns)
            t.rel("IMPORTS_NS", "Module", "Namespace", name, ns)
    n_imports = t.count(("IMPORTS", "Module", "Symbol"))
    for (a, b), syms in sorted(depends.items()):
        t.rel("DEPENDS_ON", "Module", "Module", a, b, sorted(syms))
    for lu in lookups:
        t.rel("LOOKS_UP", "Module", "Symbol", lu.module, lu.symbol, lu.how, lu.file, lu.line)

    nodes, rels = t.arrow()
    source_counts: dict[str, int] = {}
    if sources:
        from ksymgraph.graph.source import source_tables

        st = source_tables(k, sources, {n: node_id(k, n) for n in module_names}, {node_id(k, n) for n in names})
        # A symbol some non-static function implements is a function (the binaries cannot tell).
        implemented = st.rels[("IMPLEMENTS", "Function", "Symbol")]["to"]
        sym = nodes["Symbol"]
        kind = pc.if_else(pc.is_in(sym["id"], implemented), pa.scalar("function"), sym["kind"])
        nodes["Symbol"] = sym.set_column(sym.column_names.index("kind"), "kind", kind)
        _merge(nodes, st.nodes)
        _merge(rels, st.rels)
        source_counts = dict(st.counts, modules_with_source=len(set(chosen) & with_source))
    report = BuildReport(
        modules=len(module_names), exports=len(exports), imports=n_imports, depends=len(depends),
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
