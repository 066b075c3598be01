"""The notebooks execute headless (nbclient) on data the tests provide, and show what they should.

Each notebook has a cell tagged ``parameters``; :func:`with_parameters` replaces it with the test's
values. 02 and 03 run on the hermetic fixture kernel; 01 runs twice: on the fixture kernels
(``prop_d`` standing in for LTTng, ``a_plain`` for ``register_kprobe``) and, marked ``realdata``,
on Debian's 6.1 kernel with LTTng 2.13.9 built out of tree and trixie's 6.12.
The notebooks in the repository must stay small and carry no outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = ("01-unbreak-lttng.ipynb", "02-whatif-explorer.ipynb", "03-cypher.ipynb", "04-export-history.ipynb")


def with_parameters(path: Path, params: dict) -> nbformat.NotebookNode:
    """The notebook at ``path`` with ``params`` (Python literals) set in a cell right after its
    ``parameters`` cell, as papermill does: parameters not given keep their defaults."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    declared = {line.split("=", 1)[0].strip() for line in cells[0].source.splitlines() if "=" in line}
    unknown = set(params) - declared
    assert not unknown, f"{path.name} declares no parameters {sorted(unknown)}"
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()),
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(nb.cells.index(cells[0]) + 1, injected)
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel with working directory ``cwd``; raises on any error."""
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    """All text outputs (streams, text/plain, text/html) of an executed notebook, joined."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append(o.text)
            elif "data" in o:
                out.append(o.data.get("text/plain", ""))
                out.append(o.data.get("text/html", ""))
    return "\n".join(out)


