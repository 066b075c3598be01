"""A ``.c`` file that a compiled file ``#include`` s is part of that translation unit (issue 14).

6.1's ``sound/pci/echoaudio/echo3g.c`` is a few ``#define`` s and ``#include "echoaudio.c"``; the
code that calls the kernel's exports is in the included file, which no Makefile names. The
compiler builds it into the includer's object: the source graph must attribute it to the
includer's modules (every one of them when several files include it), count its functions as
compiled, and resolve the calls between the two files as calls within one file
(graph/source.py's rule 1). A small kernel tree, indexed under a ``.config``, resolved by
:func:`~ksymgraph.graph.source.source_tables`, and measured as ``ksymgraph fidelity`` does.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import index_small_tree
from ksymgraph.graph.source import source_tables
from ksymgraph.loaders.units import indexed_includes, translation_units, unit_modules

FILES = {
    "Kbuild": "obj-y += kernel/\nobj-$(CONFIG_SND) += sound/\nobj-$(CONFIG_NET) += net/\n",
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n",
    "include/linux/kernel.h": "#define KERNEL_H 1\n",
    "arch/x86/include/asm/page.h": "#define PAGE_H 1\n",
    "kernel/Makefile": "obj-y += core.o\n",
    "kernel/core.c": """
        int snd_card_new(void) { return 0; }
        EXPORT_SYMBOL(snd_card_new);
        int pci_register(void) { return 0; }
        EXPORT_SYMBOL(pci_register);
        int card_helper(void) { return 0; }
        EXPORT_SYMBOL(card_helper);
    """,
    # Two cards, each one compiled file: #defines, then the shared code by #include.
    "sound/Makefile": "snd-echo3g-objs := echo3g.o\nsnd-mia-objs := mia.o\n"
                      "obj-$(CONFIG_SND_ECHO3G) += snd-echo3g.o\nobj-$(CONFIG_SND_MIA) += snd-mia.o\n",
    "sound/echo3g.c": """
        #define ECHOCARD_HAS_MIDI
        #include "echo3g_dsp.c"
        #include "echoaudio.c"
        #ifdef CONFIG_SND_NEVER
        #include "dead.c"
        #endif
        static int card_helper(void) { return 3; }
        static int echo_init(void) { return snd_echo_probe(); }
    """,
    "sound/mia.c": """
        #include "echoaudio.c"
        static int init_hw(void) { return 0; }
        static int card_helper(void) { return 4; }
    """,
    "sound/echo3g_dsp.c": "static int init_hw(void) { return write_dsp(); }\n",
    "sound/echoaudio.c": """
        #include "echoaudio.h"
        static int write_dsp(void) { return 0; }
        static int snd_echo_probe(void)
        {
            snd_card_new();
            init_hw();
            return card_helper() + pci_register();
        }
    """,
    "sound/echoaudio.h": "#define ECHO_H 1\n",
    "sound/dead.c": "static int dead(void) { return dead_import(); }\n",
    # A file Kbuild puts in two modules (liquidio's lio_core.c in liquidio and liquidio_vf).
    "net/Makefile": "a-objs := a_main.o common.o\nb-objs := b_main.o common.o\nobj-m += a.o b.o\n",
    "net/a_main.c": "static int a_init(void) { return shared(); }\n",
    "net/b_main.c": "static int b_init(void) { return shared(); }\n",
    "net/common.c": "int shared(void) { return snd_card_new(); }\n",
}

CONFIG = "CONFIG_X86_64=y\nCONFIG_SND=y\nCONFIG_NET=y\nCONFIG_SND_ECHO3G=m\nCONFIG_SND_MIA=m\n"

MODULES = ("snd_echo3g", "snd_mia", "a", "b", "vmlinux")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return index_small_tree(tmp_path_factory.mktemp("units"), FILES, CONFIG)[2]


@pytest.fixture(scope="module")
def tables(tree):
    st = source_tables("k", [tree], {m: f"k|{m}" for m in MODULES}, set())
    return {key: t if isinstance(t, pa.Table) else t.table() for key, t in st.rels.items()}


def pairs(table: pa.Table) -> set[tuple[str, str]]:
    """(from, to) of a relationship table, the kernel prefix cut off each id."""
    return {(f.split("|", 1)[1], t.split("|", 1)[1]) for f, t in zip(table["from"].to_pylist(), table["to"].to_pylist())}


def calls(tables) -> set[tuple[str, str]]:
    """(caller file|name, callee file|name, or the symbol's name) of every resolved call."""
    return pairs(tables[("CALLS", "Function", "Function")]) | pairs(tables[("CALLS", "Function", "Symbol")])


def test_the_index_records_the_includes_the_build_sees(tree):
    inc = indexed_includes(tree.shard_dir)
    assert inc["sound/echo3g.c"] == ("sound/echo3g_dsp.c", "sound/echoaudio.c")  # not dead.c: #ifdef CONFIG_SND_NEVER
    assert inc["sound/echoaudio.c"] == ("sound/echoaudio.h",)


def test_an_included_c_file_is_in_the_units_and_modules_of_its_includers(tree):
    assert tree.units == {"sound/echo3g_dsp.c": ("sound/echo3g.c",),
                          "sound/echoaudio.c": ("sound/echo3g.c", "sound/mia.c")}
    assert tree.modules["sound/echoaudio.c"] == ("snd_echo3g", "snd_mia")
    assert tree.modules["sound/echo3g_dsp.c"] == ("snd_echo3g",)
    assert tree.modules["net/common.c"] == ("a", "b")
    assert tree.built_into["sound/echoaudio.c"] == "snd_echo3g"  # the first includer's
    assert "sound/dead.c" not in tree.built_into and "sound/echoaudio.h" not in tree.built_into


def test_built_into_every_module_of_its_includers(tables):
    built = pairs(tables[("BUILT_INTO", "File", "Module")])
    assert {(f, m) for f, m in built if f.startswith(("sound/", "net/common"))} == {
        ("sound/echo3g.c", "snd_echo3g"), ("sound/echo3g_dsp.c", "snd_echo3g"),
        ("sound/echoaudio.c", "snd_echo3g"), ("sound/echoaudio.c", "snd_mia"), ("sound/mia.c", "snd_mia"),
        ("net/common.c", "a"), ("net/common.c", "b")}


def test_calls_between_the_files_of_a_unit_resolve_as_in_one_file(tables):
    c = calls(tables)
    # the includer reaches the included file's static function, and the included file the includer's
    assert ("sound/echo3g.c|echo_init", "sound/echoaudio.c|snd_echo_probe") in c
    assert ("sound/echoaudio.c|snd_echo_probe", "sound/echo3g_dsp.c|init_hw") in c
    # between two included files of one unit
    assert ("sound/echo3g_dsp.c|init_hw", "sound/echoaudio.c|write_dsp") in c
    # the unit's static card_helper, not the export of the same name; in the first unit by path
    assert ("sound/echoaudio.c|snd_echo_probe", "sound/echo3g.c|card_helper") in c
    assert not {(f, t) for f, t in c if f.startswith("sound/echoaudio.c|") and t in ("card_helper", "init_hw")}
    # the exports stay exports
    assert ("sound/echoaudio.c|snd_echo_probe", "kernel/core.c|snd_card_new") in c


def test_each_module_reaches_the_exports_its_included_code_calls(tables):
    """What ``ksymgraph fidelity`` predicts a module imports, walked as its query walks: the
    functions of the files built into it, their calls to exported functions."""
    built = pairs(tables[("BUILT_INTO", "File", "Module")])
    defined = pairs(tables[("DEFINED_IN", "Function", "File")])
    exported = {f for f, _s in pairs(tables[("EXPORTED_AS", "Function", "Symbol")])}
    c = pairs(tables[("CALLS", "Function", "Function")])

    def reaches(module):
        files = {f for f, m in built if m == module}
        own = {fn for fn, f in defined if f in files}
        return {t.split("|")[1] for f, t in c if f in own and t in exported}

    assert reaches("snd_echo3g") == {"snd_card_new", "pci_register"}
    assert reaches("snd_mia") == {"snd_card_new", "pci_register"}
    assert reaches("a") == reaches("b") == {"snd_card_new"}


def test_units_walk_through_headers_and_included_files():
    # lib/zstd/decompress_sources.h includes .c files; a self-include is no unit of its own
    includes = {"lib/decompress_unzstd.c": ("lib/zstd/decompress_sources.h", "include/linux/kernel.h"),
                "lib/zstd/decompress_sources.h": ("lib/zstd/common/debug.c", "lib/zstd/zstd_decompress_module.c"),
                "lib/zstd/zstd_decompress_module.c": ("lib/zstd/inner.inl",),
                "kernel/locking/qspinlock.c": ("kernel/locking/qspinlock.c",),
                "tools/x.c": ("lib/zstd/common/debug.c",)}
    units = translation_units(includes, ["lib/decompress_unzstd.c", "kernel/locking/qspinlock.c"])
    assert units == {"lib/zstd/common/debug.c": ("lib/decompress_unzstd.c",),
                     "lib/zstd/zstd_decompress_module.c": ("lib/decompress_unzstd.c",),
                     "lib/zstd/inner.inl": ("lib/decompress_unzstd.c",)}
    assert unit_modules(units, {"lib/decompress_unzstd.c": {"vmlinux"}})["lib/zstd/inner.inl"] == ("vmlinux",)
