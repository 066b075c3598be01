"""Benchmark: the tree-sitter source index against ctags, gtags and cscope on linux-source-6.1.

Run as a script (not collected by pytest)::

    python tests/bench/bench_source.py [--workers 2] [--skip gtags,...]

All tools run in the same process tree, one after the other, on the same unpacked tree (taken from
the Debian ``linux-source-6.1`` package, cached in ``$KSYMGRAPH_CACHE``). A row times tree-sitter's
parse alone over the files the index read: the floor for any tree-sitter index. Each tool runs as a child
under ``/usr/bin/time`` for its wall time and peak resident set size (the largest single process:
for ksymgraph the parent or one worker). ksymgraph's index is built cold into a temporary
directory, then one file is changed and re-indexed (the incremental path).
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

from ksymgraph.loaders import cindex, debian, trees

INDEX = """
import sys
from ksymgraph.loaders import cindex
r = cindex.index_tree(sys.argv[1], workers=int(sys.argv[3]), shard_dir=sys.argv[2], progress=False)
print(f"files={r.stats.files} functions={r.rows['functions']} calls={r.rows['calls']} "
      f"exports={r.rows['exports']} lookups={r.rows['lookups']} error_share={r.stats.function_error_share():.4f}")
"""


# tree-sitter's own parse of the same files, with nothing around it: the floor of any tree-sitter
# index on this machine (headers without a brace are skipped, as the index skips them).
PARSE_ONLY = """
import json, multiprocessing, sys
from pathlib import Path
from ksymgraph.loaders import cparse
root = Path(sys.argv[1])
files = sorted(json.loads((Path(sys.argv[2]) / "manifest.json").read_bytes())["files"])
def parse(rel):
    src = (root / rel).read_bytes()
    if rel.endswith(".c") or b"{" in src:
        cparse._tree_sitter()[0].parse(src)
    return len(src)
with multiprocessing.get_context("fork").Pool(int(sys.argv[3])) as pool:
    total = sum(pool.imap_unordered(parse, files, chunksize=64))
print(f"files={len(files)} bytes={total >> 20} MiB")
"""


def kernel_tree() -> Path:
    unpacked, _ = debian.fetch_package("linux-source-6.1")
    tarball = next(iter(sorted(unpacked.glob("usr/src/linux-source-*.tar.xz"))))
    return trees.unpack_source_tarball(tarball, debian.cache_dir() / "src" / unpacked.name)


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stdout) of ``cmd`` run under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        started = time.monotonic()
        done = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%M", *cmd], cwd=cwd,
                              capture_output=True, text=True, errors="replace")
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {done.stderr[-500:]}")
        rss_kb = int(t.read().strip().splitlines()[-1])
    return wall, rss_kb // 1024, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated rows to skip: parse,ctags,gtags,cscope")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    root = kernel_tree()
    files = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, dirs, names in os.walk(root)
        for f in names
        if f.endswith((".c", ".h")) and not os.path.relpath(d, root).startswith(".")
    )
    n_c = sum(f.endswith(".c") for f in files)
    print(f"tree: {root} ({n_c} .c, {len(files) - n_c} .h files); {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ksg-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "files").write_text("\n".join(files) + "\n")

        shard_dir = tmp / "index"
        wall, rss, out = timed([sys.executable, "-c", INDEX, str(root), str(shard_dir), str(args.workers)], root)
        rows.append((f"ksymgraph index_tree ({args.workers} workers)", wall, rss, out))

        # the incremental path: change one file, re-index, restore it, re-index
        target = root / "kernel" / "sched" / "core.c"
        original = target.read_bytes()
        try:
            target.write_bytes(original + b"\n/* ksymgraph bench */\n")
            started = time.monotonic()
            res = cindex.index_tree(root, workers=args.workers, shard_dir=shard_dir, progress=False)
            one = time.monotonic() - started
            assert res.parsed == 1, res.parsed
        finally:
            target.write_bytes(original)
        started = time.monotonic()
        res = cindex.index_tree(root, workers=args.workers, shard_dir=shard_dir, progress=False)
        back = time.monotonic() - started
        rows.append(("ksymgraph one-file re-index", one, 0, f"parsed {1}; restore: {back:.2f} s"))

        if "parse" not in skip:
            wall, rss, out = timed([sys.executable, "-c", PARSE_ONLY, str(root), str(shard_dir), str(args.workers)],
                                   root)
            rows.append((f"tree-sitter parse alone ({args.workers} procs)", wall, rss, out))

        if "ctags" not in skip and shutil.which("ctags"):
            wall, rss, _ = timed(["ctags", "-R", "--languages=C", "--langmap=C:.c.h", "-f", str(tmp / "tags"), "."], root)
            rows.append(("ctags -R --languages=C", wall, rss, f"{sum(1 for _ in open(tmp / 'tags', 'rb'))} tags"))
        if "gtags" not in skip and shutil.which("gtags"):
            (tmp / "gtags").mkdir()
            wall, rss, _ = timed(["gtags", "-f", str(tmp / "files"), str(tmp / "gtags")], root)
            rows.append(("gtags -f files", wall, rss, f"{(tmp / 'gtags' / 'GRTAGS').stat().st_size >> 20} MB GRTAGS"))
        if "cscope" not in skip and shutil.which("cscope"):
            wall, rss, _ = timed(["cscope", "-bqk", "-i", str(tmp / "files"), "-f", str(tmp / "cscope.out")], root)
            rows.append(("cscope -bqk -i files", wall, rss, f"{(tmp / 'cscope.out').stat().st_size >> 20} MB"))

    ours = rows[0][1]
    print(f"\n{'tool':36} {'wall s':>8} {'vs ours':>8} {'peak RSS MB':>12}  notes")
    for name, wall, rss, note in rows:
        ratio = f"{wall / ours:.2f}x" if "one-file" not in name else ""
        print(f"{name:36} {wall:8.2f} {ratio:>8} {rss or '':>12}  {note}")


if __name__ == "__main__":
    main()
