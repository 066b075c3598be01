"""The named read queries: ``queries/cypher/*.cypher`` files, run with parameters on any store.

Each query is one file, ``NAME.cypher``, written in the Cypher subset both LadybugDB and Neo4j
accept (docs/design.md §4). Where the engines truly differ, ``NAME.DIALECT.cypher`` (``DIALECT`` being a
store's :attr:`~ksymgraph.graph.store.GraphStore.dialect`: ``ladybug`` or ``neo4j``) replaces the
portable text for that engine only, so there is one variant per engine, never two copies of all.

A file starts with a ``//`` comment header: the description (its first paragraph; an empty ``//``
line starts notes that listings leave out), then one line per parameter::

    // Modules that import a symbol ...
    // $kernel (kernel) = only: the kernel (default: the only one in the store)
    // $symbol (string): the symbol's name
    // $depth (int) = 1: how many calls away, 1 to 5

The type is ``string``, ``int``, ``bool``, ``list`` or ``kernel`` (a string that must name a kernel in
the store). ``= DEFAULT`` (JSON) makes the parameter optional; ``= only`` on a kernel parameter
means the store's only kernel. A variant file's header is a description only: the parameters are
those of the portable file. Parameter values are always passed to the store as parameters, never
formatted into the text.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, NamedTuple

from ..errors import KsymgraphError
from ..graph.store import GraphStore, Rows

__all__ = ["parse_param", "QueryParam", "NamedQuery", "QueryError", "list_queries", "get_query", "run_named", "check_params"]

#: Parameter types and the Python types their values must have.
PARAM_TYPES = {"string": (str,), "kernel": (str,), "int": (int,), "bool": (bool,), "list": (list,)}
_PARAM_LINE = re.compile(r"^\$(?P<name>\w+)\s*\((?P<type>\w+)\)\s*(?:=\s*(?P<default>[^:]+?)\s*)?:\s*(?P<desc>.*)$")
_ONLY = object()


class QueryError(KsymgraphError, ValueError):
    """A question cannot be asked as put: a named query that does not exist, wrong parameters, a
    module or kernel the store lacks. The message says what to give instead."""


class QueryParam(NamedTuple):
    """One declared parameter of a named query."""

    name: str
    """Name, as ``$name`` in the text."""
    type: str
    """One of :data:`PARAM_TYPES`."""
    description: str
    """What to give, from the header."""
    required: bool
    """False when the header gives a default."""
    default: Any = None
    """The default value (for a ``kernel`` parameter with ``= only``: the store's only kernel)."""

    def describe(self) -> str:
        """``$name (type)``, with its default when it has one, for listings."""
        if self.required:
            return f"${self.name} ({self.type})"
        default = "the only kernel" if self.default is _ONLY else json.dumps(self.default)
        return f"${self.name} ({self.type}, default {default})"


class NamedQuery(NamedTuple):
    """A query of the library."""

    name: str
    """Its name: the file name without ``.cypher``."""
    description: str
    """What it answers, from the header."""
    params: tuple[QueryParam, ...]
    """Its parameters, in header order."""
    text_by_dialect: dict[str, str]
    """Query text per dialect; key ``""`` is the portable text every other dialect uses."""

    def text(self, dialect: str) -> str:
        """The text to run on a store of ``dialect``."""
        return self.text_by_dialect.get(dialect, self.text_by_dialect[""])


def _parse_header(text: str, where: str) -> tuple[str, list[QueryParam]]:
    desc: list[str] = []
    params: list[QueryParam] = []
    in_description = True
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        body = line[2:].strip()
        if not body.startswith("$"):
            in_description = in_description and bool(body)
            if in_description:
                desc.append(body)
            continue
        m = _PARAM_LINE.match(body)
        if not m or m["type"] not in PARAM_TYPES:
            raise QueryError(f"{where}: bad parameter line {line!r}: write `// $name (TYPE) [= DEFAULT]: description` "
                             f"with TYPE one of {', '.join(PARAM_TYPES)}")
        default, required = None, m["default"] is None
        if not required:
            if m["type"] == "kernel" and m["default"] == "only":
                default = _ONLY
            else:
                default = json.loads(m["default"])
        params.append(QueryParam(m["name"], m["type"], m["desc"], required, default))
    return " ".join(d for d in desc if d), params


@lru_cache(maxsize=None)
def _library() -> dict[str, NamedQuery]:
    files = {f.name: f.read_text() for f in resources.files("ksymgraph.queries").joinpath("cypher").iterdir()
             if f.name.endswith(".cypher")}
    out: dict[str, NamedQuery] = {}
    for fname in sorted(files):
        parts = fname[: -len(".cypher")].split(".")
        if len(parts) != 1:
            continue
        name = parts[0]
        desc, params = _parse_header(files[fname], fname)
        texts = {"": files[fname]}
        for other in sorted(files):
            oparts = other[: -len(".cypher")].split(".")
            if len(oparts) == 2 and oparts[0] == name:
                texts[oparts[1]] = files[other]
        out[name] = NamedQuery(name, desc, tuple(params), texts)
    orphans = {f.split(".")[0] for f in files} - set(out)
    if orphans:
        raise QueryError(f"dialect variants without a portable query: {', '.join(sorted(orphans))}")
    return out


def list_queries() -> list[NamedQuery]:
    """Every named query, sorted by name."""
    return list(_library().values())


def get_query(name: str) -> NamedQuery:
    """The named query ``name``; :class:`QueryError` listing the available names if there is none."""
    lib = _library()
    if name not in lib:
        raise QueryError(f"no named query {name!r}; available: {', '.join(lib)} (ksymgraph query --list)")
    return lib[name]


def check_params(query: NamedQuery, params: dict[str, Any], store: GraphStore | None = None) -> dict[str, Any]:
    """``params`` completed with defaults and checked against ``query``'s declaration.

    Unknown or missing parameters and values of the wrong type raise :class:`QueryError`;
    ``kernel`` parameters are checked against ``store`` when one is given (a StoreError names the
    kernels it holds).
    """
    declared = {p.name: p for p in query.params}
    unknown = sorted(set(params) - set(declared))
    usage = " ".join(p.describe() for p in query.params)
    if unknown:
        raise QueryError(f"query {query.name} takes no parameter {', '.join(unknown)}; it takes: {usage}")
    out: dict[str, Any] = {}
    for p in query.params:
        if p.name in params:
            value = params[p.name]
        elif p.required:
            raise QueryError(f"query {query.name} needs --param {p.name}=VALUE ({p.description}); it takes: {usage}")
        elif p.default is _ONLY:
            value = store.resolve_kernel(None) if store is not None else None
        else:
            value = p.default
        if value is not None and (not isinstance(value, PARAM_TYPES[p.type])
                                  or (p.type == "int" and isinstance(value, bool))):
            raise QueryError(f"query {query.name}: ${p.name} must be {p.type}, got {json.dumps(value)}")
        if p.type == "kernel" and store is not None and p.name in params:
            store.resolve_kernel(value)
        out[p.name] = value
    return out


def run_named(store: GraphStore, name: str, params: dict[str, Any] | None = None) -> Rows:
    """Run the named query ``name`` on ``store`` with ``params``, using the variant for ``store.dialect``."""
    query = get_query(name)
    return store.query(query.text(store.dialect), check_params(query, params or {}, store))


def parse_param(item: str, namespace: dict | None = None) -> tuple[str, Any]:
    """``NAME=VALUE`` → (name, value), VALUE parsed as JSON when it can be (``3``, ``["a","b"]``),
    else taken as text: how ``--param`` (the CLI) and ``-p`` (``%%cypher``) read a query parameter.

    With ``namespace`` (a notebook's variables), a bare ``NAME`` takes the value of the variable
    ``NAME`` as it is: ``-p kernel`` passes the variable ``kernel``.
    """
    name, sep, text = item.partition("=")
    name = name.strip()
    if not name.isidentifier():
        raise QueryError(f"--param takes NAME=VALUE{' or NAME (a notebook variable)' if namespace is not None else ''}, "
                         f"got {item!r}")
    if not sep:
        if namespace is None:
            raise QueryError(f"--param takes NAME=VALUE, got {item!r}")
        if name not in namespace:
            raise QueryError(f"--param {name}: no variable {name!r} in the notebook; give NAME=VALUE")
        return name, namespace[name]
    try:
        return name, json.loads(text)
    except ValueError:
        return name, text
