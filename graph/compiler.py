"""Compiler-inserted imports as relationships: ``COMPILER_INSERTS`` from a module, or from a header
inline, to the symbol the kernel's build options make the compiler put there.

:mod:`ksymgraph.loaders.compiler` lists the symbols and the ``.config`` options causing each; this
module decides, from the kernel's ``.config`` and its source graph, which modules and functions
get them (the entry's trigger):

* ``code``: every module with a C function of its own (a non-macro function defined in a file
  built into it) — ``__fentry__``, ``__x86_return_thunk``;
* ``canary``: every module with a function that gets a stack canary (``Function.canary``: a local
  array, a local whose address is taken, alloca), and every header function that has one, so that
  a module whose code inlines it predicts the symbol as well — ``__stack_chk_fail``;
* ``indirect``: likewise for a call through a function pointer (``Function.indirect``: a struct
  member, a parameter, a local, an expression) — ``__x86_indirect_thunk_rax``;
* ``inline:NAME``: the header functions called ``NAME`` (``might_resched`` →
  ``__SCT__might_resched``), so every module whose graph reaches them predicts the symbol.

The relationships carry the options and the reason. They are not ``CALLS``: call-site worklists
(:mod:`ksymgraph.queries.callsites`) never show them as sites to change, and the fidelity measure
(:mod:`ksymgraph.queries.fidelity`) counts them as predicted imports.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..loaders.compiler import CompilerInsert, inline_triggers, inserted_symbols
from ..loaders.kbuild import read_config
from ..loaders.macros import FILE_SCOPE
from .source import SourceTables

__all__ = ["read_build_config", "modules_with_code", "modules_with_flag", "modules_with_indirect_calls",
           "with_compiler_inserts"]

#: The Function property each per-function trigger reads (set by the C loader:
#: :class:`~ksymgraph.loaders.records.FunctionDef`).
FLAG_OF_TRIGGER = {"canary": "canary", "indirect": "indirect"}

_MODULE_KEY = ("COMPILER_INSERTS", "Module", "Symbol")
_FUNCTION_KEY = ("COMPILER_INSERTS", "Function", "Symbol")


def read_build_config(config: str | Path | Mapping[str, str] | None) -> dict[str, str] | None:
    """The ``.config`` as a mapping (a path is read; a mapping is taken as it is); None without one
    or when it cannot be read (the load's build options already say so in the notes)."""
    if config is None or isinstance(config, Mapping):
        return None if config is None else dict(config)
    from ..loaders.records import LoaderError

    try:
        return read_config(config)
    except LoaderError:
        return None


def _chunks(table) -> Iterator[pa.Table]:
    """The rows of a table, or of a stream of tables (anything with ``chunks()``, as a store's
    streamed CALLS tables are), a table at a time."""
    if isinstance(table, pa.Table):
        yield table
    else:
        yield from table.chunks()


def _module_of_functions(st: SourceTables, fids: pa.Array) -> set[str]:
    """The module ids the files of the functions ``fids`` are built into."""
    files = pa.chunked_array([d.filter(pc.is_in(d["from"], fids))["to"]
                              for d in _chunks(st.rels[("DEFINED_IN", "Function", "File")])], pa.string())
    return {m for b in _chunks(st.rels[("BUILT_INTO", "File", "Module")])
            for m in b.filter(pc.is_in(b["from"], files))["to"].to_pylist()}


def modules_with_code(st: SourceTables) -> set[str]:
    """Module ids with at least one C function (not a macro, not a file-scope initialiser) of their own."""
    f = st.nodes["Function"]
    code = f.filter(pc.and_(pc.invert(pc.fill_null(f["is_macro"], False)), pc.not_equal(f["name"], FILE_SCOPE)))
    return _module_of_functions(st, code["id"])


def _flagged(functions: pa.Table, flag: str) -> pa.Table:
    """The rows of ``functions`` whose boolean ``flag`` is true (none when the column is missing)."""
    if flag not in functions.column_names:
        return functions.slice(0, 0)
    return functions.filter(pc.fill_null(functions[flag], False))


def modules_with_flag(st: SourceTables, flag: str) -> set[str]:
    """Module ids with a function of their own (in a file built into them) whose ``flag``
    (``canary``, ``indirect``) is true."""
    return _module_of_functions(st, _flagged(st.nodes["Function"], flag)["id"])


def modules_with_indirect_calls(st: SourceTables) -> set[str]:
    """Module ids with a call through a function pointer in one of their functions."""
    return modules_with_flag(st, "indirect")


def with_compiler_inserts(st: SourceTables, kernel: str, config: Mapping[str, str] | None,
                          symbol_ids: set[str]) -> SourceTables:
    """``st`` with the ``COMPILER_INSERTS`` relationships ``config`` turns on, and the Symbol nodes
    they need that neither the binaries (``symbol_ids``) nor the source wrote. Without a
    ``.config``, ``st`` as it is."""
    entries = inserted_symbols(config)
    if not entries:
        return st
    vmlinux = f"{kernel}|vmlinux"
    by_trigger: dict[str, set[str]] = {}
    if any(e.trigger == "code" for e in entries):
        by_trigger["code"] = modules_with_code(st) - {vmlinux}
    for trigger, flag in FLAG_OF_TRIGGER.items():
        if any(e.trigger == trigger for e in entries):
            by_trigger[trigger] = modules_with_flag(st, flag) - {vmlinux}
    funcs = st.nodes["Function"]
    headers = funcs.filter(pc.ends_with(funcs["file"], ".h"))
    m_rows: list[tuple[str, CompilerInsert]] = []
    f_rows: list[tuple[str, CompilerInsert]] = []
    for e in entries:
        if e.trigger.startswith("inline:"):
            ids = headers.filter(pc.is_in(headers["name"], pa.array(inline_triggers(e), pa.string())))["id"]
            f_rows += [(fid, e) for fid in ids.to_pylist()]
        else:
            m_rows += [(mid, e) for mid in sorted(by_trigger[e.trigger])]
            if e.trigger in FLAG_OF_TRIGGER:  # what a header function has, its callers inline
                f_rows += [(fid, e) for fid in _flagged(headers, FLAG_OF_TRIGGER[e.trigger])["id"].to_pylist()]
    rels = dict(st.rels)
    rels[_MODULE_KEY] = _rel_table(kernel, m_rows)
    rels[_FUNCTION_KEY] = _rel_table(kernel, f_rows)
    # Symbols the inserts point at that nothing else wrote.
    have = set(symbol_ids) | set(st.nodes["Symbol"]["id"].to_pylist())
    new = sorted({f"{kernel}|{e.symbol}" for _, e in m_rows + f_rows} - have)
    nodes = dict(st.nodes)
    extra = pa.table({"id": pa.array(new, pa.string()), "kernel": pa.array([kernel] * len(new), pa.string()),
                      "name": pa.array([i.split("|", 1)[1] for i in new], pa.string()),
                      "kind": pa.array(["unknown"] * len(new), pa.string())})
    nodes["Symbol"] = pa.concat_tables([st.nodes["Symbol"], extra.select(st.nodes["Symbol"].column_names)
                                        .cast(st.nodes["Symbol"].schema)])
    counts = dict(st.counts)
    counts["COMPILER_INSERTS"] = len(m_rows) + len(f_rows)
    return SourceTables(nodes, rels, counts)


def _rel_table(kernel: str, rows: list[tuple[str, CompilerInsert]]) -> pa.Table:
    return pa.table({
        "from": pa.array([r[0] for r in rows], pa.string()),
        "to": pa.array([f"{kernel}|{e.symbol}" for _, e in rows], pa.string()),
        "kernel": pa.array([kernel] * len(rows), pa.string()),
        "causes": pa.array([list(e.options) for _, e in rows], pa.list_(pa.string())),
        "why": pa.array([e.why for _, e in rows], pa.string()),
    })
