"""Offline bulk import into Neo4j: CSV files for ``neo4j-admin database import full``.

Row-by-row ``MERGE`` over Bolt takes minutes for a source graph of millions of edges and needs the
whole kernel as transaction state (see :mod:`ksymgraph.graph.neo4j_store`); ``neo4j-admin`` writes
the store files directly. Data flows one way: kernels are loaded into a store once
(``ksymgraph load``), :func:`read_kernel_batch` reads one back as a :class:`GraphBatch` with portable
Cypher (so the embedded store, or another Neo4j, can be the source), and
:func:`export_neo4j_admin` writes, per node label and per (type, from, to) relationship table of
:mod:`ksymgraph.graph.schema`, a header file and a data file, plus ``import.sh`` with the command::

    neo4j-admin database import full \\
        --nodes=Module=nodes/Module.header.csv,nodes/Module.csv ... \\
        --relationships=EXPORTS=relationships/EXPORTS.Module.Symbol.header.csv,relationships/EXPORTS.Module.Symbol.csv ... \\
        --id-type=string --array-delimiter=';' --multiline-fields=true --overwrite-destination=true neo4j

and ``schema.cypher``, the constraints and indexes to create once the server is up again
(``cypher-shell -f schema.cypher``; a ``Neo4jStore`` creates them too before its first write).

Headers use one id space per label (``id:ID(Module)``, ``:START_ID(Module)``, ``:END_ID(Symbol)``)
and keep ``id`` as a property, as the Neo4j store does. Types: ``:long``, ``:boolean``,
``:string[]`` (``;``-separated). Strings are always quoted, so ``""`` stays an empty string while an
unquoted empty field is a missing (null) property; an empty list becomes a missing property too.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import pyarrow as pa

from ..loaders.records import KernelMeta
from .build import GraphBatch
from .neo4j_store import schema_statements
from .schema import NODES, RELS, arrow_type
from .store import GraphStore, StoreError

__all__ = ["ARRAY_DELIMITER", "AdminExport", "read_statements", "read_kernel_batch", "export_neo4j_admin",
           "header_fields"]

ARRAY_DELIMITER = ";"
_TYPES = {"STRING": "", "INT64": ":long", "BOOLEAN": ":boolean", "STRING[]": ":string[]"}


class AdminExport(NamedTuple):
    """What :func:`export_neo4j_admin` wrote."""

    out_dir: Path
    """The directory holding everything."""
    command: list[str]
    """The ``neo4j-admin`` command, run from ``out_dir`` (``import.sh`` runs exactly this)."""
    rows: dict[str, int]
    """Data rows written per file name (relative to ``out_dir``)."""


def _node_read(label: str, cols: list[str]) -> str:
    # Labels and property names come from the schema declaration, never from the user.
    ret = ", ".join(f"n.{c} AS {c}" for c in cols)
    return f"MATCH (n:{label}) WHERE n.kernel = $kernel RETURN {ret} ORDER BY n.id"


def _rel_read(rtype: str, a: str, b: str, props: list[str]) -> str:
    ret = ", ".join(["a.id AS src", "b.id AS dst", "e.kernel AS kernel", *(f"e.{p} AS {p}" for p in props)])
    return f"MATCH (a:{a})-[e:{rtype}]->(b:{b}) WHERE e.kernel = $kernel RETURN {ret} ORDER BY src, dst"


def read_statements() -> list[str]:
    """The portable read queries :func:`read_kernel_batch` runs (all take ``$kernel``)."""
    out = [_node_read(n.label, ["id", "kernel", *(p.name for p in n.props)]) for n in NODES]
    out += [_rel_read(r.type, a, b, [p.name for p in r.props]) for r in RELS for a, b in r.pairs]
    return out


def read_kernel_batch(store: GraphStore, kernel: str) -> GraphBatch:
    """Kernel ``kernel`` of ``store``, read back with portable Cypher as a :class:`GraphBatch`."""
    kernel = store.resolve_kernel(kernel)
    nodes: dict[str, pa.Table] = {}
    meta = None
    for n in NODES:
        cols = ["id", "kernel", *(p.name for p in n.props)]
        rows = store.query(_node_read(n.label, cols), {"kernel": kernel}).rows
        if not rows:
            continue
        types = [pa.string(), pa.string(), *(arrow_type(p.type) for p in n.props)]
        nodes[n.label] = _table(cols, types, rows)
        if n.label == "Kernel":
            k = dict(zip(cols, rows[0]))
            meta = KernelMeta(k["release"], k["version"] or "", k["arch"] or "", k["source"] or "")
    rels: dict[tuple[str, str, str], pa.Table] = {}
    for r in RELS:
        props = [p.name for p in r.props]
        for a, b in r.pairs:
            rows = store.query(_rel_read(r.type, a, b, props), {"kernel": kernel}).rows
            if rows:
                types = [pa.string()] * 3 + [arrow_type(p.type) for p in r.props]
                rels[(r.type, a, b)] = _table(["from", "to", "kernel", *props], types, rows)
    return GraphBatch(meta or KernelMeta(kernel, "", "", ""), nodes, rels)


def _table(names: list[str], types: list[pa.DataType], rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    return pa.table([pa.array(list(c), type=t) for c, t in zip(cols, types)], names=names)


def header_fields(label_or_type: str, pair: tuple[str, str] | None = None) -> list[str]:
    """The header of a node label's file, or of a relationship table's file when ``pair`` is given."""
    if pair is None:
        decl = next(n for n in NODES if n.label == label_or_type)
        return [f"id:ID({decl.label})", "kernel", *(p.name + _TYPES[p.type] for p in decl.props)]
    decl = next(r for r in RELS if r.type == label_or_type)
    return [f":START_ID({pair[0]})", f":END_ID({pair[1]})", "kernel", *(p.name + _TYPES[p.type] for p in decl.props)]


def _field(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        if not value:
            return ""
        bad = [v for v in value if v is None or ARRAY_DELIMITER in v]
        if bad:
            raise StoreError(f"{where}: cannot write list element {bad[0]!r} for neo4j-admin "
                             f"(null or containing {ARRAY_DELIMITER!r})")
        value = ARRAY_DELIMITER.join(value)
    return '"' + str(value).replace('"', '""') + '"'


def _write_csv(path: Path, header: list[str], tables: Iterable[pa.Table], columns: list[str]) -> int:
    n = 0
    with open(path.with_name(path.stem + ".header.csv"), "w", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
    with open(path, "w", encoding="utf-8", newline="") as f:
        for table in tables:
            for row in table.select(columns).to_pylist():
                f.write(",".join(_field(row[c], path.name) for c in columns) + "\n")
                n += 1
    return n


def export_neo4j_admin(batches: list[GraphBatch], out_dir: str | os.PathLike, database: str = "neo4j") -> AdminExport:
    """Write ``batches`` (one per kernel) as ``neo4j-admin database import full`` input into ``out_dir``.

    Writes ``nodes/``, ``relationships/``, ``import.sh`` (the command, run from its own directory;
    ``$NEO4J_ADMIN`` names the tool, ``$NEO4J_DATABASE`` the database) and ``schema.cypher``.
    """
    out = Path(out_dir)
    (out / "nodes").mkdir(parents=True, exist_ok=True)
    (out / "relationships").mkdir(parents=True, exist_ok=True)
    kernels = [b.kernel.release for b in batches]
    if len(set(kernels)) != len(kernels):
        raise StoreError(f"the same kernel twice in one export: {', '.join(kernels)}")
    args = ["neo4j-admin", "database", "import", "full"]
    rows: dict[str, int] = {}
    for n in NODES:
        tables = [b.nodes[n.label] for b in batches if n.label in b.nodes]
        if not tables:
            continue
        rel = f"nodes/{n.label}.csv"
        rows[rel] = _write_csv(out / rel, header_fields(n.label), tables, ["id", "kernel", *(p.name for p in n.props)])
        args.append(f"--nodes={n.label}=nodes/{n.label}.header.csv,{rel}")
    for r in RELS:
        for a, b in r.pairs:
            tables = [bt.rels[(r.type, a, b)] for bt in batches if (r.type, a, b) in bt.rels]
            if not tables:
                continue
            rel = f"relationships/{r.type}.{a}.{b}.csv"
            rows[rel] = _write_csv(out / rel, header_fields(r.type, (a, b)), tables,
                                   ["from", "to", "kernel", *(p.name for p in r.props)])
            args.append(f"--relationships={r.type}=relationships/{r.type}.{a}.{b}.header.csv,{rel}")
    args += ["--id-type=string", f"--array-delimiter={ARRAY_DELIMITER}", "--multiline-fields=true",
             "--overwrite-destination=true", database]
    script = out / "import.sh"
    shown = " \\\n  ".join(shlex.quote(a) for a in args[4:-1])
    script.write_text(
        "#!/bin/sh\n"
        f"# Offline import of kernel(s) {', '.join(kernels)} written by ksymgraph.\n"
        "# The database must be stopped; it is replaced (--overwrite-destination). Afterwards start the server\n"
        "# and create the constraints and indexes: cypher-shell -u neo4j -p \"$NEO4J_PASSWORD\" -f schema.cypher\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        f'exec "${{NEO4J_ADMIN:-neo4j-admin}}" database import full \\\n  {shown} \\\n'
        f'  "${{NEO4J_DATABASE:-{database}}}"\n')
    script.chmod(0o755)
    (out / "schema.cypher").write_text("".join(s + ";\n" for s in schema_statements()))
    return AdminExport(out, args, rows)
