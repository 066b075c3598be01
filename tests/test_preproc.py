"""The preprocessor pass (ksymgraph.loaders.preproc): conditionals decided under a build, dead
branches blanked byte for byte, what cannot be decided kept and counted, bad input reported
with file:line; and its plumbing through cparse and cindex (cache keyed by the build)."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksymgraph.loaders import cindex, cparse, preproc, trees
from ksymgraph.loaders.preproc import PreprocContext, context_for_build, preprocess, version_code
from ksymgraph.loaders.records import ParseStats, Skipped

CONFIG = {"CONFIG_Y": "y", "CONFIG_M": "m", "CONFIG_NR_CPUS": "8192", "CONFIG_HZ": "0x100",
          "CONFIG_NAME": "debian", "CONFIG_X86_64": "y", "CONFIG_64BIT": "y", "CONFIG_CC_IS_GCC": "y",
          "CONFIG_GCC_VERSION": "120200"}


def ctx(module=None, version=(6, 1, 192), config=CONFIG, defines=()):
    return context_for_build(config, version, module, defines)


def code(src: str, context: PreprocContext | None = None) -> list[str]:
    """The lines of ``src`` left after the pass (directives included), stripped, blank ones out."""
    result = preprocess(textwrap.dedent(src).encode(), context or ctx())
    return [line.strip() for line in result.text.decode().splitlines() if line.strip()]


def run(src: str, context: PreprocContext | None = None):
    return preprocess(textwrap.dedent(src).encode(), context or ctx())


# --------------------------------------------------------------------------------------------
# .config, kconfig.h's helpers, MODULE


KCONFIG = """
    #if IS_ENABLED(CONFIG_{0})
    int enabled;
    #endif
    #if IS_BUILTIN(CONFIG_{0})
    int builtin;
    #endif
    #if IS_MODULE(CONFIG_{0})
    int module;
    #endif
    #if IS_REACHABLE(CONFIG_{0})
    int reachable;
    #endif
    #ifdef CONFIG_{0}
    int defined;
    #endif
    #if defined(CONFIG_{0}_MODULE)
    int defined_module;
    #endif
