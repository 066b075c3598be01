"""Same answers on both stores, on real data: Debian 6.1, trixie 6.12 and 6.1 with LTTng and its source.

The same kernels are loaded with :func:`~ksymgraph.graph.load.load_kernel` into a fresh embedded store
and into the live Neo4j server at ``$NEO4J_URI`` (under names starting ``ksymgraph-test-``, removed at
the end), and every question is asked of both through the same library function:

* the whole graph read back table by table (every label and relationship of ``graph/schema.py``,
  every property) — so a property added to the schema is compared too;
* every named query (``queries/library.py``; parameters by name from :data:`PARAMS`), every Cypher
  cell of the notebooks (notebook 03's ``%%cypher`` cells through the magic, notebook 01's
  ``store.query`` texts);
* what-ifs with their cascades and call sites, ``check``, ``usage``, ``diff`` 6.1 → 6.12 and the
  upgrade impact, each compared as its JSON and its rendered report.

Rows are compared in order where the query sorts them (``ORDER BY``) and sorted first where it does
not; lists made by ``collect()`` are sorted (their order is each engine's own), and the engines'
internal ids (``_ID``, ``_SRC``, ``_DST``) are dropped from node and relationship values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_neo4j_store import live_uri
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.graph.neo4j_admin import read_kernel_batch
from ksymgraph.graph.neo4j_store import Neo4jStore
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.graph.schema import NODES, RELS
from ksymgraph.queries.library import check_params, list_queries, run_named

pytestmark = [pytest.mark.realdata, pytest.mark.neo4j]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
K61, K612, KLT = "ksymgraph-test-6.1", "ksymgraph-test-6.12", "ksymgraph-test-6.1-lttng"
INTERNAL = {"_ID", "_SRC", "_DST"}


@pytest.fixture(scope="module")
def lttng(debian_kernel):
    """(modules directory, OotBuild) of LTTng 2.13.9 built against the 6.1 kernel (cached)."""
    from ksymgraph.loaders import oot

    out = oot.build_dkms_modules("lttng-modules-dkms", debian_kernel.release, ("CONFIG_LTTNG=m",))
    return out, oot.read_build(out)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, debian_kernel, trixie_kernel, lttng):
    """(embedded, neo4j): both holding K61, K612 and KLT, loaded the same way."""
    out, build = lttng
    loads = [
        (K61, [f"debian:{debian_kernel.release}"], []),
        (K612, [f"debian:{trixie_kernel.release}@trixie"], []),
        (KLT, [f"debian:{debian_kernel.release}", str(out)], [str(build.source_dir)]),
    ]
    neo = Neo4jStore(live_uri())
    emb = open_store(tmp_path_factory.mktemp("both") / "graph.lbdb")
    try:
        for name, sources, source_dirs in loads:
            for store in (emb, neo):
                s = load_kernel(store, sources, kernel=name, source_dirs=source_dirs)
                print(f"\n{store.dialect}: {name} in {s.seconds:.1f} s")
        yield emb, neo
    finally:
        for name, _sources, _dirs in loads:
            neo.delete_kernel(name)
        neo.close()
        emb.close()


def _strip(value):
    """``value`` without the engines' internal ids; dictionaries as sorted item lists."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in INTERNAL}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _key(row) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def normal_rows(cypher: str, rows) -> list:
    """Rows ready to compare: internal ids dropped, ``collect()`` lists sorted, rows sorted unless
    ``cypher`` orders them."""
    collected = {m.group(1) for m in re.finditer(r"collect\([^)]*\)\s+AS\s+(\w+)", cypher, re.I)}
    out = []
    for row in rows.rows:
        cells = []
        for col, v in zip(rows.columns, row):
            v = _strip(v)
            if col in collected and isinstance(v, list):
                v = sorted(v, key=_key)
            cells.append(v)
        out.append(cells)
    return out if re.search(r"\bORDER\s+BY\b", cypher, re.I) else sorted(out, key=_key)


def assert_same_rows(emb, neo, cypher_emb: str, cypher_neo: str, params: dict, what: str) -> int:
    want, got = emb.query(cypher_emb, params), neo.query(cypher_neo, params)
    assert got.columns == want.columns, what
    a, b = normal_rows(cypher_emb, want), normal_rows(cypher_neo, got)
    assert len(a) == len(b), f"{what}: {len(a)} rows embedded, {len(b)} on Neo4j"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{what}: row {i} differs"
    return len(a)


