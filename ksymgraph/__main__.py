"""``python -m ksymgraph`` runs the command-line interface."""

from ksymgraph.cli import run

run()
