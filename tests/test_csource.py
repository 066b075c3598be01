"""Hermetic tests of the C loader: exact records from small fixture files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ksymgraph.loaders import cexports, cfiles, cindex, cparse, ctext, ctree, includes, neutralise, trees
from ksymgraph.loaders.lookups import find_wrappers, resolve_lookups
from ksymgraph.loaders.records import ArgFlow, Call, ExportSite, FunctionDef, LoaderError, LookUp, ParseStats, StringArg

FIXTURES = Path(__file__).parent / "fixtures" / "c"
TREE = FIXTURES / "tree"
LTTNG = FIXTURES / "lttng"


# ------------------------------------------------------------------------------------------------
# neutralising


def test_neutralise_keeps_length_and_lines():
    src = (TREE / "functions.c").read_bytes()
    out = neutralise.neutralise_kernel_macros(src)
    assert len(out) == len(src)
    assert [i for i, c in enumerate(src) if c == 0x0A] == [i for i, c in enumerate(out) if c == 0x0A]


@pytest.mark.parametrize(
    "before, after",
    [
        (b"static int __init f(void)", b"static int        f(void)"),
        (b"int __printf(1, 2) f(void)", b"int                f(void)"),
        (b"static __always_inline int f", b"static inline          int f"),
        (b"void f(void) __acquires(l) {", b"void f(void)               {"),
        (b"int __attribute__((a(b))) x;", b"int                       x;"),
        (b"{\n\tlist_for_each_entry(p, h, m) {", b"{\n\twhile              (p, h, m) {"),
        (b"}\n\tfor_each_cpu(c, m)\n\t\tf(c);", b"}\n\twhile       (c, m)\n\t\tf(c);"),
        (b"SYSCALL_DEFINE1(close, unsigned int, fd)", b"int sys_close()                         "),
        (b"SYSCALL32_DEFINE2(fanotify_mark,\n int, a)", b"int compat_sys_fanotify_mark()  \n        "),
        (b"COMPAT_SYSCALL_DEFINE2(x, int, a,\n\t int, b)", b"int compat_sys_x()" + b" " * 15 + b"\n" + b" " * 9),
        (b"\t\treturn 1;\n#ifdef X\n\telse if (a)\n\t\treturn 2;\n#endif\n\telse",
         b"\t\treturn 1;\n        \n\telse if (a)\n\t\treturn 2;\n      \n\telse"),
        (b"x = container_of(p, struct foo, list);", b"x = container_of(p, 0         , list);"),
        (b"\treturn min_t(unsigned long, a, 7);", b"\treturn min_t(0            , a, 7);"),
        (b"BPF_CALL_1(bpf_f, u64, a)", b"int bpf_f()              "),
        # a directive indented by blanks ends at its line; the code after it is rewritten
        (b"  #define X 1\nint __init f;", b"  #define X 1\nint        f;"),
        (b"s = \"#\"; int notrace f;", b"s = \"#\"; int         f;"),  # a "#" inside a line is no directive
    ],
)
def test_neutralise_rewrites(before, after):
    assert neutralise.neutralise_kernel_macros(before) == after


@pytest.mark.parametrize(
    "src",
    [
        b"int dpm_for_each_dev(void *d)\n{",  # a function named for_each: a definition
        b"ret = bpf_for_each_map_elem(a, b);",  # an expression
        b"{\n\tbpf_for_each_array(x, y);\n",  # a call statement
        b"#define __init __section(\".init.text\")",  # a directive is left alone
        b"#define for_each_x(p) for (p = 0; p < 4; p++)",
        b"u32 __user_thing;",  # only whole words
        b"int x__init, my_notrace, xSTATIC;",  # ... that start where a word starts
        b"s = \"#\";\n#define Y __init",  # a "#" inside a line does not hide the next directive
        b"int foo(struct bar *, int);",  # a prototype, not a macro call
        b"y = (struct foo *)p + sizeof(struct x);",  # a cast, a built-in
        b"#ifdef X\n\telse if (a)\n#else\n\telse\n#endif\n",  # alternatives: left alone
    ],
)
def test_neutralise_leaves_alone(src):
    assert neutralise.neutralise_kernel_macros(src) == src


def test_export_macro_names_are_whole_words():
    text = b"MY_EXPORT_SYMBOL(a);\nEXPORT_SYMBOL_GPL(b);\nEXPORT_SYMBOL_GPLX(c);\nEXPORT_SYMBOL(d);"
    assert [(m.group(), m.start()) for m in cexports.export_matches(text)] == [
        (b"EXPORT_SYMBOL_GPL", 21), (b"EXPORT_SYMBOL", 66)]


# ------------------------------------------------------------------------------------------------
# functions and calls


@pytest.fixture(scope="module")
def functions_c():
    return cparse.parse_file("functions.c", TREE, include_dirs=["include"])


def test_functions(functions_c):
    f = "functions.c"
    assert sorted(functions_c.functions, key=lambda x: x.line) == [
        FunctionDef("early_setup", f, 6, 10, True, False),
        FunctionDef("leave", f, 12, 29, True, False),
        FunctionDef("say", f, 31, 34, False, False),
        FunctionDef("fast", f, 36, 39, True, True),
        FunctionDef("locked", f, 41, 47, False, False, indirect=True),  # ops->start(l)...
        FunctionDef("weak_fn", f, 49, 52, False, False),
        FunctionDef("sys_read", f, 54, 57, False, False),
        FunctionDef("compat_sys_getfoo", f, 59, 63, False, False),
        FunctionDef("sys_getpid", f, 65, 68, False, False),
        FunctionDef("bpf_map_peek", f, 70, 73, False, False, indirect=True),
        FunctionDef("get_handler", f, 75, 78, True, False),
        FunctionDef("dpm_for_each_dev", f, 80, 83, False, False),
    ]
    assert functions_c.stats == ParseStats(1, 12, 0, 0)
    assert functions_c.error is None


def test_calls(functions_c):
    f = "functions.c"
    # (args and guard, gcc's folding, are tests/test_constant_folding.py's)
    assert sorted((c._replace(args=None) for c in functions_c.calls), key=lambda c: (c.line, c.callee)) == [
        Call("early_setup", "helper", f, 8, False),
        Call("leave", "head_list", f, 17, False),  # inside the loop macro's arguments
        Call("leave", "visit", f, 18, False),
        Call("leave", "per_cpu_work", f, 21, False),  # brace-less loop body
        Call("leave", "visit", f, 24, False),
        Call("leave", "visit", f, 28, False),
        Call("say", "vprintk", f, 33, False),
        Call("fast", "readl", f, 38, False),
        Call("locked", "start", f, 43, True),
        Call("locked", "stop", f, 44, True),
        Call("locked", "callback", f, 45, False),  # (*callback)(l)
        Call("locked", "cb", f, 46, True),
        Call("weak_fn", "fast", f, 51, False),
        Call("sys_read", "ksys_read", f, 56, False),
        Call("compat_sys_getfoo", "do_getfoo", f, 62, False),
        Call("sys_getpid", "task_tgid_vnr", f, 67, False),
        Call("bpf_map_peek", "map_peek_elem", f, 72, True),
        Call("get_handler", "handlers", f, 77, False),
        Call("dpm_for_each_dev", "for_each_thing", f, 82, False),
    ]


def test_includes_resolved(functions_c):
    # "local.h" next to the file, <linux/fix.h> in include/, <linux/missing.h> nowhere.
    assert functions_c.includes == ["include/linux/fix.h", "local.h"]


def test_headers_parsed_once_with_their_static_inlines():
    results = list(cparse.for_each_record(TREE, files=["functions.c", "drivers/foo/probe.c"], include_dirs=["include"]))
    files = [r.file for r in results]
    assert files == ["functions.c", "drivers/foo/probe.c", "include/linux/fix.h", "local.h",
                     "include/linux/fix_inner.h"]
    by_file = {r.file: r for r in results}
    assert by_file["local.h"].functions == [FunctionDef("local_helper", "local.h", 3, 6, True, True)]
    assert by_file["local.h"].calls == [Call("local_helper", "inner_call", "local.h", 5, False, "p0")]
    assert by_file["include/linux/fix.h"].calls == [Call("fix_lock", "fix_inner", "include/linux/fix.h", 6, False, "")]
    # probe.c includes "../../local.h": resolved to the same file, parsed once
    assert by_file["drivers/foo/probe.c"].includes == ["local.h"]


def test_arch_files_use_their_own_arch_headers(tmp_path):
    (tmp_path / "arch/arm/include/asm").mkdir(parents=True)
    (tmp_path / "arch/x86/include/asm").mkdir(parents=True)
    (tmp_path / "arch/arm/include/asm/io.h").write_text("")
    (tmp_path / "arch/x86/include/asm/io.h").write_text("")
    (tmp_path / "arch/arm/kernel").mkdir(parents=True)
    (tmp_path / "arch/arm/kernel/a.c").write_text("#include <asm/io.h>\n")
    (tmp_path / "b.c").write_text("#include <asm/io.h>\n")
    assert cparse.parse_file("arch/arm/kernel/a.c", tmp_path).includes == ["arch/arm/include/asm/io.h"]
    assert cparse.parse_file("b.c", tmp_path).includes == ["arch/x86/include/asm/io.h"]


# ------------------------------------------------------------------------------------------------
# exports


def test_exports_every_shape():
    r = cparse.parse_file("exports.c", TREE)
    f = "exports.c"
    assert r.exports == [
        ExportSite("plain", f, 9, False, "", "plain"),
        ExportSite("gpl_fn", f, 15, True, "", "gpl_fn"),
        ExportSite("ns_bare", f, 18, False, "MY_NS", None),  # 6.1: bare identifier
        ExportSite("ns_str", f, 24, True, "STR_NS", "ns_str"),  # 6.13+: string literal
        ExportSite("nosemi", f, 30, False, "", "nosemi"),
        ExportSite("future_fn", f, 37, False, "", "future_fn"),
        ExportSite("unused_sym", f, 38, True, "", None),
        ExportSite("pcpu_var", f, 40, True, "", None),
        ExportSite("indented", f, 41, False, "", None),
        ExportSite("split_lines", f, 48, False, "", None),
        ExportSite("decl_shape", f, 51, False, "", None),
        ExportSite("in_error", f, 54, True, "", None),
        ExportSite("pair_a", f, 56, False, "", None),
        ExportSite("pair_b", f, 56, False, "", None),
    ]
    # the function after the semicolon-less export is still found
    assert "after_nosemi" in {fn.name for fn in r.functions}


def test_export_fixture_covers_every_tree_shape():
    """The fixture really holds each shape tree-sitter produces for an export macro."""
    import tree_sitter

    src = neutralise.neutralise_kernel_macros((TREE / "exports.c").read_bytes())
    parser, _ = cparse._tree_sitter()
    tree = parser.parse(src)
    shapes = {}
    for m in cexports.export_matches(src):
        node = tree.root_node.descendant_for_byte_range(m.start(), m.end())
        chain = []
        while node is not None:
            chain.append(node.type)
            node = node.parent
        line = src.count(b"\n", 0, m.start()) + 1
        shapes[line] = chain
    assert shapes[9][1:3] == ["call_expression", "expression_statement"]
    assert shapes[30][1:3] == ["macro_type_specifier", "function_definition"]
    assert shapes[51][1:3] == ["macro_type_specifier", "declaration"]
    assert "ERROR" in shapes[54]
    assert "ERROR" in shapes[56]
    assert "preproc_arg" in shapes[44] and "preproc_arg" in shapes[46]  # templates, skipped
    assert shapes[42][0] == "comment"
    assert isinstance(tree, tree_sitter.Tree)


# ------------------------------------------------------------------------------------------------
# lookups


def test_direct_lookups_and_probes():
    r = cparse.parse_file("drivers/foo/probe.c", TREE)
    f = "drivers/foo/probe.c"
    assert sorted(r.lookups, key=lambda x: x.line) == [
        LookUp("do_sys_open", "kprobe", f, 8, None),
        LookUp("vfs_read", "kretprobe", f, 13, None),  # .kp.symbol_name in a kretprobe
        LookUp("vfs_write", "kretprobe", f, 18, None),  # .kp = { .symbol_name = }
        LookUp("kernel_clone", "kprobe", f, 23, None),  # .symbol_name = a string variable
        LookUp("kallsyms_lookup_name", "kprobe", f, 31, "setup"),  # probe.symbol_name = "..."
        LookUp("schedule", "kretprobe", f, 32, "setup"),  # krp->kp.symbol_name = "..."
        LookUp("some_export", "symbol_get", f, 33, "setup"),  # a bare identifier
        LookUp("other_export", "symbol_request", f, 34, "setup"),
    ]
    resolved = cparse.resolve_file_lookups([r])
    assert LookUp("direct_sym", "kallsyms_lookup_name", f, 35, "setup") in resolved
    assert LookUp("dunder_sym", "__symbol_get", f, 36, "setup") in resolved
    # a symbol name in a printk is no lookup
    assert not [x for x in resolved if x.line == 37]


def test_wrapper_chain_to_a_fixpoint():
    results = list(cparse.for_each_record(LTTNG, include_dirs=["include"]))
    assert {r.file for r in results} == {"src/kallsyms.c", "src/users.c", "include/wrapper/kallsyms.h"}
    found = sorted(set(cparse.resolve_file_lookups(results)), key=lambda x: (x.file, x.line, x.symbol))
    assert found == [
        LookUp("fixed_sym", "kallsyms_lookup_name", "src/kallsyms.c", 15, "not_a_wrapper"),
        LookUp("irq_to_desc", "wrapper:kallsyms_lookup_funcptr", "src/users.c", 17, "init_users"),
        LookUp("block_class", "wrapper:kallsyms_lookup_dataptr", "src/users.c", 18, "init_users"),
        LookUp("stack_trace_save", "wrapper:kallsyms_lookup_funcptr", "src/users.c", 19, "init_users"),
        LookUp("save_stack_trace", "wrapper:kallsyms_lookup_funcptr", "src/users.c", 20, "init_users"),
        LookUp("global_wb_domain", "wrapper:lookup_twice", "src/users.c", 21, "init_users"),
    ]
    flows = [f for r in results for f in r.arg_flows]
    wrappers = find_wrappers(flows)
    assert wrappers[("wrapper_kallsyms_lookup_name", 0)] == "wrapper:wrapper_kallsyms_lookup_name"
    assert wrappers[("lookup_twice", 1)] == "wrapper:lookup_twice"
    assert ("not_a_wrapper", 0) not in wrappers
    assert ("lookup_twice", 0) not in wrappers


def test_resolve_lookups_records():
    flows = [ArgFlow("b", 0, "a", 0, "x.c", 1), ArgFlow("a", 0, "kallsyms_lookup_name", 0, "x.c", 2),
             ArgFlow("c", 1, "b", 0, "x.c", 3), ArgFlow("d", 0, "b", 1, "x.c", 4)]
    args = [StringArg("m", "c", 1, "sym1", "y.c", 5), StringArg("m", "c", 0, "nosym", "y.c", 6),
            StringArg("m", "d", 0, "nosym2", "y.c", 7), StringArg(None, "kallsyms_lookup_name", 0, "sym2", "y.c", 8)]
    assert list(resolve_lookups(args, flows)) == [
        LookUp("sym1", "wrapper:c", "y.c", 5, "m"),
        LookUp("sym2", "kallsyms_lookup_name", "y.c", 8, None),
    ]


# ------------------------------------------------------------------------------------------------
# bad files


def test_bad_files_never_crash(tmp_path):
    (tmp_path / "latin1.c").write_bytes(b"/* caf\xe9 */\nint f(void) { return g(); }\n")
    os.symlink(tmp_path / "nowhere.c", tmp_path / "dangling.c")
    r = cparse.parse_file("latin1.c", tmp_path)
    assert r.functions == [FunctionDef("f", "latin1.c", 2, 2, False, False)]
    assert r.error == "invalid UTF-8 at byte 6 (read with replacement characters)"
    r = cparse.parse_file("dangling.c", tmp_path)
    assert r.functions == [] and r.error.startswith("unreadable: ")
    results = {r.file: r.error for r in cparse.for_each_record(tmp_path)}
    assert set(results) == {"dangling.c", "latin1.c"}


# ------------------------------------------------------------------------------------------------
# index_tree: shards, manifest, incremental


def _rows(shard_dir, table):
    return sorted(tuple(r.values()) for r in cindex.read_table(shard_dir, table).to_pylist())


def test_index_tree_matches_in_process_api(tmp_path):
    shards = tmp_path / "idx"
    res = cindex.index_tree(LTTNG, include_dirs=["include"], workers=2, shard_dir=shards, progress=False,
                             batch_files=1)
    results = list(cparse.for_each_record(LTTNG, include_dirs=["include"]))
    assert res.parsed == 3 and res.reused == 0 and res.errors == []
    assert res.stats == sum((r.stats for r in results), ParseStats(0, 0, 0, 0))
    assert _rows(shards, "functions") == sorted(tuple(f) for r in results for f in r.functions)
    assert _rows(shards, "calls") == sorted(tuple(c) for r in results for c in r.calls)
    assert _rows(shards, "lookups") == sorted(tuple(x) for x in cparse.resolve_file_lookups(results))
    assert res.rows["lookups"] == 6
    assert res.rows["functions"] == sum(len(r.functions) for r in results)


def test_index_tree_incremental(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(TREE, tree)
    shards = tmp_path / "idx"
    first = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False, batch_files=2)
    assert first.parsed == 6 and first.reused == 0
    before = _rows(shards, "functions")

    again = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False, batch_files=2)
    assert again.parsed == 0 and again.reused == 6 and _rows(shards, "functions") == before

    # touched but unchanged: hashed, not parsed
    os.utime(tree / "exports.c", ns=(time.time_ns(), time.time_ns()))
    touched = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    assert touched.parsed == 0

    # one file changed: only it is parsed, its old rows are gone, the new ones are there
    text = (tree / "functions.c").read_text().replace("early_setup", "early_setup2")
    (tree / "functions.c").write_text(text)
    changed = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    assert changed.parsed == 1 and changed.reused == 5
    after = _rows(shards, "functions")
    assert [r for r in before if r[0] == "early_setup"] and not [r for r in after if r[0] == "early_setup"]
    assert [r for r in after if r[0] == "early_setup2"]
    assert len(after) == len(before)
    assert changed.rows["functions"] == len(after)

    # a header no longer included disappears from the index
    text = text.replace('#include "local.h"\n', "")
    (tree / "functions.c").write_text(text)
    (tree / "drivers/foo/probe.c").unlink()
    dropped = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    files = {r[1] for r in _rows(shards, "functions")}
    assert "local.h" not in files and "drivers/foo/probe.c" not in files
    assert dropped.parsed == 1
    assert dropped.rows["functions"] == len(_rows(shards, "functions"))


def test_index_tree_counts_bad_files(tmp_path):
    (tmp_path / "ok.c").write_text("int f(void) { return 0; }\n")
    os.symlink(tmp_path / "nowhere.c", tmp_path / "dangling.c")
    res = cindex.index_tree(tmp_path, shard_dir=tmp_path / "idx", progress=False)
    assert [(e.path, e.reason.split(":")[0]) for e in res.errors] == [("dangling.c", "unreadable")]
    assert res.rows["functions"] == 1


def test_unpack_source_tarball(tmp_path):
    import tarfile

    src = tmp_path / "src" / "linux-source-9.9"
    src.mkdir(parents=True)
    (src / "Makefile").write_text("VERSION = 9\n")
    tarball = tmp_path / "linux-source-9.9.tar.xz"
    with tarfile.open(tarball, "w:xz") as tf:
        tf.add(src, arcname="linux-source-9.9")
    out = trees.unpack_source_tarball(tarball, tmp_path / "cache")
    assert out == tmp_path / "cache" / "linux-source-9.9"
    assert (out / "Makefile").read_text() == "VERSION = 9\n"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["linux-source-9.9"]  # no temp left
    (out / "Makefile").write_text("reused")
    assert trees.unpack_source_tarball(tarball, tmp_path / "cache") == out
    assert (out / "Makefile").read_text() == "reused"


def test_incremental_lookups_resolved_again_only_when_their_input_changes(tmp_path):
    tree = tmp_path / "lttng"
    shutil.copytree(LTTNG, tree)
    shards = tmp_path / "idx"
    cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    lookups = shards / "lookups.parquet"
    before = {r[0] for r in _rows(shards, "lookups")}
    stamp = lookups.stat().st_mtime_ns

    # an edit that leaves every lookup, string argument and argument flow as it was
    users = tree / "src" / "users.c"
    users.write_text(users.read_text() + "\n/* a comment */\n")
    r = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    assert r.parsed == 1 and lookups.stat().st_mtime_ns == stamp and r.rows["lookups"] == len(before)

    # an edit to a looked-up name: resolved again, the new name is there and the old one gone
    old = next(iter(sorted(before)))
    text = users.read_text()
    assert f'"{old}"' in text
    users.write_text(text.replace(f'"{old}"', '"renamed_symbol"'))
    r = cindex.index_tree(tree, include_dirs=["include"], shard_dir=shards, progress=False)
    after = {row[0] for row in _rows(shards, "lookups")}
    assert "renamed_symbol" in after and old not in after
    assert r.rows["lookups"] == len(_rows(shards, "lookups"))


def test_records_come_in_document_order(tmp_path):
    # tree-sitter's captures are not in document order; the loader puts them back in it, so that
    # the includes are followed as written and a name given two strings holds the later one.
    (tmp_path / "include").mkdir()
    for name in "abcd":
        (tmp_path / "include" / f"{name}.h").write_text("")
    (tmp_path / "x.c").write_text(
        "".join(f"#include <{n}.h>\n" for n in "abcd")
        + 'static const char *name = "first_sym";\n'
        + 'static const char *name = "second_sym";\n'
        + "int f(void) { return use(name); }\n")
    r = cparse.parse_file("x.c", tmp_path, include_dirs=["include"])
    assert r.includes == ["include/a.h", "include/b.h", "include/c.h", "include/d.h"]
    assert r.string_args == [StringArg("f", "use", 0, "second_sym", "x.c", 7)]


# ------------------------------------------------------------------------------------------------
# bounds: what a hostile file cannot do (tests/test_source_hostile.py loads whole crafted trees)


def test_function_spans_give_the_innermost_function():
    # error recovery can leave a pseudo-function inside a real one (drivers/mtd/nftlmount.c):
    # a call after it still belongs to the outer function
    funcs = ctree._Functions()
    for span in ((0, 100, "outer"), (10, 20, "inner"), (30, 40, "second"), (200, 300, "later")):
        funcs.add(*span)
    assert [funcs.at(p) for p in (0, 15, 25, 35, 50, 99, 100, 150, 250)] == [
        "outer", "inner", "outer", "second", "outer", "outer", None, None, "later"]


def test_neutralising_gives_up_on_text_that_would_cost_too_much():
    src = b"int f(void) { return 0; }\n/* " + b"__printf(" * 200_000 + b" */\n"  # each scans to the limit
    with pytest.raises(ctext.TextPassIncomplete):
        neutralise.neutralise_kernel_macros(src)
    r = cparse.parse_source(src, "x.c")  # parsed as it is, and said so
    assert r.error == (f"kernel macros not neutralised: rewriting them would read the file more than "
                       f"{neutralise.WORK_PER_BYTE} times over")
    assert [f.name for f in r.functions] == ["f"]


def test_directives_after_a_line_of_hashes():
    src = b"x" + b"#" * 100_000 + b"\n#define A 1\nint y;\n"
    assert list(ctext.directives(src)) == [(100_002, 100_013)]


def test_includes_that_leave_the_tree_are_refused(tmp_path):
    (tmp_path / "include" / "linux").mkdir(parents=True)
    (tmp_path / "include" / "linux" / "ok.h").write_text("")
    (tmp_path / "drivers" / "gpu" / "x").mkdir(parents=True)
    written = ['"/etc/passwd"', '"../../../../etc/passwd"', "<../../etc/shadow>", '"a\0b.h"', "<linux/ok.h>",
               '"../../platform/x86/ips.h"',  # (i915's: found through the -I its Makefile adds, not here)
               "<linux/missing.h>", '"../../../include/linux/ok.h"']
    found, refused = includes.resolve_includes(tmp_path, "drivers/gpu/x/y.c", written, includes.kernel_include_dirs())
    assert found == ["include/linux/ok.h"]
    assert refused == ['#include "/etc/passwd" not followed: an absolute path',
                       '#include "../../../../etc/passwd" not followed: it leads outside the tree',
                       "#include <../../etc/shadow> not followed: it leads outside the tree",
                       '#include "a\0b.h" not followed: not a file name']


def test_an_asm_header_the_architecture_lacks_is_the_generic_one(tmp_path):
    # 6.1's x86 has no asm/rwonce.h: the build generates one that includes asm-generic/rwonce.h
    # (mandatory-y in include/asm-generic/Kbuild, scripts/Makefile.asm-generic).
    for rel in ("include/asm-generic/rwonce.h", "include/asm-generic/bug.h", "arch/x86/include/asm/bug.h",
                "include/uapi/asm-generic/ioctls.h"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    written = ["<asm/rwonce.h>", "<asm/bug.h>", "<asm/ioctls.h>", "<asm/missing.h>"]
    found, refused = includes.resolve_includes(tmp_path, "include/linux/compiler.h", written,
                                               includes.kernel_include_dirs())
    assert found == ["include/asm-generic/rwonce.h", "arch/x86/include/asm/bug.h", "include/uapi/asm-generic/ioctls.h"]
    assert refused == []


def test_read_source_reads_only_regular_files_inside_the_tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok.c").write_text("int x;\n")
    (tmp_path / "outside.c").write_text("int outside;\n")
    os.symlink(tmp_path / "outside.c", tree / "out.c")
    os.mkfifo(tree / "fifo.c")
    (tree / "dir.c").mkdir()
    root = cfiles.real_root(tree)
    assert cfiles.read_source(root, "ok.c")[0] == b"int x;\n"
    reasons = {}
    for rel in ("out.c", "fifo.c", "dir.c", "missing.c"):
        with pytest.raises(LoaderError) as e:
            cfiles.read_source(root, rel)
        reasons[rel] = e.value.reason
    with pytest.raises(LoaderError) as e:
        cfiles.read_source(root, "ok.c", limit=3)
    assert reasons == {"out.c": f"outside the tree: it resolves to {tmp_path / 'outside.c'}",
                       "fifo.c": "not a regular file: a FIFO", "dir.c": "not a regular file: a directory",
                       "missing.c": "unreadable: No such file or directory"}
    assert e.value.reason == "too large: 7 bytes (the limit is 3)"


def test_a_worker_that_dies_does_not_hang_the_index(tmp_path, monkeypatch):
    # a crash in tree-sitter or the OOM killer takes a worker: the others' files are indexed, the
    # file that kills the process it is given alone is recorded as not parsed
    for name in ("a", "b", "crash", "d", "e"):
        (tmp_path / f"{name}.c").write_text(f"int {name}_fn(void) {{ return 0; }}\n")
    real = cindex.parse_read_file

    def crashing(src, rel, *args):
        if rel == "crash.c":
            os.kill(os.getpid(), 9)
        return real(src, rel, *args)

    monkeypatch.setattr(cindex, "parse_read_file", crashing)  # the forked workers see it too
    res = cindex.index_tree(tmp_path, shard_dir=tmp_path / "idx", workers=2, batch_files=2, progress=False)
    assert res.errors == [("crash.c", "not parsed: the process parsing it died (a crash in the parser, "
                                      "or killed for its memory)")]
    assert sorted(r[0] for r in _rows(tmp_path / "idx", "functions")) == ["a_fn", "b_fn", "d_fn", "e_fn"]
    assert res.stats.files_skipped == 1
    monkeypatch.undo()
    again = cindex.index_tree(tmp_path, shard_dir=tmp_path / "idx", workers=2, batch_files=2, progress=False)
    assert again.parsed == 1 and again.errors == []  # tried again on the next run
    assert "crash_fn" in {r[0] for r in _rows(tmp_path / "idx", "functions")}


def test_a_long_file_is_queried_a_range_at_a_time_and_read_the_same(monkeypatch):
    # the query's cost grows faster than its range (2 MB of fuzzed C took 17 s in one piece, past
    # the deadline, 0.8 s in 64 kB ones): a long file is queried in ranges, a node met in two of
    # them kept once, and what comes out is what one query over the whole file gives
    part = (b'#include <linux/a.h>\nstatic const char *s = "sym_a";\nTEST_F(x, y) {\n\tf(s, "lit");\n}\n'
            b'static struct kprobe kp = { .symbol_name = "do_fork", };\n'
            b"int big(void) {\n" + b"\tg(1, h(2), \"str\");\n" * 3000 + b"}\n")
    src = part * 8  # 0.5 MB: four ranges, functions and a macro-defined one across their edges
    assert len(src) > 3 * cparse._QUERY_CHUNK
    chunked = cparse.parse_source(src, "long.c")
    monkeypatch.setattr(cparse, "_QUERY_CHUNK", 1 << 30)
    whole = cparse.parse_source(src, "long.c")
    assert chunked == whole
    assert len(whole.calls) == 8 * (3000 * 2 + 2) and len(whole.functions) == 16 and len(whole.lookups) == 8