"""


@pytest.mark.parametrize("option, module, expected", [
    ("Y", False, ["enabled", "builtin", "reachable", "defined"]),
    ("Y", True, ["enabled", "builtin", "reachable", "defined"]),
    # kconfig.h: IS_REACHABLE(CONFIG_FOO) is false for built-in code when CONFIG_FOO=m
    ("M", False, ["enabled", "module", "defined_module"]),
    ("M", True, ["enabled", "module", "reachable", "defined_module"]),
    ("UNSET", True, []),
    ("UNSET", False, []),
    # an int option is defined, but not as 1: IS_ENABLED is false (the placeholder trick)
    ("NR_CPUS", False, ["defined"]),
])
def test_config_y_m_unset_with_kconfig_helpers(option, module, expected):
    r = run(KCONFIG.format(option), ctx(module))
    lines = [line.strip() for line in r.text.decode().splitlines() if line.strip()]
    assert lines == [f"int {name};" for name in expected]
    assert (r.decided, r.kept) == (6, 0)


def test_module_unknown_keeps_what_depends_on_it():
    r = run(KCONFIG.format("M"), ctx(None))
    lines = [line.strip() for line in r.text.decode().splitlines() if line.strip()]
    # IS_REACHABLE of an =m option needs MODULE: kept, with its directives; the rest decided
    assert lines == ["int enabled;", "int module;", "#if IS_REACHABLE(CONFIG_M)", "int reachable;", "#endif",
                     "int defined_module;"]
    assert (r.decided, r.kept) == (5, 1)


def test_module_ifdef():
    src = """
        #ifdef MODULE
        int as_module;
        #else
        int built_in;
        #endif
    """
    assert code(src, ctx(True)) == ["int as_module;"]
    assert code(src, ctx(False)) == ["int built_in;"]
    assert code(src, ctx(None)) == ["#ifdef MODULE", "int as_module;", "#else", "int built_in;", "#endif"]


def test_config_values_numbers_and_strings():
    assert code("""
        #if CONFIG_NR_CPUS > 64 && CONFIG_HZ == 256
        int many;
        #endif
        #if CONFIG_UNSET_NUMBER > 0
        int never;
        #endif
        #ifdef CONFIG_NAME
        int named;
        #endif
    """) == ["int many;", "int named;"]
    r = run("#if CONFIG_NAME == 1\nint x;\n#endif\n")
    assert r.kept == 1 and r.notes and "not an integer expression" in r.notes[0][1]


def test_arch_and_compiler():
    assert code("""
        #if defined(__x86_64__) && !defined(__aarch64__) && __SIZEOF_LONG__ == 8
        int x86_64;
        #endif
        #ifdef __ASSEMBLY__
        asm;
        #endif
        #ifndef __CHECKER__
        int not_sparse;
        #endif
        #ifdef __KERNEL__
        int kernel;
        #endif
        #if __GNUC__ >= 12 && __GNUC_MINOR__ == 2
        int gcc12;
        #endif
        #ifdef __LITTLE_ENDIAN
        int le;
        #endif
        #if defined(__LITTLE_ENDIAN_BITFIELD)
        int le_bitfield;
        #elif defined(__BIG_ENDIAN_BITFIELD)
        int be_bitfield;
        #endif
        #if BITS_PER_LONG == 64 && PAGE_SIZE == 4096
        int long64;
        #endif
        #if defined(__mc68000__) || defined(__powerpc__)
        int other_arch;
        #endif
    """) == ["int x86_64;", "int not_sparse;", "int kernel;", "int gcc12;", "int le;", "int le_bitfield;", "int long64;"]


# --------------------------------------------------------------------------------------------
# Chains, nesting, the file's own macros


def test_elif_chain_takes_the_first_true_branch():
    src = """
        #if defined(CONFIG_A)
        int a;
        #elif IS_ENABLED(CONFIG_M)
        int m;
        #elif IS_ENABLED(CONFIG_Y)
        int y;
        #else
        int other;
        #endif
    """
    r = run(src)
    assert [line.strip() for line in r.text.decode().splitlines() if line.strip()] == ["int m;"]
    # the #elif after the branch taken is not evaluated (as cpp), so not counted
    assert (r.decided, r.kept) == (2, 0)
    assert code(src.replace("CONFIG_M", "CONFIG_UNSET").replace("CONFIG_Y", "CONFIG_UNSET2")) == ["int other;"]


def test_elif_chain_with_an_undecided_branch():
    lines = code("""
        #if UNKNOWN_A
        int a;
        #elif 0
        int never;
        #elif 1
        int one;
        #else
        int other;
        #endif
    """)
    # a is kept, "never" and "other" are dead whatever UNKNOWN_A is; the chain's directives stay
    assert lines == ["#if UNKNOWN_A", "int a;", "#elif 0", "#elif 1", "int one;", "#else", "#endif"]


def test_nested_conditionals():
    r = run("""
        #ifdef CONFIG_Y
        # if IS_ENABLED(CONFIG_UNSET)
        int y_and_unset;
        # else
        int y_only;
        # endif
        #else
        # if UNKNOWN
        int dead_anyway;
        # endif
        #endif
    """)
    assert [line.strip() for line in r.text.decode().splitlines() if line.strip()] == ["int y_only;"]
    assert (r.decided, r.kept) == (2, 0)  # the #if UNKNOWN in the dead branch is not looked at


def test_file_macros_defined_and_undefined_in_order():
    assert code("""
        #undef DEAD
        #define USE_FAST 1
        #define LEVEL(x) ((x) * 2)
        #if USE_FAST && LEVEL(3) == 6
        int fast;
        #endif
        #undef USE_FAST
        #if USE_FAST
        int never;
        #endif
        #ifdef CONFIG_UNSET
        #define DEAD 1
        #endif
        #ifndef DEAD
        int not_dead;
        #endif
    """) == ["#undef DEAD", "#define USE_FAST 1", "#define LEVEL(x) ((x) * 2)", "int fast;", "#undef USE_FAST",
             "int not_dead;"]
    # a name the file neither defines nor undefines may come from a header: unknown
    assert code("#ifndef FROM_A_HEADER\nint x;\n#endif\n") == ["#ifndef FROM_A_HEADER", "int x;", "#endif"]


def test_a_define_in_an_undecided_branch_makes_the_name_unknown():
    lines = code("""
        #if UNKNOWN
        #define MAYBE 1
        #endif
        #ifdef MAYBE
        int maybe;
        #endif
    """)
    assert lines == ["#if UNKNOWN", "#define MAYBE 1", "#endif", "#ifdef MAYBE", "int maybe;", "#endif"]


def test_include_guard_is_decided():
    r = run("""
        #ifndef _LINUX_FOO_H
        #define _LINUX_FOO_H
        #ifdef CONFIG_Y
        int y;
        #endif
        #endif /* _LINUX_FOO_H */
    """)
    assert [line.strip() for line in r.text.decode().splitlines() if line.strip()] == ["#define _LINUX_FOO_H", "int y;"]
    assert (r.decided, r.kept) == (2, 0)


# --------------------------------------------------------------------------------------------
# Versions


def test_kernel_version_comparisons():
    src = """
        #if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
        int since_6_1;
        #endif
        #if LINUX_VERSION_CODE < KERNEL_VERSION(5,10,0)
        int before_5_10;
        #elif LINUX_VERSION_CODE < KERNEL_VERSION(6,2,0)
        int from_5_10_to_6_2;
        #endif
        #if LINUX_VERSION_MAJOR == 6 && LINUX_VERSION_SUBLEVEL >= 192
        int sublevel;
        #endif
    """
    assert code(src) == ["int since_6_1;", "int from_5_10_to_6_2;", "int sublevel;"]
    assert code(src, ctx(version=(5, 4, 0))) == ["int before_5_10;"]
    r = run(src, ctx(version=None))
    assert r.decided == 0 and r.kept == 4


def test_version_code_clamps_the_sublevel():
    # the top Makefile: SUBLEVEL > 255 is written as 255 (4.9.256 and 4.4.256 overflowed)
    assert version_code((4, 9, 300)) == (4 << 16) + (9 << 8) + 255
    assert code("#if LINUX_VERSION_CODE == KERNEL_VERSION(4,9,400)\nint same;\n#endif\n", ctx(version=(4, 9, 300))) \
        == ["int same;"]


LTTNG_VERSION_H = """
    #ifndef LTTNG_LINUX_PATCH
    #define LTTNG_LINUX_PATCH 0
    #endif
    #if (LTTNG_LINUX_PATCH >= 256)
    #define LTTNG_KERNEL_VERSION(a, b, c) \\
        ((((a) << 24) + ((b) << 16) + (c)) * 1ULL)
    #define LTTNG_LINUX_VERSION_CODE \\
        LTTNG_KERNEL_VERSION(LTTNG_LINUX_MAJOR, LTTNG_LINUX_MINOR, LTTNG_LINUX_PATCH)
    #else
    #define LTTNG_KERNEL_VERSION(a, b, c) (KERNEL_VERSION(a, b, c) * 1ULL)
    #define LTTNG_LINUX_VERSION_CODE (LINUX_VERSION_CODE * 1ULL)
    #endif
    #define LTTNG_KERNEL_RANGE(a_low, b_low, c_low, a_high, b_high, c_high) \\
        (LTTNG_LINUX_VERSION_CODE >= LTTNG_KERNEL_VERSION(a_low, b_low, c_low) && \\
         LTTNG_LINUX_VERSION_CODE < LTTNG_KERNEL_VERSION(a_high, b_high, c_high))
