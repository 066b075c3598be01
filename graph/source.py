"""Resolve a source index into graph tables: Function, File, CALLS, REFERENCES, DEFINED_IN,
IMPLEMENTS, EXPORTED_AS, BUILT_INTO and LOOKS_UP — with Arrow joins, never a Python tuple per row.

A kernel tree has about 600k function definitions and 4M calls; the C loader
(:mod:`ksymgraph.loaders.cindex`) leaves them in Parquet shards written by its workers, and this
module turns the shards into the store's tables with ``pyarrow`` compute and joins.

How a call's callee is resolved, in order — among what the build sees: nothing of a tree's
:attr:`~ksymgraph.loaders.trees.SourceTree.outside` (``tools/``, ``scripts/``, the other
architectures' ``arch/*/``; but a file that a compiled file includes: ``lib/fdt.c`` is
``#include "../scripts/dtc/libfdt/fdt.c"``), and no non-``static`` function of a file the build
does not compile:

1. a function of that name defined in the same file (a ``static`` helper, or any function there),
   then in another file of the same translation unit: a non-header file that a compiled file
   ``#include`` s is compiled as part of it (:mod:`ksymgraph.loaders.units`; 6.1's
   ``sound/pci/echoaudio/echo3g.c`` is ``#define`` s and ``#include "echo3g_dsp.c"``,
   ``"echoaudio.c"``, ``"midi.c"``...; ``drivers/usb/host/ehci-hcd.c``'s ``ehci_urb_enqueue()``
   calls ``ehci-q.c``'s ``static`` ``submit_async()``, and ``ehci-timer.c`` calls
   ``ehci-hcd.c``'s ``static`` ``ehci_work()``). Such a file counts as compiled and is
   ``BUILT_INTO`` every module of the files that include it; only the includes the index followed
   count (under the build's preprocessor decisions). A file in several units resolves in the
   first by path, as one ``Function`` per file and name can: ``echoaudio.c`` is in fourteen, one
   per card, and its call to ``init_hw()`` reaches ``darla20.c``'s unit's (``darla20_dsp.c``);
2. a function or macro of that name in a header of the same directory (a driver's own ``foo.h``:
   dozens of drivers define their own ``dprintk()``), outside the kernel's ``include/`` and
   ``arch/*/include/``;
3. a non-``static`` function defined in a header the build sees (``extern inline``, as
   ``fortify-string.h``'s ``__FORTIFY_INLINE`` bodies: what the compiler inlines instead of the
   library's), then a non-``static`` function of that name in a file the build compiles (the
   first by path; any file of a tree whose files are not attributed to modules);
4. a ``static inline`` function or a macro of that name in a header: the architecture's own
   (``arch/x86/include/``) first, then ``include/``, then the others by path — a header's inline is
   compiled into every file that includes it;
5. otherwise a ``Symbol`` of that name: an export of another tree, or an assembly symbol.

Before these rules, a 6.1 call to ``spin_lock()`` reached the non-static ``spin_lock`` of
``tools/testing/selftests/kvm/lib/aarch64/spinlock.c`` and ``udelay()`` arc's ``asm/delay.h``.

A call through a struct member (``ops->fn()``) is kept as a call to the pseudo-symbol ``->fn``
(kind ``member``): who calls which operation, without guessing the implementation.

A reference (data read, address taken, file-scope initialiser: :class:`~ksymgraph.loaders.records.Reference`)
is resolved the same way, except that it never adds a symbol: the name must be a function of
the tree or a symbol the graph has for another reason (most often an export or import of the
binaries: ``jiffies``, ``param_ops_int``). File-scope initialisers refer from the file's
pseudo-function ``(file scope)``, made here for a file that has no file-scope macro call.

Files are attributed to modules by ``BUILT_INTO`` (Kbuild under the kernel's ``.config``, or a
built tree's ``.mod`` files; a file in several modules, and an included one, into each); ``LOOKS_UP``
edges go from the modules a lookup's file is built into,
or, for a lookup inside a header's inline wrapper, from every module whose files call that wrapper.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from ..loaders.cfold import UNREAD
from ..loaders.macros import FILE_SCOPE
from ..loaders.trees import SourceTree
from .columns import TableStream

__all__ = ["SourceTables", "source_tables"]


class SourceTables(NamedTuple):
    """Arrow tables for the source part of one kernel, keyed like :class:`GraphBatch`."""

    nodes: dict[str, pa.Table]
    """``Function``, ``File`` and the extra ``Symbol`` rows (id, kernel, props...)."""
    rels: dict[tuple[str, str, str], pa.Table]
    """(type, from, to) → rows (from, to, kernel, props...)."""
    counts: dict[str, int]
    """Rows per table, ``attributed_files`` (files built into a known module) and
    ``unattributed_files`` (files built into none)."""


def _ids(kernel: str, *cols: pa.Array) -> pa.Array:
    parts = [pa.scalar(kernel)] + list(cols)
    return pc.binary_join_element_wise(*parts, "|")


def _str(n: int, value: str) -> pa.Array:
    return pa.array([value] * n, type=pa.string())


def _read(tree: SourceTree, table: str) -> pa.Table:
    import pyarrow.parquet as pq

    from ..loaders.cindex import read_table

    t = read_table(tree.shard_dir, table)
    if table == "functions":
        t = t.append_column("is_macro", pa.array([False] * len(t), pa.bool_()))
    macros = tree.shard_dir / "macros" / f"{table}.parquet"
    if table == "functions" and macros.is_file():  # macros, and the file-scope pseudo-functions of .c files
        m = pq.read_table(macros)
        m = m.append_column("is_macro", pc.not_equal(m["name"], pa.scalar(FILE_SCOPE)))
        t = pa.concat_tables([t, m.cast(t.schema)])
    return _with_prefix(tree, t)


def _with_prefix(tree: SourceTree, t: pa.Table) -> pa.Table:
    """``t`` with the tree's prefix on its file paths (an out-of-tree tree's ``<dirname>/``)."""
    if not tree.prefix or "file" not in t.column_names:
        return t
    return t.set_column(t.column_names.index("file"), "file",
                        pc.binary_join_element_wise(pa.scalar(tree.prefix), t["file"], ""))


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


#: Calls (or references) resolved at a time: the resolve step holds one batch, not a tree's 4M.
CALL_BATCH = 1 << 19


def _batches(tree: SourceTree, table: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of ``tree``'s index table ``table`` (``calls`` or ``references``: its shards in
    order, then its macros' rows; only ``columns`` if given), about :data:`CALL_BATCH` at a time,
    with the tree's prefix on the file paths."""
    import pyarrow.parquet as pq

    from ..loaders.cindex import read_table

    files = sorted((tree.shard_dir / table).glob("*.parquet"))
    schema = pq.read_schema(files[0]) if files else read_table(tree.shard_dir, table).schema
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    macros = tree.shard_dir / "macros" / f"{table}.parquet"
    parts: list[pa.Table] = []
    rows = 0

    def batch() -> pa.Table:
        return _with_prefix(tree, pa.concat_tables(parts) if len(parts) > 1 else parts[0])

    for path in [*files, *([macros] if macros.is_file() else [])]:
        shard = pq.ParquetFile(path)  # its footer read once, for the columns it has and the rows
        have = set(shard.schema_arrow.names)
        t = shard.read(columns=[c for c in schema.names if c in have])
        parts.append(_conformed(t, schema))
        rows += len(t)
        if rows >= CALL_BATCH:
            yield batch()
            parts, rows = [], 0
    if parts:
        yield batch()


