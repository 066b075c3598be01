"""Plain records that the binary loaders yield: modules, their exports and imports.

Loaders read files and yield these; ``ksymgraph.graph`` resolves them into a graph. Nothing here
knows about a database.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import KsymgraphError

__all__ = ["GPL_COMPATIBLE_LICENSES", "KernelMeta", "BuildOptions", "ModuleInfo", "Export", "Import", "Imports", "ModuleData",
           "LookUpEdge", "Skipped", "LoaderError"]


#: include/linux/license.h: license_is_gpl_compatible().
GPL_COMPATIBLE_LICENSES = frozenset(
    ["GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"]
)


class LoaderError(KsymgraphError):
    """A file could not be read; the message names the file and the reason."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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
    build: BuildOptions = None  # type: ignore[assignment]
    """How the kernel was built, as far as the load rules care (None: not known yet)."""


class BuildOptions(NamedTuple):
    """The options of a kernel's build that decide whether a module loads (its ``.config``, or what
    its own modules and Module.symvers show when there is none)."""

    vermagic: str
    """The kernel's ``VERMAGIC_STRING`` (``6.1.0-50-amd64 SMP preempt mod_unload modversions ``),
    which it compares every module's ``vermagic`` with; ``""`` when unknown."""
    modversions: bool | None
    """``CONFIG_MODVERSIONS``: exports carry CRCs and imports are checked against them. None when
    unknown."""
    force_load: bool | None
    """``CONFIG_MODULE_FORCE_LOAD``: a module with no vermagic, or no ``__versions``, loads (tainted)
    instead of being refused. None when unknown (the rules then take the kernel's default, n)."""
    missing_ns_allowed: bool | None
    """``CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS``: a missing ``MODULE_IMPORT_NS`` is only a
    warning. None when unknown (the rules then take the kernel's default, n)."""
    source: str
    """Where these come from, in words: ``config-6.1.0-50-amd64``, or ``inferred from 4022
    modules (no .config)``."""

    @classmethod
    def unknown(cls, why: str = "unknown") -> "BuildOptions":
        """Nothing known: every rule that needs an option takes the kernel's default."""
        return cls("", None, None, None, why)


class ModuleInfo(NamedTuple):
    """One loadable module (or ``vmlinux``) and what its ``.modinfo`` says."""

    name: str
    """Module name as the kernel knows it: the file's base name with ``-`` turned into ``_``."""
    path: str
    """Path of the ``.ko`` file as loaded, or ``""`` when only Module.symvers names it."""
    license: str
    """``MODULE_LICENSE`` string (``""`` when absent)."""
    vermagic: str
    """``vermagic`` modinfo string."""
    srcversion: str
    """``srcversion`` modinfo string."""
    intree: bool
    """``intree=Y`` in modinfo: built from the kernel tree."""
    depends: tuple[str, ...]
    """``depends`` modinfo list, as modpost computed it at build time."""
    import_ns: tuple[str, ...]
    """Namespaces named by ``MODULE_IMPORT_NS``."""
    modversions: bool = False
    """The module carries symbol versions (a ``__versions`` or ``__version_ext_crcs`` section): it
    was built with ``CONFIG_MODVERSIONS``. The kernel then skips the release in the vermagic check."""
    layout_crc: int | None = None
    """The CRC the module recorded for ``module_layout``, which the kernel checks before any symbol
    (``check_modstruct_version()``); None when it recorded none."""

    @property
    def gpl_compatible(self) -> bool:
        """True when the kernel lets a module with this licence use GPL-only exports
        (``license_is_gpl_compatible()``)."""
        return self.license in GPL_COMPATIBLE_LICENSES


class Export(NamedTuple):
    """One exported symbol: an ``EXPORT_SYMBOL*`` entry of a module or of vmlinux."""

    module: str
    """Name of the exporting module (``vmlinux`` for the built-in kernel)."""
    symbol: str
    """The symbol's linker name."""
    gpl: bool
    """True for ``EXPORT_SYMBOL_GPL`` (``__ksymtab_gpl``)."""
    namespace: str
    """Symbol namespace (``EXPORT_SYMBOL_NS``), ``""`` for none."""
    crc: int | None
    """modversions CRC, or None when the kernel was built without CONFIG_MODVERSIONS."""


class Import(NamedTuple):
    """One undefined symbol of a module: what it needs someone else to export."""

    module: str
    """Name of the importing module."""
    symbol: str
    """The symbol's linker name."""
    crc: int | None
    """The CRC recorded in the module's ``__versions`` section, if any."""
    weak: bool = False
    """A weak undefined symbol: left unresolved, it does not stop the module from loading."""


class Imports(NamedTuple):
    """A module's undefined symbols as three parallel columns, in symbol-table order, each name once.

    Columns rather than one :class:`Import` per symbol: the modules of a Debian kernel import 185k
    symbols, and a record each would cost more to build and to send between processes than reading
    the files does. :meth:`records` gives the records.
    """

    symbols: list[str]
    """Linker names of the undefined symbols."""
    crcs: list[int | None]
    """For each, the CRC recorded in ``__versions``, or None."""
    weak: list[bool]
    """For each, True when it is a weak undefined symbol (it does not stop the module loading)."""

    def records(self, module: str) -> list[Import]:
        """The same imports as :class:`Import` records of ``module``."""
        return [Import(module, s, c, w) for s, c, w in zip(self.symbols, self.crcs, self.weak)]


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


class Skipped(NamedTuple):
    """An input that was not loaded, with the reason, for the final summary."""

    path: str
    """The file or line that was skipped (``file:line`` for a bad Module.symvers line)."""
    reason: str
    """Why, in words a person can act on."""


class ModuleData(NamedTuple):
    """Everything read from one module file."""

    info: ModuleInfo
    """The module and its modinfo."""
    exports: list[Export]
    """Its ksymtab entries."""
    imports: Imports
    """Its undefined symbols, with the CRCs of ``__versions``, as columns."""

    def import_records(self) -> list[Import]:
        """Its imports as one :class:`Import` record each."""
        return self.imports.records(self.info.name)