def test_the_whole_graph_reads_back_the_same(stores):
    emb, neo = stores
    for kernel in (K61, K612, KLT):
        a, b = read_kernel_batch(emb, kernel), read_kernel_batch(neo, kernel)
        assert a.kernel == b.kernel
        assert set(a.nodes) == set(b.nodes) and set(a.rels) == set(b.rels), kernel
        assert {n.label for n in NODES} >= set(a.nodes) >= {"Kernel", "Module", "Symbol"}
        for label in a.nodes:
            assert a.nodes[label].sort_by("id").equals(b.nodes[label].sort_by("id")), (kernel, label)
        for key in a.rels:
            x, y = a.rels[key].to_pylist(), b.rels[key].to_pylist()
            assert sorted(x, key=_key) == sorted(y, key=_key), (kernel, key)
        if kernel == KLT:  # the source graph came along
            assert {"Function", "File"} <= set(a.nodes)
            assert {("CALLS", "Function", "Function"), ("LOOKS_UP", "Module", "Symbol")} <= set(a.rels)
    assert {r.type for r in RELS} >= {k[0] for k in a.rels}


def _top(emb, cypher: str, params: dict, n: int = 2) -> list:
    return [r[0] for r in emb.query(cypher, params).rows[:n]]


@pytest.fixture(scope="module")
def params(stores):
    """Values for every parameter name a named query takes, picked from the data (the embedded store)."""
    emb, _neo = stores
    called = _top(emb, "MATCH (g:Function)-[:CALLS]->(f:Function) WHERE f.kernel = $k "
                       "RETURN f.name AS name, count(g) AS n ORDER BY n DESC, name", {"k": KLT})
    lookers = _top(emb, "MATCH (m:Module)-[:LOOKS_UP]->(:Symbol) WHERE m.kernel = $k "
                        "RETURN m.name AS name, count(*) AS n ORDER BY n DESC, name", {"k": KLT})
    return {
        "kernel": [K61, KLT],
        "symbol": ["usb_register_driver", "kfree", "register_kprobe"],
        "module": ["usbserial", "vmlinux", *lookers],
        "function": called,
        "depth": [1, 3],
        "a": [K61],
        "b": [K612],
    }


def test_every_named_query_gives_the_same_rows(stores, params):
    emb, neo = stores
    checked = 0
    for q in list_queries():
        names = [p.name for p in q.params]
        unknown = [n for n in names if n not in params]
        assert not unknown, f"query {q.name} takes {unknown}: give values for them in params()"
        runs = max((len(params[n]) for n in names), default=1)
        total = 0
        for i in range(runs):
            p = {n: params[n][i % len(params[n])] for n in names}
            if q.name == "lookups" or q.name == "callers":
                p["kernel"] = KLT
            text_emb, text_neo = q.text(emb.dialect), q.text(neo.dialect)
            total += assert_same_rows(emb, neo, text_emb, text_neo, check_params(q, p, emb), f"{q.name} {p}")
            assert run_named(neo, q.name, p).columns == run_named(emb, q.name, p).columns
        assert total > 0, f"query {q.name} returned nothing on either store: pick parameters that find rows"
        checked += 1
    assert checked == len(list_queries()) >= 8


def _whatif_cases():
    """(kernel, changes, whether something must break): every in-tree module is GPL-compatible, so
    a GPL-only kfree alone breaks nothing in Debian's kernel (the answer both stores must give)."""
    from ksymgraph.queries.whatif import parse_changes

    return [
        (K61, parse_changes(unexport=["usb_register_driver"]), True),
        (K61, parse_changes(gpl_only=["kfree"]), False),
        (K61, parse_changes(unexport=["usb_register_driver"], gpl_only=["kfree"]), True),
        (K61, parse_changes(namespace=["usb_serial_register_drivers=USB_SERIAL"]), True),
        (K61, parse_changes(remove_module=["usbcore"]), True),
        (KLT, parse_changes(unexport=["register_kprobe"]), True),
        (KLT, parse_changes(unexport=["kallsyms_lookup_name", "register_kprobe"], gpl_only=["kfree"]), True),
    ]


def test_whatifs_give_the_same_answers(stores):
    from ksymgraph.queries.callsites import add_source_evidence
    from ksymgraph.queries.report import render_whatif
    from ksymgraph.queries.whatif import what_if

    emb, neo = stores
    proj = {}
    for kernel in (K61, KLT):
        proj[kernel] = (KernelProjection.from_store(emb, kernel), KernelProjection.from_store(neo, kernel))
    for kernel, changes, breaks in _whatif_cases():
        results = [add_source_evidence(what_if(p, changes), store) for p, store in zip(proj[kernel], (emb, neo))]
        a, b = (r.to_json() for r in results)
        assert a == b, f"{kernel} {[c.to_json() for c in changes]}"
        assert bool(a["broken"]) == breaks, f"{[c.to_json() for c in changes]}: broken {a['summary']}"
        for fmt in ("md", "json", "html"):
            assert render_whatif(results[0], fmt) == render_whatif(results[1], fmt)
        if kernel == KLT:
            assert a["summary"]["out_of_tree"] > 0 and any(b_["call_sites"] for b_ in a["broken"])
    dependency = [c for k, c, _b in _whatif_cases() if k == K61][0]
    assert what_if(proj[K61][1], dependency).summary["inherited"] > 0   # the cascade, on Neo4j's data


