"""Every in-tree module of Debian 6.1, rebuilt in prediction against trixie 6.12's headers.

    python tests/bench/bench_rebuild.py [--store PATH] [--a 6.1.0-NN-amd64] [--b 6.12.NN+deb13-amd64]

1. Loads kernel A with its whole source (``ksymgraph load debian:A --source debian``: Debian's
   ``linux-source-6.1``, so use the 6.1.0-NN whose package version is the source's) and kernel B
   with its headers (``--source debian-headers``) into ``--store`` (default
   ``$KSYMGRAPH_CACHE/bench/rebuild.lbdb``; kept between runs) unless it holds them already.
2. Predicts, for every module of A, the imports of a rebuild against B's headers and B's load
   rules on them (:func:`ksymgraph.queries.rebuild.predict_rebuild`, each module ``alone`` among
   B's own modules): modules per rule, the most common symbols of each rule, and the time and
   peak RSS.
3. What a non-GPL module would meet: the GPL-only exports of B that modules reach only through
   B's header inlines and macros (chain longer than one) — the pfn_valid() → rcu_read_lock() →
   __rcu_read_lock case — by the number of modules, with one chain each.
4. Two checks of the walk against the compiler, in the same run: the same walk through A's own
   headers (a "rebuild" against A) against the ``.ko`` files A ships, and the prediction against
   the ``.ko`` files B ships for the modules of the same name (built from 6.12's own source, so
   their differences are source changes as well as the headers'): recall and precision of each.
"""

from __future__ import annotations

import argparse
import collections
import resource
import subprocess
import sys
import time
from pathlib import Path

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.projection import KernelProjection
from ksymgraph.loaders.debian import cache_dir
from ksymgraph.queries.rebuild import predict_rebuild

KSYMGRAPH = [sys.executable, "-m", "ksymgraph"]


def ensure(store_path: Path, release: str, source: str) -> None:
    """Load ``release`` with ``--source source`` into the store unless it is there."""
    if store_path.exists():
        with open_store(store_path, read_only=True) as s:
            if release in s.kernels():
                return
    store_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = KSYMGRAPH + ["load", f"debian:{release}", "--source", source, "--db", str(store_path)]
    print("$", " ".join(["ksymgraph", *cmd[3:]]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def recall_precision(predicted: dict[str, set[str]], actual: dict[str, set[str]]) -> tuple[float, float, int, int, int]:
    both = sum(len(predicted[m] & actual[m]) for m in predicted)
    p = sum(len(v) for v in predicted.values())
    a = sum(len(actual[m]) for m in predicted)
    return both / a if a else 0.0, both / p if p else 0.0, a, p, both


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=cache_dir() / "bench" / "rebuild.lbdb")
    ap.add_argument("--a", default="6.1.0-57-amd64", help="kernel A, whose package matches linux-source-6.1")
    ap.add_argument("--b", default="6.12.118+deb13-amd64")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    ensure(args.store, args.a, "debian")
    ensure(args.store, args.b, "debian-headers")
    with open_store(args.store, read_only=True) as s:
        pa = KernelProjection.from_store(s, args.a)
        pb = KernelProjection.from_store(s, args.b)
        mods = sorted(m for m, n in pa.modules.items() if m != "vmlinux" and n.path)
        t0 = time.perf_counter()
        p = predict_rebuild(s, args.a, args.b, names=mods, alone=True)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self_check = predict_rebuild(s, args.a, args.a, names=mods, alone=True)
        self_seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summ = p.summary
    print(f"\n# {len(mods)} modules of {args.a} rebuilt in prediction against {args.b}'s headers")
    print(f"{summ['with_source']} with source; {summ['load']} would load, {summ['fail']} would not; "
          f"{seconds:.1f} s, peak RSS {rss:.0f} MiB (whole process)")
    print("\n| rule | modules | most common symbols (modules) |\n|---|---|---|")
    for rule, n in sorted(summ["by_rule"].items(), key=lambda kv: -kv[1]):
        syms = collections.Counter(b.symbol for m in p.modules for b in {(x.rule, x.symbol): x for x in m.breaks}.values()
                                   if b.rule == rule)
        top = ", ".join(f"{sym} ({c})" for sym, c in syms.most_common(args.top))
        print(f"| {rule} | {n} | {top} |")
    own = collections.Counter(b.rule for m in p.modules for b in m.breaks if b.rule != "dependency")
    print(f"\nbreaks (module, symbol) per rule: {dict(own)}")
    # 3. GPL-only through headers
    through = collections.defaultdict(set)
    example = {}
    for m in p.modules:
        for i in m.imports:
            if i.gpl and len(i.chain) > 1:
                through[i.symbol].add(m.module)
                example.setdefault(i.symbol, " → ".join(i.chain))
    hit = {m for ms in through.values() for m in ms}
    print(f"\n{len(hit)} modules reach GPL-only exports of {args.b} only through its header inlines or macros "
          f"({len(through)} symbols); a non-GPL module with their code would be refused:")
    print("\n| GPL-only symbol | modules | e.g. |\n|---|---|---|")
    for sym, ms in sorted(through.items(), key=lambda kv: (-len(kv[1]), kv[0]))[: args.top]:
        print(f"| {sym} | {len(ms)} | {example[sym]} |")
    pfn = sorted({m.module for m in p.modules for i in m.imports if i.chain[0] == "pfn_valid"})
    reach = collections.Counter(" → ".join(i.chain) for m in p.modules for i in m.imports if i.chain[0] == "pfn_valid")
    print(f"\npfn_valid() in {args.b}'s headers: {len(pfn)} modules call it; what it makes them import: "
          + "; ".join(f"{c} ({n})" for c, n in reach.most_common(args.top)))
    # 4. against the compilers' output
    actual_a = {m: {i.symbol for i in pa.imports.get(m, ())} for m in mods}
    pred_a = {m.module: {i.symbol for i in m.imports} for m in self_check.modules if m.source}
    r, pr, na, np_, nb = recall_precision(pred_a, actual_a)
    print(f"\nwalk through {args.a}'s own headers vs its .ko imports ({len(pred_a)} modules, {self_seconds:.1f} s): "
          f"recall {r:.3f}, precision {pr:.3f} ({na} imports, {np_} predicted, {nb} in both)")
    same = [m.module for m in p.modules if m.source and m.module in pb.modules]
    pred_b = {m.module: {i.symbol for i in m.imports} for m in p.modules if m.module in same}
    actual_b = {m: {i.symbol for i in pb.imports.get(m, ())} for m in same}
    r, pr, na, np_, nb = recall_precision(pred_b, actual_b)
    print(f"prediction vs {args.b}'s own .ko of the same name ({len(same)} modules): recall {r:.3f}, "
          f"precision {pr:.3f} ({na} imports, {np_} predicted, {nb} in both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
