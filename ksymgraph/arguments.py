"""The command line's grammar: every ``ksymgraph`` subcommand, its options, and the ``--help``
that teaches it (examples, exit status). :mod:`ksymgraph.cli` runs what is parsed here.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "EPILOG"]

EPILOG = """\
examples:
  ksymgraph load debian:6.1.0-50-amd64                  # fetch Debian's kernel, load it
  ksymgraph load debian:6.1.0-50-amd64 ~/lttng/build    # ... plus out-of-tree modules
  ksymgraph whatif --unexport register_kprobe           # who breaks?
  ksymgraph whatif --gpl-only kfree --format json --exit-code
  ksymgraph check ./mymod.ko --kernel 6.1.0-50-amd64    # would it load there?
  ksymgraph history find_module kallsyms_lookup_name    # which kernel dropped it?
  ksymgraph usage --format md                           # export_report.pl, reborn
  ksymgraph query 'MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE s.name = $sym RETURN m.name' --param sym=kfree
  ksymgraph query --list                                # the named queries
  ksymgraph query --name importers --param symbol=kfree

The store is an embedded LadybugDB database (--db, default $KSYMGRAPH_DB or
~/.local/share/ksymgraph/graph.lbdb), or Neo4j with --neo4j bolt://HOST:7687 (or $NEO4J_URI).
Downloads are cached in $KSYMGRAPH_CACHE (default ~/.cache/ksymgraph).

