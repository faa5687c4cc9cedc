"""The dispatch layer behind any ASGI 3 server: uvicorn, hypercorn, granian...

``ASGIProxy(dispatcher)`` is an ASGI 3 application for the ``http``,
``websocket`` and ``lifespan`` scopes.  Request bodies are pulled from
``receive`` as the dispatcher asks for them (with or without
``Content-Length``); responses are pushed to ``send`` as they are produced,
so both directions stream.  A client that disconnects stops a streamed
response at its next chunk.  This module holds no socket and parses no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import logger as _logging
from ..dispatch.channel import (
    Channel,
    HeaderLines,
    encode_headers,
    sends_no_body,
    with_content_length,
)
from ..dispatch.dispatcher import Dispatcher, make_request, request_line
from ..dispatch.invoke import SyncPool, reset_pool, use_pool
from ..dispatch.routing import PATH_SAFE
from ..errors import HttpError
from ..transport.common import BodyPace, ClientGone, backlog_exceeded

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = ["ASGIProxy", "send_within"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = _logging.get_logger("simple_http_server.asgi")
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailers"}
)
#: Left out too: uvicorn sends its own ``Date`` whatever the app's headers,
#: and a second one is invalid (RFC 9110 5.3, 6.6.1: a singleton field).
_LEFT_OUT = _HOP_BY_HOP | {b"date"}
#: Under HTTP/1.x, ends the connection after a 408 (uvicorn keeps it otherwise).
_CLOSE = (b"connection", b"close")
_TOO_SLOW = "The request body is arriving too slowly."
_LATE = "The request body was not sent in time."
#: Most body bytes handed to the ASGI server in one ``send``: each send must be
#: taken within ``body_timeout``, so a large piece goes in slices and the bound
#: catches a stalled client, never a slow one that keeps reading.
SEND_SLICE = 64 * 1024


if sys.version_info >= (3, 11):

    async def send_within(send: Send, message: Message, timeout: float) -> None:
        """``await send(message)``; ``TimeoutError`` when it takes over ``timeout``
        seconds (a deadline on the running task: no task per message)."""
        async with asyncio.timeout(timeout):
            await send(message)

    async def _receive_within(receive: Receive, timeout: float) -> Message:
        """``await receive()``; ``TimeoutError`` when it takes over ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await receive()

else:  # pragma: no cover - Python 3.10

    async def send_within(send: Send, message: Message, timeout: float) -> None:
        """``await send(message)``; ``TimeoutError`` when it takes over ``timeout`` seconds."""
        await asyncio.wait_for(send(message), timeout)

    async def _receive_within(receive: Receive, timeout: float) -> Message:
        """``await receive()``; ``TimeoutError`` when it takes over ``timeout`` seconds."""
        return await asyncio.wait_for(receive(), timeout)


def request_target(scope: Scope) -> str:
    """The undecoded request target of an ``http`` or ``websocket`` scope, below
    its ``root_path`` (routes are the app's own paths, as under WSGI's ``SCRIPT_NAME``)."""
    raw = scope.get("raw_path")
    root = str(scope.get("root_path") or "").rstrip("/")
    decoded = str(scope.get("path") or "/")
    if raw:
        path = bytes(raw).decode("latin-1").partition("?")[0]  # some keep the query there
        if root:
            rest = _below(path, quote(root.encode("utf-8", "surrogateescape"), safe=PATH_SAFE))
            if rest is not None:
                path = rest
            elif (rest := _below(decoded, root)) is not None:  # the root spelled otherwise
                path = quote(rest.encode("utf-8", "surrogateescape"), safe=PATH_SAFE)
    else:
        rest = _below(decoded, root) if root else None
        # A server that decodes the path with surrogateescape: its raw bytes as sent.
        path = quote(
            (decoded if rest is None else rest).encode("utf-8", "surrogateescape"), safe=PATH_SAFE
        )
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _below(path: str, root: str) -> str | None:
    """``path`` without its leading ``root`` segments; None when it does not start
    with them.  ASGI servers include ``root_path`` in ``path`` and ``raw_path``
    (uvicorn >= 0.26, Starlette's ``Mount``); older ones gave ``path`` without it."""
    if not path.startswith(root):
        return None
    rest = path[len(root) :]
    if not rest:
        return "/"
    return rest if rest[0] == "/" or _not_a_path(rest) else None


