"""Kernel-to-kernel diff of exports, and what an upgrade does to a set of out-of-tree modules.

:func:`diff_kernels` compares the exports of two stored kernels: removed, added, turned GPL-only
(and back), namespaced or moved between namespaces, moved to another owner (vmlinux ↔ module, a
renamed module), CRC changed.

:func:`upgrade_impact` takes modules that work on kernel A (files built against A, or modules of
A by name) and runs the load rules against kernel B: per module, the imports whose export vanished,
turned GPL-only for its licence, or moved into a namespace it does not import; the symbols it
looks up by name that B no longer has; and the cascade inside the set. Where a vanished export
is only an ELF-level rename behind an unchanged source API, :mod:`ksymgraph.queries.renames`
(when both kernels' headers are loaded) turns the break into "rebuild needed, API kept".
"""

from __future__ import annotations

from typing import NamedTuple

from ..graph.projection import KernelProjection, export_rows
from ..graph.store import GraphStore
from ..loaders.records import ModuleData
from .callsites import sites_by_module
from .library import QueryError
from .records import ExportState, ModuleVerdict
from .renames import find_renames, headers_loaded
from .whatif import failing_modules

__all__ = ["DiffEntry", "KernelDiff", "UpgradeImpact", "diff_kernels",
           "upgrade_impact", "rebuilt_against", "DIFF_KINDS"]

#: JSON keys of a diff, in report order.
DIFF_KINDS = ("removed", "added", "gpl_only", "not_gpl_only", "namespace", "owner", "crc")


class DiffEntry(NamedTuple):
    """One symbol whose export differs between kernel A and kernel B."""

    symbol: str
    """The symbol."""
    a: ExportState | None
    """Its export in A (None: not exported)."""
    b: ExportState | None
    """Its export in B (None: not exported)."""

    def to_json(self) -> dict:
        return {"symbol": self.symbol, "a": self.a._asdict() if self.a else None,
                "b": self.b._asdict() if self.b else None}


class KernelDiff(NamedTuple):
    """Export changes from kernel A to kernel B, by kind (a symbol can appear under several)."""

    a: str
    """Kernel A."""
    b: str
    """Kernel B."""
    changes: dict[str, list[DiffEntry]]
    """Kind (one of :data:`DIFF_KINDS`) → entries, by symbol."""

    @property
    def summary(self) -> dict:
        s = {k: len(v) for k, v in self.changes.items()}
        s["tightened"] = s["removed"] + s["gpl_only"] + sum(
            1 for e in self.changes["namespace"] if e.b and e.b.namespace)
        return s

    @property
    def breaking(self) -> bool:
        """True when an export was removed or tightened (GPL-only, namespaced)."""
        return self.summary["tightened"] > 0

    def to_json(self) -> dict:
        out: dict = {"a": self.a, "b": self.b}
        out.update({k: [e.to_json() for e in v] for k, v in self.changes.items()})
        out["summary"] = self.summary
        return out


def _exports(store: GraphStore, kernel: str) -> dict[str, ExportState]:
    out: dict[str, ExportState] = {}
    for sym, mod, gpl, ns, crc in export_rows(store, kernel):
        # A symbol exported twice (rare: two modules) is compared by its first owner in name order.
        out.setdefault(sym, ExportState(mod, bool(gpl), ns or "", crc))
    return out


def diff_kernels(store: GraphStore, a: str, b: str) -> KernelDiff:
    """Compare the exports of stored kernels ``a`` and ``b``."""
    ea, eb = _exports(store, a), _exports(store, b)
    changes: dict[str, list[DiffEntry]] = {k: [] for k in DIFF_KINDS}
    for sym in sorted(ea.keys() | eb.keys()):
        x, y = ea.get(sym), eb.get(sym)
        entry = DiffEntry(sym, x, y)
        if y is None:
            changes["removed"].append(entry)
            continue
        if x is None:
            changes["added"].append(entry)
            continue
        if y.gpl and not x.gpl:
            changes["gpl_only"].append(entry)
        elif x.gpl and not y.gpl:
            changes["not_gpl_only"].append(entry)
        if x.namespace != y.namespace:
            changes["namespace"].append(entry)
        if x.module != y.module:
            changes["owner"].append(entry)
        if x.crc is not None and y.crc is not None and x.crc != y.crc:
            changes["crc"].append(entry)
    return KernelDiff(a, b, changes)


