"""Scale: a store holding every reachable Debian kernel, against single-kernel stores.

    python tests/bench/bench_history.py [--store DIR] [--runs 5]

1. Loads every amd64 kernel the archive carries that the store lacks (``--store``, default
   ``$KSYMGRAPH_CACHE/bench/series.lbdb``; kept between runs), one ``ksymgraph load`` each,
   timing it and reading its peak RSS; then loads three of them again into fresh single-kernel
   stores, for the ratio.
2. The store's size on disk.
3. ``ksymgraph whatif`` on one kernel of the big store, against the same what-if on a
   single-kernel store of that kernel (goal: within 1.3x).
4. ``ksymgraph history`` of 100 exports over every kernel.

Every figure is a whole ``ksymgraph`` process (interpreter start included), the median of
``--runs``; the peer of each is the same command on a single-kernel store, in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ksymgraph.graph.connect import open_store
from ksymgraph.loaders.debian import available_kernels, cache_dir
from ksymgraph.loaders.debnames import release_flavour

KSYMGRAPH = [sys.executable, "-m", "ksymgraph"]


def run(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit status) of one ksymgraph command (its own rusage, by wait4)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(KSYMGRAPH + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 1, 3):
        print(err[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, rc


def du(path: Path) -> float:
    """MiB on disk of a store (its file or directory, and its WAL)."""
    total = 0
    for p in [path, *path.parent.glob(path.name + ".*")]:
        if p.is_dir():
            total += sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_blocks * 512
    return total / 2**20


def median_run(args: list[str], runs: int) -> float:
    return statistics.median(run(args)[0] for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=cache_dir() / "bench" / "series.lbdb")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    args.store.parent.mkdir(parents=True, exist_ok=True)
    kernels = [k for k in available_kernels() if release_flavour(k.release) == "amd64"]
    with open_store(args.store) as store:
        have = set(store.kernels())
    print(f"{len(kernels)} amd64 kernels in the archive; the store holds {len(have)}", flush=True)
    loads = []
    for k in kernels:
        if k.release in have:
            continue
        wall, rss, rc = run(["load", f"debian:{k.release}@{k.suite}", "--db", str(args.store), "--no-progress"])
        print(f"  load {k.release}: {wall:.1f} s, {rss:.0f} MiB, exit {rc}", flush=True)
        if rc in (0, 3):
            loads.append((k.release, wall, rss))
    with open_store(args.store, read_only=True) as store:
        stored = store.kernels()
    sample = random.Random(1).sample(stored, min(3, len(stored)))
    tmp = Path(tempfile.mkdtemp(prefix="ksymgraph-bench-"))
    try:
        rows = []
        for release in sample:
            single = tmp / f"{release}.lbdb"
            w1, r1, rc1 = run(["load", f"debian:{release}", "--db", str(single), "--no-progress"])
            # the same kernel into the big store again (a replace among every other kernel)
            w2, r2, rc2 = run(["load", f"debian:{release}", "--db", str(args.store), "--no-progress"])
            if rc1 not in (0, 3) or rc2 not in (0, 3):
                sys.exit(f"load of {release} failed (exit {rc1}, {rc2}): see above")
            rows.append((release, w1, r1, w2, r2))
        release = sample[0]
        single = tmp / f"{release}.lbdb"
        whatif = ["whatif", "--kernel", release, "--unexport", "usb_register_driver", "--gpl-only", "kfree",
                  "--format", "json"]
        t_single = median_run([*whatif, "--db", str(single)], args.runs)
        t_big = median_run([*whatif, "--db", str(args.store)], args.runs)
        with open_store(args.store, read_only=True) as store:
            names = [r[0] for r in store.query(
                "MATCH (m:Module)-[:EXPORTS]->(s:Symbol) WHERE m.kernel = $k RETURN s.name ORDER BY s.name",
                {"k": release}).rows]
        symbols = random.Random(2).sample(names, 100)
        t_hist = median_run(["history", *symbols, "--db", str(args.store), "--format", "json", "--flavour", "all"],
                            args.runs)
        print(f"\n{len(stored)} kernels in {args.store} ({du(args.store):.0f} MiB on disk); "
              f"{os.cpu_count()} CPUs; median of {args.runs} runs")
        print(f"{'':34} {'single store':>14} {'big store':>12} {'ratio':>7}")
        for release, w1, r1, w2, r2 in rows:
            print(f"load {release:29} {w1:11.1f} s {w2:10.1f} s {w2 / w1:6.2f}x   peak RSS {r1:.0f} / {r2:.0f} MiB")
        print(f"whatif on {release:24} {t_single:11.2f} s {t_big:10.2f} s {t_big / t_single:6.2f}x   (goal <= 1.3x)")
        print(f"history of 100 exports over {len(stored)} kernels: {t_hist:.2f} s")
        if loads:
            print(f"loads into the growing store: median {statistics.median(w for _r, w, _m in loads):.1f} s, "
                  f"peak RSS {max(m for _r, _w, m in loads):.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
