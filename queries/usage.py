"""Export usage: what the kernel's deleted ``scripts/export_report.pl`` reported, from the graph.

For every export: owner, type, namespace and the in-tree modules that import it (so unused
exports stand out); for every module: the modules it depends on and the symbols it takes from
each.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from ..graph.projection import KernelProjection

__all__ = ["ExportUsage", "ModuleDeps", "UsageReport", "export_usage"]


class ExportUsage(NamedTuple):
    """One export and who uses it."""

    symbol: str
    """Exported symbol."""
    owner: str
    """Exporting module (``vmlinux`` for the kernel)."""
    type: str
    """``EXPORT_SYMBOL`` or ``EXPORT_SYMBOL_GPL``."""
    namespace: str
    """Namespace, ``""`` for none."""
    in_tree_users: list[str]
    """In-tree modules importing it, sorted."""
    out_of_tree_users: list[str]
    """Out-of-tree modules importing it, sorted."""


class ModuleDeps(NamedTuple):
    """What one module takes from the others."""

    module: str
    """Module name."""
    depends: dict[str, list[str]]
    """Module it depends on → symbols it imports from it (vmlinux included)."""


class UsageReport(NamedTuple):
    """The whole usage report of a kernel."""

    kernel: str
    """Kernel analysed."""
    exports: list[ExportUsage]
    """Every export, most used first."""
    modules: list[ModuleDeps]
    """Every module with imports, by name."""

    @property
    def unused(self) -> list[ExportUsage]:
        """Exports no module imports."""
        return [e for e in self.exports if not e.in_tree_users and not e.out_of_tree_users]

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "exports": [e._asdict() for e in self.exports],
            "unused": [e.symbol for e in self.unused],
            "modules": [m._asdict() for m in self.modules],
            "summary": {"exports": len(self.exports), "unused": len(self.unused), "modules": len(self.modules)},
        }


def export_usage(proj: KernelProjection) -> UsageReport:
    """Build the usage report of ``proj``'s kernel."""
    exports = []
    for sym, edges in proj.exports.items():
        users = proj.importers(sym)
        intree = sorted(u for u in users if proj.modules[u].intree)
        oot = sorted(u for u in users if not proj.modules[u].intree)
        for e in edges:
            exports.append(ExportUsage(sym, e.module, "EXPORT_SYMBOL_GPL" if e.gpl else "EXPORT_SYMBOL",
                                       e.namespace, [u for u in intree if u != e.module],
                                       [u for u in oot if u != e.module]))
    exports.sort(key=lambda e: (-len(e.in_tree_users) - len(e.out_of_tree_users), e.symbol, e.owner))
    modules = []
    for mod in sorted(proj.imports):
        deps: dict[str, list[str]] = defaultdict(list)
        for imp in proj.imports[mod]:
            for e in proj.exports.get(imp.symbol, ()):
                if e.module != mod:
                    deps[e.module].append(imp.symbol)
        modules.append(ModuleDeps(mod, {k: sorted(v) for k, v in sorted(deps.items())}))
    return UsageReport(proj.kernel, exports, modules)
