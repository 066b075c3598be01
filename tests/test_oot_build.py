"""Out-of-tree builds (ksymgraph.loaders.oot): LTTng 2.13.9 built against Debian's 6.1 headers.

The real-data tests build ``lttng-modules-dkms`` DKMS-style in the cache (a few minutes the first
time, then reused), load the modules together with the Debian kernel, check that every one of them
loads (all imports resolve), and that unexporting ``register_kprobe`` breaks exactly the LTTng
modules that import it (per their ELF imports) plus everything that depends on them, which is
computed here independently from the module dependency graph.
"""

from __future__ import annotations

import time
from pathlib import Path

import networkx as nx
import pytest

from ksymgraph.loaders import oot

TIMER_H_61 = """
TRACE_EVENT(hrtimer_start,

	TP_PROTO(struct hrtimer *hrtimer, enum hrtimer_mode mode%s),
"""


def test_patch_applies_only_when_the_header_needs_it(tmp_path):
    patch = next(p for p in oot.SOURCE_PATCHES if p.name == "hrtimer-start-was-armed")
    common = tmp_path / "common"
    header = common / "include" / "trace" / "events" / "timer.h"
    header.parent.mkdir(parents=True)
    header.write_text(TIMER_H_61 % "")
    assert not patch.needed(common)
    header.write_text(TIMER_H_61 % ", bool was_armed")
    assert patch.needed(common)

    src = tmp_path / "src"
    (src / Path(patch.file).parent).mkdir(parents=True)
    (src / patch.file).write_text("/* before */\n" + patch.old + "/* after */\n")
    assert oot._apply_patches("lttng-modules-dkms", src, common) == ["hrtimer-start-was-armed"]
    assert (src / patch.file).read_text() == "/* before */\n" + patch.new + "/* after */\n"
    assert oot._apply_patches("other-dkms", src, common) == []
    # The kernel needs it but the source does not have the expected text: a clear error.
    with pytest.raises(oot.OotError, match="does not contain the expected text"):
        oot._apply_patches("lttng-modules-dkms", src, common)


def test_read_build_rejects_other_directories(tmp_path):
    with pytest.raises(oot.OotError, match="not an out-of-tree build entry"):
        oot.read_build(tmp_path / "modules")


@pytest.fixture(scope="module")
def lttng_build(debian_kernel):
    """(modules directory, OotBuild) of LTTng built against the test kernel."""
    out = oot.build_dkms_modules("lttng-modules-dkms", debian_kernel.release, ("CONFIG_LTTNG=m",))
    return out, oot.read_build(out)


@pytest.mark.realdata
def test_lttng_source_and_headers(debian_kernel):
    src = oot.lttng_source_dir()
    assert src.name.startswith("lttng-modules-2.13") and (src / "src" / "Kbuild").is_file()
    headers = oot.kernel_build_dir(debian_kernel.release)
    assert headers.name == f"linux-headers-{debian_kernel.release}"
    include = (headers / "Makefile").read_text().split()
    assert include[0] == "include" and Path(include[1]).is_file()
    assert Path(include[1]).is_relative_to(headers.parent.parent.parent)  # the private copy, not /usr/src
    assert (headers / "scripts" / "mod" / "modpost").exists()  # the kbuild package's tools, by relative links
    assert (headers / "Module.symvers").is_file()


@pytest.mark.realdata
def test_lttng_builds_and_is_cached(lttng_build, debian_kernel):
    out, build = lttng_build
    kos = sorted(p.name for p in out.rglob("*.ko"))
    assert len(kos) >= 40, kos
    for name in ("lttng-tracer.ko", "lttng-wrapper.ko", "lttng-lib-ring-buffer.ko", "lttng-kprobes.ko",
                 "lttng-kretprobes.ko", "lttng-statedump.ko", "lttng-probe-sched.ko", "lttng-probe-timer.ko"):
        assert name in kos
    assert sorted(Path(m).name for m in build.modules) == kos
    assert build.package == "lttng-modules-dkms" and build.version.startswith("2.13.9")
    assert build.release == debian_kernel.release and build.make_args == ["CONFIG_LTTNG=m"]
    common = next(oot.kernel_build_dir(debian_kernel.release).parent.glob("linux-headers-*-common"))
    assert build.patches == [p.name for p in oot.SOURCE_PATCHES if p.needed(common)]
    assert (build.source_dir / "Module.symvers").is_file()
    # Cached: a second call returns at once, and no temporary directory is left behind.
    t0 = time.perf_counter()
    assert oot.build_dkms_modules("lttng-modules-dkms", debian_kernel.release, ("CONFIG_LTTNG=m",)) == out
    assert time.perf_counter() - t0 < 5
    assert not [p for p in out.parent.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.realdata
def test_lttng_loads_with_the_kernel_and_register_kprobe_whatif(lttng_build, debian_kernel, tmp_path):
    from ksymgraph import notebook as nb
    from ksymgraph.graph.load import load_kernel
    from ksymgraph.graph.projection import KernelProjection
    from ksymgraph.graph.connect import open_store
    from ksymgraph.queries.whatif import failing_modules, parse_changes, what_if

    out, _build = lttng_build
    lttng = nb.oot_module_data(out)
    names = {m.info.name for m in lttng}
    assert len(names) == len(lttng) >= 40
    release = debian_kernel.release
    with open_store(tmp_path / "graph.lbdb") as store:
        summary = load_kernel(store, [f"debian:{release}", str(out)])
        assert summary.kernel == release
        assert not [s for s in summary.skipped if str(out) in s.path]
        proj = KernelProjection.from_store(store, release)

    assert names <= set(proj.modules)
    assert all(not proj.modules[n].intree for n in names)
    # Every LTTng module's imports resolve on the kernel it was built for.
    assert not names & set(failing_modules(proj))

    importers = {m.info.name for m in lttng if any(i.symbol == "register_kprobe" for i in m.import_records())}
    assert {"lttng_kprobes", "lttng_wrapper"} <= importers
    # Everything that reaches an importer through module dependencies fails with it.
    g = proj.to_networkx()
    cascade = set().union(*(nx.ancestors(g, m) for m in importers)) - importers
    assert "lttng_tracer" in cascade and cascade <= names

    result = what_if(proj, parse_changes(unexport=["register_kprobe"]))
    direct = {b.module for b in result.broken if b.direct}
    inherited = {b.module for b in result.broken if not b.direct}
    assert direct == importers
    assert inherited == cascade
    assert result.summary["in_tree"] == 0 and result.summary["out_of_tree"] == len(importers | cascade)
    for b in result.broken:
        if b.direct:
            assert [(r.rule, r.symbol) for r in b.reasons if r.rule != "dependency"] == [("unknown-symbol", "register_kprobe")]
        else:
            assert all(r.rule == "dependency" and r.via_module in importers | cascade for r in b.reasons)
    assert result.already_broken == []
