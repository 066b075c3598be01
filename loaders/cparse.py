"""One C file, parsed: function definitions, calls, export sites and run-time lookups, with tree-sitter-c.

Paths in records are relative to the tree root the caller gives; the loader never talks to a
store. A file's bytes go through the passes over the text of :data:`TEXT_PASSES` (each keeps the
length and the newlines, so that lines and byte offsets stay exact: today the neutralising of
kernel macros, :mod:`ksymgraph.loaders.neutralise`), then through tree-sitter, and the tree is read
with ONE combined query (function definitions, calls, string arguments, initialisers, includes,
error nodes). ``EXPORT_SYMBOL*`` sites are found in the text and checked against the tree
(:mod:`ksymgraph.loaders.cexports`). What the parser still cannot read is counted in
:class:`~ksymgraph.loaders.records.ParseStats`.

:func:`parse_source` reads bytes; :func:`parse_file` reads one file of a tree and resolves its
includes; :func:`for_each_record` parses a small tree in-process (an out-of-tree module, tests),
following includes. A whole kernel tree goes through :func:`ksymgraph.loaders.cindex.index_tree`.
"""

from __future__ import annotations

import bisect
import operator
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .cexports import SYMBOL_LIKE, export_sites
from .cfiles import c_files, read_source
from .includes import kernel_include_dirs, resolve_includes
from .lookups import IDENTIFIER_LOOKUPS, resolve_lookups
from .neutralise import neutralise_kernel_macros
from .records import ArgFlow, Call, FileResult, FunctionDef, LookUp, ParseStats, StringArg

__all__ = ["TEXT_PASSES", "QUERY", "parse_source", "parse_read_file", "parse_file", "for_each_record",
           "resolve_file_lookups"]

#: The passes over a file's text before tree-sitter reads it, in order. Each takes the bytes and
#: returns bytes of the same length with the newlines where they were (blanking, never moving).
TEXT_PASSES: tuple[Callable[[bytes], bytes], ...] = (neutralise_kernel_macros,)

#: The one query run over each tree.
QUERY = """
(function_definition) @func
(call_expression function: (_) @call)
(argument_list (string_literal) @arg.str)
(init_declarator value: (string_literal) @var.str)
(initializer_pair value: (string_literal) @field.init)
(initializer_pair value: (identifier) @field.initvar)
(assignment_expression left: (field_expression) right: (string_literal) @field.assign)
(assignment_expression left: (field_expression) right: (identifier) @field.assignvar)
(preproc_include path: (_) @include)
(ERROR) @error
"""

_DECLARATOR_FIELDS = ("pointer_declarator", "parenthesized_declarator", "attributed_declarator",
                      "function_declarator", "array_declarator", "init_declarator")
#: Where a macro-defined function (``TEST_F(fixture, name) { ... }``) may stand.
_FILE_SCOPE_PARENTS = ("translation_unit", "preproc_if", "preproc_ifdef", "preproc_else")
_FIELD_KINDS = ("field.init", "field.initvar", "field.assign", "field.assignvar")
_START_BYTE = operator.attrgetter("start_byte")

_parser = None
_query = None


def _tree_sitter():
    """The process's parser and compiled query, made on first use (once per worker)."""
    global _parser, _query
    if _parser is None:
        import tree_sitter
        import tree_sitter_c

        lang = tree_sitter.Language(tree_sitter_c.language())
        _parser = tree_sitter.Parser(lang)
        _query = tree_sitter.Query(lang, QUERY)
    return _parser, _query


# --------------------------------------------------------------------------------------------
# Nodes


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _string_value(node) -> str | None:
    """The content of a plain string literal node (no escapes, no prefix), else None."""
    raw = node.text
    if len(raw) < 2 or raw[:1] != b'"' or raw[-1:] != b'"' or b"\\" in raw:
        return None
    return raw[1:-1].decode("utf-8", "replace")


def _declarator_name(node):
    """The identifier node a declarator declares (descending through pointers, parentheses...)."""
    while node is not None and node.type in _DECLARATOR_FIELDS:
        node = _inner_declarator(node)  # int (*get(int))(int): parentheses have no field
    if node is not None and node.type in ("identifier", "field_identifier", "type_identifier"):
        return node
    return None


