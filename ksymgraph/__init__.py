"""ksymgraph: a knowledge graph of Linux kernel symbols, exports, callers and modules.

The package is laid out as a one-way pipeline:

* ``ksymgraph.loaders`` read files (module binaries, Module.symvers, Debian packages,
  C source, Kbuild) and yield plain records;
* ``ksymgraph.graph`` resolves those records into a graph and writes it to a store
  (embedded LadybugDB by default, or Neo4j);
* ``ksymgraph.queries`` reads a store and answers questions (what-if, usage, check);
* ``ksymgraph.cli`` presents them on the command line.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
