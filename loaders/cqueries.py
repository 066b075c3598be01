"""The tree-sitter queries the C reader runs over a file's tree, and how deep they may look.

:data:`QUERY` captures function definitions, calls, string arguments, initialisers, includes and
error nodes in one pass; :data:`GUARD_QUERY` the conditions that may test ``__builtin_constant_p()``
(run only over a text that names it); :data:`REF_QUERY` the identifiers that stand for values (the references);
:data:`MACRO_QUERY` the functions a macro defines (``TEST_F(fixture, name) { ... }``).
:mod:`ksymgraph.loaders.ctree` reads their captures.

Depth is bounded where tree-sitter's query engine would not cope (its states keep a 16-bit depth,
and a pattern with a child is quadratic in the nesting): patterns start at most :data:`MAX_DEPTH`
levels down. The calls nested deeper are counted by :func:`calls_deeper_than`, an iterative walk
that visits only the subtrees large enough to reach that deep, and reported.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["QUERY", "GUARD_QUERY", "REF_QUERY", "MACRO_QUERY", "MAX_DEPTH", "calls_deeper_than", "nodes_deeper_than"]

#: The one query run over each tree. Each pattern captures the node whose children are read.
QUERY = """
(function_definition) @func
(call_expression) @call
(call_expression function: (identifier) arguments: (argument_list (string_literal))) @call.str
(init_declarator value: (string_literal)) @var.str
(initializer_pair value: (string_literal)) @field.init
(initializer_pair value: (identifier)) @field.initvar
(assignment_expression left: (field_expression) right: (string_literal)) @field.assign
(assignment_expression left: (field_expression) right: (identifier)) @field.assignvar
(assignment_expression left: (identifier) right: (cast_expression)) @ptr.assign
(assignment_expression left: (identifier) right: (call_expression)) @ptr.assign
(assignment_expression left: (identifier) right: (field_expression)) @ptr.assign
(preproc_include path: (_) @include)
(ERROR) @error
(declaration) @decl
(init_declarator declarator: (identifier) @ref.decl)
(declaration declarator: (identifier) @ref.decl)
(parameter_declaration declarator: (identifier) @ref.decl)
(pointer_declarator declarator: (identifier) @ref.decl)
(array_declarator declarator: (identifier) @ref.decl)
(function_declarator declarator: (identifier) @ref.decl)
(parenthesized_declarator (identifier) @ref.decl)
(attributed_declarator (identifier) @ref.decl)
(enumerator name: (identifier) @ref.decl)
(pointer_expression operator: "&" argument: (identifier) @ref.addr)
(pointer_expression operator: "&" argument: (field_expression) @frame.addr)
(pointer_expression operator: "&" argument: (subscript_expression) @frame.addr)
(init_declarator value: (_) @ref.init)
"""

#: Identifiers in the place of a value: the candidates for references. A query of its own, run a
#: byte range at a time and read range by range (:meth:`TreeRecords.read_references`): a file has
#: four times as many of them as calls, and holding them all at once raised the parse's peak.
REF_QUERY = """
(argument_list (identifier) @ref)
(binary_expression left: (identifier) @ref)
(binary_expression right: (identifier) @ref)
(assignment_expression left: (identifier) @ref)
(assignment_expression right: (identifier) @ref)
(return_statement (identifier) @ref)
(init_declarator value: (identifier) @ref)
(initializer_list (identifier) @ref)
(initializer_pair value: (identifier) @ref)
(pointer_expression argument: (identifier) @ref)
(field_expression argument: (identifier) @ref)
(subscript_expression argument: (identifier) @ref)
(subscript_expression index: (identifier) @ref)
(unary_expression argument: (identifier) @ref)
(update_expression argument: (identifier) @ref)
(cast_expression value: (identifier) @ref)
(conditional_expression condition: (identifier) @ref)
(conditional_expression consequence: (identifier) @ref)
(conditional_expression alternative: (identifier) @ref)
(parenthesized_expression (identifier) @ref)
(comma_expression left: (identifier) @ref)
(comma_expression right: (identifier) @ref)
(expression_statement (identifier) @ref)
(gnu_asm_input_operand value: (identifier) @ref)
(gnu_asm_output_operand value: (identifier) @ref)
"""

#: ``if`` statements and ``?:`` whose condition is a call, its negation or a ``&&`` chain starting
#: with one, or a comparison of sizes: the candidates for ``__builtin_constant_p(param)`` and
#: ``sizeof(long) == 8`` conditions (the reader checks the
#: name: a text predicate would make the binding read a node's text, which crashes it for a tree
#: parsed through a read callback).
GUARD_QUERY = """
(if_statement condition: (parenthesized_expression [
   (call_expression function: (identifier))
   (unary_expression argument: (call_expression function: (identifier)))
   (binary_expression left: (call_expression function: (identifier)))
   (binary_expression left: (binary_expression left: (call_expression function: (identifier))))])) @guard
