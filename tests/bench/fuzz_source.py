"""Fuzzing the source loaders: C files (the text passes, tree-sitter, the records, include
resolution) and Kbuild (Makefiles through the make evaluator, ``.config`` files).

Run as a script (not collected by pytest; ``tests/test_source_fuzz.py`` runs a sample of each
target with a fixed seed)::

    python tests/bench/fuzz_source.py [--inputs 100000] [--seed 1] [--targets c,kbuild] [--jobs 2] [--save DIR]

Inputs are mutations of a corpus (the fixture files, and the Debian ``linux-source`` tree when it
is in the cache: ``--kernel``) and token soups generated from a dictionary of what the loaders look
for (annotations, loop macros, ``EXPORT_SYMBOL``, directives, make functions...), grown now and
then to great sizes and depths. Every input must come back without an exception and keep the
loaders' invariants (a text pass keeps the length and the newlines; every record's line is in
the file; every resolved include is a file inside the tree). The report counts inputs, errors by
type (with the first input of each, saved under ``--save``), the slowest input and the peak RSS.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Iterator, NamedTuple

from ksymgraph.loaders import cfiles, cparse, ctext, includes, kbuild, neutralise

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: What the C side looks for, and what breaks scanners: the mutators insert these.
C_TOKENS = [
    b"(", b")", b"{", b"}", b"[", b"]", b";", b",", b"\n", b"\\\n", b"\"", b"'", b"/*", b"*/", b"//", b"#",
    b"#include <linux/fix.h>\n", b'#include "local.h"\n', b'#include "/etc/passwd"\n', b"#include <../../../x.h>\n",
    b"#include \"\0\"\n", b"#define F(x) g(x)\n", b"#ifdef X\n", b"#if 0\n", b"#else\n", b"#endif\n", b"else if (a)",
    b"__init ", b"__user ", b"__printf(1, 2) ", b"__attribute__((", b"__acquires(l) ", b"__always_inline ", b"STATIC ",
    b"list_for_each_entry(p, h, m) {", b"for_each_cpu(c) ", b"SYSCALL_DEFINE1(x, int, a)", b"BPF_CALL_1(f, u64, a)",
    b"COMPAT_SYSCALL_DEFINE2(y,", b"container_of(p, struct foo, l)", b"min_t(unsigned long, a, b)",
    b"EXPORT_SYMBOL(", b"EXPORT_SYMBOL_GPL(f);\n", b'EXPORT_SYMBOL_NS(f, "NS");\n', b"EXPORT_SYMBOL_GPL_FUTURE(",
    b"static ", b"inline ", b"int ", b"char *", b"struct kretprobe ", b".symbol_name = \"sym\"", b".kp = {",
    b"kallsyms_lookup_name(\"x\")", b"symbol_get(x)", b"const char *s = \"sym\";", b"f(", b"a->b(", b"(*p)(",
    b"TEST_F(a, b) {", b"return ", b"\0", b"\xff\xfe", b"\xe9", b"\t", b" ", b"0x10", b"\"\\\"\"",
]

#: What the make evaluator reads.
MAKE_TOKENS = [
    "obj-y", "obj-m", "lib-y", "subdir-y", "foo-y", "foo-objs", " += ", " := ", " = ", " ?= ", " ::= ", "$(", ")",
    "${", "}", "$", "$$", "$(CONFIG_X)", "$(obj)", "$(src)", "$(srctree)", ",", " ", "\n", "\t", "\\\n", "#", ":",
    "ifeq (", "ifneq (", "ifdef ", "ifndef ", "else", "else ifeq (a,b)", "endif", "define X\n", "endef\n",
    "include ", "-include ", "$(foreach v,", "$(patsubst %.c,%.o,", "$(filter ", "$(filter-out ", "$(wildcard ",
    "$(subst ", "$(if ", "$(or ", "$(and ", "$(addprefix ", "$(addsuffix ", "$(sort ", "$(strip ", "$(notdir ",
    "$(dir ", "$(basename ", "$(firstword ", "$(shell ", "$(call ", "$(x:.o=.c)", "%", "foo.o", "bar.o", "dir/",
    "../", "/", "/etc/passwd", "*", "y", "m", "n", "'", '"', "\0", "a.o", "sub/",
]

CONFIG_TOKENS = ["CONFIG_X=y\n", "CONFIG_Y=m\n", "CONFIG_Z=\"a \\\" b\"\n", "# CONFIG_W is not set\n", "=", "\n",
                 "CONFIG_", "\0", "\xff", "#", "y", "m", '"']


class Report(NamedTuple):
    """What one run over a target found."""

    target: str
    inputs: int
    errors: dict[str, int]
    """Inputs that raised or broke an invariant, by error type."""
    examples: dict[str, str]
    """For each error type, the first message and where its input was saved."""
    worst_seconds: float
    worst_input: str
    """Size and hash of the slowest input."""
    peak_rss_mb: int
    """The largest peak resident set of a process of the run."""
    peak_rss_input: str
    """Size and hash of the input that raised it last."""


# --------------------------------------------------------------------------------------------
# Corpus and mutations


def c_corpus(kernel: Path | None, rng: random.Random, limit: int = 400) -> list[bytes]:
    files = sorted(FIXTURES.glob("c/**/*.[ch]"))
    if kernel is not None:
        listing = cfiles.tree_files(kernel)
        chosen = rng.sample(listing.c + listing.headers, min(limit, len(listing.c) + len(listing.headers)))
        files += [kernel / f for f in chosen]
    out = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if len(data) <= 256 << 10:
            out.append(data)
    return out


def kbuild_corpus(kernel: Path | None, rng: random.Random, limit: int = 400) -> list[bytes]:
    files = sorted(p for p in (FIXTURES / "kbuild").rglob("*") if p.is_file())
    if kernel is not None:
        names = sorted(str(p) for p in kernel.rglob("Makefile"))[:5000] + sorted(str(p) for p in kernel.rglob("Kbuild"))
        files += [Path(p) for p in rng.sample(names, min(limit, len(names)))]
    return [f.read_bytes() for f in files if f.stat().st_size <= 256 << 10]


def mutate(data: bytes, rng: random.Random, tokens: list[bytes], corpus: list[bytes]) -> bytes:
    """One to eight mutations of ``data``: token insertions, byte flips, deletions, splices, small
    repeats and nestings, truncations; one input in fifty is also grown large or deep (a slice
    repeated up to 100,000 times, up to 2 MiB; or nested up to 50,000 levels)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, len(buf))
        op = rng.random()
        if op < 0.4:
            buf[pos:pos] = rng.choice(tokens)
        elif op < 0.5 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op < 0.6:
            del buf[pos : pos + rng.randint(1, 256)]
        elif op < 0.7:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            buf[pos:pos] = other[start : start + rng.randint(1, 4096)]
        elif op < 0.85:
            buf[pos:pos] = (bytes(buf[pos : pos + rng.randint(1, 64)]) or rng.choice(tokens)) * rng.randint(2, 10)
        elif op < 0.95:
            buf[pos:pos] = _nest(rng, rng.randint(2, 20))
        else:
            del buf[pos:]
    if rng.random() < 0.02:
        pos = rng.randint(0, len(buf))
        if rng.random() < 0.5:
            chunk = bytes(buf[pos : pos + rng.randint(1, 64)]) or rng.choice(tokens)
            buf[pos:pos] = chunk * min(rng.choice((1000, 10000, 100000)), (2 << 20) // len(chunk))
        else:
            buf[pos:pos] = _nest(rng, rng.choice((1000, 10000, 50000)))
    return bytes(buf)


def _nest(rng: random.Random, depth: int) -> bytes:
    opener = rng.choice((b"f(", b"(", b"{", b"[", b"__attribute__((", b"$(x ", b"a + ", b"if (a) ", b"#ifdef X\n"))
    closer = {b"{": b"}", b"[": b"]", b"#ifdef X\n": b"#endif\n", b"a + ": b"", b"if (a) ": b""}.get(opener, b")")
    return opener * depth + b"x" + closer * depth


def soup(rng: random.Random, tokens: list[bytes]) -> bytes:
    """A token soup: a random sequence of the dictionary's tokens and words."""
    words = [b"a", b"b", b"foo", b"bar_baz", b"x1", b"kfree", b"=", b"+", b"*", b"-", b"&", b"->", b".", b":"]
    return b" ".join(rng.choice(tokens if rng.random() < 0.6 else words) for _ in range(rng.randint(1, 3000)))


def inputs(rng: random.Random, corpus: list[bytes], tokens: list[bytes], n: int) -> Iterator[bytes]:
    for _ in range(n):
        r = rng.random()
        if r < 0.15 or not corpus:
            yield soup(rng, tokens)
        elif r < 0.2:
            yield rng.choice(corpus)
        else:
            yield mutate(rng.choice(corpus), rng, tokens, corpus)


# --------------------------------------------------------------------------------------------
# Checks: an exception or a broken invariant is a failure


#: Every byte but the newline made a space: two texts with the same newlines translate alike.
_ONLY_NEWLINES = bytes(b if b == 10 else 32 for b in range(256))


class InvariantError(AssertionError):
    """A loader returned something it must never return."""


class DeadlineOvershoot(InvariantError):
    """A file's parse ran past its deadline by more than :data:`OVERSHOOT` seconds: a step that
    does not check the clock took that long by itself."""


#: How far past its deadline a parse may end (the one step running when it passes finishes).
OVERSHOOT = 10.0


def check_c(data: bytes, name: str, tree: Path, seconds: float) -> None:
    """Neutralise (same length, same newlines), parse, resolve includes against ``tree``."""
    try:
        text = neutralise.neutralise_kernel_macros(data)
    except ctext.TextPassIncomplete:
        pass
    else:
        if len(text) != len(data) or text.translate(_ONLY_NEWLINES) != data.translate(_ONLY_NEWLINES):
            raise InvariantError("neutralise_kernel_macros changed the length or moved a newline")
    started = time.monotonic()
    result = cparse.parse_source(data, name, seconds)
    took = time.monotonic() - started
    if took > seconds + OVERSHOOT:
        raise DeadlineOvershoot(f"parse_source took {took:.1f} s, past its deadline of {seconds:g} s")
    lines = data.count(b"\n") + 1
    for record in (*result.functions, *result.calls, *result.exports, *result.lookups, *result.string_args,
                   *result.arg_flows):
        if record.file != name or not 1 <= record.line <= lines:
            raise InvariantError(f"{type(record).__name__} at line {record.line} of a {lines}-line file")
    for f in result.functions:
        if f.end_line < f.line:
            raise InvariantError(f"function {f.name} ends (line {f.end_line}) before it starts ({f.line})")
    found, refused = includes.resolve_includes(tree, name, result.includes, includes.kernel_include_dirs())
    for rel in found:
        if not cfiles.inside_tree(rel) or not (tree / rel).is_file():
            raise InvariantError(f"include resolved to {rel!r}, not a file of the tree")


def check_kbuild(data: bytes, tree: Path, config: bytes) -> None:
    """The mutated text as the top Kbuild of ``tree`` and as its ``a/Makefile``; a mutated
    ``.config``; the whole walk."""
    (tree / "Kbuild").write_bytes(data)
    (tree / "a" / "Makefile").write_bytes(data)
    (tree / "config").write_bytes(config)
    values = kbuild.read_config(tree / "config")
    skipped: list = []
    words = kbuild.evaluate_makefile(tree, "a", values, skipped)
    for name in list(words):
        words[name]
    for rec in kbuild.evaluate_kbuild(tree, values, skipped=skipped):
        if not cfiles.inside_tree(rec.file) or not (tree / rec.file).is_file():
            raise InvariantError(f"built file {rec.file!r} is not a file of the tree")


# --------------------------------------------------------------------------------------------
# Runs


def _tree(base: Path) -> Path:
    """A small tree for include resolution and Kbuild walks."""
    for rel in ("include/linux/fix.h", "local.h", "a/foo.c", "a/bar.c", "a/sub/x.c", "foo.c"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text("int f(void) { return 0; }\n")
    return base


def run_chunk(job) -> tuple[str, int, collections.Counter, dict, float, str, int]:
    target, seed, n, kernel, save, seconds = job
    rng = random.Random(seed)
    errors: collections.Counter = collections.Counter()
    examples: dict[str, str] = {}
    worst, worst_input = 0.0, ""
    rss, rss_input = 0, ""
    with tempfile.TemporaryDirectory(prefix="ksg-fuzz-") as tmp:
        tree = _tree(Path(tmp))
        if target == "c":
            corpus = c_corpus(kernel, rng)
            stream = inputs(rng, corpus, C_TOKENS, n)
        else:
            corpus = kbuild_corpus(kernel, rng)
            stream = inputs(rng, corpus, [t.encode() for t in MAKE_TOKENS], n)
            configs = [t.encode() for t in CONFIG_TOKENS]
        for i, data in enumerate(stream):
            started = time.perf_counter()
            try:
                if target == "c":
                    check_c(data, "fuzz.c" if i % 3 else "fuzz.h", tree, seconds)
                else:
                    config = b"".join(rng.choice(configs) for _ in range(rng.randint(0, 50)))
                    check_kbuild(data, tree, config)
            except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the run
                kind = type(e).__name__
                errors[kind] += 1
                if kind not in examples:
                    where = ""
                    if save:
                        Path(save).mkdir(parents=True, exist_ok=True)
                        path = Path(save) / f"{target}-{kind}-{hashlib.sha1(data).hexdigest()[:12]}"
                        path.write_bytes(data)
                        where = f" (input saved to {path})"
                    examples[kind] = f"{e!s:.300}{where}\n" + "".join(traceback.format_exception(e)[-3:])
            elapsed = time.perf_counter() - started
            if elapsed > worst:
                worst, worst_input = elapsed, f"{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}"
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
            if peak > rss:
                rss, rss_input = peak, f"{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}"
    return target, n, errors, examples, worst, worst_input, rss, rss_input


def fuzz(target: str, n: int, seed: int, jobs: int = 1, kernel: Path | None = None, save: str | None = None,
         seconds: float = cparse.PARSE_SECONDS) -> Report:
    """Run ``n`` inputs of ``target`` (``c`` or ``kbuild``) in ``jobs`` processes."""
    per = [n // jobs + (1 if i < n % jobs else 0) for i in range(jobs)]
    work = [(target, seed * 1000 + i, k, kernel, save, seconds) for i, k in enumerate(per) if k]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            parts = pool.map(run_chunk, work)
    else:
        parts = [run_chunk(w) for w in work]
    errors: collections.Counter = collections.Counter()
    examples: dict[str, str] = {}
    for _t, _n, e, ex, _w, _wi, _r, _ri in parts:
        errors.update(e)
        for k, v in ex.items():
            examples.setdefault(k, v)
    worst = max(parts, key=lambda p: p[4])
    fattest = max(parts, key=lambda p: p[6])
    return Report(target, sum(p[1] for p in parts), dict(errors), examples, worst[4], worst[5], fattest[6],
                  fattest[7])


def _kernel_tree() -> Path | None:
    from ksymgraph.loaders import debian

    found = sorted((debian.cache_dir() / "src").glob("linux-source-*/linux-source-*"))
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="c,kbuild")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kernel", action="store_true", help="add files of the cached linux-source tree to the corpus")
    parser.add_argument("--save", metavar="DIR", help="save the first failing input of each error type here")
    args = parser.parse_args()
    kernel = _kernel_tree() if args.kernel else None
    print(f"corpus: fixtures{f' + {kernel}' if kernel else ''}; seed {args.seed}; {args.jobs} processes")
    for target in args.targets.split(","):
        started = time.monotonic()
        r = fuzz(target, args.inputs, args.seed, args.jobs, kernel, args.save)
        print(f"\n{target}: {r.inputs} inputs in {time.monotonic() - started:.0f} s; "
              f"errors: {sum(r.errors.values())} {dict(sorted(r.errors.items())) or ''}")
        print(f"  slowest input {r.worst_seconds:.2f} s ({r.worst_input}); peak RSS {r.peak_rss_mb} MB "
              f"({r.peak_rss_input})")
        for kind, text in sorted(r.examples.items()):
            print(f"  {kind}: {text}")
    sys.exit(0)


if __name__ == "__main__":
    main()