exit status: 0 done; 1 with --exit-code when something breaks; 2 an error (one line on stderr),
nothing changed; 3 `load`, `check` or `diff --modules` did the work, but some inputs were skipped.
"""



def _store_args(p: argparse.ArgumentParser, kernel: bool = True) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--db", metavar="PATH", help="embedded database file (default: $KSYMGRAPH_DB or "
                                                "~/.local/share/ksymgraph/graph.lbdb)")
    g.add_argument("--neo4j", metavar="URI", help="use Neo4j at URI instead (bolt://localhost:7687; "
                                                  "$NEO4J_USER/$NEO4J_PASSWORD for auth)")
    if kernel:
        g.add_argument("--kernel", metavar="NAME", help="kernel to use (default: the only one in the store)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with a subparser per command."""
    p = argparse.ArgumentParser(
        prog="ksymgraph",
        description="A graph of Linux kernel exports, imports and modules that answers "
                    "'what breaks if this export changes?'",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    p.add_argument("--version", action="version", version=f"ksymgraph {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_load_parser, _whatif_parser, _query_parser, _usage_parser, _check_parser, _diff_parser,
                _history_parser, _export_parser, _explore_parser, _kernels_parser, _neo4j_parser):
        add(sub)
    return p


def _load_parser(sub) -> None:
    """``ksymgraph load``."""
    s = sub.add_parser("load", help="read module binaries and Module.symvers into the store",
                       description="Read one kernel from one or more SOURCEs and store it, replacing a kernel of the "
                                   "same name as a unit. SOURCE is debian:RELEASE[@SUITE] (fetched with apt-get "
                                   "download and cached), a directory (a build tree or /lib/modules/RELEASE, with "
                                   "its Module.symvers), a single .ko[.xz|.zst|.gz] or a Module.symvers. Later "
                                   "sources add to (and override modules of) earlier ones: a distribution kernel "
                                   "plus a directory of out-of-tree modules built against it.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ksymgraph load debian:6.1.0-50-amd64\n"
                              "  ksymgraph load debian:6.12.57+deb13-amd64          # trixie, via a private apt config\n"
                              "  ksymgraph load /lib/modules/$(uname -r) --symvers /usr/src/linux-headers-$(uname -r)/Module.symvers\n"
                              "  ksymgraph load debian:6.1.0-50-amd64 ./lttng-modules-2.13.9 --kernel 6.1-lttng\n"
                              "  ksymgraph load 'debian:6.12.*+deb12-amd64@bookworm-backports'   # a series: each kernel\n"
                              "                         # the store lacks, on its own ('debian:*@SUITE': every flavour)\n\n"
                              "exit status: 0 loaded everything; 3 loaded, but some inputs were skipped (listed on "
                              "stderr);\n2 nothing was loaded and the store is unchanged (the reason on stderr).")
    s.add_argument("sources", nargs="+", metavar="SOURCE")
    s.add_argument("--symvers", metavar="PATH", help="Module.symvers to use for directory sources")
    s.add_argument("--source", action="append", default=[], metavar="DIR",
                   help="C source tree to index and join (repeatable): the kernel tree (files attributed to "
                        "modules by Kbuild under the kernel's .config), an out-of-tree module's built tree "
                        "(attributed by its .mod files), 'debian' for Debian's linux-source package, or "
                        "'debian-headers' for its linux-headers-*-common package (enough for diff to tell renames)")
    s.add_argument("--config", metavar="PATH", help="the kernel's .config for Kbuild (default: from debian: sources)")
    s.add_argument("--workers", type=int, metavar="N", help="processes reading modules (default: all cores)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--show-skipped", type=int, default=20, metavar="N", help="list at most N skipped inputs (default 20)")
    s.add_argument("--reload", action="store_true",
                   help="with a series (debian:*@SUITE): load again the kernels the store already holds")
    s.add_argument("--allow-fewer", action="store_true",
                   help="replace a stored kernel even when module files were skipped and it would end up with fewer "
                        "modules than the store holds now (refused otherwise, leaving the store unchanged)")
    _store_args(s)


def _whatif_parser(sub) -> None:
    """``ksymgraph whatif``."""
    s = sub.add_parser("whatif", help="which modules break if exports change",
                       description="Apply changes to a kernel's exports and list the modules that would fail to load, "
                                   "with the rule (unknown-symbol, gpl-only, namespace, symbol-get, dependency), the "
                                   "symbols, and whether each break is direct or inherited from a failing dependency.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ksymgraph whatif --unexport register_kprobe\n"
                              "  ksymgraph whatif --gpl-only kfree --gpl-only kmalloc_trace --format html -o report.html\n"
                              "  ksymgraph whatif --namespace usb_register_driver=USB --exit-code")
    s.add_argument("--unexport", action="append", default=[], metavar="SYM", help="stop exporting SYM")
    s.add_argument("--gpl-only", action="append", default=[], metavar="SYM", help="make SYM an EXPORT_SYMBOL_GPL")
    s.add_argument("--namespace", action="append", default=[], metavar="SYM=NS", help="move SYM into namespace NS")
    s.add_argument("--remove-module", action="append", default=[], metavar="NAME", help="remove module NAME entirely")
    s.add_argument("--format", choices=("md", "json", "html"), default="md")
    s.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")
    s.add_argument("--exit-code", action="store_true",
                   help="exit 1 when any module breaks, 2 when a change names a symbol or module the kernel "
                        "does not have")
    s.add_argument("--hops", type=int, default=2, metavar="N",
                   help="with source loaded: look for exported callers of a removed export up to N calls away "
                        "(default 2)")
    _store_args(s)


def _query_parser(sub) -> None:
    """``ksymgraph query``."""
    s = sub.add_parser("query", help="run a Cypher query with parameters",
                       description="Run a read query on the store. User values go in $parameters, never into "
                                   "the query text: --param NAME=VALUE (VALUE is parsed as JSON when it can be, "
                                   "so --param n=3 is a number and --param l='[\"a\",\"b\"]' a list). The query "
                                   "runs read-only, and one that would read or write files or load code (COPY, "
                                   "LOAD FROM, LOAD EXTENSION, INSTALL, ATTACH, EXPORT/IMPORT DATABASE, Neo4j's "
                                   "LOAD CSV, ...) is refused unless --allow-file-access.")
    s.add_argument("cypher", nargs="?", metavar="CYPHER")
    s.add_argument("--name", metavar="NAME", help="run a named query from the library (see --list)")
    s.add_argument("--list", action="store_true", help="list the named queries and their parameters")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--allow-file-access", action="store_true",
                   help="let CYPHER read and write files and load extensions (COPY ... TO, LOAD FROM, ...); "
                        "it still cannot change the store")
    _store_args(s, kernel=False)


def _usage_parser(sub) -> None:
    """``ksymgraph usage``."""
    s = sub.add_parser("usage", help="every export with its users; every module with its dependencies",
                       description="What the kernel's removed scripts/export_report.pl gave: each export with owner, "
                                   "type, namespace and the number of in-tree modules importing it (unused exports "
                                   "listed apart), and each module with the modules and symbols it depends on.")
    s.add_argument("--format", choices=("md", "json", "html"), default="md")
    s.add_argument("--limit", type=int, metavar="N", help="rows per table in md/html (JSON is always whole)")
    s.add_argument("-o", "--output", metavar="FILE")
    _store_args(s)


def _check_parser(sub) -> None:
    """``ksymgraph check``."""
    s = sub.add_parser("check", help="would these out-of-tree modules load on a kernel?",
                       description="Read MODULE files and check them against a stored kernel: unknown symbols, "
                                   "GPL-only symbols under a non-GPL licence, missing namespace imports, failing "
                                   "dependencies among them; for each needed symbol that is not exported, the in-tree "
                                   "modular users (when the kernel's source is loaded).")
    s.add_argument("modules", nargs="+", metavar="MODULE")
    s.add_argument("--format", choices=("md", "json", "html"), default="md")
    s.add_argument("-o", "--output", metavar="FILE")
    s.add_argument("--exit-code", action="store_true", help="exit 1 when any module would not load")
    _store_args(s)


