"""The command line, run as a user runs it (``python -m ksymgraph``), on the fixture kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURE_RELEASE, MODULE_SOURCES, compile_module


def ksymgraph(*args, check_rc=None):
    p = subprocess.run([sys.executable, "-m", "ksymgraph", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert p.returncode == check_rc, p.stderr
    return p


@pytest.fixture(scope="module")
def db(tmp_path_factory, fixture_tree, extra_modules):
    path = tmp_path_factory.mktemp("cli") / "graph.lbdb"
    p = ksymgraph("load", fixture_tree, extra_modules, "--db", path, check_rc=0)
    assert p.stdout.startswith(f"loaded kernel {FIXTURE_RELEASE} into {path}")
    assert "6 modules (vmlinux included), 10 exports, 9 imports, 3 module dependencies" in p.stdout
    return path


def test_help_teaches():
    p = ksymgraph("--help", check_rc=0)
    for cmd in ("load", "whatif", "query", "usage", "check", "kernels"):
        assert cmd in p.stdout
    assert "examples:" in p.stdout
    w = ksymgraph("whatif", "--help", check_rc=0).stdout
    for opt in ("--unexport", "--gpl-only", "--namespace", "--remove-module", "--format", "--exit-code"):
        assert opt in w
    assert "debian:RELEASE" in ksymgraph("load", "--help", check_rc=0).stdout


def test_whatif_markdown_and_exit_code(db):
    p = ksymgraph("whatif", "--db", db, "--unexport", "a_plain", "--exit-code", check_rc=1)
    assert p.stdout.startswith(f"# What if: unexport a_plain (kernel {FIXTURE_RELEASE})")
    assert "3 modules fail to load: 2 directly, 1 through a failing dependency" in p.stdout
    assert '| user_c | in-tree | via user_b | dependency | b_fn |' in p.stdout
    ksymgraph("whatif", "--db", db, "--unexport", "a_gpl", "--exit-code", check_rc=0)


def test_whatif_json_and_html(db, tmp_path):
    p = ksymgraph("whatif", "--db", db, "--gpl-only", "kfree", "--format", "json", check_rc=0)
    data = json.loads(p.stdout)
    assert [(b["module"], b["reasons"][0]["rule"]) for b in data["broken"]] == [("prop_d", "gpl-only")]
    out = tmp_path / "r.html"
    ksymgraph("whatif", "--db", db, "--namespace", "a_plain=X", "--format", "html", "-o", out, check_rc=0)
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "<td>namespace</td>" in html


def test_whatif_needs_a_change(db):
    p = ksymgraph("whatif", "--db", db, check_rc=2)
    assert "give at least one --unexport" in p.stderr


def test_unknown_kernel_is_clear(db):
    p = ksymgraph("whatif", "--db", db, "--kernel", "9.9", "--unexport", "x", check_rc=2)
    assert "kernel '9.9' is not in" in p.stderr and FIXTURE_RELEASE in p.stderr


def test_query_with_params(db):
    q = "MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE s.name = $sym RETURN m.name AS module ORDER BY module"
    p = ksymgraph("query", "--db", db, q, "--param", "sym=a_plain", "--format", "csv", check_rc=0)
    assert p.stdout.splitlines() == ["module", "prop_d", "user_b"]
    q2 = "MATCH (s:Symbol) WHERE s.name IN $names RETURN s.name AS n ORDER BY n"
    p = ksymgraph("query", "--db", db, q2, "--param", 'names=["kfree","b_fn"]', "--format", "json", check_rc=0)
    assert json.loads(p.stdout) == [{"n": "b_fn"}, {"n": "kfree"}]
    # user text stays a parameter: a quote in it is just a character
    p = ksymgraph("query", "--db", db, q, "--param", "sym=x' OR 1=1 //", check_rc=0)
    assert "(0 rows)" in p.stdout


def test_usage(db):
    data = json.loads(ksymgraph("usage", "--db", db, "--format", "json", check_rc=0).stdout)
    by = {(e["symbol"], e["owner"]): e for e in data["exports"]}
    assert by[("a_plain", "core_a")]["in_tree_users"] == ["user_b"]
    assert by[("a_plain", "core_a")]["out_of_tree_users"] == ["prop_d"]
    assert by[("a_gpl", "core_a")]["type"] == "EXPORT_SYMBOL_GPL"
    assert set(data["unused"]) == {"a_gpl", "a_data", "register_kprobe", "unregister_kprobe", "kallsyms_on_each_symbol"}
    deps = {m["module"]: m["depends"] for m in data["modules"]}
    assert deps["user_b"] == {"core_a": ["a_ns", "a_plain"]}
    assert deps["core_a"] == {"vmlinux": ["_printk", "kfree"]}
    md = ksymgraph("usage", "--db", db, check_rc=0).stdout
    assert "10 exports, 5 used by no module" in md


def test_check_out_of_tree_modules(db, tmp_path):
    # A proprietary module that needs GPL-only and unexported symbols and a namespace it lacks.
    src = tmp_path / "needy.c"
    src.write_text('#include "fixture_module.h"\n'
                   "extern int a_gpl(int); extern int a_ns(int); extern int not_exported(int);\n"
                   "int n_fn(int x) { return a_gpl(x) + a_ns(x) + not_exported(x); }\n"
                   'MODULE_LICENSE("Proprietary");\n'
                   "MODULE_VERSION_CRC(a_gpl, 0x22220000);\n")
    needy = compile_module(src, tmp_path / "needy.ko")
    ok = compile_module(MODULE_SOURCES / "weak_e.c", tmp_path / "weak_e.ko")
    p = ksymgraph("check", needy, ok, "--db", db, "--format", "json", "--exit-code", check_rc=1)
    data = json.loads(p.stdout)
    verdict = {m["module"]: m for m in data["modules"]}
    assert verdict["weak_e"]["loads"] is True
    assert verdict["needy"]["loads"] is False
    assert {(r["rule"], r["symbol"]) for r in verdict["needy"]["reasons"]} == {
        ("gpl-only", "a_gpl"), ("gpl-only", "a_ns"), ("unknown-symbol", "not_exported")}
    assert list(verdict["needy"]["missing"]) == ["not_exported"]
    ksymgraph("check", ok, "--db", db, "--exit-code", check_rc=0)
    bad = tmp_path / "junk.ko"
    bad.write_bytes(b"junk")
    # An unreadable file is named with its reason, counted, and the exit status says so (3); the
    # verdict on the readable one is still given. With --exit-code, a module that breaks wins (1).
    p = ksymgraph("check", bad, ok, "--db", db, check_rc=3)
    assert f"{bad}: not an ELF file" in p.stderr
    assert "skipped 1 unreadable file\n" in p.stderr and "weak_e" in p.stdout
    ksymgraph("check", bad, needy, "--db", db, "--exit-code", check_rc=1)
    p = ksymgraph("check", bad, "--db", db, check_rc=2)
    assert "no module could be read" in p.stderr
    p = ksymgraph("diff", FIXTURE_RELEASE, FIXTURE_RELEASE, "--modules", f"{bad},{ok}", "--db", db, check_rc=3)
    assert f"{bad}: not an ELF file" in p.stderr and "skipped 1 unreadable file" in p.stderr


def test_kernels(db):
    p = ksymgraph("kernels", "--db", db, check_rc=0)
    assert FIXTURE_RELEASE in p.stdout


def test_output_larger_than_a_pipe_arrives_whole_before_the_fast_exit(db):
    """The command ends with os._exit after flushing (ksymgraph.cli.run): nothing may be lost."""
    p = ksymgraph("query", "--db", db, "UNWIND range(1, 30000) AS i RETURN i", "--format", "csv", check_rc=0)
    lines = p.stdout.splitlines()
    assert lines[0] == "i" and lines[1:] == [str(i) for i in range(1, 30001)]


def test_output_into_a_closed_pipe_is_not_an_error(db):
    p = subprocess.run(f"{sys.executable} -m ksymgraph query --db {db} 'UNWIND range(1, 30000) AS i RETURN i' "
                       "--format csv | head -2", shell=True, capture_output=True, text=True)
    assert p.stdout.splitlines() == ["i", "1"] and "Traceback" not in p.stderr


def test_load_into_a_store_another_process_writes_is_a_clear_error(tmp_path, fixture_tree):
    """`load` opens the store once its workers run; another writer still gets one clear line."""
    from ksymgraph.graph.connect import open_store

    path = tmp_path / "busy.lbdb"
    with open_store(path):
        p = ksymgraph("load", fixture_tree, "--db", path, check_rc=2)
    assert p.stderr.startswith(f"ksymgraph load: error: {path} is being written by another process")
    assert "Traceback" not in p.stderr
