"""The source graph resolves names to what the build sees (issue 14): not tools/, not another
architecture, not a non-static function of a file the build does not compile, not a macro under a
dead ``#if`` or in a header only a dead ``#include`` names, not a generic header's fallback that
the architecture's header overrides; a driver's own header before another driver's.

Each case is the shape of one that 6.1's tree had (graph/source.py's docstring), in a small kernel
tree indexed under a ``.config`` and resolved by :func:`ksymgraph.graph.source.source_tables`.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import index_small_tree
from ksymgraph.graph.source import source_tables
from ksymgraph.loaders.kbuild import read_config
from ksymgraph.loaders.preproc import context_for_build, macros_only_elsewhere, preprocess, shared_header_macros

FILES = {
    "Kbuild": "obj-y += kernel/\nobj-$(CONFIG_FOO) += drivers/foo/\n",
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n",
    "kernel/Makefile": "obj-y += spinlock.o util.o\n",
    "kernel/util.c": "void *kmemdup(const void *p) { return 0; }\n",
    "include/linux/fortify.h": "extern inline void *kmemdup(const void *p) { fortify_panic(); return __real_kmemdup(p); }\n",
    "kernel/spinlock.c": """
        void _raw_spin_lock(void *l) { }
        void not_built_either(void) { }
    """,
    "kernel/unbuilt.c": "void foo_helper(void) { unbuilt_only(); }\n",
    "drivers/foo/Makefile": "obj-$(CONFIG_FOO) += foo.o\n",
    "drivers/foo/foo.h": "#define dprintk(x) foo_log(x)\n",
    "drivers/bar/bar.h": "#define dprintk(x) bar_log(x)\n",
    "drivers/foo/foo.c": """
        #include <linux/spinlock.h>
        #include <asm/delay.h>
        #include <asm/bug.h>
        #include <asm/page.h>
        #include "foo.h"
        #include <linux/fortify.h>
        #include <linux/uaccess.h>
        void foo(void)
        {
            spin_lock(0);
            udelay(1);
            BUG_ON(1);
            dprintk("x");
            foo_helper();
            flush_it();
            tools_helper();
            kmemdup(0);
            __va(0);
            copy_from_user(0);
        }
    """,
    # 6.1's shape: arm64, s390 (and asm-generic's uaccess.h) define INLINE_COPY_FROM_USER, x86 not
    "include/linux/uaccess.h": """
        #ifdef INLINE_COPY_FROM_USER
        static inline unsigned long _copy_from_user(void *to) { return raw_copy_from_user(to); }
        #else
        extern unsigned long _copy_from_user(void *to);
        #endif
        static inline unsigned long copy_from_user(void *to) { return _copy_from_user(to); }
    """,
    "arch/arm/include/asm/uaccess.h": "#define INLINE_COPY_FROM_USER\n",
    "include/linux/spinlock.h": """
        #ifndef _LINUX_SPINLOCK_H
        #define _LINUX_SPINLOCK_H
        #ifdef CONFIG_SMP
        #include <linux/spinlock_api_smp.h>
        #else
        #include <linux/spinlock_api_up.h>
        #endif
        #define raw_spin_lock(l) _raw_spin_lock(l)
        #ifdef CONFIG_DEBUG_SPINLOCK
        #define spin_lock_check(l) debug_check(l)
        #endif
        static inline void spin_lock(void *l) { spin_lock_check(l); raw_spin_lock(l); }
        #endif
    """,
    "include/linux/spinlock_api_smp.h": """
        #ifdef CONFIG_INLINE_SPIN_LOCK
        #define _raw_spin_lock(l) __raw_spin_lock(l)
        #endif
    """,
    "include/linux/spinlock_api_up.h": "#define _raw_spin_lock(l) up_lock(l)\n",
    "include/asm-generic/bug.h": """
        #ifndef _ASM_GENERIC_BUG_H
        #define _ASM_GENERIC_BUG_H
        #ifndef HAVE_ARCH_BUG
        #define BUG() panic("BUG!")
        #endif
        #define BUG_ON(c) do { if (c) BUG(); } while (0)
        #endif
    """,
    "arch/x86/include/asm/bug.h": """
        #ifndef _ASM_X86_BUG_H
        #define _ASM_X86_BUG_H
        #define HAVE_ARCH_BUG
        #define BUG() x86_ud2()
        #include <asm-generic/bug.h>
        #endif
    """,
    "arch/x86/include/asm/delay.h": "#define udelay(n) x86_udelay(n)\n",
    "arch/x86/include/asm/page.h": "#ifndef _ASM_X86_PAGE_H\n#define _ASM_X86_PAGE_H\n#ifndef __va\n#define __va(x) x86_va(x)\n#endif\n#endif\n",
    "include/asm-generic/page.h": "#define __va(x) nommu_va(x)\n",
    "arch/arm/include/asm/delay.h": "#define udelay(n) arm_udelay(n)\n",
    "tools/testing/selftests/spinlock.c": '#include "../../include/tools_only.h"\nvoid spin_lock(void *l) { tools_lock(); }\n',
    "tools/include/tools_only.h": "static inline int tools_helper(void) { return tools_lock(); }\n",
    "arch/arm/kernel/setup.c": '#include "../include/asm/cache_arm.h"\nvoid setup(void) { flush_it(); }\n',
    "arch/arm/include/asm/cache_arm.h": "static inline void flush_it(void) { arm_flush(); }\n",
    "tools/include/linux/spinlock.h": "#define spin_lock(l) tools_spin_lock(l)\n",
}

CONFIG = "CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_FOO=m\n# CONFIG_INLINE_SPIN_LOCK is not set\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return index_small_tree(tmp_path_factory.mktemp("vis"), FILES, CONFIG)


@pytest.fixture(scope="module")
def edges(tree):
    """(caller file, caller, callee file or '', callee) of every call and reference resolved."""
    _root, _config, t = tree
    k = "k"
    st = source_tables(k, [t], {"foo": "k|foo", "vmlinux": "k|vmlinux"}, set())
    out = set()
    for rtype in ("CALLS", "REFERENCES"):
        for to in ("Function", "Symbol"):
            rows = st.rels[(rtype, "Function", to)]
            rows = rows if isinstance(rows, pa.Table) else rows.table()
            for frm, dst in zip(rows["from"].to_pylist(), rows["to"].to_pylist()):
                _k, ffile, fname = frm.split("|")
                parts = dst.split("|")
                out.add((ffile, fname, parts[1] if len(parts) == 3 else "", parts[-1]))
    return out


def callees(edges, file, name):
    return {(cf, c) for f, n, cf, c in edges if (f, n) == (file, name)}


def test_the_tree_is_attributed_and_knows_its_architecture(tree):
    _root, _config, t = tree
    assert t.arch == "x86"
    assert t.built_into == {"drivers/foo/foo.c": "foo", "kernel/spinlock.c": "vmlinux", "kernel/util.c": "vmlinux"}
    assert "tools/" in t.outside and "arch/arm/" in t.outside and "arch/x86/" not in t.outside


def test_a_header_inline_not_a_tools_function(edges):
    # tools/testing/selftests/spinlock.c's non-static spin_lock and tools/include's macro: not kernel
    assert callees(edges, "drivers/foo/foo.c", "foo") >= {("include/linux/spinlock.h", "spin_lock")}
    assert not {c for c in callees(edges, "drivers/foo/foo.c", "foo") if c[0].startswith("tools/")}


def test_a_compiled_function_not_a_dead_macro_nor_a_header_no_live_include_names(edges):
    # spinlock_api_smp.h's macro is under a dead #ifdef; spinlock_api_up.h is included only on !SMP
    assert callees(edges, "include/linux/spinlock.h", "raw_spin_lock") == {("kernel/spinlock.c", "_raw_spin_lock")}
    # a macro under a dead #ifdef defines nothing: the call stays a name (the build would not compile)
    assert callees(edges, "include/linux/spinlock.h", "spin_lock") == {
        ("include/linux/spinlock.h", "raw_spin_lock"), ("", "spin_lock_check")}
    assert not {e for e in edges if e[3] == "debug_check"}


def test_the_architectures_header_not_another_architectures(edges):
    # arm's inline is in the index (arch/arm/kernel/setup.c includes it) but no x86 file sees it
    assert ("", "flush_it") in callees(edges, "drivers/foo/foo.c", "foo")
    assert ("", "tools_helper") in callees(edges, "drivers/foo/foo.c", "foo")
    assert ("arch/x86/include/asm/delay.h", "udelay") in callees(edges, "drivers/foo/foo.c", "foo")
    assert callees(edges, "arch/x86/include/asm/delay.h", "udelay") == {("", "x86_udelay")}


def test_the_architectures_override_not_the_generic_fallback(edges):
    # asm-generic/bug.h's BUG() is #ifndef HAVE_ARCH_BUG, which arch/x86/include/asm/bug.h defines
    assert callees(edges, "include/asm-generic/bug.h", "BUG_ON") == {("arch/x86/include/asm/bug.h", "BUG")}
    assert not {e for e in edges if e[3] == "panic"}


def test_a_drivers_own_header_first(edges):
    # drivers/bar/bar.h sorts first, but foo.c includes "foo.h"
    assert ("drivers/foo/foo.h", "dprintk") in callees(edges, "drivers/foo/foo.c", "foo")
    assert ("drivers/bar/bar.h", "dprintk") not in callees(edges, "drivers/foo/foo.c", "foo")


def test_a_non_static_function_of_a_file_not_built_is_not_linked(edges):
    # kernel/unbuilt.c is not in any Makefile: its foo_helper is not what foo() links against
    assert ("", "foo_helper") in callees(edges, "drivers/foo/foo.c", "foo")
    assert ("kernel/unbuilt.c", "foo_helper") not in callees(edges, "drivers/foo/foo.c", "foo")


def test_shared_header_macros_decide_a_generic_headers_fallback(tree):
    root, config, _t = tree
    ctx = context_for_build(read_config(config), (6, 1, 192))
    headers = [(rel, (root / rel).read_bytes()) for rel in FILES if rel.startswith(("include/", "arch/x86/include/"))
               and rel != "include/asm-generic/page.h"]  # (other architectures': the loader leaves it out)
    shared = dict(shared_header_macros(headers, ctx))
    # defined for certain by the arch header; include guards and dead-branch macros are not
    assert shared == {"HAVE_ARCH_BUG": ""}
    generic = (root / "include/asm-generic/bug.h").read_bytes()
    alone, with_shared = preprocess(generic, ctx), preprocess(generic, ctx._replace(defines=tuple(shared.items())))
    assert b"panic" in alone.text and alone.kept == 1
    assert b"panic" not in with_shared.text and with_shared.kept == 0
    assert len(with_shared.text) == len(generic)


def test_shared_header_macros_leave_out_conflicts_and_undefs():
    ctx = context_for_build({"CONFIG_X86_64": "y", "CONFIG_HZ": "250"}, (6, 1, 192))
    headers = [
        ("include/a.h", b"#define TWICE 1\n#define SAME 2\n#define GONE 3\n#define HZ CONFIG_HZ\n"
                        b"#if HZ > 100\n#endif\n#ifdef TWICE\n#endif\n#ifdef SAME\n#endif\n#ifdef GONE\n#endif\n"
                        b"#ifdef UNTESTED_NEVER\n#endif\n#define NEVER_TESTED 5\n"),
        ("include/b.h", b"#define TWICE 2\n#define SAME 2\n#undef GONE\n#ifndef MAYBE\n#define HZ 100\n#endif\n"),
    ]
    shared = dict(shared_header_macros(headers, ctx))
    # TWICE: two bodies; GONE: #undef'd; NEVER_TESTED: no condition asks; HZ's other definition is
    # in a branch not decided, the certain one stands
    assert shared == {"SAME": "2", "HZ": "CONFIG_HZ"}


def test_a_macro_only_other_architectures_define_is_not_defined(tree, edges):
    # include/linux/uaccess.h's #ifdef INLINE_COPY_FROM_USER: only arm's header defines it, so
    # x86 calls the out-of-line _copy_from_user, never the inline (nor its raw_copy_from_user)
    _root, _config, t = tree
    assert callees(edges, "include/linux/uaccess.h", "copy_from_user") == {("", "_copy_from_user")}
    assert not {e for e in edges if e[3] == "raw_copy_from_user"}
    visible = [("include/linux/uaccess.h", FILES["include/linux/uaccess.h"].encode()),
               ("drivers/foo/foo.c", b"#define OWN 1\n#ifdef OWN\n#endif\n#ifdef BOTH\n#endif\n#ifdef FLAG\n#endif\n"
                                     b"#if defined(__NR_open)\n#endif\n")]
    elsewhere = [("arch/arm/include/asm/uaccess.h", b"#define INLINE_COPY_FROM_USER\n#define OWN 2\n#define FLAG\n"
                                                    b"#define BOTH 3\n#define __NR_open 5\n#define NEVER_TESTED\n")]
    makefiles = [("drivers/foo/Makefile", b"ccflags-y += -DBOTH=1\n")]
    # OWN: the build defines it too; BOTH: -D in a Makefile; NEVER_TESTED: no condition asks;
    # __NR_open: x86 generates its system calls' numbers
    assert macros_only_elsewhere(visible, elsewhere, makefiles) == ("FLAG", "INLINE_COPY_FROM_USER")


def test_an_extern_inline_in_a_header_before_the_librarys_function(edges):
    # fortify-string.h's __FORTIFY_INLINE kmemdup() is what foo() compiles, not mm/util.c's
    assert ("include/linux/fortify.h", "kmemdup") in callees(edges, "drivers/foo/foo.c", "foo")
    assert ("", "fortify_panic") in callees(edges, "include/linux/fortify.h", "kmemdup")


def macro_pass(tmp_path, header: str, text: str):
    """(macro names, calls, references) the macro pass writes for one header ``text``."""
    import pyarrow.parquet as pq

    from ksymgraph.loaders.macros import index_macros

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / header).write_text(text)
    n, _skipped = index_macros(tmp_path / "t", tmp_path / "idx", [header], [])
    out = tmp_path / "idx" / "macros"
    names = {r["name"] for r in pq.read_table(out / "functions.parquet").to_pylist()}
    assert len(names) <= n
    calls = {(c["caller"], c["callee"]) for c in pq.read_table(out / "calls.parquet").to_pylist()}
    refs = {(r["function"], r["symbol"]) for r in pq.read_table(out / "references.parquet").to_pylist()}
    return names, calls, refs


def test_a_macro_handed_to_a_macro_is_called(tmp_path):
    # 6.1's WARN_ONCE(c, fmt...) is DO_ONCE_LITE_IF(c, WARN, 1, fmt): WARN is called there, and
    # reaches __warn_printk; GFP_KERNEL passed on is no call
    _names, calls, _refs = macro_pass(tmp_path, "bug.h",
        "#define WARN(c, fmt...) ({ __warn_printk(fmt); })\n"
        "#define DO_ONCE_LITE_IF(c, func, ...) ({ if (c) func(__VA_ARGS__); })\n"
        "#define WARN_ONCE(c, fmt...) DO_ONCE_LITE_IF(c, WARN, 1, fmt)\n"
        "#define kz(s) kmalloc(s, GFP_KERNEL)\n")
    assert calls == {("WARN", "__warn_printk"), ("WARN_ONCE", "DO_ONCE_LITE_IF"), ("WARN_ONCE", "WARN"),
                     ("kz", "kmalloc")}


def test_upper_case_macros_that_lead_to_a_symbol(tmp_path):
    # x86's __va(x) adds PAGE_OFFSET, ((unsigned long)__PAGE_OFFSET), which under
    # CONFIG_DYNAMIC_MEMORY_LAYOUT is page_offset_base: an import of every module using __va()
    names, _calls, refs = macro_pass(tmp_path, "page.h",
        "#define __PAGE_OFFSET page_offset_base\n"
        "#define PAGE_OFFSET ((unsigned long)__PAGE_OFFSET)\n"
        "#define __va(x) ((void *)((unsigned long)(x)+PAGE_OFFSET))\n"
        "#define REG_CTRL 0x10\n#define REG_B (0x10UL << 4)\n"
        "#define GFP_KERNEL ((__force gfp_t)___GFP_IO)\n"
        "#define VMEMMAP_START vmemmap_base\n#define vmemmap ((struct page *)VMEMMAP_START)\n")
    # constants and flag masks are no macros of the graph; the chains to a symbol are
    assert names == {"__va", "vmemmap", "PAGE_OFFSET", "__PAGE_OFFSET", "VMEMMAP_START"}
    assert refs == {("__va", "PAGE_OFFSET"), ("PAGE_OFFSET", "__PAGE_OFFSET"), ("__PAGE_OFFSET", "page_offset_base"),
                    ("vmemmap", "VMEMMAP_START"), ("VMEMMAP_START", "vmemmap_base")}

def test_an_asm_generic_header_another_architecture_uses_decides_nothing(edges):
    # include/asm-generic/page.h (nommu architectures') defines __va for certain; no x86 file
    # includes it, so x86's `#ifndef __va` in asm/page.h stays undecided and its __va is live
    assert ("arch/x86/include/asm/page.h", "__va") in callees(edges, "drivers/foo/foo.c", "foo")
    assert callees(edges, "arch/x86/include/asm/page.h", "__va") == {("", "x86_va")}
