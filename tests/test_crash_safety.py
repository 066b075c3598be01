"""A load is all or nothing: killed at any moment or out of disk, the store holds the old kernel or the
new one, never neither; readers can always open it; no traceback reaches a user.

The loads run as a user runs them (``python -m ksymgraph load`` in a subprocess) and are killed with
SIGKILL: at random moments, and, through the test-only hook ``KSYMGRAPH_TEST_STOP``, stopped exactly
before and inside LadybugDB's commit and checkpoint, before and after the rename that switches the
new store in. After each, a read-only open must succeed and give exactly the old or the new kernel
(module, export and import counts and a digest of their rows), and the next open removes what the
killed writer left. A small tmpfs, mounted here, fills up during loads. The first test reproduces
why the store is written this way: LadybugDB loses a table replaced in place when the process is
killed during the commit's checkpoint (see the README, "The store").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import build_fixture_kernel
from ksymgraph.graph.connect import open_store
from ksymgraph.graph.store_files import SIDECARS, STOP_POINTS, TEST_STOP_ENV
from ksymgraph.graph.store import StoreError

KERNEL = "K"

#: Synthetic vmlinux exports added to the new kernel of the hook and disk tests: a longer COPY and
#: checkpoint (12 MB of store), so that a stop lands inside them and a small disk fills up there.
SYNTHETIC_EXPORTS = 60_000


def cli(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ksymgraph", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ksymgraph", *map(str, args)], env=env, capture_output=True,
                          text=True)


def load_args(tree: Path, db: Path) -> list:
    return ["load", tree, "--kernel", KERNEL, "--db", db, "--workers", "1", "--no-progress"]


def snapshot(db: Path) -> tuple:
    """What a reader sees: per kernel, the module, export and import counts and a digest of the rows."""
    out = []
    with open_store(db, read_only=True) as s:
        for k in s.kernels():
            p = {"k": k}
            mods = s.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name, m.srcversion, m.license "
                           "ORDER BY m.name", p).rows
            exports = s.query("MATCH (m:Module)-[e:EXPORTS]->(x:Symbol) WHERE m.kernel = $k "
                              "RETURN m.name, x.name, e.crc, e.gpl, e.namespace ORDER BY m.name, x.name", p).rows
            imports = s.query("MATCH (m:Module)-[i:IMPORTS]->(x:Symbol) WHERE m.kernel = $k "
                              "RETURN m.name, x.name, i.crc, i.weak ORDER BY m.name, x.name", p).rows
            deps = s.query("MATCH (a:Module)-[d:DEPENDS_ON]->(b:Module) WHERE a.kernel = $k "
                           "RETURN a.name, b.name, d.symbols ORDER BY a.name, b.name", p).rows
            digest = hashlib.sha256(repr((mods, exports, imports, deps)).encode()).hexdigest()[:16]
            out.append((k, len(mods), len(exports), len(imports), digest))
    return tuple(out)


def leftovers(db: Path) -> list[str]:
    """Files beside the store other than the store and its lock."""
    return sorted(p.name for p in db.parent.iterdir() if p.name not in (db.name, db.name + ".lock"))


def assert_whole(db: Path, allowed: dict[str, tuple], what: str) -> str:
    """The store opens read-only and holds exactly one of ``allowed``; its name."""
    assert not [s for s in SIDECARS if db.with_name(db.name + s).exists()], f"{what}: LadybugDB files left at the store"
    snap = snapshot(db)
    names = [name for name, ref in allowed.items() if snap == ref]
    assert names, f"{what}: the store holds neither the old nor the new kernel: {snap} vs {allowed}"
    return names[0]


def assert_cleaned_by_next_writer(db: Path, expected: tuple) -> None:
    with open_store(db):
        pass
    assert leftovers(db) == [], leftovers(db)
    assert snapshot(db) == expected


@pytest.fixture(scope="module")
def trees(tmp_path_factory, fixture_tree, fixture_tree_b) -> dict[str, Path]:
    """The old kernel (the fixture), the new one (the fixture one release later) and a bigger new one."""
    big = build_fixture_kernel(tmp_path_factory.mktemp("big") / "kernel", ("KERNEL_B",))
    rng = random.Random(17)
    with open(big / "build" / "Module.symvers", "a") as f:
        for i in range(SYNTHETIC_EXPORTS):
            f.write(f"0x{rng.getrandbits(32):08x}\tsynth_export_{i}\tvmlinux\tEXPORT_SYMBOL\t\n")
    return {"old": fixture_tree, "new": fixture_tree_b, "big": big}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, trees) -> dict[str, Path]:
    """Closed stores to start each run from: K alone, and K beside another kernel."""
    root = tmp_path_factory.mktemp("bases")
    one, two = root / "one" / "graph.lbdb", root / "two" / "graph.lbdb"
    for db in (one, two):
        p = run_cli(*load_args(trees["old"], db))
        assert p.returncode == 0, p.stderr
    p = run_cli("load", trees["new"], "--kernel", "other", "--db", two, "--workers", "1", "--no-progress")
    assert p.returncode == 0, p.stderr
    return {"one": one, "two": two}


@pytest.fixture(scope="module")
def big_refs(stores, trees, tmp_path_factory) -> dict[str, dict[str, tuple]]:
    """What a reader sees before and after a whole load of the big kernel, for each base store."""
    return outcomes(stores, trees, tmp_path_factory.mktemp("big-refs"), "big")


def fresh_copy(base: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copy(base, where / base.name)
    return where / base.name


def outcomes(stores, trees, tmp_path, tree: str) -> dict[str, dict[str, tuple]]:
    """For each base store: the snapshot before the load, and after a load of ``tree`` that ran to its end."""
    refs = {}
    for name, base in stores.items():
        db = fresh_copy(base, tmp_path / f"ref-{name}-{tree}")
        old = snapshot(db)
        p = run_cli(*load_args(trees[tree], db))
        assert p.returncode == 0, p.stderr
        refs[name] = {"old": old, "new": snapshot(db)}
        assert refs[name]["old"] != refs[name]["new"]
        assert leftovers(db) == []
    return refs


def kill(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()


# Why: LadybugDB and a transaction replaced in place -------------------------------------------

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, ladybug
    db, rows, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    conn = ladybug.Connection(ladybug.Database(db))
    conn.execute("BEGIN TRANSACTION")
    conn.execute("DROP TABLE T")
    conn.execute("CREATE NODE TABLE T(id STRING, v INT64, PRIMARY KEY(id))")
    conn.execute(f"COPY T FROM '{rows}'")
    threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    conn.execute("COMMIT")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_ladybug_loses_a_table_replaced_in_place_when_killed_in_its_commit(tmp_path):
    """The way the store wrote before: drop, recreate and COPY in one transaction, then COMMIT
    (LadybugDB checkpoints). Killed during the commit, LadybugDB must come back with the old rows
    or the new ones; it comes back with none. If this test fails, LadybugDB keeps such a
    transaction whole now, and writing beside the store could be reconsidered."""
    import ladybug
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 100_000
    for v in (1, 2):
        pq.write_table(pa.table({"id": [f"{v}-{i}" for i in range(n)], "v": pa.array([v] * n, pa.int64())}),
                       tmp_path / f"rows{v}.parquet")
    base = tmp_path / "base.lbdb"
    db = ladybug.Database(str(base))
    conn = ladybug.Connection(db)
    conn.execute("CREATE NODE TABLE T(id STRING, v INT64, PRIMARY KEY(id))")
    conn.execute(f"COPY T FROM '{tmp_path / 'rows1.parquet'}'")
    conn.close()
    db.close()
    seen = Counter()
    rng = random.Random(5)
    for attempt in range(30):
        work = fresh_copy(base, tmp_path / f"run{attempt}")
        subprocess.run([sys.executable, "-c", CHILD, str(work), str(tmp_path / "rows2.parquet"),
                        str(rng.uniform(0.0, 0.15))], capture_output=True)
        try:
            db = ladybug.Database(str(work), read_only=True)
        except RuntimeError as e:
            assert "recovery is pending" in str(e)
            seen["read-only open refused: recovery pending"] += 1
            ladybug.Database(str(work)).close()  # a writer's open recovers
            db = ladybug.Database(str(work), read_only=True)
        count, total = ladybug.Connection(db).execute("MATCH (t:T) RETURN count(t), sum(t.v)").get_all()[0]
        db.close()
        seen[{(n, n): "old", (n, 2 * n): "new"}.get((count, total), f"{count} rows")] += 1
        if seen["0 rows"] >= 1 and seen["read-only open refused: recovery pending"] >= 1:
            break
    print(f"LadybugDB {ladybug.__version__}, in-place replace killed during COMMIT: {dict(seen)}")
    assert seen["0 rows"] >= 1, seen


# Kills at random moments --------------------------------------------------------------------------

def test_load_killed_at_random_moments(stores, trees, tmp_path):
    """Loads killed at 100 random moments: each leaves the old kernel or the new one, readable."""
    refs = outcomes(stores, trees, tmp_path, "new")
    durations = {}
    for name, base in stores.items():  # how long a whole load takes here, now
        db = fresh_copy(base, tmp_path / f"timed-{name}")
        t0 = time.perf_counter()
        p = cli(*load_args(trees["new"], db))
        p.communicate()
        durations[name] = time.perf_counter() - t0
    rng = random.Random(1)
    tally = Counter()
    killed = run = 0
    while killed < 100 and run < 160:  # a load that ends before its moment is not a kill
        name = ("one", "two")[run % 2]
        db = fresh_copy(stores[name], tmp_path / f"run{run}")
        p = cli(*load_args(trees["new"], db))
        time.sleep(rng.uniform(0, durations[name]))
        was_killed = p.poll() is None
        kill(p)
        killed += was_killed
        got = assert_whole(db, refs[name], f"run {run} ({name}, {'killed' if was_killed else 'ended'})")
        tally[f"{name}: {'killed' if was_killed else 'ended'}, {got}"] += 1
        assert_cleaned_by_next_writer(db, refs[name][got])
        shutil.rmtree(db.parent)
        run += 1
    print(dict(sorted(tally.items())))
    assert killed == 100, tally
    assert any("killed, old" in k for k in tally), tally


# Stopped exactly in the window -------------------------------------------------------------------

def stop_at(tree: Path, db: Path, point: str, delay: float) -> tuple[subprocess.Popen, bool]:
    """Start a load that stops itself at ``point`` (``delay`` s after reaching it); wait until it has
    stopped (True) or ended (False)."""
    return stop_at_args(load_args(tree, db), point, delay)


def stop_at_args(args: list, point: str, delay: float) -> tuple[subprocess.Popen, bool]:
    p = cli(*args, env=dict(os.environ, **{TEST_STOP_ENV: f"{point}:{delay}"}))
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return p, True
    p.returncode = os.waitstatus_to_exitcode(status)
    return p, False


def test_writer_stopped_and_killed_in_commit_checkpoint_and_switch(stores, trees, big_refs, tmp_path):
    """The hook stops the writer right before and inside its COPYs and LadybugDB's checkpoints of
    them, before the last checkpoint, while it closes the new database, and right before and after
    the rename. While it is stopped, a
    reader sees the old kernel (the new one once renamed) and a second writer is refused; killed
    there, the store holds the one or the other; the next writer removes the staging directory."""
    refs = big_refs
    plan = [("copy", 0.0), ("commit", 0.0), ("close", 0.0), ("switch", 0.0), ("switched", 0.0), ("close", 0.02)]
    # Each COPY commits on its own and LadybugDB checkpoints after it (its log full), so stops a
    # while after the first COPY land inside those checkpoints.
    plan += [("copy", d) for d in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)]
    in_checkpoint = 0
    second_writer_checked = False
    for run, (point, delay) in enumerate(plan):
        name = ("one", "two")[run % 2]
        db = fresh_copy(stores[name], tmp_path / f"stop{run}")
        p, stopped = stop_at(trees["big"], db, point, delay)
        what = f"{point}:{delay} ({name})"
        try:
            if stopped:
                staging = [d for d in db.parent.iterdir() if ".staging-" in d.name]
                if staging and any(f.name.endswith((".shadow", ".wal.checkpoint")) for f in staging[0].iterdir()):
                    in_checkpoint += 1  # stopped while LadybugDB checkpoints the new database
                got = assert_whole(db, refs[name], f"{what}, stopped")
                if delay == 0.0:  # stopped at the point itself
                    assert len(staging) == 1, (what, leftovers(db))
                    assert got == ("new" if point == "switched" else "old"), what
                if not second_writer_checked:
                    with pytest.raises(StoreError, match="is being written by another process"):
                        open_store(db)
                    second_writer_checked = True
        finally:
            kill(p)
        got = assert_whole(db, refs[name], f"{what}, killed")
        if stopped and point in ("copy", "commit", "switch") and delay == 0.0:
            assert got == "old", what
        if stopped and point == "switched":
            assert got == "new", what
        assert_cleaned_by_next_writer(db, refs[name][got])
    print(f"{len(plan)} stops, {in_checkpoint} inside LadybugDB's checkpoint of the new database")
    assert second_writer_checked
    assert in_checkpoint >= 1, "no stop landed inside LadybugDB's checkpoint: widen the delays"


def test_a_reader_recovers_a_store_left_pending_by_an_older_writer(tmp_path):
    """A store that a writer (an older ksymgraph, or LadybugDB used directly) left with a pending
    checkpoint: a read-only open recovers it through a short writer open; in a directory it cannot
    write, it says so in one line with the command to run."""
    made = pending_store(tmp_path / "made")
    db = copy_with_sidecars(made, tmp_path / "rw")
    p = run_cli("query", "MATCH (t:T) RETURN count(t) AS n", "--db", db, "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() in (["n", "100000"], ["n", "0"])  # LadybugDB's recovery decides which
    assert not [s for s in SIDECARS if db.with_name(db.name + s).exists()]

    db = copy_with_sidecars(made, tmp_path / "ro")
    with read_only_view(db.parent) as view:
        p = run_cli("query", "MATCH (t:T) RETURN count(t)", "--db", view / db.name)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        (line,) = p.stderr.splitlines()
        assert f"{view / db.name} was left by an interrupted write" in line
        assert f"needs write access to {view}" in line and "ksymgraph kernels --db" in line


def copy_with_sidecars(db: Path, where: Path) -> Path:
    """Copy a LadybugDB database and the files LadybugDB keeps beside it into ``where``."""
    where.mkdir(parents=True)
    for f in db.parent.glob(db.name + "*"):
        shutil.copy(f, where / f.name)
    return where / db.name


def pending_store(where: Path) -> Path:
    """A LadybugDB database left with a checkpoint recovery pending (writer killed mid-checkpoint)."""
    import ladybug
    import pyarrow as pa
    import pyarrow.parquet as pq

    where.mkdir(parents=True, exist_ok=True)
    rows = where / "rows.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(100_000)], "v": pa.array([1] * 100_000, pa.int64())}), rows)
    for attempt in range(40):
        db = where / f"pending{attempt}.lbdb"
        d = ladybug.Database(str(db))
        c = ladybug.Connection(d)
        c.execute("CREATE NODE TABLE T(id STRING, v INT64, PRIMARY KEY(id))")
        c.close()
        d.close()
        subprocess.run([sys.executable, "-c", CHILD.replace('conn.execute("DROP TABLE T")\n', "")
                        .replace('conn.execute("CREATE NODE TABLE T(id STRING, v INT64, PRIMARY KEY(id))")\n', ""),
                        str(db), str(rows), str(0.01 * (attempt % 20))], capture_output=True)
        try:
            ladybug.Database(str(db), read_only=True).close()
        except RuntimeError as e:
            if "recovery is pending" in str(e):
                return db
    pytest.skip("LadybugDB left no pending checkpoint in 40 kills during COMMIT; the state cannot be made")


@contextlib.contextmanager
def read_only_view(directory: Path):
    """``directory`` where this process cannot write it: a read-only bind mount (root) or chmod."""
    view = directory.parent / (directory.name + "-ro")
    view.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(directory), str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here (no CAP_SYS_ADMIN): no read-only directory for root")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True)
            yield view
        finally:
            subprocess.run(["umount", str(view)], capture_output=True)
    else:
        view.rmdir()
        view.symlink_to(directory)
        directory.chmod(0o555)
        try:
            yield view
        finally:
            directory.chmod(0o755)


# A full disk --------------------------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(where: Path, mib: float):
    """A tmpfs of ``mib`` MiB mounted at ``where``."""
    where.mkdir(parents=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(mib * 1024)}k", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or 'not root'}): no small disk to fill")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_during_a_load_leaves_the_old_kernel(stores, trees, big_refs, tmp_path):
    """Loads of the big kernel onto disks too small for it, at sizes that fill up while staging the
    tables, while LadybugDB copies them and while it checkpoints: each fails with one line naming
    the store and the reason, and the old kernel is whole; with enough room the new one is stored."""
    refs = big_refs
    seen = []
    for run, mib in enumerate((3, 10, 17, 30)):
        with small_disk(tmp_path / f"disk{run}", mib) as disk:
            db = disk / "graph.lbdb"
            shutil.copy(stores["one"], db)
            p = run_cli(*load_args(trees["big"], db))
            got = assert_whole(db, refs["one"], f"{mib} MiB")
            assert "Traceback" not in p.stderr
            if p.returncode == 2:
                (line,) = p.stderr.splitlines()
                assert line.startswith(f"ksymgraph load: error: writing kernel {KERNEL} to {db} failed, the store is "
                                       "unchanged: "), line
                assert "free some space, or use a --db on a larger disk" in line, line
                assert got == "old", line
                seen.append("staging" if "cannot stage table" in line else "LadybugDB")
            else:
                assert p.returncode == 0 and got == "new", p.stderr
                seen.append("loaded")
            assert leftovers(db) == []  # the failed write cleaned up after itself
    print(seen)
    assert "staging" in seen and "LadybugDB" in seen and "loaded" in seen, seen


def test_full_disk_when_copying_a_store_of_several_kernels(stores, trees, tmp_path):
    """Replacing one of several kernels copies the store first; without room for the copy, the load
    fails with one line and both kernels stay as they were."""
    with small_disk(tmp_path / "disk", 1.5 * stores["two"].stat().st_size / 2**20 + 1) as disk:
        db = disk / "graph.lbdb"
        shutil.copy(stores["two"], db)
        before = snapshot(db)
        free = shutil.disk_usage(disk).free
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, free - db.stat().st_size // 2))
        p = run_cli(*load_args(trees["new"], db))
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        (line,) = p.stderr.splitlines()
        assert line.startswith(f"ksymgraph load: error: writing to {db} failed, the store is unchanged: "), line
        assert "No space left on device: free some space, or use a --db on a larger disk" in line, line
        filler.unlink()
        assert snapshot(db) == before and len(before) == 2
        assert leftovers(db) == []


# No traceback reaches a user ------------------------------------------------------------------------

def assert_one_line(p: subprocess.CompletedProcess, *parts: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def test_unwritable_db_directory(tmp_path, fixture_tree):
    d = tmp_path / "store"
    d.mkdir()
    with read_only_view(d) as view:
        for db in (view / "graph.lbdb", view / "sub" / "graph.lbdb"):
            p = run_cli("load", fixture_tree, "--db", db, "--workers", "1", "--no-progress")
            line = assert_one_line(p, f"cannot write the store at {db}", "use a --db where you can write")
            assert "Read-only file system" in line or "Permission denied" in line


def test_db_under_proc(fixture_tree):
    for db in ("/proc/ksymgraph-test.lbdb", "/proc/self/ksymgraph/graph.lbdb"):
        p = run_cli("load", fixture_tree, "--db", db, "--workers", "1", "--no-progress")
        assert_one_line(p, f"cannot write the store at {db}", "No such file or directory")
        p = run_cli("kernels", "--db", db)
        assert_one_line(p, f"no database at {db}")


def test_db_that_is_not_a_file(tmp_path, fixture_tree):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for db, kind in ((fifo, "a device or other special file"), (tmp_path, "a directory")):
        for args in (("load", fixture_tree, "--workers", "1", "--no-progress"), ("kernels",)):
            p = run_cli(*args, "--db", db)
            assert_one_line(p, f"{db} is not a database file (it is {kind})")
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_unwritable_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with read_only_view(cache) as view:
        env = dict(os.environ, KSYMGRAPH_CACHE=str(view / "ksymgraph"))
        p = run_cli("load", "debian:6.1.0-50-amd64", "--db", tmp_path / "graph.lbdb", env=env)
        line = assert_one_line(p, "no source could be read", str(view / "ksymgraph"))
        assert "Read-only file system" in line or "Permission denied" in line
    env = dict(os.environ, KSYMGRAPH_CACHE="/proc/ksymgraph-cache")
    p = run_cli("load", "debian:6.1.0-50-amd64", "--db", tmp_path / "graph.lbdb", env=env)
    assert_one_line(p, "no source could be read", "/proc/ksymgraph-cache", "No such file or directory")
    assert not (tmp_path / "graph.lbdb").exists()


# The same on a real kernel (longer: a Debian kernel's write and checkpoint take a second) -----------

@pytest.mark.realdata
def test_real_kernel_reload_killed_in_its_window(tmp_path, debian_kernel):
    """Debian's kernel reloaded over itself and killed: 8 times at random moments of the load, 6
    times stopped inside its COPYs (and their checkpoints), before the last checkpoint and at the
    rename. Each leaves the kernel whole,
    as it was (the same files give the same graph), readable, and cleaned up by the next writer."""
    source = ["load", debian_kernel.modules_dir, "--symvers", debian_kernel.symvers, "--kernel", KERNEL,
              "--no-progress"]
    base = tmp_path / "base" / "graph.lbdb"
    p = run_cli(*source, "--db", base)
    assert p.returncode == 0, p.stderr
    ref = snapshot(base)
    assert ref[0][1] > 3000 and ref[0][3] > 100_000  # 6.1.0-50: 4,022 modules and vmlinux, 184,577 imports
    t0 = time.perf_counter()
    p = cli(*source, "--db", fresh_copy(base, tmp_path / "timed"))
    p.communicate()
    duration = time.perf_counter() - t0
    rng = random.Random(3)
    plan = [("random", rng.uniform(0, duration)) for _ in range(8)]
    plan += [("copy", 0.3), ("copy", 1.0), ("commit", 0.0), ("switch", 0.0), ("switched", 0.0), ("close", 0.0)]
    for run, (how, when) in enumerate(plan):
        db = fresh_copy(base, tmp_path / f"run{run}")
        if how == "random":
            p = cli(*source, "--db", db)
            time.sleep(when)
        else:
            p, stopped = stop_at_args([*source, "--db", db], how, when)
            if stopped:
                assert snapshot(db) == ref, (how, when)
        kill(p)
        assert assert_whole(db, {"the kernel": ref}, f"{how} {when:.2f}")
        assert_cleaned_by_next_writer(db, ref)
        shutil.rmtree(db.parent)
