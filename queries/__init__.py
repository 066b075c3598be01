"""The queries: answer questions from a store — what breaks, who uses an export, what changed.

The reading side of the pipeline. The load rules and their fixpoint (:mod:`.whatif`), check,
usage, diff and renames, call-site evidence (:mod:`.callsites`), the named Cypher queries
(:mod:`.library`, ``cypher/*.cypher``) and the reports that render every result (:mod:`.report`).
Results are NamedTuple records until ``to_json``.

May import :mod:`ksymgraph.graph` (stores and projections), the records of :mod:`ksymgraph.loaders`
and :mod:`ksymgraph.errors`; never parses a file and never imports the presentation modules.
"""