def _conformed(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with ``schema``'s columns in its order, a column ``t`` lacks as nulls (a macro
    pass's table has no ``args`` or ``guard``: nothing is known of its calls' arguments)."""
    if t.schema == schema:
        return t
    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(len(t), f.type) for f in schema]
    return pa.table(cols, schema=schema)


def _dirs(files: pa.Array) -> pa.Array:
    """The directory of each path (``drivers/net/a.c`` → ``drivers/net``)."""
    return pc.replace_substring_regex(files, pattern="/[^/]*$", replacement="")


def _first_by(names: pa.Array, order: pa.Array, rows: pa.Array, mask: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(names, rows) of the first row of each name by ``order`` among those ``mask`` keeps."""
    t = pa.table({"name": names, "order": order, "row": rows}).filter(mask)
    t = t.sort_by([("name", "ascending"), ("order", "ascending")])
    keys, kept = t["name"].combine_chunks(), t["row"].combine_chunks()
    firsts = pc.equal(pc.index_in(keys, keys), pa.array(range(len(keys)), type=pa.int32()))
    return keys.filter(firsts), kept.filter(firsts)


def _starts_with_any(files: pa.Array, prefixes: Iterable[str]) -> pa.Array:
    mask = pa.repeat(pa.scalar(False), len(files))
    for p in prefixes:
        mask = pc.or_(mask, pc.starts_with(files, p))
    return mask


