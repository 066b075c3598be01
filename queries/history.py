"""History across kernels: which release dropped, tightened or moved an export.

:func:`export_history` takes the kernels of a store in version order (Debian's own order for
Debian kernels: ``6.1.170-3`` < ``6.1.176-1`` < ``6.12.43-1~bpo12+1`` < ``6.12.43-1``; the
release string for others; a kernel whose version cannot be read is placed after the others, by
name, and flagged) and, for each symbol, how each kernel exports it — owner, GPL, namespace, CRC,
in-tree importers — and the transitions between neighbours: appeared, vanished, turned GPL-only,
lost GPL-only, namespace changed, owner changed, CRC changed, each with the last kernel before and
the first after.

:func:`module_history` follows one module along the series: for each symbol it imports, the first
kernel whose load rules would refuse it rebuilt against that kernel's headers, and by which rule;
and the first kernel that refuses the binary as it was built (vermagic, CRCs).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Iterable, NamedTuple

from ..graph.projection import KernelProjection
from ..graph.store import GraphStore
from ..loaders.debnames import debian_version_key, release_flavour
from ..loaders.records import ModuleData
from .library import QueryError
from .records import ExportState, Reason

__all__ = ["KernelPoint", "KernelExport", "Transition", "History", "ModuleStep", "ModuleHistory",
           "TRANSITION_KINDS", "ordered_kernels", "export_history", "module_history",
           "module_from_store"]

#: The kinds of transition, in report order.
TRANSITION_KINDS = ("appeared", "vanished", "gpl_only", "not_gpl_only", "namespace", "owner", "crc")


class KernelPoint(NamedTuple):
    """One kernel of the series."""

    kernel: str
    """Its name in the store."""
    version: str
    """What it is ordered by: the package version, else the release; ``""`` when neither parses."""
    placed_by_name: bool
    """True when its version could not be read: it is placed after the others, by name."""
    flavour: str = ""
    """Its Debian flavour (``amd64``, ``cloud-amd64``, ``rt-amd64``), ``""`` for other kernels."""


class KernelExport(NamedTuple):
    """How one kernel of the series exports one symbol."""

    kernel: str
    """The kernel."""
    export: ExportState | None
    """Owner, GPL, namespace and CRC; None when the kernel does not export the symbol."""
    importers: int
    """In-tree modules of this kernel that import the symbol."""

    def to_json(self) -> dict:
        e = self.export
        return {"kernel": self.kernel, "exported": e is not None, "owner": e.module if e else "",
                "gpl": e.gpl if e else False, "namespace": e.namespace if e else "", "crc": e.crc if e else None,
                "importers": self.importers}


class Transition(NamedTuple):
    """A change of one symbol's export between two neighbouring kernels of the series."""

    symbol: str
    """The symbol."""
    kind: str
    """One of :data:`TRANSITION_KINDS`."""
    before: str
    """The last kernel with the old state."""
    after: str
    """The first kernel with the new state."""
    detail: str
    """What changed, in words (``vmlinux -> kvm``, ``0x1234abcd -> 0x99999999``)."""

    def to_json(self) -> dict:
        return self._asdict()


class History(NamedTuple):
    """The export history of some symbols over a store's kernels."""

    kernels: list[KernelPoint]
    """The kernels, in order."""
    states: dict[str, list[KernelExport]]
    """Symbol → how each kernel exports it, in kernel order."""
    transitions: list[Transition]
    """Every transition, by symbol then kernel order."""
    never_exported: dict[str, list[str]]
    """Symbols no kernel of the series exports → the closest names that some kernel does export."""

    def to_json(self) -> dict:
        return {"kernels": [k.kernel for k in self.kernels],
                "kernels_placed_by_name": [k.kernel for k in self.kernels if k.placed_by_name],
                "states": {s: [x.to_json() for x in xs] for s, xs in self.states.items()},
                "transitions": [t.to_json() for t in self.transitions],
                "never_exported": self.never_exported}


# Kernel order ------------------------------------------------------------------------------------

_VERSION = re.compile(r"^\d+\.\d+")