def _char_params(func_declarator) -> dict[str, int]:
    """``{name: index}`` of a function's ``char *`` parameters."""
    params = func_declarator.child_by_field_name("parameters")
    out: dict[str, int] = {}
    if params is None or b"char" not in params.text:
        return out
    index = 0
    for p in params.named_children:
        if p.type != "parameter_declaration":
            if p.type == "variadic_parameter":
                index += 1
            continue
        decl = p.child_by_field_name("declarator")
        if decl is not None and decl.type == "pointer_declarator":
            type_node = p.child_by_field_name("type")
            if type_node is not None and type_node.text == b"char":
                name = _declarator_name(decl)
                if name is not None:
                    out[_text(name)] = index
        index += 1
    return out


def _function_declarator(node):
    """The function_declarator under a definition's declarator, or None."""
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        if d.type not in _DECLARATOR_FIELDS:
            return None
        d = _inner_declarator(d)
    return d


def _inner_declarator(node):
    if node.type == "parenthesized_declarator":
        return node.named_children[0] if node.named_children else None
    return node.child_by_field_name("declarator")


def _arg_index(arg_node) -> int:
    index = 0
    for sib in arg_node.parent.named_children:
        if sib.id == arg_node.id:
            return index
        if sib.type != "comment":
            index += 1
    return index


def _callee(node):
    """(name node, through a struct member) of the function a call names, or None (a call
    through an expression: ``fns[i]()``)."""
    while node.type in ("parenthesized_expression", "pointer_expression"):
        inner = node.named_children
        if not inner:
            break
        node = inner[-1] if node.type == "pointer_expression" else inner[0]
    if node.type == "identifier":
        return node, False
    if node.type == "field_expression":
        field = node.child_by_field_name("field")
        return (field, True) if field is not None else None
    return None


def _probe_kind(node, fields: list[str], target, text: bytes) -> str:
    """``kretprobe`` when a ``.symbol_name`` belongs to a ``struct kretprobe``, else ``kprobe``."""
    if "kp" in fields[:-1]:
        return "kretprobe"
    if target is not None:  # rp.kp.symbol_name = ..., rp->kp.symbol_name = ...
        base = target.child_by_field_name("argument")
        if base is not None and base.type == "field_expression":
            inner = base.child_by_field_name("field")
            if inner is not None and inner.text == b"kp":
                return "kretprobe"
        while base is not None and base.type in ("field_expression", "subscript_expression", "parenthesized_expression"):
            base = base.child_by_field_name("argument") or (base.named_children[0] if base.named_children else None)
        if base is not None and base.type == "identifier":
            if re.search(rb"struct\s+kretprobe\s*\**\s*" + re.escape(base.text) + rb"\b", text):
                return "kretprobe"
        return "kprobe"
    up = node.parent
    while up is not None:
        if up.type == "initializer_pair":
            for d in up.children_by_field_name("designator"):
                if d.text == b".kp":
                    return "kretprobe"
        if up.type == "declaration":
            t = up.child_by_field_name("type")
            if t is not None and b"kretprobe" in t.text:
                return "kretprobe"
            break
        up = up.parent
    return "kprobe"


class _Functions:
    """Function spans of one file, to find the function enclosing a byte offset."""

    def __init__(self):
        self.starts: list[int] = []
        self.spans: list[tuple[int, int, str]] = []

    def add(self, start: int, end: int, name: str) -> None:
        self.spans.append((start, end, name))

    def freeze(self) -> None:
        self.spans.sort()
        self.starts = [s for s, _, _ in self.spans]

    def at(self, pos: int) -> str | None:
        i = bisect.bisect_right(self.starts, pos) - 1
        while i >= 0:
            start, end, name = self.spans[i]
            if pos < end:
                return name
            if i == 0 or self.spans[i - 1][1] <= start:
                return None
            i -= 1
        return None


# --------------------------------------------------------------------------------------------
# Reading a tree


