"""Source trees made to hang, exhaust or escape the loader: each crafted here, each loaded in a
subprocess whose peak memory is measured (its own ``VmHWM``, and ``ru_maxrss`` of its workers:
its own ``ru_maxrss`` would carry the test process's, from before its exec).

What is asserted is what the loader says and records: the reason each bad file is skipped, that
the good files are still indexed, that nothing outside the tree shows up (a sentinel file outside
it whose function must not appear, and whose access time must not move), and that the peak RSS
stays under :data:`PEAK_RSS_MB`. No wall time is asserted, except that the parse deadline is
honoured (the file over it is skipped); a subprocess that hangs fails the test at its timeout.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path


from ksymgraph.loaders import cfiles, cparse, ctree, kbuild, make

#: The peak resident set of a load of one of these trees, any process (the parent or a worker).
#: README "The source graph" documents the general bound: a worker parsing the largest file it
#: takes (4 MiB) peaks below 1 GiB.
PEAK_RSS_MB = 400

#: Address space the subprocess may take: a regression that reads /dev/zero fails with
#: MemoryError there instead of waking the machine's OOM killer.
ADDRESS_SPACE = 8 << 30

#: The peak resident set of this process since its exec, in kB (ru_maxrss keeps the high-water
#: mark of the process it was forked from).
PEAK_KB = (
    "int(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))")

LOAD = textwrap.dedent(f"""
    import json, resource, sys
    from ksymgraph.loaders import cindex, trees
    root, out, how, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if how == "index":
        r = cindex.index_tree(root, shard_dir=out, workers=2, progress=False, seconds=seconds)
        errors, stats, shard_dir = r.errors, r.stats, r.shard_dir
    else:  # the --source step of `ksymgraph load`: index, header macros, attribution
        t = trees.index_source_tree(root, workers=2)
        errors, stats, shard_dir = t.skipped, t.stats, t.shard_dir
    functions = sorted(set(cindex.read_table(shard_dir, "functions")["name"].to_pylist()))
    calls = cindex.read_table(shard_dir, "calls").num_rows
    rss = max({PEAK_KB}, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({{"errors": [list(e) for e in errors], "stats": stats._asdict(), "functions": functions,
                      "calls": calls, "rss_mb": rss >> 10}}))