def images_of(nb: nbformat.NotebookNode) -> int:
    """How many PNG images the notebook's outputs hold."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory, fixture_tree, fixture_tree_b, extra_modules) -> Path:
    """A closed embedded store with fixture kernels A (+ out-of-tree prop_d) and B, for other processes."""
    from ksymgraph.graph.load import load_kernel
    from ksymgraph.graph.connect import open_store

    path = tmp_path_factory.mktemp("nbstore") / "graph.lbdb"
    store = open_store(path)
    try:
        load_kernel(store, [str(fixture_tree), str(extra_modules)], workers=1)
        load_kernel(store, [str(fixture_tree_b)], workers=1)
        assert store.kernels() == ["6.1.0-fixture", "6.12.0-fixture"]
    finally:
        store.close()
    return path


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_saved_small_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert (NOTEBOOKS / name).stat().st_size < 40_000


def test_02_explorer_runs_headless(fixture_db, tmp_path):
    nb = execute(with_parameters(NOTEBOOKS / "02-whatif-explorer.ipynb", {
        "db": str(fixture_db), "neo4j": None, "kernel": "6.1.0-fixture", "symbol": "a_plain", "kind": "unexport",
        "run": True, "table": "html", "save_dir": str(tmp_path)}), tmp_path)
    # The app is displayed as a widget (its view, not an error) ...
    views = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1
    # ... and the pre-filled run is in the widget state the notebook saves.
    state = json.dumps(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])
    assert "3</b> modules fail to load: 2 directly, 1 through a failing dependency" in state
    for module in ("user_b", "prop_d", "user_c"):
        assert f"<td>{module}</td>" in state


def test_02_explorer_needs_a_kernel(tmp_path):
    """An empty store is an error that says what to do, not a broken widget."""
    from ksymgraph.graph.connect import open_store

    empty = tmp_path / "empty.lbdb"
    open_store(empty).close()
    nb = with_parameters(NOTEBOOKS / "02-whatif-explorer.ipynb", {"db": str(empty)})
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="holds no kernel yet"):
        execute(nb, tmp_path)


def test_03_cypher_runs_headless(fixture_db, tmp_path):
    nb = execute(with_parameters(NOTEBOOKS / "03-cypher.ipynb", {
        "db": str(fixture_db), "kernel": "6.1.0-fixture", "symbol": "a_plain", "namespace": "A_NS"}), tmp_path)
    outs = {c.id: c.outputs for c in nb.cells if c.cell_type == "code"}
    text = text_of(nb)
    assert "kernels: ['6.1.0-fixture', '6.12.0-fixture'] using 6.1.0-fixture" in text
    # Most imported: _printk and kfree (2 importers each), then a_plain (prop_d, user_b).
    top = next(c for c in nb.cells if c.cell_type == "code" and "count(m) AS importers" in c.source)
    plain = top.outputs[-1].data["text/plain"]
    assert plain.splitlines()[1].split()[1:] == ["_printk", "2"]
    # Who imports a_plain: prop_d (Proprietary, out of tree) and user_b.
    who = next(c for c in nb.cells if c.cell_type == "code" and "m.license AS license" in c.source)
    rows = [ln.split() for ln in who.outputs[-1].data["text/plain"].splitlines()[1:]]
    assert [r[1] for r in rows] == ["prop_d", "user_b"] and rows[0][2] == "Proprietary"
    # Namespace A_NS: core_a exports one symbol into it.
    ns = next(c for c in nb.cells if c.cell_type == "code" and "e.namespace = $namespace" in c.source)
    assert ns.outputs[-1].data["text/plain"].splitlines()[1].split()[1:] == ["core_a", "1"]
    # Both --draw cells drew a figure.
    assert images_of(nb) == 2
    assert len(outs) >= 9
    # The named query library (if present) answered with the same importers.
    if "no named query library" not in text:
        assert "importers" in text and "prop_d" in text.split("## Named")[-1]


def test_01_lttng_story_on_fixture_kernels(fixture_db, extra_modules, tmp_path):
    """The LTTng notebook, pointed at the fixture kernels: prop_d plays LTTng, a_plain register_kprobe."""
    nb = execute(with_parameters(NOTEBOOKS / "01-unbreak-lttng.ipynb", {
        "release": "6.1.0-fixture", "upgrade_to": "6.12.0-fixture", "db": str(fixture_db),
        "oot_modules": str(extra_modules), "symbol": "a_plain", "load": "never"}), tmp_path)
    text = text_of(nb)
    assert "1 out-of-tree modules: prop_d" in text
    assert "2 kernel symbols imported by the 1 modules; 0 of them GPL-only; exporters: core_a (1), vmlinux (1)" in text
    assert "none loaded yet" in text  # no source graph in the fixture store
    assert "direct: prop_d: unknown-symbol a_plain (no source loaded: call sites unknown)" in text
    assert ("unexport a_plain: 3 modules fail to load: 2 directly, 1 through a failing dependency; "
            "2 in-tree, 1 out-of-tree") in text
    assert (tmp_path / "whatif-a_plain.html").is_file()
    # Kernel B (see tests/fixtures/modules/core_a.c) drops a_plain: prop_d would not load there.
    assert "on 6.1.0-fixture: 1 of 1 modules would load" in text
    assert "on 6.12.0-fixture: 0 of 1 modules would load" in text
    assert "0 of 1 out-of-tree modules would load unchanged" in text
    assert images_of(nb) >= 1


@pytest.mark.realdata
def test_01_lttng_story_on_debian(tmp_path, debian_kernel):
    """The real story: Debian 6.1 + LTTng 2.13.9 built out of tree, then trixie's 6.12."""
    from conftest import trixie_release

    release = debian_kernel.release
    nb = execute(with_parameters(NOTEBOOKS / "01-unbreak-lttng.ipynb", {
        "release": release, "upgrade_to": trixie_release(), "db": str(tmp_path / "lttng.lbdb"),
        "symbol": "register_kprobe", "load": "missing", "with_source": True, "kernel_source": True}),
        tmp_path, timeout=1800)
    nbformat.write(nb, tmp_path / "01-executed.ipynb")
    print(f"\nexecuted notebook: {tmp_path / '01-executed.ipynb'}")
    text = text_of(nb)
    assert "lttng-modules-dkms 2.13.9" in text
    assert "lttng_tracer" in text and "lttng_wrapper" in text
    # register_kprobe is imported by LTTng only: every break is out of tree, lttng_kprobes directly.
    line = next(ln for ln in text.splitlines() if ln.startswith("unexport register_kprobe:"))
    assert "; 0 in-tree," in line
    assert "| lttng_kprobes" in text or "lttng_kprobes" in text.split("unexport register_kprobe:")[1]
    assert "out-of-tree modules would load unchanged" in text
    # LTTng loads on the kernel it was built for; its run-time lookups are listed or said to be absent.
    m = re.search(rf"on {re.escape(release)}: (\d+) of (\d+) modules would load", text)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 40
    assert "symbols reached by name" in text or "none loaded yet" in text
    assert "source not loaded" not in text
    # LTTng's source indexed with its binaries: call sites and lookups
    # (its call sites: do_get_kallsyms's own call, and the wrappers that reach it through the
    # kallsyms_lookup_funcptr inline: wrapper_irq_to_desc, ...)
    wrapper = next(ln for ln in text.splitlines() if ln.startswith("direct: lttng_wrapper: unknown-symbol register_kprobe"))
    assert ", called from " in wrapper and "do_get_kallsyms (" in wrapper and "wrapper/kallsyms.c:" in wrapper
    assert "symbols reached by name" in text and "kallsyms_lookup_name" in text
    # the kernel's own source: who in-tree uses what LTTng reaches by name (the reviewers' question)
    assert "symbol looked up by name" in text and "in-tree modular callers" in text
    assert re.search(r"task_prio\s+\d+", text), "task_prio's in-tree modular callers are counted"