class _Resolver:
    """Where a name used in a file (a callee, a name referred to) resolves, by the rules of the
    module docstring, as a row of the function table (one row per file and name) or null.

    Only what the build sees is a candidate: nothing of a tree's :attr:`~SourceTree.outside`
    (``tools/``, other architectures), and, in a tree whose files are attributed to modules, a
    non-``static`` function only in a file the build compiles (``kernel/locking/spinlock.c``'s
    ``_raw_spin_lock``, not ``tools/testing/selftests/kvm/lib/aarch64/spinlock.c``'s
    ``spin_lock``)."""

    def __init__(self, trees: list[SourceTree], funcs: pa.Table, built: dict[str, str],
                 units: dict[str, tuple[str, ...]] | None = None):
        files = funcs["file"].combine_chunks()
        names = funcs["name"].combine_chunks()
        self.key = pc.binary_join_element_wise(files, names, "|")
        rows = pa.array(range(len(funcs)), type=pa.int32())
        static = funcs["static"].combine_chunks()
        header = pc.ends_with(files, ".h")
        outside = [t.prefix + p for t in trees for p in t.outside]
        units = units or {}
        # (a file a compiled file includes is seen, even under scripts/: lib/fdt.c's
        # `#include "../scripts/dtc/libfdt/fdt.c"`)
        visible = pc.or_(pc.invert(_starts_with_any(files, outside)), pc.is_in(files, pa.array(sorted(units), pa.string())))
        # 1b. a function of the same translation unit: the compiled file and the non-header files it includes
        self.unit = _unit_functions(files, names, rows, units)
        unattributed = [t.prefix for t in trees if not t.built_into]
        compiled = pc.or_(pc.is_in(files, pa.array(sorted(built), pa.string())), _starts_with_any(files, unattributed))
        inline = pc.and_(pc.and_(static, header), pc.fill_null(funcs["inline"], False).combine_chunks())
        # 2. a header's function in the directory of the file (a driver's own foo.h); not in the
        #    kernel's include directories, where a sibling is no include (spinlock_api_up.h)
        shared = pc.match_substring_regex(files, "^(include|arch/[^/]+/include)/") if any(not t.prefix for t in trees) \
            else pa.repeat(pa.scalar(False), len(files))
        local = pc.and_(pc.and_(pc.and_(header, visible), pc.invert(shared)), pc.not_equal(names, pa.scalar(FILE_SCOPE)))
        self.local = _first_by(pc.binary_join_element_wise(_dirs(files), names, "|"), files, rows, local)
        # Headers by rank: the architecture's own (arch/x86/include/) first, then include/, then
        # the rest by path.
        arch_inc = [f"{t.prefix}arch/{t.arch}/include/" for t in trees if t.arch]
        rank = pc.if_else(_starts_with_any(files, arch_inc), pa.scalar("0"),
                          pc.if_else(_starts_with_any(files, [f"{t.prefix}include/" for t in trees if not t.prefix]),
                                     pa.scalar("1"), pa.scalar("2")))
        ranked = pc.binary_join_element_wise(rank, files, "")
        # 3a. a header's non-static definition: an `extern inline` (gnu_inline) body is what the
        #     compiler inlines in place of the library's (fortify-string.h's kmemdup())
        self.header_globals = _first_by(names, ranked, rows, pc.and_(pc.and_(pc.invert(static), header), visible))
        # 3b. a non-static function the build compiles
        self.globals = _first_by(names, files, rows, pc.and_(pc.and_(pc.invert(static), visible), compiled))
        # 4. a static inline or macro of a header the build sees
        self.inlines = _first_by(names, ranked, rows, pc.and_(inline, visible))

    def function(self, files: pa.Array, names: pa.Array) -> pa.Array:
        """The row of the function ``names`` defined in ``files`` (a caller, a referring function)."""
        return pc.index_in(pc.binary_join_element_wise(files, names, "|"), value_set=self.key)

    def resolve(self, files: pa.Array, names: pa.Array) -> pa.Array:
        """The row each name used in each file resolves to (rules 1-4), null where none."""
        key = pc.binary_join_element_wise(files, names, "|")
        same = pc.index_in(key, value_set=self.key)
        unit = self.unit[1].take(pc.index_in(key, value_set=self.unit[0]))
        local = self.local[1].take(pc.index_in(pc.binary_join_element_wise(_dirs(files), names, "|"),
                                               value_set=self.local[0]))
        extern_inline = self.header_globals[1].take(pc.index_in(names, value_set=self.header_globals[0]))
        glob = self.globals[1].take(pc.index_in(names, value_set=self.globals[0]))
        inl = self.inlines[1].take(pc.index_in(names, value_set=self.inlines[0]))
        return pc.coalesce(same, unit, local, extern_inline, glob, inl)