""")


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


#: prctl(PR_CAPBSET_DROP) and the capabilities that let root read any directory.
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_root_reads():
    """Root, but bound by permission bits: the subprocess runs without the two capabilities
    that let root list a directory of mode 000 (dropped from the bounding set before exec)."""
    import ctypes

    _limit_memory()
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def load(root: Path, tmp_path: Path, how: str = "index", seconds: float = cparse.PARSE_SECONDS,
         unprivileged: bool = False) -> dict:
    """Load ``root`` in a subprocess; what it recorded and its peak RSS."""
    out = tmp_path / "index"
    env = dict(os.environ, KSYMGRAPH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", LOAD, str(root), str(out), how, str(seconds)],
                          capture_output=True, text=True, timeout=600, env=env,
                          preexec_fn=_without_root_reads if unprivileged else _limit_memory)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    result["reasons"] = {path: reason for path, reason in result["errors"]}
    assert result["rss_mb"] < PEAK_RSS_MB, result["rss_mb"]
    return result


def good_tree(root: Path) -> Path:
    (root / "good").mkdir(parents=True)
    (root / "good" / "ok.c").write_text("int still_indexed(void) { return helper(); }\n")
    return root


def test_binary_file_over_the_parse_deadline_is_skipped(tmp_path):
    tree = good_tree(tmp_path / "tree")
    rnd = random.Random(1)
    (tree / "blob.c").write_bytes(bytes(rnd.getrandbits(8) for _ in range(1 << 20)))  # 37.6 s to parse, once
    r = load(tree, tmp_path, seconds=1.0)
    assert r["reasons"]["blob.c"] == "over the parse deadline of 1 s: not parsed"
    assert r["stats"]["files_skipped"] == 1 and r["stats"]["files"] == 1
    assert r["functions"] == ["still_indexed"]


def test_files_over_the_size_limits_are_skipped(tmp_path):
    tree = good_tree(tmp_path / "tree")
    line = b"int f(void) { return g(1, 2); } /* printable */\n"
    (tree / "huge.c").write_bytes(line * (50 * (1 << 20) // len(line)))  # 50 MB: 600 s and 3.3 GB, once
    (tree / "big.c").write_bytes(line * (cparse.MAX_PARSE_BYTES // len(line) + 1))
    r = load(tree, tmp_path)
    size = (tree / "huge.c").stat().st_size
    assert r["reasons"]["huge.c"] == f"too large: {size} bytes (the limit is {cfiles.MAX_FILE_BYTES})"
    size = (tree / "big.c").stat().st_size
    assert r["reasons"]["big.c"] == f"too large to parse: {size} bytes (the limit is {cparse.MAX_PARSE_BYTES})"
    assert r["stats"]["files_skipped"] == 2
    assert r["functions"] == ["still_indexed"]


def test_deep_nesting_is_read_to_the_limit_and_the_rest_counted(tmp_path):
    tree = good_tree(tmp_path / "tree")
    n = 100_000
    (tree / "deep.c").write_bytes(b"int deep(void) { return " + b"a(" * n + b"0" + b")" * n + b"; }\n")
    r = load(tree, tmp_path)
    recorded = r["calls"] - 1  # ok.c calls helper()
    assert recorded == ctree.MAX_DEPTH // 2 - 1  # a call is two levels: call, argument list
    assert r["stats"]["calls_too_deep"] == n - recorded
    assert r["reasons"]["deep.c"] == (f"read in part: {n - recorded} calls nested deeper than "
                                      f"{ctree.MAX_DEPTH} levels not recorded")
    assert r["functions"] == ["deep", "still_indexed"]


def test_link_to_a_device_is_not_read(tmp_path):
    tree = good_tree(tmp_path / "tree")
    os.symlink("/dev/zero", tree / "zero.c")
    os.symlink("/dev/zero", tree / "zero.h")
    (tree / "good" / "uses.c").write_text('#include "../zero.h"\nint uses(void) { return 0; }\n')
    r = load(tree, tmp_path, how="source")
    assert r["reasons"]["zero.c"] == "not a regular file: a character device (/dev/zero)"
    assert r["reasons"]["zero.h"] == "not a regular file: a character device (/dev/zero)"
    assert r["functions"] == ["still_indexed", "uses"]


def test_fifos_are_skipped_without_hanging(tmp_path):
    tree = good_tree(tmp_path / "tree")
    os.mkfifo(tree / "pipe.c")
    os.mkfifo(tree / "good" / "pipe.h")
    os.mkfifo(tree / "good" / "ok.mod")  # read by the attribution of a built tree
    (tree / "good" / "inc.c").write_text('#include "pipe.h"\nint inc(void) { return 0; }\n')
    r = load(tree, tmp_path, how="source")
    assert r["reasons"]["pipe.c"] == "not a regular file: a FIFO"
    assert r["reasons"]["good/pipe.h"] == "not a regular file: a FIFO"
    assert r["reasons"]["good/ok.mod"] == "not a regular file: a FIFO"
    assert r["functions"] == ["inc", "still_indexed"]


def test_unreadable_directory_is_a_skip(tmp_path):
    tree = good_tree(tmp_path / "tree")
    (tree / "secret").mkdir()
    (tree / "secret" / "hidden.c").write_text("int hidden(void) { return 0; }\n")
    (tree / "secret").chmod(0)
    try:
        r = load(tree, tmp_path, unprivileged=os.geteuid() == 0)
    finally:
        (tree / "secret").chmod(0o755)
    assert r["reasons"]["secret/"] == "directory not read: Permission denied"
    assert r["functions"] == ["still_indexed"]


def _sentinel(outside: Path) -> Path:
    """A header outside the tree with a function of its own, its access time set in the past so
    that a read would move it (relatime updates an atime older than the mtime)."""
    outside.mkdir()
    sentinel = outside / "sentinel.h"
    sentinel.write_text("static inline int sentinel_outside(void) { return 1; }\n")
    st = sentinel.stat()
    os.utime(sentinel, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    return sentinel


def _atime_moves_on_read(path: Path) -> bool:
    probe = path.with_name("probe")
    probe.write_text("x")
    st = probe.stat()
    os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    probe.read_text()
    return probe.stat().st_atime_ns >= st.st_mtime_ns


def test_nothing_outside_the_tree_is_read(tmp_path):
    sentinel = _sentinel(tmp_path / "outside")
    tree = good_tree(tmp_path / "tree")
    (tree / "include").mkdir()
    depth = "../" * 8
    (tree / "good" / "escape.c").write_text(
        f'#include "{sentinel}"\n'  # absolute
        f'#include "{depth}{sentinel.relative_to("/")}"\n'  # climbs out of the tree
        f"#include <{depth}{sentinel.relative_to('/')}>\n"
        '#include "linked.h"\n'  # a link to the sentinel
        '#include <out/sentinel.h>\n'  # through a linked directory
        "int escape(void) { return 0; }\n")
    os.symlink(sentinel, tree / "good" / "linked.h")
    os.symlink(sentinel.parent, tree / "include" / "out")
    os.symlink(sentinel, tree / "link.c")
    atime_before = sentinel.stat().st_atime_ns
    r = load(tree, tmp_path, how="source")
    assert "sentinel_outside" not in r["functions"]
    assert r["functions"] == ["escape", "still_indexed"]
    reasons = [reason for path, reason in r["errors"] if path == "good/escape.c"]
    assert reasons == [f'#include "{sentinel}" not followed: an absolute path',
                       f'#include "{depth}{sentinel.relative_to("/")}" not followed: it leads outside the tree',
                       f"#include <{depth}{sentinel.relative_to('/')}> not followed: it leads outside the tree"]
    assert r["stats"]["includes_refused"] == 3
    assert r["reasons"]["good/linked.h"] == f"outside the tree: it resolves to {sentinel}"
    assert r["reasons"]["include/out/sentinel.h"] == f"outside the tree: it resolves to {sentinel}"
    assert r["reasons"]["link.c"] == f"outside the tree: it resolves to {sentinel}"
    if _atime_moves_on_read(sentinel):
        assert sentinel.stat().st_atime_ns == atime_before


def test_kbuild_never_leaves_the_tree(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Makefile").write_text("obj-y += evil.o\n")
    (outside / "evil.c").write_text("int evil(void) { return 0; }\n")
    (outside / "inc.mk").write_text("obj-y += included_evil.o\n")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "Kbuild").write_text(f"obj-y += a/ ../outside/ {'../' * 6}{outside.relative_to('/')}/\n")
    (tree / "a" / "Makefile").write_text(
        f"include {outside}/inc.mk\n"
        f"include ../../outside/inc.mk\n"
        f"obj-y += ok.o ../../outside/evil.o $(patsubst %.c,%.o,$(notdir $(wildcard {outside}/*.c)))\n")
    (tree / "a" / "ok.c").write_text("int ok(void) { return 0; }\n")
    (tree / "a" / "included_evil.c").write_text("")
    skipped = []
    built = list(kbuild.evaluate_kbuild(tree, {}, skipped=skipped))
    assert [(b.file, b.module) for b in built] == [("a/ok.c", "vmlinux")]
    assert ("../outside/", "not entered: outside the tree") in skipped
    assert ("a/Makefile", f"include {outside}/inc.mk not followed: outside the tree") in skipped
    assert ("a/Makefile", "include ../../outside/inc.mk not followed: outside the tree") in skipped
    assert ("a", f"$(wildcard {outside}/*.c) not read: outside the tree") in skipped


def test_makefile_expansion_bomb_is_cut_short(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    lines = ["x0 = a"] + [f"x{i} = $(x{i - 1})$(x{i - 1})" for i in range(1, 41)]
    lines += ["obj-y += ok.o", "obj-y += $(x40)", "obj-y += after.o"]
    (tree / "Kbuild").write_text("\n".join(lines) + "\n")
    skipped = []
    words = kbuild.evaluate_makefile(tree, ".", {}, skipped)
    assert words["x10"] == ["a" * 1024]
    assert words["obj-y"] == []  # one recursive value: it expands whole or not at all
    assert skipped == [("Kbuild", f"obj-y not evaluated: an expansion grows past {make.MAX_EXPANSION} "
                                  "characters")]


def test_parsing_file_after_file_keeps_no_text(tmp_path):
    # py-tree-sitter 0.26.1 never releases what a read callback returns: handing it fresh slices
    # kept every file's text alive, and a worker grew to 490 MB over the kernel tree
    script = textwrap.dedent(f"""
        from ksymgraph.loaders import cparse
        src = b"".join(b"int f%d(int a) {{ return g(a, %d) + h(a); }}" % (i, i) + bytes([10]) for i in range(25000))
        for _ in range(5):  # warm: the queries, the parser, the allocator's arenas
            cparse.parse_source(src, "x.c")
        before = {PEAK_KB}
        for _ in range(20):
            cparse.parse_source(src, "x.c")
        print(len(src), ({PEAK_KB} - before) >> 10)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_memory)
    assert done.returncode == 0, done.stderr[-2000:]
    size, growth_mb = map(int, done.stdout.split())
    assert size > 1 << 20 and growth_mb < 8  # keeping the text would be 24 MB (49 MB measured for 30)


