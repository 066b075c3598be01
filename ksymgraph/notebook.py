"""Notebook support: the logic behind ksymgraph's notebooks, as plain functions, and the ``%%cypher`` magic.

The notebooks in ``notebooks/`` only call what is here, so everything they show is unit-tested:

* the active store (:func:`use_store`, :func:`active_store`) and a per-kernel cache of
  :class:`~ksymgraph.graph.projection.KernelProjection` (:func:`kernel_projection`), which makes a
  what-if on the full Debian kernel answer in milliseconds after the first read;
* :func:`symbol_completions` over a kernel's exports (and :func:`module_completions`);
* :func:`run_whatif` — the what-if result and a table with one row per broken module and reason;
* :func:`broken_graph` (networkx), :func:`to_cytoscape` (ipycytoscape's JSON), :func:`draw_graph`
  (matplotlib), :func:`by_subsystem` and :func:`plot_by_subsystem`;
* :func:`save_report` (Markdown, JSON or HTML by the file's suffix);
* :func:`oot_module_data` (module files read as the loaders read them) and :func:`lookups_table`;
* the ``%%cypher`` cell magic (``%load_ext ksymgraph.notebook``)::

      %%cypher --db /tmp/k.lbdb -p sym=kfree --draw
      MATCH (m:Module)-[i:IMPORTS]->(s:Symbol) WHERE s.name = $sym RETURN m, i, s LIMIT 20

  ``--param NAME=VALUE`` / ``-p NAME=VALUE`` (VALUE parsed as JSON when it can be: numbers, lists;
  a bare ``-p NAME`` passes the notebook variable ``NAME``),
  ``--db PATH`` or ``--neo4j URI`` to pick the store (default: the active store), ``--draw`` to draw
  a result with node and relationship columns. The value is a pandas DataFrame. User values are
  only ever passed as parameters, never formatted into the query.

The interactive explorer, built on these, lives in :mod:`ksymgraph.explorer`
(:func:`~ksymgraph.explorer.whatif_explorer`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterable

import networkx as nx

from .graph.connect import open_store
from .graph.projection import KernelProjection
from .graph.store import GraphStore, Rows
from .queries import usecases
from .queries.library import parse_param
from .queries.whatif import CHANGE_KINDS, Change, ChangeError, WhatIfResult

__all__ = [
    "CHANGE_KINDS",
    "use_store",
    "active_store",
    "store_for",
    "kernel_projection",
    "forget_projections",
    "symbol_completions",
    "module_completions",
    "make_changes",
    "run_whatif",
    "whatif_table",
    "broken_graph",
    "to_cytoscape",
    "draw_graph",
    "subsystem_of",
    "by_subsystem",
    "plot_by_subsystem",
    "save_report",
    "oot_module_data",
    "lookups_table",
    "rows_frame",
    "rows_graph",
    "cypher",
    "load_ipython_extension",
]

#: Columns of the table :func:`run_whatif` returns, in order.
WHATIF_COLUMNS = ("module", "rule", "symbol", "break", "in_tree", "call_sites")


# The active store -------------------------------------------------------------------------------

_active: GraphStore | None = None
_opened: dict[tuple[str, str], GraphStore] = {}


def use_store(store: GraphStore | str | os.PathLike | None = None, neo4j: str | None = None,
              read_only: bool = False) -> GraphStore:
    """Make ``store`` the active store (a store, an embedded database path, or Neo4j at ``neo4j``).

    With neither, the default embedded store (``$KSYMGRAPH_DB`` or
    ``~/.local/share/ksymgraph/graph.lbdb``). Returns the store.
    """
    global _active
    _active = store if isinstance(store, GraphStore) else store_for(store, neo4j, read_only)
    return _active


def active_store() -> GraphStore:
    """The store set by :func:`use_store`; the default embedded store (read-only) if none was set."""
    global _active
    if _active is None:
        _active = store_for(None, None, read_only=True)
    return _active


def store_for(db: str | os.PathLike | None = None, neo4j: str | None = None, read_only: bool = False) -> GraphStore:
    """A store for a path or URI, opened once per process and reused (LadybugDB allows one handle per file)."""
    if _active is not None:
        want = neo4j or (str(db) if db else None)
        if want is None or want == _active.describe():
            return _active
    key = ("neo4j", neo4j) if neo4j else ("db", str(Path(db).resolve()) if db else "")
    store = _opened.get(key)
    if store is None:
        store = open_store(db, neo4j, read_only=read_only)
        _opened[key] = store
    return store


def kernel_projection(store: GraphStore, kernel: str | None = None) -> KernelProjection:
    """The projection of ``kernel`` (default: the store's only kernel), read once and cached
    (:func:`ksymgraph.queries.usecases.kernel_view`)."""
    return usecases.kernel_view(store, kernel).projection


def forget_projections() -> None:
    """Drop every cached projection (after loading a kernel again)."""
    usecases.forget()


def _complete(names: list[str], prefix: str, limit: int) -> list[str]:
    i = bisect_left(names, prefix)
    out = []
    while i < len(names) and len(out) < limit and names[i].startswith(prefix):
        out.append(names[i])
        i += 1
    if len(out) < limit and prefix:
        seen = set(out)
        for n in names:
            if prefix in n and n not in seen:
                out.append(n)
                if len(out) >= limit:
                    break
    return out


def symbol_completions(store: GraphStore, kernel: str | None, prefix: str, limit: int = 20) -> list[str]:
    """Exported symbols of ``kernel`` starting with ``prefix`` (sorted), then those containing it."""
    return _complete(usecases.kernel_view(store, kernel).exports, prefix, limit)


def module_completions(store: GraphStore, kernel: str | None, prefix: str, limit: int = 20) -> list[str]:
    """Module names of ``kernel`` starting with ``prefix``, then those containing it."""
    return _complete(usecases.kernel_view(store, kernel).modules, prefix, limit)


# What-if ----------------------------------------------------------------------------------------


def make_changes(kind: str, targets: str | Iterable[str], namespace: str = "") -> list[Change]:
    """Changes of one ``kind`` (``unexport``, ``gpl-only``, ``namespace``, ``remove-module``) to ``targets``.

    ``targets`` is a name, a list of names, or names separated by commas or blanks.
    """
    if kind not in CHANGE_KINDS:
        raise ChangeError(f"unknown change kind {kind!r}; expected one of {', '.join(CHANGE_KINDS)}")
    if isinstance(targets, str):
        targets = targets.replace(",", " ").split()
    names = [t.strip() for t in targets if t and t.strip()]
    if not names:
        raise ChangeError("name at least one symbol (or module, for remove-module)")
    if kind == "namespace" and not namespace.strip():
        raise ChangeError("a namespace change needs the namespace")
    return [Change(kind, n, namespace.strip() if kind == "namespace" else "") for n in names]


def whatif_table(result: WhatIfResult):
    """One row per broken module and reason: module, rule, symbol, break (``direct`` / ``via X``),
    in_tree, call_sites (``function (file:line)``, ``; ``-separated: the module's own calls to the
    symbol, for its direct reasons; empty without source)."""
    import pandas as pd

    sites: dict[tuple[str, str], list[str]] = {}
    for mod, calls in result.call_sites.items():
        for c in calls:
            sites.setdefault((mod, c.symbol), []).append(f"{c.function} ({c.where})")
    rows = []
    for b in result.broken:
        for r in b.reasons:
            here = sites.get((b.module, r.symbol), []) if r.rule != "dependency" else []
            rows.append((b.module, r.rule, r.symbol, f"via {r.via_module}" if r.via_module else "direct",
                         b.in_tree, "; ".join(here)))
    return pd.DataFrame(rows, columns=list(WHATIF_COLUMNS))


def run_whatif(store: GraphStore, kernel: str | None, kind: str, symbols: str | Iterable[str],
               namespace: str = "", hops: int = 2) -> tuple[WhatIfResult, Any]:
    """What if ``symbols`` change by ``kind`` in ``kernel``? The result
    (:func:`ksymgraph.queries.usecases.whatif`, as ``ksymgraph whatif`` gives it) and its
    :func:`whatif_table`. The kernel is read from the store once and cached."""
    result = usecases.whatif(store, kernel, make_changes(kind, symbols, namespace), hops)
    return result, whatif_table(result)


def broken_graph(result: WhatIfResult, proj: KernelProjection | None = None) -> nx.DiGraph:
    """The broken modules as a graph: edge A → B when A fails because it needs B's exports.

    Node attributes: ``direct``, ``in_tree``, ``rules`` (sorted), ``path``. Edge attribute:
    ``symbols``. Edges come from the ``dependency`` reasons; with ``proj``, also every other
    import of a broken module from another broken module (a module can inherit from several).
    The graph's ``changes`` attribute lists the changes as text.
    """
    g = nx.DiGraph(changes=[f"{c.kind} {c.target}" + (f" -> {c.namespace}" if c.namespace else "")
                            for c in result.changes], kernel=result.kernel)
    broken = {b.module for b in result.broken}
    for b in result.broken:
        g.add_node(b.module, direct=b.direct, in_tree=b.in_tree, path=b.path,
                   rules=sorted({r.rule for r in b.reasons}))

    def edge(a: str, b: str, sym: str) -> None:
        if g.has_edge(a, b):
            if sym not in g[a][b]["symbols"]:
                g[a][b]["symbols"].append(sym)
        else:
            g.add_edge(a, b, symbols=[sym])

    for b in result.broken:
        for r in b.reasons:
            if r.rule == "dependency" and r.via_module in broken:
                edge(b.module, r.via_module, r.symbol)
    if proj is not None:
        for mod in sorted(broken):
            for imp in proj.imports.get(mod, ()):
                for e in proj.exports.get(imp.symbol, ()):
                    if e.module in broken and e.module != mod:
                        edge(mod, e.module, imp.symbol)
    return g


def to_cytoscape(graph: nx.DiGraph) -> dict:
    """``{"nodes": [...], "edges": [...]}`` in Cytoscape.js element form (what ipycytoscape's
    ``graph.add_graph_from_json`` takes); nodes carry class ``direct``/``inherited`` and
    ``in-tree``/``out-of-tree``."""
    nodes = []
    for n, d in graph.nodes(data=True):
        data = {"id": str(n), "label": str(n)}
        data.update({k: (", ".join(v) if isinstance(v, list) else v) for k, v in d.items()})
        classes = ["direct" if d.get("direct") else "inherited",
                   "in-tree" if d.get("in_tree", True) else "out-of-tree"]
        nodes.append({"data": data, "classes": " ".join(classes)})
    edges = [{"data": {"id": f"{a}->{b}", "source": str(a), "target": str(b),
                       "label": ", ".join(d.get("symbols", []))}}
             for a, b, d in graph.edges(data=True)]
    return {"nodes": nodes, "edges": edges}


def draw_graph(graph: nx.Graph, ax=None, title: str | None = None, max_labels: int = 60):
    """Draw a graph with matplotlib (direct breaks red, inherited orange, others grey); returns the figure."""
    import matplotlib

    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 6))
    else:
        fig = ax.figure
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if graph.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
        return fig
    pos = nx.spring_layout(graph, seed=1, k=None if graph.number_of_nodes() < 30 else 0.6)
    colors = []
    for _n, d in graph.nodes(data=True):
        colors.append("tab:red" if d.get("direct") else "tab:orange" if "direct" in d else "tab:grey")
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colors, node_size=200 if len(graph) < 100 else 40)
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, alpha=0.5)
    if graph.number_of_nodes() <= max_labels:
        labels = {n: d.get("label", n) for n, d in graph.nodes(data=True)}
        nx.draw_networkx_labels(graph, pos, labels=labels, ax=ax, font_size=8)
    matplotlib.pyplot.close(fig)  # the caller displays it (or not): no duplicate inline output
    return fig


def subsystem_of(path: str, in_tree: bool = True) -> str:
    """``drivers/usb`` for ``.../kernel/drivers/usb/serial/x.ko``: the first two directories under
    ``kernel/``; ``kernel`` for a module right under it; ``out-of-tree`` for anything else."""
    if not in_tree or "/kernel/" not in f"/{path}":
        return "out-of-tree"
    rest = f"/{path}".rsplit("/kernel/", 1)[1]
    dirs = rest.split("/")[:-1]
    return "/".join(dirs[:2]) if dirs else "kernel"


def by_subsystem(result: WhatIfResult):
    """Broken modules per subsystem (see :func:`subsystem_of`): subsystem, broken, direct, inherited;
    most broken first."""
    import pandas as pd

    counts: dict[str, list[int]] = {}
    for b in result.broken:
        c = counts.setdefault(subsystem_of(b.path, b.in_tree), [0, 0, 0])
        c[0] += 1
        c[1 if b.direct else 2] += 1
    rows = sorted(((s, *c) for s, c in counts.items()), key=lambda r: (-r[1], r[0]))
    return pd.DataFrame(rows, columns=["subsystem", "broken", "direct", "inherited"])


def plot_by_subsystem(table, ax=None, top: int = 20):
    """A stacked bar chart of :func:`by_subsystem` (direct and inherited); returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 0.35 * max(3, min(top, len(table))) + 1))
    else:
        fig = ax.figure
    t = table.head(top).iloc[::-1]
    ax.barh(t["subsystem"], t["direct"], color="tab:red", label="direct")
    ax.barh(t["subsystem"], t["inherited"], left=t["direct"], color="tab:orange", label="through a dependency")
    ax.set_xlabel("modules that fail to load")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(t):
        ax.legend(loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def save_report(result: WhatIfResult, path: str | os.PathLike) -> Path:
    """Write the what-if report to ``path`` as Markdown, JSON or HTML, chosen by its suffix."""
    from .queries.report import render_whatif

    path = Path(path)
    fmt = {".md": "md", ".markdown": "md", ".json": "json", ".html": "html", ".htm": "html"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the suffix picks the format; use .md, .json or .html")
    text = render_whatif(result, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


# Out-of-tree modules and lookups ----------------------------------------------------------------


def oot_module_data(directory: str | os.PathLike) -> list:
    """The module files below ``directory`` read as the loaders read them (ModuleData, by name)."""
    from .loaders.modules import find_module_files, for_each_module
    from .loaders.records import Skipped

    files = find_module_files(Path(directory))
    data = [m for m in for_each_module(files, 1) if not isinstance(m, Skipped)]
    return sorted(data, key=lambda m: m.info.name)


def lookups_table(store: GraphStore, kernel: str, modules: Iterable[str] | None = None):
    """Symbols that modules reach by name at run time (LOOKS_UP: module, symbol, how, file, line),
    with whether ``kernel`` exports each. Empty until a source graph with lookups is loaded."""
    q = ("MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol) WHERE m.kernel = $kernel "
         + ("AND m.name IN $modules " if modules is not None else "")
         + "RETURN m.name AS module, s.name AS symbol, l.how AS how, l.file AS file, l.line AS line, "
           "EXISTS { MATCH (s)<-[:EXPORTS]-(:Module) } AS exported ORDER BY module, symbol, file, line")
    params: dict[str, Any] = {"kernel": kernel}
    if modules is not None:
        params["modules"] = sorted(modules)
    return rows_frame(store.query(q, params))


# Cypher results --------------------------------------------------------------------------------


def rows_frame(rows: Rows):
    """A query result as a pandas DataFrame (columns in RETURN order)."""
    import pandas as pd

    return pd.DataFrame([list(r) for r in rows.rows], columns=list(rows.columns))


def _is_node(v: Any) -> bool:
    return isinstance(v, dict) and "id" in v and "_SRC" not in v


def _is_rel(v: Any) -> bool:
    return isinstance(v, dict) and ("_SRC" in v or ("id" not in v and "kernel" in v))


def rows_graph(rows: Rows) -> nx.MultiDiGraph:
    """The nodes and relationships in a result's cells as a graph (None if it has neither).

    A node is a cell holding a node (a map with ``id``); a relationship cell joins the nodes left and
    right of it in the row, oriented by its endpoints when the engine returns them (LadybugDB's
    ``_SRC``/``_DST``). Lists of nodes (paths) become chains.
    """
    g = nx.MultiDiGraph()
    internal: dict[str, str] = {}

    def add_node(v: dict) -> str:
        nid = str(v["id"])
        label = v.get("name") or v.get("path") or nid
        g.add_node(nid, label=str(label), kind=v.get("_LABEL", ""))
        if "_ID" in v:
            internal[json.dumps(v["_ID"], sort_keys=True)] = nid
        return nid

    for row in rows.rows:
        cells: list[tuple[str, Any]] = []
        for v in row:
            if isinstance(v, list) and v and all(_is_node(x) for x in v):
                ids = [add_node(x) for x in v]
                for a, b in zip(ids, ids[1:]):
                    g.add_edge(a, b, label="")
                cells.append(("node", ids[-1]))
            elif _is_node(v):
                cells.append(("node", add_node(v)))
            elif _is_rel(v):
                cells.append(("rel", v))
        for i, (kind, v) in enumerate(cells):
            if kind != "rel":
                continue
            left = next((c[1] for c in reversed(cells[:i]) if c[0] == "node"), None)
            right = next((c[1] for c in cells[i + 1:] if c[0] == "node"), None)
            src = internal.get(json.dumps(v.get("_SRC"), sort_keys=True)) if "_SRC" in v else None
            dst = internal.get(json.dumps(v.get("_DST"), sort_keys=True)) if "_DST" in v else None
            a, b = src or left, dst or right
            if a is not None and b is not None:
                g.add_edge(a, b, label=str(v.get("_LABEL", "")))
    return g


def _magic_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%cypher", add_help=False,
                                description="Run the cell as a Cypher query on a ksymgraph store.")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", metavar="PATH")
    g.add_argument("--neo4j", metavar="URI")
    p.add_argument("--draw", action="store_true")
    p.add_argument("--allow-file-access", action="store_true",
                   help="let the query read or write files (COPY, LOAD FROM, ...); refused otherwise")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="show at most N rows (the query itself is not changed)")
    return p


def cypher(line: str, cell: str):
    """The ``%%cypher`` cell magic: run ``cell`` with the options on ``line``; returns a DataFrame."""
    try:
        args = _magic_parser().parse_args(shlex.split(line))
    except SystemExit:  # argparse has printed the usage
        raise ValueError(f"%%cypher: bad options {line!r}; usage: {_magic_parser().format_usage().strip()}") from None
    namespace = None
    if any("=" not in p for p in args.param):
        from IPython import get_ipython

        shell = get_ipython()
        namespace = shell.user_ns if shell is not None else {}
    params = dict(parse_param(p, namespace) for p in args.param)
    store = store_for(args.db, args.neo4j, read_only=True) if (args.db or args.neo4j) else active_store()
    rows = store.raw_query(cell, params, allow_file_access=args.allow_file_access)  # user text: no file access
    if args.draw:
        g = rows_graph(rows)
        if g.number_of_nodes():
            from IPython.display import display

            display(draw_graph(g, title=f"{g.number_of_nodes()} nodes, {g.number_of_edges()} relationships"))
        else:
            print("--draw: the result has no node or relationship columns (RETURN the nodes, e.g. RETURN m, e, s)")
    frame = rows_frame(rows)
    return frame.head(args.limit) if args.limit is not None else frame


def load_ipython_extension(ipython) -> None:
    """``%load_ext ksymgraph.notebook``: registers ``%%cypher``."""
    ipython.register_magic_function(cypher, magic_kind="cell", magic_name="cypher")
