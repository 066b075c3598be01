"""The property-graph schema (docs/design.md §2): node and relationship tables and their properties.

One declaration serves every store: the embedded store turns it into ``CREATE NODE TABLE`` /
``CREATE REL TABLE`` statements, the Neo4j store into constraints and ``UNWIND … MERGE``
statements, and the builder into Arrow schemas. Every node and relationship carries ``kernel``
(a release string such as ``6.1.0-50-amd64``) so several kernels live in one store. A node's
primary key ``id`` is ``<kernel>|<name>`` (``<kernel>|<path>`` for files,
``<kernel>|<file>|<name>`` for functions, whose names repeat across files).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple, Union

if TYPE_CHECKING:  # imported when an Arrow schema is first asked for: opening a store needs none
    import pyarrow as pa

__all__ = ["Prop", "NodeTable", "RelTable", "TableKey", "NODES", "RELS", "node_id", "node_table", "rel_table",
           "arrow_schema", "arrow_type"]


class Prop(NamedTuple):
    """One property of a node or relationship table."""

    name: str
    """Property name, as queries use it."""
    type: str
    """``STRING``, ``INT64``, ``BOOLEAN`` or ``STRING[]``."""


class NodeTable(NamedTuple):
    """A node label: every node has ``id`` (primary key) and ``kernel`` besides ``props``."""

    label: str
    """The node label (``Module``, ``Symbol``, ...)."""
    props: tuple[Prop, ...]
    """Properties other than ``id`` and ``kernel``."""


class RelTable(NamedTuple):
    """A relationship type between node labels; every relationship has ``kernel``."""

    type: str
    """The relationship type (``EXPORTS``, ``IMPORTS``, ...)."""
    pairs: tuple[tuple[str, str], ...]
    """(from label, to label) pairs it may connect."""
    props: tuple[Prop, ...]
    """Properties other than ``kernel``."""


def _p(spec: str) -> tuple[Prop, ...]:
    return tuple(Prop(*item.split(":")) for item in spec.split())


NODES = (
    NodeTable("Kernel", _p("release:STRING version:STRING arch:STRING source:STRING vermagic:STRING "
                          "modversions:BOOLEAN force_load:BOOLEAN missing_ns_allowed:BOOLEAN build_from:STRING")),
    NodeTable("Module", _p(
        "name:STRING path:STRING license:STRING gpl_compatible:BOOLEAN vermagic:STRING "
        "srcversion:STRING intree:BOOLEAN import_ns:STRING[] in_tree_source:BOOLEAN modversions:BOOLEAN "
        "layout_crc:INT64")),
    NodeTable("Symbol", _p("name:STRING kind:STRING")),
    NodeTable("Function", _p(
        "name:STRING file:STRING line:INT64 end_line:INT64 static:BOOLEAN inline:BOOLEAN is_macro:BOOLEAN "
        "canary:BOOLEAN indirect:BOOLEAN")),
    NodeTable("File", _p("path:STRING")),
    NodeTable("Namespace", _p("name:STRING")),
)

RELS = (
    RelTable("EXPORTS", (("Module", "Symbol"),), _p("gpl:BOOLEAN namespace:STRING crc:INT64")),
    RelTable("IMPORTS", (("Module", "Symbol"),), _p("crc:INT64 weak:BOOLEAN")),
    RelTable("DEPENDS_ON", (("Module", "Module"),), _p("symbols:STRING[]")),
    RelTable("LOOKS_UP", (("Module", "Symbol"),), _p("how:STRING file:STRING line:INT64")),
    # CALLS.line: the callee's line; a call through a struct member is a call of the Symbol "->fn"
    # (kind member). CALLS.fold (and REFERENCES.guard): what gcc's constant folding decides of the call
    # (ksymgraph.loaders.cfold): each argument's constness, and the __builtin_constant_p() or
    # sizeof conditions under which it is compiled, as "args" or "args|guard"; null: not read.
    RelTable("CALLS", (("Function", "Function"), ("Function", "Symbol")),
             _p("line:INT64 fold:STRING")),
    RelTable("DEFINED_IN", (("Function", "File"),), ()),
    RelTable("IMPLEMENTS", (("Function", "Symbol"),), ()),
    RelTable("BUILT_INTO", (("File", "Module"),), ()),
    RelTable("EXPORTED_AS", (("Function", "Symbol"),), _p("gpl:BOOLEAN namespace:STRING line:INT64")),
    RelTable("IMPORTS_NS", (("Module", "Namespace"),), ()),
)

# References (issue 14, point 2): a function (or a file's ``(file scope)`` pseudo-function, or a
# macro) naming a symbol without calling it. ``kind``: ``read``, ``address`` or ``initialiser``
# (ksymgraph.loaders.records.REFERENCE_KINDS); ``via``: the macros a file-scope invocation
# expanded through to make the name (``module_param → module_param_named``), ``""`` when written.
RELS += (
    RelTable("REFERENCES", (("Function", "Function"), ("Function", "Symbol")),
             _p("line:INT64 kind:STRING via:STRING guard:STRING")),
)

#: A table of one kernel's graph: a node label (``"Module"``), or a relationship type with the labels
#: it connects (``("IMPORTS", "Module", "Symbol")``).
TableKey = Union[str, tuple[str, str, str]]


def node_table(label: str) -> NodeTable:
    """The declaration of node label ``label``."""
    return next(n for n in NODES if n.label == label)


def rel_table(rtype: str) -> RelTable:
    """The declaration of relationship type ``rtype``."""
    return next(r for r in RELS if r.type == rtype)


def node_id(kernel: str, *key: str) -> str:
    """The primary key of a node: ``kernel|key...``."""
    return "|".join((kernel, *key))


@functools.lru_cache(maxsize=None)
def arrow_schema(key: TableKey) -> pa.Schema:
    """The Arrow schema of a node label (``id``, ``kernel``, props) or of a relationship key
    ``(type, from, to)`` (``from``, ``to``, ``kernel``, props), as the stores take it."""
    import pyarrow as pa

    if isinstance(key, tuple):
        head, props = ["from", "to", "kernel"], rel_table(key[0]).props
    else:
        head, props = ["id", "kernel"], node_table(key).props
    return pa.schema([pa.field(c, pa.string()) for c in head] + [pa.field(p.name, arrow_type(p.type)) for p in props])


def arrow_type(prop_type: str) -> pa.DataType:
    """The Arrow type that holds a property of type ``prop_type``."""
    import pyarrow as pa

    return {"STRING": pa.string(), "INT64": pa.int64(), "BOOLEAN": pa.bool_(),
            "STRING[]": pa.list_(pa.string())}[prop_type]


# Compiler-inserted imports (issue 14, 3b; graph/compiler.py): from a module (every function of it
# gets the insert: __fentry__, __x86_return_thunk, ...) or from a header inline (asm or token
# pasting in its body: __preempt_count, __SCT__might_resched) to the symbol the build inserts, with
# the .config options that cause it (loaders/compiler.py). Kept apart from CALLS so call-site
# worklists never list them as sites to change.
RELS = RELS + (
    RelTable("COMPILER_INSERTS", (("Module", "Symbol"), ("Function", "Symbol")), _p("causes:STRING[] why:STRING")),
)
