"""The records of one parsed C file, read from its tree-sitter tree.

The tree is read with the queries of :mod:`ksymgraph.loaders.cqueries` (one combined query:
function definitions, calls, string arguments, initialisers, includes, error nodes; the identifiers
that stand for values; the functions a macro defines). Nothing here walks up a tree: a node's
parent costs tree-sitter a descent from the root, so a file nested 100,000 levels deep would cost
quadratic time. The patterns capture the node whose children are read instead.

How deep the queries look, and how what lies deeper is counted: :mod:`ksymgraph.loaders.cqueries`.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import re
from typing import Callable, Iterable

from .cexports import SYMBOL_LIKE, export_sites
from .cfold import NOT_CONSTANT, SMALL_LIMIT, UNKNOWN, join_classes, literal_value
from .lookups import IDENTIFIER_LOOKUPS, LOOKUP_FUNCTIONS
from .cqueries import MACRO_QUERY, MAX_DEPTH, QUERY, REF_QUERY, calls_deeper_than, nodes_deeper_than
from .records import ArgFlow, Call, ExportSite, FunctionDef, LookUp, Reference, StringArg

__all__ = ["QUERY", "MACRO_QUERY", "REF_QUERY", "MAX_DEPTH", "FILE_SCOPE", "TreeRecords", "calls_deeper_than", "nodes_deeper_than",
           "is_member_macro"]

#: The pseudo-function that holds what a file does at file scope: its file-scope macro invocations
#: (:mod:`ksymgraph.loaders.macros`) and the references of its file-scope initialisers.
FILE_SCOPE = "(file scope)"

#: A name with no lower-case letter is a macro constant or an enumerator by kernel style
#: (``GFP_KERNEL``, ``THIS_MODULE``, ``CONFIG_X``): never read as a reference.
_HAS_LOWER = re.compile(rb"[a-z]")
#: Macros whose last argument is a struct member's name, not a value (``container_of(p, struct s,
#: list)``, ``list_for_each_entry(pos, head, list)``): that argument is no reference.
_MEMBER_MACRO = re.compile(r"container_of|offsetof|_entry|sizeof_field|typeof_member|member")


def is_member_macro(name: str) -> bool:
    """True for a macro whose last argument names a struct member (``container_of``...)."""
    return _MEMBER_MACRO.search(name) is not None


_DECLARATOR_FIELDS = ("pointer_declarator", "parenthesized_declarator", "attributed_declarator",
                      "function_declarator", "array_declarator", "init_declarator")
#: What the innermost type constructor of a declarator makes of its name (:func:`_declared`).
_CONSTRUCTOR_KIND = {"array_declarator": "array", "pointer_declarator": "pointer", "function_declarator": "function"}
#: Type names that are arrays: ``va_list`` is ``__builtin_va_list``, on x86-64 an array of one
#: struct (a ``va_list`` local gets a canary, as gcc shows).
_ARRAY_TYPES = frozenset([b"va_list", b"__builtin_va_list"])
#: What a call through an expression calls through: an array's element, a call's result, a cast, a
#: choice (``table[i](x)``, ``get_op()(x)``, ``((cb_t)p)(x)``, ``(a ? f : g)(x)``). Not a literal:
#: an asm operand in a macro's arguments (``"m" (*p)``) and a cast the text passes made ``(0)``
#: read as calls.
_CALLABLE_EXPRESSIONS = frozenset(["subscript_expression", "call_expression", "cast_expression",
                                   "conditional_expression"])
#: Macros that declare a local in a function body (``DEFINE_WAIT(wait);``, ``LIST_HEAD(list);``,
#: ``DECLARE_COMPLETION_ONSTACK(done);``): their first argument is a variable of the function.
_DECLARING_MACRO = re.compile(r"(?:DEFINE|DECLARE)_[A-Z0-9_]+|LIST_HEAD")
#: Those of them that declare an array (include/linux/types.h's ``DECLARE_BITMAP``, and the
#: macros made of it; kfifo.h's and hashtable.h's): a canary in a function.
_ARRAY_MACROS = frozenset(["DECLARE_BITMAP", "DECLARE_PHY_INTERFACE_MASK", "DECLARE_HASHTABLE", "DECLARE_KFIFO"])
#: Calls that make gcc's stack protector guard the caller (``cfun->calls_alloca``).
_ALLOCA = frozenset(["alloca", "__builtin_alloca", "__builtin_alloca_with_align"])
#: The attribute (``__no_stack_protector``, include/linux/compiler_attributes.h) and the optimize
#: option that keep a function unguarded.
_NO_STACK_PROTECTOR = re.compile(rb"no_stack_protector|no-stack-protector")
_FIELD_KINDS = ("field.init", "field.initvar", "field.assign", "field.assignvar")
#: How far up from a ``.symbol_name`` initialiser its struct's type is looked for.
_PROBE_LEVELS = 8


def _string_value(text: bytes, node) -> str | None:
    """The content of a plain string literal node (no escapes, no prefix), else None."""
    raw = text[node.start_byte : node.end_byte]
    if len(raw) < 2 or raw[:1] != b'"' or raw[-1:] != b'"' or b"\\" in raw:
        return None
    return raw[1:-1].decode("utf-8", "replace")


def _inner_declarator(node):
    if node.type == "parenthesized_declarator":
        return node.named_children[0] if node.named_children else None
    return node.child_by_field_name("declarator")


def _declarator_name(node):
    """The identifier node a declarator declares (descending through pointers, parentheses...)."""
    while node is not None and node.type in _DECLARATOR_FIELDS:
        node = _inner_declarator(node)  # int (*get(int))(int): parentheses have no field
    if node is not None and node.type in ("identifier", "field_identifier", "type_identifier"):
        return node
    return None


def _declared(node):
    """(identifier node, kind) of what a declarator declares, kind being what its innermost type
    constructor makes of the name: ``array`` (``a[4]``, ``*b[2]``: an array of pointers),
    ``pointer`` (``*p``, ``(*c)[3]``, ``(*fn)(int)``), ``function`` (a prototype) or ``value``."""
    kind = "value"
    while node is not None and node.type in _DECLARATOR_FIELDS:
        kind = _CONSTRUCTOR_KIND.get(node.type, kind)
        node = _inner_declarator(node)
    if node is not None and node.type == "identifier":
        return node, kind
    return None, kind


def _callable_expression(node) -> bool:
    """True when a call's function (one :func:`_callee` names nothing in) is an expression that
    yields a function pointer (:data:`_CALLABLE_EXPRESSIONS`), inside parentheses or a ``*``."""
    while node is not None and node.type in ("parenthesized_expression", "pointer_expression"):
        inner = node.named_children
        node = (inner[-1] if node.type == "pointer_expression" else inner[0]) if inner else None
    if node is not None and node.type == "call_expression":
        fn = node.child_by_field_name("function")
        if fn is not None and fn.type == "identifier":
            return False  # a macro making a name: static_call(name)(x), CC_OUT(c) (v) in asm operands
    return node is not None and node.type in _CALLABLE_EXPRESSIONS


def _addressed_base(node):
    """The local whose address ``&node`` takes when ``node`` is a member of it (``&x.f``,
    ``&x.a[i]``, ``&x.s.t``): the identifier at the base of ``.`` accesses, else None (``&p->f``
    and ``&p[i]`` take the address of what a pointer points to; an array is guarded anyway)."""
    dot = False
    while node is not None:
        if node.type == "field_expression":
            op = node.child_by_field_name("operator")
            if op is None or op.type != ".":
                return None
            dot, node = True, node.child_by_field_name("argument")
        elif node.type == "subscript_expression":
            dot, node = False, node.child_by_field_name("argument")
        elif node.type == "parenthesized_expression":
            node = node.named_children[0] if node.named_children else None
        elif node.type == "identifier":
            return node if dot else None
        else:
            return None
    return None


def _function_declarator(node):
    """The function_declarator under a definition's declarator, or None."""
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        if d.type not in _DECLARATOR_FIELDS:
            return None
        d = _inner_declarator(d)
    return d