def _not_a_path(target: str) -> bool:
    """``*`` (``OPTIONS *``) or an absolute-form target (``http://host/path``), which
    uvicorn glues behind its ``--root-path`` as it does a path."""
    return target == "*" or target[:8].lower().startswith(("http://", "https://"))


def asgi_headers(headers: HeaderLines) -> list[tuple[bytes, bytes]]:
    """Response header lines for ASGI: lower-case names, no hop-by-hop headers and no
    ``Date`` (the ASGI server sends its own)."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower not in _LEFT_OUT:
            out.append((lower, value))
    return out


def _declares_body(headers: Any) -> bool:
    """The request says a body follows: ``Transfer-Encoding``, or a ``Content-Length``
    above zero (``00`` is none, as the dispatcher reads it: nobody reads that body,
    and a disconnect must still be watched for)."""
    for name, value in headers:
        lower = bytes(name).lower()
        if lower == b"transfer-encoding":
            return True
        if lower == b"content-length":
            try:
                return int(value) > 0
            except ValueError:
                return True
    return False


class _ASGIChannel(Channel):
    """Pulls the body from ``receive``, pushes the response into ``send``."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, config: ServerConfig) -> None:
        self._receive = receive
        self._send = send
        #: Longest the ASGI server may hold one ``send`` (its backpressure for a client
        #: that stopped reading) before the response is abandoned: ``body_timeout``.
        self._send_timeout = config.body_timeout
        #: Most bytes coroutines' writes may leave waiting in chained sends.
        self._backlog = config.limits.max_send_backlog
        #: ``body_timeout`` and ``min_body_rate`` for the request body, from the request:
        #: the ASGI server bounds neither (uvicorn waits for a stalled body forever).
        self._pace = BodyPace(config)
        self._closing = False  # the answer says ``Connection: close`` (HTTP/1.x only)
        self._held = 0
        self.secure = scope.get("scheme") in ("https", "wss")
        client = scope.get("client")
        self.peer = (str(client[0]), int(client[1])) if client else None
        self.method = str(scope.get("method") or "GET")
        self.is_head = self.method == "HEAD"
        #: The answer sent carries no body (HEAD, 204, 304): the head is all of it.
        self.bodyless = self.is_head
        # HTTP/2 and 3 frame bodies themselves: no Content-Length is needed.
        self.unframed_body = not str(scope.get("http_version") or "1.1").startswith("1")
        self._http1 = not self.unframed_body
        self.expects_body = self.unframed_body or _declares_body(scope.get("headers") or ())
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.body_done = False
        self.disconnected = False
        self._watcher: asyncio.Task[None] | None = None
        #: Ends the streamed answer under way once its client left (watch_departure).
        self._on_departure: Callable[[], object] | None = None
        self._departed = False
        self._head_sent = False  # a streamed head (send_head) went to the ASGI server
        self._tail: asyncio.Future[Any] | None = None  # ordered sends from async user code

    async def receive(self) -> bytes:
        while not self.body_done:
            message = await self._next_message()
            kind = message.get("type")
            if kind == "http.request":
                body = bytes(message.get("body") or b"")
                if not message.get("more_body", False):
                    self.body_done = True
                    self._watch()  # the answer may have started while the body was read
                if body:
                    self._pace.add(len(body))
                    return body
            elif kind == "http.disconnect":
                self.body_done = self.disconnected = True
                raise ClientGone("client disconnected while sending the body")
        return b""

    async def _next_message(self) -> Message:
        """The ASGI server's next message about the body, waited for as our transports
        wait for body bytes: a 408 (and the connection closed) past ``body_timeout`` or
        when the body falls below ``min_body_rate``."""
        wait = self._pace.next_wait()
        try:
            return await _receive_within(self._receive, wait)
        except (asyncio.TimeoutError, TimeoutError):
            self._closing = self._http1
            raise HttpError(
                408, "", _TOO_SLOW if self._pace.limited_by_rate(wait) else _LATE
            ) from None

    def close_after_response(self) -> None:
        """The rest of the body will not be read (a 413): the answer says ``Connection:
        close`` (HTTP/1.x), so the ASGI server closes the connection at once instead of
        reading the body to its end first (uvicorn discards it, then keeps the connection)."""
        self._closing = self._http1

    def _start_message(self, status: int, headers: HeaderLines) -> Message:
        lines = asgi_headers(headers)
        if self._closing:
            lines.append(_CLOSE)
        return {"type": "http.response.start", "status": status, "headers": lines}

    async def _watch_disconnect(self) -> None:
        """During a streamed response: notice a client that goes away, and end the
        stream under way at once (it may be waiting for its next piece)."""
        while True:
            message = await self._receive()
            if message.get("type") == "http.disconnect":
                self.disconnected = True
                self._departure()
                return

    def watch_departure(self, cancel: Callable[[], object] | None) -> None:
        self._departed = False
        if cancel is None:
            return
        self._on_departure = cancel
        if self.disconnected:  # it left before the stream started
            self.loop.call_soon(self._departure)

    def unwatch_departure(self) -> bool:
        self._on_departure = None
        return self._departed

    def _departure(self) -> None:
        """The ASGI server said the client left (``http.disconnect``): a streamed
        answer under way ends now, as in our transports, not at its next piece
        (uvicorn's ``send`` ignores a client that left: it would never learn it)."""
        cancel, self._on_departure = self._on_departure, None
        if cancel is not None:
            self._departed = True
            cancel()

    async def _emit(self, message: Message) -> None:
        if self.disconnected:
            raise ClientGone("client disconnected")
        try:
            await send_within(self._send, message, self._send_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.disconnected = True  # nothing more is offered
            raise ClientGone("the ASGI server took no response data within body_timeout") from None

    async def _settle(self) -> None:
        tail = self._tail
        if tail is not None:
            self._tail = None
            await _outcome(tail)

    # Each send first waits for the sends coroutines' writes chained (_settle);
    # the chained sends themselves are the underscored forms.
    async def send_head(self, status: int, headers: HeaderLines) -> None:
        await self._settle()
        await self._head(status, headers)

    async def _head(self, status: int, headers: HeaderLines) -> None:
        self.bodyless = self.is_head or sends_no_body(self.method, status)
        await self._emit(self._start_message(status, headers))
        self._head_sent = True
        self._watch()

    def _watch(self) -> None:
        """Once the head is out and nothing more of the body is to be received, watch
        for a disconnect (uvicorn's ``send`` ignores a client that left: a stream
        would run on for nobody)."""
        if self._head_sent and (self.body_done or not self.expects_body) and self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch_disconnect())

    async def send_data(self, data: bytes) -> None:
        await self._settle()
        await self._data(data)

    async def _data(self, data: bytes) -> None:
        if data and not self.is_head:
            await self._emit_body(data)
            await asyncio.sleep(0)  # a loop turn, so a disconnect is noticed between chunks

    async def _emit_body(self, data: bytes) -> None:
        """``data`` as body messages with more to come, at most :data:`SEND_SLICE` each."""
        for start in range(0, len(data), SEND_SLICE):
            piece = data[start : start + SEND_SLICE] if len(data) > SEND_SLICE else data
            await self._emit({"type": "http.response.body", "body": piece, "more_body": True})

    async def send_end(self) -> None:
        await self._settle()
        await self._end()

    async def _end(self) -> None:
        if self.disconnected and self.bodyless:
            return  # the client had the whole answer with the head, and left: no failure
        await self._emit({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        await self._settle()
        headers = with_content_length(headers, status, len(body), self.method)
        await self._emit(self._start_message(status, headers))
        payload = b"" if self.is_head else body
        if len(payload) > SEND_SLICE:
            await self._emit_body(payload)
            payload = b""
        await self._emit({"type": "http.response.body", "body": payload, "more_body": False})

    # ``Response.write_bytes``: from a worker thread we wait; on the loop
    # (async user code) we chain the sends so they stay in order, within bounds.
    def _blocking(self, factory: Callable[[], Awaitable[None]], size: int = 0) -> None:
        if threading.get_ident() != self.loop_thread:
            asyncio.run_coroutine_threadsafe(self._after_chain(factory), self.loop).result()
            return
        previous = self._tail
        if self.disconnected or (previous is not None and _failed(previous)):
            # The client left: tell a coroutine streaming in a loop to stop.
            raise ClientGone("client disconnected")
        held = self._held + size
        if self._backlog and held > self._backlog:
            self.disconnected = True  # nothing more is offered
            if previous is not None:
                previous.cancel()  # the app returns now; the server ends the response
            raise ClientGone(backlog_exceeded(self.peer, held, self._backlog))
        self._held = held

        async def after() -> None:
            try:
                if previous is not None:
                    await previous
                await factory()
            finally:
                self._held -= size

        self._tail = self.loop.create_task(after())

    async def drain(self) -> None:
        if threading.get_ident() == self.loop_thread and self._tail is not None:
            await _outcome(self._tail)  # what coroutines' writes chained, taken
        if self.disconnected:
            raise ClientGone("client disconnected")

    async def _after_chain(self, factory: Callable[[], Awaitable[None]]) -> None:
        await self._settle()
        await factory()

    def start_blocking(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = encode_headers(headers)
        self._blocking(lambda: self._head(status, lines))

    def write_blocking(self, data: bytes) -> None:
        self._blocking(lambda: self._data(data), len(data))

    def end_blocking(self) -> None:
        self._blocking(self._end)

    async def finish(self) -> None:
        """Wait for chained sends; stop watching for a disconnect."""
        try:
            await self._settle()
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(BaseException):
                    await self._watcher


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def _outcome(task: asyncio.Future[Any]) -> None:
    """Wait for chained sends without cancelling them; their failure as ``ClientGone``."""
    await asyncio.wait([task])
    if task.cancelled():
        raise ClientGone("the response was abandoned")
    error = task.exception()
    if isinstance(error, ClientGone):
        raise error
    if error is not None:  # the ASGI server's send failed: its client is gone
        raise ClientGone(f"the ASGI server's send failed: {error!r}") from error


class ASGIProxy:
    """An ASGI 3 application serving one dispatcher (see ``server.init_asgi_proxy``).

    Args:
        dispatcher: the dispatcher of the app to serve (its app's websocket handlers too).
        upgrade_handler: ignored; kept so existing callers need no change.
    """

    def __init__(self, dispatcher: Dispatcher, upgrade_handler: Any = None) -> None:
        self.dispatcher = dispatcher
        self.upgrade_handler = upgrade_handler
        self._pool: SyncPool | None = None
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> SyncPool:
        """This app's pool for sync user code (``worker_threads`` threads, made on
        first use; shut down at the lifespan's shutdown)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = SyncPool(self.dispatcher.config.worker_threads)
        return pool

    async def app_proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: ``await app_proxy(scope, receive, send)``."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        token = use_pool(self.pool)
        try:
            if kind == "http":
                await self._http(scope, receive, send)
            elif kind == "websocket":
                await self._websocket(scope, receive, send)
            else:
                raise ValueError(f"unsupported ASGI scope type {kind!r}")
        finally:
            reset_pool(token)

    __call__ = app_proxy

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        scheme = "https" if scope.get("scheme") == "https" else "http"
        request = make_request(
            str(scope.get("method", "GET")),  # RFC 9110 9.1: case-sensitive, as in our transports
            request_target(scope),
            scope.get("headers") or [],
            scheme,
        )
        request.environment = scope if isinstance(scope, dict) else dict(scope)
        channel = _ASGIChannel(scope, receive, send, self.dispatcher.config)
        try:
            await self.dispatcher.handle(request, channel)
        except ClientGone:
            pass
        except Exception:
            # What the dispatcher lets out (a returned stream that raised once its head
            # was out), handled as our transports do: logged with its request, and the
            # answer cut (the app returns unfinished: the ASGI server ends the
            # connection), not a traceback of the ASGI server's that names no request.
            _log.exception("Error while sending the response to %s", request_line(request))
        finally:
            with contextlib.suppress(ClientGone):
                await channel.finish()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .asgi_ws import serve_websocket

        await serve_websocket(self.dispatcher, scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                try:
                    self.dispatcher.app.compiled()
                except Exception as exc:
                    _log.exception("The app failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await self._close_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _close_pool(self) -> None:
        """Let the pool's threads exit (a later request makes a new pool)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
            await pool.wait_closed(1.0)
