"""The compiler as the oracle, on real data (issue 14, point 4).

In-tree half: Debian's 6.1 kernel whose version matches the ``linux-source-6.1`` package (6.1.0-57,
6.1.192), loaded with its source graph; for every in-tree module with attributed source files, the
exported symbols its source graph reaches (:mod:`ksymgraph.queries.fidelity`) against its ``.ko``
imports. Prints recall and precision overall, with and without the compiler-inserted imports
(``COMPILER_INSERTS``), the 20 worst modules with what they miss and over-predict, the
symbols most often missed and over-predicted with their module counts, and, for the inserts
decided function by function (``__stack_chk_fail`` from ``Function.canary``,
``__x86_indirect_thunk_rax`` from ``Function.indirect``), how each would fare from the module's
own functions alone, with the header functions they call directly, and with the whole walk the
measure follows (what the graph predicts).

Out-of-tree half: LTTng 2.13.9 built against 6.1 headers (:func:`ksymgraph.loaders.oot.build_dkms_modules`,
cached) and loaded with its source: the run-time lookups the source graph reports (``LOOKS_UP``)
against the lookup names the built ``.ko`` files contain — a string constant loaded into the first
argument register (``%rdi``) right before a call of a lookup function, read from the objects'
relocations with ``objdump -dr`` (independent of ksymgraph's loaders).

    python tests/bench/bench_oracle.py [--db PATH] [--kernel 6.1.0-57-amd64] [--depths 0,2,4,16] [--no-lttng]

``--db`` reuses a store that already holds the kernel with its source (else one is loaded into a
temporary directory: about 4 minutes with the source index cached).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from ksymgraph.graph.connect import open_store
from ksymgraph.graph.load import load_kernel
from ksymgraph.loaders.compiler import COMPILER_INSERTED
from ksymgraph.queries.fidelity import fidelity, predicted_imports

#: Functions whose first argument is the name looked up (the kernel's, and LTTng's wrappers as
#: they appear in the objects: kallsyms_lookup_funcptr/dataptr are inlines around the wrapper).
LOOKUP_CALLS = {"kallsyms_lookup_name", "module_kallsyms_lookup_name", "__symbol_get",
                "wrapper_kallsyms_lookup_name"}
_RELOC = re.compile(r"^\s*[0-9a-f]+: (R_X86_64_\w+)\s+(\S+?)([+-]0x[0-9a-f]+)?$")


def in_tree(args) -> None:
    if args.db:
        store = open_store(args.db, read_only=True)
    else:
        tmp = tempfile.mkdtemp(prefix="bench-oracle-")
        store = open_store(Path(tmp) / "graph.lbdb")
        t0 = time.perf_counter()
        load_kernel(store, [f"debian:{args.kernel}"], source_dirs=["debian"])
        print(f"loaded {args.kernel} with its source in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    before = fidelity(store, args.kernel, types=("CALLS", "REFERENCES"))
    after = fidelity(store, args.kernel)
    secs = time.perf_counter() - t0
    predicted_of = predicted_imports(store, args.kernel, [m.module for m in after.modules], after.depth,
                                     after.relationships)
    print(f"kernel {args.kernel}: fidelity of the source graph against the .ko imports ({secs:.1f} s for both)")
    print(f"  without compiler-inserted ({'+'.join(before.relationships)}): {before.summary()}")
    print(f"  with    compiler-inserted ({'+'.join(after.relationships)}): {after.summary()}")
    print(f"  per module (median): recall {statistics.median(m.recall for m in after.modules):.3f}, "
          f"precision {statistics.median(m.precision for m in after.modules):.3f}")
    for depth in args.depths:
        d = fidelity(store, args.kernel, depth=depth)
        print(f"  header inlines and macros followed {depth} deep: {d.summary()}")
    print(f"\n20 worst modules (missed + over-predicted), with {'+'.join(after.relationships)}:")
    print("| module | imports | predicted | both | recall | precision | missed (first 8) | over-predicted (first 8) |")
    print("|---|---|---|---|---|---|---|---|")
    for m in after.worst(20):
        print(f"| {m.module} | {m.imports} | {m.predicted} | {m.both} | {m.recall:.3f} | {m.precision:.3f} | "
              f"{len(m.missed)}: {', '.join(m.missed[:8])} | {len(m.over)}: {', '.join(m.over[:8])} |")
    print("\nthe compiler-inserted list against the .ko imports (modules):")
    print("| symbol | options | trigger | import it | predicted | both | missed | over-predicted |")
    print("|---|---|---|---|---|---|---|---|")
    for e in COMPILER_INSERTED:
        imp = sum(1 for m in after.modules if e.symbol in m.missed) + sum(
            1 for m in after.modules if e.symbol in predicted_of[m.module] and e.symbol not in m.over)
        pred = sum(1 for m in after.modules if e.symbol in predicted_of[m.module])
        over = sum(1 for m in after.modules if e.symbol in m.over)
        miss = sum(1 for m in after.modules if e.symbol in m.missed)
        print(f"| {e.symbol} | {' '.join(e.options) or '-'} | {e.trigger} | {imp} | {pred} | {pred - over} | "
              f"{miss} | {over} |")
    print("\nper-function triggers: the module's own functions / + header functions they call / the whole walk:")
    print("| symbol | flag | import it | reach | predicted | both | missed | over-predicted |")
    print("|---|---|---|---|---|---|---|---|")
    for symbol, flag in (("__stack_chk_fail", "canary"), ("__x86_indirect_thunk_rax", "indirect")):
        importers = {m.module for m in after.modules if symbol in m.missed or
                     (symbol in predicted_of[m.module] and symbol not in m.over)}
        own = _modules_flagged(store, args.kernel, flag, _OWN_FLAGGED)
        direct = own | _modules_flagged(store, args.kernel, flag, _CALLS_FLAGGED_HEADER)
        walk = {m.module for m in after.modules if symbol in predicted_of[m.module]}
        for reach, pred in (("own functions", own), ("+ header functions called", direct), ("whole walk", walk)):
            pred = pred & {m.module for m in after.modules}
            print(f"| {symbol} | {flag} | {len(importers)} | {reach} | {len(pred)} | {len(pred & importers)} | "
                  f"{len(importers - pred)} | {len(pred - importers)} |")
    print("\nmost missed (symbol: modules):", ", ".join(f"{s} {n}" for s, n in after.most_missed(25)))
    print("\nmost over-predicted (symbol: modules):", ", ".join(f"{s} {n}" for s, n in after.most_over(25)))
    store.close()


# A Function property named by the bench (``canary`` or ``indirect``, constants below), never by user text.
_OWN_FLAGGED = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(f:Function)
WHERE m.kernel = $kernel AND f.{flag} = true
RETURN DISTINCT m.name
"""
_CALLS_FLAGGED_HEADER = """
MATCH (m:Module)<-[:BUILT_INTO]-(:File)<-[:DEFINED_IN]-(:Function)-[:CALLS]->(h:Function)
WHERE m.kernel = $kernel AND h.file ENDS WITH '.h' AND h.{flag} = true
RETURN DISTINCT m.name
"""