def _arguments(args):
    """(index, node) of each argument of an argument list (comments are not arguments)."""
    index = 0
    for arg in args.named_children:
        if arg.type != "comment":
            yield index, arg
            index += 1


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


#: ``__builtin_constant_p()`` conditions read per file, at most (a kernel header has a dozen).
_MAX_GUARDS = 4096
#: How deep an argument's expression is read for its constness.
_FOLD_DEPTH = 12
#: Expressions that are integer constants whatever they hold.
_ALWAYS_CONSTANT = frozenset(["sizeof_expression", "alignof_expression", "offsetof_expression"])
#: Expressions whose constness is their operands'.
_OPERATORS = frozenset(["parenthesized_expression", "unary_expression", "binary_expression", "conditional_expression"])
#: Macros (lower-case ones included) that give a constant from types and members alone.
_CONSTANT_MACROS = frozenset([b"ARRAY_SIZE", b"sizeof_field", b"offsetof", b"offsetofend", b"FIELD_SIZEOF",
                              b"BITS_PER_TYPE", b"typeof_member", b"__alignof__"])
#: Lower-case macros and inlines that fold to a constant when their arguments are constants
#: (include/linux/minmax.h, overflow.h, align.h, math.h).
#: Size macros whose constness is that of one argument, the count (include/linux/overflow.h:
#: ``struct_size(p, member, count)``; the others are a type and a member).
_COUNT_ARGUMENT = {b"struct_size": 2, b"flex_array_size": 2, b"struct_size_t": 2}
_FOLDING_MACROS = frozenset([b"struct_size", b"flex_array_size", b"struct_size_t", b"min", b"max", b"min_t", b"max_t", b"clamp", b"clamp_t", b"clamp_val", b"array_size",
                             b"array3_size", b"size_add", b"size_mul", b"round_up", b"round_down", b"roundup",
                             b"rounddown", b"roundup_pow_of_two", b"ilog2", b"order_base_2"])


#: Sizes (and alignments) of C's and the kernel's basic types on x86-64 (LP64: gcc's
#: ``__SIZEOF_LONG__`` 8, ``__SIZEOF_LONG_LONG__`` 8; include/uapi/asm-generic/int-ll64.h).
_BASIC_SIZES = {t.encode(): n for n, names in {
    1: "char|signed char|unsigned char|u8|s8|__u8|__s8|bool|_Bool",
    2: "short|short int|unsigned short|unsigned short int|u16|s16|__u16|__s16|__le16|__be16",
    4: "int|unsigned int|unsigned|signed int|u32|s32|__u32|__s32|__le32|__be32|gfp_t",
    8: "long|long int|unsigned long|unsigned long int|long long|long long int|unsigned long long|"
       "unsigned long long int|u64|s64|__u64|__s64|__le64|__be64|size_t|ssize_t|ino_t|loff_t|phys_addr_t|"
       "dma_addr_t|uintptr_t|ulong|resource_size_t|sector_t",
}.items() for t in names.split("|")}
_COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _unparenthesized(node):
    """``node`` without the parentheses around it."""
    while node is not None and node.type == "parenthesized_expression" and node.named_child_count == 1:
        node = node.named_children[0]
    return node


def _conjuncts(node, text: bytes) -> list:
    """The operands of a chain of ``&&`` (``a && b && c``), each without its parentheses."""
    out, todo = [], [node]
    while todo and len(out) < 64:
        n = _unparenthesized(todo.pop())
        if n is None:
            continue
        op = n.child_by_field_name("operator") if n.type == "binary_expression" else None
        if op is not None and op.type == "&&":
            todo.extend([n.child_by_field_name("right"), n.child_by_field_name("left")])
        else:
            out.append(n)
    return out


def _ends_in_return(node) -> bool:
    """Whether a statement (a block: its last statement, also inside a trailing ``#if`` the
    preprocessor left) is a ``return``."""
    for _level in range(8):
        if node.type not in ("compound_statement", "preproc_if", "preproc_ifdef"):
            break
        last = [c for c in node.named_children if c.type not in ("comment", "identifier", "preproc_else",
                                                                 "preproc_elif", "preproc_defined")]
        if not last or last[-1] is node:
            break
        node = last[-1]
    return node.type == "return_statement"


