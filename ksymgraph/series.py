"""Notebook helpers for a series of kernels: exports per kernel and per step, what a set of
out-of-tree modules still needs kernel by kernel, and a widget to follow one symbol.

Notebook ``04-export-history.ipynb`` calls only what is here (and :mod:`ksymgraph.notebook`), so
everything it shows is unit-tested. The kernels are the store's, of one flavour, in Debian's version
order (:func:`ksymgraph.queries.history.ordered_kernels`).
"""

from __future__ import annotations

from typing import Iterable

from .errors import KsymgraphError
from .graph.store import GraphStore
from .loaders.records import ModuleData
from .notebook import kernel_projection
from .queries import usecases
from .queries.diff import rebuilt_against
from .queries.history import ordered_kernels
from .queries.report import render_history
from .queries.whatif import failing_modules

__all__ = ["series_kernels", "export_steps", "plot_export_steps", "still_loads", "history_widget"]


def series_kernels(store: GraphStore, flavour: str | None = "") -> list[str]:
    """The store's kernels of one flavour (``""``: the most common), in version order."""
    return [p.kernel for p in ordered_kernels(store, flavour)]


def export_steps(store: GraphStore, flavour: str | None = ""):
    """One row per kernel of the series: its exports, and what changed from the kernel before it
    (removed, added, turned GPL-only, lost GPL-only, namespace changed) — a pandas DataFrame."""
    import pandas as pd

    kernels = series_kernels(store, flavour)
    rows = []
    for i, k in enumerate(kernels):
        n = store.query("MATCH (m:Module)-[:EXPORTS]->(s:Symbol) WHERE m.kernel = $k RETURN count(s)",
                        {"k": k}).rows[0][0]
        row = {"kernel": k, "exports": n, "removed": 0, "added": 0, "gpl_only": 0, "not_gpl_only": 0, "namespace": 0}
        if i:
            s = usecases.diff(store, kernels[i - 1], k).summary
            row.update({key: s[key] for key in ("removed", "added", "gpl_only", "not_gpl_only", "namespace")})
        rows.append(row)
    return pd.DataFrame(rows).set_index("kernel")


def plot_export_steps(steps, ax=None):
    """Exports per kernel (line, left axis) and removed / added / turned GPL-only per step (bars,
    right axis); returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5))
    else:
        fig = ax.figure
    x = range(len(steps))
    ax.plot(list(x), steps["exports"], marker="o", color="tab:blue", label="exports")
    ax.set_ylabel("exports")
    ax.set_xticks(list(x), list(steps.index), rotation=60, ha="right", fontsize=7)
    right = ax.twinx()
    width = 0.27
    for j, (col, color) in enumerate((("removed", "tab:red"), ("added", "tab:green"), ("gpl_only", "tab:orange"))):
        right.bar([i + (j - 1) * width for i in x], steps[col], width=width, color=color, alpha=0.6, label=col)
    right.set_ylabel("changed from the kernel before")
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def still_loads(store: GraphStore, modules: Iterable[ModuleData], kernels: Iterable[str] | None = None):
    """A symbol × kernel grid for a set of out-of-tree modules (LTTng, say): True where nothing
    about that imported symbol stops them loading, rebuilt against that kernel's headers; False
    where some module of the set would be refused for it (unknown, GPL-only, namespace, ...)."""
    import pandas as pd

    modules = list(modules)
    kernels = list(kernels) if kernels is not None else series_kernels(store)
    names = {m.info.name for m in modules}
    symbols = sorted({s for m in modules for s, weak in zip(m.imports.symbols, m.imports.weak) if not weak}
                     - {e.symbol for m in modules for e in m.exports})
    grid = pd.DataFrame(True, index=symbols, columns=kernels)
    for k in kernels:
        proj = kernel_projection(store, k)
        failing = failing_modules(proj.with_modules([rebuilt_against(m, proj) for m in modules]))
        for mod, reasons in failing.items():
            if mod in names:
                for r in reasons:
                    if r.rule != "dependency" and r.symbol in grid.index:
                        grid.loc[r.symbol, k] = False
    return grid


def history_widget(store: GraphStore, symbol: str = "", flavour: str | None = ""):
    """A text box: type a symbol (or several, comma-separated) and press Enter to see its history
    over the store's kernels (:func:`ksymgraph.queries.usecases.history`), as the HTML report."""
    import ipywidgets as widgets

    box = widgets.Text(value=symbol, placeholder="symbol, e.g. find_module", description="symbol",
                       continuous_update=False)
    out = widgets.HTML()

    def show(_change=None) -> None:
        names = [s.strip() for s in box.value.replace(",", " ").split() if s.strip()]
        if not names:
            out.value = ""
            return
        try:
            out.value = render_history(usecases.history(store, names, flavour=flavour), "html")
        except KsymgraphError as e:  # shown in the widget: the notebook goes on
            out.value = f"<p><b>{type(e).__name__}</b>: {e}</p>"

    box.observe(show, names="value")
    show()
    return widgets.VBox([box, out])