class _TreeReader:
    """The records of one file, read from the captures of :data:`QUERY` on its tree."""

    def __init__(self, file: str, text: bytes, caps: dict):
        self.file = file
        self.text = text
        self.caps = caps
        self.funcs = _Functions()
        self.functions: list[FunctionDef] = []
        self.with_errors = 0
        self.char_params: dict[str, dict[str, int]] = {}
        #: ``const char *name = "sym";`` per (function, name); file scope under None.
        self.string_vars: dict[tuple[str | None, str], str] = {}
        #: Struct fields initialised with strings: ``.save_func_name = "save_stack_trace"``.
        self.field_strings: dict[str, list[str]] = {}
        self.lookups: list[LookUp] = []
        self.calls: list[Call] = []
        self.string_args: list[StringArg] = []
        self.arg_flows: list[ArgFlow] = []

    def read(self, tree, error: str | None) -> FileResult:
        """Everything, in the order each part needs the one before."""
        self.read_definitions()
        call_nodes = self.caps.get("call", ())
        callers = self.read_macro_definitions(call_nodes)
        self.read_string_constants()
        self.read_field_strings()
        self.read_calls(call_nodes, callers)
        self.read_string_literal_args()
        defined = {f.name for f in self.functions}
        exports = export_sites(self.text, self.file, defined, tree.root_node)
        includes = [_text(n) for n in self.caps.get("include", ())]
        stats = ParseStats(1, len(self.functions), self.with_errors, len(self.caps.get("error", ())))
        return FileResult(self.file, self.functions, self.calls, exports, self.lookups, self.string_args,
                          self.arg_flows, includes, stats, error)

    def read_definitions(self) -> None:
        """``function_definition`` nodes: name, ``static``/``inline``, span, ``char *`` parameters."""
        for node in self.caps.get("func", ()):
            decl = _function_declarator(node)
            name_node = _declarator_name(decl) if decl is not None else None
            if name_node is None:
                continue
            name = _text(name_node)
            static = inline = False
            for child in node.children:
                if child.type == "storage_class_specifier":
                    word = child.text
                    if word == b"static":
                        static = True
                    elif word in (b"inline", b"__inline", b"__inline__"):
                        inline = True
                elif child.type == "compound_statement":
                    break
            self.functions.append(FunctionDef(name, self.file, name_node.start_point[0] + 1, node.end_point[0] + 1,
                                              static, inline))
            self.funcs.add(node.start_byte, node.end_byte, name)
            if node.has_error:
                self.with_errors += 1
            cp = _char_params(decl)
            if cp:
                self.char_params[name] = cp

    def read_macro_definitions(self, call_nodes) -> list[str | None]:
        """A macro-defined function tree-sitter did not recognise: ``MACRO(args)`` at file scope
        followed by a block (``TEST_F(fixture, name) { ... }``); ctags names it after the macro.
        Only calls outside every function found so far can be one. Returns the function enclosing
        each call node (None at file scope)."""
        funcs = self.funcs
        funcs.freeze()
        callers = [funcs.at(node.start_byte) for node in call_nodes]
        for node, caller in zip(call_nodes, callers):
            if caller is not None:
                continue
            call = node.parent
            stmt = call.parent
            if (
                stmt.type == "expression_statement"
                and stmt.parent is not None
                and stmt.parent.type in _FILE_SCOPE_PARENTS
                and node.type == "identifier"
                and stmt.next_named_sibling is not None
                and stmt.next_named_sibling.type == "compound_statement"
                and stmt.child_count == 2  # the call and a MISSING ";"
                and stmt.children[1].is_missing
            ):
                body = stmt.next_named_sibling
                name = _text(node)
                self.functions.append(FunctionDef(name, self.file, node.start_point[0] + 1, body.end_point[0] + 1,
                                                  False, False))
                funcs.add(stmt.start_byte, body.end_byte, name)
                if body.has_error or call.has_error:
                    self.with_errors += 1
        if len(funcs.spans) != len(funcs.starts):  # macro-defined functions were added
            funcs.freeze()
            callers = [funcs.at(node.start_byte) for node in call_nodes]
        return callers

    def read_string_constants(self) -> None:
        """``const char *name = "sym";``, per function or at file scope."""
        for node in self.caps.get("var.str", ()):
            value = _string_value(node)
            name = _declarator_name(node.parent.child_by_field_name("declarator"))
            if value is not None and name is not None and SYMBOL_LIKE.match(value):
                self.string_vars[(self.funcs.at(node.start_byte), _text(name))] = value

    def string_of(self, ident, function: str | None) -> str | None:
        """The string constant an identifier names, seen from ``function`` (None: file scope)."""
        name = _text(ident)
        return self.string_vars.get((function, name)) or self.string_vars.get((None, name))

    def read_field_strings(self) -> None:
        """Struct fields set to strings (initialised or assigned); a kprobe's ``.symbol_name`` is a
        lookup."""
        for kind in _FIELD_KINDS:
            for node in self.caps.get(kind, ()):
                value = (_string_value(node) if kind in ("field.init", "field.assign")
                         else self.string_of(node, self.funcs.at(node.start_byte)))
                if value is None or not SYMBOL_LIKE.match(value):
                    continue
                if kind.startswith("field.init"):
                    designators = node.parent.children_by_field_name("designator")
                    if not designators or designators[-1].type != "field_designator":
                        continue
                    fields = [_text(d)[1:] for d in designators if d.type == "field_designator"]
                    target = None
                else:
                    target = node.parent.child_by_field_name("left")
                    fields = [_text(target.child_by_field_name("field"))]
                field = fields[-1]
                self.field_strings.setdefault(field, []).append(value)
                if field == "symbol_name":
                    how = _probe_kind(node, fields, target, self.text)
                    self.lookups.append(LookUp(value, how, self.file, node.start_point[0] + 1,
                                               self.funcs.at(node.start_byte)))

    def read_calls(self, call_nodes, callers: list[str | None]) -> None:
        """Calls inside functions, and what their arguments tell the lookup analysis."""
        file = self.file
        calls = self.calls
        for node, caller in zip(call_nodes, callers):
            if caller is None:
                continue
            found = _callee(node)
            if found is None:
                continue
            name_node, via_member = found
            callee = _text(name_node)
            line = name_node.start_point[0] + 1
            calls.append(Call(caller, callee, file, line, via_member))
            if not via_member:
                self.read_call_arguments(node, caller, callee, line)

    def read_call_arguments(self, node, caller: str, callee: str, line: int) -> None:
        """A lookup by a bare identifier (``symbol_get(x)``), a ``char *`` parameter passed on, or
        a string constant passed as an argument."""
        lookup = callee in IDENTIFIER_LOOKUPS
        params = self.char_params.get(caller)
        if not (lookup or params or self.string_vars or self.field_strings):
            return  # nothing in this call's arguments can name a symbol
        args = node.parent.child_by_field_name("arguments")
        if args is None or args.named_child_count == 0:
            return
        if lookup:
            first = args.named_children[0]
            if first.type == "identifier":
                self.lookups.append(LookUp(_text(first), callee, self.file, line, caller))
            return
        index = -1
        for arg in args.named_children:
            if arg.type == "comment":
                continue
            index += 1
            if arg.type == "identifier":
                ident = _text(arg)
                if params and ident in params:
                    self.arg_flows.append(ArgFlow(caller, params[ident], callee, index, self.file, line))
                    continue
                value = self.string_of(arg, caller)
                if value is not None:
                    self.string_args.append(StringArg(caller, callee, index, value, self.file, line))
            elif arg.type == "field_expression":
                fld = arg.child_by_field_name("field")
                for value in self.field_strings.get(_text(fld), ()) if fld is not None else ():
                    self.string_args.append(StringArg(caller, callee, index, value, self.file, line))

    def read_string_literal_args(self) -> None:
        """Symbol-like string literals passed to a named function (``f("sym")``)."""
        for node in self.caps.get("arg.str", ()):
            value = _string_value(node)
            if value is None or not SYMBOL_LIKE.match(value):
                continue
            call = node.parent.parent
            fn = call.child_by_field_name("function") if call.type == "call_expression" else None
            if fn is None or fn.type != "identifier":
                continue
            self.string_args.append(StringArg(self.funcs.at(node.start_byte), _text(fn), _arg_index(node), value,
                                              self.file, fn.start_point[0] + 1))


