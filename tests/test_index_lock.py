"""Two loads of one source tree at once: the index directory is written by one at a time.

Before the lock, two ``ksymgraph load --source`` runs over the same tree (two users, or a load and
a test) wrote the same shard files at once and left them unreadable ("Couldn't deserialize thrift:
No more data to read", found when a whole-kernel load read ``macros/calls.parquet``). The lock is
taken by ``cindex.index_tree`` itself (bench scripts and tests call it directly), and every file is
written through a temporary file of its own writer.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ksymgraph.loaders import cindex, parquet, trees
from ksymgraph.loaders.records import Call

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
    with cindex.index_lock(shard_dir):
        p = _start(root, cache)
        time.sleep(3)
        assert p.poll() is None  # waiting for the lock
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert f"waiting for another ksymgraph that is indexing into {shard_dir} ..." in err
    assert out.split()[1:] == ["121", "241"]


def _index_directly(root: str, shard_dir: str, barrier) -> None:
    """Child: index ``root`` into ``shard_dir`` with ``cindex.index_tree``, starting when the
    other child does; exits 0 only if the run succeeds and counts the whole tree."""
    barrier.wait(timeout=60)
    r = cindex.index_tree(root, include_dirs=[], shard_dir=shard_dir, workers=1, progress=False, batch_files=5)
    sys.exit(0 if (r.rows["functions"], r.rows["calls"]) == (2401, 4801) else 3)


def _contents(shard_dir: Path) -> dict:
    """Every table of an index as sorted rows, and the manifest's files with their hashes."""
    tables = {t: sorted(map(repr, cindex.read_table(shard_dir, t).to_pylist())) for t in [*cindex.TABLES, "lookups"]}
    manifest = cindex._json_loads((shard_dir / "manifest.json").read_bytes())
    return {**tables, "manifest": sorted((f, e["sha1"]) for f, e in manifest["files"].items())}


def test_two_direct_index_tree_runs_into_one_directory(tmp_path):
    """Two processes calling ``cindex.index_tree`` (no ``index_source_tree`` around it) into one
    shard directory at once: both succeed and the index is the one a single run writes. Without
    the lock and the writers' own temporary files they wrote one ``.000000.parquet.tmp`` and one
    ``manifest.json.tmp`` and one of them failed (``FileNotFoundError`` at the ``os.replace``),
    or a shard came out unreadable."""
    root = _tree(tmp_path / "tree", files=60)
    want = cindex.index_tree(root, include_dirs=[], shard_dir=tmp_path / "alone", workers=1, progress=False,
                             batch_files=5)
    assert (want.rows["functions"], want.rows["calls"]) == (2401, 4801)  # 60 x 40, and the header's inline
    expected = _contents(tmp_path / "alone")
    ctx = multiprocessing.get_context("fork")
    for attempt in range(4):
        shard_dir = tmp_path / f"both{attempt}"
        barrier = ctx.Barrier(2)
        runs = [ctx.Process(target=_index_directly, args=(str(root), str(shard_dir), barrier)) for _ in range(2)]
        for p in runs:
            p.start()
        for p in runs:
            p.join(timeout=120)
            if p.exitcode is None:
                p.kill()
                p.join()
        assert [p.exitcode for p in runs] == [0, 0], f"attempt {attempt}"
        assert _contents(shard_dir) == expected, f"attempt {attempt}"
        assert not list(shard_dir.rglob("*.tmp"))


def test_a_direct_index_tree_waits_for_the_lock(tmp_path):
    """``cindex.index_tree`` itself takes the lock (not only ``index_source_tree``): a run started
    while the directory is held waits, then indexes."""
    root = _tree(tmp_path / "tree", files=3)
    shard_dir = tmp_path / "idx"
    script = ("import sys; from ksymgraph.loaders import cindex; "
              "r = cindex.index_tree(sys.argv[1], include_dirs=[], shard_dir=sys.argv[2], workers=1); "
              "print(r.rows['functions'])")
    with cindex.index_lock(shard_dir):
        p = subprocess.Popen([sys.executable, "-c", script, str(root), str(shard_dir)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert p.poll() is None  # waiting for the lock
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert f"waiting for another ksymgraph that is indexing into {shard_dir} ..." in err
    assert out.split() == ["121"]


def test_two_writers_of_one_parquet_file_each_write_their_own_temporary(tmp_path):
    """Two :class:`TableWriter` of one path open at once (what two indexers did): each writes a
    temporary file of its own, and the last to close leaves its complete file."""
    path = tmp_path / "calls.parquet"
    rows = [Call("a", f"callee{i}", "f.c", i, None) for i in range(3)]
    with parquet.TableWriter(path, Call) as first, parquet.TableWriter(path, Call) as second:
        first.extend(rows)
        second.extend(rows[:1])
        assert len(list(tmp_path.glob(".calls.parquet.*.tmp"))) == 2
    assert pq.read_table(path).num_rows == 3  # the outer writer closed last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.parquet"]


def test_a_failed_writer_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "calls.parquet"
    parquet.write_table(path, Call, [Call("a", "b", "f.c", 1, None)])
    with pytest.raises(RuntimeError), parquet.TableWriter(path, Call) as w:
        w.add(Call("x", "y", "g.c", 2, None))
        raise RuntimeError("the parse failed")
    with pytest.raises(TypeError), parquet.TableWriter(path, Call) as w:
        w.add(Call("x", 7, "g.c", 2, None))  # a bad row fails the last row group's write, at close
    assert pq.read_table(path).to_pylist() == [Call("a", "b", "f.c", 1, None)._asdict()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.parquet"]


def test_temporary_files_a_killed_run_left_are_removed_by_the_next(tmp_path):
    root = _tree(tmp_path / "tree", files=3)
    shard_dir = tmp_path / "idx"
    cindex.index_tree(root, include_dirs=[], shard_dir=shard_dir, workers=1, progress=False)
    left = [parquet.temp_beside(shard_dir / "calls" / "000000.parquet"), parquet.temp_beside(shard_dir / "manifest.json"),
            shard_dir / "functions" / ".000001.parquet.tmp"]  # the fixed name of the loader before
    left[-1].touch()
    assert all(p.exists() for p in left)
    r = cindex.index_tree(root, include_dirs=[], shard_dir=shard_dir, workers=1, progress=False)
    assert r.parsed == 0 and r.rows["functions"] == 121
    assert not list(shard_dir.rglob("*.tmp"))


def test_the_lock_is_reentrant_in_a_thread_and_excludes_another(tmp_path):
    """``index_source_tree`` holds the lock over ``index_tree``, which takes it again: that must not
    wait on itself; another thread must wait."""
    shard_dir = tmp_path / "idx"
    entered = threading.Event()

    def other():
        with cindex.index_lock(shard_dir):
            entered.set()

    with cindex.index_lock(shard_dir), cindex.index_lock(shard_dir):
        t = threading.Thread(target=other)
        t.start()
        assert not entered.wait(1)
    assert entered.wait(30)
    t.join()


def _take_lock_in_child(shard_dir: str) -> None:
    with cindex.index_lock(shard_dir):
        pass


def test_a_forked_child_of_the_holder_waits_too(tmp_path):
    """The re-entrant guard is not inherited by ``fork``: a child of the holder takes the lock."""
    shard_dir = tmp_path / "idx"
    ctx = multiprocessing.get_context("fork")
    with cindex.index_lock(shard_dir):
        child = ctx.Process(target=_take_lock_in_child, args=(str(shard_dir),))
        child.start()
        child.join(1)
        assert child.exitcode is None  # waiting
    child.join(30)
    assert child.exitcode == 0
