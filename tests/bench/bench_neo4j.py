"""Benchmark: writing one kernel's graph into Neo4j, three ways, against LadybugDB on the same graph.

The graph of a Debian kernel (``debian:RELEASE``; with ``--source``, its whole indexed source
too) is read and resolved once, untimed; then, in the same run, each way writes that same
:class:`~ksymgraph.graph.build.GraphBatch`:

* **LadybugDB**: ``EmbeddedStore.replace_kernel`` into a fresh embedded store (``COPY`` from Parquet);
* **Neo4j, batched UNWIND**: ``Neo4jStore.replace_kernel`` over Bolt into a real Neo4j (``ksymgraph
  neo4j start``, a private home on a free port): ``UNWIND $rows ... MERGE`` / ``CREATE`` in one
  transaction, as ``ksymgraph load --neo4j`` does;
* **Neo4j, neo4j-admin**: ``export_neo4j_admin`` (the CSV files of ``ksymgraph export --neo4j-admin``),
  then the real ``neo4j-admin database import full`` (``org.neo4j.cli.AdminTool`` of the same Maven
  build, JVM start included) into an empty server home, then a start of that server and the
  ``schema.cypher`` constraints; the imported node and relationship counts are checked against the
  batch.

Each way runs ``--runs`` times (median wall time); ratios are against LadybugDB. ``--source`` needs
the source index in the cache (``ksymgraph load debian:RELEASE --source debian`` once) and skips
UNWIND unless ``--unwind-source`` (one transaction of millions of rows needs a large heap).

    NEO4J_PASSWORD=... python tests/bench/bench_neo4j.py [--release 6.1.0-50-amd64] [--runs 3] [--source]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ksymgraph.graph import neo4j_server as srv
from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import _index_trees, read_kernel
from ksymgraph.graph.neo4j_admin import export_neo4j_admin
from ksymgraph.graph.neo4j_store import Neo4jStore

PASSWORD = os.environ.get("NEO4J_PASSWORD") or "bench-Pa55word"


def du(path: Path) -> int:
    """Bytes under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def batch_of(release: str, source: bool):
    t0 = time.perf_counter()
    meta, modules, entries, skipped, config = read_kernel([f"debian:{release}"], None, None, None, False)
    trees = _index_trees(["debian"], meta.release, config, None, False, skipped) if source else []
    batch, _report = build_kernel_graph(meta, modules, entries, (), trees)
    rows = sum(t.num_rows for t in batch.nodes.values()), sum(t.num_rows for t in batch.rels.values())
    print(f"{release}{' with source' if source else ''}: {rows[0]} nodes, {rows[1]} relationships "
          f"(read and resolved in {time.perf_counter() - t0:.1f} s, untimed)")
    return batch, rows


def time_ladybug(batch, work: Path) -> tuple[float, int]:
    db = work / f"lbdb-{time.monotonic_ns()}"
    with open_store(db) as store:
        t0 = time.perf_counter()
        store.replace_kernel(batch)
        wall = time.perf_counter() - t0
    size = du(db) if db.is_dir() else db.stat().st_size
    shutil.rmtree(db, ignore_errors=True) if db.is_dir() else db.unlink()
    return wall, size


def time_unwind(batch, info) -> float:
    with Neo4jStore(info.uri, user="neo4j", password=PASSWORD) as store:
        store.delete_kernel(batch.kernel.release)
        store.ensure_schema()
        t0 = time.perf_counter()
        store.replace_kernel(batch)
        wall = time.perf_counter() - t0
        store.delete_kernel(batch.kernel.release)
    return wall


def time_admin(batch, rows, work: Path) -> tuple[float, float, float, int]:
    """(export s, neo4j-admin import s, start + schema s, store bytes) of one offline import."""
    csv = work / "csv"
    shutil.rmtree(csv, ignore_errors=True)
    t0 = time.perf_counter()
    exp = export_neo4j_admin([batch], csv)
    t_export = time.perf_counter() - t0
    home = work / f"admin-home-{time.monotonic_ns()}"
    cmd, env = srv.admin_command(home)
    t0 = time.perf_counter()
    p = subprocess.run([*cmd, *exp.command[1:]], cwd=csv, env=env, capture_output=True, text=True)
    t_import = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"neo4j-admin import failed ({p.returncode}): {(p.stdout + p.stderr)[-2000:]}")
    t0 = time.perf_counter()
    info = srv.start_server(port=0, home=home, password=PASSWORD)
    try:
        with Neo4jStore(info.uri, user="neo4j", password=PASSWORD) as store:
            store.ensure_schema()
            t_start = time.perf_counter() - t0
            got = (store.query("MATCH (n) RETURN count(n)").rows[0][0],
                   store.query("MATCH ()-[r]->() RETURN count(r)").rows[0][0])
    finally:
        srv.stop_server(home)
    if got != rows:
        raise SystemExit(f"neo4j-admin imported {got} (nodes, relationships), the batch has {rows}")
    size = du(home / "data" / "databases" / "neo4j")
    shutil.rmtree(home, ignore_errors=True)
    return t_export, t_import, t_start, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="6.1.0-50-amd64")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--source", action="store_true", help="the kernel with its whole indexed source")
    ap.add_argument("--unwind-source", action="store_true", help="with --source: try UNWIND too")
    ap.add_argument("--heap", default="4g", help="Neo4j heap for the UNWIND server (default 4g)")
    args = ap.parse_args()

    batch, rows = batch_of(args.release, args.source)
    work = Path(tempfile.mkdtemp(prefix="bench-neo4j-"))
    server_home = work / "server"
    info = None
    try:
        lady = [time_ladybug(batch, work) for _ in range(args.runs)]
        results = {"LadybugDB replace_kernel (COPY)": [w for w, _s in lady]}
        if not args.source or args.unwind_source:
            info = srv.start_server(port=0, home=server_home, password=PASSWORD, heap=args.heap)
            time_unwind(batch, info)          # untimed: the server's first transaction compiles the statements
            results[f"Neo4j batched UNWIND (Bolt, heap {args.heap})"] = [time_unwind(batch, info)
                                                                         for _ in range(args.runs)]
            srv.stop_server(server_home)
            info = None
        admin = [time_admin(batch, rows, work) for _ in range(args.runs)]
        results["Neo4j neo4j-admin import full"] = [a[1] for a in admin]
        results["  + CSV export before it"] = [a[0] for a in admin]
        results["  + start and schema after it"] = [a[2] for a in admin]
        results["Neo4j offline, all three"] = [a[0] + a[1] + a[2] for a in admin]
    finally:
        if info is not None:
            srv.stop_server(server_home)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(results["LadybugDB replace_kernel (COPY)"])
    print(f"\n{args.runs} runs each, median wall time; {os.cpu_count()} cores; Neo4j {srv.pinned_version()}")
    print(f"{'way':48s} {'wall s':>8s} {'vs LadybugDB':>13s}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:48s} {med:8.2f} {med / base:12.1f}x")
    print(f"store size: LadybugDB {statistics.median(s for _w, s in lady) / 2**20:.0f} MiB, "
          f"Neo4j (imported) {statistics.median(a[3] for a in admin) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
