"""Two loads of one source tree at once: the index directory is written by one at a time.

Before the lock, two ``ksymgraph load --source`` runs over the same tree (two users, or a load and
a test) wrote the same shard files at once and left them unreadable ("Couldn't deserialize thrift:
No more data to read", found when a whole-kernel load read ``macros/calls.parquet``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq

from ksymgraph.loaders import trees

INDEX = textwrap.dedent("""
    import sys
    from ksymgraph.loaders import cindex, trees
    t = trees.index_source_tree(sys.argv[1], workers=1, progress=True)
    print(t.shard_dir, cindex.read_table(t.shard_dir, "functions").num_rows, cindex.read_table(t.shard_dir, "calls").num_rows)
""")


def _tree(root: Path, files: int = 300) -> Path:
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "h.h").write_text("#define twice(x) helper(x) + helper(x)\n"
                                      "static inline int inl(int x) { return twice(x); }\n")
    for i in range(files):
        body = "\n".join(f"int f{i}_{j}(int x) {{ return inl(x) + g{j}(x, {j}); }}" for j in range(40))
        (root / f"f{i}.c").write_text(f'#include "inc/h.h"\n{body}\n')
    return root


def _start(root: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", INDEX, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, KSYMGRAPH_CACHE=str(cache)))


def test_two_indexers_of_one_tree_leave_readable_shards(tmp_path):
    root = _tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    runs = [_start(root, cache), _start(root, cache)]
    out = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [e[-2000:] for _, e in out]
    shard_dirs = {o.split()[0] for o, _ in out}
    assert len(shard_dirs) == 1
    counts = {tuple(o.split()[1:]) for o, _ in out}
    # 300 files x 40 functions, 2 calls each; and the header's inline with its call
    assert counts == {("12001", "24001")}
    shard_dir = Path(shard_dirs.pop())
    files = list(shard_dir.rglob("*.parquet"))
    assert files and all(pq.read_table(f).num_rows >= 0 for f in files)
    assert not list(shard_dir.rglob("*.tmp"))


def test_a_second_indexer_waits_and_says_so(tmp_path, monkeypatch):
    root = _tree(tmp_path / "tree", files=3)
    cache = tmp_path / "cache"
    monkeypatch.setenv("KSYMGRAPH_CACHE", str(cache))
    shard_dir = trees.index_dir(root.resolve())
    with trees.index_lock(shard_dir):
        p = _start(root, cache)
        time.sleep(3)
        assert p.poll() is None  # waiting for the lock
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert f"waiting for another ksymgraph that is indexing into {shard_dir} ..." in err
    assert out.split()[1:] == ["121", "241"]
