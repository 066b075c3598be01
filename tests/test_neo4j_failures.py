"""Failures against a real Neo4j server, and the one line a user sees for each.

These tests start their own server (``ksymgraph.graph.neo4j_server``, in a temporary home on a free
port) because they stop, kill and restart it; the shared server of ``$NEO4J_URI`` is left alone.
They need Java 17+ and Maven (the server is built into ``$KSYMGRAPH_CACHE`` once); without them
they are skipped, or fail when ``KSYMGRAPH_REQUIRE_NEO4J=1``.

* a wrong password; an unreachable port; a port that speaks HTTP;
* a restart between two queries: the second waits for the server and gets its answer (the driver
  retries it);
* the server stopped (SIGTERM), then killed (SIGKILL), in the middle of a load: the load fails with
  a message, and after a restart the kernel it was replacing is whole, not half of either;
* a database without ksymgraph's schema, or with other data; a server older than ksymgraph supports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from test_neo4j_store import COUNTS, REQUIRE_NEO4J, fixture_batch
from ksymgraph.graph import neo4j_server as srv
from ksymgraph.graph.neo4j_store import Neo4jStore, check_version
from ksymgraph.graph.store import StoreError

pytestmark = pytest.mark.neo4j

PASSWORD = "private-Pa55word"
K = "ksymgraph-test-failures"


def _need_tools() -> None:
    try:
        srv.find_java()
        if not srv.server_jar().is_file() and not shutil.which("mvn"):
            raise srv.ServerError("Maven is not installed (apt-get install maven)")
    except srv.ServerError as e:
        if REQUIRE_NEO4J:
            pytest.fail(f"KSYMGRAPH_REQUIRE_NEO4J=1 but {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A private server: ServerInfo; stopped at the end."""
    _need_tools()
    home = tmp_path_factory.mktemp("neo4j-private")
    info = srv.start_server(port=0, home=home, password=PASSWORD, heap="2g")
    try:
        yield info
    finally:
        srv.stop_server(home)


def store_of(info, password=PASSWORD) -> Neo4jStore:
    return Neo4jStore(info.uri, user="neo4j", password=password)


def _restart(info) -> srv.ServerInfo:
    """Start the server of ``info`` again on the same port and home."""
    return srv.start_server(port=info.port, home=info.home, password=PASSWORD, heap="2g")


def test_a_fresh_database_or_other_data_gets_the_schema_message(server):
    with store_of(server) as store:
        assert store.version[:2] == (5, 26)
        assert store.kernels() == []      # empty and without schema: nothing to complain about yet
    with store_of(server) as store:
        with store._session() as s:
            s.run("CREATE (:Person {name: 'Ada'})").consume()
        try:
            with pytest.raises(StoreError) as info:
                store.kernels()
            assert str(info.value).startswith(
                f"Neo4j at {server.uri} holds other data than ksymgraph's (labels Person) and none of its constraints "
                "(missing: kernel_id, ")
            assert f"run `ksymgraph neo4j schema --neo4j {server.uri}`" in str(info.value)
        finally:
            with store._session() as s:
                s.run("MATCH (p:Person) DELETE p").consume()


def test_kernels_without_constraints_say_what_to_run(server, fixture_tree):
    with store_of(server) as store:
        store.replace_kernel(fixture_batch([fixture_tree], kernel=K))      # creates the schema too
        with store._session() as s:
            s.run("DROP CONSTRAINT module_id").consume()
            s.run("DROP INDEX symbol_name").consume()
    with store_of(server) as store:
        with pytest.raises(StoreError) as info:
            store.resolve_kernel(K)
    assert str(info.value) == (
        f"Neo4j at {server.uri} holds kernels but not all of ksymgraph's constraints and indexes (missing: "
        f"module_id, symbol_name): run `ksymgraph neo4j schema --neo4j {server.uri}` to create them, or point "
        "--neo4j / NEO4J_DATABASE at ksymgraph's own database")
    # What the message says to run, run as a user would.
    env = {**os.environ, "NEO4J_PASSWORD": PASSWORD, "NEO4J_USER": "neo4j"}
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "neo4j", "schema", "--neo4j", server.uri],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"constraints and indexes are in place on {server.uri}"
    with store_of(server) as store:
        assert store.resolve_kernel(K) == K


