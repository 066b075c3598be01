"""The what-if engine: which modules fail to load after a change to the kernel's exports.

A change is a list of :class:`Change` edits — unexport a symbol, make it GPL-only, move it into a
namespace, remove a whole module. :func:`what_if` applies them to a
:class:`~ksymgraph.graph.projection.KernelProjection` and runs the kernel's load rules
(:mod:`ksymgraph.queries.loadrules`: vermagic, unknown symbols, GPL-only, modversions CRCs,
namespaces, ``symbol_get()``, and the cascade through failing dependencies) to a fixpoint.

Modules that already fail before the change are reported apart and never counted as broken by it.
A change that names a symbol or module the kernel does not have at all (a typo) is reported with
the closest names the kernel has; the CLI's ``--exit-code`` turns that into exit status 2.
"""

from __future__ import annotations

import difflib
import weakref
from collections import Counter
from typing import Iterable, NamedTuple

from ..errors import KsymgraphError
from ..graph.projection import ExportEdge, KernelProjection
from .loadrules import RULES, LoadRules
from .records import CallSite, LookupHit, Reason, Replacement

__all__ = ["Change", "Broken", "UnknownName", "WhatIfResult", "ChangeError", "parse_changes", "what_if",
           "failing_modules", "CHANGE_KINDS", "MECHANISMS"]

CHANGE_KINDS = ("unexport", "gpl-only", "namespace", "remove-module")


class ChangeError(KsymgraphError, ValueError):
    """A change names something the kernel does not have, or is malformed."""


class Change(NamedTuple):
    """One edit to the kernel's exports."""

    kind: str
    """``unexport``, ``gpl-only``, ``namespace`` or ``remove-module``."""
    target: str
    """The symbol, or the module for ``remove-module``."""
    namespace: str = ""
    """The namespace for ``namespace``."""

    def to_json(self) -> dict:
        d = {"kind": self.kind, "target": self.target}
        if self.kind == "namespace":
            d["namespace"] = self.namespace
        return d


class Broken(NamedTuple):
    """A module that the change stops from loading."""

    module: str
    """Module name."""
    path: str
    """Its file."""
    in_tree: bool
    """Built from the kernel tree."""
    direct: bool
    """Hit by the change itself (not only through a failing dependency)."""
    reasons: list[Reason]
    """Every reason, direct ones first."""


class UnknownName(NamedTuple):
    """A name a change gives that the kernel does not have at all (a typo, or another kernel's)."""

    kind: str
    """``symbol`` or ``module``."""
    name: str
    """The name as given."""
    did_you_mean: list[str]
    """The kernel's closest names (exported symbols, or modules), best first; may be empty."""

    def message(self, kernel: str) -> str:
        """The warning, with the suggestions."""
        what = "no module exports or imports it" if self.kind == "symbol" else "no module of that name"
        hint = f"; did you mean {', '.join(self.did_you_mean)}?" if self.did_you_mean else ""
        return f"{self.name} is not in kernel {kernel}: {what}{hint}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "did_you_mean": self.did_you_mean}


