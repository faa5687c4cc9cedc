"""Shared fixtures: live servers in both transports and a uniform HTTP client.

``live_server(app, transport, **start_options)`` runs a real server on
127.0.0.1 with a free port in a background thread; ``serve`` is the fixture
form.  ``make_client`` is parametrized over ``dispatch`` (TestClient, no
socket), ``threaded`` and ``asyncio`` so one test covers every front end;
``make_any_client`` adds ``wsgi`` (a threaded wsgiref) and ``asgi`` (uvicorn),
both in this process (``wsgi_server``, ``asgi_server``).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from simple_http_server.app import App
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server, init_asgi_proxy, init_wsgi_proxy
from simple_http_server.testing import TestClient

TRANSPORTS = ["threaded", "asyncio"]
FRONT_ENDS = ["dispatch", "threaded", "asyncio"]
ALL_FRONT_ENDS = ["dispatch", "threaded", "asyncio", "wsgi", "asgi"]


@dataclass
class LiveServer:
    """A running server: its address and the objects behind it."""

    server: Server
    transport: str
    thread: threading.Thread
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        scheme = "https" if self.server.config.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "server thread did not stop"


@contextlib.contextmanager
def live_server(
    app: App,
    transport: str = "threaded",
    resources: dict[str, str] | None = None,
    listener: Any = None,
    **config: Any,
) -> Iterator[LiveServer]:
    """Run ``app`` on 127.0.0.1:<free port> with ``transport`` until the block ends
    (on ``listener``, a listening socket of the test's, when given)."""
    settings = ServerConfig(host="127.0.0.1", port=0).with_changes(**config)
    server = Server(app, settings, resources, prefer_coroutine=transport == "asyncio")
    if listener is not None:
        server.sock = listener
        server.port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"live-{transport}", daemon=True)
    thread.start()
    for _ in range(1000):
        if server.is_ready() or errors or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    if errors:
        raise errors[0]
    assert server.is_ready(), "server did not become ready"
    live = LiveServer(server, transport, thread)
    try:
        yield live
    finally:
        live.stop()


@dataclass
class Address:
    """Where a WSGI or ASGI server of this process listens."""

    port: int
    host: str = "127.0.0.1"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def wsgi_server(proxy: Any) -> Iterator[Address]:
    """Serve the WSGI app ``proxy`` with wsgiref (a thread per request) on a free port."""
    httpd = make_server(
        "127.0.0.1", 0, proxy, server_class=_ThreadingWSGIServer, handler_class=_QuietWSGIHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Address(int(httpd.server_address[1]))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@contextlib.contextmanager
def asgi_server(proxy: Any, **options: Any) -> Iterator[Address]:
    """Serve the ASGI app ``proxy`` with a real uvicorn (wsproto) in a thread of this
    process, on a socket bound here (``options``: more ``uvicorn.Config`` settings)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        proxy, ws="wsproto", lifespan="off", log_level="warning", timeout_graceful_shutdown=1,
        **options,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield Address(int(sock.getsockname()[1]))
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each real transport in turn."""
    return str(request.param)


@pytest.fixture
def serve(transport: str) -> Iterator[Callable[..., LiveServer]]:
    """``serve(app, resources=None, **config)`` starts a live server in the current transport."""
    stack = contextlib.ExitStack()

    def start(app: App, resources: dict[str, str] | None = None, **config: Any) -> LiveServer:
        return stack.enter_context(live_server(app, transport, resources, **config))

    with stack:
        yield start


@dataclass
class Reply:
    """A response seen by :class:`UniformClient`, whatever the front end."""

    status: int
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.header_list:
            if key.lower() == lower:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.header_list if k.lower() == lower]


