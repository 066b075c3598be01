"""Benchmark: a what-if with the kernel's source loaded against the same what-if without it.

Run as a script (not collected by pytest)::

    python tests/bench/bench_whatif_source.py [--release 6.1.0-57-amd64] [--symbol kfree] [--load]
        [--db-source /tmp/speed.lbdb] [--db-plain /tmp/speed-nosrc.lbdb] [--runs 3] [--profile]

Two stores hold the same Debian kernel: one loaded with ``--source debian`` (its ``linux-source``
package, so the what-if lists call sites and still-exported callers), one without. ``--load`` makes
them first (``ksymgraph load debian:RELEASE [--source debian]``, timed, with its peak RSS). Then,
on each store, in the same run:

- ``ksymgraph whatif --unexport SYMBOL --format json`` as a child process: wall time and peak RSS
  (``wait4``'s ``ru_maxrss``, that process alone), the median of ``--runs``;
- the library call :func:`ksymgraph.queries.usecases.whatif` in a child process: the first call
  (which reads the kernel into memory) and a second one on the cached view, separately.

It prints each row and the ratio with source / without. ``--check`` compares the whole what-if JSON of the query path with that
of the pre-issue-14 one (tests/callsites_reference.py) on the same store. ``--profile`` adds a cProfile of the library
call with source (top 25 by cumulative time) and the wall time of each Cypher query it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LIBRARY = """
import json, resource, sys, time
from ksymgraph.graph.connect import open_store
from ksymgraph.queries import usecases
from ksymgraph.queries.whatif import parse_changes
store = open_store(sys.argv[1], read_only=True)
changes = parse_changes(unexport=[sys.argv[2]])
t0 = time.perf_counter(); r = usecases.whatif(store, None, changes); first = time.perf_counter() - t0
t0 = time.perf_counter(); r = usecases.whatif(store, None, changes); second = time.perf_counter() - t0
sites = sum(len(v) for v in r.call_sites.values())
print(json.dumps({"first": first, "second": second, "broken": len(r.broken), "direct": r.summary["direct"],
                  "call_sites": sites, "modules_with_sites": len(r.call_sites),
                  "replacements": sum(len(v) for v in r.replacements.values()),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""

CHECK = """
import json, sys, time
sys.path.insert(0, sys.argv[3])  # tests/: the reference path and the tie order
import callsites_reference as reference
from test_whatif_speed_equivalence import tie_order
from ksymgraph.graph.connect import open_store
from ksymgraph.queries import callsites, usecases
from ksymgraph.queries.whatif import parse_changes, what_if
store = open_store(sys.argv[1], read_only=True)
view = usecases.kernel_view(store)
for spec in sys.argv[2].split(";"):
    kind, _, names = spec.partition("=")
    result = what_if(view.projection, parse_changes(**{kind: names.split(",")}))
    t0 = time.perf_counter(); new = callsites.add_source_evidence(result, store); t_new = time.perf_counter() - t0
    with reference.fixed_ties():
        t0 = time.perf_counter(); ref = tie_order(reference.add_source_evidence(result, store)); t_ref = time.perf_counter() - t0
    same = json.dumps(new.to_json()) == json.dumps(ref.to_json())
    sites = sum(len(v) for v in new.call_sites.values())
    print(f"{spec:40} same JSON: {same}  ({len(new.broken)} broken, {sites} call sites, "
          f"{sum(len(v) for v in new.replacements.values())} replacements)  reference {t_ref:7.1f} s, now {t_new:5.1f} s",
          flush=True)
"""

PROFILE = """
import cProfile, pstats, sys, time
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.embedded import EmbeddedStore
from ksymgraph.queries import usecases
from ksymgraph.queries.whatif import parse_changes
timings = []
query = EmbeddedStore.query
def timed(self, cypher, params=None):
    t0 = time.perf_counter(); rows = query(self, cypher, params)
    timings.append((time.perf_counter() - t0, len(rows.rows), " ".join(cypher.split())[:150])); return rows
EmbeddedStore.query = timed
store = open_store(sys.argv[1], read_only=True)
changes = parse_changes(unexport=[sys.argv[2]])
usecases.kernel_view(store)
timings.clear()
prof = cProfile.Profile(); prof.enable(); usecases.whatif(store, None, changes); prof.disable()
pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
print("Cypher queries of the what-if (seconds, rows, query):")
for t, n, q in timings:
    print(f"  {t:8.3f} {n:7d}  {q}")
"""


def run_rss(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB of that process alone, stdout)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # whatif exits 1 only with --exit-code
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode()[-800:]}")
        return wall, usage.ru_maxrss // 1024, out.read().decode()


def ksymgraph() -> list[str]:
    return [sys.executable, "-m", "ksymgraph"]


def load(release: str, db: Path, source: bool) -> None:
    for p in db.parent.glob(db.name + "*"):
        if p.is_file():
            p.unlink()
    cmd = [*ksymgraph(), "load", f"debian:{release}", "--db", str(db), "--no-progress"]
    if source:
        cmd += ["--source", "debian"]
    wall, rss, _ = run_rss(cmd)
    print(f"load {'with' if source else 'without'} source: {wall:.1f} s, peak RSS {rss} MiB  ({' '.join(cmd[3:])})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="6.1.0-57-amd64")
    ap.add_argument("--symbol", default="kfree")
    ap.add_argument("--db-source", type=Path, default=Path("/tmp/speed.lbdb"))
    ap.add_argument("--db-plain", type=Path, default=Path("/tmp/speed-nosrc.lbdb"))
    ap.add_argument("--runs", type=int, default=3, help="0: no timing (only --check, --profile)")
    ap.add_argument("--load", action="store_true", help="(re)load both stores first")
    ap.add_argument("--profile", action="store_true", help="cProfile the what-if with source, and time its queries")
    ap.add_argument("--check", metavar="SPECS",
                    help="compare the whole JSON with the pre-issue-14 query path (tests/callsites_reference.py) "
                         "for each of SPECS, e.g. 'unexport=kfree;remove_module=mii;gpl_only=mutex_lock'")
    args = ap.parse_args()

    if args.load or not args.db_plain.exists():
        load(args.release, args.db_plain, source=False)
    if args.load or not args.db_source.exists():
        load(args.release, args.db_source, source=True)

    if args.runs:  # --runs 0: only --check / --profile
        rows = {}
        for label, db in (("without source", args.db_plain), ("with source", args.db_source)):
            cli = [*ksymgraph(), "whatif", "--unexport", args.symbol, "--db", str(db), "--format", "json"]
            runs = [run_rss(cli) for _ in range(args.runs)]
            out = json.loads(runs[-1][2])
            sites = sum(len(b["call_sites"]) for b in out["broken"])
            lib = [json.loads(run_rss([sys.executable, "-c", LIBRARY, str(db), args.symbol])[2])
                   for _ in range(args.runs)]
            rows[label] = {
                "cli": statistics.median(r[0] for r in runs), "cli_rss": max(r[1] for r in runs),
                "first": statistics.median(r["first"] for r in lib), "second": statistics.median(r["second"] for r in lib),
                "lib_rss": max(r["rss_mb"] for r in lib), "broken": out["summary"]["broken"],
                "direct": out["summary"]["direct"], "sites": sites,
                "modules_with_sites": sum(bool(b["call_sites"]) for b in out["broken"]),
                "replacements": sum(len(v) for v in out["replacements"].values()),
            }
        print(f"\nwhat-if --unexport {args.symbol} on {args.release}, median of {args.runs} runs; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'':16} {'CLI s':>7} {'CLI RSS MiB':>12} {'lib 1st s':>10} {'lib 2nd s':>10} {'lib RSS MiB':>12}  result")
        for label, r in rows.items():
            print(f"{label:16} {r['cli']:7.2f} {r['cli_rss']:12d} {r['first']:10.2f} {r['second']:10.3f} {r['lib_rss']:12d}"
                  f"  {r['broken']} broken ({r['direct']} direct), {r['sites']} call sites in {r['modules_with_sites']} "
                  f"modules, {r['replacements']} replacements")
        a, b = rows["without source"], rows["with source"]
        print(f"ratio with/without source: CLI {b['cli'] / a['cli']:.2f}x, library first call {b['first'] / a['first']:.2f}x, "
              f"peak RSS {b['cli_rss'] / max(a['cli_rss'], 1):.2f}x (goal: time within 3x)")

    if args.check:
        print()
        subprocess.run([sys.executable, "-c", CHECK, str(args.db_source), args.check,
                        str(Path(__file__).resolve().parent.parent)], check=True)

    if args.profile:
        print()
        subprocess.run([sys.executable, "-c", PROFILE, str(args.db_source), args.symbol], check=True)


if __name__ == "__main__":
    main()
