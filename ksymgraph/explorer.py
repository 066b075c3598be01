"""The what-if explorer: an ipywidgets app that asks "what breaks if this export changes?".

:class:`WhatIfExplorer` (a ``VBox``; :func:`ksymgraph.notebook.whatif_explorer` makes one) offers a
kernel picker, a symbol box that completes over the kernel's exports as you type (module names for
"remove module"), the change (unexport, GPL-only, namespace with its name, remove module) and a
Run button. A run shows a summary, the broken modules as a sortable table (one row per module and
reason), the broken set as an ipycytoscape graph (an edge A → B: A needs B's exports), a bar chart
of broken modules per subsystem, and buttons that save the report as Markdown, JSON or HTML.

The table is an HTML table whose headers sort it on click (a few lines of inline script in each
header's ``onclick``): its rows are in the page, so they can be read, copied, searched with the
browser and tested. ``table="datagrid"`` uses an ``ipydatagrid`` DataGrid instead (sortable and
filterable, drawn on a canvas). Every widget's JavaScript comes from the installed packages
(ipywidgets, ipycytoscape, ipydatagrid): nothing is fetched from the internet at run time.

All logic is in :mod:`ksymgraph.notebook`; this module only wires widgets to it. The kernel's
projection is cached there, so a Run on the full Debian kernel answers in milliseconds.
"""

from __future__ import annotations

import html
import io
import re
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .errors import KsymgraphError
from .graph.store import GraphStore, StoreError
from .notebook import (
    active_store,
    broken_graph,
    by_subsystem,
    kernel_projection,
    module_completions,
    plot_by_subsystem,
    run_whatif,
    save_report,
    symbol_completions,
    to_cytoscape,
)
from .queries.whatif import ChangeError, WhatIfResult

__all__ = ["whatif_explorer", "WhatIfExplorer", "default_reports_dir", "sortable_table_html", "offline_voila_template", "ExplorerError",
           "CHANGE_CHOICES",
           "MAX_DRAWN",
           "CYTOSCAPE_STYLE"]


class ExplorerError(KsymgraphError):
    """The explorer cannot be served: Voila or its templates are missing, or an option is wrong."""


#: (label, kind) pairs of the change picker.
CHANGE_CHOICES = (("unexport", "unexport"), ("GPL-only", "gpl-only"), ("namespace", "namespace"),
                  ("remove module", "remove-module"))

#: At most this many broken modules are drawn (the table always lists all).
MAX_DRAWN = 300

#: Cytoscape.js style of the broken-set drawing.
CYTOSCAPE_STYLE = [
    {"selector": "node", "style": {"label": "data(label)", "font-size": "9px", "width": 14, "height": 14,
                                   "background-color": "#f0a030", "text-valign": "top"}},
    {"selector": "node.direct", "style": {"background-color": "#d03030"}},
    {"selector": "node.out-of-tree", "style": {"shape": "diamond"}},
    {"selector": "edge", "style": {"width": 1, "line-color": "#999", "target-arrow-color": "#999",
                                   "target-arrow-shape": "triangle", "curve-style": "bezier"}},
]

# Sorts the table a header belongs to by that header's column; numbers numerically, the rest as
# text; a second click reverses. Inline so it works wherever the HTML is shown, no global script.
_SORT_JS = (
    "(function(th){var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,"
    "asc=th.getAttribute('data-dir')!=='asc';"
    "Array.prototype.forEach.call(th.parentNode.cells,function(c){c.removeAttribute('data-dir')});"
    "th.setAttribute('data-dir',asc?'asc':'desc');"
    "var rows=Array.prototype.slice.call(b.rows);"
    "rows.sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent,"
    "n=parseFloat(a),m=parseFloat(c),r=(!isNaN(n)&&!isNaN(m))?n-m:a.localeCompare(c);return asc?r:-r});"
    "rows.forEach(function(r){b.appendChild(r)})})(this)"
)