def _unit_functions(files: pa.Array, names: pa.Array, rows: pa.Array,
                    units: dict[str, tuple[str, ...]]) -> tuple[pa.Array, pa.Array]:
    """(``file|name`` keys, rows) of rule 1b: for a file of a translation unit (a compiled file,
    a non-header file it includes: ``units`` maps these to the compiled files), the function of
    each name defined in another file of the unit — of the first unit by path, then the first
    file by path, when the file is in several (``echoaudio.c``'s call to ``init_hw()`` reaches
    ``darla20.c``'s, the first of the fourteen files that include it)."""
    members: dict[str, list[str]] = {}
    for rel, roots in units.items():
        for root in roots:
            members.setdefault(root, [root]).append(rel)
    pairs: dict[str, list] = {"a": [], "b": [], "order": []}
    for root in sorted(members):
        unit = sorted(set(members[root]))
        for a in unit:
            for b in unit:
                if a != b:
                    pairs["a"].append(a)
                    pairs["b"].append(b)
                    pairs["order"].append(f"{root}\0{b}")
    if not pairs["a"]:
        return pa.array([], pa.string()), pa.array([], pa.int32())
    defs = pa.table({"b": files, "name": names, "row": rows})
    defs = defs.filter(pc.and_(pc.is_in(files, pa.array(sorted(set(pairs["b"])), pa.string())),
                               pc.not_equal(names, pa.scalar(FILE_SCOPE))))
    joined = pa.table({k: pa.array(v, pa.string()) for k, v in pairs.items()}).join(defs, "b", join_type="inner")
    keys = pc.binary_join_element_wise(joined["a"], joined["name"], "|")
    return _first_by(keys, joined["order"], joined["row"], pa.repeat(pa.scalar(True), len(keys)))


class _Calls(NamedTuple):
    """The resolved calls, as rows of the function table (not ids: 16 bytes a call, not 150)."""

    to_function: pa.Table
    """from (the caller's row), to (the callee's row), line, via_member (False), fold."""
    to_symbol: pa.Table
    """from (the caller's row), to (symbol name, ``->member`` for member calls), line, via_member,
    fold (``args`` or ``args|guard``: :func:`ksymgraph.loaders.cfold.split_fold`)."""
    header_calls: pa.Table
    """caller, callee, file of the calls to the functions that hold lookups in headers (for LOOKS_UP)."""
    files: pa.Array
    """The files the calls are in, once each, in order of appearance."""


def _fold(args, guard) -> pa.Array:
    """``CALLS.fold``: a call's ``args``, with ``|guard`` when it has a guard (``*|guard`` when its
    arguments were not read: :data:`~ksymgraph.loaders.cfold.UNREAD`)."""
    guard = pc.fill_null(guard, "")
    with_guard = pc.binary_join_element_wise(pc.fill_null(args, UNREAD), guard, "|")
    return pc.if_else(pc.not_equal(guard, ""), with_guard, args)


def _resolve_calls(trees: list[SourceTree], resolver: _Resolver, in_headers: pa.Array) -> _Calls:
    """Resolve every call of ``trees`` (the rules in the module docstring), a batch at a time.

    A caller is the function of its name in the call's file; calls whose caller is not defined
    there are dropped."""
    to_fn, to_sym, header, files = [], [], [], []
    for tree in trees:
        for calls in _batches(tree, "calls"):
            header.append(calls.filter(pc.is_in(calls["callee"], in_headers)).select(["caller", "callee", "file"]))
            files.append(pc.unique(calls["file"].combine_chunks()))
            caller = resolver.function(calls["file"], calls["caller"])
            known = pc.is_valid(caller)
            calls, caller = calls.filter(known), caller.filter(known)
            member = pc.fill_null(calls["via_member"], False)
            direct, d_caller = calls.filter(pc.invert(member)), caller.filter(pc.invert(member))
            target = resolver.resolve(direct["file"], direct["callee"])
            found = pc.is_valid(target)
            n_lost = len(direct) - pc.sum(found).as_py() if len(direct) else 0
            line = pc.cast(direct["line"], pa.int64())
            fold = _fold(direct["args"], direct["guard"])
            to_fn.append(pa.table({"from": d_caller.filter(found), "to": target.filter(found),
                                   "line": line.filter(found), "via_member": pa.repeat(pa.scalar(False), len(line) - n_lost),
                                   "fold": fold.filter(found)}))
            lost = pc.invert(found)
            to_sym.append(pa.table({"from": d_caller.filter(lost), "to": direct["callee"].filter(lost),
                                    "line": line.filter(lost), "via_member": pa.repeat(pa.scalar(False), n_lost),
                                    "fold": fold.filter(lost)}))
            members = calls.filter(member)
            names = pc.binary_join_element_wise(pa.scalar("->"), members["callee"], "")
            to_sym.append(pa.table({"from": caller.filter(member), "to": names,
                                    "line": pc.cast(members["line"], pa.int64()),
                                    "via_member": pa.repeat(pa.scalar(True), len(members)),
                                    "fold": _fold(pa.nulls(len(members), pa.string()), members["guard"])}))
    empty_fn = pa.schema([("from", pa.int32()), ("to", pa.int32()), ("line", pa.int64()), ("via_member", pa.bool_()),
                          ("fold", pa.string())])
    empty_sym = empty_fn.set(1, pa.field("to", pa.string()))
    return _Calls(
        pa.concat_tables([empty_fn.empty_table(), *(t.cast(empty_fn) for t in to_fn)]).combine_chunks(),
        pa.concat_tables([empty_sym.empty_table(), *(t.cast(empty_sym) for t in to_sym)]).combine_chunks(),
        pa.concat_tables(header) if header else pa.table({"callee": pa.array([], pa.string()),
                                                         "file": pa.array([], pa.string())}),
        pc.unique(pa.concat_arrays(files)) if files else pa.array([], pa.string()))


