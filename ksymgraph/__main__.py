"""``python -m ksymgraph`` runs the command-line interface."""

from .cli import run

run()