class WhatIfResult(NamedTuple):
    """The answer to one what-if."""

    kernel: str
    """The kernel analysed."""
    changes: list[Change]
    """The edits applied."""
    broken: list[Broken]
    """Modules that fail because of the change, direct ones first, then by name."""
    already_broken: list[str]
    """Modules that fail before any change (not counted as broken)."""
    lookups: list[LookupHit]
    """Run-time lookups hit by the change: symbols looked up by name that vanish, or lookups whose
    mechanism (``register_kprobe``, ``kallsyms_lookup_name``) the change removes."""
    warnings: list[str]
    """Changes that changed nothing (a symbol nobody exports, a name the kernel lacks, ...)."""
    unknown: list[UnknownName]
    """Names the changes give that the kernel does not have at all, with the closest it has."""
    call_sites: dict[str, list[CallSite]]
    """With source loaded: broken module → calls to its broken symbols (symbol, function, file, line)."""
    replacements: dict[str, list[Replacement]]
    """With source loaded: removed export → still-exported functions that call it (within N hops)."""

    @property
    def summary(self) -> dict:
        rules = Counter(rule for b in self.broken for rule in {r.rule for r in b.reasons})  # modules per rule
        return {
            "broken": len(self.broken),
            "direct": sum(b.direct for b in self.broken),
            "inherited": sum(not b.direct for b in self.broken),
            "in_tree": sum(b.in_tree for b in self.broken),
            "out_of_tree": sum(not b.in_tree for b in self.broken),
            "by_rule": {r: rules[r] for r in RULES if rules[r]},
            "already_broken": len(self.already_broken),
            "lookups_hit": len(self.lookups),
        }

    def to_json(self) -> dict:
        """The JSON contract (see README)."""
        return {
            "kernel": self.kernel,
            "changes": [c.to_json() for c in self.changes],
            "broken": [
                {"module": b.module, "path": b.path, "in_tree": b.in_tree, "direct": b.direct,
                 "reasons": [r.to_json() for r in b.reasons],
                 "call_sites": [c.to_json() for c in self.call_sites.get(b.module, [])]}
                for b in self.broken
            ],
            "replacements": {s: [r.to_json() for r in reps] for s, reps in self.replacements.items()},
            "lookups": [lu.to_json() for lu in self.lookups],
            "already_broken": self.already_broken,
            "warnings": self.warnings,
            "unknown": [u.to_json() for u in self.unknown],
            "summary": self.summary,
        }


def parse_changes(unexport: Iterable[str] = (), gpl_only: Iterable[str] = (), namespace: Iterable[str] = (),
                  remove_module: Iterable[str] = ()) -> list[Change]:
    """Build the change list from command-line style values (``namespace`` items are ``SYM=NS``)."""
    out = [Change("unexport", s) for s in unexport]
    out += [Change("gpl-only", s) for s in gpl_only]
    for item in namespace:
        sym, sep, ns = item.partition("=")
        if not sep or not sym or not ns:
            raise ChangeError(f"--namespace takes SYMBOL=NAMESPACE, got {item!r}")
        out.append(Change("namespace", sym, ns))
    out += [Change("remove-module", m) for m in remove_module]
    return out


#: Projection → its modules that fail with no change, computed once per projection (the notebooks
#: ask again with every what-if); dropped with the projection.
_FAILING: "weakref.WeakKeyDictionary[KernelProjection, dict[str, list[Reason]]]" = weakref.WeakKeyDictionary()


def failing_modules(proj: KernelProjection) -> dict[str, list[Reason]]:
    """Modules of ``proj`` that fail to load as it is, with every reason (computed once)."""
    hit = _FAILING.get(proj)
    if hit is None:
        hit = _FAILING[proj] = LoadRules(proj).failing(proj.modules)
    return hit


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.75)


def _apply(proj: KernelProjection, changes: list[Change]
           ) -> tuple[dict[str, list[ExportEdge]], set[str], set[str], list[str], list[UnknownName]]:
    exports = dict(proj.exports)
    touched: set[str] = set()
    gone: set[str] = set()
    warnings: list[str] = []
    unknown: list[UnknownName] = []
    for c in changes:
        if c.kind not in CHANGE_KINDS:
            raise ChangeError(f"unknown change kind {c.kind!r}; expected one of {', '.join(CHANGE_KINDS)}")
        if c.kind == "remove-module":
            if c.target not in proj.modules:
                u = UnknownName("module", c.target, _close(c.target, proj.modules))
                unknown.append(u)
                warnings.append(f"module {u.message(proj.kernel)}")
                continue
            gone.add(c.target)
            for s, es in exports.items():
                if any(e.module == c.target for e in es):
                    touched.add(s)
            continue
        have = exports.get(c.target)
        if not have:
            if proj.importers(c.target) or any(lu.symbol == c.target for lus in proj.lookups.values() for lu in lus):
                n = len(proj.importers(c.target))
                warnings.append(f"{c.target} is not exported in kernel {proj.kernel} "
                                f"({n} module{' imports' if n == 1 else 's import'} it)")
            else:
                u = UnknownName("symbol", c.target, _close(c.target, (s for s, es in proj.exports.items() if es)))
                unknown.append(u)
                warnings.append(u.message(proj.kernel))
            continue
        touched.add(c.target)
        if c.kind == "unexport":
            exports[c.target] = []
        elif c.kind == "gpl-only":
            exports[c.target] = [e._replace(gpl=True) for e in have]
        else:
            exports[c.target] = [e._replace(namespace=c.namespace) for e in have]
    return exports, gone, touched, warnings, unknown


