"""The kernel's load rules: why a module would be refused, applied to a whole kernel to a fixpoint.

The kernel decides in ``load_module()`` (``kernel/module/main.c``), in this order, and so do the
rules here; a message is the kernel's own, or modpost's where modpost refuses the same thing at
build time (the words module authors know):

====================  ==============================================  ==========================  =======
rule                  where the kernel applies it                     message                     since
====================  ==============================================  ==========================  =======
``modversions``       ``early_mod_check()`` → ``check_modstruct_      ``m: disagrees about        2.6.12
                      version()``: the CRC of ``module_layout``        version of symbol X``
``vermagic``          ``check_modinfo()`` → ``same_magic()``          ``m: version magic '…'      2.6.12
                                                                      should be '…'``
``unknown-symbol``    ``simplify_symbols()`` → ``resolve_symbol()``:  ``"X" [m.ko] undefined!``   2.6.12
                      nobody exports X (a weak import may stay
                      unresolved)
``gpl-only``          ``find_symbol()`` hides GPL-only exports from   ``GPL-incompatible module   2.6.12
                      a non-GPL module; ``inherit_taint()``           m.ko uses GPL-only symbol
                      (262e6ae7081d, 5.13)                            'X'``
``modversions``       ``check_version()``: the import's CRC in        ``m: disagrees about        2.6.12
                      ``__versions`` (or ``__version_ext_crcs``,      version of symbol X``
                      6.14) differs from the export's
``namespace``         ``verify_namespace_is_imported()``              ``module m uses symbol X    5.4
                      (8651ec01daed); ``module:`` namespaces by        from namespace NS, but
                      name (092a4f5985f2, 6.16; in-tree modules       does not import it.``
                      only since the "Restrict module namespace
                      access to in-tree modules" change)
``symbol-get``        ``__symbol_get()`` takes GPL exports only       ``symbol_get(X) … not an    6.6
                      (9011e49d54dc)                                  EXPORT_SYMBOL_GPL``
``dependency``        the exporter of X fails itself (the cascade)    ``needs "X" from m2, which  —
                                                                      fails to load``
====================  ==============================================  ==========================  =======

The kernel's build decides three of them (:class:`~ksymgraph.loaders.records.BuildOptions`): with
``CONFIG_MODVERSIONS`` unset no CRC is checked and ``same_magic()`` compares the whole vermagic;
with it set, a module that carries CRCs is compared from the first blank on (the release is
skipped), and one without ``__versions`` is refused unless ``CONFIG_MODULE_FORCE_LOAD`` lets it
load tainted. A symbol missing from a module's ``__versions`` only warns ("no symbol version for
X"). With ``CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS`` a missing namespace import only warns.

:func:`fixpoint` finds which modules fail — the least fixpoint, found with a worklist: a module is
checked again whenever one of the modules it imports from starts failing — and :func:`reasons`
gives every reason of one module against that final set. The set, the reasons and their counts do
not depend on the order of modules (a hypothesis test permutes them).
"""

from __future__ import annotations

import re
from typing import Iterable

from ..graph.projection import ExportEdge, KernelProjection, ModuleNode
from .records import Reason

__all__ = ["RULES", "LoadRules", "module_namespace_admits", "supports_symbol_get_rule",
           "sort_reasons"]

#: Every rule, in the order reports list them.
RULES = ("vermagic", "unknown-symbol", "gpl-only", "modversions", "namespace", "symbol-get", "dependency")

#: ``MODULE_NS_PREFIX``: a namespace that names the modules allowed to use the export.
MODULE_NS_PREFIX = "module:"


def sort_reasons(reasons: Iterable[Reason]) -> list[Reason]:
    """Reasons in report order: the module's own before inherited ones, then by rule and symbol."""
    return sorted(reasons, key=lambda r: (r.rule == "dependency", RULES.index(r.rule), r.symbol, r.via_module or ""))


def supports_symbol_get_rule(version: str) -> bool:
    """True for kernels 6.6 and later, where symbol_get() takes only GPL exports."""
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (6, 6)


def _same_module_name(pattern: str, name: str) -> bool:
    """``mod_strncmp()``: module names compare with ``-`` and ``_`` equal."""
    return pattern.replace("-", "_") == name.replace("-", "_")