#: Rows of a CALLS table made into ids at a time, when the store writes it.
ID_CHUNK = 1 << 18


def _id_stream(kernel: str, resolved: pa.Table, fid: pa.Array, to_function: bool,
               internal: tuple[str, ...] = ()) -> TableStream:
    """A CALLS or REFERENCES table (``from``, ``to``, ``kernel``, then ``resolved``'s other columns
    but ``internal``) whose string ids are made a chunk at a time from ``resolved``'s rows (``from``
    a function's row; ``to`` a function's row, or a symbol's name)."""
    rest = [f for f in resolved.schema if f.name not in ("from", "to", *internal)]
    schema = pa.schema([("from", pa.string()), ("to", pa.string()), ("kernel", pa.string()), *rest])

    def chunks() -> Iterator[pa.Table]:
        for start in range(0, len(resolved), ID_CHUNK):
            part = resolved.slice(start, ID_CHUNK)
            to = fid.take(part["to"]) if to_function else _ids(kernel, part["to"])
            yield pa.table([fid.take(part["from"]), to, pa.repeat(pa.scalar(kernel), len(part)),
                            *(part[f.name] for f in rest)], schema=schema)

    return TableStream(schema, len(resolved), chunks)


def source_tables(kernel: str, trees: Iterable[SourceTree], module_ids: dict[str, str],
                  symbol_ids: set[str], stream: bool = False) -> SourceTables:
    """Resolve ``trees`` into tables for ``kernel``.

    ``module_ids`` maps module names to the ids the binary side wrote; ``symbol_ids`` holds the
    Symbol ids it wrote, so only new symbols are added here. With ``stream``, the two ``CALLS``
    tables are :class:`~ksymgraph.graph.columns.TableStream` s (their ids made a chunk at a time as
    the store writes them); else whole tables.
    """
    trees = list(trees)
    k = kernel
    funcs = _concat([_read(t, "functions") for t in trees])
    exports = _concat([_read(t, "exports") for t in trees])
    lookups = _concat([_read(t, "lookups") for t in trees])
    funcs = _with_file_scopes(funcs, _file_scope_files(trees))

    # Functions: one per (file, name); the first definition wins (#ifdef alternatives).
    funcs = funcs.sort_by([("file", "ascending"), ("line", "ascending")])
    key = pc.binary_join_element_wise(funcs["file"], funcs["name"], "|")
    first = pc.equal(pc.index_in(key, key), pa.array(range(len(key)), type=pa.int32()))
    funcs = funcs.filter(first)
    fid = _ids(k, funcs["file"], funcs["name"])
    n = len(funcs)
    function_nodes = pa.table({
        "id": fid, "kernel": _str(n, k), "name": funcs["name"], "file": funcs["file"],
        "line": pc.cast(funcs["line"], pa.int64()), "end_line": pc.cast(funcs["end_line"], pa.int64()),
        "static": funcs["static"], "inline": funcs["inline"], "is_macro": funcs["is_macro"],
        "canary": pc.fill_null(funcs["canary"], False), "indirect": pc.fill_null(funcs["indirect"], False)})

    # CALLS: caller = the function of that name in the call's file; the callee by the rules above.
    built, modules, units = _attribution(trees)
    in_headers = pa.array(sorted({r["function"] for r in lookups.to_pylist()
                                  if r["file"] not in built and r["function"]}), pa.string())
    resolver = _Resolver(trees, funcs, built, units)
    resolved = _resolve_calls(trees, resolver, in_headers)
    fid = fid.combine_chunks()
    # (via_member stays here: a member call is a call of the pseudo-symbol ``->fn`` in the store; a
    # property column of 4M rows costs LadybugDB's COPY about 75 MB)
    calls_ff = _id_stream(k, resolved.to_function, fid, to_function=True, internal=("via_member",))
    calls_fs = _id_stream(k, resolved.to_symbol, fid, to_function=False, internal=("via_member",))
    if not stream:
        calls_ff, calls_fs = calls_ff.table(), calls_fs.table()

    # Files.
    files = pc.unique(pa.concat_arrays([funcs["file"].combine_chunks(), resolved.files,
                                        exports["file"].combine_chunks(), pa.array(sorted(built), pa.string())]))
    file_nodes = pa.table({"id": _ids(k, files), "kernel": _str(len(files), k), "path": files})

    nonstatic = funcs.filter(pc.invert(funcs["static"]))
    sym = _new_symbols(k, resolved.to_symbol, nonstatic, exports, lookups, symbol_ids)
    symbol_nodes = pa.table({"id": sym["id"], "kernel": _str(len(sym), k), "name": sym["name"], "kind": sym["kind"]})

    defined_in = pa.table({"from": fid, "to": _ids(k, funcs["file"]), "kernel": _str(n, k)})
    ns_fid = fid.filter(pc.invert(funcs["static"]))
    implements = pa.table({"from": ns_fid, "to": _ids(k, nonstatic["name"]), "kernel": _str(len(ns_fid), k)})

    exported_as = _exported_as(k, exports, fid)
    built_pairs = [(f, module_ids[m]) for f, ms in sorted(modules.items()) for m in ms if m in module_ids]
    built_into = pa.table({"from": _ids(k, pa.array([f for f, _ in built_pairs], pa.string())),
                           "to": pa.array([m for _, m in built_pairs], pa.string()),
                           "kernel": _str(len(built_pairs), k)})

    looks_up = _looks_up(k, lookups, resolved.header_calls, modules, module_ids, lambda names: _calls_to(trees, names))

    # REFERENCES: resolved like the calls, to a function or to a symbol the graph has.
    prefix = len(k) + 1
    known = pa.concat_arrays([pa.array(sorted(i[prefix:] for i in symbol_ids), pa.string()),
                              sym["name"].combine_chunks()])
    refs = _resolve_references(trees, resolver, pc.fill_null(funcs["is_macro"], False).combine_chunks(), known)
    del resolver
    refs_ff = _id_stream(k, refs.to_function, fid, to_function=True)
    refs_fs = _id_stream(k, refs.to_symbol, fid, to_function=False)
    if not stream:
        refs_ff, refs_fs = refs_ff.table(), refs_fs.table()

    rels = {
        ("CALLS", "Function", "Function"): calls_ff,
        ("CALLS", "Function", "Symbol"): calls_fs,
        ("DEFINED_IN", "Function", "File"): defined_in,
        ("IMPLEMENTS", "Function", "Symbol"): implements,
        ("EXPORTED_AS", "Function", "Symbol"): exported_as,
        ("BUILT_INTO", "File", "Module"): built_into,
        ("LOOKS_UP", "Module", "Symbol"): looks_up,
        ("REFERENCES", "Function", "Function"): refs_ff,
        ("REFERENCES", "Function", "Symbol"): refs_fs,
    }
    nodes = {"Function": function_nodes, "File": file_nodes, "Symbol": symbol_nodes}
    counts = {name: t.num_rows for name, t in nodes.items()}
    counts.update({key[0] if key[0] not in ("CALLS", "REFERENCES") else f"{key[0]}->{key[2]}": t.num_rows
                   for key, t in rels.items()})
    counts["attributed_files"] = len({f for f, _ in built_pairs})  # (BUILT_INTO: a file in two modules is two)
    counts["unattributed_files"] = len(files) - counts["attributed_files"]
    return SourceTables(nodes, rels, counts)


