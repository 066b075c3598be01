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
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

from ..errors import KsymgraphError
from ..loaders.kernel import KernelSource, arch_from_release, resolve_source
from ..loaders.modules import reading_modules
from ..loaders.records import KernelMeta, LoaderError, LookUpEdge, ModuleData, Skipped
from ..loaders.symvers import SymversEntry, for_each_symvers_entry
from ..loaders.trees import debian_headers_tree, debian_source_tree, index_source_tree

if TYPE_CHECKING:
    from .build import BuildReport
    from .store import GraphStore

__all__ = ["LoadError", "LoadSummary", "read_kernel", "load_kernel"]


class LoadError(KsymgraphError):
    """Nothing could be loaded (every source failed, or the kernel cannot be named)."""


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
    parse: object = None
    """With source trees: their summed :class:`~ksymgraph.loaders.records.ParseStats`."""


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
) -> tuple[KernelMeta, list[ModuleData], list[SymversEntry], list[Skipped], Path | None]:
    """Read every source: the kernel's metadata, module data in source order, symvers entries,
    skips, and the kernel's ``.config`` when a source provides one.

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

    release = kernel or next((s.release for s in resolved if s.release), "")
    if not release:
        release = next((m.info.vermagic.split()[0] for m in modules if m.info.vermagic.strip()), "")
    if not release:
        raise LoadError("cannot tell which kernel this is (no release in the sources, no vermagic): pass --kernel NAME")
    version = next((s.version for s in resolved if s.version), "")
    meta = KernelMeta(release, version, arch_from_release(release), " ".join(specs))
    config = next((s.config for s in resolved if s.config), None)
    return meta, modules, entries, skipped, config


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
                 skipped: list[Skipped]) -> list:
    """Index each source tree ``--source`` names; one that cannot be found is added to ``skipped``.

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
                tree = index_source_tree(root, config, workers, progress, files)
            except LoaderError as e:
                skipped.append(Skipped(e.path, e.reason))
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
) -> LoadSummary:
    """Read ``sources`` as one kernel and write it to ``store``, replacing a kernel of that name.

    ``source_dirs`` are C source trees to index and join (``debian`` for Debian's
    ``linux-source`` package of the kernel, ``debian-headers`` for its ``linux-headers-*-common``
    package alone: enough to tell renames behind kept APIs); ``config`` is the kernel's ``.config`` for Kbuild
    (default: the one a ``debian:`` source provides).
    """
    t0 = time.perf_counter()

    def meanwhile() -> None:
        # While the workers read: open the store (when opened lazily) and create its tables, and
        # import pyarrow (0.1 s) with the resolve step. This module imports neither at the top, so
        # that the workers start first.
        store.prepare_write()
        from . import build  # noqa: F401

    with _collector(running=False):
        meta, modules, entries, skipped, found_config = read_kernel(sources, kernel, symvers, workers, progress,
                                                                    meanwhile=meanwhile)
        trees = _index_trees(source_dirs, meta.release, Path(config) if config else found_config, workers,
                             progress, skipped)
        # Resolve and write at once: the store writes each table while the next ones are resolved.
        from .build import build_kernel_graph

        with store.writing_kernel(meta) as write:
            _batch, report = build_kernel_graph(meta, modules, entries, lookups, trees, ready=write)
            # Free the records while the store commits, and before the collector resumes.
            del modules, entries, _batch
    parse = None
    for tree in trees:
        parse = tree.stats if parse is None else parse + tree.stats
    return LoadSummary(meta.release, report, skipped + report.duplicates, time.perf_counter() - t0, parse)
