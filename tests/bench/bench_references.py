"""Benchmark: how much of a module's real imports its source graph reaches, on a few directories of
linux-source-6.1 against Debian's ``.ko`` files of the same 6.1.192.

Run as a script (not collected by pytest)::

    python tests/bench/bench_references.py [--dirs drivers/hwmon/,drivers/misc/eeprom/] [--workers 2]
                                          [--old /path/to/a/checkout/of/main]

For every module Kbuild builds from ``--dirs`` under Debian's ``config-6.1.0-56-amd64``: start at
the functions of its own files, follow ``CALLS`` and ``REFERENCES`` (into functions of its own files
and of headers: inlines and macros, never another module's code), and take every exported name
reached (an export of Module.symvers) as predicted. Recall and precision are against the module's
undefined symbols, read from its ``.ko``; recall is also given without the symbols the compiler
inserts (``__fentry__``, retpoline thunks, ``__stack_chk_fail``...: issue 14 point 3b, not the
source's). The index goes to a temporary directory (never the shared cache's), so nothing another
run uses is touched. With ``--old``, the same measure runs first with that checkout's code (a
``git worktree`` of main: CALLS only), in the same run, and the ratio of the index times is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RELEASE = "6.1.0-56-amd64"  # 6.1.192-2: linux-source-6.1 is 6.1.192-3

#: Imports the compiler adds on its own (kept apart: the source cannot name them).
COMPILER = re.compile(r"^(__fentry__|__x86_return_thunk|__x86_indirect_thunk_\w+|__x86_indirect_call_thunk_\w+|"
                      r"__stack_chk_fail|fortify_panic|__ubsan_\w+|__kasan\w*|__sanitizer\w*)$")

MEASURE = r'''
import ksymgraph.loaders.ctree
print(ksymgraph.loaders.ctree.__file__)
import json, os, sys, time
from pathlib import Path
from ksymgraph.graph.build import build_kernel_graph
from ksymgraph.loaders.cfiles import tree_files
from ksymgraph.loaders.cindex import index_tree
from ksymgraph.loaders.kbuild import evaluate_kbuild
from ksymgraph.loaders.macros import index_macros
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.loaders.records import KernelMeta
from ksymgraph.loaders.symvers import read_symvers
from ksymgraph.loaders.trees import SourceTree

root, config, modules_dir, symvers, out, workers, dirs = sys.argv[1:8]
dirs = tuple(dirs.split(","))
t0 = time.monotonic()
built = {b.file: b.module for b in evaluate_kbuild(root, config)}
c_files = sorted(f for f in built if f.endswith(".c") and f.startswith(dirs) and built[f] != "vmlinux")
headers = [h for h in tree_files(root).headers if h.startswith(("include/", "arch/x86/include/"))]
t1 = time.monotonic()
res = index_tree(root, files=c_files, workers=int(workers), shard_dir=out, progress=False)
index_macros(root, out, headers, c_files)
t2 = time.monotonic()
kos = {f[:-3].replace("-", "_"): os.path.join(d, f) for d, _, fs in os.walk(Path(modules_dir) / "kernel")
       for f in fs if f.endswith(".ko")}
mods = [read_module_file(kos[m]) for m in sorted({built[f] for f in c_files}) if m in kos]
entries, _ = read_symvers(symvers)
exported = {e.export.symbol for e in entries}
tree = SourceTree(Path(root), Path(out), "", {f: built[f] for f in c_files}, [], res.stats)
batch, report = build_kernel_graph(KernelMeta("k", "", "amd64", ""), mods, entries, sources=[tree])
fn = batch.nodes["Function"].to_pydict()
info = dict(zip(fn["id"], zip(fn["name"], fn["file"])))
edges = {}
for key, t in batch.rels.items():
    if key[0] in ("CALLS", "REFERENCES") and key[1] == "Function":
        for a, b in zip(t["from"].to_pylist(), t["to"].to_pylist()):
            edges.setdefault(a, set()).add(b)
own = {}
for i, (n, f) in info.items():
    if f in tree.built_into:
        own.setdefault(tree.built_into[f], []).append(i)
rows = []
for m in mods:
    name = m.info.name
    seen, stack, reached = set(), list(own.get(name, [])), set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for y in edges.get(x, ()):
            if y in info:
                n, f = info[y]
                reached.add(n)
                if f.endswith(".h") or tree.built_into.get(f) == name:
                    stack.append(y)
            else:
                reached.add(y.split("|", 1)[1])
    rows.append([name, sorted(reached & exported), sorted(set(m.imports.symbols))])
print(json.dumps({"files": len(c_files), "parsed": res.stats.files, "index_s": t2 - t1, "rows": rows,
                  "references": report.source.get("REFERENCES->Symbol", 0) + report.source.get("REFERENCES->Function", 0)}))
'''


#: Which code ran: the first line of the child's output.
CHECK = "\nimport ksymgraph.loaders.ctree as _c\n"

def measure(code: Path, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    # (run elsewhere: the current directory comes first on sys.path, and a checkout has ksymgraph/)
    done = subprocess.run([sys.executable, "-c", MEASURE + CHECK, *args], capture_output=True, text=True, env=env,
                          check=True, cwd=code)
    assert done.stdout.splitlines()[0] == str(code / "ksymgraph" / "loaders" / "ctree.py"), done.stdout[:300]
    return json.loads(done.stdout.splitlines()[-1])


def package_path(checkout: Path, tmp: Path) -> Path:
    """A directory that imports ``ksymgraph`` from ``checkout`` (its folders as pyproject maps them)."""
    pkg = tmp / "pkg" / "ksymgraph"
    pkg.mkdir(parents=True)
    for entry in (checkout / "ksymgraph").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for sub in ("graph", "loaders", "queries"):
        (pkg / sub).symlink_to(checkout / sub)
    return pkg.parent


def summary(label: str, m: dict) -> None:
    tp = fp = fn = tp2 = fn2 = 0
    missed: dict[str, int] = {}
    for _name, pred, imports in m["rows"]:
        pred, imports = set(pred), set(imports)
        real = {s for s in imports if not COMPILER.match(s)}
        tp, fp, fn = tp + len(pred & imports), fp + len(pred - imports), fn + len(imports - pred)
        tp2, fn2 = tp2 + len(pred & real), fn2 + len(real - pred)
        for s in real - pred:
            missed[s] = missed.get(s, 0) + 1
    print(f"{label}: {len(m['rows'])} modules from {m['files']} files ({m['parsed']} parsed with their headers) "
          f"in {m['index_s']:.1f} s; {m['references']} references")
    print(f"  recall {tp / (tp + fn):.3f}, precision {tp / max(tp + fp, 1):.3f} "
          f"(imports {tp + fn}, predicted {tp + fp}, both {tp})")
    print(f"  recall without compiler-inserted imports {tp2 / (tp2 + fn2):.3f} ({tp2} of {tp2 + fn2})")
    print("  most missed (modules):", ", ".join(f"{s} {n}" for s, n in sorted(missed.items(), key=lambda x: -x[1])[:15]))


def main() -> None:
    from ksymgraph.loaders import debian, trees

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dirs", default="drivers/hwmon/,drivers/misc/eeprom/")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--old", type=Path, help="a checkout of main to measure first, with its code")
    a = ap.parse_args()
    k = debian.fetch_kernel(RELEASE)
    root = trees.debian_source_tree(RELEASE)
    config = k.config
    here = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="bench-refs-") as tmp:
        tmp = Path(tmp)
        args = [str(root), str(config), str(k.modules_dir), str(k.symvers)]
        results = []
        for label, checkout in ([("old", a.old)] if a.old else []) + [("new", here)]:
            code = package_path(checkout.resolve(), tmp / label)
            t = time.monotonic()
            results.append((label, measure(code, [*args, str(tmp / label / "index"), a.workers, a.dirs])))
            print(f"({label}: {time.monotonic() - t:.0f} s in all)", file=sys.stderr)
        for label, m in results:
            summary(f"{label} ({'CALLS only' if label == 'old' else 'CALLS + REFERENCES'})", m)
        if len(results) == 2:
            print(f"index time new/old: {results[1][1]['index_s'] / results[0][1]['index_s']:.2f}x")


if __name__ == "__main__":
    main()