class _Functions:
    """Function spans of one file, to find the innermost function holding a byte offset."""

    def __init__(self):
        self.spans: list[tuple[int, int, str]] = []
        self._bounds: list[int] = []
        self._names: list[str | None] = []

    def add(self, start: int, end: int, name: str) -> None:
        self.spans.append((start, end, name))
        self._bounds = []

    def at(self, pos: int) -> str | None:
        if not self._bounds and self.spans:
            self._segments()
        i = bisect.bisect_right(self._bounds, pos) - 1
        return self._names[i] if i >= 0 else None

    def _segments(self) -> None:
        """Cut the file at every span's start and end; each piece gets the span that starts last
        among those holding it (the innermost). One sweep with a heap: linear-logarithmic however
        the spans nest."""
        events = sorted({p for s, e, _ in self.spans for p in (s, e)})
        starts = sorted(self.spans)
        bounds, names = [], []
        active: list[tuple[int, int, str]] = []  # (-start, end, name)
        k = 0
        for p in events:
            while k < len(starts) and starts[k][0] <= p:
                s, e, name = starts[k]
                heapq.heappush(active, (-s, e, name))
                k += 1
            while active and active[0][1] <= p:
                heapq.heappop(active)
            name = active[0][2] if active else None
            if not names or names[-1] != name:
                bounds.append(p)
                names.append(name)
        self._bounds, self._names = bounds, names


