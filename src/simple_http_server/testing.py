"""``TestClient``: drive an app through the dispatch layer, with no socket.

    from simple_http_server.testing import TestClient

    client = TestClient(app)
    response = client.get("/hello", params={"name": "you"})
    assert response.status_code == 200 and response.json() == {...}

Cookies set by responses are kept and sent with later requests, so sessions
work as they do in a browser.  Requests and answers go through the servers' own
HTTP protocol object (``protocol/http11.py``): the same limits (``max_head_size``),
the same 400s for what h11 refuses, the same framing and ``Connection`` headers.
A websocket handshake is told apart by the servers' own test
(``transport/ws_glue.py:wants_websocket``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import email.utils
import http.cookies
import json as _json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, urlencode

import multipart

from . import logger as _logging
from .app import App, default_app
from .config import ServerConfig
from .dispatch.channel import Channel, ClientGone, HeaderLines
from .dispatch.dispatcher import Dispatcher, request_line
from .dispatch.invoke import LoopHelper, help_while_waiting, in_event_loop, run_sync
from .errors import HttpError
from .models import Headers, Request, SessionFactory
from .protocol import http11
from .protocol.http11 import HttpConnection, reason_phrase
from .transport.common import new_connection, request_from_head
from .transport.ws_glue import wants_websocket
from .transport.ws_memory import (
    DEFLATE_OFFER,
    TestWebsocket,
    WebsocketRejected,
    open_websocket,
    response_head,
)

__all__ = ["RequestOptions", "TestClient", "TestResponse"]

if TYPE_CHECKING:
    from typing_extensions import Unpack


class RequestOptions(TypedDict, total=False):
    """The keyword options of :meth:`TestClient.request`, taken by ``get``, ``post``..."""

    params: Mapping[str, Any] | None
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None
    body: bytes | str
    json: Any
    data: Mapping[str, Any] | None
    files: Mapping[str, Any] | None
    cookies: Mapping[str, str] | None


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_log = _logging.get_logger("simple_http_server.testing")


class TestResponse:
    """A response received by :class:`TestClient`."""

    __test__ = False

    def __init__(
        self,
        status_code: int,
        headers: list[tuple[str, str]],
        content: bytes,
        truncated: bool = False,
    ) -> None:
        self.status_code = status_code
        #: True when the server cut the answer short (a controller failed after its
        #: streamed answer started): ``content`` is what was sent before the cut.
        self.truncated = truncated
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
    """One exchange through a server-side :class:`HttpConnection` fed the whole
    request: the answer is what a real server would write (its head parsed back)."""

    def __init__(self, http: HttpConnection) -> None:
        self.http = http
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.parts: list[bytes] = []
        self.ended = False

    async def receive(self) -> bytes:
        event = self.http.next_event()
        kind = type(event)
        if kind is http11.BodyChunk:
            return event.data  # type: ignore[union-attr]
        if kind is http11.EndOfRequest:
            return b""
        if kind is http11.ProtocolFailure:
            raise HttpError(event.status, "", "The request body is malformed.")  # type: ignore[union-attr]
        if event is http11.NEED_DATA:  # all was sent: a server would wait, then answer 408
            self.http.close_after_response()
            raise HttpError(408, "", "The request body was not sent in time.")
        raise ClientGone("connection closed while reading the body")

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self.status, self.headers, _ = response_head(self.http.send_head(status, headers))

    async def send_data(self, data: bytes) -> None:
        if self.http.send_body(data):  # nothing for HEAD, 204, 304
            self.parts.append(data)

    async def send_end(self) -> None:
        self.http.send_end()
        self.ended = True

    def close_after_response(self) -> None:
        self.http.close_after_response()

    def answer_error(self, status: int) -> None:
        """The transports' own error answer (e.g. a 400 or 431 for a request h11
        refused), if nothing was sent yet."""
        data = self.http.send_error(status)
        if data:
            self.status, self.headers, body = response_head(data)
            self.parts.append(body)
            self.ended = True

    def response(self) -> TestResponse:
        """What a client read: the answer, marked truncated when it was cut short."""
        return TestResponse(self.status, self.headers, b"".join(self.parts), not self.ended)


def _text_bytes(text: str) -> bytes:
    """Header text as a client sends it: latin-1, else UTF-8 (read back as latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _expired(morsel: http.cookies.Morsel[str]) -> bool:
    """A ``Set-Cookie`` that deletes its cookie, as browsers read it (RFC 6265 5.2.1,
    5.2.2, 5.3): ``Max-Age`` of 0 or less, else an ``Expires`` date in the past
    (``Max-Age`` wins; a malformed one is ignored)."""
    max_age = str(morsel["max-age"]).strip()
    if re.fullmatch(r"-?[0-9]+", max_age):
        return int(max_age) <= 0
    expires = str(morsel["expires"])
    if not expires:
        return False
    try:
        when = email.utils.parsedate_to_datetime(expires)
    except (TypeError, ValueError, OverflowError):  # unreadable: ignored, as browsers do
        return False
    if when.tzinfo is None:  # a cookie date is GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp() <= time.time()


def _pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Iterable[Any]:
    """``(name, value)`` pairs of a mapping or of an iterable of pairs."""
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def _wire_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A request line and header block as written on the wire.

    Non-ASCII characters of the target are percent-encoded (UTF-8), as HTTP
    clients do; anything else (a space, a control character, a bad header name)
    is sent as given, for the server's checks.  CR and LF cannot be sent.
    """
    lines = [(method, _NON_ASCII.sub(lambda m: quote(m[0]), target))]
    # A None value sends no header, as requests does, and as response headers go.
    lines += [(str(name), str(value)) for name, value in headers if value is not None]
    for name, value in lines:
        if any(c in f"{name}{value}" for c in "\r\n"):
            raise ValueError(f"CR or LF cannot be sent in a request head: {name!r}: {value!r}")
    out = [_text_bytes(f"{method} {lines[0][1]} HTTP/1.1")]
    out += [_text_bytes(name) + b": " + _text_bytes(value) for name, value in lines[1:]]
    return b"\r\n".join(out) + b"\r\n\r\n"


def _multipart(data: Mapping[str, Any], files: Mapping[str, Any]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body as browsers write one: names and file names
    quoted as HTML5 says (``"``, CR and LF percent-encoded), text as UTF-8."""
    boundary = "shs" + secrets.token_hex(12)
    quote_name = multipart.content_disposition_quote
    out: list[bytes] = []
    for key, value in data.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            out.append(
                f"--{boundary}\r\nContent-Disposition: form-data; name={quote_name(str(key))}"
                "\r\n\r\n".encode()
                + (bytes(item) if isinstance(item, bytes | bytearray) else str(item).encode())
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
                f"--{boundary}\r\nContent-Disposition: form-data; name={quote_name(str(key))}; "
                f"filename={quote_name(str(filename))}\r\nContent-Type: {ctype}\r\n\r\n"
            ).encode()
            + content
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _serve(dispatcher: Dispatcher, request: Request, channel: _MemoryChannel) -> None:
    """Serve in this thread, as a threaded-transport worker does: while it waits for
    async code, it runs the sync code that code calls.  A failure the dispatcher lets
    out is handled as the transports do: the connection is dropped (the answer stays
    as far as it went), an error is logged and a 500 sent if nothing was."""
    previous = help_while_waiting(None)
    help_while_waiting(previous or LoopHelper())
    try:
        run_sync(dispatcher.handle(request, channel))
    except ClientGone:
        if not channel.status:  # the servers close without an answer: no response to return
            raise
    except Exception:
        _log.exception("Error while sending the response to %s", request_line(request))
        channel.answer_error(500)
    finally:
        help_while_waiting(previous)


def _exchange(dispatcher: Dispatcher, data: bytes) -> TestResponse | TestWebsocket:
    """Feed a whole request to a new server-side connection and answer it as the servers
    do: a websocket handshake (the open websocket, or the refusal) or an HTTP answer."""
    http = new_connection(dispatcher.config)
    http.receive_data(data)
    channel = _MemoryChannel(http)
    head = http.next_event()
    if not isinstance(head, http11.RequestHead):
        channel.answer_error(head.status if isinstance(head, http11.ProtocolFailure) else 400)
        return channel.response()
    if wants_websocket(head):  # the servers' own decision
        try:
            return open_websocket(dispatcher.app, dispatcher.config, http, head)
        except WebsocketRejected as rejected:
            return TestResponse(rejected.status_code, rejected.headers, rejected.body)
    request = request_from_head(head, False)
    if in_event_loop():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(_serve, dispatcher, request, channel).result()
    else:
        _serve(dispatcher, request, channel)
    return channel.response()


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
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> TestResponse:
        """Send one request and return the response.

        ``headers`` is a mapping, or ``(name, value)`` pairs to send a name twice."""
        header_lines = list(_pairs(headers))
        given = {name.lower() for name, _ in header_lines}

        def default(name: str, value: str) -> None:  # header names are case-insensitive
            if name.lower() not in given:
                header_lines.append((name, value))

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
        if body and "transfer-encoding" not in given:  # else the body is framed as given
            default("Content-Length", str(len(body)))
        self._add_cookies(default, cookies)
        default("Host", "testserver")
        target = path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        head = _wire_head(method.upper(), target, header_lines)
        answer = _exchange(self.dispatcher, head + body)
        if isinstance(answer, TestWebsocket):  # a websocket handshake the app accepted
            answer._disconnect()  # this client goes away after the 101
            answer = TestResponse(answer.status_code, answer.header_list, b"")
        self._remember_all(answer.header_list)
        return answer

    def _add_cookies(self, default: Any, cookies: Mapping[str, str] | None) -> None:
        """The jar's cookies and ``cookies`` in one ``Cookie`` header (unless one was given).

        The jar's go as they were set (``a="x\\073y"`` stays quoted, as browsers send it);
        ``cookies`` as given."""
        jar = {k: m.coded_value for k, m in self.cookies.items()}
        jar.update(cookies or {})
        if jar:
            default("Cookie", "; ".join(f"{k}={v}" for k, v in jar.items()))

    def _remember_all(self, headers: list[tuple[str, str]]) -> None:
        for name, value in headers:
            if name.lower() == "set-cookie":
                self._remember(value)

    def _remember(self, set_cookie: str) -> None:
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            jar.load(set_cookie)
        except http.cookies.CookieError:
            return
        for key, morsel in jar.items():
            if morsel.value == "" or _expired(morsel):
                self.cookies.pop(key, None)
            else:  # the value as coded on the wire, sent back so; read as the decoded one
                kept: http.cookies.Morsel[str] = http.cookies.Morsel()
                kept.set(key, morsel.value, morsel.coded_value)
                self.cookies[key] = kept

    def get(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``GET path``."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``HEAD path``."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``POST path``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``PUT path``."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``PATCH path``."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``DELETE path``."""
        return self.request("DELETE", path, **kwargs)

    def options(self, path: str, **kwargs: Unpack[RequestOptions]) -> TestResponse:
        """``OPTIONS path``."""
        return self.request("OPTIONS", path, **kwargs)

    def websocket_connect(
        self,
        path: str,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        compress: bool = False,
    ) -> TestWebsocket:
        """Open an in-memory websocket to the app's handler for ``path``.

        The upgrade request carries the jar's cookies (and ``cookies``) as
        ``request()`` does; ``headers`` replace the handshake's own of the same
        name.  ``compress=True`` offers permessage-deflate as browsers do (an offer
        in ``headers`` is made as given); the servers' negotiation answers it, and
        messages then go compressed both ways (``TestWebsocket.compressed``).
        Returns a ``TestWebsocket`` (a context manager with ``send_text``,
        ``send_bytes``, ``receive_text``, ``receive_bytes``, ``close``..., and the
        answer's ``headers`` and ``subprotocol``); raises ``WebsocketRejected``
        (``status_code``, ``headers``, ``body``) when the handshake is refused.
        See ``transport/ws_memory.py``.
        """
        header_map = dict(headers or {})
        given = {name.lower() for name in header_map}

        def default(name: str, value: str) -> None:
            if name.lower() not in given:
                header_map[name] = value

        default("Host", "testserver")
        default("Upgrade", "websocket")
        default("Connection", "Upgrade")
        default("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode())
        default("Sec-WebSocket-Version", "13")
        if compress:
            default("Sec-WebSocket-Extensions", DEFLATE_OFFER)
        self._add_cookies(default, cookies)
        head = _wire_head("GET", path, header_map.items())
        answer = _exchange(self.dispatcher, head)
        self._remember_all(answer.header_list)
        if isinstance(answer, TestResponse):  # refused, or answered as plain HTTP
            raise WebsocketRejected(answer.status_code, answer.header_list, answer.content)
        return answer