def ordered_kernels(store: GraphStore, flavour: str | None = "") -> list[KernelPoint]:
    """The store's kernels in version order (see the module docstring).

    Kernels of one flavour make a series (an ``-rt`` kernel's exports and CRCs differ from the
    plain kernel's of the same version): ``flavour`` picks one (``amd64``, ``cloud-amd64``); ``""``
    the flavour most kernels of the store have; None all kernels, whatever their flavour.
    """
    points = []
    for kernel, version in store.query("MATCH (k:Kernel) RETURN k.release, k.version").rows:
        v = version if version and _VERSION.match(version) else kernel if _VERSION.match(kernel) else ""
        points.append(KernelPoint(kernel, v, not v, release_flavour(kernel)))
    if flavour == "" and points:
        counts = Counter(p.flavour for p in points)
        flavour = max(counts, key=lambda f: (counts[f], -len(f), f))
    if flavour is not None:
        if not any(p.flavour == flavour for p in points):
            have = sorted({p.flavour for p in points})
            raise QueryError(f"no kernel of flavour {flavour!r} in the store; it has: "
                             f"{', '.join(h or '(none)' for h in have)} (--flavour all: every kernel)")
        points = [p for p in points if p.flavour == flavour]
    known = sorted((p for p in points if not p.placed_by_name), key=lambda p: (debian_version_key(p.version), p.kernel))
    return known + sorted((p for p in points if p.placed_by_name), key=lambda p: p.kernel)


def _within(points: list[KernelPoint], since: str | None, until: str | None) -> list[KernelPoint]:
    names = [p.kernel for p in points]
    for k in (since, until):
        if k is not None and k not in names:
            raise QueryError(f"kernel {k!r} is not in the store; it holds: {', '.join(names) or 'none'}")
    lo = names.index(since) if since else 0
    hi = names.index(until) + 1 if until else len(names)
    return points[lo:hi]


# Export history ----------------------------------------------------------------------------------

_EXPORTS = """
MATCH (m:Module)-[e:EXPORTS]->(s:Symbol) WHERE s.name IN $symbols
RETURN m.kernel AS kernel, s.name AS symbol, m.name AS owner, e.gpl AS gpl, e.namespace AS namespace, e.crc AS crc
ORDER BY kernel, symbol, owner
"""
_IMPORTERS = """
MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE s.name IN $symbols AND m.intree = true
RETURN m.kernel AS kernel, s.name AS symbol, count(m) AS importers
"""
_ALL_EXPORTED = "MATCH (m:Module)-[:EXPORTS]->(s:Symbol) RETURN DISTINCT s.name"


def export_history(store: GraphStore, symbols: Iterable[str], since: str | None = None,
                   until: str | None = None, flavour: str | None = "") -> History:
    """How each of ``symbols`` is exported along the store's kernels of one ``flavour`` (see
    :func:`ordered_kernels`; from ``since`` to ``until``, by name), and the transitions."""
    symbols = sorted(set(symbols))
    if not symbols:
        raise QueryError("name at least one symbol")
    points = _within(ordered_kernels(store, flavour), since, until)
    if not points:
        raise QueryError(f"{store.describe()} holds no kernel yet: run `ksymgraph load SOURCE` first")
    kernels = {p.kernel for p in points}
    exports: dict[tuple[str, str], ExportState] = {}
    for kernel, sym, owner, gpl, ns, crc in store.query(_EXPORTS, {"symbols": symbols}).rows:
        if kernel in kernels:  # a symbol exported twice (rare) is taken by its first owner by name, as diff does
            exports.setdefault((kernel, sym), ExportState(owner, bool(gpl), ns or "", crc))
    importers = {(k, s): n for k, s, n in store.query(_IMPORTERS, {"symbols": symbols}).rows}
    states: dict[str, list[KernelExport]] = {}
    transitions: list[Transition] = []
    for sym in symbols:
        row = [KernelExport(p.kernel, exports.get((p.kernel, sym)), importers.get((p.kernel, sym), 0)) for p in points]
        states[sym] = row
        for a, b in zip(row, row[1:]):
            transitions += _transitions(sym, a, b)
    never = [s for s in symbols if not any(x.export for x in states[s])]
    close = {}
    if never:
        names = [r[0] for r in store.query(_ALL_EXPORTED).rows]
        close = {s: difflib.get_close_matches(s, names, n=3, cutoff=0.75) for s in never}
    return History(points, states, transitions, close)


def _transitions(sym: str, before: KernelExport, after: KernelExport) -> list[Transition]:
    def t(kind: str, detail: str) -> Transition:
        return Transition(sym, kind, before.kernel, after.kernel, detail)

    a, b = before.export, after.export
    if a is None or b is None:
        if a is b:
            return []
        return [t("appeared", f"exported by {b.module}") if b else t("vanished", f"was exported by {a.module}")]
    out = []
    if a.gpl != b.gpl:
        out.append(t("gpl_only" if b.gpl else "not_gpl_only",
                     "EXPORT_SYMBOL -> EXPORT_SYMBOL_GPL" if b.gpl else "EXPORT_SYMBOL_GPL -> EXPORT_SYMBOL"))
    if a.namespace != b.namespace:
        out.append(t("namespace", f"{a.namespace or '(none)'} -> {b.namespace or '(none)'}"))
    if a.module != b.module:
        out.append(t("owner", f"{a.module} -> {b.module}"))
    if a.crc is not None and b.crc is not None and a.crc != b.crc:
        out.append(t("crc", f"{a.crc:#010x} -> {b.crc:#010x}"))
    return out