#: Lookup mechanism → the export it needs at run time.
MECHANISMS = {"kprobe": "register_kprobe", "kretprobe": "register_kretprobe",
              "kallsyms_lookup_name": "kallsyms_lookup_name", "symbol_get": "__symbol_get",
              "symbol_request": "__symbol_get", "__symbol_get": "__symbol_get"}


def _lookups_hit(proj: KernelProjection, changes: list[Change], touched: set[str],
                 exports: dict[str, list[ExportEdge]], failed: dict[str, list[Reason]], gone: set[str]) -> list[LookupHit]:
    """Lookups that stop working: their symbol vanishes, or their mechanism is unexported.

    Since 5.7 ``kallsyms_lookup_name`` is not exported; LTTng and others find it with a kprobe.
    When that kprobe fails, every lookup made through ``kallsyms_lookup_name`` or a wrapper of it
    fails too — in that module and in the modules that use its exports (LTTng's ``lttng_wrapper``
    finds the function, the other LTTng modules call its wrappers).
    """
    removed = {c.target for c in changes if c.kind == "unexport"}
    finders = {mod for mod, lus in proj.lookups.items()
               if any(lu.symbol == "kallsyms_lookup_name" and MECHANISMS.get(lu.how) in removed for lu in lus)}
    out = []
    for mod, lus in sorted(proj.lookups.items()):
        if mod in gone:
            continue
        finder = mod if mod in finders else next(
            (e.module for i in proj.imports.get(mod, ()) for e in proj.exports.get(i.symbol, ()) if e.module in finders),
            None)
        for lu in lus:
            why = None
            mech = MECHANISMS.get(lu.how)
            if mech and mech in removed:
                why = f"{lu.how} needs {mech}, which the change unexports"
            elif finder and (lu.how == "kallsyms_lookup_name" or lu.how.startswith("wrapper:")):
                who = "this module" if finder == mod else finder
                why = (f"resolved through kallsyms_lookup_name, which {who} finds with a kprobe; "
                       "register_kprobe is unexported")
            elif lu.symbol in touched and lu.how.startswith("symbol_") and not [
                    e for e in exports.get(lu.symbol, ()) if e.module not in failed and e.module not in gone]:
                why = f"{lu.symbol} is no longer exported, so {lu.how}() returns NULL"
            if why:
                out.append(LookupHit(lu, why))
    return out


def what_if(proj: KernelProjection, changes: list[Change]) -> WhatIfResult:
    """Apply ``changes`` to ``proj`` and return the modules that fail to load because of them."""
    base = failing_modules(proj)
    exports, gone, touched, warnings, unknown = _apply(proj, changes)
    rules = LoadRules(proj, exports, gone)
    start = {u for s in touched for u in proj.importers(s)}
    start |= {mod for mod, lus in proj.lookups.items() if any(lu.symbol in touched for lu in lus)}
    failed = rules.failing(start, base)
    broken = []
    for mod, reasons in failed.items():
        if mod in base:
            continue
        m = proj.modules[mod]
        broken.append(Broken(mod, m.path, m.intree, any(r.rule != "dependency" for r in reasons), reasons))
    broken.sort(key=lambda b: (not b.direct, b.module))
    lookups = _lookups_hit(proj, changes, touched, exports, failed, gone)
    return WhatIfResult(proj.kernel, list(changes), broken, sorted(base), lookups, warnings, unknown, {}, {})
