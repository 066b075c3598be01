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
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..loaders.records import BuildOptions, Export, KernelMeta, LookUpEdge, ModuleData, ModuleInfo, Skipped
from ..loaders.symvers import SymversEntry
from .columns import TableStream, column, int64s, string_scalar, strings
from .schema import TableKey, arrow_schema, node_id

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Mapping

    from ..loaders.trees import SourceTree

__all__ = [
    "BuildReport",
    "GraphBatch",
    "build_kernel_graph",
]

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
    source: dict[str, int]
    """Rows written from source trees, per table (empty without source)."""
    unmapped: list[str]
    """With source: the modules read from files that no source file is attributed to."""


class GraphBatch(NamedTuple):
    """One kernel's graph as Arrow tables, keyed by node label and by (type, from, to)."""

    kernel: KernelMeta
    """The kernel these tables belong to."""
    nodes: dict[str, pa.Table]
    """Node label → table with ``id``, ``kernel`` and the label's properties."""
    rels: dict[tuple[str, str, str], pa.Table]
    """(type, from label, to label) → table with ``from``, ``to``, ``kernel`` and properties."""

    def tables(self) -> Iterator[tuple[TableKey, pa.Table]]:
        """Every non-empty table in writing order: node tables, then relationship tables."""
        for key, table in (*self.nodes.items(), *self.rels.items()):
            if table.num_rows:
                yield key, table


#: Between the kernel and the name in an id (:func:`~ksymgraph.graph.schema.node_id`).
_SEPARATOR = string_scalar("|")


