"""The what-if engine: which modules fail to load after a change to the kernel's exports.

A change is a list of :class:`Change` edits — unexport a symbol, make it GPL-only, move it into a
namespace, remove a whole module. :func:`what_if` applies them to a
:class:`~ksymgraph.graph.projection.KernelProjection` and runs the kernel's load rules
(DESIGN §3; ``kernel/module/main.c``: ``resolve_symbol()`` and ``verify_namespace_is_imported()``)
to a fixpoint. A module fails when an import (not a weak one) is

1. exported by nobody — ``unknown-symbol``;
2. exported GPL-only while its licence is not GPL-compatible — ``gpl-only``;
3. exported into a namespace it does not import — ``namespace``;
4. exported only by modules that fail themselves — ``dependency``, the cascade;
5. taken with ``symbol_get()`` but not exported GPL-only — ``symbol-get``; since 6.6,
   9011e49d54dc ("modules: only allow symbol_get of EXPORT_SYMBOL_GPL modules").

Modules that already fail before the change are reported apart and never counted as broken by it.
Messages use modpost's wording, the one module authors know.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, NamedTuple

from ..errors import KsymgraphError
from ..graph.projection import ExportEdge, KernelProjection

__all__ = ["Change", "Reason", "Broken", "WhatIfResult", "ChangeError", "parse_changes", "what_if",
           "RULES", "supports_symbol_get_rule", "failing_modules"]

RULES = ("unknown-symbol", "gpl-only", "namespace", "symbol-get", "dependency")
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


class Reason(NamedTuple):
    """Why one module fails."""

    rule: str
    """One of :data:`RULES`."""
    symbol: str
    """The symbol concerned."""
    via_module: str | None
    """For ``dependency``: the failing module that exported the symbol."""
    message: str
    """The reason in modpost's words."""


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
    lookups: list[dict]
    """Run-time lookups hit by the change: symbols looked up by name that vanish, or lookups whose
    mechanism (``register_kprobe``, ``kallsyms_lookup_name``) the change removes."""
    warnings: list[str]
    """Changes that changed nothing (a symbol nobody exports, ...)."""
    call_sites: dict[str, list[dict]] = {}
    """With source loaded: broken module → calls to its broken symbols (symbol, function, file, line)."""
    replacements: dict[str, list[dict]] = {}
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
                 "reasons": [{"rule": r.rule, "symbol": r.symbol, "via_module": r.via_module, "message": r.message}
                             for r in b.reasons],
                 "call_sites": self.call_sites.get(b.module, [])}
                for b in self.broken
            ],
            "replacements": self.replacements,
            "lookups": self.lookups,
            "already_broken": self.already_broken,
            "warnings": self.warnings,
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