def _diff_parser(sub) -> None:
    """``ksymgraph diff``."""
    s = sub.add_parser("diff", help="export changes between two kernels, and what they do to your modules",
                       description="Compare the exports of two stored kernels A and B: removed, added, turned "
                                   "GPL-only (and back), namespaced or moved, moved owner (vmlinux <-> module), CRC "
                                   "changed. With --modules, tell for each module that works on A whether it would "
                                   "load on B, and why not; with the modules' source loaded with A and B's headers "
                                   "(--source debian-headers), what each would import once rebuilt against B's "
                                   "headers, through B's inlines and macros, and which of B's load rules that breaks.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --format json --exit-code\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --modules ./lttng-build/\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --modules zram,nvme")
    s.add_argument("a", metavar="KERNEL_A")
    s.add_argument("b", metavar="KERNEL_B")
    s.add_argument("--modules", action="append", default=[], metavar="SET",
                   help="modules to check: .ko files or directories built against A, or names of A's modules "
                        "(comma-separated); repeatable. With their source in A, also predicts the imports of a "
                        "rebuild against B's headers")
    s.add_argument("--format", choices=("pretty", "md", "json", "html"), default="pretty")
    s.add_argument("--limit", type=int, default=50, metavar="N", help="rows per list in pretty/md/html (default 50)")
    s.add_argument("-o", "--output", metavar="FILE")
    s.add_argument("--exit-code", action="store_true",
                   help="exit 1 on removed or tightened exports (with --modules: when a module would not load)")
    _store_args(s, kernel=False)


def _history_parser(sub) -> None:
    """``ksymgraph history``."""
    s = sub.add_parser("history", help="which kernel dropped, tightened or moved an export (or broke a module)",
                       description="Follow exports along every kernel of the store, in version order (Debian's own "
                                   "order for Debian kernels): exported or not, owner, GPL, namespace, CRC, in-tree "
                                   "importers; then the transitions (appeared, vanished, turned GPL-only, lost "
                                   "GPL-only, namespace changed, owner changed, CRC changed), each with the last "
                                   "kernel before and the first after. With --module, where a module would stop "
                                   "loading and by which rule.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ksymgraph history kallsyms_lookup_name __kernel_fpu_begin\n"
                              "  ksymgraph history find_module module_mutex --since 5.10.0-30-amd64 --format json\n"
                              "  ksymgraph history --module ./lttng-build/lttng-wrapper.ko\n"
                              "  ksymgraph history --module zram")
    s.add_argument("symbols", nargs="*", metavar="SYMBOL")
    s.add_argument("--module", metavar="MODULE", help="a module file, or the name of a module the store holds")
    s.add_argument("--since", metavar="KERNEL", help="start the series at this kernel")
    s.add_argument("--until", metavar="KERNEL", help="end the series at this kernel")
    s.add_argument("--flavour", metavar="FLAVOUR", default="",
                   help="the kernels of one Debian flavour make the series (amd64, cloud-amd64, rt-amd64; default: "
                        "the flavour most kernels of the store have; 'all': every kernel)")
    s.add_argument("--format", choices=("md", "json", "html"), default="md")
    s.add_argument("-o", "--output", metavar="FILE")
    _store_args(s, kernel=False)


def _export_parser(sub) -> None:
    """``ksymgraph export``."""
    s = sub.add_parser("export", help="write stored kernels for `neo4j-admin database import`",
                       description="Write the CSV and header files that `neo4j-admin database import full` takes, "
                                   "plus import.sh with the exact command: the offline way to put very large graphs "
                                   "(many kernels with source) into Neo4j. See docker/README.md.")
    s.add_argument("--neo4j-admin", required=True, metavar="DIR", help="output directory")
    s.add_argument("--database", default="neo4j", help="target database name (default neo4j)")
    _store_args(s, kernel=False)
    s.add_argument("--kernel", action="append", metavar="NAME", help="kernel to export (repeatable; default: all)")


