"""Benchmark: ``ksymgraph load`` of a Debian kernel's modules against ``depmod -e`` on the same tree.

Both run as separate processes on the same input (the image package's ``lib/modules/<release>``
and the headers' ``Module.symvers``), in the same run, several times; the script prints the median
wall time, the peak RSS of each, and the ratio. ksymgraph's time covers everything a user waits
for: interpreter start, reading all modules on all cores, resolving, and writing the embedded store
(a fresh one each run, plus one reload that replaces the kernel in place).

Each tool runs twice per round: with a cold page cache (``/proc/sys/vm/drop_caches``, when this
process may write it: root on a machine that allows it) and warm.

    python tests/bench/bench_load.py [--release 6.1.0-50-amd64] [--runs 5]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ksymgraph.loaders.debian import fetch_kernel


def run(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB) of that process alone."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read().decode()[-500:]}")
    p.stderr.close()
    return wall, usage.ru_maxrss // 1024


def drop_caches() -> bool:
    """Empty the page cache (needs root); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="6.1.0-50-amd64")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    pk = fetch_kernel(args.release)
    # An installed ksymgraph has its bytecode compiled (pip does it); an editable checkout where
    # PYTHONDONTWRITEBYTECODE is set would compile every module again at each start, so compile once.
    import ksymgraph.graph
    import ksymgraph.loaders
    import ksymgraph.queries

    for package in (ksymgraph, ksymgraph.graph, ksymgraph.loaders, ksymgraph.queries):
        for path in package.__path__:
            compileall.compile_dir(path, quiet=1)
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(pk.modules_dir, root / "lib" / "modules" / args.release, copy_function=os.link)
        moddir = root / "lib" / "modules" / args.release
        n = sum(1 for _ in moddir.rglob("*.ko*"))
        db = Path(tmp) / "graph.lbdb"
        load = [sys.executable, "-m", "ksymgraph", "load", str(moddir), "--symvers", str(pk.symvers),
                "--db", str(db), "--no-progress"]
        dep = [depmod, "-b", str(root), "-e", "-E", str(pk.symvers), args.release]
        cold = drop_caches()
        caches = ("cold", "warm") if cold else ("warm",)
        tools = (("depmod -e", dep), ("ksymgraph load", load), ("ksymgraph reload", load))
        results: dict[str, list[tuple[float, int]]] = {}
        for cache in caches:
            if cache == "warm":
                # Each tool reads its own parts of the files: a warm run after another tool's cold
                # run could still be partly cold. Run both once, untimed, so warm means warm.
                for _tool, cmd in tools:
                    run(cmd)
            for _ in range(args.runs):
                for tool, cmd in tools:
                    if tool == "ksymgraph load":
                        for f in Path(tmp).glob("graph.lbdb*"):  # the database is one file (+ a WAL while open)
                            f.unlink()
                    if cache == "cold":
                        drop_caches()
                    results.setdefault(f"{tool} ({cache})", []).append(run(cmd))

    print(f"{n} modules of {args.release} ({pk.version}), {args.runs} runs each, median wall time, {os.cpu_count()} cores")
    if not cold:
        print("(page cache could not be dropped here: warm runs only)")
    # "vs depmod" divides the medians. This machine's speed drifts within minutes, so each round's
    # own ratio (the tool against the depmod run just before it) is given too: median and worst.
    print(f"{'tool':<24} {'wall s':>8} {'peak RSS MiB':>13} {'vs depmod':>10} {'per round: median':>18} {'worst':>6}")
    for tool, rs in results.items():
        cache = tool.rsplit("(", 1)[1]
        dep_runs = [w for w, _ in results[f"depmod -e ({cache}"]]
        wall = statistics.median(w for w, _ in rs)
        rss = max(m for _, m in rs)
        rounds = [w / d for (w, _), d in zip(rs, dep_runs)]
        print(f"{tool:<24} {wall:>8.2f} {rss:>13} {wall / statistics.median(dep_runs):>9.1f}x "
              f"{statistics.median(rounds):>17.1f}x {max(rounds):>5.1f}x")


if __name__ == "__main__":
    main()