class TreeRecords:
    """The records of one file, read from the captures of :data:`QUERY` on its tree. ``check`` is
    called now and then (it raises when the file's parse deadline has passed)."""

    def __init__(self, file: str, text: bytes, caps: dict, macro_matches: list, check: Callable[[], None],
                 ref_chunks: Callable[[], Iterable[list]] | None = None, raw: bytes | None = None):
        self.file = file
        self.text = text
        self.caps = caps
        self.macro_matches = macro_matches
        self.check = check
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
        self.references: list[Reference] = []
        #: The captures of :data:`REF_QUERY`, a list of nodes per byte range in document order
        #: (None: in ``caps["ref"]``).
        self.ref_chunks = ref_chunks
        #: Identifier nodes (by id) that are no reference: the last arguments of member-taking
        #: macros. (Callees are never among the ``@ref`` captures.)
        self.not_refs: set[int] = set()
        #: The text as written, before the text passes blanked annotations (same offsets), to
        #: see ``__no_stack_protector``; None: ``text``.
        self.raw = raw
        #: Per function: the names of its parameters and local variables (not prototypes), which
        #: a call through is a call through a pointer; and of its locals on the stack (not
        #: ``static``, not ``extern``), whose address taken gives it a canary.
        self.variables: dict[str, set[bytes]] = {}
        self.parameters: dict[str, set[bytes]] = {}
        #: Per function: each parameter's position, by name.
        self.param_order: dict[str, dict[bytes, int]] = {}
        #: Per function: the size of each parameter of a basic type (``unsigned long l``: 8), and
        #: of what a pointer parameter points to (``u32 *v``: ``*v`` is 4), by name.
        self.param_sizes: dict[str, dict[bytes, int]] = {}
        #: ``__builtin_constant_p()`` conditions: (start, end, guard token) of the code each holds
        #: for (:mod:`ksymgraph.loaders.cfold`), by start.
        self.guards: list[tuple[int, int, str]] = []
        self._guard_starts: list[int] = []
        self.stack_locals: dict[str, set[bytes]] = {}
        #: The functions declared ``inline``.
        self.inline_functions: set[str] = set()
        #: Functions with what gives them a stack canary, marked no_stack_protector, and with a
        #: call through a function pointer (see :class:`~ksymgraph.loaders.records.FunctionDef`).
        self.canary: set[str] = set()
        self.unguarded: set[str] = set()
        self.indirect: set[str] = set()
        #: Calls through a pointer a function declares, or a variable of the file: no symbol is
        #: called, so they are no :class:`Call` records; the lookup analysis still reads them.
        self.pointer_calls: list[Call] = []
        self._file_vars: set[bytes] | None = None

    def node_text(self, node) -> str:
        return self.text[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def every(self, nodes):
        """The nodes, with ``check`` called every 1,024 of them."""
        for i, node in enumerate(nodes):
            if not i & 1023:
                self.check()
            yield node

    def read(self, root) -> tuple[list[ExportSite], list[str]]:
        """Everything, in the order each part needs the one before; returns the export sites
        (checked against the tree at ``root``, or against the directives when ``root`` is None)
        and the includes as written."""
        self.read_definitions()
        self.read_macro_definitions()
        self.read_locals()
        self.read_string_constants()
        self.read_field_strings()
        self.read_guards()
        self.read_calls()
        self.read_lookup_pointers()
        self.read_string_literal_args()
        self.read_references()
        self.read_addresses()
        self.mark_functions()
        self.check()
        defined = {f.name for f in self.functions}
        exports = export_sites(self.text, self.file, defined, root)
        includes = [self.node_text(n) for n in self.caps.get("include", ())]
        return exports, includes

    def read_definitions(self) -> None:
        """``function_definition`` nodes: name, ``static``/``inline``, span, ``char *`` parameters."""
        text = self.text
        for node in self.every(self.caps.get("func", ())):
            decl = _function_declarator(node)
            name_node = _declarator_name(decl) if decl is not None else None
            if name_node is None:
                continue
            name = self.node_text(name_node)
            static = inline = False
            for child in node.children:
                if child.type == "storage_class_specifier":
                    word = text[child.start_byte : child.end_byte]
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
            self.read_parameters(name, decl)
            if inline:
                self.inline_functions.add(name)
            body = node.child_by_field_name("body")
            raw = self.raw if self.raw is not None else text
            head = raw[raw.rfind(b"\n", 0, node.start_byte) + 1 : body.start_byte if body is not None else node.end_byte]
            if _NO_STACK_PROTECTOR.search(head):
                self.unguarded.add(name)
            cp = self.char_params_of(decl)
            if cp:
                self.char_params[name] = cp

    def read_parameters(self, function: str, func_declarator) -> None:
        """The names of a function's parameters (a call through one is a call through a pointer)."""
        params = func_declarator.child_by_field_name("parameters")
        names = self.variables.setdefault(function, set())
        own = self.parameters.setdefault(function, set())
        order = self.param_order.setdefault(function, {})
        index = 0
        for p in params.named_children if params is not None else ():
            if p.type == "parameter_declaration":
                name, _kind = _declared(p.child_by_field_name("declarator"))
                if name is not None:
                    names.add(self.text[name.start_byte : name.end_byte])
                    own.add(self.text[name.start_byte : name.end_byte])
                    order.setdefault(self.text[name.start_byte : name.end_byte], index)
                    size = self.declared_size(p, _kind)
                    if size is not None:
                        self.param_sizes.setdefault(function, {})[self.text[name.start_byte : name.end_byte]] = size
                index += 1

    def declared_size(self, decl, kind: str) -> int | None:
        """The size of a parameter of a basic type (of its target, ``*p``, for a pointer to one:
        ``-size``), by the LP64 sizes of :data:`_BASIC_SIZES`; else None."""
        t = decl.child_by_field_name("type")
        if t is None or kind not in ("value", "pointer"):
            return None
        size = _BASIC_SIZES.get(b" ".join(self.text[t.start_byte : t.end_byte].split()))
        if size is None:
            return None
        if kind == "pointer":
            d = decl.child_by_field_name("declarator")
            return -size if d is not None and d.type == "pointer_declarator" and _inner_declarator(d) is not None \
                and _inner_declarator(d).type == "identifier" else None
        return size

    def read_locals(self) -> None:
        """The local variables of each function: a local array (``char buf[16]``, a VLA, an array
        of pointers, a ``va_list``) gives it a stack canary under ``-fstack-protector-strong``; the
        others are remembered, for the addresses taken (:meth:`read_addresses`) and the calls
        through pointers (:meth:`read_calls`). ``static`` and ``extern`` locals are not on the
        stack; a prototype declares no variable.

        gcc's rule (gcc/cfgexpand.cc, ``stack_protect_classify_type`` and
        ``stack_protect_decl_phase``: with ``SPCT_FLAG_STRONG`` a variable whose type has
        ``SPCT_HAS_ARRAY``, any array of any element type and size, also inside a struct or union,
        is a protected decl; ``expand_used_vars`` then creates the guard when there is one, when
        a stack variable is ``TREE_ADDRESSABLE``, when the function calls alloca, or when a call
        uses a return slot). A struct local holding an array is not seen here (its type is
        defined elsewhere); its address is most often taken."""
        text = self.text
        at = self.funcs.at
        for node in self.every(self.caps.get("decl", ())):
            owner = at(node.start_byte)
            if owner is None:
                continue
            storage = {text[c.start_byte : c.end_byte] for c in node.children if c.type == "storage_class_specifier"}
            if b"extern" in storage:
                continue  # a global's declaration (a call through it reads the global: kept)
            on_stack = b"static" not in storage
            t = node.child_by_field_name("type")
            array_type = t is not None and text[t.start_byte : t.end_byte] in _ARRAY_TYPES
            for d in node.children_by_field_name("declarator"):
                name, kind = _declared(d)
                if name is None or kind == "function":
                    continue
                name_b = text[name.start_byte : name.end_byte]
                self.variables.setdefault(owner, set()).add(name_b)
                if not on_stack:
                    continue
                if kind == "array" or (kind == "value" and array_type):
                    self.canary.add(owner)
                self.stack_locals.setdefault(owner, set()).add(name_b)
        for node in self.every(self.caps.get("call", ())):  # DEFINE_WAIT(wait); in a function
            fn = node.child_by_field_name("function")
            if fn is None or fn.type != "identifier" or _DECLARING_MACRO.fullmatch(self.node_text(fn)) is None:
                continue
            owner = at(node.start_byte)
            args = node.child_by_field_name("arguments")
            first = next((a for _i, a in _arguments(args)), None) if args is not None else None
            if owner is None or first is None or first.type != "identifier":
                continue
            name_b = text[first.start_byte : first.end_byte]
            self.variables.setdefault(owner, set()).add(name_b)
            self.stack_locals.setdefault(owner, set()).add(name_b)
            if self.node_text(fn) in _ARRAY_MACROS:
                self.canary.add(owner)

    def read_addresses(self) -> None:
        """A function that takes the address of one of its stack locals (``&x``, ``&x.field``:
        the variable becomes ``TREE_ADDRESSABLE``) gets a canary. A parameter's address does not
        count (gcc gives ``int f(int p) { g(&p); }`` none: parameters are not among the stack
        variables ``expand_used_vars`` lays out)."""
        text = self.text
        at = self.funcs.at
        for n in self.every([*self.caps.get("ref.addr", ()), *self.caps.get("frame.addr", ())]):
            base = n if n.type == "identifier" else _addressed_base(n)
            if base is None:
                continue
            owner = at(base.start_byte)
            if owner is not None and text[base.start_byte : base.end_byte] in self.stack_locals.get(owner, ()):
                self.canary.add(owner)

    def mark_functions(self) -> None:
        """Each function's record with its ``canary`` and ``indirect``."""
        canary, indirect = self.canary - self.unguarded, self.indirect
        if canary or indirect:
            self.functions = [f._replace(canary=f.name in canary, indirect=f.name in indirect)
                              if f.name in canary or f.name in indirect else f for f in self.functions]

    def file_variables(self) -> set[bytes]:
        """The variables the file defines at file scope (:meth:`file_scope_definitions`, once)."""
        if self._file_vars is None:
            self._file_vars = self.file_scope_definitions()
        return self._file_vars

    def char_params_of(self, func_declarator) -> dict[str, int]:
        """``{name: index}`` of a function's ``char *`` parameters."""
        text = self.text
        params = func_declarator.child_by_field_name("parameters")
        out: dict[str, int] = {}
        if params is None or b"char" not in text[params.start_byte : params.end_byte]:
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
                if type_node is not None and text[type_node.start_byte : type_node.end_byte] == b"char":
                    name = _declarator_name(decl)
                    if name is not None:
                        out[self.node_text(name)] = index
            index += 1
        return out

    def read_macro_definitions(self) -> None:
        """A macro-defined function tree-sitter did not recognise: ``MACRO(args)`` at file scope
        followed by a block (``TEST_F(fixture, name) { ... }``), outside every function found;
        ctags names it after the macro."""
        found = []
        for _pattern, match in self.macro_matches:
            stmt, body, name_node = match["stmt"][0], match["body"][0], match["name"][0]
            # the call and a MISSING ";"
            if stmt.child_count == 2 and stmt.children[1].is_missing and self.funcs.at(stmt.start_byte) is None:
                found.append((stmt.start_byte, stmt, body, name_node))
        found.sort(key=lambda f: f[0])
        for _start, stmt, body, name_node in self.every(found):
            name = self.node_text(name_node)
            self.functions.append(FunctionDef(name, self.file, name_node.start_point[0] + 1, body.end_point[0] + 1,
                                              False, False))
            self.funcs.add(stmt.start_byte, body.end_byte, name)
            if body.has_error or stmt.children[0].has_error:
                self.with_errors += 1

    def read_string_constants(self) -> None:
        """``const char *name = "sym";``, per function or at file scope."""
        for node in self.every(self.caps.get("var.str", ())):
            value_node = node.child_by_field_name("value")
            value = _string_value(self.text, value_node)
            name = _declarator_name(node.child_by_field_name("declarator"))
            if value is not None and name is not None and SYMBOL_LIKE.match(value):
                self.string_vars[(self.funcs.at(value_node.start_byte), self.node_text(name))] = value

    def string_of(self, ident, function: str | None) -> str | None:
        """The string constant an identifier names, seen from ``function`` (None: file scope)."""
        name = self.node_text(ident)
        return self.string_vars.get((function, name)) or self.string_vars.get((None, name))

    def read_field_strings(self) -> None:
        """Struct fields set to strings (initialised or assigned); a kprobe's ``.symbol_name`` is a
        lookup."""
        for kind in _FIELD_KINDS:
            initialised = kind.startswith("field.init")
            for node in self.every(self.caps.get(kind, ())):
                value_node = node.child_by_field_name("value" if initialised else "right")
                value = (_string_value(self.text, value_node) if kind in ("field.init", "field.assign")
                         else self.string_of(value_node, self.funcs.at(value_node.start_byte)))
                if value is None or not SYMBOL_LIKE.match(value):
                    continue
                if initialised:
                    designators = node.children_by_field_name("designator")
                    if not designators or designators[-1].type != "field_designator":
                        continue
                    fields = [self.node_text(d)[1:] for d in designators if d.type == "field_designator"]
                    target = None
                else:
                    target = node.child_by_field_name("left")
                    fields = [self.node_text(target.child_by_field_name("field"))]
                field = fields[-1]
                self.field_strings.setdefault(field, []).append(value)
                if field == "symbol_name":
                    how = self.probe_kind(node if initialised else value_node, fields, target)
                    self.lookups.append(LookUp(value, how, self.file, value_node.start_point[0] + 1,
                                               self.funcs.at(value_node.start_byte)))

    def probe_kind(self, node, fields: list[str], target) -> str:
        """``kretprobe`` when a ``.symbol_name`` belongs to a ``struct kretprobe``, else ``kprobe``.
        (``node``: the initializer_pair, or the assigned value.)"""
        text = self.text
        if "kp" in fields[:-1]:
            return "kretprobe"
        if target is not None:  # rp.kp.symbol_name = ..., rp->kp.symbol_name = ...
            base = target.child_by_field_name("argument")
            if base is not None and base.type == "field_expression":
                inner = base.child_by_field_name("field")
                if inner is not None and self.node_text(inner) == "kp":
                    return "kretprobe"
            while base is not None and base.type in ("field_expression", "subscript_expression",
                                                     "parenthesized_expression"):
                base = base.child_by_field_name("argument") or (base.named_children[0] if base.named_children else None)
            if base is not None and base.type == "identifier":
                name = text[base.start_byte : base.end_byte]
                if re.search(rb"struct\s+kretprobe\s*\**\s*" + re.escape(name) + rb"\b", text):
                    return "kretprobe"
            return "kprobe"
        up = node
        for _ in range(_PROBE_LEVELS):  # a few levels up: each step is a descent from the root
            if up is None:
                break
            if up.type == "initializer_pair":
                for d in up.children_by_field_name("designator"):
                    if text[d.start_byte : d.end_byte] == b".kp":
                        return "kretprobe"
            if up.type == "declaration":
                t = up.child_by_field_name("type")
                if t is not None and b"kretprobe" in text[t.start_byte : t.end_byte]:
                    return "kretprobe"
                break
            up = up.parent
        return "kprobe"

    def read_guards(self) -> None:
        """The code each ``__builtin_constant_p(param)`` condition of an inline holds for
        (:mod:`ksymgraph.loaders.cfold`): ``if (__builtin_constant_p(n))`` its branch (``c``), its
        ``else`` and, when the branch ends in ``return``, the rest of the block (``n``); ``!`` the
        other way round; ``a && b`` only its branch; ``?:`` alike. Inside a constant branch,
        ``if (n > LIMIT)`` holds only for a large ``n`` (``b``), its ``else`` or, when it returns, the
        rest of the branch only for a small one (``s``)."""
        guards = []
        for node in self.caps.get("guard", ())[:_MAX_GUARDS]:
            function = self.funcs.at(node.start_byte)
            params = self.param_order.get(function) if function is not None else None
            if not params:
                continue
            cond = node.child_by_field_name("condition")
            then = node.child_by_field_name("consequence")
            other = node.child_by_field_name("alternative")
            if cond is None or then is None:
                continue
            value = self.condition_value(cond, function)
            if value is not None:  # sizeof(long) == sizeof(long long): one branch is never compiled
                dead = other if value else then
                if dead is not None:
                    guards.append((dead.start_byte, dead.end_byte, "x"))
                if value and other is None and node.type == "if_statement" and _ends_in_return(then):
                    block = node.parent
                    if block is not None and block.type == "compound_statement":
                        guards.append((node.end_byte, block.end_byte, "x"))
                continue
            yes, no, big = self.constant_condition(cond, params)
            if yes is None:
                continue
            guards.append((then.start_byte, then.end_byte, yes))
            guards.extend((then.start_byte, then.end_byte, b) for b in big)
            if no is not None and other is not None:
                guards.append((other.start_byte, other.end_byte, no))
            elif no is not None and node.type == "if_statement" and _ends_in_return(then):
                block = node.parent
                if block is not None and block.type == "compound_statement":
                    guards.append((node.end_byte, block.end_byte, no))
            if yes[0] == "c" and then.type == "compound_statement":
                for stmt in then.named_children:
                    if stmt.type == "if_statement":
                        inner = stmt.child_by_field_name("condition")
                        body = stmt.child_by_field_name("consequence")
                        k = self.large_test(inner, params) if inner is not None else None
                        if k is not None and body is not None:
                            guards.append((body.start_byte, body.end_byte, f"b{k}"))
                            alt = stmt.child_by_field_name("alternative")
                            if alt is not None:
                                guards.append((alt.start_byte, alt.end_byte, f"s{k}"))
                            elif _ends_in_return(body):
                                guards.append((stmt.end_byte, then.end_byte, f"s{k}"))
        guards.sort()
        self.guards = guards
        self._guard_starts = [g[0] for g in guards]

    def constant_condition(self, cond, params: dict[bytes, int]) -> tuple[str | None, str | None, list[str]]:
        """(guard of the branch taken, of the other branch, large-size guards of the branch taken)
        of a condition on ``__builtin_constant_p()`` of parameters; (None, None, []) for another."""
        cond = _unparenthesized(cond)
        k = self.constant_p_of(cond, params)
        if k is not None:
            return f"c{k}", f"n{k}", []
        if cond.type == "unary_expression" and self.text[cond.start_byte : cond.start_byte + 1] == b"!":
            arg = cond.child_by_field_name("argument")
            k = self.constant_p_of(_unparenthesized(arg), params) if arg is not None else None
            return (f"n{k}", f"c{k}", []) if k is not None else (None, None, [])
        constant, big, other = [], [], False
        for part in _conjuncts(cond, self.text):
            k = self.constant_p_of(part, params)
            if k is not None:
                constant.append(k)
                continue
            b = self.large_test(part, params)
            if b is not None:
                big.append(f"b{b}")
            else:
                other = True
        if not constant:
            return None, None, []
        joined = ".".join(str(i) for i in sorted(set(constant)))
        return f"c{joined}", (None if other or big else f"n{joined}"), big

    def condition_value(self, cond, function: str) -> bool | None:
        """The value of a condition made of comparisons of sizes (``sizeof(long) ==
        sizeof(long long) && __alignof__(long) == __alignof__(long long)``, ``sizeof(l) == 4`` of
        a parameter ``unsigned long l``), by x86-64's LP64 sizes; None for any other."""
        parts = _conjuncts(cond, self.text)
        if not parts:
            return None
        value = True
        for part in parts:
            op, left, right = (part.child_by_field_name(f) for f in ("operator", "left", "right")) \
                if part.type == "binary_expression" else (None, None, None)
            if op is None or op.type not in _COMPARE:
                return None
            a, b = self.size_of(left, function), self.size_of(right, function)
            if a is None or b is None:
                return None
            value = value and _COMPARE[op.type](a, b)
        return value

    def size_of(self, node, function: str) -> int | None:
        """The value of ``sizeof(T)``/``__alignof__(T)`` of a basic type or a parameter of one, or
        of an integer literal; else None."""
        node = _unparenthesized(node)
        if node is None:
            return None
        if node.type == "number_literal":
            return literal_value(self.text[node.start_byte : node.end_byte].decode("ascii", "replace"))
        if node.type not in ("sizeof_expression", "alignof_expression"):
            return None
        t = node.child_by_field_name("type")
        if t is not None:
            return _BASIC_SIZES.get(b" ".join(self.text[t.start_byte : t.end_byte].split()))
        v = node.child_by_field_name("value")
        v = _unparenthesized(v) if v is not None else None
        sizes = self.param_sizes.get(function, {})
        if v is not None and v.type == "identifier":  # a parameter, or a type tree-sitter took for a value
            name = self.text[v.start_byte : v.end_byte]
            size = sizes.get(name)
            return size if size is not None and size > 0 else (_BASIC_SIZES.get(name) if size is None else None)
        if v is not None and v.type == "pointer_expression" and self.text[v.start_byte : v.start_byte + 1] == b"*":
            arg = v.child_by_field_name("argument")
            size = sizes.get(self.text[arg.start_byte : arg.end_byte]) if arg is not None and arg.type == "identifier" else None
            return -size if size is not None and size < 0 else None
        return None

    def constant_p_of(self, node, params: dict[bytes, int]) -> int | None:
        """The parameter's position if ``node`` is ``__builtin_constant_p(param)``."""
        if node.type != "call_expression":
            return None
        fn, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
        if fn is None or args is None or self.text[fn.start_byte : fn.end_byte] != b"__builtin_constant_p":
            return None
        inner = [a for _i, a in _arguments(args)]
        if len(inner) != 1:
            return None
        arg = _unparenthesized(inner[0])
        return params.get(self.text[arg.start_byte : arg.end_byte]) if arg.type == "identifier" else None

    def large_test(self, node, params: dict[bytes, int]) -> int | None:
        """The parameter's position if ``node`` is ``param > CONSTANT`` (or ``>=``)."""
        node = _unparenthesized(node)
        if node.type != "binary_expression":
            return None
        op, left, right = (node.child_by_field_name(f) for f in ("operator", "left", "right"))
        if op is None or left is None or right is None or op.type not in (">", ">="):
            return None
        left = _unparenthesized(left)
        if left.type != "identifier":
            return None
        k = params.get(self.text[left.start_byte : left.end_byte])
        return k if k is not None and self.constness(right, {}, False, 0) in ("c", "C") else None

    def guard_at(self, pos: int) -> str:
        """The guard tokens of the conditions holding at byte ``pos``, ``;``-joined."""
        if not self.guards:
            return ""
        n = bisect.bisect_right(self._guard_starts, pos)
        return ";".join(tok for start, end, tok in self.guards[:n] if end > pos)

    def argument_classes(self, node, caller: str, guard: str) -> str:
        """The class of each argument of a call (:mod:`ksymgraph.loaders.cfold`), ``""`` when
        none is constant or a parameter."""
        args = node.child_by_field_name("arguments")
        if args is None or args.named_child_count == 0:
            return ""
        params = self.param_order.get(caller, {})
        in_constant = any(t[:1] == "c" for t in guard.split(";"))
        classes = [self.constness(arg, params, in_constant, 0) for _i, arg in _arguments(args)]
        return "" if all(c == NOT_CONSTANT for c in classes) else ",".join(classes)

    def constness(self, node, params: dict[bytes, int], in_constant: bool, depth: int) -> str:
        """The class of an expression: an integer constant expression (``c``, ``C`` when known
        to be large), a parameter (``pN``), unknown (``?``: a local in a constant-only branch,
        where gcc may know its value) or not constant (``-``)."""
        kind = node.type
        if depth > _FOLD_DEPTH:
            return NOT_CONSTANT
        if kind in ("number_literal", "char_literal"):
            value = literal_value(self.text[node.start_byte : node.end_byte].decode("ascii", "replace"))
            return "C" if value is not None and value > SMALL_LIMIT else "c"
        if kind in _ALWAYS_CONSTANT:
            return "c"
        if kind == "identifier":
            name = self.text[node.start_byte : node.end_byte]
            if name in params:
                return f"p{params[name]}"
            if _HAS_LOWER.search(name) is None:  # a macro constant or an enumerator, by kernel style
                value = literal_value(name.decode("ascii", "replace"))
                return "C" if value is not None and value > SMALL_LIMIT else "c"
            return UNKNOWN if in_constant else NOT_CONSTANT
        if kind == "cast_expression":
            value = node.child_by_field_name("value")
            return self.constness(value, params, in_constant, depth + 1) if value is not None else NOT_CONSTANT
        if kind in _OPERATORS:
            classes = [self.constness(c, params, in_constant, depth + 1) for c in node.named_children
                       if c.type != "comment"]
            joined = join_classes(classes)
            if joined == "c" and kind == "binary_expression":
                value = self.known_value(node, 0)
                if value is not None and value > SMALL_LIMIT:
                    return "C"
            return joined
        if kind == "call_expression":
            fn, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
            if fn is None or fn.type != "identifier" or args is None:
                return NOT_CONSTANT
            name = self.text[fn.start_byte : fn.end_byte]
            if name in _CONSTANT_MACROS:
                return "c"
            if _HAS_LOWER.search(name) is not None and name not in _FOLDING_MACROS:
                return NOT_CONSTANT
            read = _COUNT_ARGUMENT.get(name)
            skip = 1 if name.endswith(b"_t") else 0  # min_t(type, a, b)
            return join_classes([self.constness(a, params, in_constant, depth + 1) for i, a in _arguments(args)
                                 if (i == read if read is not None else i >= skip)]) if args.named_child_count else "c"
        return NOT_CONSTANT

    def known_value(self, node, depth: int) -> int | None:
        """The value of a constant expression of literals and size macros (``PAGE_SIZE * 4``)."""
        kind = node.type
        if depth > _FOLD_DEPTH:
            return None
        if kind in ("number_literal", "identifier"):
            return literal_value(self.text[node.start_byte : node.end_byte].decode("ascii", "replace"))
        if kind == "parenthesized_expression" and node.named_child_count == 1:
            return self.known_value(node.named_children[0], depth + 1)
        if kind == "binary_expression":
            op, left, right = (node.child_by_field_name(f) for f in ("operator", "left", "right"))
            a = self.known_value(left, depth + 1) if left is not None else None
            b = self.known_value(right, depth + 1) if right is not None else None
            if a is None or b is None or op is None:
                return None
            if op.type == "*":
                return a * b
            if op.type == "+":
                return a + b
            if op.type == "-":
                return a - b
            if op.type == "<<" and 0 <= b < 64:
                return a << b
            if op.type == "/" and b:
                return a // b
        return None

    def read_calls(self) -> None:
        """Calls inside functions, and what their arguments tell the lookup analysis."""
        file = self.file
        calls = self.calls
        at = self.funcs.at
        for node in self.every(self.caps.get("call", ())):
            caller = at(node.start_byte)
            if caller is None:
                continue
            fn = node.child_by_field_name("function")
            if fn is None:
                continue
            found = _callee(fn)
            if found is None:  # through an expression: table[i](x), get_op()(x), ((cast)p)(x)
                if _callable_expression(fn):
                    self.indirect.add(caller)
                continue
            name_node, via_member = found
            callee = self.node_text(name_node)
            line = name_node.start_point[0] + 1
            if via_member:
                self.indirect.add(caller)
            elif callee in _ALLOCA:
                self.canary.add(caller)
            name_b = self.text[name_node.start_byte : name_node.end_byte]
            if not via_member and (name_b in self.variables.get(caller, ()) or name_b in self.file_variables()):
                # cb(x), (*fn)(x): through a parameter, a local or a variable of the file; in an
                # inline function not through a parameter, which its callers most often pass a
                # function's name (kref_put(&k, release)): inlined, gcc calls that function
                if caller not in self.inline_functions or name_b not in self.parameters.get(caller, ()):
                    self.indirect.add(caller)
                self.pointer_calls.append(Call(caller, callee, file, line, False))
                self.read_call_arguments(node, caller, callee, line)
                continue
            if via_member:
                calls.append(Call(caller, callee, file, line, True))
            else:
                guard = self.guard_at(node.start_byte)
                calls.append(Call(caller, callee, file, line, False, self.argument_classes(node, caller, guard), guard))
            if not via_member:
                if is_member_macro(callee):
                    self.not_member_argument(node)
                self.read_call_arguments(node, caller, callee, line)

    def not_member_argument(self, node) -> None:
        """The last argument of ``container_of(p, type, member)`` and its kin is a member's name."""
        args = node.child_by_field_name("arguments")
        last = None
        for _index, arg in _arguments(args) if args is not None else ():
            last = arg
        if last is not None and last.type == "identifier":
            self.not_refs.add(last.id)

    def read_call_arguments(self, node, caller: str, callee: str, line: int) -> None:
        """A lookup by a bare identifier (``symbol_get(x)``), a ``char *`` parameter passed on, or
        a string constant passed as an argument."""
        lookup = callee in IDENTIFIER_LOOKUPS
        params = self.char_params.get(caller)
        if not (lookup or params or self.string_vars or self.field_strings):
            return  # nothing in this call's arguments can name a symbol
        args = node.child_by_field_name("arguments")
        if args is None or args.named_child_count == 0:
            return
        if lookup:
            first = args.named_children[0]
            if first.type == "identifier":
                self.lookups.append(LookUp(self.node_text(first), callee, self.file, line, caller))
            return
        for index, arg in _arguments(args):
            if arg.type == "identifier":
                ident = self.node_text(arg)
                if params and ident in params:
                    self.arg_flows.append(ArgFlow(caller, params[ident], callee, index, self.file, line))
                    continue
                value = self.string_of(arg, caller)
                if value is not None:
                    self.string_args.append(StringArg(caller, callee, index, value, self.file, line))
            elif arg.type == "field_expression":
                fld = arg.child_by_field_name("field")
                for value in self.field_strings.get(self.node_text(fld), ()) if fld is not None else ():
                    self.string_args.append(StringArg(caller, callee, index, value, self.file, line))

    def read_lookup_pointers(self) -> None:
        """A function pointer set to the address a kprobe found for a lookup function is that
        lookup function (kernels since 5.7 no longer export ``kallsyms_lookup_name``: out-of-tree
        modules register a kprobe with ``.symbol_name = "kallsyms_lookup_name"`` and call its
        ``.addr``). ``p = (cast) f(...)`` where ``f`` holds such a kprobe in this file, or
        ``p = (cast) kp.addr`` inside such a function, makes ``p`` a wrapper of the lookup
        function (when this file calls ``p``): recorded as an :class:`ArgFlow` from ``p``'s name
        argument to the lookup's."""
        probed = {lu.function: lu.symbol for lu in self.lookups
                  if lu.how in ("kprobe", "kretprobe") and lu.function and lu.symbol in LOOKUP_FUNCTIONS}
        if not probed:
            return
        called = {c.callee for c in (*self.calls, *self.pointer_calls)}
        for node in self.every(self.caps.get("ptr.assign", ())):
            left = node.child_by_field_name("left")
            if self.node_text(left) not in called:
                continue  # not a function pointer this file calls (``addr = kp.addr``)
            right = node.child_by_field_name("right")
            while right is not None and right.type in ("cast_expression", "parenthesized_expression"):
                right = right.child_by_field_name("value") or (right.named_children[-1] if right.named_children
                                                              else None)
            if right is None:
                continue
            target = None
            if right.type == "call_expression":
                fn = right.child_by_field_name("function")
                if fn is not None and fn.type == "identifier":
                    target = probed.get(self.node_text(fn))
            elif right.type == "field_expression":
                fld = right.child_by_field_name("field")
                if fld is not None and self.node_text(fld) == "addr":
                    target = probed.get(self.funcs.at(node.start_byte))
            if target is not None:
                index = LOOKUP_FUNCTIONS[target]
                self.arg_flows.append(ArgFlow(self.node_text(left), index, target, index,
                                              self.file, node.start_point[0] + 1))

    def read_string_literal_args(self) -> None:
        """Symbol-like string literals passed to a named function (``f("sym")``), each argument
        list walked once."""
        found = []
        for call in self.every(self.caps.get("call.str", ())):
            fn = call.child_by_field_name("function")
            args = call.child_by_field_name("arguments")
            callee, line = self.node_text(fn), fn.start_point[0] + 1
            for index, arg in _arguments(args):
                if arg.type != "string_literal":
                    continue
                value = _string_value(self.text, arg)
                if value is not None and SYMBOL_LIKE.match(value):
                    found.append((arg.start_byte, StringArg(self.funcs.at(arg.start_byte), callee, index, value,
                                                            self.file, line)))
        found.sort(key=lambda f: f[0])
        self.string_args += [arg for _, arg in found]

    def read_references(self) -> None:
        """Identifiers that name a symbol without calling it (:class:`~ksymgraph.loaders.records.Reference`):
        an identifier in the place of a value (an argument, an operand, an initialiser, a returned
        value...: the ``@ref`` patterns of :data:`QUERY`; never a callee, a declarator, a type or
        a member). In a function body, a ``read`` or (after ``&``) an ``address``, unless the
        function declares that name (a parameter or a local); at file scope, inside an
        initialiser, an ``initialiser`` of the file's pseudo-function :data:`FILE_SCOPE`. Never a
        name the file itself defines at file scope (not ``extern``), the member-name argument of
        ``container_of`` and its kin, or a name without a lower-case letter (macro constants,
        enumerators) but in a header's inline."""
        caps = self.caps
        at = self.funcs.at
        text = self.text
        skip = self.not_refs
        file_defined = self.file_variables()
        has_lower = _HAS_LOWER.search
        header = self.file.endswith(".h")
        chunks = self.ref_chunks() if self.ref_chunks is not None else [caps.get("ref", ())]
        # The functions declaring each name (by name: most names are declared in few functions).
        declared_in: dict[bytes, set[str]] = {}
        for n in self.every(caps.get("ref.decl", ())):
            name_b = text[n.start_byte : n.end_byte]
            if has_lower(name_b) is not None:
                owner = at(n.start_byte)
                if owner is not None:
                    declared_in.setdefault(name_b, set()).add(owner)
        addressed = {n.id for n in caps.get("ref.addr", ())}
        inits = sorted((n.start_byte, n.end_byte) for n in caps.get("ref.init", ()) if at(n.start_byte) is None)
        starts = [s for s, _ in inits]
        ends = list(itertools.accumulate((e for _, e in inits), max))  # furthest end of the first i
        seen: set[tuple] = set()
        out = self.references
        nowhere: set[str] = set()
        for n in (n for chunk in chunks for n in self.every(chunk)):
            start = n.start_byte
            name_b = text[start : n.end_byte]
            if name_b in file_defined:
                continue  # the file's own variable
            function = at(start)
            if has_lower(name_b) is None and (not header or function is None or len(name_b) < 4):
                # A constant; but in a header's inline, an upper-case macro may stand for a
                # variable (arch/x86/include/asm/page_64.h's __phys_addr_nodebug() names
                # PAGE_OFFSET, which is page_offset_base): kept, the graph resolves it only to a
                # macro that leads to a symbol (ksymgraph.loaders.macros, upper-case chains)
                continue
            if function is not None:
                if function in declared_in.get(name_b, nowhere) or n.id in skip:
                    continue
                kind = "address" if n.id in addressed else "read"
            else:
                i = bisect.bisect_right(starts, start) - 1
                if i < 0 or ends[i] <= start or n.id in skip:
                    continue  # outside every file-scope initialiser
                function, kind = FILE_SCOPE, "initialiser"
            line = n.start_point[0] + 1
            key = (function, name_b, line, kind)
            if key not in seen:
                seen.add(key)
                out.append(Reference(function, name_b.decode("utf-8", "replace"), self.file, line, kind,
                                     guard=self.guard_at(start) if function != FILE_SCOPE else ""))

    def file_scope_definitions(self) -> set[bytes]:
        """Names the file declares at file scope other than as ``extern`` or as a prototype: its
        own variables (and, as definitions of functions are among the functions, nothing else)."""
        text = self.text
        at = self.funcs.at
        out: set[bytes] = set()
        for node in self.every(self.caps.get("decl", ())):
            if at(node.start_byte) is not None:
                continue
            if any(c.type == "storage_class_specifier" and text[c.start_byte : c.end_byte] == b"extern"
                   for c in node.children):
                continue
            for d in node.children_by_field_name("declarator"):
                inner = d.child_by_field_name("declarator") if d.type == "init_declarator" else d
                if inner is not None and _function_declarator_at_top(inner):
                    continue
                name = _declarator_name(d)
                if name is not None:
                    out.add(text[name.start_byte : name.end_byte])
        return out


def _function_declarator_at_top(node) -> bool:
    """True when a declarator declares a function (``int f(void)``, ``int *f(void)``), not a
    pointer to one (``int (*f)(void)``, a variable)."""
    return _declared(node)[1] == "function"
