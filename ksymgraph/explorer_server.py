"""The explorer's web server: Voila on 127.0.0.1, reachable with a token only, its memory bounded.

:func:`serve_explorer` serves a notebook (``ksymgraph explore``: the what-if explorer) with Voila,
in this process, with the offline template of :func:`ksymgraph.explorer.offline_voila_template`.
Voila's stand-alone server (0.5.13) answers whoever can open a TCP connection to it, and each page
it serves starts a Python kernel that lives until the page says goodbye (about 240 MB on a small
store, 400 MB on Debian's full kernel after a Run), a goodbye jupyter_server refuses for want of
an ``_xsrf`` cookie. Here:

* every request must carry the run's token (``?token=``, then the login cookie it sets; without
  it, 403) and a ``Host`` header that names this machine: a loopback address, ``localhost``, or a
  name allowed with ``hosts`` (so a DNS-rebinding page that reaches 127.0.0.1 under its own name
  gets 403 for every path, the static files included);
* kernels: at most ``max_kernels`` at once (the next page gets a 503 that says why); a page shuts
  its kernel down when it goes (Voila's unload beacon, which the page's ``_xsrf`` cookie now lets
  through), and a kernel whose page went without a word (no connection, idle) is shut down
  ``cull_after`` seconds later;
* widget websockets: at most ``connections_per_kernel`` per kernel, in jupyter_server's v1
  protocol only; each may send well-formed messages of at most ``max_message_bytes``, at most
  ``messages_per_second`` (``message_burst`` at once) and ``bytes_per_second`` (``byte_burst`` at
  once), and leave at most ``max_backlog_bytes`` of replies unread. A socket over a bound is
  closed (websocket code 1008, the reason in the server's log); its kernel lives on, and a reload
  opens a new page;
* nothing is kept for a socket that has gone (jupyter_server would keep every message a
  disconnected kernel sends, without limit, for a reconnection Voila never makes).

The server process then holds about 150 MB, plus at most ``max_backlog_bytes`` for each socket,
and the process tree stays under about
``150 MB + max_kernels × (kernel + connections_per_kernel × max_backlog_bytes)``: with the
defaults, 2 GB on Debian's kernel (tests/test_explorer_security.py holds it to its bound).

Two unbounded growths of the stock server are closed off on the way: Voila's websocket handler
reads the header of every binary message it sends as the v1 protocol does, and a legacy-protocol
binary message (a widget state with buffers, sent for one ``request_state``) gives it 8.6e17
offsets to list; jupyter_server reads a v1 message trusting its count of parts, and 8 bytes that
claim 2**62 parts make it list them. Either grows the server by tens of MB a second, its event
loop blocked, until it is killed. jupyter_server's ``iopub_msg_rate_limit`` bounds neither, nor a
flood: it counts only the kernel's output and starts again at every ``idle`` status, which the
kernel sends after each message.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, NamedTuple

import tornado.routing
import tornado.web
from jupyter_server.auth.identity import PasswordIdentityProvider
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.ioloop import IOLoop
from traitlets import Float, Integer, Unicode
from traitlets.config import Config
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from .explorer import ExplorerError, offline_voila_template

__all__ = ["serve_explorer", "ServerLimits", "explorer_url", "new_token", "host_allowed", "LOCAL_HOSTS",
           "ExplorerVoila", "ExplorerKernelManager", "BoundedKernelConnection", "TokenIdentityProvider",
           "TEMPLATE"]

#: Host names every server answers to (loopback IP literals are always allowed).
LOCAL_HOSTS = ("localhost",)

#: The Voila template :func:`serve_explorer` uses (written by ``offline_voila_template``).
TEMPLATE = "ksymgraph-offline"

#: The kernel websocket protocol the server speaks (jupyter_server's v1; the browser's pages offer it).
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"

#: Websocket close code for a connection over a bound (RFC 6455 §7.4.1: policy violation).
POLICY_VIOLATION = 1008


class ServerLimits(NamedTuple):
    """Bounds on what the pages and widget connections of one explorer server may take."""

    max_kernels: int = 4
    """Kernels at once, one per open page; the next page is refused (503) until one goes."""
    cull_after: int = 60
    """Seconds a kernel whose page has gone (no connection, idle) lives on before it is shut down."""
    connections_per_kernel: int = 2
    """Widget websockets per kernel (a page opens one)."""
    max_message_bytes: int = 256 * 1024
    """Largest widget message a page may send (a bigger one closes the connection: code 1009)."""
    messages_per_second: float = 200.0
    """Widget messages a connection may send per second, on average ..."""
    message_burst: int = 2000
    """... and at once (the explorer's page sends a dozen as it loads, and a page that asks for
    every widget's state one a widget: about 50)."""
    bytes_per_second: float = 1024 * 1024
    """Bytes of widget messages a connection may send per second, on average ..."""
    byte_burst: int = 4 * 1024 * 1024
    """... and at once."""
    max_backlog_bytes: int = 16 * 1024 * 1024
    """Bytes of replies the server holds for a connection that does not read them."""

    def check(self) -> None:
        """Raise :class:`~ksymgraph.explorer.ExplorerError` naming the first bound that is not positive."""
        for name, value in self._asdict().items():
            if value <= 0:
                raise ExplorerError(f"the explorer's {name.replace('_', '-')} must be positive, not {value}")


def new_token() -> str:
    """A fresh token for one server run: 32 random bytes, URL-safe base64 (as Jupyter's)."""
    return secrets.token_urlsafe(32)


def explorer_url(port: int, token: str, host: str = "127.0.0.1") -> str:
    """The URL to open: ``http://127.0.0.1:PORT/?token=TOKEN``."""
    return f"http://{host}:{port}/?token={token}"


def host_allowed(host: str, names: Iterable[str] = LOCAL_HOSTS) -> bool:
    """Whether a request's ``Host`` (``name``, ``name:port``, ``[v6]:port``) names this machine:
    a loopback IP address, or one of ``names`` (case-insensitive)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name in {n.lower() for n in names}


class _ForeignHost(tornado.routing.Matcher):
    """Matches the requests whose Host is not allowed."""

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)

    def match(self, request):
        return None if host_allowed(request.host or "", self.names) else {}


class _RefuseHost(tornado.web.RequestHandler):
    """Answers 403 to a request for a host name that is not this machine's."""

    def initialize(self, names: tuple[str, ...]):
        self.names = names

    def prepare(self):
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"403: this server answers to 127.0.0.1, ::1 and {', '.join(self.names)}, not to "
                    f"{self.request.host!r} (a page of another site reaching it under its own name?); "
                    "ksymgraph explore --allow-host NAME adds a name\n")