def supports_symbol_get_rule(version: str) -> bool:
    """True for kernels 6.6 and later, where symbol_get() takes only GPL exports."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (6, 6)


def _ko(module: str, path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else f"{module}.ko"


class _Rules:
    """The load rules over a projection with edited exports."""

    def __init__(self, proj: KernelProjection, exports: dict[str, list[ExportEdge]], gone: set[str]):
        self.proj = proj
        self.exports = exports
        self.gone = gone
        self.symbol_get = supports_symbol_get_rule(proj.version) or supports_symbol_get_rule(proj.kernel)

    def reasons(self, mod: str, failed: dict[str, list[Reason]]) -> list[Reason]:
        m = self.proj.modules.get(mod)
        if m is None:
            return []
        ko = _ko(mod, m.path)
        out: list[Reason] = []
        for imp in self.proj.imports.get(mod, ()):
            provs = [e for e in self.exports.get(imp.symbol, ()) if e.module != mod]
            alive = [e for e in provs if e.module not in failed and e.module not in self.gone]
            if alive:
                ok = [e for e in alive if (not e.gpl or m.gpl_compatible) and (not e.namespace or e.namespace in m.import_ns)]
                if ok:
                    continue
                e = alive[0]
                if e.gpl and not m.gpl_compatible:
                    out.append(Reason("gpl-only", imp.symbol, None,
                                      f"GPL-incompatible module {ko} uses GPL-only symbol '{imp.symbol}'"))
                else:
                    out.append(Reason("namespace", imp.symbol, None,
                                      f"module {mod} uses symbol {imp.symbol} from namespace {e.namespace}, "
                                      "but does not import it."))
                continue
            dead = [e for e in provs if e.module in failed]
            if dead:
                via = dead[0].module
                out.append(Reason("dependency", imp.symbol, via,
                                  f"{ko} needs \"{imp.symbol}\" from {via}, which fails to load"))
            elif not imp.weak:
                out.append(Reason("unknown-symbol", imp.symbol, None, f"\"{imp.symbol}\" [{ko}] undefined!"))
        for lu in self.proj.lookups.get(mod, ()):
            if lu.how != "symbol_get" or not self.symbol_get:
                continue
            provs = [e for e in self.exports.get(lu.symbol, ()) if e.module not in failed and e.module not in self.gone]
            if provs and not any(e.gpl for e in provs):
                out.append(Reason("symbol-get", lu.symbol, None,
                                  f"{ko}: symbol_get({lu.symbol}) at {lu.file}:{lu.line}: "
                                  f"{lu.symbol} is not an EXPORT_SYMBOL_GPL"))
        return out

    def fixpoint(self, start: Iterable[str], failed: dict[str, list[Reason]]) -> dict[str, list[Reason]]:
        """Re-check ``start`` and everything that imports from a newly failing module, to a fixpoint."""
        failed = dict(failed)
        work = list(dict.fromkeys(start))
        queued = set(work)
        while work:
            mod = work.pop()
            queued.discard(mod)
            if mod in failed or mod in self.gone:
                continue
            reasons = self.reasons(mod, failed)
            if not reasons:
                continue
            failed[mod] = reasons
            for sym, _e in self._exported_by(mod):
                for user in self.proj.importers(sym):
                    if user not in failed and user not in queued:
                        work.append(user)
                        queued.add(user)
        return failed

    def _exported_by(self, mod: str) -> list[tuple[str, ExportEdge]]:
        if not hasattr(self, "_by_module"):
            idx: dict[str, list] = {}
            for s, es in self.exports.items():
                for e in es:
                    idx.setdefault(e.module, []).append((s, e))
            self._by_module = idx
        return self._by_module.get(mod, [])


def failing_modules(proj: KernelProjection) -> dict[str, list[Reason]]:
    """Modules of ``proj`` that fail to load as it is, with their reasons (computed once)."""
    if proj.failing is None:
        proj.failing = _Rules(proj, proj.exports, set()).fixpoint(sorted(proj.modules), {})
    return proj.failing


def _apply(proj: KernelProjection, changes: list[Change]) -> tuple[dict[str, list[ExportEdge]], set[str], set[str], list[str]]:
    exports = dict(proj.exports)
    touched: set[str] = set()
    gone: set[str] = set()
    warnings: list[str] = []
    for c in changes:
        if c.kind == "remove-module":
            if c.target not in proj.modules:
                warnings.append(f"module {c.target} is not in kernel {proj.kernel}")
                continue
            gone.add(c.target)
            for s, es in exports.items():
                if any(e.module == c.target for e in es):
                    touched.add(s)
            continue
        have = exports.get(c.target)
        if not have:
            warnings.append(f"{c.target} is not exported in kernel {proj.kernel}")
            continue
        touched.add(c.target)
        if c.kind == "unexport":
            exports[c.target] = []
        elif c.kind == "gpl-only":
            exports[c.target] = [e._replace(gpl=True) for e in have]
        elif c.kind == "namespace":
            exports[c.target] = [e._replace(namespace=c.namespace) for e in have]
        else:
            raise ChangeError(f"unknown change kind {c.kind!r}; expected one of {', '.join(CHANGE_KINDS)}")
    return exports, gone, touched, warnings


#: Lookup mechanism → the export it needs at run time.
MECHANISMS = {"kprobe": "register_kprobe", "kretprobe": "register_kretprobe",
              "kallsyms_lookup_name": "kallsyms_lookup_name", "symbol_get": "__symbol_get",
              "symbol_request": "__symbol_get", "__symbol_get": "__symbol_get"}


def _lookups_hit(proj: KernelProjection, changes: list[Change], touched: set[str],
                 exports: dict[str, list[ExportEdge]], failed: dict[str, list[Reason]], gone: set[str]) -> list[dict]:
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
                out.append({"module": mod, "symbol": lu.symbol, "how": lu.how, "file": lu.file, "line": lu.line,
                            "why": why})
    return out


def what_if(proj: KernelProjection, changes: list[Change]) -> WhatIfResult:
    """Apply ``changes`` to ``proj`` and return the modules that fail to load because of them."""
    base = failing_modules(proj)
    exports, gone, touched, warnings = _apply(proj, changes)
    rules = _Rules(proj, exports, gone)
    start = {u for s in touched for u in proj.importers(s)}
    start |= {mod for mod, lus in proj.lookups.items() if any(lu.symbol in touched for lu in lus)}
    failed = rules.fixpoint(sorted(start), base)
    broken = []
    for mod, reasons in failed.items():
        if mod in base:
            continue
        m = proj.modules[mod]
        reasons = sorted(reasons, key=lambda r: (r.rule == "dependency", r.rule, r.symbol))
        broken.append(Broken(mod, m.path, m.intree, any(r.rule != "dependency" for r in reasons), reasons))
    broken.sort(key=lambda b: (not b.direct, b.module))
    lookups = _lookups_hit(proj, changes, touched, exports, failed, gone)
    return WhatIfResult(proj.kernel, list(changes), broken, sorted(base), lookups, warnings)
