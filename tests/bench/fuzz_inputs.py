"""Fuzzing at scale: the module reader (with its compressed wrappers) and the Module.symvers reader
fed generated and mutated inputs.

    python tests/bench/fuzz_inputs.py --target module --count 100000 [--seed 1] [--jobs 2]
    python tests/bench/fuzz_inputs.py --target symvers --count 100000

Module inputs start from hermetic modules compiled for the four compilers of tests/conftest.py
(x86_64, i386, s390x, s390), every ksymtab layout, with and without ``__kflagstab`` and extended
modversions; each is mutated (bytes, header and section-table fields set to edge values, symbol
fields, truncation, splices, random files) and written as ``.ko`` or wrapped in xz, gzip or zstd
(sometimes corrupted or cut). Module.symvers inputs are files of valid, mutated and random lines.

Each input is read as a user's load reads it (:func:`ksymgraph.loaders.modules.read_module_file`,
:func:`ksymgraph.loaders.symvers.read_symvers`). A *failure* is anything but a result or a
:class:`LoaderError` naming the input: another exception, a result that breaks an invariant (a CRC
outside 32 bits, a name of KSYM_NAME_LEN bytes or more), or an input still running after
``--timeout`` seconds. The script prints the inputs run, the errors by kind, the failures (and
writes each failing input to ``--failures DIR``), the slowest input and the peak RSS.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import lzma
import multiprocessing
import os
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import zstandard

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from ksymgraph.loaders.elffile import KSYM_NAME_LEN  # noqa: E402
from ksymgraph.loaders.modules import read_module_file  # noqa: E402
from ksymgraph.loaders.records import LoaderError, ModuleData  # noqa: E402
from ksymgraph.loaders.symvers import read_symvers  # noqa: E402

__all__ = ["FuzzStats", "module_seeds", "module_input", "symvers_input", "run"]

EDGE = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0xFF00, 0xFFF1, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000,
        2**63 - 1, 2**63, 2**64 - 1, 1 << 30, 1 << 24]


class FuzzStats(NamedTuple):
    """What a fuzzing run saw."""

    inputs: int
    """Inputs read."""
    results: int
    """Inputs read into a result (a module, or a Module.symvers with at least one entry)."""
    errors: dict[str, int]
    """LoaderErrors (and skipped Module.symvers lines) by kind: the reason with numbers and names blanked."""
    failures: list[tuple[int, str]]
    """(input number, what went wrong) for each failure."""
    worst_seconds: float
    """The longest time one input took."""
    worst_input: int
    """The input that took it."""
    peak_rss_mib: int
    """The peak RSS of the process that read the inputs (of the largest one, with ``jobs``)."""


# Module inputs. ----------------------------------------------------------------------------------

class Seed(NamedTuple):
    data: bytes
    bits: int
    little: bool
    shoff: int
    shnum: int
    symtab: tuple[int, int]  # offset, count


def _describe(data: bytes) -> Seed:
    bits = 64 if data[4] == 2 else 32
    little = data[5] == 1
    e = "<" if little else ">"
    if bits == 64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shnum, = struct.unpack_from(e + "H", data, 0x3C)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shnum, = struct.unpack_from(e + "H", data, 0x30)
    symtab = (0, 0)
    for i in range(shnum):
        at = shoff + i * (64 if bits == 64 else 40)
        if bits == 64:
            _n, typ, _f, _a, off, size = struct.unpack_from(e + "IIQQQQ", data, at)
        else:
            _n, typ, _f, _a, off, size = struct.unpack_from(e + "IIIIII", data, at)
        if typ == 2:
            symtab = (off, size // (24 if bits == 64 else 16))
    return Seed(data, bits, little, shoff, shnum, symtab)


def module_seeds(workdir: Path) -> list[Seed]:
    """The hermetic fixture modules, compiled for every compiler, layout and version format."""
    from conftest import COMPILERS, LAYOUTS, MODULE_SOURCES, compile_module

    seeds = []
    for arch in COMPILERS:
        for layout in LAYOUTS:
            for defines in ((), ("KFLAGSTAB", "EXT_MODVERSIONS", "LAYOUT_CRC=0x1234")):
                for src in ("core_a.c", "user_b.c", "weak_e.c"):
                    out = workdir / f"{arch}-{layout}-{len(defines)}-{src}.ko"
                    seeds.append(_describe(compile_module(MODULE_SOURCES / src, out, arch, layout, defines).read_bytes()))
    return seeds


def _edge(rng: random.Random, data_len: int) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.choice(EDGE)
    if r < 0.8:
        return max(0, data_len + rng.randint(-16, 16))
    return rng.getrandbits(rng.choice((8, 16, 32, 64)))


def _put(data: bytearray, at: int, size: int, value: int, little: bool) -> None:
    if 0 <= at <= len(data) - size:
        data[at:at + size] = (value % (1 << (8 * size))).to_bytes(size, "little" if little else "big")


def _mutate(rng: random.Random, seed: Seed, seeds: list[Seed]) -> bytes:
    data = bytearray(seed.data)
    shsize = 64 if seed.bits == 64 else 40
    # Section header fields: (offset in the header, size) for name, type, flags, offset, size, link, info, entsize.
    fields = ([(0, 4), (4, 4), (8, 8), (24, 8), (32, 8), (40, 4), (44, 4), (56, 8)] if seed.bits == 64 else
              [(0, 4), (4, 4), (8, 4), (16, 4), (20, 4), (24, 4), (28, 4), (36, 4)])
    symfields = ([(0, 4), (4, 1), (6, 2), (8, 8)] if seed.bits == 64 else [(0, 4), (12, 1), (14, 2), (4, 4)])
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.random()
        if op < 0.25:  # a section header field to an edge value
            i = rng.randrange(seed.shnum)
            off, size = rng.choice(fields)
            _put(data, seed.shoff + i * shsize + off, size, _edge(rng, len(data)), seed.little)
        elif op < 0.4:  # a symbol field
            if seed.symtab[1]:
                i = rng.randrange(seed.symtab[1])
                off, size = rng.choice(symfields)
                _put(data, seed.symtab[0] + i * (24 if seed.bits == 64 else 16) + off, size, _edge(rng, len(data)),
                     seed.little)
        elif op < 0.55:  # bytes of the ELF header or the section table
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(64) if rng.random() < 0.5 else seed.shoff + rng.randrange(seed.shnum * shsize)
                if at < len(data):
                    data[at] = rng.getrandbits(8)
        elif op < 0.75:  # bytes anywhere
            for _ in range(rng.randint(1, 32)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif op < 0.85:  # cut
            del data[rng.randrange(len(data) + 1):]
        elif op < 0.92:  # a splice from another seed
            other = rng.choice(seeds).data
            a = rng.randrange(len(other))
            chunk = other[a:a + rng.randint(1, 512)]
            at = rng.randrange(len(data) + 1)
            data[at:at + len(chunk)] = chunk
        elif op < 0.97:  # grow
            data += bytes(rng.randint(1, 4096)) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 4096))
        else:  # random bytes behind a valid start
            data = bytearray(data[:rng.choice((0, 4, 16, 64))] + rng.randbytes(rng.randint(0, 4096)))
        if not data:
            break
    return bytes(data)


def module_input(rng: random.Random, seeds: list[Seed]) -> tuple[str, bytes]:
    """One generated module input: (file suffix, bytes)."""
    data = _mutate(rng, rng.choice(seeds), seeds)
    wrap = rng.random()
    if wrap < 0.55:
        return ".ko", data
    if wrap < 0.70:
        suffix, packed = ".ko.xz", lzma.compress(data, preset=0)
    elif wrap < 0.85:
        suffix, packed = ".ko.gz", gzip.compress(data, compresslevel=1)
    else:
        suffix, packed = ".ko.zst", zstandard.ZstdCompressor(level=1).compress(data)
    r = rng.random()
    if r < 0.15:  # a corrupt stream
        packed = bytearray(packed)
        for _ in range(rng.randint(1, 8)):
            packed[rng.randrange(len(packed))] = rng.getrandbits(8)
        packed = bytes(packed)
    elif r < 0.25:
        packed = packed[:rng.randrange(len(packed) + 1)]
    elif r < 0.3:
        packed += rng.randbytes(rng.randint(1, 64))
    return suffix, packed


def check_module(result: ModuleData) -> str | None:
    """What is wrong with a module the reader returned, or None."""
    crcs = [e.crc for e in result.exports] + list(result.imports.crcs) + [result.info.layout_crc]
    if any(c is not None and not 0 <= c <= 0xFFFFFFFF for c in crcs):
        return "a CRC outside 32 bits"
    names = [e.symbol for e in result.exports] + list(result.imports.symbols)
    if any(len(n.encode()) >= KSYM_NAME_LEN for n in names):
        return "a symbol name of KSYM_NAME_LEN bytes or more"
    if not (len(result.imports.symbols) == len(result.imports.crcs) == len(result.imports.weak)):
        return "import columns of different lengths"
    return None


# Module.symvers inputs. --------------------------------------------------------------------------

SYMBOLS = ["kfree", "usb_register_driver", "a" * 511, "b" * 512, "ünïcode", "", "x\x00y", "sym\rbol", "with space"]
OWNERS = ["vmlinux", "drivers/usb/storage/usb-storage", "", "a/b/c-d", "x" * 5000]
TYPES = ["EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL", "EXPORT_SYMBOL_GPL_FUTURE", "EXPORT_UNUSED_SYMBOL", "EXPORT_SYMBOL_NS",
         "", "export_symbol"]
CRCS = ["0x12345678", "0x00000000", "0xffffffff", "0x100000000", "-0x1", "0x8000000000000000", "zzzz", "", "12345678",
        "0X1", " 0x1", "0x1_0", "+0x5", "0x" + "f" * 40, "0x" + "0" * 100 + "1"]


def _symvers_line(rng: random.Random) -> bytes:
    r = rng.random()
    crc = rng.choice(CRCS) if rng.random() < 0.5 else f"0x{rng.getrandbits(32):08x}"
    sym = rng.choice(SYMBOLS) if rng.random() < 0.3 else f"sym_{rng.getrandbits(20)}"
    owner, kind, ns = rng.choice(OWNERS), rng.choice(TYPES), rng.choice(["", "NS", "CXL", " NS "])
    if r < 0.55:
        cols = [crc, sym, owner, kind, ns]
    elif r < 0.65:
        cols = [crc, sym, ns, owner, kind]  # 5.4 to 5.6
    elif r < 0.75:
        cols = [crc, sym, owner, kind]  # before 5.4
    elif r < 0.85:
        cols = [crc, sym, owner, kind, ns][:rng.randint(0, 5)] + [rng.choice(SYMBOLS)] * rng.randint(0, 3)
    else:
        return rng.randbytes(rng.randint(0, 200)).replace(b"\n", b"")
    line = "\t".join(cols).encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        line = line[:rng.randrange(len(line) + 1)]
    if rng.random() < 0.03:
        line += b"A" * rng.choice((16_000, 16_384, 16_385, 100_000))
    if rng.random() < 0.03:
        line += b"\xff\xfe"
    return line + rng.choice((b"\n", b"\n", b"\n", b"\r\n"))


def symvers_input(rng: random.Random) -> bytes:
    """One generated Module.symvers file."""
    out = b"".join(_symvers_line(rng) for _ in range(rng.randint(0, 60)))
    if rng.random() < 0.1:
        out = out[:rng.randrange(len(out) + 1)]
    return out


def check_symvers(entries, skipped, text: bytes) -> str | None:
    for e in entries:
        x = e.export
        if x.crc is None or not 0 <= x.crc <= 0xFFFFFFFF:
            return "a CRC outside 32 bits"
        if not x.symbol or len(x.symbol.encode()) >= KSYM_NAME_LEN:
            return "an empty symbol name or one of KSYM_NAME_LEN bytes or more"
    if len(entries) + len(skipped) > text.count(b"\n") + 1:
        return "more entries and skipped lines than lines"
    return None


# Running. ----------------------------------------------------------------------------------------

def _kind(reason: str) -> str:
    """A reason with its numbers, quoted names and paths blanked, so that reasons group."""
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    reason = re.sub(r"0x[0-9a-fA-F]+|\d+", "N", reason)
    reason = re.sub(r"(section|symbol|of|name) [^ ,:]+", r"\1 …", reason)
    return reason[:100]


class _Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Timeout()


def run(target: str, count: int, seed: int = 1, timeout: float = 30.0, failures_dir: Path | None = None,
        seeds: list[Seed] | None = None) -> FuzzStats:
    """Run ``count`` inputs of ``target`` (``module`` or ``symvers``) in this process."""
    rng = random.Random(seed)
    errors: collections.Counter = collections.Counter()
    failures: list[tuple[int, str]] = []
    results = 0
    worst, worst_input = 0.0, -1
    old = signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        tmp = Path(tmp)
        if target == "module" and seeds is None:
            seeds = module_seeds(tmp)
        try:
            for n in range(count):
                if target == "module":
                    suffix, blob = module_input(rng, seeds)
                else:
                    suffix, blob = "Module.symvers", symvers_input(rng)
                path = tmp / f"input{suffix}"
                path.write_bytes(blob)
                t0 = time.perf_counter()
                problem = None
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    if target == "module":
                        m = read_module_file(str(path))
                        results += 1
                        problem = check_module(m)
                    else:
                        entries, skipped = read_symvers(path)
                        results += bool(entries)
                        for s in skipped:
                            errors["symvers line: " + _kind(s.reason)] += 1
                        problem = check_symvers(entries, skipped, blob)
                except LoaderError as e:
                    errors[_kind(e.reason)] += 1
                    if e.path != str(path):
                        problem = f"a LoaderError naming {e.path!r}, not the input"
                except _Timeout:
                    problem = f"still running after {timeout} s"
                except Exception as e:  # noqa: BLE001 - what the fuzzing is for
                    problem = f"{type(e).__name__}: {e}"[:300]
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                took = time.perf_counter() - t0
                if took > worst:
                    worst, worst_input = took, n
                if problem is not None:
                    failures.append((n, problem))
                    if failures_dir is not None:
                        failures_dir.mkdir(parents=True, exist_ok=True)
                        (failures_dir / f"{target}-{seed}-{n}{suffix if target == 'module' else '.symvers'}").write_bytes(blob)
        finally:
            signal.signal(signal.SIGALRM, old)
    return FuzzStats(count, results, dict(errors), failures, worst, worst_input,
                     resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def _job(args) -> FuzzStats:
    target, count, seed, timeout, failures_dir = args
    return run(target, count, seed, timeout, failures_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("module", "symvers"), required=True)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one input may take before it is a failure")
    ap.add_argument("--failures", type=Path, default=None, help="write each failing input here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    shares = [args.count // args.jobs + (i < args.count % args.jobs) for i in range(args.jobs)]
    jobs = [(args.target, n, args.seed * 1000 + i, args.timeout, args.failures) for i, n in enumerate(shares) if n]
    if len(jobs) == 1:
        parts = [_job(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            parts = pool.map(_job, jobs)
    errors: collections.Counter = collections.Counter()
    for p in parts:
        errors.update(p.errors)
    worst = max(parts, key=lambda p: p.worst_seconds)
    print(f"target {args.target}: {sum(p.inputs for p in parts)} inputs in {time.perf_counter() - t0:.0f} s "
          f"on {len(jobs)} processes (seed {args.seed})")
    print(f"read without error: {sum(p.results for p in parts)}")
    print(f"errors by kind ({sum(errors.values())} in all, {len(errors)} kinds):")
    for kind, n in errors.most_common():
        print(f"  {n:8d}  {kind}")
    failures = [(j, n, what) for j, p in enumerate(parts) for n, what in p.failures]
    print(f"failures: {len(failures)}")
    for j, n, what in failures[:50]:
        print(f"  process {j} input {n}: {what}")
    print(f"worst time: {worst.worst_seconds * 1000:.1f} ms (process {parts.index(worst)}, input {worst.worst_input})")
    print(f"worst RSS: {max(p.peak_rss_mib for p in parts)} MiB (peak of one process)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
