"""Load kernels into a store: the whole pipeline, read → resolve → write, end to end.

:func:`load_kernel` resolves each SOURCE (:mod:`ksymgraph.loaders.kernel`), reads every module
file on all cores (:mod:`ksymgraph.loaders.modules`) and the Module.symvers files
(:mod:`ksymgraph.loaders.symvers`), resolves them into one graph
(:mod:`ksymgraph.graph.build`) and writes it to the store as one unit. Files and lines that cannot
be read are skipped with a reason and counted in the :class:`LoadSummary`; the rest loads.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

from ..errors import KsymgraphError
from ..loaders.kernel import KernelSource, arch_from_release, resolve_source
from ..loaders.modules import reading_modules
from ..loaders.records import BuildOptions, KernelMeta, LoaderError, LookUpEdge, ModuleData, Skipped
from ..loaders.symvers import SymversEntry, for_each_symvers_entry
from ..loaders.trees import debian_headers_tree, debian_source_tree, index_source_tree
from .kernel_build import build_options

if TYPE_CHECKING:
    from .build import BuildReport
    from .store import GraphStore

__all__ = ["LoadError", "KernelInput", "LoadSummary", "SeriesSummary", "read_kernel", "load_kernel", "load_series"]

# Arrow's allocator (mimalloc) keeps freed pages a while before it gives them back to the system;
# resolving a kernel tree's source frees and allocates batch after batch, and the pages kept add a
# quarter to the step's peak (1,065 MiB against 830 MiB for Debian 6.1's tree). Give them back at
# once. Read when pyarrow is first imported, which a load does after this module (and its worker
# processes inherit it); a user's own setting wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")


class LoadError(KsymgraphError):
    """Nothing was loaded and the store is unchanged: every source failed, no module file could be
    read, the kernel cannot be named, or the load would replace a stored kernel with fewer modules."""


class KernelInput(NamedTuple):
    """Everything read from a load's sources, before it is resolved."""

    meta: KernelMeta
    """The kernel's name, version, architecture and sources (``build`` not filled in yet)."""
    modules: list[ModuleData]
    """Module files read, in source order."""
    symvers: list[SymversEntry]
    """Module.symvers entries read."""
    skipped: list[Skipped]
    """Sources, files and lines not read, with the reason."""
    config: Path | None
    """The kernel's ``.config`` when a source provides one."""
    module_files: int
    """How many module files the sources named (read or not)."""
    notes: list[str]
    """What the sources lacked and how it was made up for (nothing lost)."""


class LoadSummary(NamedTuple):
    """What a load did."""

    kernel: str
    """The name the kernel was stored under."""
    report: BuildReport
    """Counts of what was written."""
    skipped: list[Skipped]
    """Everything not loaded, with reasons: sources, module files, Module.symvers lines, duplicates."""
    seconds: float
    """Wall time of the whole load."""
    parse: object
    """With source trees: their summed :class:`~ksymgraph.loaders.records.ParseStats`; None without source."""
    build: BuildOptions
    """The kernel's build options the load rules use (from its .config, or inferred)."""
    notes: list[str]
    """What could not be read or inferred about the kernel's build, and what the rules assume."""


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="mod", file=sys.stderr, leave=False)


