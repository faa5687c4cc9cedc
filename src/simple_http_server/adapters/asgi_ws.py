"""Websocket handlers behind an ASGI server (the ``websocket`` scope).

The ASGI server does the framing; this module runs the same handshake
decision (:func:`~..dispatch.ws_handlers.negotiate`) and the same session
logic (:class:`~..dispatch.ws_session.LinkBase`) as our own transports, with
ASGI messages instead of wsproto bytes.  ASGI carries whole messages only, so
a fragmented ``session.send(..., chunk_size=...)`` goes out as one message,
and ping/pong frames (answered by the server itself) are not delivered.

Each ``websocket.send`` must be taken by the ASGI server within
``body_timeout``, as our transports bound a websocket frame: a server that
keeps a send waiting that long (backpressure from a client that stopped
reading) gets no more messages, the session is dropped (``on_close`` runs with
1006, a handler thread blocked in ``session.send`` returns) and the app returns.
A coroutine's sends do not wait: they queue, and more than ``max_send_backlog``
queued drops the session the same way; ``session.drain()`` waits for them.

A send the server refuses (uvicorn raises once the client's Close arrived or the
connection is lost) ends the output only: the messages the client sent before
are still delivered, and ``on_close`` gets what ``websocket.disconnect`` says
(:func:`disconnect_event`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from .. import logger as _logging
from ..dispatch.invoke import wait_for_loop
from ..dispatch.ws_handlers import Callbacks, Rejected, negotiate
from ..dispatch.ws_session import LinkBase, warn_dropped
from ..protocol import ws
from ..protocol.http11 import RequestHead
from ..websocket import WebsocketRequest
from .asgi import send_within

__all__ = ["disconnect_event", "serve_websocket"]

_log = _logging.get_logger("simple_http_server.websocket")
#: Seconds to wait for the server's disconnect after our close.
CLOSE_TIMEOUT = 5.0
_HANDSHAKE_ONLY = {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions"}
#: Codes an ASGI server reports for the client's protocol errors it found itself
#: (uvicorn: 1002, 1007; 1009 past its ``ws_max_size``): the server's, not the client's.
_SERVER_FOUND = {ws.CLOSE_PROTOCOL_ERROR, ws.CLOSE_INVALID_DATA, ws.CLOSE_TOO_BIG}
_LOST = ws.Closed(ws.CLOSE_ABNORMAL, "connection lost", False)


def disconnect_event(message: Any) -> ws.Closed:
    """How a ``websocket.disconnect`` the session did not cause itself ended it.

    A disconnect without a ``reason`` key is made up by the server (uvicorn: 1005
    for a connection lost without a Close frame, 1012 when it shuts down), one with
    a ``reason`` comes from a Close frame; 1006 is always a lost connection.  A
    client's own Close with 1002, 1007 or 1009 looks like the server's protocol
    checks, and is reported as those.
    """
    code = int(message.get("code") or ws.CLOSE_NO_STATUS)
    reason = str(message.get("reason") or "")
    framed = "reason" in message
    if code == ws.CLOSE_ABNORMAL or (code == ws.CLOSE_NO_STATUS and not framed):
        return _LOST
    return ws.Closed(code, reason, framed and code not in _SERVER_FOUND)


class ASGILink(LinkBase):
    """A session whose frames are ASGI ``websocket.send``/``websocket.close`` messages."""

    def __init__(
        self,
        send: Any,
        callbacks: Callbacks,
        request: WebsocketRequest,
        max_size: int,
        send_timeout: float,
        max_backlog: int = 16 * 1024 * 1024,
    ) -> None:
        super().__init__(None, callbacks, request)  # type: ignore[arg-type]
        self._send = send
        self.max_size = max_size
        self.send_timeout = send_timeout
        self.max_backlog = max_backlog or sys.maxsize  # 0: no bound
        self.backlog = 0  # bytes of the messages not yet taken by the ASGI server
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.closed = False
        #: No more messages are offered: a send failed or was not taken in time.
        self.gone = False
        #: The server took our ``websocket.close``: the session ends on our code.
        self.close_sent = False
        #: A callback raised: no further message is delivered (RFC 6455 7.1.7).
        self.failed = False
        #: A send was not taken within ``send_timeout``: the session is dropped.
        self.dropped = False
        self.close_code = ws.CLOSE_ABNORMAL
        self.close_reason = ""
        self._close_queued = False  # our websocket.close: the client's messages are dropped
        self._tail: asyncio.Task[None] | None = None
        self._task = asyncio.current_task()  # serve_websocket's
        self.receiving = False  # the task waits in the ASGI receive()
        self.interrupted = False  # ... and was cancelled by a drop

    # -- output: ordered, from the loop or from worker threads -------------------
    async def _send_after(
        self, previous: asyncio.Task[None] | None, message: Any, size: int
    ) -> None:
        try:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            if self.gone:
                return
            await send_within(self._send, message, self.send_timeout)
            if message["type"] == "websocket.close":
                self.close_sent = True
        except (asyncio.TimeoutError, TimeoutError):  # the server never took it
            self._drop()
        except Exception:  # the client closed or is gone: what it sent is still read
            self.closed = self.gone = True
        finally:
            self.backlog -= size

    def _drop(self, backlog: int = 0) -> None:
        """A send was stuck for ``send_timeout``, or a coroutine queued more than
        ``max_send_backlog`` (``backlog``): end the session without the client."""
        if self.dropped:
            return
        if backlog:
            warn_dropped(self.session.id, backlog, self.max_backlog)
        else:
            _log.info("Websocket session %s dropped: a send was not taken in time", self.session.id)
        self.closed = self.gone = self.dropped = True
        task = self._task
        if self.receiving and task is not None and not task.done():
            self.interrupted = True
            task.cancel()

    def _chain(self, message: Any, size: int = 0) -> asyncio.Task[None]:
        self.backlog += size
        self._tail = self.loop.create_task(self._send_after(self._tail, message, size))
        return self._tail

    async def _chain_and_wait(self, message: Any) -> None:
        await self._chain(message)

    def _submit(self, message: Any, size: int = 0) -> None:
        if threading.get_ident() == self.loop_thread:  # a coroutine: it does not wait
            self._chain(message, size)
            if self.backlog > self.max_backlog:
                self._drop(self.backlog)
            return
        # A worker thread waits until its message went out, which each message
        # ahead of it and its own send bound (``send_timeout`` each, then none).
        try:
            future = asyncio.run_coroutine_threadsafe(self._chain_and_wait(message), self.loop)
        except RuntimeError:  # the loop is closed: the ASGI server is gone
            self.closed = self.gone = True
            return
        try:
            if wait_for_loop(future, self.loop):
                return
        except Exception:  # cancelled: the ASGI server is shutting down
            pass
        self.closed = self.gone = True

    async def settle(self) -> None:
        """Wait until every queued message went out."""
        while self._tail is not None and not self._tail.done():
            await self._tail

    async def drain(self) -> None:
        """Wait until the ASGI server took every message queued so far."""
        if threading.get_ident() != self.loop_thread:  # a coroutine of another loop
            try:
                future = asyncio.run_coroutine_threadsafe(self.settle(), self.loop)
            except RuntimeError:  # the server's loop is closed
                return
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
            return
        with contextlib.suppress(Exception):
            await self.settle()

    @property
    def is_closed(self) -> bool:
        return self.closed

    @property
    def finished(self) -> bool:
        return self.closed

    @property
    def closed_here(self) -> bool:
        return self._close_queued

    def send_message(self, pieces: Iterable[str | bytes]) -> None:
        parts = list(pieces)
        if self.closed:
            return
        if all(isinstance(p, str) for p in parts) and parts:
            text = "".join(parts)  # type: ignore[arg-type]
            self._submit({"type": "websocket.send", "text": text}, len(text))
        else:
            data = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
            self._submit({"type": "websocket.send", "bytes": data}, len(data))

    def send_control(self, opcode: int, payload: bytes) -> None:
        _log.debug("ping/pong frames are handled by the ASGI server")

    def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = self._close_queued = True
        reason = ws.close_reason(reason)  # what a Close frame holds, as in our transports
        self.close_code, self.close_reason = code, reason
        self._submit({"type": "websocket.close", "code": code, "reason": reason})

    # -- input ---------------------------------------------------------------
    def _handler_failed(self) -> None:
        self.failed = True
        self.close(ws.CLOSE_INTERNAL_ERROR, "Handler error")

    async def _binary_frame(self, event: ws.BinaryFrameReceived) -> None:
        assert self.callbacks.on_binary_frame is not None
        keep = await self._run(self.callbacks.on_binary_frame, self.session, True, event.data)
        if keep is True and self.callbacks.on_binary_message is not None:
            await self._run(self.callbacks.on_binary_message, self.session, event.data)

    def event_of(self, message: Any) -> ws.WsEvent | None:
        """The protocol event of a ``websocket.receive`` message (None: ignore)."""
        text, data = message.get("text"), message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if self.max_size and size > self.max_size:
            self.close(ws.CLOSE_TOO_BIG, "Message too big")
            return ws.Closed(ws.CLOSE_TOO_BIG, "Message too big", False)
        if text is not None:
            return ws.TextReceived(text)
        if data is None:
            return None
        if self.callbacks.on_binary_frame is not None:
            return ws.BinaryFrameReceived(bytes(data), True)
        return ws.BinaryReceived(bytes(data))

    def ended_by(self, message: Any) -> ws.Closed:
        """The close to report for a ``websocket.disconnect`` (once every send settled)."""
        if self.close_sent:  # the disconnect answers our Close
            return ws.Closed(self.close_code, self.close_reason, False)
        return disconnect_event(message)

    async def finish(self) -> None:
        if self.close_sent:
            await self.report_close(ws.Closed(self.close_code, self.close_reason, False))
        else:  # dropped, or no disconnect came: the client never had our Close
            await self.report_close(ws.Closed(ws.CLOSE_ABNORMAL, "", False))


def _handshake_head(scope: Any, target: str) -> RequestHead:
    """The upgrade request of a ``websocket`` scope (the server checked it already)."""
    headers = [(bytes(k), bytes(v)) for k, v in scope.get("headers") or ()]
    names = {k.lower() for k, _ in headers}
    if b"sec-websocket-key" not in names:  # some servers strip the handshake headers
        headers.append((b"sec-websocket-key", base64.b64encode(os.urandom(16))))
    if b"sec-websocket-version" not in names:
        headers.append((b"sec-websocket-version", b"13"))
    if b"upgrade" not in names:
        headers.append((b"upgrade", b"websocket"))
    if b"connection" not in names:
        headers.append((b"connection", b"Upgrade"))
    offered = [str(p) for p in scope.get("subprotocols") or ()]
    if offered and b"sec-websocket-protocol" not in names:  # (uvicorn's wsproto strips it)
        headers.append((b"sec-websocket-protocol", ", ".join(offered).encode("latin-1")))
    return RequestHead("GET", target.encode("latin-1"), headers, b"1.1", False)


async def _reject(scope: Any, send: Any, rejected: Rejected) -> None:
    """The refusal as an HTTP answer where the server has the denial extension, framed
    by its ``Content-Length`` as our transports frame it; otherwise a close (a 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = rejected.body()
        headers = [(b"content-type", b"application/json; charset=utf-8"), *rejected.headers,
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await send({"type": "websocket.http.response.start", "status": rejected.status,
                    "headers": headers})  # fmt: skip
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def serve_websocket(dispatcher: Any, scope: Any, receive: Any, send: Any) -> None:
    """Serve one ASGI ``websocket`` scope with the app's websocket handlers."""
    from .asgi import request_target

    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    head = _handshake_head(scope, request_target(scope))
    result = await negotiate(dispatcher.app.compiled().websockets, head, deflate=False)
    if isinstance(result, Rejected):
        await _reject(scope, send, result)
        return
    subprotocol = None
    headers = []
    for name, value in result.headers:
        lower = name.lower()
        if lower == b"sec-websocket-protocol":
            subprotocol = value.decode("latin-1")
        elif lower not in _HANDSHAKE_ONLY:
            headers.append((lower, value))
    await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
    limit = dispatcher.config.limits.max_websocket_message_size
    config = dispatcher.config
    link = ASGILink(
        send,
        result.callbacks,
        result.request,
        limit,
        config.body_timeout,
        config.limits.max_send_backlog,
    )
    try:
        await link.opened()
        await _serve_messages(link, receive)
    finally:
        with contextlib.suppress(Exception):
            await link.settle()
        await link.finish()


async def _serve_messages(link: ASGILink, receive: Any) -> None:
    """Deliver the client's messages until ``websocket.disconnect``.

    Once the session is closed (our Close, or a send the server refused) the
    disconnect is awaited for ``CLOSE_TIMEOUT`` at most; the messages received
    before it are still delivered after a refused send, not after our Close or a
    failed callback, as in our transports.
    """
    deadline: float | None = None
    while not link.dropped:
        if link.closed and deadline is None:
            deadline = link.loop.time() + CLOSE_TIMEOUT
        message = await _next_message(link, receive, deadline)
        if message is None:  # dropped, or no disconnect in time
            return
        kind = message.get("type")
        if kind == "websocket.disconnect":
            link.closed = True
            with contextlib.suppress(Exception):
                await link.settle()  # did our Close go out?
            await link.handle([link.ended_by(message)])
            return
        if kind == "websocket.receive" and not link.failed:
            event = link.event_of(message)
            if event is not None:
                await link.handle([event])


async def _next_message(link: ASGILink, receive: Any, deadline: float | None) -> Any:
    """The next ASGI message; None when a drop interrupted the wait or ``deadline`` passed."""
    link.receiving = True
    try:
        if deadline is None:
            return await receive()
        return await asyncio.wait_for(receive(), max(0.0, deadline - link.loop.time()))
    except (asyncio.TimeoutError, TimeoutError):
        return None
    except asyncio.CancelledError:
        if not link.interrupted:
            raise
        _uncancel()  # our own cancel (a drop), not the server's
        return None
    finally:
        link.receiving = False


def _uncancel() -> None:
    """Forget a cancel this module made (Python 3.11+ counts them)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
