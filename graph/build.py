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
from typing import Iterable, NamedTuple

import pyarrow as pa

from ksymgraph.graph.schema import NODES, RELS, arrow_type, node_id
from ksymgraph.loaders.elf import ModuleData
from ksymgraph.loaders.records import Export, Import, ModuleInfo, Skipped
from ksymgraph.loaders.symvers import SymversEntry

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


class GraphBatch(NamedTuple):
    """One kernel's graph as Arrow tables, keyed by node label and by (type, from, to)."""

    kernel: KernelMeta
    """The kernel these tables belong to."""
    nodes: dict[str, pa.Table]
    """Node label → table with ``id``, ``kernel`` and the label's properties."""
    rels: dict[tuple[str, str, str], pa.Table]
    """(type, from label, to label) → table with ``from``, ``to``, ``kernel`` and properties."""


class _Tables:
    """Column lists per table, turned into Arrow at the end."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.nodes: dict[str, dict[str, list]] = {}
        self.rels: dict[tuple[str, str, str], dict[str, list]] = {}
        self.seen: dict[str, set[str]] = defaultdict(set)

    def node(self, label: str, key: tuple[str, ...], **props) -> str:
        nid = node_id(self.kernel, *key)
        if nid in self.seen[label]:
            return nid
        self.seen[label].add(nid)
        decl = next(n for n in NODES if n.label == label)
        cols = self.nodes.setdefault(label, {c: [] for c in ["id", "kernel", *(p.name for p in decl.props)]})
        cols["id"].append(nid)
        cols["kernel"].append(self.kernel)
        for p in decl.props:
            cols[p.name].append(props.get(p.name))
        return nid

    def rel(self, rtype: str, src: tuple[str, str], dst: tuple[str, str], **props) -> None:
        decl = next(r for r in RELS if r.type == rtype)
        key = (rtype, src[0], dst[0])
        cols = self.rels.setdefault(key, {c: [] for c in ["from", "to", "kernel", *(p.name for p in decl.props)]})
        cols["from"].append(src[1])
        cols["to"].append(dst[1])
        cols["kernel"].append(self.kernel)
        for p in decl.props:
            cols[p.name].append(props.get(p.name))

    def arrow(self) -> tuple[dict[str, pa.Table], dict[tuple[str, str, str], pa.Table]]:
        nodes = {}
        for decl in NODES:
            if decl.label in self.nodes:
                fields = [pa.field("id", pa.string()), pa.field("kernel", pa.string())]
                fields += [pa.field(p.name, arrow_type(p.type)) for p in decl.props]
                nodes[decl.label] = pa.table(self.nodes[decl.label], schema=pa.schema(fields))
        rels = {}
        for key, cols in self.rels.items():
            decl = next(r for r in RELS if r.type == key[0])
            fields = [pa.field("from", pa.string()), pa.field("to", pa.string()), pa.field("kernel", pa.string())]
            fields += [pa.field(p.name, arrow_type(p.type)) for p in decl.props]
            rels[key] = pa.table(cols, schema=pa.schema(fields))
        return nodes, rels


def _pick_modules(modules: Iterable[ModuleData]) -> tuple[dict[str, ModuleData], list[Skipped]]:
    """One ModuleData per name; a later source replaces an earlier one (an out-of-tree build
    overriding a distribution module), within one source the first path in sort order wins."""
    chosen: dict[str, ModuleData] = {}
    dropped: list[Skipped] = []
    for m in modules:
        old = chosen.get(m.info.name)
        if old is not None:
            keep, drop = (old, m) if old.info.path <= m.info.path else (m, old)
            dropped.append(Skipped(drop.info.path, f"duplicate module name {m.info.name!r} (using {keep.info.path})"))
            m = keep
        chosen[m.info.name] = m
    return chosen, dropped


def build_kernel_graph(
    meta: KernelMeta,
    modules: Iterable[ModuleData],
    symvers: Iterable[SymversEntry] = (),
    lookups: Iterable[LookUpEdge] = (),
) -> tuple[GraphBatch, BuildReport]:
    """Resolve one kernel's records into a :class:`GraphBatch` and a :class:`BuildReport`.

    ``modules`` may come from several sources (a distribution kernel plus out-of-tree builds):
    list them in source order, later sources override earlier ones.
    """
    k = meta.release
    t = _Tables(k)
    t.node("Kernel", ("kernel",), release=k, version=meta.version, arch=meta.arch, source=meta.source)
    chosen, duplicates = _pick_modules(modules)

    # Exports: ksymtab of the .ko files; Module.symvers for vmlinux and absent modules.
    exports: dict[tuple[str, str], Export] = {}
    for m in chosen.values():
        for e in m.exports:
            exports[(e.module, e.symbol)] = e
    symvers_only: dict[str, str] = {}
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
        symvers_only.setdefault(e.module, entry.owner)
        exports.setdefault((e.module, e.symbol), e)

    # Modules.
    mod_ids: dict[str, str] = {}
    mod_ids["vmlinux"] = t.node("Module", ("vmlinux",), name="vmlinux", path="", license="GPL", gpl_compatible=True,
                                vermagic="", srcversion="", intree=True, import_ns=[], in_tree_source=None)
    for name in sorted(chosen):
        i: ModuleInfo = chosen[name].info
        mod_ids[name] = t.node(
            "Module", (name,), name=name, path=i.path, license=i.license,
            gpl_compatible=license_is_gpl_compatible(i.license), vermagic=i.vermagic, srcversion=i.srcversion,
            intree=i.intree, import_ns=list(i.import_ns), in_tree_source=None)
    for name in sorted(symvers_only):
        if name not in mod_ids:
            mod_ids[name] = t.node("Module", (name,), name=name, path="", license="", gpl_compatible=None,
                                   vermagic="", srcversion="", intree=True, import_ns=[], in_tree_source=None)

    def symbol(name: str) -> str:
        return t.node("Symbol", (name,), name=name, kind="unknown")

    exporters: dict[str, list[str]] = defaultdict(list)
    for (mod, sym), e in sorted(exports.items()):
        t.rel("EXPORTS", ("Module", mod_ids[mod]), ("Symbol", symbol(sym)), gpl=e.gpl, namespace=e.namespace, crc=e.crc)
        exporters[sym].append(mod)
        if e.namespace:
            t.node("Namespace", (e.namespace,), name=e.namespace)

    # Imports and the DEPENDS_ON edges derived from them.
    n_imports = 0
    depends: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name in sorted(chosen):
        m = chosen[name]
        seen: set[str] = set()
        for imp in m.imports:
            if imp.symbol in seen:
                continue
            seen.add(imp.symbol)
            t.rel("IMPORTS", ("Module", mod_ids[name]), ("Symbol", symbol(imp.symbol)), crc=imp.crc, weak=imp.weak)
            n_imports += 1
            for owner in exporters.get(imp.symbol, ()):
                if owner not in ("vmlinux", name):
                    depends[(name, owner)].add(imp.symbol)
        for ns in m.info.import_ns:
            nid = t.node("Namespace", (ns,), name=ns)
            t.rel("IMPORTS_NS", ("Module", mod_ids[name]), ("Namespace", nid))
    for (a, b), syms in sorted(depends.items()):
        t.rel("DEPENDS_ON", ("Module", mod_ids[a]), ("Module", mod_ids[b]), symbols=sorted(syms))

    for lu in lookups:
        if lu.module in mod_ids:
            t.rel("LOOKS_UP", ("Module", mod_ids[lu.module]), ("Symbol", symbol(lu.symbol)),
                  how=lu.how, file=lu.file, line=lu.line)

    nodes, rels = t.arrow()
    report = BuildReport(
        modules=len(mod_ids), exports=len(exports), imports=n_imports, depends=len(depends),
        symbols=len(t.seen["Symbol"]), duplicates=duplicates, symvers_mismatches=mismatches)
    return GraphBatch(meta, nodes, rels), report
