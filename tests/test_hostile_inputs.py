"""Hostile inputs (issue 17): files made to hang the reader or exhaust memory. Each is made here,
small on disk (sparse files, compression bombs), and read in a child process; the test asserts
the reason it is skipped with and the child's peak RSS.

The bound, :data:`RSS_BOUND_MIB`, is 1 GiB above what reading a real kernel needs (a load of
Debian 6.1's 4,022 modules peaks at about 420 MiB): reading any of these inputs may hold one
capped module image (:data:`~ksymgraph.loaders.modules.MAX_MODULE_BYTES`, 256 MiB) per process,
never the gigabytes the file claims. No test here asserts a time; a child that has not answered in
:data:`HANG_AFTER` seconds counts as hung.
"""

from __future__ import annotations

import json
import lzma
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import zstandard

from conftest import MODULE_SOURCES, compile_module
from ksymgraph.loaders import modules as modules_mod
from ksymgraph.loaders.modules import MAX_MODULE_BYTES, find_module_files, for_each_module

RSS_BOUND_MIB = 420 + 1024
HANG_AFTER = 600
GIB = 1 << 30
MIB = 1 << 20

CHILD = r"""
import json, os, sys
from ksymgraph.loaders.modules import find_module_files, for_each_module
from ksymgraph.loaders.symvers import read_symvers
workers, modules, skipped, entries = int(sys.argv[1]), [], [], []
for source in sys.argv[2:]:
    if source.endswith("symvers"):
        found, bad = read_symvers(source)
        entries += found
        skipped += bad
        continue
    paths = find_module_files(source, skipped) if os.path.isdir(source) else [source]
    for r in for_each_module(paths, workers):
        (modules if hasattr(r, "info") else skipped).append(r)
print(json.dumps({"modules": sorted(m.info.path for m in modules), "skipped": [list(s) for s in skipped],
                  "entries": [[e.export.symbol, e.export.crc] for e in entries]}))
"""


def _child(argv: list[str]) -> tuple[int, bytes, bytes, int]:
    """Run ``argv`` with no input, killed after :data:`HANG_AFTER` s: (exit status, stdout,
    stderr, the peak RSS in MiB of it and the children it waited for)."""
    with open(os.devnull, "wb") as devnull:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=devnull)
    watchdog = threading.Timer(HANG_AFTER, p.kill)
    watchdog.start()
    err = []
    drain = threading.Thread(target=lambda: err.append(p.stderr.read()))
    drain.start()
    out = p.stdout.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    watchdog.cancel()
    drain.join()
    return os.waitstatus_to_exitcode(status), out, err[0], usage.ru_maxrss // 1024


def read_in_child(*sources: Path, workers: int = 1, script: str = CHILD) -> tuple[dict, int]:
    """Read ``sources`` (module files, directories of them, Module.symvers files) in a child
    process as a load reads them: (what it read, its peak RSS in MiB, the largest of it and its
    own workers)."""
    code, out, err, peak = _child([sys.executable, "-c", script, str(workers), *map(str, sources)])
    assert code == 0, f"child failed ({code}; -9 = hung and killed): {err.decode()[-2000:]}"
    return json.loads(out), peak


def skip_reasons(result: dict) -> dict[str, str]:
    return {os.path.basename(path): reason for path, reason in result["skipped"]}


# A small ELF writer, for files no compiler makes. -----------------------------------------------

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_ALLOC = 2


def elf_image(sections: list[dict], shstrtab: bytes | None = None) -> tuple[list[tuple[int, bytes]], int]:
    """An x86_64 relocatable ELF file as (offset, bytes) pieces and its total size; the gaps are
    zeros. Each section: ``name``, ``type``, and ``data`` (bytes) or ``size`` and ``offset`` (a
    region of zeros, never held in memory), with ``flags``, ``link``, ``entsize``. The section
    header table comes right after the ELF header, ``.shstrtab`` (last) after the sections. With
    ``shstrtab`` given, each section's name is its ``name_offset`` into it."""
    if shstrtab is None:
        names = bytearray(b"\0")
        for s in sections:
            s["name_offset"] = len(names)
            names += s["name"].encode() + b"\0"
        names += b".shstrtab\0"
        shstrtab = bytes(names)
    count = len(sections) + 2  # the null section, and .shstrtab
    assert count <= 0xFFFF
    at = 64 + 64 * count
    pieces: list[tuple[int, bytes]] = []
    headers = bytearray(64)  # section 0
    for s in sections:
        data = s.get("data", b"")
        size = s.get("size", len(data))
        off = s.get("offset", (at + 7) & ~7)
        if data:
            pieces.append((off, bytes(data)))
        at = max(at, off + size)
        headers += struct.pack("<IIQQQQIIQQ", s["name_offset"], s["type"], s.get("flags", 0), 0, off, size,
                               s.get("link", 0), 0, 1, s.get("entsize", 0))
    headers += struct.pack("<IIQQQQIIQQ", shstrtab.rindex(b".shstrtab\0"), SHT_STRTAB, 0, 0, at, len(shstrtab),
                           0, 0, 1, 0)
    pieces.append((at, shstrtab))
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64,
                                                               count, count - 1)
    return [(0, header), (64, bytes(headers)), *pieces], at + len(shstrtab)


