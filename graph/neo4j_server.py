"""A real Neo4j server on this machine without Docker: build it, start it, stop it, ask how it is.

``docker/`` holds a small Maven project (``pom.xml`` and one Java class,
``org.ksymgraph.neo4j.KsymgraphNeo4j``) that runs Neo4j Community embedded with its Bolt connector
on 127.0.0.1. :func:`build_server` builds it with Maven on first use into
``$KSYMGRAPH_CACHE/neo4j-server/<version>-<hash>/`` (the jar and ``lib/``, about 120 MB; the hash is
that of the project files, so an edited project is built anew, and other processes sharing the cache
wait on a lock instead of building it twice). :func:`start_server` runs it in the background in its
own session (it outlives the command that started it), with its home directory (databases, logs,
``conf/neo4j.conf``) where the caller says, and waits until the database is available, the password
set and Bolt answers; :func:`stop_server` sends SIGTERM (Neo4j rolls back open transactions and
checkpoints) and waits for the process to end; :func:`server_status` says whether it runs and answers.

The server's pid, port and version are kept in ``ksymgraph-neo4j.json`` in its home directory; its
output goes to ``logs/ksymgraph-neo4j.log`` there. Only a process whose command line runs this jar
is ever signalled, so a pid reused by another program is left alone.

The Neo4j version is pinned in ``docker/pom.xml`` (``neo4j.version``, read by
:func:`pinned_version`): 5.26 is the long-term-support line and the last that runs on Java 17
(2025.x needs Java 21). :func:`admin_command` gives the ``neo4j-admin`` command line of the same
build (``org.neo4j.cli.AdminTool``), which with the same home directory sees the same databases, for
``neo4j-admin database import full``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from ..loaders.debian import cache_dir
from .store import StoreError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_HEAP",
    "MAIN_CLASS",
    "ServerError",
    "ServerInfo",
    "ServerStatus",
    "project_dir",
    "pinned_version",
    "default_home",
    "find_java",
    "server_jar",
    "build_server",
    "start_server",
    "stop_server",
    "server_status",
    "bolt_answers",
    "free_port",
    "admin_command",
]

#: Neo4j's own Bolt port, the default of ``ksymgraph neo4j start``.
DEFAULT_PORT = 7687
#: JVM heap of the server (``-Xmx``); ``$KSYMGRAPH_NEO4J_HEAP`` overrides it.
DEFAULT_HEAP = "2g"
#: The Java class that runs the server.
MAIN_CLASS = "org.ksymgraph.neo4j.KsymgraphNeo4j"
#: Oldest Java the pinned Neo4j runs on.
MIN_JAVA = 17
_JAR = "ksymgraph-neo4j.jar"
_STATE = "ksymgraph-neo4j.json"
_LOG = "ksymgraph-neo4j.log"
_READY = re.compile(r"^ksymgraph-neo4j ready (bolt://\S+) (\S+)$", re.M)
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class ServerError(StoreError):
    """The local Neo4j server could not be built, started or stopped; the message says why and what to do."""


class ServerInfo(NamedTuple):
    """A local Neo4j server started by :func:`start_server`."""

    uri: str
    """Its Bolt URI, ``bolt://127.0.0.1:PORT``."""
    port: int
    """The Bolt port on 127.0.0.1."""
    home: Path
    """Its home directory: ``data/`` (the databases), ``logs/``, ``conf/neo4j.conf``."""
    pid: int
    """The JVM's process id."""
    version: str
    """The Neo4j version it runs."""
    log: Path
    """The file its output goes to."""


class ServerStatus(NamedTuple):
    """What :func:`server_status` found."""

    running: bool
    """A server process started from this home directory is alive."""
    answering: bool
    """Its Bolt port completes a Bolt handshake."""
    info: ServerInfo | None
    """The server's details when one was started from this home directory and has not been stopped."""
    reason: str
    """One line for people: what runs where, or why nothing does."""


