"""One client connection of the threaded transport.

A :class:`ThreadedConn` is served by a worker thread whenever its socket is
readable: it feeds the bytes to its :class:`~..protocol.http11.HttpConnection`,
runs the dispatcher for each complete request head, and is also the
:class:`~..dispatch.channel.Channel` of the request it serves (blocking
reads and writes; ``sendfile`` for plain sockets).

An ``async def`` controller runs on the shared background loop while the
worker thread waits for it; the loop must never wait for a client, so the
controller's socket I/O is handed to that worker thread (its
:class:`~..dispatch.invoke.LoopHelper`; :mod:`.thread_io`, shared with the WSGI
adapter): ``await reader.read()`` awaits a read done there, and
``response.write_bytes`` queues its bytes (write-behind), written there in order
before anything written after them.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .. import logger as _logging
from ..dispatch.channel import Channel, FileShrank, HeaderLines, encode_headers
from ..dispatch.dispatcher import request_line
from ..dispatch.invoke import LoopHelper, run_sync
from ..errors import HttpError
from ..protocol import http11
from ..protocol.http11 import HttpConnection
from .common import (
    DRAIN_LIMIT,
    NOWAIT,
    POLL_IN,
    POLL_OUT,
    READ_SIZE,
    SERVING,
    BodyPace,
    ClientGone,
    FileSlice,
    SendPace,
    new_connection,
    request_from_head,
    send_file,
    send_rest,
    service_unavailable,
    set_kernel_timeouts,
    wait_ready,
)
from .thread_io import DRAIN_LOW_WATER, Inbox, Outbox
from .tls_serial import send_close_notify, send_tls

if TYPE_CHECKING:
    from .threaded import ThreadedServer

__all__ = ["DRAIN_LOW_WATER", "LINGER_SECONDS", "ThreadedConn"]

_log = _logging.get_logger("simple_http_server.threaded")
_TOO_SLOW = "The request body is arriving too slowly."
_LATE = "The request body was not sent in time."
_get_running_loop = asyncio._get_running_loop
#: Seconds a connection closed after an error answer keeps discarding input.
LINGER_SECONDS = 1.0


class ThreadedConn(Channel):
    """A client connection; also the channel of the request it serves."""

    __slots__ = (
        "conn",
        "deadline",
        "departed",
        "head_due",
        "head_started",
        "helper",
        "inbox",
        "lingering",
        "out_pace",
        "outbox",
        "pace",
        "read_timeout_changed",
        "refused",
        "server",
        "sock",
        "tls_closed",
        "upgrade",
        "watching",
    )

    def __init__(self, server: ThreadedServer, sock: socket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer if isinstance(peer, tuple) else None
        self.conn: HttpConnection = new_connection(server.config)
        self.secure = isinstance(sock, ssl.SSLSocket)
        #: TLS: the closure alert went out, or must not (another thread may be in TLS).
        self.tls_closed = False
        # The first request head (after the TLS handshake) is due head_timeout after
        # the accept: a connection that never sends a request holds no slot for long.
        self.deadline = time.monotonic() + server.config.head_timeout
        #: ``deadline`` is the request head's (set once per head, never extended).
        self.head_due = True
        #: Bytes of a request head arrived: a timeout is answered with 408.
        self.head_started = False
        self.lingering = False
        #: Over max_connections (TLS): the handshake, then a 503 and a linger.
        self.refused = False
        self.upgrade: Any = None
        self.pace: BodyPace | None = None
        #: How the client takes the output the server waits to send it (made at the
        #: first such wait; a websocket session goes on with it).
        self.out_pace: SendPace | None = None
        self.read_timeout_changed = False
        #: The serving worker thread's: it runs the socket I/O of the coroutines it
        #: waits for (set by the worker for each job).
        self.helper: LoopHelper | None = None
        self.outbox: Outbox | None = None
        self.inbox: Inbox | None = None
        #: A streamed answer goes out: the client's EOF or a reset ends it (watch_departure).
        self.watching = False
        self.departed = False

    # -- Channel -------------------------------------------------------------
    def _recv(self) -> bytes:
        try:
            return self.sock.recv(READ_SIZE)
        except (TimeoutError, OSError) as exc:
            raise ClientGone(str(exc)) from None

    def _write(self, data: bytes) -> None:
        """Write now (never on an event loop), after what coroutines queued."""
        if self.outbox is not None:
            self.outbox.write(data)
        elif data:
            self._send(data)

    def _send(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the client is slow (also the outbox's
        write); ``ClientGone`` once it took nothing for ``body_timeout``."""
        if self.secure:
            self._send_tls(data)
            return
        try:
            sent = self.sock.send(data, NOWAIT)  # what the socket takes at once
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        if sent != len(data):
            self._send_rest(data, sent)

    def send_pace(self) -> SendPace:
        """The connection's :class:`SendPace` (made at the first wait for the client)."""
        pace = self.out_pace
        if pace is None:
            pace = self.out_pace = SendPace(self.server.config, self.peer)
        return pace

    def _send_rest(self, data: bytes, sent: int) -> None:
        """The client is slower than the answer: wait for it to take the rest."""
        try:
            send_rest(self.sock, data, sent, self.send_pace())
        except OSError as exc:  # also TimeoutError: a stall, or a client too slow
            raise ClientGone(str(exc)) from None

    def _send_tls(self, data: bytes) -> None:
        """:meth:`_send` on TLS (a non-blocking socket), in writes of 64 KiB at most,
        waiting for the client as on a plain socket: never with a socket timeout, which
        a body read may have shortened."""
        try:
            send_tls(cast(ssl.SSLSocket, self.sock), data, self.send_pace)
        except OSError as exc:  # also TimeoutError: a stall, or a client too slow
            raise ClientGone(str(exc)) from None

    async def receive(self) -> bytes:
        conn = self.conn
        while True:
            event = conn.next_event()
            if type(event) is http11.BodyChunk:
                if self.pace is not None:
                    self.pace.add(len(event.data))
                return event.data
            if type(event) is http11.EndOfRequest:
                return b""
            if event is http11.NEED_DATA:
                pace = self.pace
                if pace is None:
                    pace = self.pace = BodyPace(self.server.config)
                wait = pace.next_wait()
                slow = pace.limited_by_rate(wait)
                if _get_running_loop() is None:
                    self._write(conn.send_continue())
                    read = self._read_now(wait, slow)
                else:  # a coroutine: the worker thread reads, the loop goes on
                    self._write_later(conn.send_continue())
                    read = await self._read_later(wait, slow)
                if read is None:  # 408, then close
                    conn.close_after_response()
                    raise HttpError(408, "", _TOO_SLOW if slow else _LATE)
                conn.receive_data(read)
                continue
            if type(event) is http11.ProtocolFailure:
                raise HttpError(event.status, "", "The request body is malformed.")
            raise ClientGone("connection closed while reading the body")

    def _read_body(self, wait: float, slow: bool) -> bytes | None:
        """Body bytes, waiting ``wait`` seconds at most (None: timed out)."""
        if self.secure:
            return self._read_tls(wait)
        if slow:
            self._set_read_timeout(wait)
        elif self.read_timeout_changed:  # body_timeout again, not a rate's wait of before
            self._restore_read_timeout()
        try:
            return self.sock.recv(READ_SIZE)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def _read_tls(self, wait: float) -> bytes | None:
        """:meth:`_read_body` on TLS (a non-blocking socket): the wait is a ``poll``."""
        sock = self.sock
        deadline = time.monotonic() + wait
        while True:
            try:
                return sock.recv(READ_SIZE)
            except ssl.SSLWantReadError:
                want = POLL_IN
            except ssl.SSLWantWriteError:
                want = POLL_OUT
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            try:
                if not wait_ready(sock, want, deadline - time.monotonic()):
                    return None
            except OSError as exc:  # closed under us
                raise ClientGone(str(exc)) from None

    def _read_now(self, wait: float, slow: bool) -> bytes | None:
        """:meth:`_read_body`, after a read a coroutine stopped waiting for."""
        inbox = self.inbox
        if inbox is not None and inbox.ready:
            return inbox.take()
        return self._read_body(wait, slow)

    async def _read_later(self, wait: float, slow: bool) -> bytes | None:
        """:meth:`_read_body` on the worker thread, awaited by a coroutine."""
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = Inbox()
        return await inbox.read(
            lambda: self._read_body(wait, slow), self._post, self._readable, wait
        )

    def _readable(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for body bytes (what was queued before, such
        as a 100 Continue, goes out first)."""
        outbox = self.outbox
        if outbox is not None:
            with outbox.write_lock:
                outbox.flush()
        sock: Any = self.sock
        if self.secure and sock.pending():  # decrypted bytes wait in the TLS layer
            return True
        helper = self.helper
        try:
            if helper is not None and hasattr(select, "poll"):
                # Ends early when the coroutine posts a write meanwhile.
                return helper.wait_readable(sock.fileno(), timeout)
            if hasattr(select, "poll"):  # not select(): descriptors may exceed FD_SETSIZE
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN)
                return bool(poller.poll(max(0, math.ceil(timeout * 1000))))
            return bool(select.select([sock], [], [], timeout)[0])
        except (OSError, ValueError) as exc:  # closed under us
            raise ClientGone(str(exc)) from None

    # -- output written by coroutines (write-behind) ---------------------------
    def _write_later(self, data: bytes) -> None:
        """Queue ``data`` for the worker thread (on an event loop: it never waits for
        a client); past ``max_send_backlog`` unsent, the client is dropped."""
        outbox = self.outbox
        if outbox is None:
            if not data:
                return
            limit = self.server.config.limits.max_send_backlog
            outbox = self.outbox = Outbox(self._send, self.cut, self._post, limit, self.peer)
        outbox.put(data)

    def _post(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the worker thread (or, with none waiting, a thread of its own)."""
        helper = self.helper
        if helper is None:
            helper = self.helper = LoopHelper()
        helper.post(job)

    def cut(self) -> None:
        """Shut the socket down: this also ends a write stalled in another thread."""
        self.tls_closed = True  # the thread writing owns the TLS state: no alert from here
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # not SSLSocket's: no TLS state
        except (OSError, TypeError):
            pass

    def _finish_output(self) -> None:
        """The request is over: what coroutines queued goes out now."""
        outbox = self.outbox
        if outbox is not None:
            outbox.finish()
            self.outbox = None

    async def drain(self) -> None:
        outbox = self.outbox
        if outbox is not None:
            await outbox.drain()

    def start_blocking(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._write_from_user(self._head(status, encode_headers(headers)))

    def _head(self, status: int, headers: HeaderLines) -> bytes:
        """The answer's head; ``Connection: close`` once the server is stopping (a stop()
        from this very request comes before the shutdown marks the requests in flight)."""
        if self.server.stopping:
            self.conn.close_after_response()
        return self.conn.send_head(status, headers)

    def write_blocking(self, data: bytes) -> None:
        self._write_from_user(self.conn.send_body(data))

    def end_blocking(self) -> None:
        self._write_from_user(self.conn.send_end())

    def _write_from_user(self, data: bytes) -> None:
        if _get_running_loop() is None:
            self._write(data)  # a thread waits for its client
        else:
            self._write_later(data)

    def _set_read_timeout(self, seconds: float) -> None:
        """Bound the next body read on a plain socket (its kernel receive timeout)."""
        self.read_timeout_changed = True
        set_kernel_timeouts(self.sock, seconds, self.server.config.body_timeout)

    def _restore_read_timeout(self) -> None:
        if self.read_timeout_changed:
            self.read_timeout_changed = False
            timeout = self.server.config.body_timeout
            set_kernel_timeouts(self.sock, timeout, timeout)

    # -- a streamed answer whose client leaves ---------------------------------
    def watch_departure(self, cancel: Callable[[], object] | None) -> None:
        self.departed = False
        if not self.conn.request_complete:  # input is the body's yet
            return
        self.watching = True
        helper = self.helper
        if helper is not None:  # while the thread waits for a coroutine's next piece
            helper.watch(self.sock.fileno(), self._on_input)

    def unwatch_departure(self) -> bool:
        if self.watching:
            self.watching = False
            if self.helper is not None:
                self.helper.unwatch()
        return self.departed

    def _on_input(self) -> None:
        """Input while the thread waits for the stream (its helper's watch): the
        client left (what the thread waits for is cancelled), or it pipelined its
        next request (left buffered; no more watching)."""
        helper = self.helper
        assert helper is not None
        helper.unwatch()
        if self._client_left():
            self.departed = True
            helper.cancel_waits(_left)

    def _client_left(self) -> bool:
        """True once the client's EOF or a reset arrived (never waits).  Bytes of a
        next request stay for it: in the kernel, or (TLS, which must decrypt to tell
        an alert from data) in the HTTP connection's buffer."""
        sock: Any = self.sock
        if self.secure:
            try:
                data = sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except (OSError, ValueError):
                return True
            if data:
                self.conn.receive_data(data)
            return not data
        try:
            return not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self._write(self._head(status, headers))

    async def send_data(self, data: bytes) -> None:
        # A stream's piece computed in this thread (a sync generator cannot be
        # interrupted while it waits): its client may have left meanwhile.
        if self.watching and self.outbox is None and self._client_left():
            self.departed = True
            raise ClientGone("the client left while the stream went out")
        self._write(self.conn.send_body(data))

    async def send_end(self) -> None:
        self._write(self.conn.send_end())

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        conn = self.conn  # the dispatcher set Content-Length; one send for all of it
        self._write(self._head(status, headers) + conn.send_body(body) + conn.send_end())

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        if self.secure:
            await super().send_file(file, offset, count)
            return
        for piece in self.conn.send_body_passthrough(FileSlice(count)):
            if isinstance(piece, FileSlice):
                self._sendfile(file, offset, count)
            else:
                self._write(bytes(piece))

    def close_after_response(self) -> None:
        self.conn.close_after_response()

    def _sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        try:
            sent = send_file(self.sock, file, offset, count, self.send_pace)
        except OSError as exc:  # also TimeoutError, or closed under us (stop() cut it)
            raise ClientGone(str(exc)) from None
        if sent < count:  # the body cannot fill its Content-Length: drop the connection
            raise FileShrank(file, count, sent)

    # -- lifecycle -----------------------------------------------------------
    def serve_ready(self) -> bool:
        """Serve what the socket has; True to park the connection again."""
        if self.refused:
            return self._refuse_when_ready()
        if self.secure:
            return self._serve_ready_tls()
        self.conn.receive_data(self._recv())
        return self.serve_buffered()

    def _serve_ready_tls(self) -> bool:
        """Like :meth:`serve_ready`, without blocking on a partial TLS record or handshake."""
        sock: Any = self.sock  # non-blocking (see ThreadedServer._wrap)
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if not self.head_due:  # a partial record of the next request
                    self.head_due = True
                    self.deadline = time.monotonic() + self.server.config.head_timeout
                return True
            except ssl.SSLError:  # not TLS (plain HTTP to this port), or a failed handshake
                self._linger_after_tls_failure()
                return False
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            self.conn.receive_data(data)
            park = self.serve_buffered()
            # TLS may hold decrypted bytes the selector cannot see.
            if not (park and sock.pending()):
                return park

    def _linger_after_tls_failure(self) -> None:
        """Close as the asyncio transport does, with a FIN: closing at once with the
        client's unread bytes (a plain HTTP request) would reset the connection."""
        self.tls_closed = True  # no closure alert on a connection that never spoke TLS
        self.linger()

    def _refuse_when_ready(self) -> bool:
        """A refused TLS connection: go on with its handshake as its bytes arrive (True:
        park it again); once done, answer 503 and linger (False)."""
        sock: Any = self.sock
        sock.setblocking(False)
        try:
            sock.do_handshake()
            sock.send(service_unavailable())  # a small record into an empty buffer
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except ssl.SSLError:  # not TLS, or a failed handshake
            self._linger_after_tls_failure()
            return False
        except (OSError, ValueError):  # a client gone
            return False
        self.linger()
        return False

    def serve_buffered(self) -> bool:
        conn = self.conn
        server = self.server
        while True:
            event = conn.next_event()
            kind = type(event)
            if kind is http11.RequestHead:
                self.head_started = self.head_due = False
                if not self._serve_request(event):  # type: ignore[arg-type]
                    return False
                if server.stopping or not conn.start_next_cycle():
                    return False
                # Kept alive: idle until the next head starts (empty lines do not count).
                self.deadline = time.monotonic() + server.config.idle_timeout
                if conn.idle:  # what next_event() would say (NEED_DATA), without it
                    return True
                continue
            if event is http11.NEED_DATA:
                if self.head_started:
                    return True
                if server.stopping:
                    return False
                if conn.has_buffered_data:
                    self.head_started = True
                    if not self.head_due:  # the next head: due head_timeout from now
                        self.head_due = True
                        self.deadline = time.monotonic() + server.config.head_timeout
                return True
            if kind is http11.ProtocolFailure:
                self._write(conn.send_error(event.status))  # type: ignore[union-attr]
                self.linger()
                return False
            return False  # ConnectionLost / PAUSED without an upgrade

    def _serve_request(self, head: http11.RequestHead) -> bool:
        server = self.server
        # Once complete (no body: most requests), it stays so: asked once.
        complete = self.conn.request_complete
        # The body's pace is measured from the head on (a body is pending).
        self.pace = None if complete else BodyPace(server.config)
        upgrade = server.upgrade_handler
        if upgrade is not None and head.upgrade is not False and upgrade.wants(head):
            if upgrade.serve_threaded(self, head):
                self.upgrade = upgrade  # a websocket thread owns the socket now
            return False
        request = request_from_head(head, self.secure)
        try:
            # A fresh context per request: context variables set by one request
            # never leak into the next one served by the same worker thread.
            contextvars.Context().run(_dispatch, server, request, self)
            if self.outbox is not None:
                self._finish_output()
        except ClientGone:
            return False
        except Exception:
            _log.exception("Error while sending the response to %s", request_line(request))
            try:
                self._write(self.conn.send_error(500))
            except ClientGone:
                pass
            return False
        if not complete and not self.conn.request_complete:
            # Draining goes on only for a body small enough (and paced like any
            # body); otherwise a lingering close, so the client reads our answer.
            keep = not self.conn.closing and run_sync(self.discard_body(DRAIN_LIMIT))
            if not keep:
                self.linger()
            self._restore_read_timeout()
            return keep
        if self.read_timeout_changed:
            self._restore_read_timeout()
        return True

    def linger(self) -> None:
        """Half-close; the selector then discards what the client still sends.

        Closing with unread input would reset the connection and the client
        could lose our answer (a 400, 413 or 431); lingering holds no worker.
        """
        self.head_started = self.head_due = False
        self.deadline = time.monotonic() + LINGER_SECONDS
        self._send_close_notify()
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.lingering = True
        except OSError:
            pass

    def discard_input(self) -> bool:
        """Read and drop what a lingering client sent; False once it is done."""
        try:
            for _ in range(16):
                if not self.sock.recv(READ_SIZE, socket.MSG_DONTWAIT):
                    return False
        except (BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        self._send_close_notify()
        try:
            self.sock.close()
        except OSError:
            pass

    def _send_close_notify(self) -> None:
        """TLS: the closure alert before the connection closes (once; by the thread that
        owns the connection: not after :meth:`cut`)."""
        if self.secure and not self.tls_closed:
            self.tls_closed = True
            send_close_notify(self.sock)  # type: ignore[arg-type]

    def rearm_failed(self) -> None:
        """The poller could not watch this connection again: drop it."""
        self.server._drop(self)


def _left() -> BaseException:
    return ClientGone("the client left while the stream went out")


def _dispatch(server: ThreadedServer, request: Any, conn: ThreadedConn) -> None:
    SERVING.set(server)
    run_sync(server.dispatcher.handle(request, conn))