class _Tables:
    """Columns per table, each turned into an Arrow table once it is complete.

    Columns, not rows: the largest table (IMPORTS, 185k rows for a Debian kernel) is filled by
    extending its columns a module at a time, with no tuple per row. Nodes and the ends of
    relationships are held by name; Arrow makes the ids (``kernel|name``, :func:`node_id`) and the
    ``kernel`` column, rather than Python making half a million strings. The ends of a
    relationship are taken from the ids of node tables already made, by row.
    """

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.columns: dict[TableKey, list[list]] = {}
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.made: dict[str, tuple[pa.Array, dict[str, int]]] = {}  # label -> (ids, row of each name)

    def of(self, key: TableKey) -> list[list]:
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

    def extend(self, key: TableKey, *columns: list) -> None:
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

    def count(self, key: TableKey) -> int:
        """Rows added so far to one table."""
        return len(self.columns[key][0]) if key in self.columns else 0

    def table(self, key: TableKey) -> pa.Table:
        """One table as Arrow, with its ids (``kernel|name``) and ``kernel`` column."""
        kernel = string_scalar(self.kernel)
        cols = self.columns[key]
        schema = arrow_schema(key)
        if isinstance(key, str):
            ids = pc.binary_join_element_wise(kernel, strings(cols[0]), _SEPARATOR)
            self.made[key] = (ids, {name: row for row, name in enumerate(cols[0])})
            arrays = [ids]
        else:
            arrays = [self._ids(label, names) for label, names in zip(key[1:], cols[:2])]
        ends = len(arrays)  # id, or from and to
        arrays.append(pa.repeat(kernel, len(cols[0])))
        arrays += [column(c, f.type) for c, f in zip(cols[ends:], list(schema)[ends + 1:])]
        return pa.table(arrays, schema=schema)

    def _ids(self, label: str, names: list[str]) -> pa.Array:
        """The ids of the nodes called ``names``, taken by row from the ids of ``label``'s table (a
        dict lookup per name costs less than joining each id again). The builder makes each node
        table before the relationship tables that join it."""
        ids, row_of = self.made[label]
        return ids.take(int64s(np.fromiter(map(row_of.__getitem__, names), dtype=np.int64, count=len(names))))


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
    ready: Callable[[TableKey, pa.Table], None] | None = None,
    config: Mapping[str, str] | str | Path | None = None,
) -> tuple[GraphBatch, BuildReport]:
    """Resolve one kernel's records into a :class:`GraphBatch` and a :class:`BuildReport`.

    ``modules`` may come from several sources (a distribution kernel plus out-of-tree builds):
    list them in source order, later sources override earlier ones. ``sources`` are indexed
    source trees (:mod:`ksymgraph.graph.source`) whose functions, calls, export sites and
    lookups join the binary graph.

    ``ready``, when given, is called with each table as soon as it is complete (each node table
    before the relationship tables that join it, the big ones first and the small ones last), so a
    store can write the first tables while the last are still being resolved
    (:meth:`ksymgraph.graph.store.GraphStore.writing_kernel`). The source's ``CALLS`` tables are
    then :class:`~ksymgraph.graph.columns.TableStream` s, and the tables are not kept: the returned
    batch has none (memory stays bounded on a whole kernel tree).

    ``config`` (the kernel's ``.config``, a path or a mapping) turns on the compiler-inserted
    imports of the source graph (:mod:`ksymgraph.graph.compiler`).
    """
    sources = list(sources)
    with_source = {m for tree in sources for m in tree.built_into.values()}
    k = meta.release
    out = _Handover(_Tables(k), ready)
    t = out.t
    # The big tables are handed over first, each when complete, so the store writes it while the
    # rest is resolved; the small ones last, when writing them no longer competes with resolving.
    # Source trees add no Kernel, Module or Namespace nodes.
    b = meta.build if meta.build is not None else BuildOptions.unknown()
    t.node("Kernel", "kernel", k, meta.version, meta.arch, meta.source, b.vermagic, b.modversions, b.force_load,
           b.missing_ns_allowed, b.source)
    chosen, duplicates = _pick_modules(modules)
    symvers = list(symvers)
    symvers_only = _symvers_only(symvers, chosen)
    _module_nodes(t, chosen, symvers_only, with_source)
    module_names = t.seen["Module"]
    out.done("Module", t.table("Module"))

    lookups = [lu for lu in lookups if lu.module in module_names]
    names = _symbol_nodes(t, chosen, symvers_only, lookups)
    _source_nodes(out, sources, config, module_names, names)

    exports, ordered, mismatches = _exports(chosen, symvers, symvers_only, b)
    t.extend(("EXPORTS", "Module", "Symbol"), [e.module for e in ordered], [e.symbol for e in ordered],
             [e.gpl for e in ordered], [e.namespace for e in ordered], [e.crc for e in ordered])
    out.rel_done(("EXPORTS", "Module", "Symbol"))
    n_imports, depends = _imports_and_depends(out, chosen, ordered)
    for lu in lookups:
        t.rel("LOOKS_UP", "Module", "Symbol", lu.module, lu.symbol, lu.how, lu.file, lu.line)
    out.rel_done(("LOOKS_UP", "Module", "Symbol"))
    for key in list(out.st.rels) if out.st is not None else ():
        if key not in out.handed:
            out.rel_done(key)
    out.done("Kernel", t.table("Kernel"))
    out.done("Namespace", out.ours("Namespace"))
    out.rel_done(("IMPORTS_NS", "Module", "Namespace"))

    source_counts: dict[str, int] = {}
    if out.st is not None:
        source_counts = dict(out.st.counts, modules_with_source=len(set(chosen) & with_source))
    report = BuildReport(
        modules=len(module_names), exports=len(exports), imports=n_imports, depends=len(depends),
        symbols=out.handed.get("Symbol", 0), duplicates=duplicates,
        symvers_mismatches=mismatches, source=source_counts,
        unmapped=sorted(set(chosen) - with_source) if sources else [])
    return GraphBatch(meta, out.nodes, out.rels), report


class _Handover:
    """Where the tables of one kernel go as each is complete: to ``ready`` (handed over and not
    kept: a kernel tree's source tables are gigabytes), else into the returned batch."""

    def __init__(self, t: "_Tables", ready: Callable[[TableKey, pa.Table], None] | None):
        self.t, self.ready = t, ready
        self.st = None  # the source tables, once resolved (each dropped as it is handed over)
        self.nodes: dict[str, pa.Table] = {}
        self.rels: dict[tuple[str, str, str], pa.Table] = {}
        self.handed: dict[TableKey, int] = {}  # rows of each table handed over

    def done(self, key: TableKey, table: pa.Table | TableStream | None) -> None:
        if table is None or table.num_rows == 0:
            return
        self.handed[key] = table.num_rows
        if self.ready is not None:
            self.ready(key, table)
            return
        (self.nodes if isinstance(key, str) else self.rels)[key] = table

    def ours(self, key: TableKey) -> pa.Table | None:
        return self.t.table(key) if self.t.count(key) else None

    def rel_done(self, key: tuple[str, str, str]) -> None:
        self.done(key, _merged(key, self.ours(key), self.st.rels.pop(key, None) if self.st else None))


