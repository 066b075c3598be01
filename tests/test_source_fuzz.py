"""A fixed-seed sample of tests/bench/fuzz_source.py: a few thousand generated and mutated C files
and Kbuild Makefiles (with ``.config`` files), each of which must come back without an exception
and with the loaders' invariants kept. The full runs (100,000 inputs per target) and what they
found are in the README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("fuzz_source", Path(__file__).parent / "bench" / "fuzz_source.py")
fuzz_source = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_source)


@pytest.mark.parametrize("target, inputs", [("c", 2000), ("kbuild", 3000)])
def test_fuzz_sample(target, inputs, tmp_path):
    report = fuzz_source.fuzz(target, inputs, seed=7, jobs=1, save=str(tmp_path))
    assert report.inputs == inputs
    assert report.errors == {}, "\n".join(report.examples.values())