def _modules_flagged(store, kernel: str, flag: str, query: str) -> set[str]:
    assert flag in ("canary", "indirect")
    return {r[0] for r in store.query(query.format(flag=flag), {"kernel": kernel}).rows}


def ko_lookup_names(ko: Path) -> set[str]:
    """Names a module looks up, from its code: a string constant moved into %rdi, then a call of a
    lookup function with no other call, jump, return or write of %rdi between (gcc schedules the
    load of the argument some instructions before the call)."""
    from elftools.elf.elffile import ELFFile

    with ko.open("rb") as f:
        elf = ELFFile(f)
        strings = {s.name: s.data() for s in elf.iter_sections() if s.name.startswith(".rodata.str")}
    out = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", str(ko)], check=True, capture_output=True,
                         text=True).stdout
    names = set()
    pending, last_insn = None, ""
    for line in out.splitlines():
        m = _RELOC.match(line)
        if m:
            kind, target, addend = m.groups()
            if target in strings and re.search(r",%[re]di\s*$", last_insn):
                off = int(addend or "0x0", 16) + (4 if kind == "R_X86_64_PC32" else 0)  # lea x(%rip): -4
                data = strings[target]
                pending = data[off:data.find(b"\0", off)].decode("ascii", "replace")
            elif "\tcall" in last_insn and target != "__fentry__":
                if target in LOOKUP_CALLS and pending:
                    names.add(pending)
                pending = None  # any other call may clobber %rdi
            continue
        if re.match(r"^\s*[0-9a-f]+:\t", line):
            last_insn = line
            if re.search(r",%[re]di\s*$", line) or "\tret" in line or "\tjmp" in line:
                pending = None  # %rdi written again (a string load sets it back on its relocation line)
    return names


