"""The Neo4j store: the same graph on a Neo4j 5 server, through the official ``neo4j`` driver.

Statements come from :mod:`ksymgraph.graph.schema`, never from hand-written per-table copies:
:func:`schema_statements` gives a uniqueness constraint on ``id`` per label and indexes on
``kernel``, ``name``, ``release`` and ``path``; :func:`node_merge_statement` and
:func:`rel_create_statement` give one ``UNWIND $rows AS r ...`` statement per label and per
(type, from, to) pair. :func:`neo4j_statements` lists every statement this module can send; the
lint tests run each through Neo4j's own parser, so nothing embedded-only (``CREATE NODE TABLE``,
``COPY``, ``label()``) can reach a server.

Replacing a kernel as a unit
----------------------------
Every node and relationship carries its kernel's release in ``kernel`` and every reader filters on
it (``WHERE m.kernel = $kernel``), in both stores. A staging name followed by a "switch" would
still have to rewrite ``kernel`` (and ``id``) on every staged node and relationship in the switch
transaction — as large as the load itself — so it buys no atomicity that one transaction does not.
:meth:`Neo4jStore.replace_kernel` therefore runs ONE managed write transaction per kernel
(``session.execute_write``): ``DETACH DELETE`` the kernel's nodes, then the ``UNWIND`` batches of
:data:`BATCH_ROWS` rows, label by label and relationship table by relationship table. Neo4j makes a
transaction's writes visible at commit only: while the load runs, readers see the old kernel whole;
if anything fails (the server stopped or killed half-way included, or the driver's retries run out
on a transient error) the transaction rolls back and the old kernel is whole. Neo4j Community reads
at read-committed isolation without snapshots, though: a read that overlaps the commit itself can
see part of the change (measured on 5.26: a count polled during replacements saw partial counts),
unlike the embedded store, whose readers keep their snapshot. The driver retries the whole function on transient errors, which is
safe because it starts by deleting the kernel.

The cost: the server holds the whole kernel as transaction state until commit. A Debian kernel's
binary graph (about 4k modules, 35k symbols, 150k relationships) needs a few hundred MB of heap;
``ksymgraph neo4j start`` gives the server 2 GB (``--heap``) and no cap on transaction memory;
``docker/compose.yaml`` gives it 2 GB and caps transaction memory at 1.5 GB. A source graph
of millions of CALLS edges does not fit one transaction: load it offline with ``neo4j-admin database
import`` (:mod:`ksymgraph.graph.neo4j_admin`), which is also minutes faster than ``MERGE``.

Nodes are MERGEd on ``id`` (backed by the uniqueness constraint). Relationship rows MATCH both
endpoints by id (two MATCH clauses, never the comma form) and then CREATE the relationship rather
than MERGE it: the kernel's old relationships went with its nodes at the start of the same
transaction, and MERGE would collapse rows that share endpoints and type — the source graph has one
CALLS edge per call site, several between the same two functions. So a reload is idempotent by
delete-and-write in one transaction, and both stores hold exactly the batch's rows. Each statement
returns how many rows found both endpoints; any shortfall aborts the transaction.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from .build import GraphBatch
from .schema import NODES, RELS
from .store import GraphStore, Rows, StoreError, cypher_code

__all__ = [
    "BATCH_ROWS",
    "CONNECT_TIMEOUT",
    "COMPOSE_HINT",
    "MIN_VERSION",
    "Statement",
    "Neo4jStore",
    "schema_statements",
    "delete_statements",
    "node_merge_statement",
    "rel_create_statement",
    "neo4j_statements",
    "write_plan",
    "store_error",
    "server_version",
    "check_version",
    "missing_schema",
]

#: Rows per ``UNWIND`` statement.
BATCH_ROWS = 5000
#: Seconds to wait for a connection; an unreachable server fails within this (and :func:`store_error`).
CONNECT_TIMEOUT = 4.0
#: How to start the server, for error messages.
COMPOSE_HINT = ("start one with `ksymgraph neo4j start` (needs Java 17 and Maven) or "
                "`docker compose -f docker/compose.yaml up -d` (see docker/README.md)")
#: Oldest Neo4j this store works with: ``COUNT { }`` subqueries (5.3) and notification filters (5.7).
MIN_VERSION = (5, 7)
#: Properties that get an index, where a label has them (besides the ``id`` constraint).
INDEXED = ("kernel", "name", "release", "path")


class Statement(NamedTuple):
    """One Cypher statement and its parameters, as sent to the server."""

    cypher: str
    """The statement text."""
    params: dict[str, Any]
    """Its parameters."""


def schema_statements() -> list[str]:
    """``CREATE CONSTRAINT`` (unique ``id``) and ``CREATE INDEX`` statements for every label."""
    out = []
    for n in NODES:
        low = n.label.lower()
        out.append(f"CREATE CONSTRAINT {low}_id IF NOT EXISTS FOR (n:{n.label}) REQUIRE n.id IS UNIQUE")
        names = {"kernel", *(p.name for p in n.props)}
        for prop in INDEXED:
            if prop in names:
                out.append(f"CREATE INDEX {low}_{prop} IF NOT EXISTS FOR (n:{n.label}) ON (n.{prop})")
    return out


def delete_statements() -> list[str]:
    """One ``DETACH DELETE`` statement per label, taking ``$kernel``."""
    # Labels come from the schema declaration, never from the user.
    return [f"MATCH (n:{n.label}) WHERE n.kernel = $kernel DETACH DELETE n" for n in NODES]


def node_merge_statement(label: str) -> str:
    """``UNWIND $rows`` of ``{id, kernel, props...}`` maps into nodes of ``label``, merged on ``id``."""
    return f"UNWIND $rows AS r\nMERGE (n:{label} {{id: r.id}})\nSET n += r"


def rel_create_statement(rtype: str, src_label: str, dst_label: str) -> str:
    """``UNWIND $rows`` of ``{src, dst, props}`` maps into ``(src_label)-[rtype]->(dst_label)``
    relationships, endpoints matched by ``id``; returns how many rows found both endpoints."""
    return (f"UNWIND $rows AS r\n"
            f"WITH r.src AS src, r.dst AS dst, r.props AS props\n"
            f"MATCH (a:{src_label} {{id: src}})\n"
            f"MATCH (b:{dst_label} {{id: dst}})\n"
            f"CREATE (a)-[e:{rtype}]->(b)\n"
            f"SET e = props\n"
            f"RETURN count(e) AS written")


_AWAIT_INDEXES = "CALL db.awaitIndexes(300)"
_HAS_KERNEL = "MATCH (k:Kernel) WHERE k.release = $kernel RETURN count(k) AS n"
_CONSTRAINTS = "SHOW CONSTRAINTS YIELD name RETURN name"
_INDEXES = "SHOW INDEXES YIELD name RETURN name"
_LABELS = "CALL db.labels() YIELD label RETURN label"


def neo4j_statements() -> list[Statement]:
    """Every statement :class:`Neo4jStore` sends besides user queries — DDL, deletes, merges and its own
    reads — each with example parameters of the shapes it sends (for linting without a server)."""
    kernel = {"kernel": "6.1.0-50-amd64"}
    out = [Statement(s, {}) for s in schema_statements() + [_AWAIT_INDEXES]]
    out += [Statement(s, kernel) for s in delete_statements()]
    out += [Statement(node_merge_statement(n.label), {"rows": [{"id": "k|x", "kernel": "k"}]}) for n in NODES]
    rel_rows = {"rows": [{"src": "k|a", "dst": "k|b", "props": {"kernel": "k"}}]}
    out += [Statement(rel_create_statement(r.type, a, b), rel_rows) for r in RELS for a, b in r.pairs]
    out.append(Statement(_HAS_KERNEL, kernel))
    out += [Statement(q, {}) for q in (_CONSTRAINTS, _INDEXES, _LABELS)]
    return out


def _chunks(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def write_plan(batch: GraphBatch, batch_rows: int = BATCH_ROWS) -> list[Statement]:
    """The statements, in order, that replace ``batch``'s kernel; all run in one transaction.

    Deletes come first, then nodes label by label, then relationships. Raises :class:`StoreError`
    for duplicate node ids, which MERGE would fold together.
    """
    kernel = batch.kernel.release
    plan = [Statement(s, {"kernel": kernel}) for s in delete_statements()]
    for n in NODES:
        table = batch.nodes.get(n.label)
        if table is None or table.num_rows == 0:
            continue
        if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
            raise StoreError(f"internal error: duplicate {n.label} ids in the batch for {kernel}")
        stmt = node_merge_statement(n.label)
        plan += [Statement(stmt, {"rows": rows}) for rows in _chunks(table.to_pylist(), batch_rows)]
    for r in RELS:
        for a, b in r.pairs:
            table = batch.rels.get((r.type, a, b))
            if table is None or table.num_rows == 0:
                continue
            rows = _rel_rows(table)
            stmt = rel_create_statement(r.type, a, b)
            plan += [Statement(stmt, {"rows": chunk}) for chunk in _chunks(rows, batch_rows)]
    return plan


def _rel_rows(table: pa.Table) -> list[dict]:
    out = []
    for row in table.to_pylist():
        src = row.pop("from")
        dst = row.pop("to")
        out.append({"src": src, "dst": dst, "props": row})
    return out


def _public_uri(uri: str) -> str:
    """``uri`` without any user:password part, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def store_error(exc: BaseException, uri: str, user: str, password: str | None = None) -> StoreError:
    """A :class:`StoreError` that says what went wrong with the server at ``uri`` and what to do.

    The password never appears in the message, even if the driver's message quoted it.
    """
    from neo4j import exceptions as ne

    where = _public_uri(uri)
    if isinstance(exc, ne.AuthError) or getattr(exc, "code", "") == "Neo.ClientError.Security.Unauthorized":
        msg = (f"authentication failed for user {user!r} at {where}; set NEO4J_PASSWORD (and NEO4J_USER) "
               "to the credentials the server was started with (the NEO4J_PASSWORD of `ksymgraph neo4j start`, or "
               "NEO4J_AUTH in docker/compose.yaml)")
    elif isinstance(exc, (ne.ServiceUnavailable, ne.SessionExpired, ConnectionError, TimeoutError)):
        reason = _root_reason(exc)
        if "looks like HTTP" in reason:
            msg = (f"{where} answers HTTP, not Bolt ({reason}): give the Bolt port (7687 by default; 7474 is the "
                   "browser's), e.g. --neo4j bolt://localhost:7687")
        else:
            msg = f"cannot reach Neo4j at {where} ({reason}); {COMPOSE_HINT}"
    elif isinstance(exc, (ne.ConfigurationError, ValueError)):
        msg = f"bad Neo4j URI {where}: {_first_line(exc)}; use bolt://HOST:7687 or neo4j://HOST:7687"
    elif isinstance(exc, ne.Neo4jError):
        msg = f"Neo4j at {where} refused the statement: {exc.code}: {exc.message}"
    else:
        msg = f"Neo4j at {where}: {type(exc).__name__}: {_first_line(exc)}"
    if password:
        msg = msg.replace(password, "***")
    return StoreError(msg)