(conditional_expression condition: (call_expression function: (identifier))) @guard
(if_statement condition: (parenthesized_expression (binary_expression left: [(sizeof_expression) (alignof_expression)]))) @guard
(if_statement condition: (parenthesized_expression
   (binary_expression left: (binary_expression left: [(sizeof_expression) (alignof_expression)])))) @guard
"""

#: ``MACRO(args)`` at file scope followed by a block: a function a macro defines, which
#: tree-sitter reads as a call statement missing its ``;`` and a block.
MACRO_QUERY = "\n".join(
    f"({parent} (expression_statement (call_expression function: (identifier) @name)) @stmt . "
    f"(compound_statement) @body)"
    for parent in ("translation_unit", "preproc_if", "preproc_ifdef", "preproc_else")
)

#: How deep in a tree a query pattern may start (levels below the root). The deepest node of
#: linux-source-6.1 is 2,090 levels down (lib/test_bpf.c, the next 741); a call costs two levels
#: (call, arguments), so 1,999 nested calls are read and the rest counted.
MAX_DEPTH = 4000


def calls_deeper_than(root, limit: int, call_kind: int, check: Callable[[], None] = lambda: None) -> int:
    """How many ``call_expression`` nodes (``call_kind``) lie more than ``limit`` levels below
    ``root`` (see :func:`nodes_deeper_than`)."""
    return nodes_deeper_than(root, limit, (call_kind,), check)[0]


def nodes_deeper_than(root, limit: int, kinds: tuple[int, ...], check: Callable[[], None] = lambda: None) -> list[int]:
    """How many nodes of each of ``kinds`` (``call_expression``, ``identifier``...) lie more than
    ``limit`` levels below ``root``, a count per kind. Iterative; descends only into a subtree whose
    size lets it reach that deep, so a file of ordinary depth costs a few hundred node visits.
    A node that is a call's ``function`` (its callee) is not counted. ``check`` is called every
    65,536."""

    def can_reach(node, depth: int) -> bool:
        return depth + node.descendant_count - 1 > limit

    counts = [0] * len(kinds)
    if not can_reach(root, 0):
        return counts
    cur = root.walk()
    depth = visits = 0
    while True:
        visits += 1
        if not visits & 0xFFFF:
            check()
        if depth > limit:
            kind = cur.node.kind_id
            if kind in kinds and cur.field_name != "function":  # (a callee is no reference)
                counts[kinds.index(kind)] += 1
        if cur.goto_first_child():
            depth += 1
            if can_reach(cur.node, depth) or _next_reaching(cur, depth, can_reach):
                continue
            cur.goto_parent()
            depth -= 1
        while True:  # on to the next subtree that can reach, climbing as far as need be
            if depth == 0:
                return counts
            if _next_reaching(cur, depth, can_reach):
                break
            cur.goto_parent()
            depth -= 1


def _next_reaching(cur, depth: int, can_reach: Callable) -> bool:
    while cur.goto_next_sibling():
        if can_reach(cur.node, depth):
            return True
    return False
