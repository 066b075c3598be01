"""Benchmark: a what-if's call sites against the compiled modules, function by function.

Run as a script (not collected by pytest)::

    python tests/bench/bench_sites_oracle.py --db X [SYMBOL ...]

``X`` holds a kernel loaded with its source (``ksymgraph load debian:6.1.0-57-amd64 --source
debian``). For each symbol (default: the ones gcc's constant folding decides most often), the
what-if ``--unexport SYMBOL`` lists call sites in every module that imports it. The oracle is the
``.ko`` itself: the relocations of its code sections that name the symbol, each put down to the
function symbol whose bytes hold it (``st_value`` .. ``st_value + st_size`` of an ``STT_FUNC``;
gcc's ``.cold``, ``.part.N``, ``.isra.N``, ``.constprop.N`` clones count as their function). A
site's function that the ``.ko`` has no symbol for (a static function gcc inlined into its
callers) cannot be checked and is counted apart. Per (module, function) pair: precision = listed
pairs the ``.ko`` confirms / listed pairs it can check, recall = confirmed pairs listed / pairs
the ``.ko`` has; and the modules that import the symbol but get no site. The same is printed for
the walk without gcc's folding (every call of an inline's body taken as compiled), as the peer.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

#: Symbols whose call sites gcc's folding decides: the kmalloc family, string builtins, delays.
DEFAULT = ["kmalloc_large", "__kmalloc", "kmalloc_trace", "kmalloc_caches", "memset", "memcpy", "__udelay",
           "__const_udelay", "__check_object_size", "__msecs_to_jiffies"]

_CLONE = re.compile(r"\.(?:cold|part|isra|constprop|localalias)(?:\.\d+)?")


def referencing_functions(path: str, symbols: set[str]) -> tuple[dict[str, set[str]], set[str]]:
    """symbol → the functions of the object at ``path`` whose code references it; and the names of
    all its function symbols."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    from elftools.elf.sections import SymbolTableSection

    out: dict[str, set[str]] = defaultdict(set)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = next(s for s in elf.iter_sections() if isinstance(s, SymbolTableSection))
        by_section: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        names: set[str] = set()
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int):
                base = _CLONE.split(sym.name)[0]
                names.add(base)
                by_section[sym["st_shndx"]].append((sym["st_value"], sym["st_value"] + max(sym["st_size"], 1), base))
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection) or sec["sh_info"] not in by_section:
                continue
            funcs = by_section[sec["sh_info"]]
            for rel in sec.iter_relocations():
                name = symtab.get_symbol(rel["r_info_sym"]).name
                if name not in symbols:
                    continue
                at = rel["r_offset"]
                for lo, hi, fn in funcs:
                    if lo <= at < hi:
                        out[name].add(fn)
                        break
    return out, names


#: (path, symbols) → what :func:`referencing_functions` read: each .ko is read once per run.
_ORACLE: dict[tuple[str, frozenset[str]], tuple[dict[str, set[str]], set[str]]] = {}


def measure(store, kernel: str, symbols: list[str], folded: bool):
    """Per symbol: (symbol, importers, importers without a site, sites listed, listed in functions
    the .ko has no symbol for, checked, confirmed by the .ko, (module, function) pairs the .ko has,
    seconds of the what-if); ``folded`` False takes every edge as compiled."""
    import ksymgraph.queries.callsites as cs
    from ksymgraph.graph.projection import KernelProjection
    from ksymgraph.queries.whatif import parse_changes, what_if

    proj = KernelProjection.from_store(store, kernel)
    paths = dict(store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name, m.path", {"k": kernel}).rows)
    keep = cs.path_compiled
    if not folded:
        cs.path_compiled = lambda steps: True
    rows = []
    try:
        for symbol in symbols:
            t0 = time.perf_counter()
            r = cs.add_source_evidence(what_if(proj, parse_changes(unexport=[symbol])), store)
            seconds = time.perf_counter() - t0
            importers = [b.module for b in r.broken if any(x.symbol == symbol and x.rule != "dependency"
                                                           for x in b.reasons)]
            listed = checked = confirmed = truth = unchecked = empty = 0
            for m in importers:
                path = paths.get(m)
                if not path or not Path(path).exists():
                    continue
                key = (path, frozenset(symbols))
                if key not in _ORACLE:
                    _ORACLE[key] = referencing_functions(path, set(symbols))
                refs, names = _ORACLE[key]
                true_fns = refs.get(symbol, set())
                fns = {s.function for s in r.call_sites.get(m, []) if s.symbol == symbol}
                if not fns:
                    empty += 1
                listed += len(fns)
                check = {f for f in fns if f in names}
                unchecked += len(fns - check)
                checked += len(check)
                confirmed += len(check & true_fns)
                truth += len(true_fns)
            rows.append((symbol, len(importers), empty, listed, unchecked, checked, confirmed, truth, seconds))
    finally:
        cs.path_compiled = keep
    return rows


def main() -> None:
    from ksymgraph.graph.connect import open_store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--kernel")
    ap.add_argument("symbols", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    store = open_store(args.db, read_only=True)
    kernel = store.resolve_kernel(args.kernel)
    print(f"what-if call sites against the .ko files' relocations, per (module, function), {kernel}")
    print(f"{'symbol':22} {'walk':9} {'importers':>9} {'no site':>7} {'listed':>7} {'no sym':>6} "
          f"{'checked':>7} {'in .ko':>6} {'.ko has':>7} {'precision':>9} {'recall':>6} {'s':>5}")
    totals = {}
    for folded in (True, False):
        for symbol, imp, empty, listed, unchecked, checked, confirmed, truth, seconds in measure(
                store, kernel, args.symbols, folded):
            walk = "folded" if folded else "unfolded"
            t = totals.setdefault(walk, [0] * 7)
            for i, v in enumerate((imp, empty, listed, unchecked, checked, confirmed, truth)):
                t[i] += v
            print(f"{symbol:22} {walk:9} {imp:9} {empty:7} {listed:7} {unchecked:6} {checked:7} {confirmed:6} "
                  f"{truth:7} {confirmed / checked if checked else 0:9.3f} {confirmed / truth if truth else 0:6.3f} "
                  f"{seconds:5.1f}")
    for walk, (imp, empty, listed, unchecked, checked, confirmed, truth) in totals.items():
        print(f"{'all':22} {walk:9} {imp:9} {empty:7} {listed:7} {unchecked:6} {checked:7} {confirmed:6} {truth:7} "
              f"{confirmed / checked if checked else 0:9.3f} {confirmed / truth if truth else 0:6.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
