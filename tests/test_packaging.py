"""The package as a user installs it: a wheel built from the tree carries what the commands need
at run time (the notebooks that ``ksymgraph explore`` serves, the named Cypher queries), and an
installed ksymgraph outside the checkout finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_notebooks_and_queries(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, text=True)
    [wheel] = tmp_path.glob("ksymgraph-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for nb in sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")):
        assert f"ksymgraph/notebooks/{nb}" in names
    for q in sorted(p.name for p in (ROOT / "queries" / "cypher").glob("*.cypher")):
        assert f"ksymgraph/queries/cypher/{q}" in names
    # installed into a folder of its own, away from the checkout, it finds the explorer notebook
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = ("from importlib import resources; import ksymgraph; "
            "print(ksymgraph.__file__); "
            "print(resources.files('ksymgraph.notebooks').joinpath('02-whatif-explorer.ipynb').is_file())")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "True"