def _attribution(trees: list[SourceTree]) -> tuple[dict[str, str], dict[str, tuple[str, ...]],
                                                  dict[str, tuple[str, ...]]]:
    """(file → its first module: the files the build compiles; file → every module it is built
    into; included non-header file → the compiled files whose translation units it is part of),
    over ``trees``, with their prefixes."""
    built: dict[str, str] = {}
    modules: dict[str, tuple[str, ...]] = {}
    units: dict[str, tuple[str, ...]] = {}
    for t in trees:
        built.update({t.prefix + f: m for f, m in t.built_into.items()})
        modules.update({t.prefix + f: t.modules.get(f, (m,)) for f, m in t.built_into.items()})
        units.update({t.prefix + f: tuple(t.prefix + r for r in roots) for f, roots in t.units.items()})
    return built, modules, units


def _new_symbols(k: str, to_sym: pa.Table, nonstatic: pa.Table, exports: pa.Table, lookups: pa.Table,
                 symbol_ids: set[str]) -> pa.Table:
    """The symbols the source adds (id, kind, name), one row per id: callees outside the tree,
    member pseudo-symbols, what non-static functions implement, export sites, lookups."""
    called = pc.unique(to_sym["to"].filter(pc.invert(to_sym["via_member"])))
    member_names = pc.unique(to_sym["to"].filter(to_sym["via_member"]))
    sym_names = [
        (called, "unknown"),
        (member_names, "member"),
        (nonstatic["name"].combine_chunks(), "function"),
        (exports["symbol"].combine_chunks(), "unknown"),
        (lookups["symbol"].combine_chunks(), "unknown"),
    ]
    names = pa.concat_arrays([a for a, _ in sym_names])
    kinds = pa.concat_arrays([_str(len(a), kind) for a, kind in sym_names])
    sids = _ids(k, names)
    keep = pc.invert(pc.is_in(sids, pa.array(sorted(symbol_ids), pa.string())))
    sym = pa.table({"id": sids, "kind": kinds, "name": names}).filter(keep)
    # one row per id; a function kind wins over unknown (sort puts "function" before "unknown")
    sym = sym.sort_by([("id", "ascending"), ("kind", "ascending")])
    firsts = pc.equal(pc.index_in(sym["id"], sym["id"]), pa.array(range(len(sym)), type=pa.int32()))
    return sym.filter(firsts)