# --------------------------------------------------------------------------------------------
# Files


def _utf8_error(src: bytes) -> str | None:
    try:
        src.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte {e.start} (read with replacement characters)"
    return None


_INCLUDE_RE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"][^>"\n]+[>"])', re.M)


def _braceless_header(text: bytes, file: str, error: str | None) -> FileResult:
    """A header without a single brace (register definitions): nothing for tree-sitter to find
    beyond its includes and exports, so it is not parsed."""
    includes = [m.group(1).decode("utf-8", "replace") for m in _INCLUDE_RE.finditer(text)]
    exports = export_sites(text, file, set())
    return FileResult(file, [], [], exports, [], [], [], includes, ParseStats(1, 0, 0, 0), error)


def parse_source(src: bytes, file: str) -> FileResult:
    """Parse the bytes of one file named ``file`` (used only to fill the records' ``file``);
    ``includes`` are left unresolved (as written) — :func:`parse_file` resolves them."""
    error = _utf8_error(src)
    text = src
    for text_pass in TEXT_PASSES:
        text = text_pass(text)
    if b"{" not in text and not file.endswith(".c"):
        return _braceless_header(text, file, error)
    import tree_sitter

    parser, query = _tree_sitter()
    tree = parser.parse(text)
    caps = tree_sitter.QueryCursor(query).captures(tree.root_node)
    # tree-sitter gives each capture's nodes in no document order (four includes come out as
    # a, c, b, d), and which one comes last decides which string a name is taken to hold.
    for nodes in caps.values():
        nodes.sort(key=_START_BYTE)
    return _TreeReader(file, text, caps).read(tree, error)


def _unread(rel: str, error: str) -> FileResult:
    return FileResult(rel, [], [], [], [], [], [], [], ParseStats(0, 0, 0, 0), error)


def parse_read_file(src: bytes, rel: str, root: Path, include_dirs: list[str], cache: dict | None = None) -> FileResult:
    """Parse the bytes ``src`` of the file ``rel`` of the tree ``root`` and resolve its includes
    (``cache``: see :func:`~ksymgraph.loaders.includes.resolve_include`); never raises for a bad
    file (see ``error``)."""
    try:
        result = parse_source(src, rel)
    except Exception as e:  # a parser bug must not stop a whole tree
        return _unread(rel, f"parse failed: {e!r}")
    return result._replace(includes=resolve_includes(root, rel, result.includes, include_dirs, cache))


def parse_file(path: str | os.PathLike, root: str | os.PathLike, include_dirs: list[str] | None = None) -> FileResult:
    """Parse one file of the tree at ``root``; never raises for a bad file (see ``error``).

    ``includes`` holds the included files that exist in the tree (relative to ``root``),
    resolved against ``include_dirs`` (default: :func:`~ksymgraph.loaders.includes.kernel_include_dirs`).
    """
    root = Path(root)
    path = Path(path)
    rel = os.path.relpath(path if path.is_absolute() else root / path, root)
    include_dirs = kernel_include_dirs() if include_dirs is None else include_dirs
    try:
        src = read_source(root / rel)
    except OSError as e:
        return _unread(rel, f"unreadable: {e.strerror or e}")
    return parse_read_file(src, rel, root, include_dirs)


def for_each_record(
    root: str | os.PathLike,
    files: Iterable[str] | None = None,
    include_dirs: list[str] | None = None,
    headers: bool = True,
) -> Iterator[FileResult]:
    """Parse ``files`` (default: every ``.c`` file under ``root``) and, when ``headers``, every
    header they include, transitively, each once; yields one :class:`~ksymgraph.loaders.records.FileResult`
    per file.

    Runs in-process: meant for small trees (an out-of-tree module) and tests. Lookups through
    wrappers need the whole set: pass the results to :func:`resolve_file_lookups`.
    """
    root = Path(root)
    todo = list(files) if files is not None else c_files(root)
    seen = set(todo)
    while todo:
        rel = todo.pop(0)
        result = parse_file(rel, root, include_dirs)
        yield result
        if headers:
            for inc in result.includes:
                if inc not in seen:
                    seen.add(inc)
                    todo.append(inc)


def resolve_file_lookups(results: Iterable[FileResult]) -> list[LookUp]:
    """All lookups of a set of parsed files, wrappers followed across files."""
    results = list(results)
    return list(
        resolve_lookups(
            (a for r in results for a in r.string_args),
            (f for r in results for f in r.arg_flows),
            (lk for r in results for lk in r.lookups),
        )
    )