def _symvers_only(symvers: list[SymversEntry], chosen: dict[str, ModuleData]) -> dict[tuple[str, str], Export]:
    """Module.symvers supplies vmlinux's exports and those of modules not given as files (the
    first line wins where one repeats an export)."""
    symvers_only: dict[tuple[str, str], Export] = {}
    for entry in symvers:
        e = entry.export
        if e.module not in chosen:
            symvers_only.setdefault((e.module, e.symbol), e)
    return symvers_only


def _module_nodes(t: "_Tables", chosen: dict[str, ModuleData], symvers_only: dict[tuple[str, str], Export],
                  with_source: set[str]) -> None:
    """Module nodes: (name, path, license, gpl_compatible, vermagic, srcversion, intree, import_ns,
    in_tree_source, modversions, layout_crc); the last two are what the modversions and vermagic
    rules check."""
    t.node("Module", "vmlinux", "vmlinux", "", "GPL", True, "", "", True, [], None, None, None)
    for name in sorted(chosen):
        i: ModuleInfo = chosen[name].info
        t.node("Module", name, name, i.path, i.license, i.gpl_compatible,
               i.vermagic, i.srcversion, i.intree, list(i.import_ns), name in with_source, i.modversions,
               i.layout_crc)
    for name in sorted({e.module for e in symvers_only.values()} - t.seen["Module"]):
        t.node("Module", name, name, "", "", None, "", "", True, [], None, None, None)


def _symbol_nodes(t: "_Tables", chosen: dict[str, ModuleData], symvers_only: dict[tuple[str, str], Export],
                  lookups: list[LookUpEdge]) -> list[str]:
    """Symbols (everything exported, imported or looked up, once) and Namespace nodes; the
    symbol names, sorted."""
    names = {symbol for _module, symbol in symvers_only}
    namespaces = {e.namespace for e in symvers_only.values() if e.namespace}
    for m in chosen.values():
        names.update(e.symbol for e in m.exports)
        names.update(m.imports.symbols)
        namespaces.update(e.namespace for e in m.exports if e.namespace)
        namespaces.update(m.info.import_ns)
    names.update(lu.symbol for lu in lookups)
    names = sorted(names)
    t.extend("Symbol", names, names, ["unknown"] * len(names))
    for ns in sorted(namespaces):
        t.node("Namespace", ns, ns)
    return names


def _source_nodes(out: _Handover, sources: list, config, module_names: set[str], names: list[str]) -> None:
    """Source trees add functions, files and symbols, and tell which symbols are functions; the
    Symbol table is handed over here, then the source's node tables."""
    k, t = out.t.kernel, out.t
    st = None
    if sources:
        from .compiler import read_build_config, with_compiler_inserts
        from .source import source_tables

        st = source_tables(k, sources, {n: node_id(k, n) for n in module_names}, {node_id(k, n) for n in names},
                           stream=out.ready is not None)
        st = with_compiler_inserts(st, k, read_build_config(config), {node_id(k, n) for n in names})
    out.st = st
    sym = t.table("Symbol")
    if st is not None:
        # A symbol some non-static function implements is a function (the binaries cannot tell).
        implemented = st.rels[("IMPLEMENTS", "Function", "Symbol")]["to"]
        kind = pc.if_else(pc.is_in(sym["id"], implemented), pa.scalar("function"), sym["kind"])
        sym = sym.set_column(sym.column_names.index("kind"), "kind", kind)
    # (each source table is dropped from st as it is handed over)
    out.done("Symbol", _merged("Symbol", sym, st.nodes.pop("Symbol", None) if st else None))
    for label in list(st.nodes) if st is not None else ():
        out.done(label, _merged(label, None, st.nodes.pop(label)))