def symtab(entries: list[tuple[int, int, int, int]]) -> bytes:
    """Elf64_Sym records from (st_name, st_info, st_shndx, st_value); the null symbol first."""
    out = bytearray(24)
    for name, info, shndx, value in entries:
        out += struct.pack("<IBBHQQ", name, info, 0, shndx, value, 0)
    return bytes(out)


def chunks(pieces: list[tuple[int, bytes]], total: int) -> "Iterator[bytes]":  # noqa: F821
    """The whole image, a MiB at a time, zeros in the gaps."""
    pieces = sorted(pieces)
    pos = 0
    zero = bytes(MIB)
    for off, data in pieces + [(total, b"")]:
        while pos < off:
            n = min(MIB, off - pos)
            yield zero[:n]
            pos += n
        if data:
            yield data
            pos = off + len(data)


def write_sparse(path: Path, pieces: list[tuple[int, bytes]], total: int) -> Path:
    with open(path, "wb") as f:
        for off, data in pieces:
            f.seek(off)
            f.write(data)
        f.truncate(total)
    return path


def write_compressed(path: Path, stream, compress, flush) -> Path:
    with open(path, "wb") as f:
        for chunk in stream:
            f.write(compress(chunk))
        f.write(flush())
    return path


def minimal_module(extra: list[dict] = (), undefined: int = 1, strtab: bytes = b"\0kfree\0", name_at: int = 1):
    """A module of ``extra`` sections and a symbol table of ``undefined`` global undefined
    symbols, each named at ``name_at`` of ``strtab``."""
    return elf_image([*extra,
                      {"name": ".symtab", "type": SHT_SYMTAB, "data": symtab([(name_at, 0x10, 0, 0)] * undefined),
                       "entsize": 24, "link": len(extra) + 2},  # .strtab's index (section 0 is null)
                      {"name": ".strtab", "type": SHT_STRTAB, "data": strtab}])


def modinfo(size: int, offset: int | None = None) -> dict:
    s = {"name": ".modinfo", "type": SHT_PROGBITS, "flags": SHF_ALLOC, "size": size}
    if offset is not None:
        s["offset"] = offset
    return s