def project_dir() -> Path:
    """The Maven project (``docker/`` of the source tree; ``$KSYMGRAPH_NEO4J_PROJECT`` overrides)."""
    env = os.environ.get("KSYMGRAPH_NEO4J_PROJECT")
    here = Path(env) if env else Path(__file__).resolve().parent.parent / "docker"
    if not (here / "pom.xml").is_file():
        raise ServerError(f"{here}/pom.xml: no such file: the Neo4j server project is in the docker/ folder of "
                          "ksymgraph's source tree; install ksymgraph from its source (pip install -e .) or set "
                          "KSYMGRAPH_NEO4J_PROJECT to that folder")
    return here


def pinned_version(project: Path | None = None) -> str:
    """The Neo4j version ``docker/pom.xml`` pins (its ``neo4j.version`` property)."""
    pom = (project or project_dir()) / "pom.xml"
    node = ET.parse(pom).getroot().find("m:properties/m:neo4j.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise ServerError(f"{pom}: no <neo4j.version> property; the project must pin the Neo4j version")
    return node.text.strip()


def default_home() -> Path:
    """``$XDG_DATA_HOME/ksymgraph/neo4j`` (``~/.local/share/ksymgraph/neo4j``), next to the embedded store."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "ksymgraph" / "neo4j"


def _project_files(project: Path) -> list[Path]:
    return [project / "pom.xml", *sorted((project / "src").rglob("*.java"))]


def find_java() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java``, else the one on ``PATH``), checked to be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").is_file() else shutil.which("java")
    if not java:
        raise ServerError("Java is not installed: the local Neo4j server needs Java 17 or newer "
                          "(apt-get install openjdk-17-jdk-headless maven)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0_x": Java 8
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise ServerError(f"{java} is Java {major or 'of unknown version'}; Neo4j {pinned_version()} needs Java "
                          f"{MIN_JAVA} or newer (apt-get install openjdk-17-jdk-headless, or set JAVA_HOME)")
    return java


def server_jar(version: str | None = None) -> Path:
    """Where :func:`build_server` puts the jar of ``version`` (default the pinned one) built from the
    project as it is now; it may not be built yet."""
    project = project_dir()
    version = version or pinned_version(project)
    digest = hashlib.sha256()
    for f in _project_files(project):
        digest.update(f.relative_to(project).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return cache_dir() / "neo4j-server" / f"{version}-{digest.hexdigest()[:12]}" / _JAR


def build_server(version: str | None = None, quiet: bool = True) -> Path:
    """The server's jar, built with Maven into the cache on first use; returns its path.

    ``version`` builds another Neo4j version than the pinned one (``-Dneo4j.version``). Maven's
    output goes to ``build.log`` beside the jar; a failed build raises :class:`ServerError` with its
    last lines. Maven downloads Neo4j and its dependencies (about 120 MB) into ``~/.m2`` once.
    """
    project = project_dir()
    version = version or pinned_version(project)
    jar = server_jar(version)
    if jar.is_file():
        return jar
    final, root = jar.parent, jar.parent.parent
    find_java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServerError("Maven is not installed: the local Neo4j server is built with it on first use "
                          "(apt-get install maven)")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same thing
        if jar.is_file():
            return jar
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            for f in _project_files(project):
                dst = work / f.relative_to(project)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)
            log = work / "build.log"
            cmd = [mvn, "-B", *(["-q"] if quiet else []), f"-Dneo4j.version={version}", "package"]
            with open(log, "w") as out:
                rc = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL).returncode
            if rc != 0 or not (work / "target" / _JAR).is_file():
                tail = " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines()[-6:])
                kept = root / f"failed-build-{version}.log"
                shutil.copy(log, kept)
                raise ServerError(f"building the Neo4j {version} server with Maven failed (exit {rc}; log {kept}): "
                                  f"{tail}")
            staged = work / "out"
            staged.mkdir()
            shutil.move(str(work / "target" / _JAR), staged / _JAR)
            shutil.move(str(work / "target" / "lib"), staged / "lib")
            shutil.move(str(log), staged / "build.log")
            staged.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return jar


def admin_command(home: Path, version: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, environment) that run ``neo4j-admin`` of the same build on the databases of ``home``.

    Append the admin arguments (``database import full ...``). ``NEO4J_HOME`` and ``NEO4J_CONF`` point
    at ``home``, so the tool reads the server's ``conf/neo4j.conf`` and writes into its ``data/``.
    """
    jar = build_server(version)
    home = Path(home).resolve()
    (home / "conf").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": str(home / "conf")}
    heap = os.environ.get("KSYMGRAPH_NEO4J_HEAP", DEFAULT_HEAP)
    return [find_java(), f"-Xmx{heap}", "-cp", str(jar), "org.neo4j.cli.AdminTool"], env


def _conf_text() -> str:
    pagecache = os.environ.get("KSYMGRAPH_NEO4J_PAGECACHE", "512m")
    return (
        "# Written by ksymgraph (graph/neo4j_server.py) at every start; KSYMGRAPH_NEO4J_PAGECACHE sets the page cache.\n"
        f"server.memory.pagecache.size={pagecache}\n"
        # A kernel is replaced in one transaction (graph/neo4j_store.py): let it take most of the heap.
        "db.memory.transaction.total.max=0\n"
        "db.tx_log.rotation.retention_policy=2 files\n"
        "dbms.usage_report.enabled=false\n"
        # Bolt's shutdown otherwise waits twice 5 s for idle connections that are already gone.
        "internal.server.bolt.connection_shutdown_wait_time=1s\n"
        "internal.server.bolt.thread_pool_shutdown_wait_time=1s\n"
    )


def bolt_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when ``host:port`` completes a Bolt handshake (no credentials needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            # Magic preamble, then four proposed versions: 5.x (range of 8 minors below 5.8), 4.4, none, none.
            s.sendall(bytes.fromhex("6060B017") + bytes.fromhex("00080805 00000404 00000000 00000000"))
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            # The server picks one: 00 00 MINOR MAJOR; all zeros means none; anything else is not Bolt.
            return reply[:2] == b"\0\0" and reply[3] in (4, 5)
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port`` (connections left in TIME_WAIT by a server
    just stopped do not count: SO_REUSEADDR, as the JVM binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _ours(pid: int) -> bool:
    """True when process ``pid`` is alive and runs this server's jar (so a reused pid is never signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(_JAR.encode()) for arg in cmdline) and b"-jar" in cmdline


def _read_state(home: Path) -> ServerInfo | None:
    try:
        d = json.loads((home / _STATE).read_text())
        return ServerInfo(d["uri"], int(d["port"]), home, int(d["pid"]), d["version"], Path(d["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def server_status(home: str | os.PathLike | None = None) -> ServerStatus:
    """Is the server of ``home`` (default :func:`default_home`) running, and does Bolt answer?"""
    home = Path(home).resolve() if home else default_home()
    info = _read_state(home)
    if info is None:
        return ServerStatus(False, False, None, f"no Neo4j server started from {home}: run `ksymgraph neo4j start`")
    if not _ours(info.pid):
        return ServerStatus(False, False, info, f"the Neo4j server of {home} (pid {info.pid}) is not running; "
                                                f"its log is {info.log}")
    if not bolt_answers(info.port):
        return ServerStatus(True, False, info, f"Neo4j {info.version} (pid {info.pid}) runs from {home} but Bolt does "
                                               f"not answer on 127.0.0.1:{info.port} (starting or stopping?); "
                                               f"log {info.log}")
    return ServerStatus(True, True, info, f"Neo4j {info.version} running at {info.uri} (pid {info.pid}, data {home})")


def _log_since(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _log_tail(log: Path, offset: int, lines: int = 8) -> str:
    text = _log_since(log, offset)
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def start_server(port: int = DEFAULT_PORT, home: str | os.PathLike | None = None, password: str | None = None,
                 heap: str | None = None, timeout: float = 300.0, version: str | None = None) -> ServerInfo:
    """Start Neo4j in the background with Bolt on ``127.0.0.1:port``; returns once it answers.

    ``home`` (default :func:`default_home`) keeps the databases between runs; ``password`` (default
    ``$NEO4J_PASSWORD``, 8 characters or more) is set for user ``neo4j`` at each start; ``heap``
    (default ``$KSYMGRAPH_NEO4J_HEAP`` or :data:`DEFAULT_HEAP`) is the JVM's ``-Xmx``; port 0 picks a
    free port. The jar is built on first use (:func:`build_server`). A server already running from
    ``home`` on the same port is returned as it is.
    """
    home = Path(home).resolve() if home else default_home()
    password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
    if not password or len(password) < 8:
        raise ServerError("set NEO4J_PASSWORD to a password of 8 characters or more: the server is started with it "
                          "and every ksymgraph command reads it from there")
    status = server_status(home)
    if status.running:
        if status.answering and port in (0, status.info.port):
            return status.info
        raise ServerError(f"a Neo4j server already runs from {home} (pid {status.info.pid}, port "
                          f"{status.info.port}): stop it first with `ksymgraph neo4j stop --data {home}`")
    port = port or free_port()
    if _port_taken(port):
        raise ServerError(f"port {port} on 127.0.0.1 is in use (another Neo4j?): pick another with --port N")
    java = find_java()
    jar = build_server(version)
    (home / "conf").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "conf" / "neo4j.conf").write_text(_conf_text())
    log = home / "logs" / _LOG
    offset = log.stat().st_size if log.exists() else 0
    heap = heap or os.environ.get("KSYMGRAPH_NEO4J_HEAP", DEFAULT_HEAP)
    env = {**os.environ, "KSYMGRAPH_NEO4J_HOME": str(home), "KSYMGRAPH_NEO4J_PORT": str(port),
           "NEO4J_PASSWORD": password}
    with open(log, "ab") as out:
        proc = subprocess.Popen([java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
                                 "-jar", str(jar)], cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"bolt://127.0.0.1:{port}"
    state = {"uri": uri, "port": port, "pid": proc.pid, "version": version or pinned_version(), "log": str(log),
             "started": time.time()}
    (home / _STATE).write_text(json.dumps(state) + "\n")
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            (home / _STATE).unlink(missing_ok=True)
            raise ServerError(f"Neo4j exited with status {rc} while starting (log {log}): {_log_tail(log, offset)}")
        m = _READY.search(_log_since(log, offset))
        if m and bolt_answers(port):
            state["version"] = m.group(2)
            (home / _STATE).write_text(json.dumps(state) + "\n")
            return ServerInfo(uri, port, home, proc.pid, m.group(2), log)
        if time.monotonic() > deadline:
            _terminate(proc.pid, 30.0)
            (home / _STATE).unlink(missing_ok=True)
            raise ServerError(f"Neo4j did not answer on {uri} within {timeout:.0f} s; stopped it (log {log}): "
                              f"{_log_tail(log, offset)}")
        time.sleep(0.25)


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
            return True
    return not _ours(pid)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid`` and wait; SIGKILL it after ``timeout`` s. True when the stop was clean."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while not _gone(pid):
        time.sleep(0.1)
    return False


def stop_server(home: str | os.PathLike | None = None, timeout: float = 120.0) -> ServerInfo | None:
    """Stop the server of ``home`` (SIGTERM, then wait); None when none was running.

    Raises :class:`ServerError` when it had to be killed after ``timeout`` seconds (the next start
    then recovers the databases from their transaction logs).
    """
    home = Path(home).resolve() if home else default_home()
    info = _read_state(home)
    if info is None:
        return None
    clean = True
    if _ours(info.pid):
        clean = _terminate(info.pid, timeout)
    (home / _STATE).unlink(missing_ok=True)
    if not clean:
        raise ServerError(f"Neo4j (pid {info.pid}) did not stop within {timeout:.0f} s of SIGTERM and was killed; "
                          f"the next start recovers its databases (log {info.log})")
    return info
