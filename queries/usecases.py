"""One function per question a user asks, for the command line and the notebooks alike.

Each use case takes a store and names (a kernel, changes, module files), reads what it needs, and
returns the result record that :mod:`ksymgraph.queries.report` renders: :func:`whatif` (the load
rules after a change, with call sites and replacements when source is loaded), :func:`check`,
:func:`diff` and :func:`upgrade`, :func:`rebuild` (the imports of a rebuild against another
kernel's headers), :func:`usage`. The CLI calls one per command; the notebooks and
the explorer call the same ones, so both always give the same answer.

Reading a kernel into memory (:class:`~ksymgraph.graph.projection.KernelProjection`) takes about a
second for a Debian kernel and a what-if on it milliseconds, so the projections are cached here,
per store and kernel (:func:`kernel_view`); :func:`forget` drops them after a kernel is loaded again.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from ..graph.projection import KernelProjection
from ..graph.store import GraphStore
from ..loaders.records import ModuleData
from .callsites import add_source_evidence, source_loaded
from .check import CheckResult, check_modules
from .diff import KernelDiff, UpgradeImpact, diff_kernels, upgrade_impact
from .history import History, ModuleHistory, export_history, module_from_store
from .history import module_history as _module_history
from .rebuild import RebuildPrediction, predict_rebuild
from .usage import UsageReport, export_usage
from .whatif import Change, WhatIfResult, what_if

__all__ = ["KernelView", "kernel_view", "forget", "whatif", "check", "diff", "upgrade", "rebuild", "usage",
           "history", "module_history"]


class KernelView(NamedTuple):
    """One kernel of a store as the use cases read it, once."""

    kernel: str
    """The kernel's name."""
    projection: KernelProjection
    """Its modules, exports, imports and lookups in memory."""
    exports: list[str]
    """Its exported symbols, sorted (for completion and close-name suggestions)."""
    modules: list[str]
    """Its modules, sorted."""
    source_loaded: bool
    """Whether its source graph is in the store (call sites can be listed)."""


#: (id of the store, kernel) → (the store, its view). The store is kept to tell a store from a new
#: one that got the same id after the first was closed.
_VIEWS: dict[tuple[int, str], tuple[GraphStore, KernelView]] = {}


def kernel_view(store: GraphStore, kernel: str | None = None) -> KernelView:
    """The view of ``kernel`` (default: the store's only kernel), read once per store and kernel."""
    kernel = store.resolve_kernel(kernel)
    hit = _VIEWS.get((id(store), kernel))
    if hit is None or hit[0] is not store:
        proj = KernelProjection.from_store(store, kernel)
        view = KernelView(kernel, proj, sorted(s for s, es in proj.exports.items() if es), sorted(proj.modules),
                          source_loaded(store, kernel))
        hit = _VIEWS[(id(store), kernel)] = (store, view)
    return hit[1]


def forget(store: GraphStore | None = None) -> None:
    """Drop the cached views (of one store, or all): after a kernel is loaded again."""
    for key, (s, _view) in list(_VIEWS.items()):
        if store is None or s is store:
            del _VIEWS[key]


def whatif(store: GraphStore, kernel: str | None, changes: list[Change], hops: int = 2) -> WhatIfResult:
    """Which modules fail to load after ``changes``; with the kernel's source loaded, the call sites
    to change in each and, for each removed export, still-exported callers within ``hops`` calls."""
    view = kernel_view(store, kernel)
    result = what_if(view.projection, changes)
    return add_source_evidence(result, store, hops) if view.source_loaded else result


def check(store: GraphStore, kernel: str | None, modules: list[ModuleData]) -> CheckResult:
    """Would ``modules`` (read from their files) load on ``kernel``?"""
    return check_modules(kernel_view(store, kernel).projection, modules, store)


def diff(store: GraphStore, a: str, b: str) -> KernelDiff:
    """The export changes from kernel ``a`` to kernel ``b``."""
    return diff_kernels(store, store.resolve_kernel(a), store.resolve_kernel(b))


def upgrade(store: GraphStore, a: str, b: str, files: Iterable[ModuleData] = (),
            names: Iterable[str] = ()) -> UpgradeImpact:
    """Would modules that load on ``a`` (``files`` built against it, or ``names`` of its modules)
    load on ``b``, as built and once rebuilt?"""
    return upgrade_impact(store, store.resolve_kernel(a), store.resolve_kernel(b), list(files), list(names))


def rebuild(store: GraphStore, a: str, b: str, files: Iterable[ModuleData] = (),
            names: Iterable[str] = ()) -> RebuildPrediction:
    """What modules of ``a`` (``names``, or ``files`` built against it), whose source ``a`` holds,
    would import once rebuilt against ``b``'s headers, and whether ``b`` would load them."""
    return predict_rebuild(store, store.resolve_kernel(a), store.resolve_kernel(b), list(names), list(files))


def usage(store: GraphStore, kernel: str | None) -> UsageReport:
    """Every export with its users, every module with its dependencies (export_report.pl's report)."""
    return export_usage(kernel_view(store, kernel).projection)


def history(store: GraphStore, symbols: Iterable[str], since: str | None = None, until: str | None = None,
            flavour: str | None = "") -> History:
    """How ``symbols`` are exported along the store's kernels of one flavour (``""``: the most
    common; None: all), in version order, and what changed when."""
    return export_history(store, symbols, since, until, flavour)


def module_history(store: GraphStore, module: ModuleData | str, since: str | None = None,
                   until: str | None = None, flavour: str | None = "") -> ModuleHistory:
    """Where, along the store's kernels of one flavour, ``module`` (read from its file, or the name
    of a module the store holds) would stop loading, and by which rule."""
    data = module_from_store(store, module, since, flavour) if isinstance(module, str) else module
    return _module_history(store, data, since, until, projection=lambda k: kernel_view(store, k).projection,
                           flavour=flavour)