"""

LTTNG_USE = """
    #if (LTTNG_LINUX_VERSION_CODE >= LTTNG_KERNEL_VERSION(5,2,0))
    int uses_stack_trace_save_user;
    #else
    int uses_save_stack_trace_user;
    #endif
    #if LTTNG_KERNEL_RANGE(4,19,0, 5,0,0)
    int range_4_19;
    #endif
"""


def test_lttng_style_version_macros_defined_in_the_file():
    # (lttng-modules 2.13.9, include/lttng/kernel-version.h: LTTNG_LINUX_PATCH is not passed here)
    lines = code(LTTNG_VERSION_H + LTTNG_USE)
    assert "int uses_stack_trace_save_user;" in lines
    assert "int uses_save_stack_trace_user;" not in lines and "int range_4_19;" not in lines
    lines = code(LTTNG_VERSION_H + LTTNG_USE, ctx(version=(4, 19, 100)))
    assert "int uses_save_stack_trace_user;" in lines and "int range_4_19;" in lines


def test_lttng_style_version_macros_from_the_context():
    defines = (("LTTNG_KERNEL_VERSION(a, b, c)", "(KERNEL_VERSION(a, b, c) * 1ULL)"),
               ("LTTNG_LINUX_VERSION_CODE", "(LINUX_VERSION_CODE * 1ULL)"),
               ("LTTNG_KERNEL_RANGE(a_low, b_low, c_low, a_high, b_high, c_high)",
                ("(LTTNG_LINUX_VERSION_CODE >= LTTNG_KERNEL_VERSION(a_low, b_low, c_low) && "
                "LTTNG_LINUX_VERSION_CODE < LTTNG_KERNEL_VERSION(a_high, b_high, c_high))")))
    assert code(LTTNG_USE, ctx(defines=defines)) == ["int uses_stack_trace_save_user;"]
    # without them, the names are unknown: both kept
    assert "int uses_save_stack_trace_user;" in code(LTTNG_USE)


def test_tree_version_reads_the_makefile(tmp_path):
    (tmp_path / "Makefile").write_text("# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n")
    assert preproc.tree_version(tmp_path) == (6, 1, 192)
    assert preproc.tree_version(tmp_path / "none") is None


# --------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize("expr, value", [
    ("1 + 2 * 3 == 7", True), ("(1 + 2) * 3 == 9", True), ("10 / 3 == 3 && 10 % 3 == 1", True),
    ("-7 / 2 == -3 && -7 % 2 == -1", True), ("1 << 4 == 16 && 256 >> 4 == 16", True), ("~0 == -1", True),
    ("(5 & 3) == 1 && (5 | 3) == 7 && (5 ^ 3) == 6", True), ("!0 && !!2", True), ("3 > 2 && 2 >= 2 && 1 < 2", True),
    ("0x10 == 16 && 010 == 8 && 0b101 == 5", True), ("1UL == 1 && 2ull == 2 && 3L == 3", True),
    ("-1 < 0", True), ("-1 < 0u", False),  # the usual conversions: -1 becomes UINTMAX_MAX
    ("'a' == 97 && '\\n' == 10 && '\\x41' == 65 && '\\0' == 0", True), ("'\\377' < 0", True),
    ("1 ? 2 : 3", True), ("0 ? 1 : 0", False), ("UNKNOWN_X ? 1 : 1", True),
    ("0 && UNKNOWN_X", False), ("1 || UNKNOWN_X", True), ("UNKNOWN_X && 0", False),
    ("0 && __has_attribute(__fallthrough__)", False), ("defined CONFIG_Y && defined(CONFIG_Y)", True),
    ("0xffffffffffffffff == -1", True), ("KERNEL_VERSION(6,1,192) == 393664", True),
    ("IS_ENABLED(CONFIG_Y) + IS_ENABLED(CONFIG_M) == 2", True),
])
def test_integer_expressions(expr, value):
    r = run(f"#if {expr}\nint yes;\n#else\nint no;\n#endif\n")
    assert (r.decided, r.kept, r.notes) == (1, 0, [])
    assert [line.strip() for line in r.text.decode().splitlines() if line.strip()] == \
        ["int yes;" if value else "int no;"]


@pytest.mark.parametrize("expr", [
    "UNKNOWN_X", "UNKNOWN_X > 2", "__has_attribute(__fallthrough__)", "defined(UNKNOWN_X)",
    "UNKNOWN_X && 1", "PASTE(a, b)", "NR_IRQS > 16", '__has_include("errata/abi-1.h")', "__has_include(<linux/x.h>)",
])
def test_undecidable_keeps_every_branch_and_is_counted(expr):
    src = f"#define PASTE(a, b) a##b\n#if {expr}\nint yes;\n#else\nint no;\n#endif\n"
    r = run(src)
    assert (r.decided, r.kept, r.notes) == (0, 1, [])
    assert r.text == src.encode()


# --------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_reported_with_its_line_and_both_branches_kept():
    src = textwrap.dedent("""\
        #if (1 +
        int bad_expr;
        #endif
        #else
        #endif
        #if 1 / 0
        int div0;
        #endif
        #define A B
        #define B A
        #if A
        int recursive;
        #endif
        #ifdef
        int no_name;
        #endif
        #if 1
        #else
        #else
        int twice;
        #endif
        #if 1
        int unterminated;
    """)
    r = preprocess(src.encode(), ctx())
    assert r.notes == [
        (1, "#if (1 +: expression ends too early; every branch kept"),
        (4, "#else without #if: ignored"),
        (5, "#endif without #if: ignored"),
        (6, "#if 1 / 0: division by zero; every branch kept"),
        (11, "#if A: macro A recurses; every branch kept"),
        (14, "#ifdef : #ifdef needs a name; every branch kept"),
        (19, "#else after #else (the #if at line 17): every branch kept"),
        (22, "#if without #endif: every branch kept"),
    ]
    text = r.text.decode()
    for name in ("bad_expr", "div0", "recursive", "no_name", "twice", "unterminated"):
        assert f"int {name};" in text
    assert "#if 1\n#else\n#else" in text  # the broken chain is kept whole


BAD_C = (b"int a;\n#if 1 / 0\nint f(void) { return g(); }\n#else\nint h(void) { return k(); }\n#endif\n"
         b"#ifdef CONFIG_Y\nint u(void) { return v(); }\n")


def test_bad_input_in_a_parsed_file_is_a_file_line_skip():
    r = cparse.parse_source(BAD_C, "drivers/x.c", context=ctx())
    assert r.directive_notes == [
        Skipped("drivers/x.c:2", "preprocessor: #if 1 / 0: division by zero; every branch kept"),
        Skipped("drivers/x.c:7", "preprocessor: #if without #endif: every branch kept")]
    # still indexed, every branch of the bad conditionals read, as without a context
    plain = cparse.parse_source(BAD_C, "drivers/x.c")
    assert sorted(f.name for f in r.functions) == sorted(f.name for f in plain.functions) == ["f", "h", "u"]
    assert (r.stats.conditions_decided, r.stats.conditions_kept) == (1, 1)


def test_work_is_bounded():
    # a macro doubling at each level: 2**40 tokens if expanded; capped per condition
    defs = "#define A0 1\n" + "".join(f"#define A{i} (A{i - 1} + A{i - 1})\n" for i in range(1, 41))
    r = preprocess((defs + "#if A40\nint x;\n#endif\n" * 2000).encode(), ctx())
    assert r.kept == 2000 and r.decided == 0
    assert any("budget" in message for _line, message in r.notes)  # the file's budget ran out
    assert len(r.notes) <= preproc.MAX_NOTES + 1


# --------------------------------------------------------------------------------------------
# The text contract: same length, same newlines, for any conditionals


_CONDS = st.sampled_from(["1", "0", "defined(CONFIG_Y)", "IS_ENABLED(CONFIG_M)", "IS_REACHABLE(CONFIG_M)", "UNKNOWN",
                          "LINUX_VERSION_CODE > KERNEL_VERSION(5,0,0)", "(1 +", "MODULE", "'x' == 120",
                          "__has_attribute(x) || 0", "defined FOO"])
_LINES = st.one_of(
    _CONDS.map(lambda c: f"#if {c}"), _CONDS.map(lambda c: f"#elif {c}"), st.just("#else"), st.just("#endif"),
    st.just("#ifdef CONFIG_Y"), st.just("#ifndef FOO"), st.just("#define FOO 1"), st.just("#undef FOO"),
    st.just("int f(void) { return g(); }"), st.just("/* a comment\n#if 0 inside it\n*/"), st.just('char *s = "#if";'),
    st.just("#if 1 /* spans\nlines */"), st.just("#if 0 \\\n  || 1"), st.just("// #endif"), st.just("\r"),
    st.text(alphabet="#ifel ()01\n\\/*'\"", max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=30), st.sampled_from([True, False, None]))
def test_same_length_and_newlines_always(lines, module):
    src = "\n".join(lines).encode()
    r = preprocess(src, ctx(module))
    assert len(r.text) == len(src)
    assert [i for i, b in enumerate(r.text) if b == 10] == [i for i, b in enumerate(src) if b == 10]
    # only blanking: every byte is the original or a space
    assert all(a == b or a == 32 for a, b in zip(r.text, src))
    assert r.lines_blanked <= src.count(b"\n")


# --------------------------------------------------------------------------------------------
# Plumbing: cparse, cindex (the cache key), trees


HEADER = b"""#ifndef _H
#define _H
#ifdef CONFIG_JUMP_LABEL
static inline int key_enabled(void) { return arch_branch(); }
#else
static inline int key_enabled(void) { return static_key_count(); }
#endif
#endif
"""
DRIVER = b"""#include "h.h"
#ifdef MODULE
int init_module(void) { return key_enabled() + module_only(); }
#else
int builtin_init(void) { return key_enabled() + builtin_only(); }
#endif
"""


def _tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "h.h").write_bytes(HEADER)
    (root / "drv.c").write_bytes(DRIVER)
    (root / "core.c").write_bytes(DRIVER)
    return root


def _calls(shard_dir):
    t = cindex.read_table(shard_dir, "calls")
    return sorted(zip(t["file"].to_pylist(), t["callee"].to_pylist()))


def test_index_tree_decides_per_file_and_caches_by_context(tmp_path):
    root = _tree(tmp_path)
    shards = tmp_path / "idx"
    base = context_for_build({"CONFIG_JUMP_LABEL": "y", "CONFIG_X86_64": "y"}, (6, 1, 0))
    first = cindex.index_tree(root, include_dirs=[], shard_dir=shards, progress=False, workers=1, preproc=base,
                              modules={"drv.c": True, "core.c": False})
    assert _calls(shards) == [("core.c", "builtin_only"), ("core.c", "key_enabled"), ("drv.c", "key_enabled"),
                              ("drv.c", "module_only"), ("h.h", "arch_branch")]
    assert first.parsed == 3
    assert (first.stats.conditions_decided, first.stats.conditions_kept) == (4, 0)
    assert first.stats == ParseStats(3, 3, 0, 0, 0, 0, 0, 4, 0, 3)  # one line blanked in each file
    again = cindex.index_tree(root, include_dirs=[], shard_dir=shards, progress=False, workers=1, preproc=base,
                              modules={"drv.c": True, "core.c": False})
    assert (again.parsed, again.reused) == (0, 3)
    # core.c moves into a module: it alone is parsed again
    moved = cindex.index_tree(root, include_dirs=[], shard_dir=shards, progress=False, workers=1, preproc=base,
                              modules={"drv.c": True, "core.c": True})
    assert (moved.parsed, moved.reused) == (1, 2)
    assert ("core.c", "module_only") in _calls(shards) and ("core.c", "builtin_only") not in _calls(shards)
    # another .config: everything again; without one, every branch as before
    other = cindex.index_tree(root, include_dirs=[], shard_dir=shards, progress=False, workers=1,
                              preproc=base._replace(config={"CONFIG_X86_64": "y"}), modules={"drv.c": True})
    assert other.parsed == 3 and ("h.h", "static_key_count") in _calls(shards)
    plain = cindex.index_tree(root, include_dirs=[], shard_dir=shards, progress=False, workers=1)
    assert plain.parsed == 3 and plain.stats.conditions_decided == 0
    assert {c for _f, c in _calls(shards)} >= {"arch_branch", "static_key_count", "module_only", "builtin_only"}


def test_index_tree_reports_bad_directives_as_file_line(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "bad.c").write_bytes(BAD_C)
    r = cindex.index_tree(root, include_dirs=[], shard_dir=tmp_path / "idx", progress=False, workers=1,
                          preproc=ctx(False))
    assert [e for e in r.errors if e.path.startswith("bad.c:")] == [
        Skipped("bad.c:2", "preprocessor: #if 1 / 0: division by zero; every branch kept"),
        Skipped("bad.c:7", "preprocessor: #if without #endif: every branch kept")]
    assert _calls(tmp_path / "idx") == [("bad.c", "g"), ("bad.c", "k"), ("bad.c", "v")]


def test_index_source_tree_without_config_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KSYMGRAPH_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path)
    plain = trees.index_source_tree(root, workers=1)
    said = [s for s in plain.skipped if "preprocessor conditionals not decided" in s.reason]
    assert said == [Skipped(str(root.resolve()), "no .config given (--config): preprocessor conditionals not "
                                                 "decided, every branch read")]
    assert plain.stats.conditions_decided == 0
    config = tmp_path / "config"
    config.write_text("CONFIG_JUMP_LABEL=y\nCONFIG_X86_64=y\n# CONFIG_FOO is not set\n")
    decided = trees.index_source_tree(root, config, workers=1, version="6.1.192-3")
    assert not [s for s in decided.skipped if "preprocessor" in s.reason]
    assert decided.shard_dir != plain.shard_dir  # an index per build: neither re-parses the other's
    # not a kernel tree and not built: MODULE unknown for the .c files, the header decided
    assert decided.stats.conditions_decided == 2 and decided.stats.conditions_kept == 2
    assert ("h.h", "static_key_count") not in _calls(decided.shard_dir)


# --------------------------------------------------------------------------------------------
# An out-of-tree tree's own defines: its build's -D flags, its headers' version macros


def test_command_line_defines_common_to_every_object(tmp_path):
    (tmp_path / "src").mkdir()
    cc = "cmd_/b/src/{0}.o := gcc-12 -Wp,-MMD -nostdinc -D__KERNEL__ -DLTTNG_LINUX_PATCH=176 -DDEBIAN_API_VERSION=100 " \
         "-DMODULE -DKBUILD_BASENAME='\"{0}\"' -DKBUILD_MODNAME='\"{0}\"' -DONLY_{0}=1 -DQUOTED='\"x\"' -c -o {0}.o {0}.c\n"
    (tmp_path / "src" / ".a.o.cmd").write_text(cc.format("a") + "source_a := a.c\n")
    (tmp_path / "src" / ".b.o.cmd").write_text(cc.format("b"))
    (tmp_path / "src" / ".ab.o.cmd").write_text("cmd_/b/src/ab.o := ld -m elf_x86_64 -r -o ab.o a.o b.o\n")
    assert preproc.command_line_defines(tmp_path) == (
        ("DEBIAN_API_VERSION", "100"), ("LTTNG_LINUX_PATCH", "176"), ("__KERNEL__", "1"))


def test_version_macros_of_a_trees_headers():
    headers = [("include/lttng/kernel-version.h", textwrap.dedent(LTTNG_VERSION_H).encode()),
               ("include/other.h", (b"#define LTTNG_OTHER_VERSION LTTNG_KERNEL_VERSION(1, 2, 3)\n"
                                   b"#define NOT_VERSION 4\n#define CONFLICT_VERSION (KERNEL_VERSION(1,0,0))\n"
                                   b"#define USES_UNKNOWN_VERSION (LINUX_VERSION_CODE + SOMETHING)\n")),
               ("include/again.h", b"#define CONFLICT_VERSION (KERNEL_VERSION(2,0,0))\n")]
    # LTTng's Kbuild passes -DLTTNG_LINUX_PATCH=$(SUBLEVEL): without it the header's #ifndef
    # LTTNG_LINUX_PATCH is undecided (the name may come from the command line), and nothing is sure
    assert preproc.version_macros(headers, ctx(version=(6, 1, 176))) == ()
    flags = (("LTTNG_LINUX_MAJOR", "6"), ("LTTNG_LINUX_MINOR", "1"), ("LTTNG_LINUX_PATCH", "176"))
    found = dict(preproc.version_macros(headers, ctx(version=(6, 1, 176), defines=flags)))
    assert sorted(found) == ["LTTNG_KERNEL_RANGE(a_low, b_low, c_low, a_high, b_high, c_high)",
                             "LTTNG_KERNEL_VERSION(a, b, c)", "LTTNG_LINUX_VERSION_CODE", "LTTNG_OTHER_VERSION"]
    assert found["LTTNG_KERNEL_VERSION(a, b, c)"] == "(KERNEL_VERSION(a, b, c) * 1ULL)"  # the #else: 176 < 256
    lines = code(LTTNG_USE, ctx(version=(6, 1, 176), defines=tuple(found.items())))
    assert lines == ["int uses_stack_trace_save_user;"]


# --------------------------------------------------------------------------------------------
# Real data: linux-source-6.1 under Debian's config


@pytest.mark.realdata
def test_real_header_inline_in_a_dead_branch_disappears(debian_kernel):
    from ksymgraph.loaders import kbuild

    root = trees.debian_source_tree(debian_kernel.release)
    values = kbuild.read_config(debian_kernel.config)
    assert values["CONFIG_JUMP_LABEL"] == "y"
    context = context_for_build(values, preproc.tree_version(root))
    assert context.arch == "x86_64" and context.version[:2] == (6, 1)
    plain = cparse.parse_file("include/linux/jump_label.h", root)
    decided = cparse.parse_file("include/linux/jump_label.h", root, context=context)

    def callers(result, callee):
        return sorted({c.caller for c in result.calls if c.callee == callee})

    # CONFIG_JUMP_LABEL=y: the #else inlines (static_key_false() testing static_key_count()) are
    # not compiled; the live ones branch with arch_static_branch()
    assert callers(plain, "static_key_count") == ["static_key_false", "static_key_true"]
    assert callers(decided, "static_key_count") == []
    assert "static_key_false" in callers(decided, "arch_static_branch")
    assert decided.stats.conditions_decided >= 5 and decided.stats.lines_blanked > 50
    # the lines of what is left are those of the file
    assert {(f.name, f.line) for f in decided.functions} < {(f.name, f.line) for f in plain.functions}
    src = (root / "include/linux/jump_label.h").read_bytes()
    text = preprocess(src, context).text
    assert len(text) == len(src) and text.count(b"\n") == src.count(b"\n")


# --------------------------------------------------------------------------------------------
# A load: the counts reach its summary, the graph holds the live branch only


def test_load_with_a_config_decides_and_says_so(tmp_path, fixture_tree, monkeypatch):
    from conftest import FIXTURE_RELEASE
    from ksymgraph.graph.connect import open_store
    from ksymgraph.graph.load import load_kernel
    from ksymgraph.queries.report import render_load

    monkeypatch.setenv("KSYMGRAPH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "oot"
    root.mkdir()
    (root / "m.c").write_text("#ifdef CONFIG_FOO\nint a_fn(void) { return on_foo(); }\n#else\n"
                              "int a_fn(void) { return off_foo(); }\n#endif\n"
                              "#if UNKNOWN_X\nint b_fn(void) { return maybe(); }\n#endif\n")
    (root / "m.mod").write_text(f"{root / 'm.o'}\n")
    config = tmp_path / "config"
    config.write_text("CONFIG_FOO=y\nCONFIG_X86_64=y\n")
    store = open_store(tmp_path / "g.lbdb")
    try:
        s = load_kernel(store, [str(fixture_tree)], workers=1, source_dirs=[str(root)], config=str(config))
        out, _err = render_load(s, "here")
        assert "preprocessor: 1 conditions decided for this build (1 lines not compiled left out), 1 kept " \
               "undecided (every branch read)" in out.splitlines()
        rows = store.query("MATCH (f:Function)-[:CALLS]->(g) WHERE f.kernel = $k AND f.file STARTS WITH 'oot/' "
                           "RETURN f.name, g.name ORDER BY f.name, g.name", {"k": FIXTURE_RELEASE}).rows
        assert [tuple(r) for r in rows] == [("a_fn", "on_foo"), ("b_fn", "maybe")]
    finally:
        store.close()


@pytest.mark.realdata
def test_real_module_branch_matches_the_compiled_module(debian_kernel):
    """drivers/video/fbdev/uvesafb.c, built as a module by Debian (CONFIG_FB_UVESA=m): its
    ``#ifndef MODULE`` parts (uvesafb_setup() with strsep(), fb_get_options() in uvesafb_init())
    are not compiled, and the .ko imports neither; cn_add_callback(), outside them, it does."""
    from ksymgraph.loaders import kbuild
    from ksymgraph.loaders.modules import read_module_file

    root = trees.debian_source_tree(debian_kernel.release)
    values = kbuild.read_config(debian_kernel.config)
    assert values["CONFIG_FB_UVESA"] == "m"
    rel = "drivers/video/fbdev/uvesafb.c"
    assert {r.module for r in kbuild.evaluate_kbuild(root, values) if r.file == rel} == {"uvesafb"}
    ko = next(debian_kernel.modules_dir.rglob("uvesafb.ko*"))
    imports = set(read_module_file(str(ko)).imports.symbols)
    wanted = ("fb_get_options", "strsep", "cn_add_callback")
    assert {s for s in wanted if s in imports} == {"cn_add_callback"}

    def callees(context):
        return {c.callee for c in cparse.parse_file(rel, root, context=context).calls if c.callee in wanted}

    assert callees(None) == set(wanted)  # every branch read
    assert callees(context_for_build(values, preproc.tree_version(root), module=True)) == {"cn_add_callback"}
    assert callees(context_for_build(values, preproc.tree_version(root), module=False)) == set(wanted)
