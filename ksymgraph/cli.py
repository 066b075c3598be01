"""The ``ksymgraph`` command: a thin layer over the library functions.

Each subcommand parses its arguments, calls one library function and prints what it returns.
Errors are one clear line on stderr and exit status 2; ``--exit-code`` makes ``whatif`` and
``check`` exit 1 when something breaks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from .errors import KsymgraphError

__all__ = ["main", "run", "build_parser"]

EPILOG = """\
examples:
  ksymgraph load debian:6.1.0-50-amd64                  # fetch Debian's kernel, load it
  ksymgraph load debian:6.1.0-50-amd64 ~/lttng/build    # ... plus out-of-tree modules
  ksymgraph whatif --unexport register_kprobe           # who breaks?
  ksymgraph whatif --gpl-only kfree --format json --exit-code
  ksymgraph check ./mymod.ko --kernel 6.1.0-50-amd64    # would it load there?
  ksymgraph usage --format md                           # export_report.pl, reborn
  ksymgraph query 'MATCH (m:Module)-[:IMPORTS]->(s:Symbol) WHERE s.name = $sym RETURN m.name' --param sym=kfree
  ksymgraph query --list                                # the named queries
  ksymgraph query --name importers --param symbol=kfree

The store is an embedded LadybugDB directory (--db, default $KSYMGRAPH_DB or
~/.local/share/ksymgraph/graph.lbdb), or Neo4j with --neo4j bolt://HOST:7687 (or $NEO4J_URI).
Downloads are cached in $KSYMGRAPH_CACHE (default ~/.cache/ksymgraph).
"""


class CliError(KsymgraphError):
    """An error to print as one line, exiting 2."""


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

    s = sub.add_parser("usage", help="every export with its users; every module with its dependencies",
                       description="What the kernel's removed scripts/export_report.pl gave: each export with owner, "
                                   "type, namespace and the number of in-tree modules importing it (unused exports "
                                   "listed apart), and each module with the modules and symbols it depends on.")
    s.add_argument("--format", choices=("md", "json", "html"), default="md")
    s.add_argument("--limit", type=int, metavar="N", help="rows per table in md/html (JSON is always whole)")
    s.add_argument("-o", "--output", metavar="FILE")
    _store_args(s)

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

    s = sub.add_parser("diff", help="export changes between two kernels, and what they do to your modules",
                       description="Compare the exports of two stored kernels A and B: removed, added, turned "
                                   "GPL-only (and back), namespaced or moved, moved owner (vmlinux <-> module), CRC "
                                   "changed. With --modules, tell for each module that works on A whether it would "
                                   "load on B, and why not.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --format json --exit-code\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --modules ./lttng-build/\n"
                              "  ksymgraph diff 6.1.0-50-amd64 6.12.117+deb13-amd64 --modules zram,nvme")
    s.add_argument("a", metavar="KERNEL_A")
    s.add_argument("b", metavar="KERNEL_B")
    s.add_argument("--modules", action="append", default=[], metavar="SET",
                   help="modules to check: .ko files or directories built against A, or names of A's modules "
                        "(comma-separated); repeatable")
    s.add_argument("--format", choices=("pretty", "md", "json", "html"), default="pretty")
    s.add_argument("--limit", type=int, default=50, metavar="N", help="rows per list in pretty/md/html (default 50)")
    s.add_argument("-o", "--output", metavar="FILE")
    s.add_argument("--exit-code", action="store_true",
                   help="exit 1 on removed or tightened exports (with --modules: when a module would not load)")
    _store_args(s, kernel=False)

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

    s = sub.add_parser("export", help="write stored kernels for `neo4j-admin database import`",
                       description="Write the CSV and header files that `neo4j-admin database import full` takes, "
                                   "plus import.sh with the exact command: the offline way to put very large graphs "
                                   "(many kernels with source) into Neo4j. See docker/README.md.")
    s.add_argument("--neo4j-admin", required=True, metavar="DIR", help="output directory")
    s.add_argument("--database", default="neo4j", help="target database name (default neo4j)")
    _store_args(s, kernel=False)
    s.add_argument("--kernel", action="append", metavar="NAME", help="kernel to export (repeatable; default: all)")

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
    _neo4j_parser(sub)
    return p


def _open(args, read_only: bool = True, lazy: bool = False):
    from .graph.connect import open_store

    return open_store(args.db, args.neo4j, read_only=read_only, lazy=lazy)


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text + ("" if text.endswith("\n") else "\n"))
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)


def _load_series(args) -> int:
    from .graph.load import load_series
    from .loaders.kernel import is_series

    if len(args.sources) > 1 or args.kernel or args.source or args.symvers:
        raise CliError("a series (debian:PATTERN@SUITE) loads each kernel on its own: give it alone, "
                       "without --kernel, --source or --symvers")
    assert is_series(args.sources[0])
    with _open(args, read_only=False) as store:
        s = load_series(store, args.sources[0], workers=args.workers,
                        progress=not args.no_progress and sys.stderr.isatty(), reload=args.reload,
                        announce=lambda line: print(line, file=sys.stderr, flush=True))
        where = store.describe()
    print(f"loaded {len(s.loaded)} kernels into {where} in {s.seconds:.0f} s"
          + (f"; {len(s.present)} already there (--reload loads them again)" if s.present else "")
          + (f"; {len(s.failed)} failed" if s.failed else ""))
    for kernel, why in s.failed:
        print(f"  {kernel}: {why}", file=sys.stderr)
    if s.failed and not s.loaded and not s.present:
        return 2
    return 3 if s.failed or any(x.skipped for x in s.loaded) else 0


def cmd_load(args) -> int:
    from .graph.load import load_kernel
    from .loaders.kernel import is_series

    if any(is_series(spec) for spec in args.sources):
        return _load_series(args)

    # Opened at its first statement, once the workers that read the modules have started.
    with _open(args, read_only=False, lazy=True) as store:
        s = load_kernel(store, args.sources, kernel=args.kernel, symvers=args.symvers, workers=args.workers,
                        progress=not args.no_progress and sys.stderr.isatty(), source_dirs=args.source,
                        config=args.config, allow_fewer=args.allow_fewer)
        where = store.describe()
    from .queries.report import render_load

    out, err = render_load(s, where, args.show_skipped)
    print(out)
    if err:
        print(err, file=sys.stderr)
    return 3 if s.skipped else 0


def cmd_whatif(args) -> int:
    from .queries import usecases
    from .queries.report import render_whatif
    from .queries.whatif import parse_changes

    changes = parse_changes(args.unexport, args.gpl_only, args.namespace, args.remove_module)
    if not changes:
        raise CliError("nothing to try: give at least one --unexport, --gpl-only, --namespace or --remove-module")
    with _open(args) as store:
        result = usecases.whatif(store, args.kernel, changes, args.hops)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.exit_code and result.unknown:
        names = ", ".join(u.name for u in result.unknown)
        raise CliError(f"kernel {result.kernel} has no {names}: no report written (see the warnings above)")
    _emit(render_whatif(result, args.format), args.output)
    return 1 if args.exit_code and result.broken else 0


def cmd_query(args) -> int:
    from .queries import library
    from .queries.report import render_rows

    if args.list:
        for q in library.list_queries():
            print(f"{q.name}  {' '.join(p.describe() for p in q.params)}\n    {q.description}")
        return 0
    if not args.name and not args.cypher:
        raise CliError("give CYPHER, --name NAME or --list")
    params = dict(library.parse_param(p) for p in args.param)
    with _open(args) as store:
        if args.name:
            rows = library.run_named(store, args.name, params)
        else:
            rows = store.raw_query(args.cypher, params, allow_file_access=args.allow_file_access)
    print(render_rows(rows, args.format))
    return 0


def cmd_export(args) -> int:
    from .graph.neo4j_admin import export_neo4j_admin, read_kernel_batch

    with _open(args) as store:
        kernels = [store.resolve_kernel(k) for k in args.kernel] if args.kernel else store.kernels()
        exp = export_neo4j_admin([read_kernel_batch(store, k) for k in kernels], args.neo4j_admin, args.database)
    print(f"wrote {sum(exp.rows.values())} rows of {len(kernels)} kernels to {exp.out_dir}; "
          f"run {exp.out_dir}/import.sh with the database stopped")
    return 0


def cmd_usage(args) -> int:
    from .queries import usecases
    from .queries.report import render_usage

    with _open(args) as store:
        report = usecases.usage(store, args.kernel)
    _emit(render_usage(report, args.format, args.limit), args.output)
    return 0


def cmd_check(args) -> int:
    from .loaders.modules import read_module_file
    from .loaders.records import LoaderError
    from .queries import usecases
    from .queries.report import render_check

    mods, bad = [], 0
    for path in args.modules:
        try:
            mods.append(read_module_file(path))
        except LoaderError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    if not mods:
        raise CliError("no module could be read")
    with _open(args) as store:
        result = usecases.check(store, args.kernel, mods)
    _emit(render_check(result, args.format), args.output)
    if bad:
        print(f"skipped {bad} unreadable files", file=sys.stderr)
    return 1 if args.exit_code and (bad or any(not m.loads for m in result.modules)) else 0


def _module_set(items: list[str]) -> tuple[list, list[str]]:
    """Split --modules values into module files (read now) and module names."""
    from .loaders.modules import find_module_files, is_module_file, read_module_file
    from .loaders.records import LoaderError

    files, names = [], []
    for item in items:
        for part in filter(None, item.split(",")):
            p = Path(part)
            if p.is_dir():
                paths = find_module_files(p)
                if not paths:
                    raise CliError(f"{part}: no module files in this directory")
            elif p.is_file() or is_module_file(part):
                paths = [part]
            else:
                names.append(part)
                continue
            for path in paths:
                try:
                    files.append(read_module_file(path))
                except LoaderError as e:
                    print(f"error: {e}", file=sys.stderr)
    return files, names


def cmd_diff(args) -> int:
    from .queries import usecases
    from .queries.report import render_diff, render_upgrade

    with _open(args) as store:
        if args.modules:
            files, names = _module_set(args.modules)
            impact = usecases.upgrade(store, args.a, args.b, files, names)
            _emit(render_upgrade(impact, args.format), args.output)
            return 1 if args.exit_code and any(not m.loads for m in impact.modules) else 0
        d = usecases.diff(store, args.a, args.b)
    _emit(render_diff(d, args.format, args.limit), args.output)
    return 1 if args.exit_code and d.breaking else 0


def cmd_explore(args) -> int:
    import os
    from importlib import resources

    from .explorer_server import ServerLimits, serve_explorer

    # Shipped in the package (ksymgraph.notebooks), so an installed ksymgraph finds it too.
    notebook = Path(args.notebook) if args.notebook else Path(
        str(resources.files("ksymgraph.notebooks").joinpath("02-whatif-explorer.ipynb")))
    if not notebook.is_file():
        raise CliError(f"{notebook}: no such notebook (give --notebook PATH)")
    token = args.token if args.token is not None else os.environ.get("KSYMGRAPH_EXPLORE_TOKEN")
    limits = ServerLimits(max_kernels=args.max_kernels, cull_after=args.cull_after)
    env = {}
    if args.db:
        env["KSYMGRAPH_DB"] = str(Path(args.db).resolve())
    if args.neo4j:
        env["NEO4J_URI"] = args.neo4j
    serve_explorer(notebook, port=args.port, token=token, hosts=args.allow_host, limits=limits, env=env)
    return 0


def _available_kernels(suite: str) -> int:
    from .graph.store import Rows
    from .loaders.debian import available_kernels
    from .loaders.debnames import DebianError
    from .queries.report import render_rows

    try:
        kernels = available_kernels(suite or None)
    except DebianError as e:
        raise CliError(str(e)) from e
    rows = Rows(["release", "suite", "version", "archive", "headers"],
                [(k.release, k.suite, k.version, k.archive, "yes" if k.headers else "no") for k in kernels])
    print(render_rows(rows, "table"))
    return 0


def cmd_kernels(args) -> int:
    if args.available is not None:
        return _available_kernels(args.available)
    with _open(args) as store:
        rows = store.query("MATCH (k:Kernel) RETURN k.release AS kernel, k.version AS version, k.arch AS arch, "
                           "k.modversions AS modversions, k.vermagic AS vermagic, k.build_from AS rules_from, "
                           "k.source AS source ORDER BY kernel")
    from .queries.report import render_rows

    print(render_rows(rows, "table"))
    return 0


def cmd_history(args) -> int:
    from .loaders.modules import is_module_file, read_module_file
    from .queries import usecases
    from .queries.report import render_history, render_module_history

    if not args.symbols and not args.module:
        raise CliError("name at least one SYMBOL, or --module MODULE")
    flavour = None if args.flavour == "all" else args.flavour
    with _open(args) as store:
        if args.module:
            target = read_module_file(args.module) if is_module_file(args.module) or Path(args.module).is_file() \
                else args.module
            text = render_module_history(usecases.module_history(store, target, args.since, args.until, flavour),
                                         args.format)
        else:
            h = usecases.history(store, args.symbols, args.since, args.until, flavour)
            for sym, close in h.never_exported.items():
                print(f"warning: {sym}: no kernel in the store exports it"
                      + (f"; did you mean {', '.join(close)}?" if close else ""), file=sys.stderr)
            text = render_history(h, args.format)
    _emit(text, args.output)
    return 0


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


def cmd_neo4j(args) -> int:
    import os

    from .graph import neo4j_server as srv

    if args.neo4j_command == "start":
        if not srv.server_jar().is_file():
            print(f"building Neo4j {srv.pinned_version()} with Maven into {srv.server_jar().parent} "
                  "(first use; about 120 MB downloaded into ~/.m2 once)", file=sys.stderr)
        info = srv.start_server(args.port, args.data, heap=args.heap)
        print(f"Neo4j {info.version} running (pid {info.pid}, data {info.home}, log {info.log})")
        print(info.uri)
        return 0
    if args.neo4j_command == "stop":
        info = srv.stop_server(args.data)
        print(f"stopped Neo4j at {info.uri} (pid {info.pid})" if info else
              f"no Neo4j server was running from {args.data or srv.default_home()}")
        return 0
    if args.neo4j_command == "status":
        status = srv.server_status(args.data)
        print(status.reason)
        return 0 if status.answering else 1
    from .graph.connect import open_store

    with open_store(neo4j=args.neo4j or os.environ.get("NEO4J_URI") or "bolt://127.0.0.1:7687") as store:
        store.ensure_schema()
        print(f"constraints and indexes are in place on {store.describe()}")
    return 0


COMMANDS = {"load": cmd_load, "whatif": cmd_whatif, "check": cmd_check, "diff": cmd_diff, "history": cmd_history,
            "usage": cmd_usage, "query": cmd_query, "kernels": cmd_kernels, "export": cmd_export, "explore": cmd_explore,
            "neo4j": cmd_neo4j}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except KsymgraphError as e:
        print(f"ksymgraph {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ksymgraph ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted; the store is unchanged", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The console command: :func:`main`, then exit without tearing the interpreter down.

    Every command has closed its store and files by the time :func:`main` returns. Python's
    teardown after that frees each remaining object one by one and unloads pyarrow, numpy and
    LadybugDB: 0.06–0.1 s after a load, spent where the user waits and nothing can observe it.
    So stdout and stderr are flushed and the process ends with ``os._exit``. An exception that
    escapes :func:`main` (a bug) still ends the usual way, with its traceback.
    """
    import os

    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `ksymgraph ... | head` closed the pipe; or stderr closed above
            pass
    os._exit(status)