def out_of_tree(args) -> None:
    from ksymgraph.loaders import oot

    t0 = time.perf_counter()
    modules = oot.build_dkms_modules("lttng-modules-dkms", args.lttng_kernel, ("CONFIG_LTTNG=m",))
    build = modules.parent / "build"
    tmp = tempfile.mkdtemp(prefix="bench-oracle-lttng-")
    store = open_store(Path(tmp) / "graph.lbdb")
    load_kernel(store, [f"debian:{args.lttng_kernel}", str(build)], source_dirs=[str(build)])
    rows = store.query("MATCH (m:Module)-[l:LOOKS_UP]->(s:Symbol) WHERE m.kernel = $k AND m.name STARTS WITH 'lttng' "
                       "RETURN m.name, s.name, l.how, l.file, l.line", {"k": args.lttng_kernel}).rows
    store.close()
    reported: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    kprobes = []
    for module, symbol, how, file, line in rows:
        if how == "kprobe":  # a kprobe's .symbol_name is data, not a call: compared apart, below
            kprobes.append((module, symbol, f"{file}:{line}"))
            continue
        reported[module].add(symbol)
        where[(module, symbol)] = f"{file}:{line}"
    actual: dict[str, set[str]] = {}
    for ko in sorted(modules.rglob("*.ko")):
        actual[ko.stem.replace("-", "_")] = ko_lookup_names(ko)
    mods = sorted(set(actual) | set(reported))
    both = sum(len(actual.get(m, set()) & reported.get(m, set())) for m in mods)
    n_actual = sum(len(v) for v in actual.values())
    n_reported = sum(len(v) for v in reported.values())
    print(f"\nLTTng 2.13.9 against {args.lttng_kernel} ({len(actual)} .ko files, {time.perf_counter() - t0:.0f} s): "
          f"lookups in the objects {n_actual}, reported by the source graph {n_reported} (kprobe symbol names "
          f"compared apart below: data, not calls), in both {both}; recall {both / n_actual if n_actual else 1:.3f}, "
          f"precision {both / n_reported if n_reported else 1:.3f}")
    ko_of = {ko.stem.replace("-", "_"): ko for ko in modules.rglob("*.ko")}
    for module, symbol, at in sorted(set(kprobes)):
        ko = ko_of.get(module)
        present = ko is not None and symbol.encode() + b"\0" in ko.read_bytes()
        print(f"  kprobe on {symbol} reported for {module} ({at}): the name is "
              f"{'in' if present else 'NOT in'} the .ko's strings")
    for m in mods:
        a, r = actual.get(m, set()), reported.get(m, set())
        if a - r or r - a:
            print(f"  {m}: in the .ko, not reported: {', '.join(sorted(a - r)) or '-'}; reported, not in the .ko: "
                  + (", ".join(f"{s} ({where[(m, s)]})" for s in sorted(r - a)) or "-"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", help="a store holding the kernel with its source (default: load one)")
    p.add_argument("--kernel", default="6.1.0-57-amd64", help="the kernel matching linux-source-6.1 (6.1.192)")
    p.add_argument("--lttng-kernel", default="6.1.0-50-amd64", help="the kernel LTTng is built against (cached build)")
    p.add_argument("--depths", type=lambda v: [int(x) for x in v.split(",") if x], default=[0, 2, 4, 16],
                   help="also measure with header inlines and macros followed this deep (comma list; default 0,2,4,16)")
    p.add_argument("--no-lttng", action="store_true", help="skip the out-of-tree half")
    p.add_argument("--no-intree", action="store_true", help="skip the in-tree half")
    args = p.parse_args(argv)
    if not args.no_intree:
        in_tree(args)
    if not args.no_lttng:
        out_of_tree(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