def _root_reason(exc: BaseException) -> str:
    """The first line of the innermost cause: the driver wraps "connection refused" or "looks like
    HTTP" in a "Couldn't connect to ..." of its own."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plain(value: Any) -> Any:
    """Driver values as plain Python, shaped as the embedded store returns them: a node is its property
    map with ``_ID`` (element id) and ``_LABEL``; a relationship adds ``_SRC`` and ``_DST`` (its
    endpoints' element ids); a path is ``{"_NODES": [...], "_RELS": [...]}``."""
    from neo4j.graph import Node, Path, Relationship

    if isinstance(value, Node):
        return {"_ID": value.element_id, "_LABEL": min(value.labels, default=""), **dict(value.items())}
    if isinstance(value, Relationship):
        return {"_SRC": value.start_node.element_id, "_DST": value.end_node.element_id, "_LABEL": value.type,
                "_ID": value.element_id, **dict(value.items())}
    if isinstance(value, Path):
        return {"_NODES": [_plain(n) for n in value.nodes], "_RELS": [_plain(r) for r in value.relationships]}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def server_version(agent: str) -> tuple[int, ...] | None:
    """The version in a server agent string (``Neo4j/5.26.29`` → ``(5, 26, 29)``), None if it has none."""
    m = re.match(r"^Neo4j/(\d+)\.(\d+)(?:\.(\d+))?", agent or "")
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def check_version(agent: str, where: str) -> tuple[int, ...]:
    """``agent``'s version if this store supports it, else a :class:`StoreError` saying which it is and what to run."""
    version = server_version(agent)
    if version is None or version[:2] < MIN_VERSION:
        found = ".".join(map(str, version)) if version else repr(agent)
        raise StoreError(f"Neo4j at {where} is version {found}; ksymgraph needs Neo4j "
                         f"{'.'.join(map(str, MIN_VERSION))} or newer (5.26 LTS, or 2025.x and later): "
                         f"{COMPOSE_HINT}")
    return version


def missing_schema(constraints: set[str], indexes: set[str]) -> list[str]:
    """Names of the constraints and indexes of :func:`schema_statements` not among those given."""
    want = [re.match(r"CREATE (CONSTRAINT|INDEX) (\w+) ", st).group(2) for st in schema_statements()]
    have = constraints | indexes
    return [name for name in want if name not in have]


class Neo4jStore(GraphStore):
    """A Neo4j 5 database holding any number of kernels."""

    dialect = "neo4j"

    def __init__(self, uri: str, user: str | None = None, password: str | None = None,
                 database: str | None = None):
        from neo4j import GraphDatabase

        self.uri = uri
        self.user = user if user is not None else os.environ.get("NEO4J_USER", "neo4j")
        password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
        self.database = database if database is not None else (os.environ.get("NEO4J_DATABASE") or None)
        self._password = password
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if not scheme.startswith(("bolt", "neo4j")):
            raise StoreError(f"bad Neo4j URI {_public_uri(uri)}: use bolt://HOST:7687 or neo4j://HOST:7687")
        if _public_uri(uri) != uri:
            raise StoreError(f"bad Neo4j URI {_public_uri(uri)}: give the credentials in NEO4J_USER and NEO4J_PASSWORD, "
                             "not in the URI")
        auth = (self.user, password) if password is not None else None
        try:
            self._driver = GraphDatabase.driver(
                uri, auth=auth, connection_timeout=CONNECT_TIMEOUT, connection_acquisition_timeout=CONNECT_TIMEOUT,
                max_connection_lifetime=3600, max_transaction_retry_time=30.0)
        except Exception as e:  # ConfigurationError, ValueError on a malformed URI
            raise store_error(e, uri, self.user, password) from None
        try:
            self._driver.verify_connectivity()
            agent = self._driver.get_server_info().agent
        except Exception as e:
            self._driver.close()
            raise store_error(e, uri, self.user, password) from None
        try:
            #: The server's version, e.g. ``(5, 26, 29)``.
            self.version = check_version(agent, self.describe())
        except StoreError:
            self._driver.close()
            raise
        self._schema_ready = False
        self._schema_checked = False

    def describe(self) -> str:
        return _public_uri(self.uri)

    def close(self) -> None:
        self._driver.close()

    def _session(self):
        # Notifications ("this label does not exist yet", ...) stay on the server: a kernel without
        # source has no CALLS, and every read of them would otherwise log a warning.
        opts: dict[str, Any] = {"notifications_min_severity": "OFF"}
        if self.database:
            opts["database"] = self.database
        return self._driver.session(**opts)

    def _fail(self, exc: BaseException) -> StoreError:
        return store_error(exc, self.uri, self.user, self._password)

    def ensure_schema(self) -> None:
        """Create the constraints and indexes (``IF NOT EXISTS``) and wait until they are online."""
        from neo4j.exceptions import DriverError, Neo4jError

        try:
            with self._session() as s:
                for stmt in schema_statements():  # schema and data may not share a transaction
                    s.run(stmt).consume()
                s.run(_AWAIT_INDEXES).consume()
        except (Neo4jError, DriverError) as e:
            raise self._fail(e) from None
        self._schema_ready = True

    def check_schema(self) -> None:
        """Raise a :class:`StoreError` naming what is missing when the database holds kernels but not
        ksymgraph's constraints and indexes (e.g. after ``neo4j-admin database import`` without
        ``schema.cypher``), or data that is not ksymgraph's; checked once per store by :meth:`kernels`."""
        if self._schema_checked or self._schema_ready:
            return
        constraints = {r[0] for r in self.query(_CONSTRAINTS).rows}
        indexes = {r[0] for r in self.query(_INDEXES).rows}
        missing = missing_schema(constraints, indexes)
        if missing:
            labels = [r[0] for r in self.query(_LABELS).rows]
            if labels:
                what = ("holds kernels but not all of ksymgraph's constraints and indexes"
                        if "Kernel" in labels else
                        f"holds other data than ksymgraph's (labels {', '.join(sorted(labels)[:6])}) and none of its "
                        "constraints")
                raise StoreError(f"Neo4j at {self.describe()} {what} (missing: {', '.join(missing)}): run "
                                 f"`ksymgraph neo4j schema --neo4j {self.describe()}` to create them, or point "
                                 "--neo4j / NEO4J_DATABASE at ksymgraph's own database")
        self._schema_checked = True

    def kernels(self) -> list[str]:
        self.check_schema()
        return super().kernels()

    def query(self, cypher: str, params: dict[str, Any] | None = None) -> Rows:
        from neo4j.exceptions import DriverError, Neo4jError

        def read(tx):
            result = tx.run(cypher, params or {})
            keys = list(result.keys())
            return keys, [tuple(_plain(v) for v in rec.values()) for rec in result]

        try:
            with self._session() as s:
                keys, rows = s.execute_read(read)
        except (Neo4jError, DriverError) as e:
            raise self._fail(e) from None
        return Rows(keys, rows)

    def file_access_in(self, cypher: str) -> str | None:
        """``LOAD CSV`` reads files and URLs (the query itself runs in a read transaction)."""
        words = [w.upper() for w in re.findall(r"\w+", cypher_code(cypher))]
        if any(a == "LOAD" and b == "CSV" for a, b in zip(words, words[1:])):
            return "LOAD CSV reads files and URLs"
        return None

    def _write(self, plan: list[Statement]) -> None:
        from neo4j.exceptions import DriverError, Neo4jError

        def work(tx):
            for stmt in plan:
                result = tx.run(stmt.cypher, stmt.params)
                if "rows" in stmt.params and "written" in result.keys():
                    written = result.single()[0]
                    if written != len(stmt.params["rows"]):
                        raise StoreError(f"internal error: {len(stmt.params['rows']) - written} relationship rows "
                                         f"name nodes missing from the batch:\n{stmt.cypher}")
                else:
                    result.consume()

        try:
            with self._session() as s:
                s.execute_write(work)
        except (Neo4jError, DriverError) as e:
            raise self._fail(e) from None

    def replace_kernel(self, batch: GraphBatch) -> None:
        plan = write_plan(batch)
        if not self._schema_ready:
            self.ensure_schema()
        self._write(plan)

    def delete_kernel(self, kernel: str) -> bool:
        had = self.query(_HAS_KERNEL, {"kernel": kernel}).rows[0][0] > 0
        self._write([Statement(s, {"kernel": kernel}) for s in delete_statements()])
        return had
