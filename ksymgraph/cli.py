"""The ``ksymgraph`` command: a thin layer over the library functions.

Each subcommand parses its arguments, calls one library function and prints what it returns.
Errors are one clear line on stderr and exit status 2; ``--exit-code`` makes ``whatif`` and
``check`` exit 1 when something breaks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from .arguments import build_parser
from .errors import KsymgraphError

__all__ = ["main", "run"]

class CliError(KsymgraphError):
    """An error to print as one line, exiting 2."""


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
    print(f"loaded {len(s.loaded)} kernel{'' if len(s.loaded) == 1 else 's'} into {where} in {s.seconds:.0f} s"
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


def _read_modules(paths) -> tuple[list, int]:
    """Read module files; each unreadable one is one line on stderr (the file and why) and counted."""
    from .loaders.modules import read_module_file
    from .loaders.records import LoaderError

    mods, bad = [], 0
    for path in paths:
        try:
            mods.append(read_module_file(path))
        except LoaderError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    return mods, bad


def _skipped_status(bad: int, breaks: bool, exit_code: bool) -> int:
    """1 when something breaks and --exit-code asks; else 3 when inputs were skipped; else 0."""
    if bad:
        print(f"skipped {bad} unreadable file{'' if bad == 1 else 's'}", file=sys.stderr)
    return 1 if exit_code and breaks else 3 if bad else 0


def cmd_check(args) -> int:
    from .queries import usecases
    from .queries.report import render_check

    mods, bad = _read_modules(args.modules)
    if not mods:
        raise CliError("no module could be read (each file's reason is above)")
    with _open(args) as store:
        result = usecases.check(store, args.kernel, mods)
    _emit(render_check(result, args.format), args.output)
    return _skipped_status(bad, any(not m.loads for m in result.modules), args.exit_code)


def _module_set(items: list[str]) -> tuple[list, list[str], int]:
    """Split --modules values into module files (read now) and module names; and how many files
    could not be read."""
    from .loaders.modules import find_module_files, is_module_file

    paths, names = [], []
    for item in items:
        for part in filter(None, item.split(",")):
            p = Path(part)
            if p.is_dir():
                found = find_module_files(p)
                if not found:
                    raise CliError(f"{part}: no module files in this directory")
                paths.extend(found)
            elif p.is_file() or is_module_file(part):
                paths.append(part)
            else:
                names.append(part)
    files, bad = _read_modules(paths)
    return files, names, bad


def cmd_diff(args) -> int:
    from .queries import usecases
    from .queries.report import render_diff, render_upgrade

    with _open(args) as store:
        if args.modules:
            files, names, bad = _module_set(args.modules)
            impact = usecases.upgrade(store, args.a, args.b, files, names)
            rebuilt = usecases.rebuild(store, args.a, args.b, files, names)
            _emit(render_upgrade(impact, args.format, rebuilt), args.output)
            # a module with its source loaded: the rebuild's prediction decides
            predicted = {m.module: m.loads for m in rebuilt.modules if m.source}
            fails = any(not predicted.get(m.module, m.loads) for m in impact.modules)
            return _skipped_status(bad, fails, args.exit_code)
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
    env: dict[str, str | None] = {}
    if args.db:
        # The store asked for, also when $NEO4J_URI is set (the kernels' open_store would prefer it).
        env["KSYMGRAPH_DB"] = str(Path(args.db).resolve())
        env["NEO4J_URI"] = None
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
