"""Plain records that the loaders yield: from binaries, modules with their exports and imports;
from C source, functions, calls, export sites, run-time lookups and which file is built into
which module.

Loaders read files and yield these; ``ksymgraph.graph`` resolves them into a graph. Nothing here
knows about a database.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import KsymgraphError

__all__ = ["GPL_COMPATIBLE_LICENSES", "KernelMeta", "BuildOptions", "ModuleInfo", "Export", "Import", "Imports",
           "ModuleData", "LookUpEdge", "Skipped", "LoaderError",
           "FunctionDef", "Call", "ExportSite", "LookUp", "StringArg", "ArgFlow", "ParseStats", "FileResult",
           "BuiltInto", "ModObject", "Reference", "REFERENCE_KINDS"]


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


# --------------------------------------------------------------------------------------------
# C source


class FunctionDef(NamedTuple):
    """A function defined in source (macro-defined ones included: ``SYSCALL_DEFINE3(read, ...)``
    is ``sys_read``)."""

    name: str
    """The function's name."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the function's name (where ctags and cscope put it)."""
    end_line: int
    """1-based line of the closing brace."""
    static: bool
    """Declared ``static``."""
    inline: bool
    """Declared ``inline`` (``__always_inline`` and ``__inline__`` count)."""
    canary: bool = False
    """Its body has what makes gcc's ``-fstack-protector-strong`` give it a stack canary (and a
    call of ``__stack_chk_fail``): a local array (a VLA, a ``va_list``), the address of a local
    variable taken (``&x``, ``&x.field``), or a call of ``alloca``; False when it is marked
    ``no_stack_protector``. Its own body only: what an inlined callee adds is the graph's to
    follow (:mod:`ksymgraph.graph.compiler`)."""
    indirect: bool = False
    """Its body calls through a function pointer: a struct member (``ops->fn()``), a parameter or
    a local variable (``cb(x)``, ``(*fn)(x)``), a variable of the file, or an expression
    (``table[i](x)``). With retpolines each becomes a call of an ``__x86_indirect_thunk_*``. Only
    member calls are :class:`Call` records; the others call no symbol."""


class Call(NamedTuple):
    """A call inside a function body."""

    caller: str
    """The enclosing function."""
    callee: str
    """The called name; for a call through a struct member (``ops->fn()``), the member (``fn``)."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the callee's name."""
    via_member: bool
    """True for a call through a struct member (``ops->fn()``, ``s.fn()``)."""
    args: str | None = None
    """Each argument's constness as gcc's folding sees it (:mod:`ksymgraph.loaders.cfold`: ``c``,
    ``C``, ``-``, ``?``, ``pN``), comma-separated; ``""`` none constant; None not read (a macro's)."""
    guard: str = ""
    """The ``__builtin_constant_p()`` conditions on the caller's parameters under which the call
    is compiled (:mod:`ksymgraph.loaders.cfold`), ``""`` always."""


class ExportSite(NamedTuple):
    """An ``EXPORT_SYMBOL*`` macro in source."""

    symbol: str
    """The exported symbol."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the macro."""
    gpl: bool
    """``_GPL`` variant (``EXPORT_SYMBOL_GPL``, ``EXPORT_SYMBOL_NS_GPL``...)."""
    namespace: str
    """The ``EXPORT_SYMBOL_NS*`` namespace (quotes removed), ``""`` for none."""
    function: str | None
    """The function of that name defined in the same file, else None (a variable, or defined
    elsewhere, e.g. in assembly)."""


class LookUp(NamedTuple):
    """A symbol reached by name at run time."""

    symbol: str
    """The symbol's name as written in the source."""
    how: str
    """``kallsyms_lookup_name``, ``__symbol_get``, ``symbol_get``, ``symbol_request``,
    ``module_kallsyms_lookup_name``, ``kprobe``, ``kretprobe`` or ``wrapper:<function>``."""
    file: str
    """Source file (relative to the tree root) of the call or initialiser naming the symbol."""
    line: int
    """1-based line of the call (or of the ``.symbol_name`` initialiser or assignment)."""
    function: str | None
    """The function containing that line, or None at file scope."""


class StringArg(NamedTuple):
    """A call that passes a symbol-like string as one of its arguments."""

    caller: str | None
    """The function making the call (None at file scope)."""
    callee: str
    """The called function's name."""
    arg_index: int
    """0-based position of the argument."""
    value: str
    """The string's content: a literal, or the literal a ``const char *`` variable or a struct
    field was initialised with in the same file."""
    file: str
    """Source file of the call, relative to the tree root."""
    line: int
    """1-based line of the call's function name."""


class ArgFlow(NamedTuple):
    """A function passing one of its ``char *`` parameters on to a call, unchanged."""

    function: str
    """The function whose parameter flows."""
    param_index: int
    """0-based position of that parameter."""
    callee: str
    """The function it is passed to."""
    arg_index: int
    """0-based position of the argument in that call."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the call."""