def test_check_usage_and_diff_give_the_same_answers(stores, debian_kernel, lttng):
    from ksymgraph import notebook as nb
    from ksymgraph.loaders.modules import read_module_file
    from ksymgraph.queries.check import check_modules
    from ksymgraph.queries.diff import diff_kernels, upgrade_impact
    from ksymgraph.queries.report import render_check, render_diff, render_upgrade, render_usage
    from ksymgraph.queries.usage import export_usage

    emb, neo = stores
    zram = next(debian_kernel.modules_dir.rglob("zram.ko*"))
    oot_data = nb.oot_module_data(lttng[0])
    for kernel, mods in ((K612, [read_module_file(str(zram))]), (K612, oot_data), (KLT, oot_data)):
        a, b = (check_modules(KernelProjection.from_store(s, kernel), mods, s) for s in (emb, neo))
        assert a.to_json() == b.to_json(), kernel
        assert render_check(a, "md") == render_check(b, "md")
    assert not a.modules[0].loads or all(m.loads for m in a.modules)

    a, b = (export_usage(KernelProjection.from_store(s, K61)) for s in (emb, neo))
    assert a.to_json() == b.to_json()
    assert render_usage(a, "md", 50) == render_usage(b, "md", 50)

    a, b = (diff_kernels(s, K61, K612) for s in (emb, neo))
    assert a.to_json() == b.to_json() and a.summary["removed"] > 1000
    assert render_diff(a, "pretty", 20) == render_diff(b, "pretty", 20)
    a, b = (upgrade_impact(s, K61, K612, names=["zram", "nvme", "usbserial"]) for s in (emb, neo))
    assert a.to_json() == b.to_json()
    a, b = (upgrade_impact(s, KLT, K612, files=oot_data) for s in (emb, neo))
    assert a.to_json() == b.to_json() and a.to_json()["summary"]["modules"] == len(oot_data)
    assert render_upgrade(a, "md") == render_upgrade(b, "md")


def _code_cells(name: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads((NOTEBOOKS / name).read_text())["cells"]
            if c["cell_type"] == "code"]


def test_the_notebooks_queries_give_the_same_rows(stores, lttng):
    """Notebook 03's ``%%cypher`` cells through the magic (parameters from its first cell, the kernel
    and symbol set here), and the Cypher that notebook 01 passes to ``store.query``."""
    from IPython.core.interactiveshell import InteractiveShell

    from ksymgraph import notebook as nb

    emb, neo = stores
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ksymgraph.notebook")
    cells = _code_cells("03-cypher.ipynb")
    exec(cells[0], shell.user_ns)                      # the parameters cell: symbol, namespace, ...
    shell.user_ns["kernel"] = K61
    magic = [c for c in cells if c.startswith("%%cypher")]
    assert len(magic) >= 5
    try:
        for cell in magic:
            line, _, body = cell.partition("\n")
            line = line[len("%%cypher"):]
            limited = re.search(r"\bLIMIT\s+\d+\s*$", body) and not re.search(r"\bORDER\s+BY\b", body, re.I)
            frames = []
            for store in (emb, neo):
                nb.use_store(store)
                frame = shell.run_cell_magic("cypher", line, body)
                frames.append(frame)
            assert list(frames[0].columns) == list(frames[1].columns), body
            assert len(frames[0]) == len(frames[1]) > 0, body
            if limited:
                # LIMIT without ORDER BY: which rows is each engine's choice; the whole answer must agree.
                body = re.sub(r"\bLIMIT\s+\d+\s*$", "", body)
            params = dict(nb.parse_param(p, shell.user_ns) for p in re.findall(r"-p\s+(\S+)", line))
            assert_same_rows(emb, neo, body, body, params, body)
    finally:
        nb._active = None

    oot_names = [m.info.name for m in nb.oot_module_data(lttng[0])]
    values = {"kernel": KLT, "oot": oot_names, "release": KLT}
    texts = [m.group(1) for c in _code_cells("01-unbreak-lttng.ipynb")
             for m in re.finditer(r'store\.query\("""(.*?)"""', c, re.S)]
    assert texts, "notebook 01 passes no Cypher to store.query any more: update this test"
    for text in texts:
        p = {name: values[name] for name in set(re.findall(r"\$(\w+)", text))}
        assert assert_same_rows(emb, neo, text, text, p, text) > 0
    a, b = (nb.lookups_table(s, KLT, oot_names) for s in (emb, neo))
    # (read under 6.1.0-50's .config: the lookups LTTng's build compiles, 9 with its kprobe; every
    # branch read, there were 28)
    assert a.to_dict("records") == b.to_dict("records") and len(a) >= 8
