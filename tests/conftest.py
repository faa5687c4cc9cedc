"""Shared fixtures: live servers in both transports and a uniform HTTP client.

``live_server(app, transport, **start_options)`` runs a real server on
127.0.0.1 with a free port in a background thread; ``serve`` is the fixture
form.  ``make_client`` is parametrized over ``dispatch`` (TestClient, no
socket), ``threaded`` and ``asyncio`` so one test covers every front end.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from simple_http_server.app import App
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server
from simple_http_server.testing import TestClient

TRANSPORTS = ["threaded", "asyncio"]
FRONT_ENDS = ["dispatch", "threaded", "asyncio"]


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

    def __init__(self, front_end: str, test_client: TestClient | None, live: LiveServer | None):
        self.front_end = front_end
        self._test_client = test_client
        self._live = live
        self.cookies: dict[str, str] = {}

    @property
    def live(self) -> LiveServer:
        assert self._live is not None, "no live server in dispatch mode"
        return self._live

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
            reply = Reply(r.status_code, dict(r.headers), r.header_list, r.content)
        else:
            conn = self.live.connection()
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
    front_end = str(request.param)
    stack = contextlib.ExitStack()

    def make(app: App, resources: dict[str, str] | None = None, **config: Any) -> UniformClient:
        if front_end == "dispatch":
            settings = ServerConfig().with_changes(**config)
            return UniformClient(front_end, TestClient(app, resources, settings), None)
        live = stack.enter_context(live_server(app, front_end, resources, **config))
        return UniformClient(front_end, None, live)

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
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