def test_a_macro_with_too_many_calls_is_cut_and_said(tmp_path):
    from ksymgraph.loaders import macros

    body = " \\\n".join(f"c{i}(x)" for i in range(macros.MAX_CALLS + 10))
    (tmp_path / "m.h").write_text(f"#define ONE(x) a(x)\n#define MANY(x) {body}\n#define AFTER(x) b(x)\n")
    skipped = []
    found = {d.name: (d.line, d.end_line, len(calls)) for d, calls in macros.for_each_macro(tmp_path, ["m.h"], skipped)}
    assert found == {"ONE": (1, 1, 1), "MANY": (2, 2 + macros.MAX_CALLS + 9, macros.MAX_CALLS),
                     "AFTER": (macros.MAX_CALLS + 12, macros.MAX_CALLS + 12, 1)}
    assert skipped == [("m.h:2", f"macro MANY: more than {macros.MAX_CALLS} calls, the rest not recorded")]


def test_parse_that_would_take_too_much_memory_is_cut(monkeypatch):
    # found by fuzzing: 1.6 MB of C with an unclosed call repeated 100,000 times left 400k nodes
    # straight under the root and a tree of 670 MB; the parse is cancelled past PARSE_MEMORY
    # (lowered here: this one needs 300 MB)
    src = b"int a(void) { return 0; }\nint g(void)\n{\n\tint rval = 0;\n\n\tDEBUG" + b"2(ql4_printk(KUG" * 100_000
    monkeypatch.setattr(cparse, "PARSE_MEMORY", 64 << 20)
    r = cparse.parse_source(src, "x.c")
    assert r.error == "over the parse memory limit (64 MiB more): not parsed"
    assert r.stats.files_skipped == 1


def test_a_parser_failure_is_said_and_not_kept_for_the_next_run(tmp_path, monkeypatch):
    # An exception of the parser's own code (here: made up) is the file's error, as "parse failed:";
    # the index does not keep it as that file's result: the next run parses the file again. (A load
    # that ran while ksymgraph was being upgraded once kept 71 such files of LTTng's tree.)
    from ksymgraph.loaders import cindex

    root = tmp_path / "t"
    root.mkdir()
    (root / "a.c").write_text("int f(void) { return g(); }\n")
    real = cparse.parse_source

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(cparse, "parse_source", broken)
    first = cindex.index_tree(root, include_dirs=[], shard_dir=tmp_path / "idx", progress=False, workers=1)
    assert [(e.path, e.reason) for e in first.errors] == [("a.c", "parse failed: ValueError('a bug')")]
    monkeypatch.setattr(cparse, "parse_source", real)
    again = cindex.index_tree(root, include_dirs=[], shard_dir=tmp_path / "idx", progress=False, workers=1)
    assert (again.parsed, again.reused, again.errors) == (1, 0, [])
    assert cindex.read_table(tmp_path / "idx", "calls").to_pylist()[0]["callee"] == "g"