def read_kernel(
    sources: Iterable[str],
    kernel: str | None = None,
    symvers: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    meanwhile: Callable[[], None] | None = None,
) -> KernelInput:
    """Read every source: the kernel's metadata, module data in source order, symvers entries,
    skips, and the kernel's ``.config`` when a source provides one.

    Raises :class:`LoadError` when no source can be read, or when module files were named and none
    of them could be read (nothing would be loaded but an empty kernel).

    Module files are read by worker processes; meanwhile this process reads the Module.symvers
    files and then calls ``meanwhile`` (the load uses it to get the store ready).
    """
    skipped: list[Skipped] = []
    resolved: list[KernelSource] = []
    specs = list(sources)
    for spec in specs:
        try:
            resolved.append(resolve_source(spec, symvers))
        except LoaderError as e:
            skipped.append(Skipped(e.path, e.reason))
            continue
        except OSError as e:  # e.g. a download cache ($KSYMGRAPH_CACHE) that cannot be written
            skipped.append(Skipped(e.filename or spec, e.strerror or str(e)))
            continue
        skipped.extend(resolved[-1].skipped)
    if not resolved:
        raise LoadError("no source could be read: " + "; ".join(f"{s.path}: {s.reason}" for s in skipped))

    order = {}
    for i, src in enumerate(resolved):
        for path in src.module_files:
            order.setdefault(path, i)
    data: dict[str, ModuleData] = {}
    entries: list[SymversEntry] = []
    with reading_modules(list(order), workers) as results:
        for src in resolved:
            if src.symvers is None:
                continue
            try:
                for item in for_each_symvers_entry(src.symvers):
                    (skipped if isinstance(item, Skipped) else entries).append(item)
            except OSError as e:
                skipped.append(Skipped(str(src.symvers), e.strerror or str(e)))
        if meanwhile is not None:
            meanwhile()
        for item in _progress(results, len(order), "reading modules", progress):
            if isinstance(item, Skipped):
                skipped.append(item)
            else:
                data[item.info.path] = item
    modules = [data[p] for p in sorted(data, key=lambda p: (order[p], p))]
    if order and not modules:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise LoadError(f"none of the {len(order)} module files could be read ({reasons}"
                        f"{' ...' if len(skipped) > 3 else ''}); nothing was loaded")

    release = kernel or next((s.release for s in resolved if s.release), "")
    if not release:
        release = next((m.info.vermagic.split()[0] for m in modules if m.info.vermagic.strip()), "")
    if not release:
        raise LoadError("cannot tell which kernel this is (no release in the sources, no vermagic): pass --kernel NAME")
    version = next((s.version for s in resolved if s.version), "")
    meta = KernelMeta(release, version, arch_from_release(release), " ".join(specs))
    config = next((s.config for s in resolved if s.config), None)
    return KernelInput(meta, modules, entries, skipped, config, len(order), [n for s in resolved for n in s.notes])


@contextlib.contextmanager
def _collector(running: bool):
    """Run or pause the cyclic garbage collector within the block; restore its state after.

    A load pauses it from reading to writing: records are tuples without cycles, a collection
    pass every few hundred allocations would more than double the time of the resolve step and
    gain nothing, and the first pass after a pause walks every record read so far (0.04 s for a
    Debian kernel).
    """
    enabled = gc.isenabled()
    (gc.enable if running else gc.disable)()
    try:
        yield
    finally:
        (gc.enable if enabled else gc.disable)()


def _index_trees(specs: Iterable[str], release: str, config: Path | None, workers: int | None, progress: bool,
                 skipped: list[Skipped], version: str = "") -> list:
    """Index each source tree ``--source`` names; one that cannot be found is added to ``skipped``.
    ``version``: the kernel's (``6.1.192-3``), for the conditionals of a tree without a top Makefile.

    The garbage collector runs as usual meanwhile: indexing takes minutes and makes other objects.
    """
    trees = []
    specs = list(specs)
    if not specs:
        return trees
    with _collector(running=True):
        for spec in specs:
            try:
                files = None
                if spec == "debian":
                    root = debian_source_tree(release)
                elif spec == "debian-headers":
                    root, files = debian_headers_tree(release)
                else:
                    root = Path(spec)
                tree = index_source_tree(root, config, workers, progress, files, version)
            except LoaderError as e:
                skipped.append(Skipped(e.path, e.reason))
                continue
            except OSError as e:  # e.g. a download or index cache that cannot be written
                skipped.append(Skipped(e.filename or spec, e.strerror or str(e)))
                continue
            trees.append(tree)
            skipped.extend(tree.skipped)
    return trees


