"""``TestClient``: drive an app through the dispatch layer, with no socket.

    from simple_http_server.testing import TestClient

    client = TestClient(app)
    response = client.get("/hello", params={"name": "you"})
    assert response.status_code == 200 and response.json() == {...}

Cookies set by responses are kept and sent with later requests, so sessions
work as they do in a browser.
"""

from __future__ import annotations

import concurrent.futures
import http.cookies
import json as _json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from .app import App, default_app
from .config import ServerConfig
from .dispatch.channel import Channel, HeaderLines
from .dispatch.dispatcher import Dispatcher, make_request
from .dispatch.invoke import LoopHelper, help_while_waiting, in_event_loop, run_sync
from .models import Headers, Request, SessionFactory
from .protocol.http11 import reason_phrase

__all__ = ["TestClient", "TestResponse"]

_CHUNK = 64 * 1024


class TestResponse:
    """A response received by :class:`TestClient`."""

    __test__ = False

    def __init__(self, status_code: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = status_code
        self.header_list = headers
        self.headers = Headers()
        for name, value in headers:
            if name in self.headers:
                self.headers[name] = f"{self.headers[name]}, {value}"
            else:
                self.headers[name] = value
        self.content = content

    @property
    def status(self) -> int:
        """Alias of ``status_code``."""
        return self.status_code

    @property
    def reason(self) -> str:
        """The standard reason phrase."""
        return reason_phrase(self.status_code).decode()

    @property
    def body(self) -> bytes:
        """Alias of ``content``."""
        return self.content

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.content)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (e.g. several ``Set-Cookie``)."""
        lower = name.lower()
        return [v for k, v in self.header_list if k.lower() == lower]


class _MemoryChannel(Channel):
    def __init__(self, body: bytes, head: bool = False) -> None:
        self._body = body
        self._head = head
        self._pos = 0
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.ended = False

    async def receive(self) -> bytes:
        chunk = self._body[self._pos : self._pos + _CHUNK]
        self._pos += len(chunk)
        return chunk

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self.status = status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]

    async def send_data(self, data: bytes) -> None:
        if not self._head:
            self.parts.append(data)

    async def send_end(self) -> None:
        self.ended = True


def _multipart(data: Mapping[str, Any], files: Mapping[str, Any]) -> tuple[bytes, str]:
    boundary = "shs" + secrets.token_hex(12)
    out: list[bytes] = []
    for key, value in data.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            out.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
                + str(item).encode()
                + b"\r\n"
            )
    for key, value in files.items():
        filename, content, ctype = (*tuple(value), "application/octet-stream")[:3]
        if isinstance(content, str):
            content = content.encode()
        elif hasattr(content, "read"):
            content = content.read()
        out.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; '
                f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _serve(dispatcher: Dispatcher, request: Request, channel: _MemoryChannel) -> None:
    """Serve in this thread, as a threaded-transport worker does: while it waits for
    async code, it runs the sync code that code calls."""
    previous = help_while_waiting(None)
    help_while_waiting(previous or LoopHelper())
    try:
        run_sync(dispatcher.handle(request, channel))
    finally:
        help_while_waiting(previous)


class TestClient:
    """Sends requests straight to the dispatcher of an app.

    Args:
        app: the app to test (the default app when None).
        resources: static mounts, as for ``server.start``.
        config: settings (limits...), as for ``server.start``.
        session_factory: a session factory to use instead of the app's.
    """

    __test__ = False

    def __init__(
        self,
        app: App | None = None,
        resources: Mapping[str, str] | None = None,
        config: ServerConfig | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.app = app if app is not None else default_app()
        self.dispatcher = Dispatcher(self.app, config or ServerConfig(), resources, session_factory)
        self.cookies: http.cookies.SimpleCookie = http.cookies.SimpleCookie()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> TestResponse:
        """Send one request and return the response."""
        header_map = dict(headers or {})
        given = {name.lower() for name in header_map}

        def default(name: str, value: str) -> None:  # header names are case-insensitive
            if name.lower() not in given:
                header_map[name] = value

        if isinstance(body, str):
            body = body.encode("utf-8")
        if json is not None:
            body = _json.dumps(json).encode("utf-8")
            default("Content-Type", "application/json")
        elif files:
            body, ctype = _multipart(data or {}, files)
            default("Content-Type", ctype)
        elif data is not None:
            body = urlencode(data, doseq=True).encode()
            default("Content-Type", "application/x-www-form-urlencoded")
        if body:
            default("Content-Length", str(len(body)))
        jar = {k: m.value for k, m in self.cookies.items()}
        jar.update(cookies or {})
        if jar:
            default("Cookie", "; ".join(f"{k}={v}" for k, v in jar.items()))
        default("Host", "testserver")
        target = path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        request = make_request(method.upper(), target, list(header_map.items()))
        channel = _MemoryChannel(body, request.method == "HEAD")
        if in_event_loop():
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(_serve, self.dispatcher, request, channel).result()
        else:
            _serve(self.dispatcher, request, channel)
        response = TestResponse(channel.status, channel.headers, b"".join(channel.parts))
        for value in response.get_all("Set-Cookie"):
            self._remember(value)
        return response

    def _remember(self, set_cookie: str) -> None:
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            jar.load(set_cookie)
        except http.cookies.CookieError:
            return
        for key, morsel in jar.items():
            if morsel["max-age"] == "0" or morsel.value == "":
                self.cookies.pop(key, None)
            else:
                self.cookies[key] = morsel.value

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """``GET path``."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> TestResponse:
        """``HEAD path``."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        """``POST path``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        """``PUT path``."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        """``PATCH path``."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """``DELETE path``."""
        return self.request("DELETE", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> TestResponse:
        """``OPTIONS path``."""
        return self.request("OPTIONS", path, **kwargs)

    def websocket_connect(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        """Open an in-memory websocket to the app's handler for ``path``.

        Returns a ``TestWebsocket`` (a context manager with ``send_text``,
        ``send_bytes``, ``receive_text``, ``receive_bytes``, ``close``...);
        raises ``WebsocketRejected`` (with ``status_code``) when the handshake
        is refused.  See ``transport/ws_memory.py``.
        """
        from .transport.ws_memory import connect

        return connect(self.app, self.dispatcher.config, path, headers)
