"""The pipeline reads one way, and no two modules import each other, as the package docstrings say.

Every ``import`` of every module of the package (at the top or inside a function) is read with
:mod:`ast`, relative ones resolved against the package mapping of ``pyproject.toml``, and held
against the layers, top to bottom: a module may import its own layer and the layers below it,
never one above. The module graph must have no cycle. (import-linter's layers contract finds the
modules of a package by walking its folder, and so misses the folders ``pyproject.toml`` maps onto
subpackages; this test reads the mapping instead.)
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent

#: Top to bottom. A module belongs to the first entry its dotted name starts with.
LAYERS = [
    "ksymgraph.__main__",
    "ksymgraph.cli",
    "ksymgraph.arguments",
    "ksymgraph.explorer_server",
    "ksymgraph.explorer",
    "ksymgraph.series",
    "ksymgraph.notebook",
    "ksymgraph.queries",
    "ksymgraph.graph",
    "ksymgraph.loaders",
    "ksymgraph.errors",
    "ksymgraph.notebooks",
    "ksymgraph",
]


def package_modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of every package pyproject.toml maps."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = {}
    for pkg, folder in conf["package-dir"].items():
        for f in sorted((ROOT / folder).glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            out[name] = f
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (a name imported from a package counts as its module
    when it is one)."""
    is_pkg = path.stem == "__init__"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def layer(module: str) -> int:
    return next(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def import_graph() -> nx.DiGraph:
    mods = package_modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        for target in imports_of(name, path, set(mods)):
            g.add_edge(name, target)
    return g


def test_every_package_is_found():
    g = import_graph()
    assert {"ksymgraph.cli", "ksymgraph.graph.store", "ksymgraph.loaders.elf", "ksymgraph.queries.whatif"} <= set(g)
    assert g.number_of_edges() > 80  # the resolver reads relative imports across the mapped folders
    assert g.has_edge("ksymgraph.graph.build", "ksymgraph.loaders.records")


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{a} -> {b}" for a, b in import_graph().edges
                    if b != "ksymgraph" and layer(b) < layer(a))
    assert upward == []


def test_no_two_modules_import_each_other():
    g = import_graph()
    g.remove_nodes_from([n for n in list(g) if n in ("ksymgraph", "ksymgraph.graph", "ksymgraph.loaders",
                                                   "ksymgraph.queries")])
    assert [sorted(c) for c in nx.simple_cycles(g)] == []


def test_the_readme_layout_names_every_module():
    """The README's Layout tables list every module of the four packages, and nothing that is gone:
    one obvious place for each thing, findable without reading the code."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("\n## Layout\n"):]
    layout = layout[: layout.index("\n## ", 1)]
    listed: dict[str, set[str]] = {}
    folder = None
    for line in layout.splitlines():
        if m := re.match(r"\| `(\w+)/` \(`[\w.]+`\) \|", line):
            folder = m.group(1)
            listed[folder] = set()
        elif folder and (m := re.match(r"\| `(\w+\.py)` \|", line)):
            listed[folder].add(m.group(1))
    for folder in ("loaders", "graph", "queries", "ksymgraph"):
        present = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        assert listed.get(folder) == present, (
            f"README Layout, {folder}/: missing {sorted(present - listed.get(folder, set()))}, "
            f"gone {sorted(listed.get(folder, set()) - present)}")