def load_kernel(
    store: GraphStore,
    sources: Iterable[str],
    kernel: str | None = None,
    symvers: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    lookups: Iterable[LookUpEdge] = (),
    source_dirs: Iterable[str] = (),
    config: str | None = None,
    allow_fewer: bool = False,
) -> LoadSummary:
    """Read ``sources`` as one kernel and write it to ``store``, replacing a kernel of that name.

    ``source_dirs`` are C source trees to index and join (``debian`` for Debian's
    ``linux-source`` package of the kernel, ``debian-headers`` for its ``linux-headers-*-common``
    package alone: enough to tell renames behind kept APIs); ``config`` is the kernel's ``.config``
    for Kbuild and for the build options the load rules use (default: the one a source provides).

    Nothing is lost silently: when module files were skipped and the store already holds this
    kernel with more modules than were read, the load raises :class:`LoadError` and leaves the
    stored kernel as it is, unless ``allow_fewer``.
    """
    t0 = time.perf_counter()

    def meanwhile() -> None:
        # While the workers read: open the store (when opened lazily) and create its tables, and
        # import pyarrow (0.1 s) with the resolve step. This module imports neither at the top, so
        # that the workers start first.
        store.prepare_write()
        from . import build  # noqa: F401

    with _collector(running=False):
        meta, modules, entries, skipped, found_config, n_files, source_notes = read_kernel(
            sources, kernel, symvers, workers, progress, meanwhile=meanwhile)
        config_path = Path(config) if config else found_config
        build, notes = build_options(config_path, modules, entries, meta.release, meta.arch)
        notes = source_notes + notes
        meta = meta._replace(build=build)
        if len(modules) < n_files and not allow_fewer:
            _refuse_fewer(store, meta.release, len({m.info.name for m in modules}), n_files - len(modules))
        trees = _index_trees(source_dirs, meta.release, config_path, workers, progress, skipped, meta.version)
        # Resolve and write at once: the store writes each table while the next ones are resolved.
        from .build import build_kernel_graph

        with store.writing_kernel(meta) as write:
            _batch, report = build_kernel_graph(meta, modules, entries, lookups, trees, ready=write,
                                                config=config_path)
            # Free the records while the store commits, and before the collector resumes.
            del modules, entries, _batch
    parse = None
    for tree in trees:
        parse = tree.stats if parse is None else parse + tree.stats
    return LoadSummary(meta.release, report, skipped + report.duplicates, time.perf_counter() - t0, parse, build,
                       notes)


def _refuse_fewer(store: GraphStore, release: str, reading: int, skipped_files: int) -> None:
    """Raise :class:`LoadError` if ``store`` holds kernel ``release`` with more module files than
    the ``reading`` this load read (``skipped_files`` of its files could not be read)."""
    rows = store.query("MATCH (m:Module) WHERE m.kernel = $kernel AND m.path <> '' RETURN count(m)",
                       {"kernel": release}).rows
    stored = rows[0][0] if rows else 0
    if stored > reading:
        raise LoadError(f"kernel {release} is stored with {stored} modules; this load read {reading} "
                        f"({skipped_files} module files could not be read), so replacing it would lose "
                        f"{stored - reading}. The store is unchanged: fix the inputs, or pass --allow-fewer "
                        "to replace it anyway")


class SeriesSummary(NamedTuple):
    """What loading a series of kernels (``debian:*@SUITE``) did."""

    loaded: list[LoadSummary]
    """The kernels loaded, in version order."""
    present: list[str]
    """Kernels of the series the store already held (left as they are)."""
    failed: list[tuple[str, str]]
    """(kernel, reason) for each kernel that could not be loaded; the others were."""
    seconds: float
    """Wall time of the whole series."""


def load_series(store: GraphStore, spec: str, workers: int | None = None, progress: bool = False,
                reload: bool = False, announce: Callable[[str], None] | None = None) -> SeriesSummary:
    """Load every kernel the series ``spec`` names (``debian:*@bookworm-backports``; see
    :func:`ksymgraph.loaders.kernel.series_releases`) that the store lacks (all of them with
    ``reload``), each as its own kernel. A kernel that fails is reported in the summary and the
    others still load; ``announce`` is called with a line before and after each kernel."""
    from ..errors import KsymgraphError
    from ..loaders.kernel import series_releases

    t0 = time.perf_counter()
    releases = series_releases(spec)
    have = set(store.kernels())
    loaded, present, failed = [], [], []
    say = announce or (lambda _line: None)
    for i, (release, suite) in enumerate(releases, 1):
        if release in have and not reload:
            present.append(release)
            continue
        say(f"[{i}/{len(releases)}] {release} ({suite}) ...")
        try:
            s = load_kernel(store, [f"debian:{release}@{suite}"], workers=workers, progress=progress)
        except KsymgraphError as e:
            failed.append((release, str(e)))
            say(f"[{i}/{len(releases)}] {release}: failed: {e}")
            continue
        loaded.append(s)
        say(f"[{i}/{len(releases)}] {release}: {s.report.modules} modules, {s.report.exports} exports in "
            f"{s.seconds:.1f} s" + (f", {len(s.skipped)} inputs skipped" if s.skipped else ""))
    return SeriesSummary(loaded, present, failed, time.perf_counter() - t0)
