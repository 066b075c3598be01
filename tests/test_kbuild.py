"""Hermetic tests of the Kbuild evaluator on a small fixture tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksymgraph.loaders import kbuild, make
from ksymgraph.loaders.records import BuiltInto
from ksymgraph.loaders.elf import module_name_from_path

FIXTURES = Path(__file__).parent / "fixtures" / "kbuild"


def test_read_config():
    config = kbuild.read_config(FIXTURES / "config")
    assert config["CONFIG_B"] == "m"
    assert config["CONFIG_FOO_EXTRA"] == "y"
    assert config["CONFIG_NAME"] == "quoted value"
    assert "CONFIG_OFF" not in config
    assert len(config) == 10


def test_evaluate_kbuild_fixture():
    records = sorted(kbuild.evaluate_kbuild(FIXTURES / "tree", FIXTURES / "config"))
    assert records == [
        BuiltInto("a/bar.c", "bar_drv", "a/bar-drv.ko"),  # bar-drv-objs, ifdef; "-" becomes "_"
        BuiltInto("a/core.c", "vmlinux", None),  # a/Kbuild wins over a/Makefile (wrong.o)
        BuiltInto("a/extra.c", "foo", "a/foo.ko"),  # foo-$(CONFIG_FOO_EXTRA)
        BuiltInto("a/foo_main.c", "foo", "a/foo.ko"),  # foo-y with a continuation line
        BuiltInto("a/foo_util.c", "foo", "a/foo.ko"),
        BuiltInto("a/named.c", "vmlinux", None),  # ifeq on a string option
        BuiltInto("a/p1.c", "p1", "a/p1.ko"),  # $(addsuffix) of a recursive variable
        BuiltInto("a/p2.c", "p2", "a/p2.ko"),
        BuiltInto("a/sub/four.c", "composite", "a/sub/composite.ko"),  # nested composite
        BuiltInto("a/sub/one.c", "vmlinux", None),  # $(var:.o=.o)
        BuiltInto("a/sub/three.c", "composite", "a/sub/composite.ko"),
        BuiltInto("a/sub/two.c", "vmlinux", None),  # "else ifeq" branch
        BuiltInto("arch/x86/kernel/head_64.S", "vmlinux", None),  # no .c: the .S
        BuiltInto("arch/x86/kernel/setup.c", "vmlinux", None),
        BuiltInto("arch/x86/lib/string.c", "vmlinux", None),  # libs-y of the arch Makefile, lib-y
        BuiltInto("b/bmod.c", "bmod", "b/bmod.ko"),  # directory entered through obj-m
        BuiltInto("b/deep/deep-mod.c", "deep_mod", "b/deep/deep-mod.ko"),  # its obj-y subdir
        BuiltInto("c/cdrv.c", "vmlinux", None),  # drivers-$(CONFIG_C) of the arch Makefile
    ]
    # b/notlinked.c (obj-y in a directory reached through obj-m) is in no module nor vmlinux,
    # off/ (CONFIG_OFF not set) is not entered, never.c (CONFIG_NOPE) is not built.


def test_config_as_dict_and_other_values():
    config = kbuild.read_config(FIXTURES / "config")
    config["CONFIG_B"] = "y"
    config.pop("CONFIG_BAR")
    records = set(kbuild.evaluate_kbuild(FIXTURES / "tree", config))
    assert BuiltInto("b/notlinked.c", "vmlinux", None) in records
    assert BuiltInto("b/bmod.c", "vmlinux", None) in records
    assert BuiltInto("a/not-bar.c", "not_bar", "a/not-bar.ko") in records
    assert not [r for r in records if r.module == "bar_drv"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$(patsubst %.o,%.c,a.o b.o)", "a.c b.c"),
        ("$(filter %.o,a.o b.c c.o)", "a.o c.o"),
        ("$(filter-out b.o,a.o b.o)", "a.o"),
        ("$(addprefix dir/,a.o b.o)", "dir/a.o dir/b.o"),
        ("$(subst m,y,$(CONFIG_B))", "y"),
        ("$(if $(CONFIG_B),yes,no)", "yes"),
        ("$(if $(CONFIG_OFF),yes,no)", "no"),
        ("$(foreach x,a b,$(x).o)", "a.o b.o"),
        ("$(strip  a   b )", "a b"),
        ("$(sort b a b)", "a b"),
        ("$(notdir x/y.o) $(basename y.o)", "y.o y"),
        ("$(shell echo hi)", ""),
        ("$$(x)", "$(x)"),
    ],
)
def test_make_functions(text, expected, tmp_path):
    (tmp_path / "Makefile").write_text(f"RESULT := {text}\n")
    values = kbuild.evaluate_makefile(tmp_path, ".", {"CONFIG_B": "m"})
    assert " ".join(values["RESULT"]) == expected


def test_recursive_and_simple_variables(tmp_path):
    (tmp_path / "Makefile").write_text(
        "A = $(B)\nS := $(B)\nB = late\nA += more\nS += more\nC ?= first\nC ?= second\n"
        "define X\nobj-y += nope.o\nendef\n"
    )
    values = kbuild.evaluate_makefile(tmp_path, ".", {})
    assert values["A"] == ["late", "more"]
    assert values["S"] == ["more"]
    assert values["C"] == ["first"]
    assert "obj-y" not in values


def test_module_name():
    assert module_name_from_path("sound/pci/hda/snd-hda-intel.ko") == "snd_hda_intel"
    assert module_name_from_path("/lib/modules/x/kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert module_name_from_path("nvme-core") == "nvme_core"


def test_kbuild_coverage():
    records = [BuiltInto("a/x.c", "snd_x", "a/snd-x.ko"), BuiltInto("a/y.c", "vmlinux", None)]
    share, unmapped = kbuild.kbuild_coverage(records, ["kernel/a/snd-x.ko.zst", "b/other.ko", "vmlinux.ko"])
    assert share == pytest.approx(1 / 3)
    assert unmapped == ["other", "vmlinux"]
    assert kbuild.kbuild_coverage(records, []) == (0.0, [])


def test_makefiles_that_cannot_be_read_are_reported(tmp_path):
    import os

    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "Kbuild")  # would block the reader for ever
    (tmp_path / "Kbuild").write_text("obj-y += a/ b/\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "Makefile").write_text("include b/one.mk\nobj-y += b.o\n")
    (tmp_path / "b" / "one.mk").write_text("include b/two.mk\n")  # a cycle: each read once
    (tmp_path / "b" / "two.mk").write_text("include b/one.mk\n")
    (tmp_path / "b" / "b.c").write_text("")
    skipped = []
    assert list(kbuild.evaluate_kbuild(tmp_path, {}, skipped=skipped)) == [BuiltInto("b/b.c", "vmlinux", None)]
    assert skipped == [("a/Kbuild", "not a regular file: a FIFO")]


def test_include_chain_is_cut_at_its_depth(tmp_path):
    (tmp_path / "Makefile").write_text("include m0.mk\n")
    n = make.MAX_INCLUDE_DEPTH + 3
    for i in range(n):
        (tmp_path / f"m{i}.mk").write_text(f"V{i} := {i}\ninclude m{i + 1}.mk\n")
    skipped = []
    values = kbuild.evaluate_makefile(tmp_path, ".", {}, skipped)
    assert [v for v in values if v.startswith("V")] == [f"V{i}" for i in range(make.MAX_INCLUDE_DEPTH)]
    assert skipped == [(f"m{make.MAX_INCLUDE_DEPTH - 1}.mk",
                        f"include m{make.MAX_INCLUDE_DEPTH}.mk not followed: includes nest deeper than "
                        f"{make.MAX_INCLUDE_DEPTH}")]
