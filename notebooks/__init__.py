"""The notebooks, shipped inside the package so that an installed ksymgraph can serve them.

``ksymgraph explore`` serves ``02-whatif-explorer.ipynb`` from here
(``importlib.resources.files("ksymgraph.notebooks")``); the code they run is in
:mod:`ksymgraph.notebook` and :mod:`ksymgraph.explorer`. Nothing here is imported.
"""
