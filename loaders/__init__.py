"""The loaders: read files and yield plain records; nothing here knows about a database.

The start of the pipeline (**read** → resolve → write). Module binaries (:mod:`.elf`,
:mod:`.modules`), Module.symvers (:mod:`.symvers`), SOURCE arguments and Debian packages
(:mod:`.kernel`, :mod:`.debian`), C source (:mod:`.cparse` for one file, :mod:`.cindex` for a
whole tree, and their helpers), Kbuild (:mod:`.kbuild`), ``--source`` trees (:mod:`.trees`),
out-of-tree builds (:mod:`.oot`); the records they yield are in :mod:`.records`.

May import only :mod:`ksymgraph.errors` besides the standard library and third-party readers
(pyelftools-style parsing, tree-sitter); never :mod:`ksymgraph.graph`, :mod:`ksymgraph.queries` or
the presentation modules.
"""
