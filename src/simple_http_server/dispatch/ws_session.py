"""The running websocket session, independent of the transport.

:class:`LinkBase` owns the :class:`~..protocol.ws.WebsocketProtocol` of one
connection behind a lock and implements what :class:`WebsocketSession` sends;
a transport subclasses it with ``_write`` (and its own flow control).  Frames
are made under the lock (that keeps them in order) but written after it is
released (``_send_out``): no socket write ever runs under the lock, so a
client that stops reading never holds up the reading side or a keepalive.
:meth:`LinkBase.handle` turns protocol events into handler callbacks through
:mod:`~.invoke` (async or sync is decided once per callback), so it runs the
same way in the threaded transport, on an event loop and in the test client.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any

from .. import logger as _logging
from ..protocol import ws
from ..protocol.ws import WebsocketProtocol, WsEvent
from ..websocket import (
    WEBSOCKET_OPCODE_PING,
    WebsocketCloseReason,
    WebsocketRequest,
    WebsocketSession,
)
from .invoke import call_async, call_sync, is_async_callable
from .ws_handlers import Callbacks

__all__ = [
    "KEEPALIVE_REASON",
    "Keepalive",
    "LinkBase",
    "SessionCut",
    "close_message",
    "message_size",
    "warn_dropped",
]

_log = _logging.get_logger("simple_http_server.websocket")

_MESSAGES = {
    ws.CLOSE_GOING_AWAY: "Server is going away.",
    ws.CLOSE_PROTOCOL_ERROR: "Protocol error.",
    ws.CLOSE_ABNORMAL: "Connection lost.",
    ws.CLOSE_INVALID_DATA: "Invalid message data.",
    ws.CLOSE_TOO_BIG: "Message too big.",
    ws.CLOSE_INTERNAL_ERROR: "Handler error.",
}


#: The reason of the 1011 Close sent to a peer that did not answer a keepalive ping
#: (the words of the ``websockets`` library, which uvicorn uses).
KEEPALIVE_REASON = "keepalive ping timeout"


class SessionCut(Exception):
    """A callback's wait ended because the server cut its session at stop (its
    coroutine was cancelled): no handler failure, the session just ends."""


def warn_dropped(session_id: str, unsent: int, limit: int) -> None:
    """Log that a session was dropped for leaving more than ``max_send_backlog`` unsent."""
    _log.warning(
        "Websocket session %s dropped: %d bytes unsent, over max_send_backlog (%d);"
        " the client is not reading",
        session_id,
        unsent,
        limit,
    )


def close_message(event: ws.Closed) -> str:
    """The readable ``message`` of a :class:`WebsocketCloseReason`."""
    if event.by_peer:
        return "Client asked to close connection."
    if event.code == ws.CLOSE_INTERNAL_ERROR and event.reason == KEEPALIVE_REASON:
        return "No answer to the server's keepalive ping."
    return _MESSAGES.get(event.code, "Server asked to close connection.")


class Keepalive:
    """When to ping a silent websocket peer, and when to give up on it.

    The transport calls :meth:`seen` whenever bytes arrive, and :meth:`expire`
    once the clock reaches :attr:`due`: it answers ``PING`` (send one), ``FAIL``
    (the peer is gone: close with 1011) or None (not yet).  ``interval`` 0 is no
    keepalive (the transport makes none); ``timeout`` 0 pings every interval of
    silence but never gives up.  Times are the caller's clock (monotonic).
    """

    PING = "ping"
    FAIL = "fail"

    __slots__ = ("interval", "last_seen", "pinged", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_seen = now
        self.pinged: float | None = None  # when the unanswered ping went out

    def seen(self, now: float) -> None:
        """The peer sent something: it is alive."""
        self.last_seen = now
        self.pinged = None

    @property
    def due(self) -> float:
        """When :meth:`expire` has something to do."""
        if self.pinged is not None:
            return self.pinged + self.timeout
        return self.last_seen + self.interval

    def expire(self, now: float) -> str | None:
        """What to do now: ``PING``, ``FAIL`` or nothing (None)."""
        if now < self.due:
            return None
        if self.pinged is not None:
            return self.FAIL
        if self.timeout > 0:
            self.pinged = now
        else:  # no timeout: ping again after another interval of silence
            self.last_seen = now
        return self.PING


def _frames(pieces: Iterable[str | bytes]) -> Iterator[tuple[str | bytes, bool]]:
    """(piece, is_last) pairs; one empty piece when there are none."""
    previous: str | bytes | None = None
    for piece in pieces:
        if previous is not None:
            yield previous, False
        previous = piece
    yield (previous if previous is not None else b""), True


def message_size(pieces: Iterable[str | bytes]) -> int | None:
    """The size of a message about to be sent; None when it is read as it goes (a file)."""
    if type(pieces) is tuple:
        return sum(len(piece) for piece in pieces)
    size: int | None = getattr(pieces, "nbytes", None)
    return size


class LinkBase:
    """One websocket connection: protocol state, session, callbacks."""

    def __init__(
        self, proto: WebsocketProtocol, callbacks: Callbacks, request: WebsocketRequest
    ) -> None:
        self.proto = proto
        self.callbacks = callbacks
        self.lock = threading.RLock()
        self.session = WebsocketSession(request, self)
        self._close_reported = False
        self._answer_watched = False  # the transport bounds the wait for the Close answer
        # Payloads of the keepalive pings not answered yet: their pongs are not
        # the handler's business (on_pong_message never sees them).
        self._keepalive_pings: deque[bytes] = deque(maxlen=8)
        self._keepalive_count = itertools.count(1)
        self._async_callbacks: dict[object, bool] = {}  # callback -> async? (inspected once)

    # -- output (called under self.lock) ---------------------------------------
    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data:
            self._write(data)

    def _send_out(self, wait: bool = True) -> None:
        """Hook, called with the lock released: write what ``_flush`` queued.

        ``wait`` False is for the reading side's own replies (pongs, the Close
        echo): they need not wait for a client that is slow to read.
        """

    def _closing_started(self) -> None:
        """Hook: our Close frame left; a transport may arm a timeout."""

    def _answer_pending(self) -> None:
        """Hook: a Close is due (the peer's arrived, or bad input fails the connection),
        sent once the events before it are handled; a transport bounds that wait (a
        handler that never returns must not hold it)."""

    def _watch_answer(self) -> None:
        """Call :meth:`_answer_pending` once, when a Close is first due."""
        if not self._answer_watched and self.proto.answer_due:
            self._answer_watched = True
            self._answer_pending()

    def _answer_close(self) -> None:
        """Send the Close that is due now (the events before it were handled): the
        answer to the peer's, or the one failing the connection for bad input."""
        with self.lock:
            self.proto.answer_close()
            self._flush()
        self._send_out(False)

    async def drain(self) -> None:
        """Wait until the unsent output is at most :data:`DRAIN_LOW_WATER` (or the
        session is gone).  Here (the test client) everything is sent at once."""

    # -- SessionLink -----------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return not self.proto.is_open

    @property
    def closed_here(self) -> bool:
        """True once our Close went out (``session.close()``, shutdown): from then on
        the peer's messages, pings and pongs are dropped; only its Close is awaited."""
        proto = self.proto
        return proto is not None and proto.closing

    @property
    def winding_down(self) -> bool:
        """True once a closing handshake started on either side (no keepalive any more)."""
        return not self.proto.is_open or self.proto.answer_due

    def send_message(self, pieces: Iterable[str | bytes]) -> None:
        with self.lock:
            if type(pieces) is tuple and len(pieces) == 1:  # one frame (most messages)
                if self.proto.send_data(pieces[0], True):
                    self._flush()
                return
            for _ in self._send_frames(pieces):
                pass

    def _send_frames(self, pieces: Iterable[str | bytes]) -> Iterator[None]:
        """Send the message piece by piece (the lock held per piece); yields after each.

        When reading or framing the next piece fails after a frame went out,
        the message can never be finished: the connection is failed with 1011,
        then the error is raised to the sender.
        """
        frames = _frames(pieces)
        sent_any = False
        while True:
            try:
                piece, last = next(frames)
            except StopIteration:
                return
            except Exception:
                if sent_any:
                    self._handler_failed()
                raise
            error: Exception | None = None
            with self.lock:
                try:
                    more = self.proto.send_data(piece, last)
                except Exception as exc:  # e.g. a lone surrogate in a text piece
                    error, more = exc, False
                if more:
                    self._flush()
            if error is not None:
                if sent_any:  # the message is cut: fail it, as when a read fails
                    self._handler_failed()
                raise error
            if not more:
                return
            sent_any = True
            yield None

    def send_control(self, opcode: int, payload: bytes) -> None:
        with self.lock:
            if opcode == WEBSOCKET_OPCODE_PING:
                self.proto.send_ping(payload)
            else:
                self.proto.send_pong(payload)
            self._flush()
        self._send_out()

    def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        with self.lock:
            started = self.proto.send_close(code, reason)
            self._flush()
        self._send_out()
        if started:
            self._closing_started()

    # -- keepalive (the transport decides when: :class:`Keepalive`) ---------------
    def keepalive_ping(self) -> None:
        """Ping the peer on the server's own account."""
        payload = b"shs-keepalive-%d" % next(self._keepalive_count)
        with self.lock:
            if self.proto.send_ping(payload):
                self._keepalive_pings.append(payload)
                self._flush()
        self._send_out(False)

    def keepalive_failed(self) -> bool:
        """The peer did not answer in time: fail the connection with 1011 (no
        closing handshake: the peer is presumed gone; the transport closes).
        False when a close was under way already (its own timeout bounds it)."""
        with self.lock:
            if self.winding_down:
                return False
            self.proto.fail(ws.CLOSE_INTERNAL_ERROR, KEEPALIVE_REASON)
            self._flush()
        self._send_out(False)
        return True

    def _keepalive_pong(self, payload: bytes) -> bool:
        """True when ``payload`` answers a keepalive ping (then it and older ones are done)."""
        with self.lock:
            pings = self._keepalive_pings
            if payload not in pings:
                return False
            while pings.popleft() != payload:
                pass
            return True

    # -- input -----------------------------------------------------------------
    def feed(self, data: bytes | None) -> list[WsEvent]:
        """Received bytes (``b""``: end of stream; None: none) -> events; replies
        are flushed.  (One frame per message: the hot path.)"""
        proto = self.proto
        with self.lock:
            if data is not None:
                proto.receive_data(data)
            events = proto.events()
            self._flush()
        self._send_out(False)
        if not self._answer_watched and proto.answer_due:
            self._watch_answer()
        return events

    def feed_pending(self) -> list[WsEvent]:
        """Events of bytes received earlier: those that came with the upgrade request,
        or the rest when the protocol has :attr:`~.WebsocketProtocol.more_events`."""
        return self.feed(None)

    async def finish(self) -> None:
        """The transport is done: make sure ``on_close`` was called once."""
        with self.lock:
            closed = self.proto.close_event()
        await self.report_close(closed)

    @property
    def finished(self) -> bool:
        """True when the transport should close now."""
        proto = self.proto
        if proto._closed_event is None:  # never unset once set: no lock to read it unset
            return False
        with self.lock:
            return proto.finished

    async def opened(self) -> None:
        """Call ``on_open``; a failing handler closes the session with 1011."""
        if self.callbacks.on_open is not None:
            await self._run(self.callbacks.on_open, self.session)

    async def handle(self, events: list[WsEvent]) -> None:
        """Deliver events to the handler callbacks, in order."""
        cb, session = self.callbacks, self.session
        for event in events:
            if self._close_reported:
                return
            proto = self.proto  # None under ASGI, whose server does the framing
            if proto is not None and proto.failed:  # e.g. a callback raised (1011): stop
                with self.lock:
                    closed = proto.close_event()
                await self.report_close(closed)
                return
            kind = type(event)
            if kind is not ws.Closed and self.closed_here:
                continue  # RFC 6455 lets us read on, not deliver: no Pong is due either
            if kind is ws.TextReceived:
                if cb.on_text_message is not None:
                    await self._run(cb.on_text_message, session, event.data)  # type: ignore[union-attr]
            elif kind is ws.BinaryReceived:
                if cb.on_binary_message is not None:
                    await self._run(cb.on_binary_message, session, event.data)  # type: ignore[union-attr]
            elif kind is ws.BinaryFrameReceived:
                await self._binary_frame(event)  # type: ignore[arg-type]
            elif kind is ws.PingReceived:
                if cb.on_ping_message is not None:
                    await self._run(cb.on_ping_message, session, event.payload)  # type: ignore[union-attr]
                else:  # answered without waiting for a client that is slow to read
                    with self.lock:
                        self.proto.send_pong(event.payload)  # type: ignore[union-attr]
                        self._flush()
                    self._send_out(False)
            elif kind is ws.PongReceived:
                if self._keepalive_pings and self._keepalive_pong(event.payload):  # type: ignore[union-attr]
                    continue
                if cb.on_pong_message is not None:
                    await self._run(cb.on_pong_message, session, event.payload)  # type: ignore[union-attr]
            elif kind is ws.Closed:
                if proto is not None and proto.answer_due:  # the peer's Close, or bad input
                    self._answer_close()  # after the replies to the events before it
                await self.report_close(event)  # type: ignore[arg-type]

    async def _binary_frame(self, event: ws.BinaryFrameReceived) -> None:
        assert self.callbacks.on_binary_frame is not None
        keep = await self._run(self.callbacks.on_binary_frame, self.session, event.fin, event.data)
        if keep is True:
            with self.lock:
                failed = self.proto.keep(event.data)
                self._flush()
            self._send_out(False)
            if failed is not None:
                await self.report_close(failed)
                return
        if event.fin:
            with self.lock:
                kept = self.proto.take_kept()
            if kept is not None and self.callbacks.on_binary_message is not None:
                await self._run(self.callbacks.on_binary_message, self.session, kept)

    def _is_async(self, func: Any) -> bool:
        """Whether ``func`` is ``async def`` (inspected once per callback)."""
        try:
            is_async = self._async_callbacks.get(func)
            if is_async is None:
                is_async = self._async_callbacks[func] = is_async_callable(func)
        except TypeError:  # an unhashable callable object
            is_async = is_async_callable(func)
        return is_async

    def _call(self, func: Any, *args: object) -> Coroutine[Any, Any, object]:
        """The coroutine that calls ``func`` (a plain function: no coroutine of its own)."""
        try:
            is_async = self._async_callbacks.get(func)  # _is_async(), its common case inlined
        except TypeError:  # an unhashable callable object
            is_async = None
        if is_async is None:
            is_async = self._is_async(func)
        if is_async:
            return call_async(func, *args)
        return call_sync(func, *args)

    async def _run(self, func: object, *args: object) -> object:
        """Call a handler callback; a failing one closes the session with 1011."""
        try:
            return await self._call(func, *args)
        except SessionCut:
            raise
        except Exception:
            _log.exception("Websocket handler %r failed", func)
            self._handler_failed()
            return None

    def _handler_failed(self) -> None:
        """A callback raised: fail the connection with 1011."""
        with self.lock:
            self.proto.fail(ws.CLOSE_INTERNAL_ERROR, "Handler error")
            self._flush()
        self._send_out(False)

    async def report_close(self, event: ws.Closed) -> None:
        """Call ``on_close`` once."""
        if self._close_reported:
            return
        self._close_reported = True
        if self.callbacks.on_close is None:
            return
        reason = WebsocketCloseReason(close_message(event), event.code, event.reason)
        try:
            await self._call(self.callbacks.on_close, self.session, reason)
        except SessionCut:
            pass
        except Exception:
            _log.exception("Websocket on_close handler failed")