def module_namespace_admits(namespace: str, module: str) -> bool:
    """Does a ``module:`` namespace (``module:kvm,kvm-amd,kvm-*``) name ``module``?

    ``verify_module_namespace()``: a comma-separated list of module names, each matched whole or,
    with a trailing ``*``, as a prefix; ``-`` and ``_`` are equal.
    """
    if not namespace.startswith(MODULE_NS_PREFIX):
        return False
    for pattern in namespace[len(MODULE_NS_PREFIX):].split(","):
        if pattern.endswith("*"):
            stem = pattern[:-1]
            if _same_module_name(stem, module[: len(stem)]):
                return True
        elif pattern and _same_module_name(pattern, module):
            return True
    return False


def _ko(module: str, path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else f"{module}.ko"


class LoadRules:
    """The load rules of one kernel (its projection, with exports as a change left them)."""

    def __init__(self, proj: KernelProjection, exports: dict[str, list[ExportEdge]] | None = None,
                 gone: Iterable[str] = ()):
        self.proj = proj
        self.exports = proj.exports if exports is None else exports
        self.gone = frozenset(gone)
        build = proj.build
        self.modversions = bool(build.modversions)
        self.force_load = bool(build.force_load)
        self.missing_ns_allowed = bool(build.missing_ns_allowed)
        self.vermagic = build.vermagic
        self.symbol_get = supports_symbol_get_rule(proj.version) or supports_symbol_get_rule(proj.kernel)
        layout = [e for e in self.exports.get("module_layout", ()) if e.module == "vmlinux"]
        self.layout_crc = layout[0].crc if layout and self.modversions else None
        self._own: dict[str, list[Reason]] = {}
        self._by_module: dict[str, list[str]] | None = None

    # The rules ------------------------------------------------------------------------------------

    def _module_reasons(self, name: str, m: ModuleNode) -> list[Reason]:
        """What the kernel refuses before it resolves a symbol: the module structure's CRC, then the
        vermagic. They depend on nothing a change or a cascade touches, so they are computed once."""
        hit = self._own.get(name)
        if hit is not None:
            return hit
        out: list[Reason] = []
        if name == "vmlinux" or not m.path:  # the kernel itself; a module known only from Module.symvers
            self._own[name] = out
            return out
        if self.layout_crc is not None and m.modversions and m.layout_crc is not None \
                and m.layout_crc != self.layout_crc:
            out.append(Reason("modversions", "module_layout", None,
                              f"{name}: disagrees about version of symbol module_layout"))
        # same_magic(): with CRCs on both sides the release (up to the first blank) is skipped.
        if self.vermagic:
            if not m.vermagic:
                if not self.force_load:
                    out.append(Reason("vermagic", "", None, f"{name}: no vermagic: refused (bad vermagic; "
                                                            "the kernel has no CONFIG_MODULE_FORCE_LOAD)"))
            else:
                skip = self.modversions and m.modversions
                a = m.vermagic[m.vermagic.find(" "):] if skip and " " in m.vermagic else m.vermagic
                b = self.vermagic[self.vermagic.find(" "):] if skip and " " in self.vermagic else self.vermagic
                if a != b:
                    out.append(Reason("vermagic", "", None,
                                      f"{name}: version magic '{m.vermagic}' should be '{self.vermagic}'"))
        self._own[name] = out
        return out

    def _namespace_ok(self, m: ModuleNode, name: str, namespace: str) -> bool:
        if not namespace:
            return True
        if namespace.startswith(MODULE_NS_PREFIX):  # never imported: named, and in-tree only
            return m.intree and module_namespace_admits(namespace, name)
        return namespace in m.import_ns or self.missing_ns_allowed

    def _crc_ok(self, m: ModuleNode, export: ExportEdge, crc: int | None) -> bool:
        """``check_version()``: no CRC on the export, or none recorded for the symbol (a warning),
        passes; a module with no ``__versions`` at all passes only with CONFIG_MODULE_FORCE_LOAD."""
        if not self.modversions or export.crc is None:
            return True
        if not m.modversions:
            return self.force_load
        return crc is None or crc == export.crc

    def _usable(self, m: ModuleNode, name: str, e: ExportEdge, crc: int | None) -> bool:
        """Does export ``e`` pass every check ``resolve_symbol()`` makes for module ``m``?"""
        return (not e.gpl or m.gpl_compatible) and self._crc_ok(m, e, crc) and self._namespace_ok(m, name, e.namespace)

    def reasons(self, name: str, failed: set[str] | frozenset[str]) -> list[Reason]:
        """Every reason module ``name`` fails, with the modules in ``failed`` failing (not sorted)."""
        m = self.proj.modules.get(name)
        if m is None or name in self.gone:
            return []
        ko = _ko(name, m.path)
        out = list(self._module_reasons(name, m))
        uses_gpl = False
        from_proprietary: list[tuple[str, str]] = []
        for imp in self.proj.imports.get(name, ()):
            # find_symbol() looks in vmlinux first, then in the modules.
            provs = sorted((e for e in self.exports.get(imp.symbol, ()) if e.module != name and e.module not in self.gone),
                           key=lambda e: (e.module != "vmlinux", e.module))
            if not provs:
                if not imp.weak:
                    out.append(Reason("unknown-symbol", imp.symbol, None, f"\"{imp.symbol}\" [{ko}] undefined!"))
                continue
            alive = [e for e in provs if e.module not in failed]
            usable = next((e for e in alive if self._usable(m, name, e, imp.crc)), None)
            if usable is not None:
                uses_gpl |= usable.gpl
                owner = self.proj.modules.get(usable.module)
                if owner is not None and usable.module != "vmlinux" and not owner.gpl_compatible:
                    from_proprietary.append((imp.symbol, usable.module))
                continue
            # Why not: the checks of resolve_symbol(), in its order, on the first export it would find —
            # whether or not its owner loads, so a symbol moved into a namespace the module lacks is a
            # reason of its own even when the exporter fails too.
            e = next((x for x in (alive or provs) if not x.gpl or m.gpl_compatible), None)
            if e is None:
                out.append(Reason("gpl-only", imp.symbol, None,
                                  f"GPL-incompatible module {ko} uses GPL-only symbol '{imp.symbol}'"))
            elif not self._crc_ok(m, e, imp.crc):
                text = (f"{name}: disagrees about version of symbol {imp.symbol}" if m.modversions else
                        f"{name}: Unknown symbol {imp.symbol} (err -22)")
                out.append(Reason("modversions", imp.symbol, None, text))
            elif not self._namespace_ok(m, name, e.namespace):
                out.append(Reason("namespace", imp.symbol, None,
                                  f"module {name} uses symbol {imp.symbol} from namespace {e.namespace}, "
                                  "but does not import it."))
            if not alive:
                via = provs[0].module
                out.append(Reason("dependency", imp.symbol, via,
                                  f"{ko} needs \"{imp.symbol}\" from {via}, which fails to load"))
        if uses_gpl:  # inherit_taint(): GPL-only symbols and a proprietary exporter do not mix
            for sym, owner in from_proprietary:
                out.append(Reason("gpl-only", sym, None, f"{name}: module using GPL-only symbols uses symbols "
                                                         f"{sym} from proprietary module {owner}."))
        for ns in sorted(n for n in m.import_ns if n.startswith(MODULE_NS_PREFIX)):
            out.append(Reason("namespace", ns, None, f"{name}: module tries to import module namespace: {ns}"))
        if self.symbol_get:
            for lu in self.proj.lookups.get(name, ()):
                if lu.how != "symbol_get":
                    continue
                provs = [e for e in self.exports.get(lu.symbol, ()) if e.module not in self.gone]
                if provs and not any(e.gpl for e in provs):
                    out.append(Reason("symbol-get", lu.symbol, None,
                                      f"{ko}: symbol_get({lu.symbol}) at {lu.file}:{lu.line}: "
                                      f"{lu.symbol} is not an EXPORT_SYMBOL_GPL"))
        return out

    # The fixpoint ---------------------------------------------------------------------------------

    def fixpoint(self, start: Iterable[str], failed: Iterable[str] = ()) -> frozenset[str]:
        """The modules that fail: ``failed`` and every module that fails once they do, checking
        ``start`` and, again, every module that imports from one that starts failing."""
        failed = set(failed)
        work = sorted(set(start), reverse=True)
        queued = set(work)
        while work:
            name = work.pop()
            queued.discard(name)
            if name in failed or name in self.gone or not self.reasons(name, failed):
                continue
            failed.add(name)
            for sym in self._exported_by(name):
                for user in sorted(self.proj.importers(sym)):
                    if user not in failed and user not in queued:
                        work.append(user)
                        queued.add(user)
        return frozenset(failed)

    def failing(self, start: Iterable[str], failed: Iterable[str] = ()) -> dict[str, list[Reason]]:
        """:meth:`fixpoint`, with every reason of every failing module, in report order."""
        final = self.fixpoint(start, failed)
        return {name: sort_reasons(self.reasons(name, final)) for name in sorted(final)}

    def _exported_by(self, name: str) -> list[str]:
        if self._by_module is None:
            idx: dict[str, list[str]] = {}
            for sym, edges in self.exports.items():
                for e in edges:
                    idx.setdefault(e.module, []).append(sym)
            self._by_module = idx
        return self._by_module.get(name, [])
