"""Websocket I/O for both transports: the upgrade, then one session per connection.

Threaded transport: the handshake runs in the pool worker that read the
request; the session then gets a thread of its own (a blocking ``recv`` loop),
so open websockets never hold pool workers.  Asyncio transport: the
connection's ``upgraded`` object receives the bytes; a task delivers the
events to the handler in order.  Sends are safe from any thread: the threaded
link queues frames in order and writes them outside the session lock (a sending
thread itself, a coroutine's through the session's writer thread: never a
blocking write on an event loop); the asyncio link writes in order, lets worker
threads wait for the transport to drain, and finishes a message sent from the
loop in a task when the transport's buffer fills (later sends wait their turn).
A worker thread reads the pieces of its own messages (a file's), also when it
had to wait for the loop's: blocking reads never run on the loop.  Coroutines
never wait for the client: ``max_send_backlog`` bounds what they leave unsent,
``session.drain()`` waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .. import logger as _logging
from ..dispatch.channel import DRAIN_LOW_WATER
from ..dispatch.invoke import (
    LoopHelper,
    call_soon_batched,
    help_while_waiting,
    run_sync,
    wait_for_loop,
)
from ..dispatch.ws_handlers import Accepted, Rejected, negotiate
from ..dispatch.ws_session import (
    Keepalive,
    LinkBase,
    SessionCut,
    message_size,
    warn_dropped,
)
from ..protocol import http11, ws
from ..protocol.http11 import HttpConnection, RequestHead
from ..protocol.ws import WebsocketProtocol, WsEvent
from .common import (
    SERVING,
    ClientGone,
    send_rest,
    set_kernel_timeouts,
    set_receive_timeout,
    unsent_bytes,
)
from .thread_io import report
from .threaded_conn import LINGER_SECONDS
from .tls_serial import SerializedTls

__all__ = ["WebsocketUpgrade", "wants_websocket"]

_log = _logging.get_logger("simple_http_server.websocket")

#: Seconds to wait for the peer's Close answer before dropping the connection.
CLOSE_TIMEOUT = 5.0
#: Read size; small when compressed, so one read cannot inflate to much memory.
_READ = 256 * 1024
_READ_COMPRESSED = 16 * 1024
#: Received bytes queued for the handler before the asyncio link stops reading.
_QUEUE_HIGH = 1024 * 1024
#: Bytes a worker thread's frames may wait for the loop to write them before the
#: thread waits for the loop (a file streamed from a thread is never buffered whole);
#: in the threaded transport, the reading side's replies queued behind a write
#: before the reading thread waits for it (a ping flood stops being read).
_OUT_HIGH = 256 * 1024
#: Seconds ``stop()`` watches a session's output for progress before it takes the
#: client for one that stopped reading and cuts the session.
_STUCK_AFTER = 0.2
#: RFC 6455 7.4.1 (IANA): the server cannot take the session now.
CLOSE_TRY_AGAIN_LATER = 1013
#: Bytes written by one ``send`` at most, so that progress shows (keepalive, drain).
_WRITE_SLICE = 256 * 1024
#: Seconds a session's writer thread waits for more output before it ends.
_WRITER_IDLE = 5.0
_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
_running_loop = asyncio._get_running_loop

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    def kernel_unsent(fd: int) -> int:
        """Bytes of a TCP socket the peer has not acknowledged yet (0 when unknown)."""
        if fd < 0:
            return 0
        try:
            raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

else:

    def kernel_unsent(fd: int) -> int:
        """Bytes of a TCP socket the peer has not acknowledged yet (0: unknown here)."""
        return 0


def wants_websocket(head: RequestHead) -> bool:
    """True for a request the servers answer with a websocket handshake: one whose
    ``Upgrade`` names ``websocket``; any other (``Upgrade: h2c``...) is plain HTTP."""
    if head.upgrade is False:  # the parser saw no Upgrade header: most requests
        return False
    return ws.is_websocket_upgrade(head)


def _request_done(http: HttpConnection) -> bool:
    """Read the (empty) rest of the upgrade request; True when h11 paused for the switch."""
    event = http.next_event()
    if type(event) is not http11.EndOfRequest:
        return False
    return http.next_event() is http11.PAUSED


def _reject_bytes(http: HttpConnection, rejected: Rejected) -> bytes:
    http.close_after_response()
    headers = [(b"Content-Type", b"application/json; charset=utf-8"), *rejected.headers]
    try:
        return http.send_response(rejected.status, headers, rejected.body())
    except Exception:
        return http.send_error(rejected.status)


class WebsocketUpgrade:
    """The upgrade handler both transports call for websocket requests."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.config = dispatcher.config
        self._threaded: set[ThreadedLink] = set()
        self._aio: set[AioLink] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._closing_at = 0.0
        self._thread_warning_due = 0.0  # when a refused session thread may be logged again

    #: True for websocket upgrade requests (the TestClient decides with the same function).
    wants = staticmethod(wants_websocket)

    async def _negotiate(self, http: HttpConnection, head: RequestHead) -> Accepted | Rejected:
        if not _request_done(http):
            return Rejected(400, [], "A websocket upgrade request must not have a body.")
        if self._stopping:
            return Rejected(503, [], "The server is shutting down.")
        return await negotiate(
            self.dispatcher.app.compiled().websockets,
            head,
            max_message_size=self.dispatcher.config.limits.max_websocket_message_size,
        )

    def _protocol(self, http: HttpConnection, accepted: Accepted) -> WebsocketProtocol:
        return WebsocketProtocol(
            extensions=accepted.extensions,
            trailing_data=http.trailing_data,
            input_ended=http.input_ended,  # (asyncio: the client left during the handshake)
            max_message_size=self.config.limits.max_websocket_message_size,
            stream_binary=accepted.callbacks.on_binary_frame is not None,
        )

    # -- threaded transport ------------------------------------------------------
    def serve_threaded(self, conn: Any, head: RequestHead) -> bool:
        """Run the handshake; True when a session thread took the socket over."""
        http: HttpConnection = conn.conn
        result = run_sync(self._negotiate(http, head))
        try:  # as any answer: paced (a TLS socket is non-blocking)
            if isinstance(result, Rejected):
                conn._send(_reject_bytes(http, result))
                return False
            conn._send(http.send_switch(result.headers))
        except ClientGone:
            return False
        link = ThreadedLink(self, conn, self._protocol(http, result), result)
        with self._lock:
            self._threaded.add(link)
            stopping = self._stopping  # close_threaded() may have run during the handshake
        thread = threading.Thread(
            target=link.run, name=f"shs-ws-{link.session.id[:8]}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # a process or thread limit (a container's pids.max)
            self._no_thread(conn, link, exc)
            return False
        if stopping:
            link.close_soon(ws.CLOSE_GOING_AWAY, "Server is shutting down")
        return True

    def _no_thread(self, conn: Any, link: ThreadedLink, exc: RuntimeError) -> None:
        """The system refused the session its thread: close 1013 (Try Again Later),
        the session never opened."""
        with self._lock:
            self._threaded.discard(link)
        self.warn_no_thread("session", exc)
        link.proto.send_close(CLOSE_TRY_AGAIN_LATER, "Try again later")
        with contextlib.suppress(ClientGone):
            conn._send(link.proto.data_to_send())

    def warn_no_thread(self, what: str, exc: RuntimeError) -> None:
        """Log that the system refused a session's ``what`` thread (a process or thread
        limit such as a container's ``pids.max``): one warning a second at most."""
        now = time.monotonic()
        if now >= self._thread_warning_due:
            self._thread_warning_due = now + 1.0
            _log.warning("A websocket %s thread could not be started (%s):"
                         " closed with 1013", what, exc)  # fmt: skip

    def close_threaded(self) -> None:
        """Close every threaded session with 1001 now (stop() waits with :meth:`wait_threaded`)."""
        self._stopping = True
        self._closing_at = time.monotonic()
        with self._lock:
            links = list(self._threaded)
        for link in links:
            if link.writing_stuck(_STUCK_AFTER):  # on a client that stopped reading: cut it
                link.abort()
            else:
                link.close_soon(ws.CLOSE_GOING_AWAY, "Server is shutting down")

    def wait_threaded(self) -> None:
        """Wait for the sessions to end, up to CLOSE_TIMEOUT after :meth:`close_threaded`;
        then cut those left."""
        deadline = self._closing_at + CLOSE_TIMEOUT
        with self._lock:
            links = list(self._threaded)  # with those whose handshake ended meanwhile
        for link in links:
            link.done.wait(max(0.0, deadline - time.monotonic()))
            link.abort()
            # A callback still waiting for a coroutine: cancelled (its finally runs),
            # so the session's thread ends with the server.
            link.helper.cancel_waits(SessionCut)

    def _forget(self, link: Any) -> None:
        with self._lock:
            self._threaded.discard(link)
            self._aio.discard(link)

    # -- asyncio transport -------------------------------------------------------
    async def serve_aio(self, conn: Any, head: RequestHead) -> None:
        """Run the handshake; on success ``conn.upgraded`` receives the bytes."""
        http: HttpConnection = conn.conn
        result = await self._negotiate(http, head)
        if isinstance(result, Rejected):
            conn._write(_reject_bytes(http, result))
            conn.close()
            return
        if conn.closed and not http.input_ended:
            return  # reset, or cut at shutdown: no session
        # A client that closed meanwhile (over TLS, the transport is gone already)
        # still gets its session, as in the threaded transport: on_open, the frames
        # it sent before its end of input, then on_close with 1006.
        conn._write(http.send_switch(result.headers))
        link = AioLink(self, conn, self._protocol(http, result), result)
        with self._lock:
            self._aio.add(link)
            stopping = self._stopping  # close_all_aio() may have run during the handshake
        conn.upgraded = link
        link.start()
        if stopping:
            LinkBase.close(link, ws.CLOSE_GOING_AWAY, "Server is shutting down")

    def close_all_aio(self) -> None:
        """Send 1001 to every asyncio session (called once at shutdown)."""
        self._stopping = True
        with self._lock:
            links = list(self._aio)
        for link in links:  # at once, even while a message is being sent
            LinkBase.close(link, ws.CLOSE_GOING_AWAY, "Server is shutting down")


class _Queued:
    """A message (or a close) waiting for the ones ahead of it on a threaded link.

    A coroutine's is framed by the thread that writes when its turn comes (never
    an event loop).  A ``turn`` carries nothing: the thread that waits for it
    then frames and writes its own message (a file's pieces are read there).
    ``echo``: the Close that is due (the answer to the peer's, or a failure's).
    """

    __slots__ = ("close", "echo", "pieces", "size", "turn")

    def __init__(
        self,
        pieces: Iterable[str | bytes] | None = None,
        size: int | None = 0,
        close: tuple[int, str] | None = None,
        turn: threading.Event | None = None,
        echo: bool = False,
    ) -> None:
        self.pieces = pieces
        self.size = size  # None: read as it goes (a file), not counted
        self.close = close
        self.turn = turn
        self.echo = echo


class ThreadedLink(LinkBase):
    """A session on a blocking socket, served by its own thread.

    Output: frames are made under the session lock and queued (``_out``, in
    the order they go out); they are written under ``_write_lock``, never under
    the session lock, so the reading side (pongs, the Close echo, keepalive)
    never waits for a stalled write.  A thread that sends writes its bytes
    itself, so it waits for a slow client (flow control).  A coroutine only
    queues them: what the socket does not take at once (a non-blocking send)
    goes out from the session's writer thread, started on demand.  While a
    message is framed piece by piece (``_busy``) or messages wait for their turn
    (``_pending``), later messages queue behind them.
    """

    def __init__(
        self, upgrade: WebsocketUpgrade, conn: Any, proto: WebsocketProtocol, accepted: Accepted
    ) -> None:
        super().__init__(proto, accepted.callbacks, accepted.request)
        self.upgrade = upgrade
        self.conn = conn
        # TLS: other threads write while this one reads; OpenSSL wants one at a time.
        self.sock: Any = (
            SerializedTls(conn.sock, upgrade.config.body_timeout) if conn.secure else conn.sock
        )
        self.done = threading.Event()
        #: The session thread's (see :class:`~..dispatch.invoke.LoopHelper`): what it
        #: waits for is cancelled when the server stops.
        self.helper = LoopHelper()
        self._timer: threading.Timer | None = None
        self._answer_timer: threading.Timer | None = None
        self._poll: Any = None  # select.poll() of a TLS socket, once keepalive waits
        fileno = getattr(self.sock, "fileno", None)
        self._fd: int = fileno() if fileno is not None else -1
        # Output.  Counters only grow: ``_queued`` under the session lock, the
        # others under the write lock, so no count is written by two threads.
        self._out: deque[bytes] = deque()
        self._queued = 0  # bytes put in _out
        self._written = 0  # bytes of _out the kernel took
        self._sent = 0  # bytes the kernel took (also those written without _out)
        self._items_in = 0
        self._items_out = 0
        self._pending: deque[_Queued] = deque()
        self._pending_size = 0
        self._unsized = 0  # coroutines' messages of unknown size not sent yet
        self._busy = False  # a message is being framed piece by piece
        self._write_lock = threading.RLock()
        self._dead = False  # nothing can be written any more
        self._dropped = False
        self._writer: threading.Thread | None = None
        self._writer_cond = threading.Condition(threading.Lock())
        self._writer_wanted = False
        self._writer_stop = False
        self._drain_lock = threading.Lock()
        self._drain_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # At the last keepalive check: bytes the peer acknowledged, and whether any
        # were waiting (a peer whose kernel acknowledges what its reader never
        # reads takes small output too: only a backlog that shrinks shows a reader).
        self._acked = 0
        self._backlogged = False
        # A non-blocking send: a flag on plain sockets; TLS ones never block.
        self._nowait = (_MSG_DONTWAIT or 1) if conn.secure else _MSG_DONTWAIT
        self._tls: bool = conn.secure
        self._backlog_limit: int = upgrade.config.limits.max_send_backlog or sys.maxsize  # 0: none

    # -- output: queued under the session lock, written outside it --------------
    def _write(self, data: bytes) -> None:
        if not self._dead:
            self._out.append(data)
            self._queued += len(data)
            self._items_in += 1

    def _send_out(self, wait: bool = True) -> None:
        if not self._out:
            return
        if _running_loop() is not None:  # never a write that may block on an event loop
            self._send_soon(check=True)
            return
        lock = self._write_lock
        if not lock.acquire(False):
            # Someone is writing: it takes these bytes too (or hands them on).  The
            # reading side's replies do not wait for it, unless they pile up.
            if not wait and sum(map(len, self._out)) <= _OUT_HIGH:
                return
            lock.acquire()
        try:
            mine = self._items_in
            while self._items_out < mine and self._out and not self._dead:
                self._write_some()
        finally:
            lock.release()
        if self._out or self._pending:
            self._wake_writer()

    def _take(self) -> tuple[bytes, int]:
        """The next bytes to write (small pieces joined) and how many pieces they are."""
        out = self._out
        data = out.popleft()
        if not out or len(data) >= _WRITE_SLICE:
            return data, 1
        parts = [data]
        size = len(data)
        while out and size < _WRITE_SLICE:
            data = out.popleft()
            parts.append(data)
            size += len(data)
        return b"".join(parts), len(parts)

    def _write_some(self) -> None:
        """Write the next bytes of ``_out`` (the write lock held; blocks while the
        client is slow, up to ``body_timeout`` without progress: then it is lost)."""
        data, count = self._take()
        try:
            if len(data) <= _WRITE_SLICE:
                self._send_all(data)
                self._sent += len(data)
                self._written += len(data)
            else:  # in slices: progress shows (keepalive, drain) during a long write
                with memoryview(data) as view:
                    for start in range(0, len(view), _WRITE_SLICE):
                        piece = view[start : start + _WRITE_SLICE]
                        self._send_all(piece)
                        self._sent += len(piece)
                        self._written += len(piece)
        except OSError:
            self._write_failed()
            return
        self._items_out += count
        if self._drain_waiters:
            self._wake_drained()

    def _send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` (the write lock held), waiting while the client is
        slow; ``OSError`` once its pace fails (a stall, or slower than
        ``min_send_rate``: the connection's :class:`SendPace`) or it is gone."""
        sock = self.sock
        if self._tls:  # SerializedTls: its own waits, paced the same way
            sock.sendall(data, self.conn.send_pace())
            return
        try:
            sent = sock.send(data, self._nowait)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            send_rest(sock, data, sent, self.conn.send_pace())

    def _write_queued(self) -> None:
        while self._out and not self._dead:
            self._write_some()

    def _write_nowait(self) -> None:
        """Write what the socket takes now (the write lock held; never blocks)."""
        out = self._out
        while out and not self._dead:
            data, count = self._take()
            try:
                sent = self.sock.send(data, self._nowait)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._write_failed()
                return
            self._sent += sent
            self._written += sent
            if sent < len(data):
                out.appendleft(data[sent:])
                self._items_out += count - 1
                break
            self._items_out += count
        if self._drain_waiters:
            self._wake_drained()

    def _send_now(self, data: bytes) -> None:
        """A coroutine's frame, nothing queued, the write lock held: what the socket
        takes now goes at once, the rest first in line for the writer thread."""
        try:
            try:
                sent = self.sock.send(data, self._nowait)
            except BlockingIOError:
                sent = 0
            self._sent += sent
            if sent < len(data):
                with self.lock:  # ahead of what was queued since: it was framed first
                    self._out.appendleft(data[sent:])
                    self._queued += len(data) - sent
                self._items_out -= 1  # one more to write before the items counted
        except OSError:
            self._write_failed()
        finally:
            self._write_lock.release()
        if self._out or self._pending:
            self._leave_to_writer(True)

    def _send_soon(self, check: bool = False) -> None:
        """Write without blocking; the writer thread sends the rest.  ``check``: a
        coroutine sent, which may leave no more than ``max_send_backlog`` unsent."""
        if self._nowait and self._out and self._write_lock.acquire(False):
            try:
                self._write_nowait()
            finally:
                self._write_lock.release()
        self._leave_to_writer(check)

    def _leave_to_writer(self, check: bool) -> None:
        if check and self._unsent() > self._backlog_limit:
            self._drop()
            return
        if self._out or self._pending:
            self._wake_writer()

    def _unsent(self) -> int:
        return self._queued - self._written + self._pending_size

    def _write_failed(self) -> None:
        """A write failed, or timed out (the client stopped reading): the connection is lost.

        The session is closed at once (``is_closed``), also while the reading thread
        waits for a callback (one that sends in a loop until the session closes)."""
        self._dead = True
        with self.lock:
            self.proto.receive_data(b"")  # lost: the reading thread reports it (1006)
        self._out.clear()
        self.abort()  # the reading thread sees the end: on_close runs (1006)
        self._release_waiters()

    def _drop(self) -> None:
        """A coroutine's send left more than ``max_send_backlog`` unsent: the client is
        taken as not reading and the connection dropped; later sends do nothing."""
        if self._dropped:
            return
        self._dropped = True
        warn_dropped(self.session.id, self._unsent(), self._backlog_limit)
        with self.lock:
            self._dead = True
            self.proto.close_event()  # closed for good: on_close runs with 1006
            self.proto.data_to_send()
        if self._write_lock.acquire(False):
            self._out.clear()
            self._write_lock.release()
        self.abort()
        self._release_waiters()

    def _release_waiters(self) -> None:
        """The connection is lost: threads waiting for their turn and drains return."""
        with self.lock:
            pending, self._pending = self._pending, deque()
            self._pending_size = self._unsized = 0
        for item in pending:
            if item.turn is not None:
                item.turn.set()
        self._wake_drained()

    # The writer thread sends what coroutines left unsent and frames their
    # messages in turn; it stops at a thread's turn (that thread sends its own).
    def _wake_writer(self) -> None:
        with self._writer_cond:
            self._writer_wanted = True
            if self._writer is not None:
                self._writer_cond.notify()
                return
            if self._writer_stop:
                return
            thread = threading.Thread(
                target=self._writer_main, name=f"shs-ws-out-{self.session.id[:8]}", daemon=True
            )
            self._writer = thread
        try:
            thread.start()
        except RuntimeError as exc:  # a process or thread limit (a container's pids.max)
            self._no_writer(exc)

    def _no_writer(self, exc: RuntimeError) -> None:
        """The system refused the writer thread: what waits for it would wait forever
        (an event loop never blocks on a socket), so the session ends.  A 1013 Close
        (Try Again Later) follows what the socket takes now, when all of it went (a
        frame cut short cannot be followed), then the connection is cut; on_close
        reports 1013 (or 1006 when that Close could not be sent)."""
        with self._writer_cond:
            self._writer = None
            self._writer_stop = True  # no second try: the session is over
        self.upgrade.warn_no_thread("writer", exc)
        if self._write_lock.acquire(False):  # else a thread writes: it stops at _dead
            try:
                self._write_nowait()
                with self.lock:
                    whole = not self._out and not self._dead
                    if whole and self.proto.send_close(CLOSE_TRY_AGAIN_LATER, "Try again later"):
                        self._flush()
                if whole:
                    self._write_nowait()
                self._out.clear()
            finally:
                self._write_lock.release()
        with self.lock:
            self._dead = True
            self.proto.close_event()  # closed for good: the reading thread reports it
        self.abort()
        self._release_waiters()

    def _writer_main(self) -> None:
        try:
            self._write_until_idle()
        except Exception:  # a bug: drop the session rather than leave its sends waiting
            _log.exception("Websocket session %s: its writer failed", self.session.id)
            self._write_failed()
        finally:  # the next send starts a writer again
            with self._writer_cond:
                if self._writer is threading.current_thread():
                    self._writer = None

    def _write_until_idle(self) -> None:
        cond = self._writer_cond
        while True:
            with cond:
                if not self._writer_wanted and not self._writer_stop:
                    cond.wait(_WRITER_IDLE)
                if self._writer_stop or not self._writer_wanted:
                    self._writer = None  # idle: started again when needed
                    return
                self._writer_wanted = False
            with self._write_lock:
                self._process()
            if self._out and not self._dead:  # queued while we were leaving
                with cond:
                    self._writer_wanted = True

    def _process(self) -> None:
        """Write the queue in order (the write lock held, on the writer thread)."""
        while not self._dead:
            if self._out:
                self._write_some()
                continue
            with self.lock:
                if self._busy or not self._pending:
                    return
                item = self._pending[0]
                if item.turn is None:
                    self._pending.popleft()
                    self._pending_size -= item.size or 0
                    self._busy = True
            if item.turn is not None:
                item.turn.set()
                return
            try:
                self._send_item(item)
            finally:
                with self.lock:
                    self._busy = False
                    if item.size is None:
                        self._unsized -= 1
            if self._drain_waiters:
                self._wake_drained()

    def _send_item(self, item: _Queued) -> None:
        """Frame and write a coroutine's message (or close) whose turn came."""
        if item.echo:
            with self.lock:
                self.proto.answer_close()
                self._flush()
            self._write_queued()
            if self.finished:  # the reading thread waits in recv(): the session is over
                self.abort()
            return
        if item.close is not None:
            try:
                with self.lock:
                    started = self.proto.send_close(*item.close)
                    self._flush()
            except Exception:  # the writer thread must go on: later messages wait for it
                _log.exception("A websocket close could not be sent")
                return
            self._write_queued()
            if started:
                self._closing_started()
            return
        assert item.pieces is not None
        try:
            for _ in self._send_frames(item.pieces):
                self._write_queued()
        except Exception:  # reading the message failed half-way (1011 already)
            _log.exception("Reading a websocket message to send failed")

    # -- sends ---------------------------------------------------------------------
    def send_message(self, pieces: Iterable[str | bytes]) -> None:
        if type(pieces) is tuple and len(pieces) == 1:  # one frame (most messages)
            lock = self.lock
            lock.acquire()
            if self._busy or self._pending:  # it waits for those ahead of it
                lock.release()
            else:
                try:
                    if not self.proto.send_data(pieces[0], True):
                        return  # closed
                    on_loop = _running_loop() is not None
                    if (
                        self._out
                        or (on_loop and not self._nowait)
                        or not self._write_lock.acquire(False)
                    ):
                        self._flush()
                        data = None
                    else:  # nothing queued, the socket free: this thread writes it
                        data = self.proto.data_to_send()
                finally:
                    lock.release()
                if data is None:
                    self._send_out()
                    return
                if on_loop:
                    self._send_now(data)
                    return
                try:
                    self._send_all(data)
                    self._sent += len(data)
                except OSError:
                    self._write_failed()
                finally:
                    self._write_lock.release()
                if self._out or self._pending:  # queued meanwhile by threads that did not wait
                    self._wake_writer()
                return
        if _running_loop() is not None:
            self._defer(_Queued(pieces, message_size(pieces)))
        else:
            self._send_in_turn(pieces)

    def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        with self.lock:
            ahead = self._busy or bool(self._pending)
            started = not ahead and self.proto.send_close(code, reason)
            if not ahead:
                self._flush()
        if not ahead:
            self._send_out()
            if started:
                self._closing_started()
        elif _running_loop() is not None:  # after the messages sent before it
            self._defer(_Queued(close=(code, reason)))
        else:
            self._send_in_turn(None, (code, reason))

    def close_soon(self, code: int, reason: str) -> None:
        """Close at once, without waiting for the socket (shutdown)."""
        with self.lock:
            started = self.proto.send_close(code, reason)
            self._flush()
        self._send_soon()
        if started:
            self._closing_started()

    def _defer(self, item: _Queued) -> None:
        """A coroutine's message: the writer thread frames it when its turn comes."""
        with self.lock:
            if self._dead or not self.proto.is_open:
                return
            self._pending.append(item)
            self._pending_size += item.size or 0
            if item.size is None:
                self._unsized += 1
        self._send_soon(check=True)

    def _send_in_turn(
        self, pieces: Iterable[str | bytes] | None, close: tuple[int, str] | None = None
    ) -> None:
        """A thread's message of several pieces, or one that must wait for messages
        ahead of it: the thread frames and writes it itself, in its turn."""
        turn: _Queued | None = None
        with self.lock:
            if self._busy or self._pending:
                turn = _Queued(turn=threading.Event())
                self._pending.append(turn)
            else:
                self._busy = True
        if turn is not None and not self._wait_turn(turn):
            return  # the connection is lost
        try:
            with self._write_lock:
                self._write_queued()  # frames made before this message
                if close is not None:
                    with self.lock:
                        started = self.proto.send_close(*close)
                        self._flush()
                    self._write_queued()
                    if started:
                        self._closing_started()
                else:
                    assert pieces is not None
                    for _ in self._send_frames(pieces):
                        self._write_queued()
        finally:
            with self.lock:
                self._busy = False
            if self._out or self._pending:
                self._wake_writer()
            if self._drain_waiters:
                self._wake_drained()

    def _wait_turn(self, turn: _Queued) -> bool:
        """Wait until ``turn`` is first in line and no message is being framed;
        then it is this thread's (``_busy``).  False when the connection is lost."""
        event = turn.turn
        assert event is not None
        while True:
            # Cleared before the check: a wake-up set after the check is kept for the
            # next wait (clearing after the check could lose it).
            event.wait(0.5)
            event.clear()
            with self.lock:
                if self._dead:
                    return False
                if self._pending and self._pending[0] is turn and not self._busy:
                    self._pending.popleft()
                    self._busy = True
                    return True

    # -- drain -------------------------------------------------------------------
    def _drained(self) -> bool:
        # A message being framed (``_busy``) counts whole: its rest is not queued yet.
        return self._dead or (
            not self._busy and self._unsized == 0 and self._unsent() <= DRAIN_LOW_WATER
        )

    async def drain(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._drained():
            future: asyncio.Future[None] = loop.create_future()
            with self._drain_lock:
                self._drain_waiters.append((loop, future))
            if self._drained():  # a writer finished before it saw the waiter
                return
            await future

    def _wake_drained(self) -> None:
        if not self._drained():
            return
        with self._drain_lock:
            waiters, self._drain_waiters = self._drain_waiters, []
        for loop, future in waiters:
            report(loop, future)

    def _end_output(self) -> None:
        """The session is over: write what is left (a Close echo) unless the connection
        is lost, then let the waiters and the writer thread go."""
        if self._out and not self._dead:
            with self._write_lock:
                self._write_queued()
        self._dead = True
        self._release_waiters()
        with self._writer_cond:
            self._writer_stop = True
            self._writer_cond.notify()

    def _output_taken(self) -> bool:
        """True when the peer took output that was backlogged at the last call: it is
        there, only slow to read (no reason for a keepalive to fail it)."""
        unacked = kernel_unsent(self._fd)
        acked = self._sent - unacked
        moved = self._backlogged and acked > self._acked
        self._acked = acked
        self._backlogged = unacked > 0 or self._queued > self._written
        return moved

    def writing_stuck(self, timeout: float) -> bool:
        """True when a write has held the socket for ``timeout`` (the client stopped reading)."""
        if self._write_lock.acquire(timeout=timeout):
            self._write_lock.release()
            return False
        return True

    def _closing_started(self) -> None:
        timer = threading.Timer(CLOSE_TIMEOUT, self.abort)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _answer_close(self) -> None:
        with self.lock:
            ahead = self._busy or bool(self._pending)
            if ahead:  # a coroutine's messages wait for the writer: the answer follows them
                self._pending.append(_Queued(echo=True))
        if ahead:
            self._wake_writer()
        else:
            super()._answer_close()

    def _answer_pending(self) -> None:
        timer = threading.Timer(CLOSE_TIMEOUT, self._answer_overdue)
        timer.daemon = True
        self._answer_timer = timer
        timer.start()

    def _answer_overdue(self) -> None:
        """The Close due (the answer to the peer's, or a failure's) waited CLOSE_TIMEOUT
        (a handler that does not return, a client that does not read): send it now
        and end the connection."""
        with self.lock:
            if not self.proto.answer_due:
                return
            self.proto.answer_close()
            self._flush()
        self._send_out(False)
        self.abort()

    def abort(self) -> None:
        """Wake the reading thread: the connection is done."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        help_while_waiting(self.helper)
        # The callbacks run here: server.stop() in one must not wait for the shutdown,
        # which waits for this session (its closing handshake waits for the callback).
        SERVING.set(self.conn.server)
        peer_ended = False
        try:
            # Idle websockets wait for input as long as they like (keepalive pings
            # find out whether the peer is still there); a peer that stops reading
            # still times a send out (the connection's body_timeout).
            config = self.upgrade.config
            send_timeout = config.body_timeout
            keepalive = None
            if config.websocket_ping_interval > 0:
                keepalive = Keepalive(
                    config.websocket_ping_interval, config.websocket_ping_timeout, time.monotonic()
                )
            secure = self.conn.secure
            if not secure:  # the kernel's receive timeout wakes us when the keepalive is due
                receive_timeout = keepalive.interval if keepalive is not None else 0
                set_kernel_timeouts(self.sock, receive_timeout, send_timeout)
            run_sync(self.opened())
            size = _READ_COMPRESSED if self.proto.compressed else _READ
            # Bytes that came with the upgrade request are already in the protocol.
            events = self.feed_pending()
            while True:
                if events:
                    run_sync(self.handle(events))
                if self.finished:
                    break
                if self.proto.more_events:  # an upload inflated piece by piece: the next one
                    events = self.feed_pending()
                    continue
                # TLS: wait for input or the keepalive here (the socket's timeout is the
                # send's).  Once closing, CLOSE_TIMEOUT bounds the wait for the answer.
                if (
                    secure
                    and keepalive is not None
                    and not self.winding_down
                    and not self._wait_for_input(keepalive)
                ):
                    events = []  # pinged the peer, or failed the connection (1011)
                    continue
                try:
                    data = self.sock.recv(size)
                except TimeoutError:  # TLS only: an idle peer, not a lost one
                    continue
                except OSError as exc:
                    if keepalive is not None and isinstance(exc, BlockingIOError):
                        self._receive_timed_out(keepalive)  # plain: the keepalive is due
                        events = []
                        continue
                    data = b""
                if data and keepalive is not None:
                    keepalive.seen(time.monotonic())
                if not data:
                    peer_ended = True
                    self._send_pending_before_end()
                events = self.feed(data)
                if not data and not events:
                    break
        except SessionCut:  # the server stopped
            peer_ended = True
        except Exception:
            peer_ended = True
            _log.exception("Websocket session failed")
        finally:
            # Failed by us (1002, 1007, 1009, 1011...), the peer's input unread.
            linger = not peer_ended and self.proto.failed
            try:
                run_sync(self.finish())
            finally:
                try:
                    self._end_output()
                    if linger:
                        self._linger()
                except Exception:
                    _log.exception("Websocket session failed")
                if self._timer is not None:
                    self._timer.cancel()
                if self._answer_timer is not None:
                    self._answer_timer.cancel()
                if isinstance(self.sock, SerializedTls):  # after any write under way
                    self.sock.close_notify()
                    self.conn.tls_closed = True
                self.upgrade._forget(self)
                self.conn.server._drop(self.conn)
                self.done.set()

    def _linger(self) -> None:
        """Half-close, then read and drop what the peer still sends (LINGER_SECONDS at
        most): closing with its input unread would reset the connection, and the
        peer could lose the Close frame failing it.  Plain sockets only."""
        if self._tls:
            return
        sock = self.sock
        deadline = time.monotonic() + LINGER_SECONDS
        # The writer thread may still be sending the Close: the half-close follows it.
        if not self._write_lock.acquire(timeout=CLOSE_TIMEOUT):
            return  # a write stuck on a peer that reads nothing: no linger for it
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        finally:
            self._write_lock.release()
        try:
            while not self.conn.server.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                sock.settimeout(min(left, 0.25))  # the server's stop is seen soon
                try:
                    if not sock.recv(_READ):
                        return
                except TimeoutError:
                    continue
        except OSError:
            return

    # Keepalive: input already waiting is always read first, so a slow handler
    # never makes its peer look gone.  Plain sockets block in ``recv`` with a
    # kernel receive timeout (no system call per message); TLS sockets, whose
    # timeout is the send's, wait in ``poll`` first.
    def _send_pending_before_end(self) -> None:
        """The peer's input ended: a coroutine's messages still waiting for the writer
        go out first (CLOSE_TIMEOUT at most), as its replies to what came before the
        end; the protocol, once told of the end, sends nothing more."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while not self._dead and time.monotonic() < deadline:
            with self.lock:
                if not (self._busy or self._pending) or not self.proto.is_open:
                    return
            self._wake_writer()
            time.sleep(0.01)

    def _keepalive_due(self, keepalive: Keepalive) -> None:
        now = time.monotonic()
        if self._output_taken():
            keepalive.seen(now)
        action = keepalive.expire(now)
        if action == Keepalive.PING:
            self.keepalive_ping()
        elif action == Keepalive.FAIL:
            self.keepalive_failed()

    def _receive_timed_out(self, keepalive: Keepalive) -> None:
        """Plain socket: the receive timeout fired.  Ping or fail as due, and time
        the next receive (none once closing: CLOSE_TIMEOUT aborts the wait)."""
        wait = 0.0
        if not self.winding_down:
            self._keepalive_due(keepalive)
            if not self.finished:
                wait = max(0.001, keepalive.due - time.monotonic())
        set_receive_timeout(self.sock, wait)

    def _wait_for_input(self, keepalive: Keepalive) -> bool:
        """TLS socket: block until the peer sent something (True), or until the
        keepalive is due: then ping the peer, or fail the connection (False)."""
        sock: Any = self.sock
        if sock.pending():  # decrypted bytes in the TLS layer
            return True
        wait = max(0, math.ceil((keepalive.due - time.monotonic()) * 1000))  # ms
        if hasattr(select, "poll"):
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(sock.fileno(), select.POLLIN)
            if self._poll.poll(wait):
                return True
        elif select.select([sock], [], [], wait / 1000)[0]:
            return True
        self._keepalive_due(keepalive)
        return False


class _Pending:
    """A message (or a close) waiting for its turn on the asyncio link.

    A ``turn`` carries nothing: a worker thread waits for it, then sends its
    message itself (reading its pieces, a file's, on its own thread).
    """

    __slots__ = ("close", "done", "echo", "error", "pieces", "size", "turn")

    def __init__(
        self,
        pieces: Iterable[str | bytes] | None,
        done: concurrent.futures.Future[None] | None = None,
        close: tuple[int, str] | None = None,
        turn: bool = False,
        echo: bool = False,
    ) -> None:
        self.pieces = pieces
        self.done = done
        self.close = close
        self.turn = turn
        self.echo = echo  # the Close that is due (the answer to the peer's, or a failure's)
        self.error: Exception | None = None
        # Counted in the backlog while it waits (a file's, read as it goes, is not).
        self.size = (message_size(pieces) or 0) if pieces is not None else 0

    def finish(self) -> None:
        """Wake the waiting worker thread, with the error if sending failed."""
        if self.done is None or self.done.done():
            return
        if self.error is not None:
            self.done.set_exception(self.error)
        else:
            self.done.set_result(None)


def _queued_size(event: Any) -> int:
    """Memory an undelivered event holds (pings count too: a flood must pause reading)."""
    payload: Any = getattr(event, "data", None)
    if payload is None:
        payload = getattr(event, "payload", b"")
    return 64 + len(payload)


class AioLink(LinkBase):
    """A session on an asyncio connection (``_AioConn.upgraded``)."""

    def __init__(
        self, upgrade: WebsocketUpgrade, conn: Any, proto: WebsocketProtocol, accepted: Accepted
    ) -> None:
        super().__init__(proto, accepted.callbacks, accepted.request)
        self.upgrade = upgrade
        self.conn = conn
        self.loop: asyncio.AbstractEventLoop = conn.loop
        self.loop_thread: int = conn.server.loop_thread
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._events: deque[WsEvent] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._message_lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._streaming = False  # a worker thread is sending a message
        self._loop_busy = False  # a loop task is sending the rest of a message
        self.task: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._answer_timer: asyncio.TimerHandle | None = None
        self._held = False  # reading paused until our writes drain
        self._keepalive: Keepalive | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._pending_size = 0  # bytes of the messages in _pending
        self._written = 0  # bytes handed to the transport
        self._progress: list[asyncio.Future[None]] = []  # drain() waiting for the queue
        self._dropped = False
        self._backlog_limit: int = upgrade.config.limits.max_send_backlog or sys.maxsize  # 0: none
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        self._fd: int = sock.fileno() if sock is not None else -1
        self._acked = 0  # see ThreadedLink._output_taken
        self._backlogged = False
        self._input_ended = False  # the peer's end of input, not fed to the protocol yet
        self._peer_ended = False  # the peer's input ended (for good)

    def start(self) -> None:
        """Start delivering events (bytes that came with the request first)."""
        self._push(self.feed_pending())
        config = self.upgrade.config
        if config.websocket_ping_interval > 0:
            keepalive = self._keepalive = Keepalive(
                config.websocket_ping_interval, config.websocket_ping_timeout, self.loop.time()
            )
            self._keepalive_timer = self.loop.call_at(keepalive.due, self._keepalive_check)
        self.task = self.loop.create_task(self._deliver())

    def _keepalive_check(self) -> None:
        """The keepalive timer: ping a silent peer, or fail one that did not answer."""
        self._keepalive_timer = None
        keepalive = self._keepalive
        if keepalive is None or self.conn.closed or self.finished or self.winding_down:
            return  # closing: CLOSE_TIMEOUT bounds the rest
        now = self.loop.time()
        transport = self.conn.transport
        if self._held or (transport is not None and not transport.is_reading()):
            keepalive.seen(now)  # we stopped reading (a backlog), not the peer sending
        if self._output_taken():
            keepalive.seen(now)  # it reads our backlog, slowly
        action = keepalive.expire(now)
        if action == Keepalive.PING:
            self.keepalive_ping()
        elif action == Keepalive.FAIL:
            if self.keepalive_failed():
                self.conn.close()  # the Close frame goes out if it can; on_close follows
                self._wakeup.set()
            return
        self._keepalive_timer = self.loop.call_at(keepalive.due, self._keepalive_check)

    def _stop_keepalive(self) -> None:
        self._keepalive = None
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None

    # -- output ------------------------------------------------------------------
    def _on_loop(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if self._on_loop():
            self._write_out()
            return
        self._out_size += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            call_soon_batched(self.loop, self._write_out)

    def _write_out(self) -> None:
        with self.lock:
            self._flush_scheduled = False
            out, self._out = self._out, []
            self._out_size = 0
        transport = self.conn.transport
        if out and transport is not None and not self.conn.transport_gone():
            data = out[0] if len(out) == 1 else b"".join(out)
            self._written += len(data)
            transport.write(data)
        if self._progress:
            self._notify_progress()

    def _send_out(self, wait: bool = True) -> None:
        if wait and self._on_loop():  # a coroutine sent (a control frame, a close)
            self._check_backlog()

    def _unsent(self) -> int:
        return unsent_bytes(self.conn.transport) + self._out_size + self._pending_size

    def _check_backlog(self) -> None:
        """A coroutine's send never waits for the client: beyond ``max_send_backlog``
        unsent, the client is taken as not reading and the connection dropped; while
        the transport holds some, the client must keep its pace (``min_send_rate``)."""
        if self._unsent() > self._backlog_limit:
            self._drop()
            return
        conn = self.conn
        held = unsent_bytes(conn.transport)
        pace = conn.out_pace
        if held or (pace is not None and pace.waiting):
            counter = conn.taken(self._written - held)  # (else: what the kernel took)
            if conn.watch_backlog(counter, counter, held) is not None:
                self._drop(warn=False)  # (logged as too slow)

    def _drop(self, warn: bool = True) -> None:
        if self._dropped:
            return
        self._dropped = True
        if warn:
            warn_dropped(self.session.id, self._unsent(), self._backlog_limit)
        with self.lock:
            self.proto.close_event()  # closed for good: later sends do nothing, on_close: 1006
            self.proto.data_to_send()
        self.conn.abort()
        self._notify_progress()

    def _notify_progress(self) -> None:
        waiters, self._progress = self._progress, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _drained(self) -> bool:
        if self._loop_busy or self._pending:
            return False
        return unsent_bytes(self.conn.transport) + self._out_size <= DRAIN_LOW_WATER

    async def drain(self) -> None:
        if not self._on_loop():  # a coroutine of another loop
            try:
                future = asyncio.run_coroutine_threadsafe(self.drain(), self.loop)
            except RuntimeError:  # the server's loop is closed: the session is gone
                return
            await asyncio.wrap_future(future)
            return
        conn = self.conn
        if not conn.closed and conn.transport_gone():
            # Over TLS the client may be gone before connection_lost could run (a
            # coroutine that sends and drains in a loop never lets it): the session
            # learns it here, as connection_lost would tell it.
            self._push(self.feed(b""))
            self._wakeup.set()
            return
        while not conn.closed and not self._drained():
            if conn._write_paused:
                try:
                    await conn._drain()  # body_timeout bounds a stall
                except Exception:  # the connection is gone
                    return
                continue
            # The transport has room: what is left waits in the queue for its turn.
            waiter = self.loop.create_future()
            self._progress.append(waiter)
            try:  # (a bounded wait: a change nobody reports is seen all the same)
                await asyncio.wait_for(waiter, 0.1)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    def _output_taken(self) -> bool:
        """True when the peer took output that was backlogged at the last call."""
        unacked = kernel_unsent(self._fd)
        buffered = unsent_bytes(self.conn.transport)
        acked = self._written - buffered - unacked
        moved = self._backlogged and acked > self._acked
        self._acked = acked
        self._backlogged = unacked > 0 or buffered > 0 or self._out_size > 0
        return moved

    def _wait_drain(self) -> None:
        """A worker thread waits while the transport is full, or while much of what it
        sent still waits for the loop (which may not have run since: its pause flag
        would be stale, and a thread reading a file would race ahead of the socket)."""
        if self.conn.closed or not (self.conn._write_paused or self._out_size > _OUT_HIGH):
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self._write_and_drain(), self.loop)
        except RuntimeError:  # the loop is closed: the session is gone
            return
        self._wait_for(future)

    async def _write_and_drain(self) -> None:
        self._write_out()
        await self.conn._drain()

    # Message order: a worker thread sends its message itself (waiting for
    # drains between frames) unless the loop is busy with one; the loop sends
    # from ``_pending`` in order, one message at a time (``_loop_busy``), and
    # finishes a message in a task when the transport's buffer fills.  Both
    # flags change under ``self.lock``, so frames of two messages never mix.
    # A worker's message of several pieces (a file...) queues a turn instead:
    # its pieces are read on the worker's thread, never on the loop.
    def send_message(self, pieces: Iterable[str | bytes]) -> None:
        if self._on_loop():
            sent = False
            if type(pieces) is tuple and len(pieces) == 1:
                with self.lock:
                    if not (self._loop_busy or self._streaming or self._pending):
                        LinkBase.send_message(self, pieces)  # one frame, nothing ahead of it
                        sent = True
            if not sent:
                self._queue(_Pending(pieces))
            self._check_backlog()
            return
        single = type(pieces) is tuple and len(pieces) == 1
        with self._message_lock:
            with self.lock:
                queued = self._loop_busy or bool(self._pending)
                if not queued:
                    if single:  # one frame (most messages): sent whole under the lock
                        LinkBase.send_message(self, pieces)
                    else:
                        self._streaming = True
            if not queued:
                if single:
                    self._wait_drain()
                else:
                    self._stream_from_thread(pieces)
            elif single:  # the loop is sending: our frame goes after it
                self._send_through_loop(_Pending(pieces, concurrent.futures.Future()))
            else:  # after the loop's messages, streamed from this thread
                turn = _Pending(None, concurrent.futures.Future(), turn=True)
                if self._send_through_loop(turn):  # ``_streaming`` is ours now
                    self._stream_from_thread(pieces)

    def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        if self._on_loop():
            with self.lock:
                busy = self._loop_busy or self._streaming or bool(self._pending)
            if busy:  # after the messages sent before it
                self._queue(_Pending(None, close=(code, reason)))
                return
            super().close(code, reason)
            return
        with self._message_lock:  # after this session's messages from threads
            with self.lock:
                busy = self._loop_busy or bool(self._pending)
            if busy:
                self._send_through_loop(_Pending(None, concurrent.futures.Future(), (code, reason)))
                return
            super().close(code, reason)

    def _stream_from_thread(self, pieces: Iterable[str | bytes]) -> None:
        try:
            for _ in self._send_frames(pieces):
                self._wait_drain()
        finally:
            with self.lock:
                self._streaming = False
                resume = bool(self._pending)
            if resume:
                self._call_on_loop(self._pump)

    def _call_on_loop(self, callback: Any, *args: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the session is gone
            return False
        return True

    def _send_through_loop(self, item: _Pending) -> bool:
        """Queue a worker's message (or close, or turn) behind the loop's; wait until
        it is sent (its turn came).  False when the loop is gone."""
        assert item.done is not None
        if not self._call_on_loop(self._queue, item):
            return False
        return self._wait_for(item.done, raise_error=True)

    def _wait_for(self, future: concurrent.futures.Future[Any], raise_error: bool = False) -> bool:
        """Wait (a worker thread) for what the loop does; False when the loop is gone.
        The loop's error is raised when ``raise_error``, else ignored."""
        try:
            return wait_for_loop(future, self.loop)
        except Exception:
            if raise_error:
                raise
            return True

    def _queue(self, item: _Pending) -> None:
        with self.lock:
            self._pending.append(item)
            self._pending_size += item.size
        self._pump()

    def _pump(self) -> None:
        """Send the pending messages in order until one has to wait for a drain."""
        while True:
            with self.lock:
                if self._loop_busy or self._streaming or not self._pending:
                    return
                item = self._pending.popleft()
                self._pending_size -= item.size
                if item.turn:  # a worker thread sends this one itself
                    self._streaming = True
                else:
                    self._loop_busy = True
            if item.turn:
                item.finish()  # the worker's _stream_from_thread ends the turn
                return
            try:
                if item.echo:
                    LinkBase._answer_close(self)
                elif item.close is not None:
                    LinkBase.close(self, *item.close)
                else:
                    assert item.pieces is not None
                    frames = self._send_frames(item.pieces)
                    if not self._send_until_paused(frames, item):
                        task = self.loop.create_task(self._stream_rest(frames, item))
                        task.add_done_callback(functools.partial(self._streamed, item))
                        return
            except Exception as exc:  # the waiting thread gets it
                item.error = exc
            self._sent(item)

    def _sent(self, item: _Pending) -> None:
        """``item`` is done (sent, failed or dropped): the next one may go."""
        with self.lock:
            self._loop_busy = False
        item.finish()
        if item.echo and self.finished:  # the delivering task may end the session
            self._wakeup.set()
        if self._progress:
            self._notify_progress()

    def _streamed(self, item: _Pending, _task: object) -> None:
        self._sent(item)  # also when the task was cancelled before it ran
        self._pump()

    def _send_until_paused(self, frames: Iterator[None], item: _Pending) -> bool:
        """Send frames while the transport takes them; True when the message is done."""
        try:
            for _ in frames:
                if self.conn._write_paused and not self.conn.closed:
                    return False
        except Exception as exc:  # reading the message failed (half-way: 1011 already)
            _log.exception("Reading a websocket message to send failed")
            item.error = exc
        return True

    async def _stream_rest(self, frames: Iterator[None], item: _Pending) -> None:
        try:
            while True:
                await self.conn._drain()
                if self._send_until_paused(frames, item):
                    return
        except Exception:  # the connection is gone (or stuck and aborted)
            return

    def _closing_started(self) -> None:
        def arm() -> None:
            if self._close_timer is None:
                self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

        if self._on_loop():
            arm()
        else:
            self.loop.call_soon_threadsafe(arm)

    def _abort(self) -> None:
        transport = self.conn.transport
        if transport is not None:
            transport.abort()

    def _answer_close(self) -> None:
        with self.lock:  # (on the loop: the delivering task)
            busy = self._loop_busy or self._streaming or bool(self._pending)
        if busy:  # after the messages sent before it
            self._queue(_Pending(None, echo=True))
        else:
            super()._answer_close()

    def _answer_pending(self) -> None:
        self._answer_timer = self.loop.call_later(CLOSE_TIMEOUT, self._answer_overdue)

    def _answer_overdue(self) -> None:
        """The Close due (the answer to the peer's, or a failure's) waited CLOSE_TIMEOUT
        (a handler that does not return, a client that does not read): send it now
        and end the connection."""
        self._answer_timer = None
        with self.lock:
            if not self.proto.answer_due:
                return
            self.proto.answer_close()
            self._flush()
        self.conn.close()
        self._wakeup.set()

    # -- input (loop thread) -----------------------------------------------------
    def _push(self, events: list[WsEvent]) -> None:
        if not events:
            return
        for event in events:
            self._queued += _queued_size(event)
        self._events.extend(events)
        self._wakeup.set()
        if (self._queued > _QUEUE_HIGH or self.proto.more_events) and (
            self.conn.transport is not None
        ):  # (more events: the rest of what was read inflates as the handler goes)
            self.conn.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self._keepalive is not None:
            self._keepalive.seen(self.loop.time())
        self._push(self.feed(data))
        if self.finished:
            self._end_connection()
        else:
            self._hold_if_blocked()

    def _end_connection(self) -> None:
        """Close; a connection the server failed (1002, 1007, 1009...) while the peer
        still sends is half-closed and its input discarded a while first (as in the
        threaded transport), so the peer reads the Close instead of a reset."""
        if self.proto.failed and not self._peer_ended:
            self.conn.linger_after_websocket()
        else:
            self.conn.close()

    def _hold_if_blocked(self) -> None:
        """Answers (pongs...) pile up unread: stop reading until they drain."""
        if self.conn._write_paused and not self._held and self.conn.transport is not None:
            self._held = True
            self.conn.transport.pause_reading()
            self.loop.create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            await self.conn._drain()  # the connection closes if it stays stuck
        except Exception:
            return
        finally:
            self._held = False
        if self._may_read() and not self.conn.closed:
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless the connection is gone: over TLS, Python 3.10's transport
        raises once the socket below it closed, before it or we are told so."""
        transport = self.conn.transport
        if transport is not None and not self.conn.transport_gone():
            transport.resume_reading()

    def _may_read(self) -> bool:
        """True when nothing received waits to be handled beyond the queue's bound."""
        return self._queued <= _QUEUE_HIGH and not self.proto.more_events

    def eof_received(self) -> bool | None:
        # The end is fed to the protocol once the events before it were handled (a
        # closed protocol sends nothing): their replies go out first, as in the threaded
        # transport, on the write side a plain connection keeps open (over TLS, asyncio
        # shuts the connection down at the peer's closure alert, after which an OpenSSL
        # client reads nothing anyway).  No keepalive any more: the peer can answer no ping.
        self._input_ended = self._peer_ended = True
        self._stop_keepalive()
        self._wakeup.set()
        return None if self.conn.secure else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._push(self.feed(b""))
        self._wakeup.set()
        self._notify_progress()

    async def _deliver(self) -> None:
        try:
            await self.opened()
            while True:
                while self._events:
                    event = self._events.popleft()
                    self._queued -= _queued_size(event)
                    await self.handle([event])
                if self.proto.more_events:  # an upload inflated piece by piece: the next one
                    await asyncio.sleep(0)  # (other connections get their turn between pieces)
                    self._push(self.feed_pending())
                    continue
                if self._input_ended:  # the peer's end of input (eof_received), in its turn
                    self._input_ended = False
                    self._push(self.feed(b""))
                    continue
                self._hold_if_blocked()
                if self._may_read() and not self._held:
                    self._resume_reading()
                if self.finished or self.conn.closed:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
        except Exception:
            _log.exception("Websocket session failed")
        finally:
            self._stop_keepalive()
            if self._close_timer is not None:
                self._close_timer.cancel()
            if self._answer_timer is not None:
                self._answer_timer.cancel()
            self._end_connection()
            await self.finish()
            self.upgrade._forget(self)

    async def shutdown(self) -> None:
        """Graceful stop: close every session with 1001, wait for this one (bounded)."""
        self.upgrade.close_all_aio()
        task = self.task
        if task is None or task.done():
            return
        unsent = unsent_bytes(self.conn.transport)
        try:
            await asyncio.wait_for(asyncio.shield(task), _STUCK_AFTER)
            return
        except (TimeoutError, asyncio.TimeoutError):
            pass
        if self.conn._write_paused and unsent_bytes(self.conn.transport) >= unsent:
            # The client took nothing meanwhile: our Close frame waits behind output it
            # does not read, so no answer can come (the threaded link cuts it the same way).
            self._abort()
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT - _STUCK_AFTER)
        except (TimeoutError, asyncio.TimeoutError):
            # A callback still running (awaiting what never comes): cancelled, so its
            # finally runs, and the session's (on_close) after it.
            task.cancel()