# Module history ----------------------------------------------------------------------------------

class ModuleStep(NamedTuple):
    """Where, along the series, one import of a module stops it loading."""

    symbol: str
    """The imported symbol (``""`` for the module as a whole: vermagic)."""
    first_refused: str | None
    """The first kernel that would refuse the module for it, rebuilt against that kernel; None: none."""
    rule: str
    """The rule there (``unknown-symbol``, ``gpl-only``, ``namespace``, ...); ``""`` when none."""
    message: str
    """The kernel's or modpost's message there."""
    last_loading: str | None
    """The last kernel before ``first_refused`` (None when it is the first kernel of the series)."""


class ModuleHistory(NamedTuple):
    """One module along the store's kernels."""

    module: str
    """Module name."""
    kernels: list[KernelPoint]
    """The kernels, in order."""
    loads: dict[str, bool]
    """Kernel → would the module load there, rebuilt against it."""
    steps: list[ModuleStep]
    """For each import: where it first breaks the module (sorted by that kernel, then symbol)."""
    binary_refused_from: str | None
    """The first kernel that refuses the binary as built (vermagic or CRCs); None: none."""
    binary_reasons: list[Reason]
    """Why, there."""

    def to_json(self) -> dict:
        return {"module": self.module, "kernels": [k.kernel for k in self.kernels], "loads": self.loads,
                "steps": [s._asdict() for s in self.steps], "binary_refused_from": self.binary_refused_from,
                "binary_reasons": [r.to_json() for r in self.binary_reasons]}


def module_history(store: GraphStore, module: ModuleData, since: str | None = None,
                   until: str | None = None, projection=None, flavour: str | None = "") -> ModuleHistory:
    """``module`` (read from its file, or taken from the store) along the series.

    ``projection`` maps a kernel name to its :class:`KernelProjection` (default: read each once).
    """
    from .diff import rebuilt_against
    from .whatif import failing_modules

    points = _within(ordered_kernels(store, flavour), since, until)
    get = projection or (lambda k: KernelProjection.from_store(store, k))
    name = module.info.name
    first: dict[str, tuple[str, Reason]] = {}
    loads: dict[str, bool] = {}
    binary_from, binary = None, []
    for p in points:
        proj = get(p.kernel)
        rebuilt = failing_modules(proj.with_modules([rebuilt_against(module, proj)])).get(name, [])
        loads[p.kernel] = not rebuilt
        for r in rebuilt:
            if r.rule != "dependency" and r.symbol not in first:
                first[r.symbol] = (p.kernel, r)
        if binary_from is None:
            as_built = [r for r in failing_modules(proj.with_modules([module])).get(name, [])
                        if r.rule in ("vermagic", "modversions")]
            if as_built:
                binary_from, binary = p.kernel, as_built
    order = {p.kernel: i for i, p in enumerate(points)}
    steps = []
    for sym in sorted(set(module.imports.symbols) | set(first)):
        if sym in first:
            kernel, r = first[sym]
            i = order[kernel]
            steps.append(ModuleStep(sym, kernel, r.rule, r.message, points[i - 1].kernel if i else None))
        else:
            steps.append(ModuleStep(sym, None, "", "", None))
    steps.sort(key=lambda s: (s.first_refused is None, order.get(s.first_refused, 0), s.symbol))
    return ModuleHistory(name, points, loads, steps, binary_from, binary)


def module_from_store(store: GraphStore, name: str, since: str | None = None, flavour: str | None = "") -> ModuleData:
    """Module ``name`` as the first kernel of the series (from ``since``) that has it holds it: the
    module as it was, to follow forward."""
    for p in _within(ordered_kernels(store, flavour), since, None):
        proj = KernelProjection.from_store(store, p.kernel)
        if name in proj.modules and name != "vmlinux":
            return proj.module_data(name)
    close = difflib.get_close_matches(name, [r[0] for r in store.query("MATCH (m:Module) RETURN DISTINCT m.name").rows])
    raise QueryError(f"no kernel in {store.describe()} has a module {name!r}"
                     + (f"; did you mean {', '.join(close)}?" if close else "; give a module file instead"))