def test_04_history_on_fixture_kernels(fixture_db, extra_modules, tmp_path):
    """The history notebook on the fixture series: kernel B drops a_plain, which prop_d imports."""
    nb = execute(with_parameters(NOTEBOOKS / "04-export-history.ipynb", {
        "db": str(fixture_db), "series": [], "load": "never", "oot_modules": str(extra_modules),
        "symbol": "a_data"}), tmp_path)
    text = text_of(nb)
    assert "2 kernels, oldest first: 6.1.0-fixture, 6.12.0-fixture" in text
    steps = next(c for c in nb.cells if c.cell_type == "code" and "export_steps" in c.source).outputs[-1]
    assert "6.12.0-fixture" in steps.data["text/plain"]
    assert images_of(nb) == 1  # the exports-per-step plot
    # prop_d (standing in for LTTng) imports a_plain and kfree; B has no a_plain
    assert "1 modules import 2 kernel symbols; 1 of them stop LTTng on some kernel" in text
    assert "a_plain" in text and "6.12.0-fixture" in text
    # the history box, pre-filled: a_data turned GPL-only from A to B (the widget's state)
    state = json.dumps(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])
    assert "turned GPL-only" in state and "a_data" in state


@pytest.mark.realdata
def test_04_history_on_debian(tmp_path):
    """Debian's kernels from 5.10 to 7.2 in one store, with LTTng 2.13.9 built against 6.1."""
    nb = execute(with_parameters(NOTEBOOKS / "04-export-history.ipynb", {
        "db": str(tmp_path / "history.lbdb"), "load": "missing", "symbol": "find_module"}), tmp_path, timeout=2400)
    nbformat.write(nb, tmp_path / "04-executed.ipynb")
    text = text_of(nb)
    m = re.search(r"(\d+) kernels, oldest first: (\S+),", text)
    assert m and int(m.group(1)) >= 5 and m.group(2).startswith("5.10.0-")
    assert images_of(nb) == 1
    assert re.search(r"\d+ modules import \d+ kernel symbols; \d+ of them stop LTTng on some kernel", text)
    state = json.dumps(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])
    assert "find_module" in state and "vanished" in state