# The inputs. -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A directory of hostile module files (and their expected reasons), all made here."""
    d = tmp_path_factory.mktemp("hostile")
    # 4 GiB of zeros in a 130 KB .ko.zst (it decompressed all of them: 4.6 GB RSS).
    c = zstandard.ZstdCompressor(level=1).compressobj()
    write_compressed(d / "zeros.ko.zst", (bytes(MIB) for _ in range(4096)), c.compress, c.flush)
    # A module whose .modinfo is 300 MiB of zeros, as .ko.xz (1 GiB of it was accepted after 58 s at
    # 10 GB) and .ko.gz.
    pieces, total = minimal_module([modinfo(300 * MIB)])
    c = lzma.LZMACompressor(filters=[{"id": lzma.FILTER_LZMA2, "preset": 0, "nice_len": 273,
                                      "mf": lzma.MF_HC3, "mode": lzma.MODE_FAST}])
    write_compressed(d / "modinfo.ko.xz", chunks(pieces, total), c.compress, c.flush)
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    write_compressed(d / "modinfo.ko.gz", chunks(pieces, total), c.compress, c.flush)
    # One that fits the file limit but whose .modinfo does not fit the section limit.
    pieces, total = minimal_module([modinfo(20 * MIB)])
    c = lzma.LZMACompressor(preset=0)
    write_compressed(d / "modinfo20.ko.xz", chunks(pieces, total), c.compress, c.flush)
    # A sparse file whose .modinfo points into a 1 GiB hole (it was read whole: OOM).
    pieces, total = minimal_module([modinfo(GIB, offset=MIB)])
    write_sparse(d / "sparse.ko", pieces, total)
    # Every undefined symbol named at one unterminated offset of .strtab: 663 KB and 3.5 MB modules
    # (1.98 GB; an OOM at 8 GB), and the same with the table ending in a NUL after 600 KB.
    for name, n, tail in (("unterminated.ko", 27_000, b""), ("unterminated-big.ko", 145_000, b""),
                          ("long-name.ko", 27_000, b"\0")):
        pieces, total = minimal_module(undefined=n, strtab=b"\0" + b"A" * 600_000 + tail)
        write_sparse(d / name, pieces, total)
    # 65,535 sections and 200,000 names of "__ksymtab" (a section lookup scanned the list of name
    # offsets at each candidate: quadratic, over 120 s).
    fill = 0xFFFF - 4  # with the null section, .symtab, .strtab and .shstrtab: 65,535
    names = b"\0" + b"__ksymtab\0" * 200_000 + b".symtab\0.strtab\0.shstrtab\0"
    tail = len(names) - len(b".symtab\0.strtab\0.shstrtab\0")
    many = [{"type": SHT_PROGBITS, "flags": SHF_ALLOC, "name_offset": 1 + 10 * (200_000 - fill + i)}
            for i in range(fill)]
    many += [{"type": SHT_SYMTAB, "data": symtab([(1, 0x10, 0, 0)]), "entsize": 24, "name_offset": tail,
              "link": fill + 2},
             {"type": SHT_STRTAB, "data": b"\0kfree\0", "name_offset": tail + 8}]
    pieces, total = elf_image(many, names)
    write_sparse(d / "many-sections.ko", pieces, total)
    # Not regular files.
    (d / "zero.ko").symlink_to("/dev/zero")
    os.mkfifo(d / "fifo.ko")
    return d


EXPECTED = {
    "zeros.ko.zst": f"it decompresses to more than {MAX_MODULE_BYTES >> 20} MiB",
    "modinfo.ko.xz": f"it decompresses to more than {MAX_MODULE_BYTES >> 20} MiB",
    "modinfo.ko.gz": f"it decompresses to more than {MAX_MODULE_BYTES >> 20} MiB",
    "modinfo20.ko.xz": "section .modinfo is 20971520 bytes, more than the 16 MiB this reader reads of one section",
    "sparse.ko": "section .modinfo is 1073741824 bytes, more than the 16 MiB this reader reads of one section",
    "unterminated.ko": "the symbol string table (.strtab) is empty or does not begin and end with a NUL",
    "unterminated-big.ko": "the symbol string table (.strtab) is empty or does not begin and end with a NUL",
    "long-name.ko": ".strtab: the name at offset 1 is 600000 bytes long, more than KSYM_NAME_LEN (512) allows",
    "zero.ko": "not a regular file: a symlink to a character device (/dev/zero), not read",
    "fifo.ko": "not a regular file: a FIFO, not read",
}


def test_hostile_files_are_small_on_disk(hostile):
    on_disk = {p.name: os.lstat(p).st_blocks * 512 for p in hostile.iterdir()}
    assert max(on_disk.values()) < 6 * MIB, on_disk
    assert os.stat(hostile / "sparse.ko").st_size > GIB


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_hostile_file_is_skipped_with_its_reason(hostile, name):
    result, peak = read_in_child(hostile / name)
    assert result["modules"] == []
    assert [os.path.basename(p) for p, _reason in result["skipped"]] == [name]
    assert EXPECTED[name] in result["skipped"][0][1]
    print(f"\n{name}: skipped, peak RSS {peak} MiB")
    assert peak < RSS_BOUND_MIB


def test_many_sections_read_in_linear_time(hostile):
    """65,535 sections: the file reads (it has no exports: its __ksymtab sections are empty)."""
    result, peak = read_in_child(hostile / "many-sections.ko")
    assert result["skipped"] == []
    assert [os.path.basename(p) for p in result["modules"]] == ["many-sections.ko"]
    print(f"\nmany-sections.ko: read, peak RSS {peak} MiB")
    assert peak < RSS_BOUND_MIB