def test_wrong_password_is_one_clear_line(server):
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        store_of(server, password="not-the-Pa55word")
    assert time.monotonic() - t0 < 5
    assert str(info.value).startswith(f"authentication failed for user 'neo4j' at {server.uri}; set NEO4J_PASSWORD")
    assert "not-the-Pa55word" not in str(info.value) and PASSWORD not in str(info.value)
    env = {**os.environ, "NEO4J_PASSWORD": "not-the-Pa55word"}
    p = subprocess.run([sys.executable, "-m", "ksymgraph", "kernels", "--neo4j", server.uri],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith(f"ksymgraph kernels: error: authentication failed for user 'neo4j' at {server.uri}")
    assert len(p.stderr.strip().splitlines()) == 1
    with store_of(server) as store:            # the right one still works (one failure locks nothing)
        assert store.kernels() is not None


def test_unreachable_and_non_bolt_ports(server):
    port = srv.free_port()
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        Neo4jStore(f"bolt://127.0.0.1:{port}", password=PASSWORD)
    assert time.monotonic() - t0 < 5
    assert str(info.value).startswith(f"cannot reach Neo4j at bolt://127.0.0.1:{port} ([Errno 111] Connection refused); "
                                      "start one with `ksymgraph neo4j start`")

    # Something that answers, but in HTTP (Neo4j's browser port, a web server).
    listener = socket.create_server(("127.0.0.1", 0))
    http_port = listener.getsockname()[1]

    def answer() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        with pytest.raises(StoreError) as info:
            Neo4jStore(f"bolt://127.0.0.1:{http_port}", password=PASSWORD)
        assert not srv.bolt_answers(http_port) and srv.bolt_answers(server.port)
    finally:
        listener.close()
    assert str(info.value).startswith(f"bolt://127.0.0.1:{http_port} answers HTTP, not Bolt (")
    assert "give the Bolt port (7687 by default; 7474 is the browser's)" in str(info.value)


def test_a_restart_between_two_queries_is_retried(server, fixture_tree):
    with store_of(server) as store:
        store.replace_kernel(fixture_batch([fixture_tree], kernel=K))
        before = store.query(COUNTS, {"k": K}).rows
        srv.stop_server(server.home)
        assert not srv.server_status(server.home).running
        started = {}
        t = threading.Thread(target=lambda: started.setdefault("info", _restart(server)))
        t0 = time.monotonic()
        t.start()
        try:
            # The pooled connection is dead and the server not up yet: the driver retries until it is.
            after = store.query(COUNTS, {"k": K}).rows
            waited = time.monotonic() - t0
        finally:
            t.join()
        assert after == before and waited > 1
        assert started["info"].port == server.port
        print(f"\nthe query after the restart waited {waited:.1f} s")


def _load_and_interrupt(store_uri: str, batch, interrupt) -> str:
    """Start replacing a kernel with ``batch``; call ``interrupt()`` while the transaction runs; return
    the message the failed load raised."""
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with Neo4jStore(store_uri, user="neo4j", password=PASSWORD) as s:
                s.replace_kernel(batch)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=load)
    t.start()
    with Neo4jStore(store_uri, user="neo4j", password=PASSWORD) as watcher:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # until the load's write transaction is running
            running = watcher.query("SHOW TRANSACTIONS YIELD currentQuery, elapsedTime "
                                    "WHERE currentQuery STARTS WITH 'UNWIND' RETURN elapsedTime").rows
            if running:
                break
            time.sleep(0.2)
        assert running, "the load never started its transaction"
    time.sleep(2)
    interrupt()
    t.join(120)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StoreError), errors
    return str(errors[0])


@pytest.mark.realdata
def test_a_server_stopped_or_killed_in_the_middle_of_a_load_keeps_the_old_kernel(server, fixture_tree,
                                                                                  debian_kernel):
    small = fixture_batch([fixture_tree], kernel=K)
    big = fixture_batch([f"debian:{debian_kernel.release}"], kernel=K)   # about 20 s to write
    with store_of(server) as store:
        store.replace_kernel(small)
        old = store.query(COUNTS, {"k": K}).rows
        names = sorted(r[0] for r in store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name", {"k": K}).rows)

    def stop() -> None:
        srv.stop_server(server.home)

    def kill() -> None:
        os.kill(srv.server_status(server.home).info.pid, signal.SIGKILL)

    for how, interrupt in (("stopped", stop), ("killed", kill)):
        msg = _load_and_interrupt(server.uri, big, interrupt)
        print(f"\nserver {how} in the middle of a load: {msg}")
        assert msg.startswith(f"cannot reach Neo4j at {server.uri} (") or msg.startswith(f"Neo4j at {server.uri}"), msg
        srv.stop_server(server.home)       # after a kill: forget the dead pid
        _restart(server)                   # after a kill, the start recovers from the transaction log
        with store_of(server) as store:
            assert store.query(COUNTS, {"k": K}).rows == old, how
            assert sorted(r[0] for r in store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN m.name",
                                                    {"k": K}).rows) == names, how
    with store_of(server) as store:          # and the server takes the load once it is left alone
        store.replace_kernel(big)
        assert store.query("MATCH (m:Module) WHERE m.kernel = $k RETURN count(m)", {"k": K}).rows[0][0] > 4000
        store.delete_kernel(K)


def test_unsupported_server_versions_are_named(server):
    with store_of(server) as store:
        agent = store._driver.get_server_info().agent
    assert agent.startswith("Neo4j/5.26.") and check_version(agent, server.uri)[:2] == (5, 26)
    assert check_version("Neo4j/2025.10.1", "x") == (2025, 10, 1)
    for old in ("Neo4j/4.4.30", "Neo4j/5.6.0", "Neo4j/3.5.35"):
        with pytest.raises(StoreError) as info:
            check_version(old, "bolt://db.example:7687")
        assert str(info.value).startswith(f"Neo4j at bolt://db.example:7687 is version {old.split('/')[1]}; "
                                          "ksymgraph needs Neo4j 5.7 or newer (5.26 LTS, or 2025.x and later): "
                                          "start one with `ksymgraph neo4j start`")
