"""The graph layer: resolve the loaders' records into one kernel's graph, and keep graphs in a store.

The middle of the pipeline (read → **resolve → write**). :mod:`.schema` declares the data model
once; :mod:`.build` and :mod:`.source` turn records into Arrow tables; :mod:`.store` is the
interface every store implements, :mod:`.embedded` (LadybugDB) and :mod:`.neo4j_store` the two
stores, :mod:`.connect` opens one; :mod:`.load` runs the whole read → resolve → write pipeline;
:mod:`.projection` reads a kernel back into memory for the algorithms Cypher does badly.

May import :mod:`ksymgraph.loaders` and :mod:`ksymgraph.errors`; never :mod:`ksymgraph.queries` or the
presentation modules (``ksymgraph.cli``, ``ksymgraph.notebook``, ``ksymgraph.explorer``).
"""
