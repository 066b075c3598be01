"""Would these out-of-tree modules load on that kernel?

:func:`check_modules` adds the given modules to a kernel's projection and runs the load rules
(:mod:`ksymgraph.queries.loadrules`) with no change: every reason a module would fail — its
vermagic, CRCs the kernel disagrees with, unknown symbols, GPL-only symbols under a non-GPL
licence, missing namespace imports, a failing module of the set it depends on. For each symbol it
needs that the kernel does not export, it lists the in-tree code that uses that symbol from a
module — calls, and references (data read, address taken, ops-table initialisers), each with
the chain of header inlines and macros it goes through — the justification export reviewers ask
for ("every added export needs an in-tree user") — when the kernel's source graph is loaded.
"""

from __future__ import annotations

from typing import NamedTuple

from ..graph.projection import KernelProjection
from ..graph.store import GraphStore
from ..loaders.records import ModuleData
from .callsites import call_sites, source_loaded
from .records import CallSite, ModuleVerdict
from .whatif import failing_modules

__all__ = ["CheckResult", "check_modules", "in_tree_modular_users"]


class CheckResult(NamedTuple):
    """The verdict on a set of modules."""

    kernel: str
    """The kernel checked against."""
    modules: list[ModuleVerdict]
    """One verdict per module, in the order given."""
    source_loaded: bool
    """Whether the kernel's source graph was there to find in-tree users."""

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "modules": [m.to_json() for m in self.modules],
            "source_loaded": self.source_loaded,
            "summary": {"modules": len(self.modules), "fail": sum(not m.loads for m in self.modules)},
        }


def in_tree_modular_users(store: GraphStore, kernel: str, symbol: str) -> list[CallSite]:
    """In-tree functions built into a module (not vmlinux) that call or reference ``symbol``
    (``kind`` ``call`` or ``reference``), directly or through a header's inline or macro."""
    return call_sites(store, kernel, None, [symbol])


def check_modules(proj: KernelProjection, modules: list[ModuleData], store: GraphStore | None = None) -> CheckResult:
    """Check each of ``modules`` against ``proj``'s kernel (and each other)."""
    failing = failing_modules(proj.with_modules(modules))
    source = store is not None and source_loaded(store, proj.kernel)
    out = []
    for m in modules:
        name = m.info.name
        reasons = failing.get(name, [])
        missing = {r.symbol: in_tree_modular_users(store, proj.kernel, r.symbol) if source else []
                   for r in reasons if r.rule == "unknown-symbol"}
        out.append(ModuleVerdict(name, m.info.path, not reasons, reasons, missing, [], [], [], []))
    return CheckResult(proj.kernel, out, source)
