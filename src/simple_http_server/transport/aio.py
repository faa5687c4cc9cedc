"""The asyncio transport: the same protocol objects, driven by ``asyncio.Protocol``.

Received bytes go to the connection's :class:`~..protocol.http11.HttpConnection`;
a complete request head starts one task that runs the dispatcher.  Writes
respect ``pause_writing``/``resume_writing`` (drain), reading pauses while a
request body piles up, and idle, head and body timeouts close stalled clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .. import logger as _logging
from ..config import ServerConfig
from ..dispatch.channel import Channel, FileShrank, HeaderLines, encode_headers
from ..dispatch.dispatcher import Dispatcher, request_line
from ..dispatch.invoke import SyncPool, use_pool
from ..errors import HttpError
from ..models import Request
from ..protocol import http11
from .common import (
    DRAIN_LIMIT,
    SERVING,
    BodyPace,
    ClientGone,
    FileSlice,
    SendPace,
    backlog_exceeded,
    bytes_acked,
    new_connection,
    progress,
    request_from_head,
    service_unavailable,
    stop_wait_bound,
    unsent_bytes,
)

__all__ = ["AioServer"]

_log = _logging.get_logger("simple_http_server.aio")
_TOO_SLOW = "The request body is arriving too slowly."
_PAUSE_ABOVE = 1024 * 1024
_NEVER = math.inf
#: Seconds between two checks of the connections' deadlines.
SWEEP_INTERVAL = 0.25
#: Seconds a connection closed after an error answer keeps discarding input.
LINGER_SECONDS = 1.0
#: Seconds between two warnings that accepts failed for lack of resources.
ACCEPT_WARNING_INTERVAL = 1.0
#: Bytes of a static file handed to ``loop.sendfile`` at a time (at most, and
#: at least): each slice must go out within ``body_timeout``, as
#: ``loop.sendfile`` has no timeout of its own.  Slices grow while the client
#: takes them fast and shrink when it is slow, so a slow but steady reader is
#: never cut off: only one that takes less than the smallest slice per
#: ``body_timeout``.
SENDFILE_SLICE = 4 * 1024 * 1024
SENDFILE_MIN_SLICE = 64 * 1024
#: TLS connections over ``max_connections`` refused at once at most (as the threaded
#: transport's): each needs its handshake before it can read the 503 (bounded by
#: ``head_timeout``, then a linger of a second).  Past this many, a connection is
#: closed at once, unanswered.
TLS_REFUSALS = 128


def send_close_notify(transport: asyncio.BaseTransport) -> bool:
    """TLS: send the closure alert now and go on reading, as a lingering close does.

    asyncio's ``close()`` sends it too, but then takes what the client still sends
    (a body refused with a 413) for a fatal error and resets the connection, which
    can cost the client the answer it has not read yet; and a lingering close that
    waits before ``close()`` holds the end of the answer back.  Here OpenSSL sends
    the alert and reads on (a TLS half-close); asyncio's shutdown follows at the
    linger's end.  False where asyncio's TLS protocol is another than 3.11's (Python
    3.10): the alert then goes at ``close()``."""
    proto = getattr(transport, "_ssl_protocol", None)
    sslobj = getattr(proto, "_sslobj", None)
    flush = getattr(proto, "_process_outgoing", None)
    if sslobj is None or flush is None:
        return False
    try:
        sslobj.unwrap()  # sends the alert, then waits for the client's: WANT_READ
    except ssl.SSLWantReadError:
        pass
    except (ssl.SSLError, OSError, ValueError):  # an alert of its own went already
        return False
    flush()
    return True


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _AioConn(asyncio.Protocol, Channel):
    """One client connection and the channel of the request it serves."""

    def __init__(self, server: AioServer) -> None:
        self.server = server
        self.config = server.config
        self.loop = server.loop
        self.conn = new_connection(server.config)
        self.transport: asyncio.Transport | None = None
        #: TLS: the socket transport below the TLS one (see :meth:`transport_gone`).
        self._below: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None
        #: The ``loop.sendfile`` under way, if any (it ends before the transport is aborted).
        self._sending: asyncio.Future[int] | None = None
        self.upgraded: Any = None
        self.closed = False
        #: Bytes of a request head arrived: a timeout is answered with 408.
        self.head_started = False
        #: ``deadline`` is the request head's (set once per head, never extended).
        self.head_due = True
        self.pace: BodyPace | None = None
        #: When the current wait (idle, head, linger) expires; the server's sweep checks it.
        self.deadline = _NEVER
        # Made at the accept, before a TLS handshake: the first request head (the
        # handshake included) is due head_timeout from now.
        self._accepted = time.monotonic()
        self._data_waiter: asyncio.Future[None] | None = None
        #: Ends the streamed answer under way once its client left (watch_departure).
        self._on_departure: Callable[[], object] | None = None
        self._departed = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._lingering = False
        self._unsent = 0  # bytes still to flush when close() was last checked
        self._flushed_at = 0.0  # when the client last took some of them
        #: How the client takes the output the server waits to send it (made at the
        #: first such wait; a websocket session goes on with it).
        self.out_pace: SendPace | None = None
        self._sock: Any = None  # the transport's socket: the client's progress
        self._file_sent = 0  # bytes sent with loop.sendfile (progress where TCP_INFO is not)
        # Each request task starts from this context (the server's), never from
        # the one of the request before it: a pipelined request is started from
        # inside its predecessor's task, whose context variables must not leak.
        self._context = contextvars.copy_context()
        #: TLS: the next connection_made is the TCP accept's (see _accept_tls).
        self._tls_pending = server.config.ssl_context is not None
        #: TLS: the handshake under way (start_tls, in a task), and its TCP transport.
        self._handshake: asyncio.Task[None] | None = None
        self._raw: asyncio.Transport | None = None
        #: TLS: over max_connections at the accept (answered 503 after the handshake).
        self.refused = False
        #: TLS: what arrived with the handshake's end, before start_tls returned.
        self._early: list[bytes] = []
        self._early_eof = False

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._tls_pending:
            self._tls_pending = False
            self._accept_tls(transport)
            return
        self.transport = transport
        self._below = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
        self.peer = transport.get_extra_info("peername")
        self.secure = transport.get_extra_info("sslcontext") is not None
        sock = self._sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        server = self.server
        if self.secure:  # counted (or refused) at its accept already
            if self.refused:
                self._refuse(transport)
            self._replay_early()
            return
        if len(server.connections) >= self.config.max_connections:
            self._refuse(transport)
            return
        server.connections.add(self)
        self.deadline = self._accepted + self.config.head_timeout

    def _refuse(self, transport: asyncio.Transport) -> None:
        """503, then a lingering close (not counted): closing with the request unread
        would reset the connection and lose the answer."""
        transport.write(service_unavailable())
        self.closed = True
        self._lingering = True
        if self.secure:  # no half-close: the closure alert now, where it can
            send_close_notify(transport)
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # reset by the peer since the write: nothing to linger for
                transport.abort()
                return
        # TLS: cut after the linger (close() would wait up to 30 s for the client's
        # closure alert, holding one of the TLS_REFUSALS).
        self.loop.call_later(LINGER_SECONDS, transport.abort if self.secure else transport.close)

    def _accept_tls(self, transport: asyncio.Transport) -> None:
        """A TLS connection counts from its TCP accept, as in the threaded transport:
        asyncio's TLS server makes the connection only once its handshake is done, so
        clients that never finish one held sockets without counting in
        max_connections.  Over it, at most TLS_REFUSALS connections are refused with
        a 503 after their handshake; past them, a connection is closed at once."""
        server = self.server
        if len(server.connections) >= self.config.max_connections:
            if len(server.refusing) >= TLS_REFUSALS:
                self.closed = True
                transport.close()
                return
            self.refused = True
            server.refusing.add(self)
        else:
            server.connections.add(self)
            self.deadline = self._accepted + self.config.head_timeout  # the sweep's bound
        self._raw = transport
        self._handshake = self.loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        """The handshake (within head_timeout), then connection_made with the TLS
        transport; a failed, timed-out or cut handshake frees its slot at once."""
        context = self.config.ssl_context
        assert context is not None
        try:
            tls = await self.loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self.config.head_timeout,
            )
        except BaseException as exc:  # asyncio's TLS server logs no failed handshake either
            self._handshake_failed()
            if not isinstance(exc, Exception):  # cancelled (close(), abort())
                raise
            return
        finally:
            self._handshake = self._raw = None
        if tls is None or self.closed:  # lost meanwhile (asyncio then returns None)
            if tls is not None:
                tls.abort()
            self._handshake_failed()
            return
        # (Closing already, at a closure alert sent with the request: served all the same.)
        self.connection_made(tls)

    def _handshake_failed(self) -> None:
        self.closed = True
        self._cancel_timer()
        self._forget()

    def _replay_early(self) -> None:
        """What asyncio passed on before start_tls returned (the request sent along
        with the handshake's end)."""
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # TLS: before start_tls returned (see _replay_early)
            self._early.append(data)
            return
        if self.upgraded is not None:
            self.upgraded.data_received(data)
            return
        if self._lingering:
            return
        self.conn.receive_data(data)
        if self.task is not None:
            self._wake_reader()
            if self.conn.buffered_size > _PAUSE_ABOVE and not self._reading_paused:
                self._reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self.transport is None:  # TLS: before start_tls returned
            self._early_eof = True
            return None
        if self.upgraded is not None:
            return self.upgraded.eof_received()  # type: ignore[no-any-return]
        if self._lingering:
            self.close()
            return None
        # A websocket upgrade under way learns it from the HTTP connection (input_ended).
        self.conn.receive_data(b"")
        self._departure()
        if self.task is not None:
            self._wake_reader()
        else:
            self._process()
        # Keep the write side open for the answer (TLS cannot half-close).
        return None if self.secure else True

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and not self.closed and self.upgraded is None and not self.conn.input_ended:
            # Python 3.10's TLS transport reports a client's close_notify this way,
            # without eof_received: its input ended all the same (a websocket
            # handshake under way still opens its session).
            self.conn.receive_data(b"")
        self.closed = True
        self._departure()
        task = self.task
        if task is not None and not task.done():
            # The request goes on without its client: its slot stays taken until
            # it ends, so max_connections still bounds the requests running.
            task.add_done_callback(lambda _task: self._forget())
        else:
            self._forget()
        self._cancel_timer()
        if self.upgraded is not None:
            self.upgraded.connection_lost(exc)
        self._wake_reader()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ClientGone("connection lost"))
        self._drain_waiters.clear()

    def _forget(self) -> None:
        server = self.server
        server.connections.discard(self)
        server.refusing.discard(self)
        if server.stopping and not server.connections:
            server.all_closed.set()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- timers --------------------------------------------------------------
    # One sweep per server (AioServer._sweep) instead of a timer per request.
    def _arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def _cancel_timer(self) -> None:
        self.deadline = _NEVER

    def _timed_out(self) -> None:
        self.deadline = _NEVER
        if self.closed:  # closed while the rest of the answer is still going out
            self._check_closing()
            return
        if self.task is not None:
            return
        if self.head_started:  # a silent connection is closed silently
            self._write(self.conn.send_error(408))
        self.close()

    # -- request handling ----------------------------------------------------
    def _process(self) -> None:
        conn = self.conn
        while not self.closed:
            event = conn.next_event()
            kind = type(event)
            if kind is http11.RequestHead:
                self.head_started = self.head_due = False
                self._cancel_timer()
                self.task = self._context.copy().run(
                    self.loop.create_task,
                    self._serve(event),  # type: ignore[arg-type]
                )
                return
            if event is http11.NEED_DATA:
                if self.server.stopping:
                    self.close()
                elif conn.has_buffered_data:
                    self.head_started = True
                    if not self.head_due:  # the next head: due head_timeout from now
                        self.head_due = True
                        self._arm(self.config.head_timeout)
                elif self.deadline == _NEVER:
                    self._arm(self.config.idle_timeout)
                return
            if kind is http11.ProtocolFailure:
                self._write(conn.send_error(event.status))  # type: ignore[union-attr]
                self._linger()
                return
            self.close()
            return

    async def _serve(self, head: http11.RequestHead) -> None:
        keep = False
        # Once complete (no body: most requests), it stays so: asked once.
        complete = self.conn.request_complete
        # The body's pace is measured from the head on (a body is pending).
        self.pace = None if complete else BodyPace(self.config)
        SERVING.set(self.server)  # this task's own context
        use_pool(self.server.pool)
        request: Request | None = None
        try:
            upgrade = self.server.upgrade_handler
            if upgrade is not None and head.upgrade is not False and upgrade.wants(head):
                await upgrade.serve_aio(self, head)
                return
            request = request_from_head(head, self.secure)
            await self.server.dispatcher.handle(request, self)
            keep = (
                complete
                or self.conn.request_complete
                or (not self.conn.closing and await self.discard_body(DRAIN_LIMIT))
            )
        except ClientGone:
            keep = False
        except Exception:
            if request is None:  # the websocket handshake failed
                _log.exception("Error while sending the response")
            else:
                _log.exception("Error while sending the response to %s", request_line(request))
            self._write(self.conn.send_error(500))
            keep = False
        except BaseException:
            # A cancellation (the server's stop, the loop's end) or KeyboardInterrupt:
            # never a connection left open without a deadline, holding its slot.
            self.task = None
            self.abort()
            task = asyncio.current_task()
            if task is not None:  # KeyboardInterrupt ends the loop: start() raises it
                task.add_done_callback(_retrieved)  # no "never retrieved" log besides
            raise
        finally:
            self.task = None
        if self.upgraded is not None:
            return
        if keep and not self.server.stopping and not self.closed and self.conn.start_next_cycle():
            if self._reading_paused:
                self._reading_paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            self._arm(self.config.idle_timeout)
            if not self.conn.idle:  # (idle: next_event() would say NEED_DATA, nothing to do)
                self._process()
        elif not self.conn.request_complete and not self.closed:
            self._linger()
        else:
            self.close()

    def _linger(self) -> None:
        """Half-close and discard what the client still sends, so it reads our answer.

        TLS has no half-close: its closure alert goes now, where it can (a client
        reading to the end of the answer sees it at once, as in the threaded
        transport), while what the client still sends is read and discarded."""
        assert self.transport is not None
        if self.secure:
            send_close_notify(self.transport)
        self._lingering = True
        self.head_started = False
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            try:
                self.transport.write_eof()
            except OSError:  # the peer reset the connection already
                self.close()
                return
        self._arm(LINGER_SECONDS)

    def linger_after_websocket(self) -> None:
        """A websocket session the server failed while the client still sends: its Close
        is out; the input is read and dropped (LINGER_SECONDS at most) before the close,
        which would otherwise reset the connection and could lose that Close."""
        transport = self.transport
        if self._lingering:
            return
        if self.closed or self.secure or transport is None or transport.is_closing():
            self.close()
            return
        self.upgraded = None  # what arrives now is dropped (data_received)
        transport.resume_reading()  # (the session may have paused it)
        self._reading_paused = False
        self._linger()

    def close_after_response(self) -> None:
        self.conn.close_after_response()

    def close(self) -> None:
        """Close the connection (after what was written is flushed, within
        ``body_timeout``: a client that stops reading is then dropped)."""
        self.closed = True
        transport = self.transport
        if transport is None:
            self._cancel_timer()
            self._cut_handshake()
            return
        if not transport.is_closing():
            transport.close()
        self._unsent = unsent_bytes(transport)
        self._flushed_at = time.monotonic()
        self._check_closing()

    def _check_closing(self) -> None:
        """Closed: the rest of the answer goes out while the client keeps its pace
        (:class:`SendPace`: what its TCP acknowledged counts, so a large kernel buffer
        that the client drains steadily is not taken for a stall).  TLS then waits for
        the client's close_notify, which many clients never send (asyncio would keep
        the slot for its 30 s shutdown timeout): a linger of ``LINGER_SECONDS`` once
        all went out, then the cut."""
        transport = self.transport
        if transport is None:
            return
        left = unsent_bytes(transport)
        now = time.monotonic()
        if left < self._unsent:  # the client still reads
            self._unsent, self._flushed_at = left, now
        if left:
            pace = self.send_pace()
            wait = pace.sample(self._progress(left))
            if wait <= 0:
                pace.failure()
                pace.end(0)
                transport.abort()
            elif self.secure:  # look again soon: the linger starts once it all went out
                self._arm(min(LINGER_SECONDS, wait, pace.every))
            else:  # a plain transport closes itself once it has flushed
                self._arm(min(wait, pace.every))
            return
        if self.out_pace is not None:
            self.out_pace.end(self._progress(0))
        if not self.secure:
            self._cancel_timer()
        elif now < self._flushed_at + LINGER_SECONDS:
            self._arm(self._flushed_at + LINGER_SECONDS - now)
        else:
            transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent output."""
        self.closed = True
        self._cancel_timer()
        sending = self._sending
        if sending is not None and not sending.done():
            # A transport aborted under loop.sendfile fails in asyncio itself (3.11:
            # InvalidStateError, logged with a traceback): the sendfile ends first.
            sending.cancel()
            sending.add_done_callback(self._abort_transport)
        else:
            self._abort_transport()

    def _abort_transport(self, _done: object = None) -> None:
        if self.transport is not None:
            self.transport.abort()
        else:
            self._cut_handshake()

    def _cut_handshake(self) -> None:
        """A TLS handshake under way ends now, its slot freed (its task may not have
        started yet: nothing else would close its socket)."""
        task, raw = self._handshake, self._raw
        if task is not None and raw is not None:
            task.cancel()
            raw.abort()
            self._handshake_failed()

    # -- Channel -------------------------------------------------------------
    def watch_departure(self, cancel: Callable[[], object] | None) -> None:
        self._departed = False
        if cancel is None or not self.conn.request_complete:  # input is the body's yet
            return
        self._on_departure = cancel
        if self.closed or self.conn.input_ended:  # it left before the stream started
            self.loop.call_soon(self._departure)

    def unwatch_departure(self) -> bool:
        self._on_departure = None
        return self._departed

    def _departure(self) -> None:
        """The client's EOF or a reset (or the connection's end): a streamed answer
        under way ends now (an HTTP/1.1 client never half-closes while it waits
        for the answer; RFC 9112 9.6 lets a server take it for a close)."""
        cancel, self._on_departure = self._on_departure, None
        if cancel is not None:
            self._departed = True
            cancel()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> bytes:
        conn = self.conn
        while True:
            event = conn.next_event()
            kind = type(event)
            if kind is http11.BodyChunk:
                data: bytes = event.data  # type: ignore[union-attr]
                if self.pace is not None:
                    self.pace.add(len(data))
                return data
            if kind is http11.EndOfRequest:
                return b""
            if event is http11.NEED_DATA:
                if self.closed:
                    raise ClientGone("connection closed while reading the body")
                self._write(conn.send_continue())
                if self._reading_paused:
                    self._reading_paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                pace = self.pace
                if pace is None:
                    pace = self.pace = BodyPace(self.config)
                wait = pace.next_wait()
                waiter = self._data_waiter = self.loop.create_future()
                try:
                    await asyncio.wait_for(waiter, wait)
                except asyncio.TimeoutError:  # 408, then close
                    conn.close_after_response()
                    if pace.limited_by_rate(wait):
                        raise HttpError(408, "", _TOO_SLOW) from None
                    raise HttpError(408, "", "The request body was not sent in time.") from None
                finally:
                    self._data_waiter = None
                continue
            if kind is http11.ProtocolFailure:
                raise HttpError(event.status, "", "The request body is malformed.")  # type: ignore[union-attr]
            raise ClientGone("connection closed while reading the body")

    def transport_gone(self) -> bool:
        """True once the transport can send nothing more: closed, or the client gone.

        Over TLS the socket transport below knows first: asyncio tells the TLS layer
        (and it us) with ``call_soon`` callbacks, which never run while a coroutine
        writes and drains without awaiting anything that waits; each of its writes
        was dropped meanwhile, with a warning per write from asyncio."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        below = self._below
        return below is not None and below.is_closing()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not self.transport_gone():
            transport.write(data)

    # -- the client's pace -----------------------------------------------------
    def send_pace(self) -> SendPace:
        """The connection's :class:`SendPace` (made at the first wait for the client)."""
        pace = self.out_pace
        if pace is None:
            pace = self.out_pace = SendPace(self.config, self.peer)
        return pace

    def taken(self, fallback: int) -> int:
        """The client's progress counter (:func:`progress`), ``fallback`` where TCP does
        not tell what the client took."""
        return progress(self._sock, fallback)

    def _progress(self, unsent: int) -> int:
        """:meth:`taken`; where TCP does not tell, what the transport took: the files
        sent, less ``unsent`` (what it holds now)."""
        return progress(self._sock, self._file_sent - unsent)

    def _fail_pace(self, pace: SendPace) -> ClientGone:
        """The client's pace failed: drop it (close() would wait for a reader that
        never comes)."""
        reason = pace.failure()
        pace.end(0)
        self.abort()
        return ClientGone(reason)

    def watch_backlog(self, before: int, after: int, unsent: int) -> str | None:
        """Output written without waiting (by a coroutine) left ``unsent`` bytes in the
        transport: while some are left, the server waits for the client, which must
        keep its pace.  ``before`` and ``after``: the progress counter before and after
        the write.  The reason to drop the client once its pace failed, else None."""
        pace = self.send_pace()
        if pace.waiting:
            if pace.sample(before) <= 0:
                reason = pace.failure()
                pace.end(0)
                return reason
            if not unsent:
                pace.end(after)
        elif unsent:
            pace.sample(after)  # a wait begins
        return None

    async def _drain(self) -> None:
        """Wait while the transport's buffer is full, as long as the client keeps its
        pace (:class:`SendPace`): ``body_timeout`` bounds a stall, not the whole
        response, and ``min_send_rate`` the client's rate."""
        if self.closed or self.transport_gone():
            raise ClientGone("connection lost")
        if self._write_paused:
            await self._wait_for_client()

    async def _wait_for_client(self) -> None:
        pace = self.send_pace()
        try:
            while self._write_paused and self.transport is not None:
                left = pace.sample(self._progress(unsent_bytes(self.transport)))
                if left <= 0:
                    raise self._fail_pace(pace)
                waiter = self.loop.create_future()
                self._drain_waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, min(left, pace.every))
                except asyncio.TimeoutError:  # look at the client's progress
                    pass
                if self.closed:
                    raise ClientGone("connection lost")
                if not waiter.done():  # (timed out: cancelled by wait_for)
                    self._drain_waiters.remove(waiter)
        finally:
            pace.end(self._progress(unsent_bytes(self.transport)))

    def _head(self, status: int, headers: HeaderLines) -> bytes:
        """The answer's head; ``Connection: close`` once a stop() came (one from this very
        request comes before the shutdown marks the requests in flight)."""
        if self.server.stop_requested:
            self.conn.close_after_response()
        return self.conn.send_head(status, headers)

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self._write(self._head(status, headers))
        await self._drain()

    async def send_data(self, data: bytes) -> None:
        self._write(self.conn.send_body(data))
        await self._drain()

    async def send_end(self) -> None:
        self._write(self.conn.send_end())
        await self._drain()

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        conn = self.conn  # the dispatcher set Content-Length; one write for all of it
        self._write(self._head(status, headers) + conn.send_body(body) + conn.send_end())
        await self._drain()

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        if self.secure:  # TLS encrypts in user space: read and write
            await super().send_file(file, offset, count)
            return
        for piece in self.conn.send_body_passthrough(FileSlice(count)):
            if isinstance(piece, FileSlice):
                await self._sendfile(file, offset, count)
            else:
                self._write(bytes(piece))
                await self._drain()

    async def _sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        """``loop.sendfile`` (the kernel copies; no file bytes pass through Python)
        in slices, sent while the client keeps its pace (:class:`SendPace`)."""
        start, end = offset, offset + count
        timeout = self.config.body_timeout
        slice_size = SENDFILE_MIN_SLICE * 4
        while offset < end:
            transport = self.transport
            if self.closed or transport is None or transport.is_closing():
                raise ClientGone("connection lost")
            size = min(slice_size, end - offset)
            started = time.monotonic()
            sending = self._sending = asyncio.ensure_future(
                self.loop.sendfile(transport, file, offset, size)
            )
            try:
                sent = await self._sent_slice(sending)
            except (OSError, RuntimeError) as exc:  # reset, or closed under us
                raise ClientGone(str(exc)) from None
            except asyncio.CancelledError:
                if not (self.closed and sending.cancelled()):
                    sending.cancel()
                    raise
                raise ClientGone("connection lost") from None  # abort() ended it
            finally:
                self._sending = None
            if not sent:  # the body cannot fill its Content-Length: drop the connection
                raise FileShrank(file, count, offset - start)
            offset += sent
            took = time.monotonic() - started
            if took < timeout / 8:
                slice_size = min(slice_size * 2, SENDFILE_SLICE)
            elif took > timeout / 3:
                slice_size = max(slice_size // 2, SENDFILE_MIN_SLICE)

    async def _sent_slice(self, sending: asyncio.Future[int]) -> int:
        """The bytes a ``loop.sendfile`` slice sent, once done: the wait for it counts as
        waiting for the client, which must keep its pace meanwhile.  Where TCP does not
        tell what the client took, the slice's progress shows only once it is done:
        meanwhile only the stall bound applies (the slice within ``body_timeout``)."""
        pace = self.send_pace()
        sent = 0
        try:
            while True:
                acked = bytes_acked(self._sock)
                counter = self._file_sent if acked is None else acked
                left = pace.sample(counter, rate=acked is not None)
                if left <= 0:
                    raise self._fail_pace(pace)
                done, _ = await asyncio.wait((sending,), timeout=min(left, pace.every))
                if done:
                    sent = sending.result()
                    return sent
        finally:
            self._file_sent += sent
            pace.end(self._progress(0))

    # Blocking forms for Response.write_bytes in sync (thread pool) or async code.
    def _blocking(self, frame: Callable[[], bytes]) -> None:
        """Write what ``frame()`` returns: from a thread, waiting for the client; from
        a coroutine on the loop, at once (it never waits), within bounds."""
        if threading.get_ident() != self.server.loop_thread:
            asyncio.run_coroutine_threadsafe(self._send_framed(frame), self.loop).result()
            return
        transport = self.transport
        if self.closed or transport is None or self.transport_gone():
            # The client left: tell a coroutine streaming in a loop to stop.
            raise ClientGone("connection lost")
        before = unsent_bytes(transport)
        data = frame()
        self._write(data)
        unsent = unsent_bytes(transport)
        limit = self.config.limits.max_send_backlog
        if limit and unsent > limit:
            reason = backlog_exceeded(self.peer, unsent, limit)
            self.abort()
            raise ClientGone(reason)
        pace = self.out_pace
        if unsent or before or (pace is not None and pace.waiting):  # the client is behind
            acked = bytes_acked(self._sock)
            if acked is None:  # what the transport took: the files sent, less what it holds
                failed = self.watch_backlog(
                    self._file_sent - before, self._file_sent - unsent, unsent
                )
            else:
                failed = self.watch_backlog(acked, acked, unsent)
            if failed is not None:
                self.abort()
                raise ClientGone(failed)

    async def _send_framed(self, frame: Callable[[], bytes]) -> None:
        self._write(frame())
        await self._drain()

    def start_blocking(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = encode_headers(headers)
        self._blocking(lambda: self._head(status, lines))

    def write_blocking(self, data: bytes) -> None:
        self._blocking(lambda: self.conn.send_body(data))

    def end_blocking(self) -> None:
        self._blocking(self.conn.send_end)

    async def drain(self) -> None:
        if threading.get_ident() != self.server.loop_thread:
            if self.closed:  # a thread's writes waited for the client already
                raise ClientGone("connection lost")
            return
        await self._drain()


class AioServer:
    """Serves a dispatcher on the running event loop."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        config: ServerConfig,
        upgrade_handler: Any = None,
        pool: SyncPool | None = None,
    ):
        self.dispatcher = dispatcher
        self.config = config
        self.upgrade_handler = upgrade_handler
        #: Runs the server's sync user code (None: the process' default pool).
        self.pool = pool
        self.connections: set[_AioConn] = set()
        #: TLS connections over max_connections being refused (not in ``connections``).
        self.refusing: set[_AioConn] = set()
        self.stopping = False
        self._hurried = False  # hurry(): the shutdown waits for no request
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._server: asyncio.base_events.Server | None = None
        self._closed = asyncio.Event()
        #: Set once the shutdown finished (any thread may wait for it).
        self.done = threading.Event()
        self.all_closed = asyncio.Event()
        self._stop_lock = threading.Lock()
        self._stop_requested = False
        self._stop_task: asyncio.Task[None] | None = None
        self._starting = False
        self._start_done = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._listener_fd = -1
        self._previous_handler: Any = None
        self._accept_warned = -math.inf

    async def start(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` (closed at once when stop() came first)."""
        if self._stop_requested:
            sock.close()
            return
        self._listener_fd = sock.fileno()
        self._previous_handler = self.loop.get_exception_handler()
        self.loop.set_exception_handler(self._on_loop_error)
        # TLS: plain TCP here; each connection starts its handshake (_AioConn._accept_tls).
        self._starting = True  # a shutdown that comes meanwhile waits for the server
        try:
            self._server = await self.loop.create_server(
                lambda: _AioConn(self),
                sock=sock,
                backlog=2048,
            )
        finally:
            self._starting = False
            self._start_done.set()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close_listener(self) -> None:
        """Stop accepting (the shutdown does it first; this is for a run that ended
        without one)."""
        if self._server is not None:
            self._server.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Out of file descriptors, asyncio pauses accepting for a second, but only
        after failing (and logging, with a traceback) once per backlog slot: 2048
        tracebacks a second.  Those become one warning a second; the rest goes on
        to the loop's previous handler."""
        sock = context.get("socket")
        fileno = getattr(sock, "fileno", lambda: -1)()
        if context.get("message", "").startswith("socket.accept() out of system resource") and (
            fileno == self._listener_fd
        ):
            now = time.monotonic()
            if now >= self._accept_warned + ACCEPT_WARNING_INTERVAL:
                self._accept_warned = now
                _log.warning("accept failed (%s); accepts pause", context.get("exception"))
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _sweep(self) -> None:
        """Time out the connections whose idle, head or linger wait expired."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn._timed_out()
        if not self._closed.is_set():
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop` has finished."""
        await self._closed.wait()

    async def _shutdown(self) -> None:
        self.stopping = True
        if self._starting:
            await self._start_done.wait()
        loop = self.loop
        # In-flight requests get drain_timeout from the stop, however long the
        # websockets' closing handshakes take: those run alongside the drain.
        deadline = loop.time() + self.config.drain_timeout
        if self._server is not None:
            self._server.close()
        for conn in [c for c in self.refusing if c.transport is None]:
            conn.abort()  # a handshake only to answer 503: cut now
        closing = {  # websockets: 1001 now
            conn: loop.create_task(conn.upgraded.shutdown())
            for conn in self.connections
            if conn.upgraded is not None
        }
        for conn in list(self.connections):
            if conn.upgraded is not None:
                continue
            if conn.task is None:
                conn.close()
            else:  # in flight: its answer says Connection: close
                conn.conn.close_after_response()
        while (
            loop.time() < deadline and not self._hurried and any(c.task for c in self.connections)
        ):
            await asyncio.sleep(0.01)
        # Past the drain deadline: cut the requests still running, so their clients learn it now.
        for conn in [c for c in self.connections if c.task is not None and c.upgraded is None]:
            conn.abort()
        late = [  # upgraded during the drain (closed with 1001 at once, see serve_aio)
            c.upgraded.shutdown()
            for c in self.connections
            if c.upgraded is not None and c not in closing
        ]
        if closing or late:
            await asyncio.gather(*closing.values(), *late, return_exceptions=True)
        # Let closing connections flush their last answer, then cut the rest.
        if self.connections:
            remaining = 0.1 if self._hurried else max(deadline - loop.time(), 1.0)
            try:
                await asyncio.wait_for(self.all_closed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        # A request still running after its cut waits for what never comes (a long-poll,
        # a generator awaiting its next event): cancelled, so its finally runs now.
        running = [c.task for c in self.connections if c.task is not None]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)
        sending = [c._sending for c in self.connections if c._sending is not None]
        for conn in list(self.connections):
            conn.abort()
        if sending:  # aborted once their sendfile ended
            await asyncio.wait(sending, timeout=1.0)
            await asyncio.sleep(0)
        self.connections.clear()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.loop.get_exception_handler() == self._on_loop_error:
            self.loop.set_exception_handler(self._previous_handler)
        self._closed.set()
        self.done.set()

    def hurry(self) -> None:
        """Stop waiting for the requests in flight (a second ^C): they are cut now
        (any thread; the shutdown looks at it every 10 ms)."""
        self._hurried = True
        self.stop(wait=False)

    @property
    def stop_requested(self) -> bool:
        """True from the first stop() or stop_async() on."""
        return self._stop_requested

    def _claim_stop(self) -> bool:
        """True for the first stop request (it runs the shutdown)."""
        with self._stop_lock:
            first = not self._stop_requested
            self._stop_requested = True
        return first

    async def stop_async(self) -> None:
        """Stop from a coroutine running on the server's loop; returns once stopped."""
        if self._claim_stop():
            await self._shutdown()
        else:
            await self._closed.wait()

    def stop(self, wait: bool = True) -> None:
        """Stop from any thread; waits for the shutdown unless on the loop thread or
        in a request (it never raises: past its bound, it returns)."""
        if self._claim_stop():
            if threading.get_ident() == self.loop_thread:
                self._stop_task = self.loop.create_task(self._shutdown())
            else:
                shutdown = self._shutdown()
                try:
                    asyncio.run_coroutine_threadsafe(shutdown, self.loop)
                except RuntimeError:  # the loop is closed: nothing left to stop
                    shutdown.close()
                    return
        if wait and not self.cannot_wait() and not self.done.wait(stop_wait_bound(self.config)):
            _log.warning("stop(): the shutdown has not finished yet; not waiting longer")

    def cannot_wait(self) -> bool:
        """True on the loop's thread or inside a request: stop() must not wait there."""
        return threading.get_ident() == self.loop_thread or SERVING.get() is self