def test_hostile_files_among_good_ones_on_the_worker_pool(hostile, tmp_path):
    """All of them at once, with 70 real modules, on two workers: the good ones load, each bad
    one is skipped with its reason, and no process of the tree goes past the bound."""
    good = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko").read_bytes()
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(70):
        (tree / f"good{i:02d}.ko").write_bytes(good)
    for p in hostile.iterdir():
        (tree / p.name).symlink_to(p)
    result, peak = read_in_child(tree, workers=2)
    assert len(result["modules"]) == 71  # the 70, and many-sections.ko
    reasons = skip_reasons(result)
    assert set(reasons) == set(EXPECTED)
    in_tree = {**EXPECTED, "fifo.ko": "not a regular file: a symlink to a FIFO",  # linked from the tree
               "zero.ko": "not a regular file: a symlink to a character device (/dev/zero)"}
    for name, want in in_tree.items():
        assert want in reasons[name], name
    print(f"\nall hostile files on 2 workers: peak RSS {peak} MiB")
    assert peak < RSS_BOUND_MIB


UNDER_ULIMIT = r"""
import json, resource, sys
from ksymgraph.loaders.modules import read_module_file
from ksymgraph.loaders.records import LoaderError
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 96 * 2**20, vm + 96 * 2**20))
try:
    read_module_file(sys.argv[2])
    print(json.dumps("read"))
except LoaderError as e:
    print(json.dumps(e.reason))
"""


def test_memory_error_is_a_loader_error(hostile):
    """Under ``ulimit -v`` (the address space 96 MiB above what the interpreter holds), a module
    that needs more memory is a LoaderError, not a MemoryError escaping the reader."""
    reason, _peak = read_in_child(hostile / "zeros.ko.zst", script=UNDER_ULIMIT)
    assert reason == "out of memory while decompressing it"


def test_a_worker_that_dies_is_reported_and_the_load_goes_on(tmp_path, monkeypatch):
    """A worker killed while it reads a file (SIGKILL, as the OOM killer sends): that file is
    skipped with the reason, a new worker reads the rest of its batch, and every other file is read."""
    good = compile_module(MODULE_SOURCES / "core_a.c", tmp_path / "core_a.ko").read_bytes()
    for i in range(100):
        (tmp_path / f"m{i:03d}.ko").write_bytes(good)
    paths = find_module_files(tmp_path)
    deadly = {paths[3], paths[60], paths[99]}
    real = modules_mod.read_module_file

    def read_or_die(path):  # the workers are forked: they run this
        if path in deadly:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path)

    monkeypatch.setattr(modules_mod, "read_module_file", read_or_die)
    results = list(for_each_module(paths, workers=2))
    skipped = {r.path: r.reason for r in results if not hasattr(r, "info")}
    assert skipped == {p: "the worker process reading it died: killed by SIGKILL (the kernel's OOM killer "
                          "sends it when memory runs out)" for p in deadly}
    assert sorted(r.info.path for r in results if hasattr(r, "info")) == sorted(set(paths) - deadly)


# Module.symvers. ---------------------------------------------------------------------------------

def test_symvers_with_a_1_gib_symbol_name(tmp_path):
    """One line of 1 GiB (it loaded in 93 s at 15.3 GB): skipped, never held; the next line is read."""
    path = tmp_path / "Module.symvers"
    head, tail = b"0x00000001\t", b"\tvmlinux\tEXPORT_SYMBOL\t\n0x00000002\tgood\tvmlinux\tEXPORT_SYMBOL\t\n"
    write_sparse(path, [(0, head), (len(head) + GIB, tail)], len(head) + GIB + len(tail))
    result, peak = read_in_child(path)
    assert result["entries"] == [["good", 2]]
    length = len(head) + GIB + tail.index(b"\n")
    assert result["skipped"] == [[f"{path}:1", f"line of {length} bytes, longer than the 16384 bytes a "
                                               "Module.symvers line can need"]]
    print(f"\n1 GiB symvers line: peak RSS {peak} MiB")
    assert peak < RSS_BOUND_MIB


