"""The records the queries answer with: reasons, call sites, replacements, renames, lookups hit, and
the verdict on one module.

The answers stay records (NamedTuples, a docstring per field) through the queries, the reports and
the notebooks, and turn into plain dictionaries only in ``to_json`` — the JSON contract the README
documents.
"""

from __future__ import annotations

from typing import NamedTuple

from ..loaders.records import LookUpEdge

__all__ = ["ExportState", "Reason", "CallSite", "Replacement", "Rename", "LookupHit", "ModuleVerdict"]


class Reason(NamedTuple):
    """Why one module fails to load."""

    rule: str
    """One of :data:`ksymgraph.queries.loadrules.RULES`."""
    symbol: str
    """The symbol concerned (``module_layout`` for the module-structure check; ``""`` for vermagic)."""
    via_module: str | None
    """For ``dependency``: the failing module that exported the symbol."""
    message: str
    """The reason in the kernel's or modpost's words."""

    def to_json(self) -> dict:
        return self._asdict()


class CallSite(NamedTuple):
    """A call to a symbol in a module's source, directly or through a header's inline or macro."""

    module: str
    """The module the calling file is built into."""
    symbol: str
    """The symbol called."""
    function: str
    """The calling function."""
    file: str
    """Its file."""
    line: int
    """Line of the call."""
    via: str | None = None
    """The header inline or macro the call goes through (``usb_register`` for
    ``usb_register_driver``), None for a direct call."""
    kind: str = "call"
    """``call``, or ``reference`` for a site that names the symbol without calling it (reads
    ``jiffies``, takes ``&param_ops_int``, puts a function in an ops table)."""
    reference: str | None = None
    """For a reference: ``read``, ``address`` or ``initialiser``
    (:data:`ksymgraph.loaders.records.REFERENCE_KINDS`); None for a call."""
    chain: tuple[str, ...] = ()
    """The names from the one written at the site to the symbol, each calling or naming the next
    (``spin_lock``, ``raw_spin_lock``, ``_raw_spin_lock``); empty when the site names the symbol."""

    def to_json(self, with_module: bool = False) -> dict:
        """``{symbol, function, file, line, via, kind, reference, chain}`` (and ``module`` first,
        with ``with_module``)."""
        d = self._asdict()
        d["chain"] = list(self.chain)
        if not with_module:
            del d["module"]
        return d

    @property
    def through(self) -> str:
        """How the site reaches the symbol, in words: ``spin_lock → raw_spin_lock → _raw_spin_lock``,
        ``reference (read)``, ``reference (initialiser) module_param → module_param_named →
        param_ops_int``; ``""`` for a direct call."""
        path = " → ".join(self.chain) if self.chain else (self.via or "")
        if self.kind != "reference":
            return path
        return f"reference ({self.reference})" + (f" {path}" if path else "")

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"


class Replacement(NamedTuple):
    """A still-exported function that reaches a removed symbol: a candidate to offer in its place."""

    symbol: str
    """The removed symbol."""
    export: str
    """The exported function that calls it (directly or through others)."""
    gpl: bool
    """Whether that export is GPL-only."""
    file: str
    """Where the export is defined."""
    hops: int
    """1 for a direct caller, 2 for a caller of a caller, ..."""

    def to_json(self) -> dict:
        return self._asdict()


class Rename(NamedTuple):
    """How a vanished export stays reachable through an unchanged API."""

    symbol: str
    """The export that vanished from kernel B."""
    api: str
    """The header inline or macro that modules call (``kmalloc``); may be ``symbol`` itself."""
    now_via: str
    """The export of B that the API reaches now (``__kmalloc_noprof``)."""
    how: str
    """The evidence: the path through B's headers, and where the API is defined in A and B."""

    def to_json(self) -> dict:
        return self._asdict()


class LookupHit(NamedTuple):
    """A run-time lookup (``kallsyms_lookup_name``, kprobe, ``symbol_get``) that a change breaks."""

    lookup: LookUpEdge
    """The lookup: module, symbol, mechanism, file and line."""
    why: str
    """Why it stops working, in words."""

    def to_json(self) -> dict:
        return {**self.lookup._asdict(), "why": self.why}


class ModuleVerdict(NamedTuple):
    """Would one module load on a kernel, and if not, why and what to change."""

    module: str
    """Module name."""
    path: str
    """The file checked (``""`` for a module taken from the store by name)."""
    loads: bool
    """True when nothing stops it (for an upgrade: once rebuilt against the new kernel's headers)."""
    reasons: list[Reason]
    """Why it would not load, its own reasons before inherited ones."""
    missing: dict[str, list[CallSite]]
    """Unexported symbol it needs → in-tree code built as a module that calls it (the justification
    export reviewers ask for), when the kernel's source is loaded."""
    lookups_missing: list[LookUpEdge]
    """Symbols it looks up by name at run time that the kernel lacks."""
    rebuild: list[Rename]
    """Imports that vanished behind a kept API: "rebuild needed, API kept (now via …)"."""
    call_sites: list[CallSite]
    """With its source loaded: the calls to its broken symbols — what to change."""
    as_built: list[Reason]
    """Why the kernel refuses the module as it was built for another kernel (vermagic, CRCs): a
    rebuild is needed even where the source needs no change."""

    def to_json(self) -> dict:
        return {"module": self.module, "path": self.path, "loads": self.loads,
                "reasons": [r.to_json() for r in self.reasons],
                "missing": {s: [c.to_json(with_module=True) for c in sites] for s, sites in self.missing.items()},
                "lookups_missing": [{"symbol": lu.symbol, "how": lu.how, "file": lu.file, "line": lu.line}
                                    for lu in self.lookups_missing],
                "rebuild": [r.to_json() for r in self.rebuild],
                "call_sites": [c.to_json() for c in self.call_sites],
                "as_built": [r.to_json() for r in self.as_built]}


class ExportState(NamedTuple):
    """How a kernel exports one symbol."""

    module: str
    """Owner: ``vmlinux`` or a module name."""
    gpl: bool
    """GPL-only."""
    namespace: str
    """Namespace, ``""`` for none."""
    crc: int | None
    """modversions CRC."""