class UniformClient:
    """The same request API over the TestClient or a real socket (http.client)."""

    def __init__(
        self, front_end: str, test_client: TestClient | None, live: LiveServer | Address | None
    ):
        self.front_end = front_end
        self._test_client = test_client
        self._live = live
        self.cookies: dict[str, str] = {}

    @property
    def live(self) -> LiveServer:
        assert isinstance(self._live, LiveServer), "no live server of ours in this mode"
        return self._live

    @property
    def address(self) -> LiveServer | Address | None:
        """Where the server listens (ours, wsgiref or uvicorn); None for the TestClient."""
        return self._live

    @property
    def test_client(self) -> TestClient | None:
        """The TestClient in the ``dispatch`` mode, else None."""
        return self._test_client

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
    ) -> Reply:
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
        if self.cookies and "Cookie" not in headers:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self._test_client is not None:
            self._test_client.cookies.clear()
            r = self._test_client.request(method, path, headers=headers, body=body)
            if r.truncated:  # as http.client reads a body cut short
                raise http.client.IncompleteRead(r.content)
            reply = Reply(r.status_code, dict(r.headers), r.header_list, r.content)
        else:
            assert self._live is not None
            conn = self._live.connection()
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                pairs = list(resp.getheaders())
                reply = Reply(resp.status, {k: v for k, v in pairs}, pairs, data)
            finally:
                conn.close()
        for value in reply.get_all("Set-Cookie"):
            name, _, rest = value.partition("=")
            val = rest.partition(";")[0]
            if "Max-Age=0" in value or not val:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = val
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Reply:
        return self.request("POST", path, **kwargs)


@pytest.fixture(params=FRONT_ENDS)
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., UniformClient]]:
    """``make_client(app, resources=None, **config)`` in each front end in turn."""
    yield from _client_maker(str(request.param))


@pytest.fixture(params=ALL_FRONT_ENDS)
def make_any_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., UniformClient]]:
    """``make_any_client(app, resources=None, **config)`` in each front end in turn:
    ``make_client``'s three, then WSGI (wsgiref) and ASGI (uvicorn)."""
    yield from _client_maker(str(request.param))


def _client_maker(front_end: str) -> Iterator[Callable[..., UniformClient]]:
    """A ``make(app, resources=None, **config)`` for ``front_end``, until the test ends."""
    stack = contextlib.ExitStack()

    def make(app: App, resources: dict[str, str] | None = None, **config: Any) -> UniformClient:
        if front_end == "dispatch":
            settings = ServerConfig().with_changes(**config)
            return UniformClient(front_end, TestClient(app, resources, settings), None)
        if front_end in TRANSPORTS:
            live = stack.enter_context(live_server(app, front_end, resources, **config))
            return UniformClient(front_end, None, live)
        if front_end == "wsgi":
            proxy = init_wsgi_proxy(resources=resources, app_conf=app, **config)
            return UniformClient(front_end, None, stack.enter_context(wsgi_server(proxy)))
        proxy = init_asgi_proxy(resources=resources, app_conf=app, **config)
        return UniformClient(front_end, None, stack.enter_context(asgi_server(proxy)))

    with stack:
        yield make


def small_send_buffer_listener(sndbuf: int = 16384) -> socket.socket:
    """A listening socket on 127.0.0.1 for ``serve(..., listener=...)`` whose accepted
    sockets inherit a small ``SO_SNDBUF``: what a client has not read then stays mostly
    in the server's own buffers, not the kernel's."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


class LogRecords(logging.Handler):
    """Keeps every record the framework logs (``logger.add_handler(LogRecords())``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []

    @property
    def records(self) -> list[logging.LogRecord]:
        """What was logged so far: the framework's log queue is flushed first (its
        records reach handlers from a thread of their own, a moment later)."""
        from simple_http_server import logger

        logger.flush()
        return self._records

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)


@pytest.fixture
def log_records() -> Iterator[LogRecords]:
    """Every record the framework logs while the test runs."""
    from simple_http_server import logger

    handler = LogRecords()
    logger.add_handler(handler)
    try:
        yield handler
    finally:
        logger.remove_handler(handler)


@contextlib.contextmanager
def ws_server(kind: str, app: App) -> Iterator[int]:
    """The port of ``app`` in our ``threaded`` or ``asyncio`` transport or under uvicorn
    (``asgi``), keepalive pings off."""
    if kind == "asgi":
        with asgi_server(init_asgi_proxy(app_conf=app)) as address:
            yield address.port
    else:
        with live_server(app, kind, websocket_ping_interval=0) as live:
            yield live.port
