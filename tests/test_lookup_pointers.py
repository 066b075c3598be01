"""Run-time lookups through a function pointer found by a kprobe, and names in local variables.

The fixture (tests/fixtures/lookup_pointers/) reproduces LTTng 2.13's lookup wrappers for kernels
since 5.7: ``kallsyms_lookup_name`` is no longer exported, so its address is found with a kprobe
on ``"kallsyms_lookup_name"``, kept in a function pointer and called through it; the pre-5.7
inline that calls ``kallsyms_lookup_name`` directly is a dead ``#if`` branch once the
preprocessor pass decides the version. Each file is parsed with the pass off (every branch
read) and on (6.1), and the lookups are resolved over the files together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ksymgraph.loaders import cparse
from ksymgraph.loaders.preproc import context_for_build

FIXTURE = Path(__file__).parent / "fixtures" / "lookup_pointers"
FILES = ("wrap.h", "wrap.c", "same.c", "user.c")


def _parse(context):
    results = [cparse.parse_source((FIXTURE / f).read_bytes(), f, context=context) for f in FILES]
    for r in results:
        assert r.error is None, (r.file, r.error)
    return results


def _lookups(context):
    return {(lu.symbol, lu.how, lu.file) for lu in cparse.resolve_file_lookups(_parse(context))}


CONTEXTS = {"pass off": None, "pass on, 6.1": context_for_build({"CONFIG_X86_64": "y", "CONFIG_KPROBES": "y"},
                                                                   (6, 1, 0))}


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_lookups_through_a_kprobe_found_pointer_and_a_local_variable(name):
    found = _lookups(CONTEXTS[name])
    # the name in a local variable, passed to the inline wrapper of a wrapper
    assert ("stack_trace_save", "wrapper:fix_lookup_funcptr", "user.c") in found
    # a pointer set from kp.addr in the function holding the kprobe
    assert ("vfs_fsync", "wrapper:fix_find", "same.c") in found
    # the kprobes themselves are lookups too; the one on do_sys_open makes no wrapper of open_fn
    assert {s for s, how, _ in found if how == "kprobe"} == {"kallsyms_lookup_name", "do_sys_open"}
    assert not any(s == "not_a_lookup" for s, _, _ in found)
    assert {s for s, how, _ in found if how != "kprobe"} == {"stack_trace_save", "vfs_fsync"}


def test_with_the_pass_on_the_chain_goes_through_the_pointer():
    """With 6.1 decided, the header's inline is gone: fix_lookup_name reaches
    kallsyms_lookup_name only through lookup_sym, set from probe_lookup() (which holds the kprobe)."""
    results = _parse(CONTEXTS["pass on, 6.1"])
    flows = {(f.function, f.callee) for r in results for f in r.arg_flows}
    assert ("fix_lookup_name", "kallsyms_lookup_name") not in flows  # the dead pre-5.7 inline
    assert ("lookup_sym", "kallsyms_lookup_name") in flows
    assert ("fix_lookup_name", "lookup_sym") in flows
    assert ("lookup_fn", "kallsyms_lookup_name") in flows
    # never a variable this file does not call (``addr = kp.addr``), never a pointer from another kprobe
    assert not any(f in ("addr", "open_fn") for f, _ in flows)
    plain = _parse(None)
    assert ("fix_lookup_name", "kallsyms_lookup_name") in {(f.function, f.callee) for r in plain for f in r.arg_flows}