def _exported_as(k: str, exports: pa.Table, fid: pa.Array) -> pa.Table:
    """EXPORTED_AS rows: the function an export site names, when the tree defines it."""
    ex = exports.filter(pc.is_valid(exports["function"]))
    ex_fid = _ids(k, ex["file"], ex["function"])
    ex = ex.append_column("fid", ex_fid).filter(pc.is_in(ex_fid, fid))
    return pa.table({"from": ex["fid"], "to": _ids(k, ex["symbol"]), "kernel": _str(len(ex), k),
                     "gpl": ex["gpl"], "namespace": pc.fill_null(ex["namespace"], ""),
                     "line": pc.cast(ex["line"], pa.int64())})


def _file_scope_files(trees: list[SourceTree]) -> pa.Array:
    """The files whose file-scope initialisers refer to something (their ``FILE_SCOPE`` references)."""
    parts = [pc.unique(r["file"].filter(pc.equal(r["function"], pa.scalar(FILE_SCOPE))).combine_chunks())
             for tree in trees for r in _batches(tree, "references", ["file", "function"])]
    return pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())


def _with_file_scopes(funcs: pa.Table, scoped: pa.Array) -> pa.Table:
    """``funcs`` with a :data:`FILE_SCOPE` pseudo-function for each file of ``scoped`` (whose
    file-scope initialisers refer to something) that has none yet (the macro pass makes one only
    for a file with file-scope macro calls)."""
    have = funcs.filter(pc.equal(funcs["name"], pa.scalar(FILE_SCOPE)))["file"]
    files = scoped.filter(pc.invert(pc.is_in(scoped, have.combine_chunks())))
    n = len(files)
    if not n:
        return funcs
    ones = pa.array([1] * n, pa.int32())
    extra = pa.table({"name": _str(n, FILE_SCOPE), "file": files, "line": ones, "end_line": ones,
                      "static": pa.array([True] * n), "inline": pa.array([False] * n),
                      "canary": pa.array([False] * n), "indirect": pa.array([False] * n),
                      "is_macro": pa.array([False] * n)})
    return pa.concat_tables([funcs, extra.select(funcs.column_names).cast(funcs.schema)])


class _References(NamedTuple):
    """The resolved references, as rows of the function table (like :class:`_Calls`)."""

    to_function: pa.Table
    """from (row), to (row), line, kind, via, guard."""
    to_symbol: pa.Table
    """from (row), to (symbol name), line, kind, via, guard."""


def _resolve_references(trees: list[SourceTree], resolver: _Resolver, is_macro: pa.Array,
                        known: pa.Array) -> _References:
    """REFERENCES of ``trees``, a batch at a time. The referring function is the one of that name
    in the reference's file; the name referred to resolves as a callee does (:class:`_Resolver`),
    else to a ``Symbol`` whose name is in ``known`` (an export or import of the binaries, a lookup,
    a callee, an export site): a reference adds no symbol, so a local type, a member or an
    enumerator the loader could not tell from data finds nothing and is dropped. A ``read`` of a
    function (not of a macro: ``current`` is ``get_current()``) is its ``address``; a macro naming
    itself, or a recursion, is no reference."""
    to_fn, to_sym = [], []
    for tree in trees:
        for r in _batches(tree, "references"):
            frm = resolver.function(r["file"], r["function"])
            r, frm = r.filter(pc.is_valid(frm)), frm.filter(pc.is_valid(frm))
            target = resolver.resolve(r["file"], r["symbol"])
            found = pc.and_(pc.is_valid(target), pc.not_equal(pc.fill_null(target, -1), frm))
            line = pc.cast(r["line"], pa.int64())
            via = pc.fill_null(r["via"], "")
            guard = pc.fill_null(r["guard"], "")
            t, tf = target.filter(found), r.filter(found)
            read_fn = pc.and_(pc.equal(tf["kind"], pa.scalar("read")), pc.invert(is_macro.take(t)))
            to_fn.append(pa.table({"from": frm.filter(found), "to": t, "line": line.filter(found),
                                   "kind": pc.if_else(read_fn, pa.scalar("address"), tf["kind"]),
                                   "via": via.filter(found), "guard": guard.filter(found)}))
            sym = pc.and_(pc.is_null(target), pc.is_in(r["symbol"], value_set=known))
            to_sym.append(pa.table({"from": frm.filter(sym), "to": r["symbol"].filter(sym), "line": line.filter(sym),
                                    "kind": r["kind"].filter(sym), "via": via.filter(sym),
                                    "guard": guard.filter(sym)}))
    fn = pa.schema([("from", pa.int32()), ("to", pa.int32()), ("line", pa.int64()), ("kind", pa.string()),
                    ("via", pa.string()), ("guard", pa.string())])
    sy = fn.set(1, pa.field("to", pa.string()))
    return _References(pa.concat_tables([fn.empty_table(), *(t.cast(fn) for t in to_fn)]).combine_chunks(),
                       pa.concat_tables([sy.empty_table(), *(t.cast(sy) for t in to_sym)]).combine_chunks())