def test_symvers_crcs_are_32_bits(tmp_path):
    """A CRC of 2^63 or more (an OverflowError in the columns, with a traceback), one wider than 32
    bits, a negative one (both stored silently): each line skipped with the reason, and the load
    writes the rest."""
    from ksymgraph.graph.connect import open_store
    from ksymgraph.graph.load import load_kernel

    path = tmp_path / "Module.symvers"
    path.write_text("0x8000000000000000\tbig\tvmlinux\tEXPORT_SYMBOL\t\n"
                    "0x100000000\twide\tvmlinux\tEXPORT_SYMBOL\t\n"
                    "-0x1\tnegative\tvmlinux\tEXPORT_SYMBOL\t\n"
                    "0xffffffff\tlargest\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
                    f"0x1\t{'x' * 512}\tvmlinux\tEXPORT_SYMBOL\t\n"
                    f"0x2\t{'y' * 511}\tvmlinux\tEXPORT_SYMBOL\t\n")
    with open_store(tmp_path / "db") as store:
        s = load_kernel(store, [str(path)], kernel="crcs", workers=1)
        rows = store.query("MATCH (m:Module)-[e:EXPORTS]->(x:Symbol) WHERE m.kernel = $k "
                           "RETURN x.name AS s, e.crc AS crc ORDER BY s", {"k": "crcs"}).rows
    assert [tuple(r) for r in rows] == [("largest", 0xFFFFFFFF), ("y" * 511, 2)]
    assert [(x.path, x.reason) for x in s.skipped] == [
        (f"{path}:1", "CRC 0x8000000000000000 is wider than 32 bits: a CRC is a 32-bit unsigned value"),
        (f"{path}:2", "CRC 0x100000000 is wider than 32 bits: a CRC is a 32-bit unsigned value"),
        (f"{path}:3", "CRC -0x1 is negative: a CRC is a 32-bit unsigned value"),
        (f"{path}:5", "symbol name of 512 bytes, longer than KSYM_NAME_LEN (512) allows"),
    ]


def test_int64_column_says_which_value_overflows():
    from ksymgraph.graph.columns import int64s

    with pytest.raises(OverflowError, match="^9223372036854775808 does not fit a 64-bit integer column$"):
        int64s([1, None, 2**63])


# Fuzzing: a fixed-seed sample of tests/bench/fuzz_inputs.py's inputs. ----------------------------

@pytest.fixture(scope="module")
def fuzz():
    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    try:
        import fuzz_inputs
    finally:
        sys.path.pop(0)
    return fuzz_inputs


def test_fuzz_module_reader_sample(fuzz):
    """3,000 mutated modules (.ko, and xz, gzip, zstd wrappers): each a module or a LoaderError
    naming it, no invariant broken."""
    stats = fuzz.run("module", 3000, seed=20251201)
    assert stats.failures == []
    assert stats.results > 500  # many mutations leave a readable module ...
    assert len(stats.errors) > 25  # ... and the others reach many different checks
    assert any(k.startswith("cannot decompress") for k in stats.errors)
    assert any("__kflagstab" in k for k in stats.errors)


def test_fuzz_symvers_reader_sample(fuzz):
    stats = fuzz.run("symvers", 3000, seed=20251201)
    assert stats.failures == []
    assert stats.results > 2000
    assert {"symvers line: CRC -N is negative: a CRC is a N-bit unsigned value",
            "symvers line: symbol … of … bytes, longer than KSYM_NAME_LEN (N) allows"} <= set(stats.errors)


def _load_in_child(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """``ksymgraph load ARGS`` in a child: (its result, the peak RSS in MiB of it and its workers)."""
    argv = [sys.executable, "-m", "ksymgraph", "load", *args]
    code, out, err, peak = _child(argv)
    return subprocess.CompletedProcess(argv, code, out.decode(), err.decode()), peak


def _write_symvers(path: Path, lines: int) -> Path:
    with open(path, "w") as f:
        for i in range(lines):
            f.write(f"0x{i * 2654435761 & 0xffffffff:08x}\tsym_{i:07d}\tdrivers/x/mod{i % 3000}\tEXPORT_SYMBOL\t\n")
    return path


def test_a_module_symvers_too_long_for_a_kernel_is_refused_whole(tmp_path):
    """Valid lines, one more than MAX_ENTRIES (10 million such lines once needed 11.7 GB): the load
    says which line passed the limit and why, stores nothing, and stays small; at the limit a load
    stays under the bound."""
    from ksymgraph.loaders.symvers import MAX_ENTRIES

    over = _write_symvers(tmp_path / "over.symvers", MAX_ENTRIES + 1)
    db = tmp_path / "graph.lbdb"
    p, _ = _load_in_child(str(over), "--kernel", "big", "--db", str(db))
    assert p.returncode == 2, p.stderr
    assert f"{over}:{MAX_ENTRIES + 1}: more than {MAX_ENTRIES:,} exports" in p.stderr
    assert "Traceback" not in p.stderr and not db.exists()

    at = _write_symvers(tmp_path / "at.symvers", MAX_ENTRIES)
    p, peak = _load_in_child(str(at), "--kernel", "big", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert f"{MAX_ENTRIES} exports" in p.stdout
    print(f"\nModule.symvers of {MAX_ENTRIES:,} lines: loaded, peak RSS {peak} MiB")
    assert peak < RSS_BOUND_MIB
