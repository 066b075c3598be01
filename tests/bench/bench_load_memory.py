"""Benchmark: peak memory of ``ksymgraph load --source`` on a whole kernel, per phase, against the
peak of cscope and gtags indexing the same tree.

Run as a script (not collected by pytest)::

    python tests/bench/bench_load_memory.py [--release 6.1.0-57-amd64] [--source debian]
        [--db /tmp/speed-mem.lbdb] [--peers] [--workers 2]

The load runs in a child process (``ksymgraph load debian:RELEASE --source SOURCE``) whose peak RSS
``wait4`` reports (that process alone: the index's workers are other processes, and
``bench_source.py`` gives theirs). A second child runs the same load through the library with a
thread sampling its resident set (``/proc/self/status``) every 20 ms, and the phases marked by
wrapping the pipeline's functions (reading modules, indexing, resolving the source tables, the
binary tables, each store ``COPY``, the commit): the peak of each phase tells where the memory
goes. ``--peers`` runs ``cscope -bqk`` and ``gtags`` on the same tree under ``/usr/bin/time`` for
their peaks (as ``bench_source.py`` does). With the index cached (a second run), the load's time is
mostly resolving and writing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = r"""
import json, os, sys, threading, time
from ksymgraph.graph import load  # first: it sets Arrow's allocator up before pyarrow is imported
import pyarrow as pa
main, writer = ["start"], ["-"]  # what the loading thread and the store's writer thread are doing
peaks, arrow, order = {}, {}, []
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
def note():
    r, a, p = rss(), pa.total_allocated_bytes() >> 20, f"{main[0]} | {writer[0]}"
    if p not in peaks:
        order.append(p)
    peaks[p] = max(peaks.get(p, 0), r)
    arrow[p] = max(arrow.get(p, 0), a)
def sample():
    while True:
        note()
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

def wrap(mod, attr, name):
    fn = getattr(mod, attr)
    def inner(*a, **k):
        before = main[0]
        note(); main[0] = name; note()
        try:
            return fn(*a, **k)
        finally:
            note(); main[0] = before; note()
    setattr(mod, attr, inner)

from ksymgraph.graph import build, source, embedded
from ksymgraph.graph.connect import open_store
wrap(load, "read_kernel", "reading modules")
wrap(load, "_index_trees", "indexing the tree")
wrap(build, "build_kernel_graph", "resolving and staging tables")
wrap(source, "source_tables", "resolving the source tables")
wrap(embedded.EmbeddedStore, "_switch", "commit and switch")
copy = embedded.EmbeddedStore._copy
def copy_marked(self, conn, table, path, options):
    note(); writer[0] = f"COPY {table}{options}"; note()
    try:
        return copy(self, conn, table, path, options)
    finally:
        note(); writer[0] = "-"; note()
embedded.EmbeddedStore._copy = copy_marked
kernel, db, srcs = sys.argv[1], sys.argv[2], sys.argv[3:]
store = open_store(db, lazy=True)
t0 = time.perf_counter()
summary = load.load_kernel(store, [f"debian:{kernel}"], source_dirs=srcs, workers=int(os.environ.get("WORKERS", "2")))
main[0] = "done"; note()
store.close()
print(json.dumps({"seconds": time.perf_counter() - t0, "peaks": [(p, peaks[p], arrow.get(p, 0)) for p in order],
                  "functions": summary.report.source.get("Function", 0),
                  "calls": summary.report.source.get("CALLS->Function", 0) + summary.report.source.get("CALLS->Symbol", 0)}))
"""


def run_rss(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB of that process alone, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode()[-1500:]}")
        return wall, usage.ru_maxrss // 1024, out.read().decode()


def clear(db: Path) -> None:
    for p in db.parent.glob(db.name + "*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="6.1.0-57-amd64")
    ap.add_argument("--source", default="debian", help="the --source tree (default: debian)")
    ap.add_argument("--db", type=Path, default=Path("/tmp/speed-mem.lbdb"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peers", action="store_true", help="also cscope -bqk and gtags on the same tree")
    ap.add_argument("--no-phases", action="store_true", help="skip the per-phase run")
    ap.add_argument("--no-load", action="store_true", help="skip both loads (with --peers: the peers alone)")
    args = ap.parse_args()

    rows = []
    cmd = [sys.executable, "-m", "ksymgraph", "load", f"debian:{args.release}", "--source", args.source,
           "--db", str(args.db), "--no-progress", "--workers", str(args.workers)]
    if not args.no_load:
        clear(args.db)
        wall, rss, out = run_rss(cmd)
        rows.append((f"ksymgraph load --source {args.source}", wall, rss, out.splitlines()[0][:100] if out else ""))

    if not args.no_phases and not args.no_load:
        clear(args.db)
        env = dict(os.environ, WORKERS=str(args.workers))
        wall, rss, out = run_rss([sys.executable, "-c", PHASES, args.release, str(args.db), args.source], env)
        res = json.loads(out.splitlines()[-1])
        print(f"load through the library: {res['seconds']:.1f} s, peak RSS {rss} MiB "
              f"({res['functions']} functions, {res['calls']} calls); peak per phase (MiB), RSS and Arrow's pool, "
              "by what the loading thread | the store's writer thread were doing:")
        for name, peak, arrow in res["peaks"]:
            print(f"  {peak:7d} {arrow:7d}  {name}")
    if not args.no_load:
        clear(args.db)

    if args.peers:
        from ksymgraph.loaders import trees

        root = trees.debian_source_tree(args.release) if args.source == "debian" else Path(args.source).resolve()
        files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _dirs, names in os.walk(root)
                       for f in names if f.endswith((".c", ".h")) and not os.path.relpath(d, root).startswith("."))
        with tempfile.TemporaryDirectory(prefix="ksg-bench-") as tmp:
            tmp = Path(tmp)
            (tmp / "files").write_text("\n".join(files) + "\n")
            if shutil.which("cscope"):
                wall, rss, _ = _in(root, ["cscope", "-bqk", "-i", str(tmp / "files"), "-f", str(tmp / "cscope.out")])
                rows.append(("cscope -bqk -i files", wall, rss, ""))
            if shutil.which("gtags"):
                (tmp / "gtags").mkdir()
                wall, rss, _ = _in(root, ["gtags", "-f", str(tmp / "files"), str(tmp / "gtags")])
                rows.append(("gtags -f files", wall, rss, ""))

    print(f"\n{'tool':40} {'wall s':>8} {'peak RSS MiB':>13}  notes   ({os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f})")
    for name, wall, rss, note in rows:
        print(f"{name:40} {wall:8.1f} {rss:13d}  {note}")


def _in(cwd: Path, cmd: list[str]) -> tuple[float, int, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return run_rss(cmd)
    finally:
        os.chdir(old)


if __name__ == "__main__":
    main()