#: How many header functions deep a lookup held in a header is followed to the modules that use it.
HEADER_LOOKUP_DEPTH = 4


def _calls_to(trees: list[SourceTree], names: set[str]) -> pa.Table:
    """caller, callee, file of every call of ``trees`` to one of ``names``."""
    value_set = pa.array(sorted(names), pa.string())
    parts = [calls.filter(pc.is_in(calls["callee"], value_set)).select(["caller", "callee", "file"])
             for tree in trees for calls in _batches(tree, "calls")]
    return _concat(parts) if parts else pa.table({"caller": pa.array([], pa.string()),
                                                   "callee": pa.array([], pa.string()),
                                                   "file": pa.array([], pa.string())})


def _looks_up(k: str, lookups: pa.Table, calls: pa.Table, built: dict[str, tuple[str, ...]], module_ids: dict[str, str],
              calls_to: Callable[[set[str]], pa.Table] | None = None) -> pa.Table:
    """LOOKS_UP rows: a lookup belongs to the modules its file is built into (``built``: file →
    modules); a lookup in a header
    (a ``static inline`` wrapper) belongs to every module whose files call the function holding it
    (``calls``: caller, callee and file of the calls to those functions), or call a header
    function that calls it, up to :data:`HEADER_LOOKUP_DEPTH` header functions deep (``calls_to``
    reads the calls to the next level's functions: LTTng's ``init_type()`` calls
    ``init_type_callstack_kernel()``, both in lttng-context-callstack-stackwalk-impl.h)."""
    rows = lookups.to_pylist()
    in_headers = {r["function"] for r in rows if r["file"] not in built and r["function"]}
    # users[f]: modules whose built files call f; callers[f]: header functions that call f.
    users: dict[str, set[str]] = {}
    callers: dict[str, set[str]] = {}
    seen_fns = set(in_headers)
    level = calls if in_headers else None
    for depth in range(HEADER_LOOKUP_DEPTH):
        if level is None or not len(level):
            break
        new: set[str] = set()
        for caller, callee, file in zip(level["caller"].to_pylist(), level["callee"].to_pylist(),
                                        level["file"].to_pylist()):
            if callee not in seen_fns:
                continue
            if file in built:
                users.setdefault(callee, set()).update(built[file])
            elif caller and caller != callee:
                callers.setdefault(callee, set()).add(caller)
                if caller not in seen_fns:
                    new.add(caller)
        seen_fns |= new
        level = calls_to(new) if new and calls_to is not None and depth + 1 < HEADER_LOOKUP_DEPTH else None

    def modules_using(fn: str) -> set[str]:
        found, todo, done = set(), [fn], set()
        while todo:
            f = todo.pop()
            if f in done:
                continue
            done.add(f)
            found |= users.get(f, set())
            todo.extend(callers.get(f, ()))
        return found

    out = []
    for r in rows:
        mods = set(built[r["file"]]) if r["file"] in built else modules_using(r["function"])
        out.extend((module_ids[m], r) for m in sorted(mods) if m in module_ids)
    seen = set()
    cols: dict[str, list] = {"from": [], "to": [], "kernel": [], "how": [], "file": [], "line": []}
    for mid, r in out:
        key = (mid, r["symbol"], r["how"], r["file"], r["line"])
        if key in seen:
            continue
        seen.add(key)
        for col, val in zip(cols, (mid, f"{k}|{r['symbol']}", k, r["how"], r["file"], r["line"])):
            cols[col].append(val)
    return pa.table({"from": pa.array(cols["from"], pa.string()), "to": pa.array(cols["to"], pa.string()),
                     "kernel": pa.array(cols["kernel"], pa.string()), "how": pa.array(cols["how"], pa.string()),
                     "file": pa.array(cols["file"], pa.string()), "line": pa.array(cols["line"], pa.int64())})