class ParseStats(NamedTuple):
    """How well the parser read a set of files, and what it left out."""

    files: int
    """Files parsed."""
    functions: int
    """Function definitions found."""
    functions_with_errors: int
    """Function definitions whose subtree holds a parse error."""
    error_nodes: int
    """ERROR nodes in all trees."""
    files_skipped: int = 0
    """Files not parsed: not read (unreadable, not a regular file, outside the tree, too large)
    or over the parse deadline. Each is among the skips, with its reason."""
    calls_too_deep: int = 0
    """Calls nested deeper than :data:`ksymgraph.loaders.cparse.MAX_DEPTH` tree levels, counted but
    not recorded (the files they are in are among the skips, read in part)."""
    includes_refused: int = 0
    """``#include`` lines not followed: an absolute path, or one that leaves the tree (each is
    among the skips)."""
    conditions_decided: int = 0
    """Preprocessor conditions (``#if``, ``#ifdef``, ``#ifndef``, ``#elif``) decided under the
    build's ``.config``, version, ``MODULE`` and architecture (:mod:`ksymgraph.loaders.preproc`):
    the branches not compiled were not read. 0 without a ``.config``."""
    conditions_kept: int = 0
    """Preprocessor conditions that could not be decided (a macro from a header, an unknown
    function-like macro, bad input): every branch they choose between was read."""
    lines_blanked: int = 0
    """Lines in the branches not compiled, not read."""
    references_too_deep: int = 0
    """Identifiers nested deeper than :data:`ksymgraph.loaders.ctree.MAX_DEPTH` tree levels, counted
    but not read as references (the bound calls have)."""

    def function_error_share(self) -> float:
        """Share of the functions found that a parse error touches (0.0 when none found)."""
        return self.functions_with_errors / self.functions if self.functions else 0.0

    def __add__(self, other):  # type: ignore[override]
        return ParseStats(*(a + b for a, b in zip(self, other)))


class FileResult(NamedTuple):
    """Everything read from one file."""

    file: str
    """The file, relative to the tree root."""
    functions: list[FunctionDef]
    """Function definitions."""
    calls: list[Call]
    """Calls inside function bodies."""
    exports: list[ExportSite]
    """``EXPORT_SYMBOL*`` sites."""
    lookups: list[LookUp]
    """Lookups seen in this file alone: kprobe ``.symbol_name``, ``symbol_get(x)``, and string
    literals passed straight to ``kallsyms_lookup_name`` and friends. Wrapper calls are resolved
    across files by :func:`ksymgraph.loaders.lookups.resolve_lookups`."""
    string_args: list[StringArg]
    """Symbol-like strings passed to calls (input of the wrapper analysis)."""
    arg_flows: list[ArgFlow]
    """``char *`` parameters passed on to calls (input of the wrapper analysis)."""
    includes: list[str]
    """Included files found on disk, relative to the tree root."""
    includes_refused: list[str]
    """Includes not followed, with the reason (``#include "/etc/passwd" not followed: an absolute
    path``): an absolute path, or one that leads outside the tree from the file and from every
    include directory."""
    stats: ParseStats
    """Parse statistics of this file."""
    error: str | None
    """Why the file could not be read or was read only in part (None when all went well)."""
    directive_notes: list[Skipped] = ()  # type: ignore[assignment]
    """Preprocessor directives that are bad input (a condition that does not parse, ``#else``
    without ``#if``, an unterminated conditional, a macro that recurses), each as
    ``Skipped("file:line", reason)``; the file was read with every branch of those kept."""
    references: list[Reference] = ()  # type: ignore[assignment]
    """Identifiers that name data or a function's address rather than call it (see
    :class:`Reference`)."""


class BuiltInto(NamedTuple):
    """A source file compiled into vmlinux or into a module."""

    file: str
    """The source file (``.c``, else ``.S`` or ``.rs``), relative to the tree root."""
    module: str
    """The module's name as the kernel knows it (``.ko`` base name with ``-`` turned into ``_``),
    or ``vmlinux`` for built-in code."""
    ko: str | None
    """The module's ``.ko`` path relative to the tree root (``sound/pci/hda/snd-hda-intel.ko``),
    None for vmlinux."""


class ModObject(NamedTuple):
    """One source file of a built module."""

    file: str
    """The ``.c`` file (or ``.S``), relative to the tree root."""
    module: str
    """The module's name (``lttng_tracer``)."""



#: What a :class:`Reference` does with the symbol it names.
REFERENCE_KINDS = ("read", "address", "initialiser")


class Reference(NamedTuple):
    """An identifier that names a symbol without calling it: a read of data (``jiffies``,
    ``kmalloc_caches[i]``), an address taken (``&some_export``, a function passed as an argument),
    or a file-scope initialiser (``.open = f`` in an ops table, ``&param_ops_int`` in what
    ``module_param`` expands to)."""

    function: str
    """The enclosing function; for a file-scope initialiser the file's pseudo-function
    :data:`ksymgraph.loaders.macros.FILE_SCOPE`; for one in a macro body, the macro."""
    symbol: str
    """The name referred to, as written (after macro argument substitution for expansions)."""
    file: str
    """Source file, relative to the tree root."""
    line: int
    """1-based line of the identifier (of the macro invocation, for an expansion)."""
    kind: str
    """One of :data:`REFERENCE_KINDS`: ``read`` (a value used), ``address`` (``&name``) or
    ``initialiser`` (in a file-scope initialiser or a file-scope macro's expansion)."""
    via: str = ""
    """The macros a file-scope invocation expanded through to produce this name
    (``module_param → module_param_named``), ``""`` when written in the source itself."""
    guard: str = ""
    """As :attr:`Call.guard`: the conditions under which the reference is compiled."""
