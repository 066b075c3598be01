"""Would these out-of-tree modules load on that kernel?

:func:`check_modules` adds the given modules to a kernel's projection and runs the what-if rules
with no change: every reason a module would fail (unknown symbols, GPL-only symbols under a
non-GPL licence, missing namespace imports, a failing module of the set it depends on). For each
symbol it needs that the kernel does not export, it lists the in-tree code that uses that symbol
from a module — the justification export reviewers ask for ("every added export needs an in-tree
user") — when the kernel's source graph is loaded.
"""

from __future__ import annotations

from typing import NamedTuple

from ..graph.projection import KernelProjection
from ..graph.store import GraphStore
from ..loaders.records import ModuleData
from .callsites import call_sites, source_loaded
from .loadrules import Reason
from .whatif import failing_modules

__all__ = ["ModuleCheck", "CheckResult", "check_modules", "in_tree_modular_users"]


class ModuleCheck(NamedTuple):
    """The verdict on one module."""

    module: str
    """Module name."""
    path: str
    """The file checked."""
    loads: bool
    """True when nothing stops it from loading."""
    reasons: list[Reason]
    """Why it would not load."""
    missing: dict[str, list[dict]]
    """Unexported symbol it needs → in-tree modular users (module, function, file, line)."""


class CheckResult(NamedTuple):
    """The verdict on a set of modules."""

    kernel: str
    """The kernel checked against."""
    modules: list[ModuleCheck]
    """One verdict per module, in the order given."""
    source_loaded: bool
    """Whether the kernel's source graph was there to find in-tree users."""

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "modules": [{"module": m.module, "path": m.path, "loads": m.loads,
                         "reasons": [r._asdict() for r in m.reasons], "missing": m.missing} for m in self.modules],
            "source_loaded": self.source_loaded,
            "summary": {"modules": len(self.modules), "fail": sum(not m.loads for m in self.modules)},
        }


def in_tree_modular_users(store: GraphStore, kernel: str, symbol: str) -> list[dict]:
    """In-tree functions built into a module (not vmlinux) that call ``symbol``, directly or
    through a header's inline or macro."""
    return [{"module": c.module, "function": c.function, "file": c.file, "line": c.line}
            for c in call_sites(store, kernel, None, [symbol])]


def check_modules(proj: KernelProjection, modules: list[ModuleData], store: GraphStore | None = None) -> CheckResult:
    """Check each of ``modules`` against ``proj``'s kernel (and each other)."""
    failing = failing_modules(proj.with_modules(modules))
    source = store is not None and source_loaded(store, proj.kernel)
    out = []
    for m in modules:
        name = m.info.name
        reasons = failing.get(name, [])
        missing = {}
        for r in reasons:
            if r.rule == "unknown-symbol":
                missing[r.symbol] = in_tree_modular_users(store, proj.kernel, r.symbol) if source else []
        out.append(ModuleCheck(name, m.info.path, not reasons, reasons, missing))
    return CheckResult(proj.kernel, out, source)
