"""A raw `ksymgraph query` runs read-only and cannot touch the filesystem unless --allow-file-access.

Each refused statement is first shown to do what it is refused for: run through LadybugDB itself
on a read-only handle, it writes or reads the file (or tries to download or load code). Then the
same text through ``ksymgraph query`` is refused with one line, exit 2, and the file is untouched;
tricks that hide the keyword from a naive check (comments, several statements, Unicode white
space, lower case, a clause in the middle of a query, a quoted function name) are refused too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURE_RELEASE
from ksymgraph.graph.file_access import file_access_in
from ksymgraph.graph.neo4j_store import Neo4jStore
from ksymgraph.graph.store import cypher_code


def ksymgraph(*args):
    return subprocess.run([sys.executable, "-m", "ksymgraph", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def db(tmp_path_factory, fixture_tree):
    path = tmp_path_factory.mktemp("qsafe") / "graph.lbdb"
    p = ksymgraph("load", fixture_tree, "--db", path, "--no-progress")
    assert p.returncode == 0, p.stderr
    return path


@pytest.fixture
def csv_file(tmp_path):
    f = tmp_path / "secret.csv"
    f.write_text("a,b\n1,2\n")
    return f


def ladybug_read_only(db, cypher):
    """Run ``cypher`` on a read-only LadybugDB handle directly (no ksymgraph in between) in a child
    process: some table functions crash LadybugDB 0.22.0. Returns (exit status, output)."""
    code = ("import ladybug, sys\n"
            "c = ladybug.Connection(ladybug.Database(sys.argv[1], read_only=True))\n"
            "try:\n    r = c.execute(sys.argv[2])\n    r = r[-1] if isinstance(r, list) else r\n"
            "    print('ROWS', r.get_all())\nexcept RuntimeError as e:\n    print('ERROR', e)\n")
    p = subprocess.run([sys.executable, "-c", code, str(db), cypher], capture_output=True, text=True)
    return p.returncode, p.stdout


def assert_refused(db, cypher, word):
    p = ksymgraph("query", cypher, "--db", db)
    assert p.returncode == 2, (cypher, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"ksymgraph query: error: refused to run the query on {db}: {word}"), lines[0]
    assert "--allow-file-access" in lines[0]
    assert p.stdout == ""


def test_copy_to_writes_a_file_in_ladybug_and_is_refused(db, tmp_path):
    out = tmp_path / "leak.csv"
    cypher = f"COPY (MATCH (m:Module) RETURN m.name) TO '{out}'"
    rc, text = ladybug_read_only(db, cypher)
    assert rc == 0 and text.startswith("ROWS") and out.exists()  # a read-only handle writes the file
    out.unlink()
    assert_refused(db, cypher, "COPY")
    assert not out.exists()
    # With the flag it runs (still read-only: the store itself cannot change).
    p = ksymgraph("query", cypher, "--db", db, "--allow-file-access")
    assert p.returncode == 0, p.stderr
    names = ksymgraph("query", "MATCH (m:Module) RETURN m.name AS n", "--db", db, "--format", "json").stdout
    assert sorted(out.read_text().split()) == sorted(r["n"] for r in json.loads(names))
    assert len(out.read_text().split()) == 5


def test_load_from_reads_a_file_in_ladybug_and_is_refused(db, csv_file):
    for cypher in (f"LOAD FROM '{csv_file}' RETURN *",
                   f"MATCH (k:Kernel) LOAD FROM '{csv_file}' RETURN k.release, a",  # a clause mid-query
                   f"WITH 1 AS x LOAD WITH HEADERS (a STRING) FROM '{csv_file}' RETURN *"):
        rc, text = ladybug_read_only(db, cypher)
        assert rc == 0 and text.startswith("ROWS") and ("1" in text), (cypher, text)
        assert_refused(db, cypher, "LOAD")
    p = ksymgraph("query", f"LOAD FROM '{csv_file}' RETURN a + b AS s", "--db", db, "--allow-file-access",
                  "--format", "json")
    assert p.returncode == 0 and '"s": 3' in p.stdout, p.stdout + p.stderr


def test_table_functions_that_read_files_are_refused(db, csv_file):
    rc, _ = ladybug_read_only(db, f"CALL READ_CSV_SERIAL('{csv_file}') RETURN *")
    assert rc != 0  # LadybugDB 0.22.0 dies on it (SIGSEGV); ksymgraph never lets it run
    for cypher in (f"CALL read_csv_serial('{csv_file}') RETURN *", f"CALL `READ_PARQUET`('{csv_file}') RETURN *",
                   f"CALL read_npy('{csv_file}') RETURN *"):
        assert_refused(db, cypher, "READ_")


@pytest.mark.parametrize("cypher, word", [
    ("LOAD EXTENSION '/tmp/nothing-here.so'", "LOAD"),
    ("INSTALL json", "INSTALL"),
    ("FORCE INSTALL json FROM 'http://127.0.0.1:9/'", "INSTALL"),
    ("UNINSTALL json", "UNINSTALL"),
    ("UPDATE json", "UPDATE"),
    ("ATTACH '/tmp/other.lbdb' AS o (dbtype lbug)", "ATTACH"),
    ("EXPORT DATABASE '/tmp/ksymgraph-export'", "EXPORT"),
    ("IMPORT DATABASE '/tmp/ksymgraph-export'", "IMPORT"),
    ("CALL file_search_path = '/etc'", "CALL file_search_path"),
    ("CALL home_directory='/etc'", "CALL home_directory"),
])
def test_other_statements_that_reach_outside_are_refused(db, cypher, word):
    assert_refused(db, cypher, word)


def test_install_would_download(db):
    """What INSTALL does on a read-only handle: it goes to the network for the extension."""
    rc, text = ladybug_read_only(db, "INSTALL json")
    assert rc == 0 and text.startswith("ERROR") and "download" in text.lower()


@pytest.mark.parametrize("cypher", [
    "/* harmless */ COPY (RETURN 1) TO '{out}'",
    "// a comment\nCOPY (RETURN 1) TO '{out}'",
    "COPY/**/(RETURN 1) TO '{out}'",
    "RETURN 1; COPY (RETURN 1) TO '{out}'",
    "RETURN 'a;b' AS x ;\n\tCOPY (RETURN 1) TO '{out}'",
    "COPY\u00a0(RETURN 1) TO '{out}'",  # no-break space
    "COPY\u2028(RETURN 1) TO '{out}'",  # line separator
    "\u3000copy (RETURN 1) TO '{out}'",  # ideographic space, lower case
    "cOpY (RETURN 1) TO '{out}'",
    "PROFILE COPY (RETURN 1) TO '{out}'",
    "RETURN 'it\\'s' AS x; COPY (RETURN 1) TO '{out}'",  # an escaped quote does not end the string
    "RETURN \"a\\\\\" AS x; COPY (RETURN 1) TO '{out}'",  # an escaped backslash does
    "RETURN 1 // x\rCOPY (RETURN 1) TO '{out}'",  # a // comment ends at CR here
    "RETURN `a'` AS x; COPY (RETURN 1) TO '{out}'",  # no string starts inside backticks
])
def test_tricks_are_refused(db, tmp_path, cypher):
    out = tmp_path / "trick.csv"
    text = cypher.format(out=out)
    assert_refused(db, text, "COPY")
    assert not out.exists()


def test_every_trick_that_ladybug_runs_writes_the_file(db, tmp_path):
    """The tricks are real: LadybugDB itself runs these spellings and writes the file."""
    for i, text in enumerate(["/* x */ COPY (RETURN 1) TO '{out}'", "RETURN 1; COPY (RETURN 1) TO '{out}'",
                              "COPY\u00a0(RETURN 1) TO '{out}'", "COPY\u2028(RETURN 1) TO '{out}'",
                              "cOpY (RETURN 1) TO '{out}'", "COPY/**/(RETURN 1) TO '{out}'"]):
        out = tmp_path / f"t{i}.csv"
        rc, result = ladybug_read_only(db, text.format(out=out))
        assert rc == 0 and out.exists(), (text, result)


def test_words_in_strings_and_comments_are_not_code(db):
    # Values are $parameters in ksymgraph; a literal that happens to be a keyword is no file access.
    p = ksymgraph("query", "MATCH (m:Module) WHERE m.name <> 'copy' AND m.name <> \"load\" // LOAD FROM\n"
                  "RETURN count(m) AS n /* COPY */", "--db", db, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert '"n": 5' in p.stdout
    assert cypher_code("RETURN 'a' /* b */ // c\n, `d` AS e") == "RETURN" + " " * 6 + "\n,  d  AS e"
    assert file_access_in("MATCH (s:Symbol) WHERE s.name = 'copy_from_user' RETURN s") is None
    assert file_access_in("MATCH (s:Symbol) WHERE s.name STARTS WITH 'load' RETURN s.name") is None


def test_unclosed_strings_and_comments_count_as_code():
    assert file_access_in("RETURN 1 AS x; 'COPY (RETURN 1) TO /tmp/f").startswith("COPY")
    assert file_access_in("RETURN 1 /* COPY (RETURN 1) TO '/tmp/f'").startswith("COPY")
    assert file_access_in("RETURN `x COPY").startswith("COPY")


def test_writes_are_refused_by_the_read_only_handle(db):
    refused = "Cannot execute write operations in a read-only database"
    p = ksymgraph("query", "MATCH (m:Module) DETACH DELETE m", "--db", db)
    assert p.returncode == 2 and refused in p.stderr, p.stderr
    p = ksymgraph("query", "CREATE (:Kernel {id: 'x', kernel: 'x', release: 'x'})", "--db", db, "--allow-file-access")
    assert p.returncode == 2 and refused in p.stderr, p.stderr
    p = ksymgraph("query", f"COPY Kernel FROM '{db}'", "--db", db, "--allow-file-access")  # a write all the same
    assert p.returncode == 2 and refused in p.stderr, p.stderr
    p = ksymgraph("kernels", "--db", db)
    assert p.returncode == 0 and FIXTURE_RELEASE in p.stdout and "\nx " not in p.stdout


def test_named_queries_still_run(db):
    p = ksymgraph("query", "--name", "importers", "--param", "symbol=a_plain", "--db", db, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert [r["module"] for r in json.loads(p.stdout)] == ["user_b"]


def test_neo4j_refuses_load_csv():
    """The Neo4j store's check (its queries run in a read transaction; LOAD CSV reads anyway)."""
    check = Neo4jStore.file_access_in
    assert check(None, "LOAD CSV FROM 'file:///etc/passwd' AS l RETURN l") == "LOAD CSV reads files and URLs"
    assert check(None, "MATCH (n) WITH n load /* x */ csv WITH HEADERS FROM 'https://x' AS l RETURN l") is not None
    assert check(None, "MATCH (s:Symbol) WHERE s.name = 'LOAD CSV' RETURN s") is None