def _exports(chosen: dict[str, ModuleData], symvers: list[SymversEntry], symvers_only: dict[tuple[str, str], Export],
             b: BuildOptions) -> tuple[dict[tuple[str, str], Export], list[Export], list[str]]:
    """Exports: ksymtab of the .ko files; Module.symvers for vmlinux and absent modules. Where
    both describe a module, the differences are reported. (exports, in order, mismatches)"""
    exports: dict[tuple[str, str], Export] = {}
    for m in chosen.values():
        for e in m.exports:
            exports[(e.module, e.symbol)] = e
    mismatches: list[str] = []
    for entry in symvers:
        e = entry.export
        if e.module in chosen:
            have = exports.get((e.module, e.symbol))
            if have is None:
                mismatches.append(f"{e.symbol}: in Module.symvers for {e.module}, not in its ksymtab")
            elif (have.gpl, have.namespace) != (e.gpl, e.namespace) or (
                    have.crc is not None and have.crc != e.crc):  # a .ko without CRCs: nothing to compare
                mismatches.append(f"{e.symbol}: {e.module} ksymtab says gpl={have.gpl} ns={have.namespace!r} "
                                  f"crc={_hex(have.crc)}, Module.symvers gpl={e.gpl} ns={e.namespace!r} "
                                  f"crc={_hex(e.crc)}")
    exports.update(symvers_only)
    ordered = [e for _key, e in sorted(exports.items())]
    if b.modversions is False:
        # Built without CONFIG_MODVERSIONS (Debian's 7.2): Module.symvers writes 0x00000000 for every
        # CRC; that is "no CRC", never a CRC that could change.
        ordered = [e._replace(crc=None) for e in ordered]
    return exports, ordered, mismatches


def _imports_and_depends(out: _Handover, chosen: dict[str, ModuleData],
                         ordered: list[Export]) -> tuple[int, dict[tuple[str, str], set[str]]]:
    """IMPORTS, IMPORTS_NS, and the DEPENDS_ON edges derived from the imports as depmod derives
    them; (the number of imports, the dependencies)."""
    t = out.t
    # Who exports what, vmlinux aside: only these exports make one module depend on another.
    module_exporters: dict[str, list[str]] = defaultdict(list)
    for e in ordered:
        if e.module != "vmlinux":
            module_exporters[e.symbol].append(e.module)
    for name in sorted(chosen):
        m = chosen[name]
        symbols = m.imports.symbols
        t.extend(("IMPORTS", "Module", "Symbol"), [name] * len(symbols), symbols, m.imports.crcs, m.imports.weak)
        for ns in m.info.import_ns:
            t.rel("IMPORTS_NS", "Module", "Namespace", name, ns)
    out.rel_done(("IMPORTS", "Module", "Symbol"))
    n_imports = t.count(("IMPORTS", "Module", "Symbol"))
    depends: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in sorted(chosen):
        # Most imports are vmlinux's: look up only those some module exports.
        for s in module_exporters.keys() & chosen[name].imports.symbols:
            for owner in module_exporters[s]:
                if owner != name:
                    depends[(name, owner)].add(s)
    for (a, b), syms in sorted(depends.items()):
        t.rel("DEPENDS_ON", "Module", "Module", a, b, sorted(syms))
    out.rel_done(("DEPENDS_ON", "Module", "Module"))
    return n_imports, depends


def _merged(key: TableKey, table: pa.Table | None, more: pa.Table | TableStream | None
            ) -> pa.Table | TableStream | None:
    """``table`` with the rows of ``more`` (a source table) appended, cast to the schema of ``key``;
    either may be None. A stream stays a stream (the binary side has no rows of those tables)."""
    if more is None or more.num_rows == 0:
        return table
    schema = arrow_schema(key)
    if isinstance(more, TableStream):
        if table is not None and table.num_rows:
            raise ValueError(f"internal error: {key} has rows from both the binaries and a stream")
        chunks = more.chunks
        return TableStream(schema, more.num_rows, lambda: (c.select(schema.names).cast(schema) for c in chunks()))
    more = more.select(schema.names).cast(schema)
    return more if table is None else pa.concat_tables([table, more])


def _hex(crc: int | None) -> str:
    return "none" if crc is None else f"{crc:#010x}"