class UpgradeImpact(NamedTuple):
    """The upgrade impact of A → B on a set of modules."""

    diff: KernelDiff
    """The export diff A → B."""
    modules: list[ModuleVerdict]
    """One verdict per module of the set: ``loads`` once rebuilt against B's headers, ``as_built``
    why B refuses the binary built against A."""

    def to_json(self) -> dict:
        return {"a": self.diff.a, "b": self.diff.b,
                "modules": [m.to_json() for m in self.modules],
                "summary": {"modules": len(self.modules), "fail": sum(not m.loads for m in self.modules),
                            "rebuild_needed": sum(bool(m.as_built) for m in self.modules),
                            "rebuild_only": sum(m.loads and bool(m.rebuild) for m in self.modules)}}


def _still_there(store: GraphStore, kernel: str, symbols: list[str]) -> set[str]:
    """Symbols that kernel ``kernel`` exports or defines as a function in its loaded source."""
    rows = store.query("MATCH (s:Symbol)<-[:EXPORTS]-(m:Module) WHERE m.kernel = $kernel AND s.name IN $names "
                       "RETURN DISTINCT s.name", {"kernel": kernel, "names": symbols}).rows
    found = {r[0] for r in rows}
    rows = store.query("MATCH (f:Function) WHERE f.kernel = $kernel AND f.name IN $names RETURN DISTINCT f.name",
                       {"kernel": kernel, "names": symbols}).rows
    return found | {r[0] for r in rows}


def upgrade_impact(store: GraphStore, a: str, b: str, files: list[ModuleData] = (),
                   names: list[str] = ()) -> UpgradeImpact:
    """Would the modules that load on ``a`` (``files`` built against it, or ``names`` of a's modules)
    load on ``b``?"""
    pa = KernelProjection.from_store(store, a)
    pb = KernelProjection.from_store(store, b)
    missing = [n for n in names if n not in pa.modules]
    if missing:
        raise QueryError(f"not modules of kernel {a}: {', '.join(missing)}")
    # Modules of A taken by name carry their imports and exports over to B as they are.
    from_a = [pa.module_data(n) for n in names]
    subset = list(files) + from_a
    lookups = {m.info.name: pa.lookups.get(m.info.name, []) for m in subset}
    # Renames: an import that vanished behind a kept API is taken as satisfied by its new export.
    eb = {sym for sym in pb.exports}
    vanished = sorted({s for m in subset for s, weak in zip(m.imports.symbols, m.imports.weak)
                       if s not in eb and not weak})
    renames = {}
    if vanished and headers_loaded(store, a) and headers_loaded(store, b):
        renames = find_renames(store, a, b, vanished)
    # Rebuilt against B's headers: B's vermagic and CRCs, with the renames followed.
    rebuilt = [rebuilt_against(m, pb, renames) for m in subset]
    failing = failing_modules(pb.with_modules(rebuilt, lookups))
    # As built against A: what B's loader refuses in the binary itself (vermagic, CRCs), which a
    # rebuild mends.
    as_built = failing_modules(pb.with_modules(subset, lookups))
    wanted = sorted({lu.symbol for lus in lookups.values() for lu in lus})
    present = _still_there(store, b, wanted) if wanted else set()
    broken = [(n, r.symbol) for n, rs in failing.items() for r in rs if r.rule != "dependency"]
    sites = sites_by_module(store, a, broken)
    out = []
    for m in subset:
        name = m.info.name
        gone = [lu for lu in lookups[name] if lu.symbol not in present]
        reasons = failing.get(name, [])
        rebuild = [renames[s][0] for s in m.imports.symbols if s in renames]
        binary = [r for r in as_built.get(name, []) if r.rule in _BINARY_RULES]
        out.append(ModuleVerdict(name, m.info.path, not reasons and not gone, reasons, {}, gone, rebuild,
                                 sites.get(name, []), binary))
    return UpgradeImpact(diff_kernels(store, a, b), out)


#: The rules a rebuild against the new kernel satisfies by itself.
_BINARY_RULES = ("vermagic", "modversions")


def rebuilt_against(m: ModuleData, kernel: KernelProjection, renames: dict | None = None) -> ModuleData:
    """``m`` as a rebuild against ``kernel``'s headers would make it: the kernel's vermagic and
    modversions, no CRC of its own (the build records the kernel's), renamed imports followed
    (``renames``: vanished symbol → its :class:`~ksymgraph.queries.records.Rename` list)."""
    b = kernel.build
    renames = renames or {}
    info = m.info._replace(vermagic=b.vermagic or m.info.vermagic, modversions=bool(b.modversions), layout_crc=None)
    symbols = [renames[s][0].now_via if s in renames else s for s in m.imports.symbols]
    return m._replace(info=info, imports=m.imports._replace(symbols=symbols, crcs=[None] * len(symbols)))
