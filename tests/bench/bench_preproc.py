"""Benchmark: the whole linux-source-6.1 index with the preprocessor pass against without it, same run.

Run as a script (not collected by pytest)::

    python tests/bench/bench_preproc.py [--workers 2] [--config /boot/config-6.1.0-57-amd64]

The tree is Debian's ``linux-source-6.1`` (cached in ``$KSYMGRAPH_CACHE``); the ``.config`` is that
of the Debian kernel built from the same source version (default: the cached
``linux-image-6.1.0-57-amd64`` package, 6.1.192-3). Both indexes are built cold into temporary
directories, one after the other, with ``MODULE`` per file from the Kbuild attribution as
``ksymgraph load --source`` does; then one file is changed and re-indexed under the context (the
incremental path). Prints the wall times and their ratio, the conditions decided and kept, the
lines left out, the rows of each index, and the notes (bad directives, file:line) found.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

from ksymgraph.loaders import cindex, debian, kbuild, trees
from ksymgraph.loaders.preproc import context_for_build, tree_version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default=None)
    parser.add_argument("--only", default="", help="pp or plain: build one index only")
    args = parser.parse_args()
    config = args.config or next(iter(sorted(glob.glob(str(
        debian.cache_dir() / "debs" / "linux-image-6.1.0-57-amd64_*" / "boot" / "config-*")))), None)
    if config is None:
        raise SystemExit("no config: pass --config")
    unpacked, _ = debian.fetch_package("linux-source-6.1")
    tarball = next(iter(sorted(unpacked.glob("usr/src/linux-source-*.tar.xz"))))
    root = trees.unpack_source_tarball(tarball, debian.cache_dir() / "src" / unpacked.name)
    values = kbuild.read_config(config)
    version = tree_version(root)
    started = time.monotonic()
    built: dict[str, set[str]] = collections.defaultdict(set)
    for rec in kbuild.evaluate_kbuild(root, values):
        built[rec.file].add(rec.module)
    modules = trees._module_flags(built)
    kbuild_s = time.monotonic() - started
    ctx = context_for_build(values, version)
    print(f"tree: {root} {version}; config: {config} ({len(values)} options, arch {ctx.arch}); "
          f"{sum(m is True for m in modules.values())} files in modules, "
          f"{sum(m is False for m in modules.values())} built in, {sum(m is None for m in modules.values())} both "
          f"(Kbuild walk {kbuild_s:.1f} s); {os.cpu_count()} CPUs")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ksg-bench-pp-") as tmp:
        for name, pp in (("plain", None), ("pp", ctx)):
            if args.only and name != args.only:
                continue
            shard_dir = Path(tmp) / name
            started = time.monotonic()
            r = cindex.index_tree(root, workers=args.workers, shard_dir=shard_dir, progress=False,
                                  preproc=pp, modules=modules if pp else None)
            rows[name] = (time.monotonic() - started, r)
            print(f"{name}: {rows[name][0]:.1f} s, {r.stats.files} files, rows {r.rows}, {r.stats}", flush=True)
        if "pp" in rows:
            target = root / "kernel" / "sched" / "core.c"
            original = target.read_bytes()
            try:
                target.write_bytes(original + b"\n/* ksymgraph bench */\n")
                started = time.monotonic()
                res = cindex.index_tree(root, workers=args.workers, shard_dir=Path(tmp) / "pp", progress=False,
                                        preproc=ctx, modules=modules)
                one = time.monotonic() - started
            finally:
                target.write_bytes(original)
            cindex.index_tree(root, workers=args.workers, shard_dir=Path(tmp) / "pp", progress=False,
                              preproc=ctx, modules=modules)
            print(f"pp one-file re-index: parsed {res.parsed}, reused {res.reused}, {one:.2f} s")
            notes = [e for e in rows["pp"][1].errors if e.reason.startswith("preprocessor:")]
            print(f"preprocessor notes: {len(notes)}; by kind: "
                  f"{collections.Counter(e.reason.split(': ')[-1] for e in notes).most_common(8)}")
            for e in notes[:10]:
                print(f"  {e.path}: {e.reason}")
    if len(rows) == 2:
        (t0, plain), (_t1, pp) = rows["plain"], rows["pp"]
        s = pp.stats
        total = s.conditions_decided + s.conditions_kept
        print(f"\n{'index':10} {'wall s':>8} {'ratio':>7} {'functions':>10} {'calls':>10} {'lookups':>8}")
        for name, (t, r) in rows.items():
            print(f"{name:10} {t:8.1f} {t / t0:6.2f}x {r.rows['functions']:10} {r.rows['calls']:10} "
                  f"{r.rows['lookups']:8}")
        print(f"conditions decided {s.conditions_decided} ({s.conditions_decided / max(total, 1):.1%}), kept "
              f"{s.conditions_kept}; lines left out {s.lines_blanked}; files {s.files} vs {plain.stats.files} "
              f"(headers no longer included from live code are not indexed)")


if __name__ == "__main__":
    sys.exit(main())