def sortable_table_html(frame, max_rows: int = 5000, table_class: str = "ksymgraph-table") -> str:
    """An HTML table of a DataFrame whose headers sort it when clicked (click again: reverse)."""
    head = "".join(
        f'<th onclick="{html.escape(_SORT_JS)}" style="cursor:pointer" title="sort by {html.escape(str(c))}">'
        f"{html.escape(str(c))} &#x21C5;</th>" for c in frame.columns)
    body = []
    for row in frame.head(max_rows).itertuples(index=False):
        body.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>")
    more = (f"<p>showing {max_rows} of {len(frame)} rows; save the report for all</p>"
            if len(frame) > max_rows else "")
    style = ("<style>.ksymgraph-table{border-collapse:collapse;font-size:12px}"
             ".ksymgraph-table td,.ksymgraph-table th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             ".ksymgraph-table th{background:#eee;user-select:none}</style>")
    return (f'{style}<div style="max-height:420px;overflow:auto"><table class="{table_class}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{more}")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


class WhatIfExplorer(widgets.VBox):
    """The explorer app. Drive it from code too: set ``symbol.value`` and ``kind.value``, call :meth:`run`."""

    def __init__(self, store: GraphStore, kernel: str | None = None, *, table: str = "html",
                 save_dir: str | Path | None = None, symbol: str = "", kind: str = "unexport", namespace: str = "",
                 run: bool = False, draw: bool = True):
        self.store = store
        # Not the notebook's folder: under `ksymgraph explore` that is inside the installed package.
        self.save_dir = Path(save_dir) if save_dir is not None else default_reports_dir()
        self.result: WhatIfResult | None = None
        """The last result."""
        self.frame = None
        """The last table (pandas DataFrame)."""
        self.seconds = 0.0
        """Time of the last run, in seconds."""
        kernels = store.kernels()
        if not kernels:
            raise StoreError(f"{store.describe()} holds no kernel yet: run `ksymgraph load SOURCE` first")
        self.kernel = widgets.Dropdown(options=kernels, value=kernel or kernels[0], description="kernel")
        self.kind = widgets.ToggleButtons(options=list(CHANGE_CHOICES), value=kind, description="change")
        self.symbol = widgets.Combobox(value=symbol, options=[], placeholder="type a symbol: completes over exports",
                                       ensure_option=False, continuous_update=True, description="symbol")
        self.namespace = widgets.Text(value=namespace, placeholder="NAMESPACE", description="namespace",
                                      layout=widgets.Layout(display="flex" if kind == "namespace" else "none"))
        self.run_button = widgets.Button(description="Run", button_style="primary")
        self.status = widgets.HTML()
        self._table_kind = table
        if table == "datagrid":
            import pandas as pd
            from ipydatagrid import DataGrid

            self.table = DataGrid(pd.DataFrame(columns=["module", "rule", "symbol", "break", "in_tree", "call_sites"]),
                                  selection_mode="cell", layout=widgets.Layout(height="400px"))
        elif table == "html":
            self.table = widgets.HTML()
        else:
            raise ValueError(f"table is 'html' or 'datagrid', not {table!r}")
        self.draw = draw
        if draw:
            import ipycytoscape

            self.graph = ipycytoscape.CytoscapeWidget(
                layout=widgets.Layout(height="420px", width="60%", border="1px solid #ddd"))
            self.graph.set_style(CYTOSCAPE_STYLE)
            self.graph.set_layout(name="cose", animate=False)
        else:
            self.graph = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(max_width="40%", object_fit="contain"))
        self.save_buttons = {ext: widgets.Button(description=f"save .{ext}") for ext in ("md", "json", "html")}
        self.saved = widgets.HTML()

        self.symbol.observe(self._complete, names="value")
        self.kind.observe(self._kind_changed, names="value")
        self.kernel.observe(lambda _c: self._complete(None), names="value")
        self.run_button.on_click(lambda _b: self.run())
        for ext, button in self.save_buttons.items():
            button.on_click(lambda _b, ext=ext: self.save(ext))

        super().__init__([
            widgets.HTML("<b>What breaks if this export changes?</b>"),
            self.kernel, self.kind, widgets.HBox([self.symbol, self.namespace, self.run_button]),
            self.status,
            self.table,
            widgets.HBox([self.graph, self.chart]),
            widgets.HBox(list(self.save_buttons.values()) + [self.saved]),
        ])
        self._complete(None)
        if run and symbol:
            self.run()

    # Reactions ----------------------------------------------------------------------------------

    def _complete(self, _change) -> None:
        prefix = self.symbol.value.strip()
        try:
            if self.kind.value == "remove-module":
                opts = module_completions(self.store, self.kernel.value, prefix, 30)
            else:
                opts = symbol_completions(self.store, self.kernel.value, prefix, 30) if prefix else []
        except StoreError as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        self.symbol.options = opts

    def _kind_changed(self, change) -> None:
        self.namespace.layout.display = "flex" if change["new"] == "namespace" else "none"
        self.symbol.placeholder = ("type a module name" if change["new"] == "remove-module"
                                   else "type a symbol: completes over exports")
        self._complete(None)

    # Actions -----------------------------------------------------------------------------------

    def run(self) -> WhatIfResult | None:
        """Run the what-if the widgets describe and show it; returns the result (None on error)."""
        self.saved.value = ""
        t0 = time.perf_counter()
        try:
            result, frame = run_whatif(self.store, self.kernel.value, self.kind.value, self.symbol.value,
                                       self.namespace.value)
        except (ChangeError, StoreError, ValueError) as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return None
        self.seconds = time.perf_counter() - t0
        self.result, self.frame = result, frame
        s = result.summary
        text = (f"<b>{s['broken']}</b> modules fail to load: {s['direct']} directly, "
                f"{s['inherited']} through a failing dependency; {s['in_tree']} in-tree, "
                f"{s['out_of_tree']} out-of-tree (kernel {html.escape(result.kernel)}, {self.seconds * 1000:.0f} ms).")
        if not result.broken:
            text = (f"No module fails to load because of this change (kernel {html.escape(result.kernel)}, "
                    f"{self.seconds * 1000:.0f} ms).")
        for w in result.warnings:
            text += f"<br><span style='color:#b60'>warning: {html.escape(w)}</span>"
        if result.lookups:
            text += f"<br>{len(result.lookups)} run-time lookups stop working (see the saved report)."
        self.status.value = f"<div class='ksymgraph-summary'>{text}</div>"
        self._show_table(frame)
        self._show_graph(result)
        self._show_chart(result)
        return result

    def _show_table(self, frame) -> None:
        if self._table_kind == "datagrid":
            self.table.data = frame
        else:
            self.table.value = sortable_table_html(frame)

    def _show_graph(self, result: WhatIfResult) -> None:
        if not self.draw:
            return
        g = broken_graph(result, kernel_projection(self.store, result.kernel))
        if g.number_of_nodes() > MAX_DRAWN:
            g = g.subgraph(sorted(g.nodes, key=lambda n: (not g.nodes[n]["direct"], n))[:MAX_DRAWN]).copy()
        self.graph.graph.clear()
        self.graph.graph.add_graph_from_json(to_cytoscape(g), directed=True)
        self.graph.set_layout(name="cose", animate=False)

    def _show_chart(self, result: WhatIfResult) -> None:
        table = by_subsystem(result)
        self.chart.value = _png(plot_by_subsystem(table)) if len(table) else b""

    def report_path(self, ext: str) -> Path:
        """Where :meth:`save` writes the report in format ``ext``."""
        assert self.result is not None
        targets = "-".join(c.target for c in self.result.changes)[:80]
        slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"whatif-{self.result.kernel}-{self.result.changes[0].kind}-{targets}")
        return self.save_dir / f"{slug}.{ext}"

    def save(self, ext: str) -> Path | None:
        """Save the last result's report as ``md``, ``json`` or ``html``; returns the path."""
        if self.result is None:
            self.saved.value = "run a what-if first"
            return None
        path = save_report(self.result, self.report_path(ext))
        self.saved.value = f"saved <code>{html.escape(str(path))}</code>"
        return path


def offline_voila_template(root: str | Path) -> Path:
    """Write a Voila template ``ksymgraph-offline`` under ``root`` and return ``root`` (a
    ``JUPYTER_PATH`` entry): Voila's ``lab`` template without the two Font Awesome stylesheets it
    links from a CDN, so the served explorer makes no request beyond the machine; and an error page
    of its own (Voila's links a third) that says what went wrong, e.g. why a page was refused."""
    import shutil

    import voila.paths

    root = Path(root)
    labs = voila.paths.jupyter_path("voila", "templates", "lab")
    lab = next((Path(d) for d in labs if Path(d).is_dir()), None)
    if lab is None:
        raise ExplorerError(f"Voila's lab template is in none of {labs}: is Voila installed in this Python "
                            "(pip install voila), or is its share/jupyter missing from JUPYTER_PATH?")
    dest = root / "voila" / "templates" / "ksymgraph-offline"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(lab, dest)
    page = dest / "index.html.j2"
    page.write_text("".join(ln for ln in page.read_text().splitlines(keepends=True) if "cdn.jsdelivr.net" not in ln))
    for name in ("error.html", "404.html"):
        (dest / name).write_text(_ERROR_PAGE)
    (dest / "conf.json").write_text('{"base_template": "lab"}\n')
    return root


# jupyter_server's JupyterHandler.write_error renders STATUS.html or error.html with status_code,
# status_message and message (autoescaped).
_ERROR_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ status_code }}: {{ status_message }}</title>
<style>body{font-family:sans-serif;margin:4em auto;max-width:46em;color:#222}h1{font-size:1.4em}</style></head>
<body><h1 class="ksymgraph-error">{{ status_code }}: {{ status_message }}</h1>
<p class="ksymgraph-error-detail">{{ message }}</p></body></html>
"""


def whatif_explorer(store: GraphStore | None = None, kernel: str | None = None, **options) -> WhatIfExplorer:
    """The what-if explorer app on ``store`` (default: the notebook's active store); see
    :class:`WhatIfExplorer` for the options."""
    return WhatIfExplorer(store if store is not None else active_store(), kernel, **options)


def default_reports_dir() -> Path:
    """Where the explorer's save buttons write when not told: ``$KSYMGRAPH_REPORTS``, else
    ``~/ksymgraph-reports``."""
    import os

    return Path(os.environ.get("KSYMGRAPH_REPORTS") or Path.home() / "ksymgraph-reports")