class _TokenRequired(tornado.web.RequestHandler):
    """The login page: a request without the token (or its cookie) ends here, with a 403."""

    def prepare(self):
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("403: this explorer needs its token: open the URL `ksymgraph explore` printed, "
                    "http://127.0.0.1:PORT/?token=...\n")


class TokenIdentityProvider(PasswordIdentityProvider):
    """Jupyter's token authentication (``?token=``, ``Authorization: token``, then a login cookie),
    without its login form: a request without the token is refused (403), not asked for one."""

    def get_handlers(self):
        return [(r"/login", _TokenRequired)]


_DEFAULT = ServerLimits()


class ExplorerKernelManager(AsyncMappingKernelManager):
    """Voila's kernel manager with a bound on the kernels: a page over it gets a 503."""

    max_kernels = Integer(_DEFAULT.max_kernels, config=True,
                          help="Kernels at once; the next page is refused until one goes.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting = 0

    async def start_kernel(self, *args, **kwargs):
        running = len(self.list_kernel_ids()) + self._starting
        if running >= self.max_kernels:
            self.log.warning("refused a page: %d kernels run, --max-kernels is %d", running, self.max_kernels)
            raise tornado.web.HTTPError(
                503, reason="Too many open pages",
                log_message=f"The explorer runs {running} kernels, one per open page, and its bound is "
                            f"{self.max_kernels} (ksymgraph explore --max-kernels). Close a page, or wait: "
                            f"the kernel of a closed page stops {self.cull_idle_timeout} s after it goes; "
                            "then reload.")
        self._starting += 1  # counted before the first await: pages that arrive together all count
        try:
            return await super().start_kernel(*args, **kwargs)
        finally:
            self._starting -= 1


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved; starts full."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst, self.level, self.stamp = rate, burst, burst, time.monotonic()

    def take(self, n: float) -> bool:
        """Take ``n`` tokens if there are that many."""
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.level:
            return False
        self.level -= n
        return True


#: Most parts a v1 message from a page may have: channel, header, parent header, metadata,
#: content, and buffers (ipywidgets sends a few at most).
MAX_MESSAGE_PARTS = 64


def v1_message_problem(message) -> str | None:
    """What is wrong with a websocket message of the v1 protocol, or None when it can be read.

    A v1 message is a count N (8 bytes, little-endian), N offsets (8 bytes each), then the parts
    they delimit: the channel, then the header, parent header, metadata, content and buffers.
    jupyter_server reads it (``deserialize_msg_from_ws_v1``) trusting the count: a message of 8
    bytes that claims 2**62 offsets makes it list them until the server is killed.
    """
    if not isinstance(message, bytes):
        return "a text message (the v1 protocol sends binary ones)"
    if len(message) < 8:
        return f"{len(message)} bytes, too short for a v1 message"
    count = int.from_bytes(message[:8], "little")
    if not 6 <= count <= MAX_MESSAGE_PARTS + 1:
        return f"{count} offsets (a v1 message has 6 to {MAX_MESSAGE_PARTS + 1})"
    if len(message) < 8 * (count + 1):
        return f"{count} offsets in {len(message)} bytes"
    offsets = [int.from_bytes(message[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] != 8 * (count + 1) or offsets[-1] > len(message) or any(map(int.__gt__, offsets, offsets[1:])):
        return "offsets out of order or past the end"
    return None


class BoundedKernelConnection(ZMQChannelsWebsocketConnection):
    """A widget websocket whose messages in, and unread replies out, are bounded (see the module)."""

    kernel_ws_protocol = Unicode(V1_PROTOCOL, allow_none=True)
    connections_per_kernel = Integer(_DEFAULT.connections_per_kernel, config=True, help="Websockets per kernel.")
    messages_per_second = Float(_DEFAULT.messages_per_second, config=True,
                                help="Messages a connection may send per second.")
    message_burst = Integer(_DEFAULT.message_burst, config=True, help="Messages a connection may send at once.")
    bytes_per_second = Float(_DEFAULT.bytes_per_second, config=True, help="Bytes a connection may send per second.")
    byte_burst = Integer(_DEFAULT.byte_burst, config=True, help="Bytes a connection may send at once.")
    max_backlog_bytes = Integer(_DEFAULT.max_backlog_bytes, config=True,
                                help="Bytes of replies held for a connection that does not read them.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._messages = _Bucket(self.messages_per_second, self.message_burst)
        self._bytes = _Bucket(self.bytes_per_second, self.byte_burst)
        self._backlog = 0
        self._refused = False

    async def prepare(self):
        """Refuse a websocket that does not offer the v1 protocol (400), or to a kernel that has
        ``connections_per_kernel`` already (503)."""
        offered = self.websocket_handler.request.headers.get("Sec-WebSocket-Protocol", "")
        if V1_PROTOCOL not in (p.strip() for p in offered.split(",")):
            # Voila's handler (voila/tornado/kernel_websocket_handler.py, 0.5.13) reads the header of
            # every binary message as v1 does: a binary message of the legacy protocol (a widget
            # state with buffers, e.g. an Image's, sent for one request_state) then gives it a count
            # of 8.6e17 offsets to list, and the server grows until it is killed.
            raise tornado.web.HTTPError(400, log_message=f"this server speaks only the {V1_PROTOCOL} websocket "
                                                         "protocol (Sec-WebSocket-Protocol), as JupyterLab's "
                                                         "and Voila's pages do")
        connections = self.multi_kernel_manager.kernel_model(self.kernel_id)["connections"]
        if connections >= self.connections_per_kernel:
            self.log.warning("refused a websocket to kernel %s: it has %d", self.kernel_id, connections)
            raise tornado.web.HTTPError(503, log_message=f"kernel {self.kernel_id} has {connections} connections "
                                                         f"already, the bound is {self.connections_per_kernel}")
        await super().prepare()

    def _refuse(self, why: str) -> None:
        """Close this connection for going over a bound; later messages either way are dropped."""
        if self._refused:
            return
        self._refused = True
        self.log.warning("closing the websocket to kernel %s: %s", self.kernel_id, why)
        self.websocket_handler.close(POLICY_VIOLATION, why[:120])

    def handle_incoming_message(self, incoming_msg) -> None:
        if self._refused:
            return
        if not self._messages.take(1):
            return self._refuse(f"more than {self.messages_per_second:g} messages a second "
                                f"(burst {self.message_burst})")
        if not self._bytes.take(len(incoming_msg)):
            return self._refuse(f"more than {self.bytes_per_second:g} bytes a second (burst {self.byte_burst})")
        problem = v1_message_problem(incoming_msg)
        if problem:
            return self._refuse(f"malformed message: {problem}")
        super().handle_incoming_message(incoming_msg)

    @property
    def write_message(self):
        """The websocket's ``write_message``, counting what is not flushed yet against the backlog."""
        return self._write_bounded

    def _write_bounded(self, message, binary: bool = False):
        if self._refused:
            return None
        size = len(message)  # bytes, or str of JSON that json.dumps kept ASCII
        if self._backlog + size > self.max_backlog_bytes:
            return self._refuse(f"{self._backlog + size} bytes of replies unread, more than {self.max_backlog_bytes}")
        done = self.websocket_handler.write_message(message, binary=binary)
        if done is not None:  # Voila's handler drops execute_input messages and returns None
            self._backlog += size
            done.add_done_callback(lambda f: self._flushed(size, f))
        return done

    def _flushed(self, size: int, future) -> None:
        self._backlog -= size
        if not future.cancelled():
            future.exception()  # a closed socket: nothing to do, but retrieved


class _PageHandler(TornadoVoilaHandler):
    """Voila's page, which also sets the ``_xsrf`` cookie: the page sends it back with the beacon
    that asks the server to shut its kernel down when it goes (``voila/api/shutdown``), and
    without it (Voila 0.5.13 sets none) jupyter_server refuses the beacon (403) and the kernel
    lives on."""

    async def prepare(self):
        await super().prepare()
        self.xsrf_token  # noqa: B018  (tornado sets the cookie when the token is first read)


class ExplorerVoila(Voila):
    """Voila with the Host check in front of every handler, a page that can shut its kernel down,
    and the URL printed once it listens."""

    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    max_message_bytes = _DEFAULT.max_message_bytes

    def init_settings(self):
        settings = super().init_settings()
        # Voila sets allow_remote_access=True; jupyter_server's own Host check (JupyterHandler.check_host)
        # then passes everything. Applied after Voila.tornado_settings, which start() merges last.
        ours = {"allow_remote_access": False, "local_hostnames": list(self.allowed_hosts),
                "websocket_max_message_size": self.max_message_bytes}
        self.tornado_settings = {**self.tornado_settings, **ours}
        return {**settings, **ours}

    def init_handlers(self):
        return [(route, _PageHandler, *rest) if handler is TornadoVoilaHandler else (route, handler, *rest)
                for route, handler, *rest in super().init_handlers()]

    def listen(self):
        # Voila's handlers match every host (".*$"); this rule goes before them, so that the static
        # files, the login page and the kernels' websockets all refuse a foreign Host alike.
        router = self.app.default_router
        router.add_rules([tornado.routing.Rule(_ForeignHost(self.allowed_hosts), _RefuseHost,
                                               {"names": self.allowed_hosts})])
        router.rules.insert(0, router.rules.pop())
        IOLoop.current().add_callback(self._announce)
        super().listen()

    def _announce(self):
        print(f"serving {self.notebook_path} at {explorer_url(self.port, self.identity_provider.token)} "
              "(Ctrl-C stops)", file=sys.stderr, flush=True)


def _jupyter_path() -> str:
    """JUPYTER_PATH for the server: the caller's, and, in a virtual environment made with
    --system-site-packages, the base Python's share/jupyter, where Voila's own templates and the
    widgets' JavaScript are when they were installed there."""
    parts = [os.environ.get("JUPYTER_PATH", "")]
    if sys.base_prefix != sys.prefix:
        parts.append(str(Path(sys.base_prefix) / "share" / "jupyter"))
    return os.pathsep.join(p for p in parts if p)


def serve_explorer(notebook: str | Path, *, port: int = 8866, token: str | None = None,
                   hosts: Iterable[str] = (), limits: ServerLimits = ServerLimits(),
                   env: dict[str, str | None] | None = None) -> None:
    """Serve ``notebook`` with Voila on 127.0.0.1:``port`` until interrupted (SIGINT or SIGTERM).

    ``token`` (default: :func:`new_token`) is required by every request; ``hosts`` are host names
    allowed besides localhost and the loopback addresses; ``limits`` bound kernels and widget
    connections; ``env`` is added to this process's environment, which the kernels inherit (a
    value of None removes that variable).
    The URL with the token is printed on stderr once the server listens. Voila's configuration
    files (``voila.json``, ``voila.py`` in the working directory) are not read: what is set here
    stays set.
    """
    limits.check()
    token = new_token() if token is None else token
    if not token:
        raise ExplorerError("the explorer's token must not be empty (give none for a random one)")
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    cfg = Config()
    cfg.Voila.ip = "127.0.0.1"
    cfg.Voila.port = port
    cfg.Voila.open_browser = False
    cfg.Voila.token = token
    cfg.Voila.identity_provider_class = TokenIdentityProvider
    cfg.Voila.config_file_paths = []
    cfg.VoilaConfiguration.template = TEMPLATE
    cfg.VoilaConfiguration.preheat_kernel = False  # a pool would hold kernels no page asked for
    cfg.VoilaConfiguration.multi_kernel_manager_class = ExplorerKernelManager
    cfg.Voila.kernel_websocket_connection_class = BoundedKernelConnection
    cfg.ExplorerKernelManager.max_kernels = limits.max_kernels
    cfg.ExplorerKernelManager.cull_idle_timeout = limits.cull_after
    cfg.ExplorerKernelManager.cull_interval = max(1, limits.cull_after // 4)
    cfg.ExplorerKernelManager.cull_connected = False  # an open page keeps its kernel
    cfg.ExplorerKernelManager.buffer_offline_messages = False
    for name in ("connections_per_kernel", "messages_per_second", "message_burst", "bytes_per_second",
                 "byte_burst", "max_backlog_bytes"):
        setattr(cfg.BoundedKernelConnection, name, getattr(limits, name))
    with tempfile.TemporaryDirectory(prefix="ksymgraph-explore-") as tmp:
        os.environ["JUPYTER_PATH"] = _jupyter_path()  # where offline_voila_template finds Voila's lab template
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(offline_voila_template(tmp)), os.environ["JUPYTER_PATH"]) if p)
        app = ExplorerVoila(config=cfg)
        app.allowed_hosts = (*LOCAL_HOSTS, *(h.lower() for h in hosts))
        app.max_message_bytes = limits.max_message_bytes
        app.initialize([str(notebook)])
        app.start()