def _explore_parser(sub) -> None:
    """``ksymgraph explore``."""
    s = sub.add_parser("explore", help="serve the what-if explorer notebook in the browser (Voila, offline)",
                       description="Serve notebooks/02-whatif-explorer.ipynb with Voila on 127.0.0.1, with a template\n"
                                   "that loads nothing from the internet, and open the URL it prints:\n"
                                   "http://127.0.0.1:PORT/?token=TOKEN. Every request needs the token (or the login\n"
                                   "cookie the URL sets) and a Host header that names this machine. Each open page\n"
                                   "runs a Python kernel, stopped when the page goes.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="bounds (see ksymgraph.explorer_server):\n"
                              "  at most --max-kernels kernels, one per open page: the next page gets a 503 that says\n"
                              "  why; a page stops its kernel as it goes, and the kernel of a page that went without a\n"
                              "  word (no connection, idle) stops --cull-after seconds later.\n"
                              "  A page's widget websocket (v1 protocol only, 2 per kernel) may send well-formed messages\n"
                              "  of at most 256 KiB, 200 messages and 1 MiB a second (bursts of 2000 and 4 MiB), and\n"
                              "  leave at most 16 MiB of replies unread; over that it is closed (code 1008, the reason\n"
                              "  in the log; the kernel lives on).\n"
                              "  The server then takes about 150 MB, a kernel about 240 MB on a small store and 400 MB\n"
                              "  on Debian's full kernel after a Run: about 2 GB in all with the defaults.\n\n"
                              "examples:\n  ksymgraph explore\n"
                              "  KSYMGRAPH_EXPLORE_TOKEN=$(cat ~/.explore-token) ksymgraph explore --port 9000\n"
                              "  ksymgraph explore --allow-host explorer.local --max-kernels 8")
    s.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default 8866; the next free one "
                                                          "if taken: the printed URL says which)")
    s.add_argument("--notebook", metavar="PATH", help="notebook to serve (default: the explorer)")
    s.add_argument("--token", metavar="TOKEN",
                   help="the token every request must carry (default: $KSYMGRAPH_EXPLORE_TOKEN, else a fresh "
                        "random one each run; a command line is visible to other users of the machine, the "
                        "environment is not)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; by default only "
                        "localhost and loopback addresses: a page of another site that reaches 127.0.0.1 "
                        "under its own name through DNS rebinding is refused)")
    s.add_argument("--max-kernels", type=int, default=4, metavar="N",
                   help="kernels at once, one per open page (default 4)")
    s.add_argument("--cull-after", type=int, default=60, metavar="SECONDS",
                   help="stop the kernel of a page that has gone after this many idle seconds (default 60)")
    _store_args(s, kernel=False)


def _kernels_parser(sub) -> None:
    """``ksymgraph kernels``."""
    s = sub.add_parser("kernels", help="list the kernels in the store, or those Debian's archive carries",
                       description="List the kernels in the store; with --available, the Debian kernels that "
                                   "`load debian:RELEASE` can fetch (of one SUITE, or of every suite the mirror "
                                   "has), oldest first, with the suite to name after @ and the package version.",
                       epilog="examples:\n  ksymgraph kernels\n  ksymgraph kernels --available\n"
                              "  ksymgraph kernels --available bookworm-backports",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--available", nargs="?", const="", metavar="SUITE",
                   help="list what Debian's archive carries instead (of SUITE: bookworm, trixie, sid, ...)")
    _store_args(s, kernel=False)


# `ksymgraph neo4j`: a local Neo4j server without Docker (ksymgraph.graph.neo4j_server) ------------------

def _neo4j_parser(sub) -> None:
    p = sub.add_parser("neo4j", help="run a local Neo4j server without Docker (start, stop, status, schema)",
                       description="Build Neo4j Community (pinned in docker/pom.xml) with Maven on first use, into "
                                   "$KSYMGRAPH_CACHE/neo4j-server, and run it in the background with Bolt on "
                                   "127.0.0.1. Needs Java 17+ and Maven; the password is $NEO4J_PASSWORD.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  export NEO4J_PASSWORD=choose-a-password\n"
                              "  export NEO4J_URI=$(ksymgraph neo4j start | tail -1)\n"
                              "  ksymgraph load debian:6.1.0-50-amd64 --neo4j $NEO4J_URI\n"
                              "  ksymgraph neo4j status; ksymgraph neo4j stop")
    ops = p.add_subparsers(dest="neo4j_command", metavar="ACTION", required=True)
    data = {"metavar": "DIR", "help": "server home: databases, logs, conf (default ~/.local/share/ksymgraph/neo4j)"}
    s = ops.add_parser("start", help="start the server (building it on first use); prints its bolt:// URI last")
    s.add_argument("--port", type=int, default=7687, help="Bolt port on 127.0.0.1 (default 7687; 0: any free port)")
    s.add_argument("--data", **data)
    s.add_argument("--heap", metavar="SIZE", help="JVM heap (default $KSYMGRAPH_NEO4J_HEAP or 2g)")
    s = ops.add_parser("stop", help="stop the server started from --data")
    s.add_argument("--data", **data)
    s = ops.add_parser("status", help="is it running? exit 0 when it runs and answers, 1 when not")
    s.add_argument("--data", **data)
    s = ops.add_parser("schema", help="create ksymgraph's constraints and indexes on a Neo4j server")
    s.add_argument("--neo4j", metavar="URI", help="the server (default $NEO4J_URI)")
