"""Websocket I/O for both transports: the upgrade, then one session per connection.

Threaded transport: the handshake runs in the pool worker that read the
request; the session then gets a thread of its own (a blocking ``recv`` loop),
so open websockets never hold pool workers.  Asyncio transport: the
connection's ``upgraded`` object receives the bytes; a task delivers the
events to the handler in order.  Sends are safe from any thread: the threaded
link writes under the session lock; the asyncio link writes in order, lets worker
threads wait for the transport to drain, and finishes a message sent from the
loop in a task when the transport's buffer fills (later sends wait their turn).
A worker thread reads the pieces of its own messages (a file's), also when it
had to wait for the loop's: blocking reads never run on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .. import logger as _logging
from ..dispatch.invoke import call_soon_batched, run_sync, wait_for_loop
from ..dispatch.ws_handlers import Accepted, Rejected, negotiate
from ..dispatch.ws_session import Keepalive, LinkBase
from ..protocol import http11, ws
from ..protocol.http11 import HttpConnection, RequestHead
from ..protocol.ws import WebsocketProtocol, WsEvent
from .common import set_kernel_timeouts, set_receive_timeout

__all__ = ["WebsocketUpgrade"]

_log = _logging.get_logger("simple_http_server.websocket")

#: Seconds to wait for the peer's Close answer before dropping the connection.
CLOSE_TIMEOUT = 5.0
#: Read size; small when compressed, so one read cannot inflate to much memory.
_READ = 256 * 1024
_READ_COMPRESSED = 16 * 1024
#: Received bytes queued for the handler before the asyncio link stops reading.
_QUEUE_HIGH = 1024 * 1024
#: Bytes a worker thread's frames may wait for the loop to write them before the
#: thread waits for the loop (a file streamed from a thread is never buffered whole).
_OUT_HIGH = 256 * 1024


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

    def wants(self, head: RequestHead) -> bool:
        """True for websocket upgrade requests."""
        if head.upgrade is False:  # the parser saw no Upgrade header: most requests
            return False
        return ws.is_websocket_upgrade(head)

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
            max_message_size=self.config.limits.max_websocket_message_size,
            stream_binary=accepted.callbacks.on_binary_frame is not None,
        )

    # -- threaded transport ------------------------------------------------------
    def serve_threaded(self, conn: Any, head: RequestHead) -> bool:
        """Run the handshake; True when a session thread took the socket over."""
        http: HttpConnection = conn.conn
        sock: socket.socket = conn.sock
        result = run_sync(self._negotiate(http, head))
        try:
            if isinstance(result, Rejected):
                sock.sendall(_reject_bytes(http, result))
                return False
            sock.sendall(http.send_switch(result.headers))
        except OSError:
            return False
        link = ThreadedLink(self, conn, self._protocol(http, result), result)
        with self._lock:
            self._threaded.add(link)
            stopping = self._stopping  # stop_threaded() may have run during the handshake
        threading.Thread(target=link.run, name=f"shs-ws-{link.session.id[:8]}", daemon=True).start()
        if stopping:
            link.close(ws.CLOSE_GOING_AWAY, "Server is shutting down")
        return True

    def stop_threaded(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every threaded session with 1001 and wait for them (bounded)."""
        self._stopping = True
        with self._lock:
            links = list(self._threaded)
        for link in links:
            if link.lock.acquire(timeout=0.2):
                link.lock.release()
                link.close(ws.CLOSE_GOING_AWAY, "Server is shutting down")
            else:  # a send is stuck on a client that stopped reading: cut it
                link.abort()
        for link in links:
            link.done.wait(timeout)
            link.abort()

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
        if conn.closed:
            return
        conn._write(http.send_switch(result.headers))
        link = AioLink(self, conn, self._protocol(http, result), result)
        with self._lock:
            self._aio.add(link)
        conn.upgraded = link
        link.start()

    def close_all_aio(self) -> None:
        """Send 1001 to every asyncio session (called once at shutdown)."""
        self._stopping = True
        with self._lock:
            links = list(self._aio)
        for link in links:  # at once, even while a message is being sent
            LinkBase.close(link, ws.CLOSE_GOING_AWAY, "Server is shutting down")


class ThreadedLink(LinkBase):
    """A session on a blocking socket, served by its own thread."""

    def __init__(
        self, upgrade: WebsocketUpgrade, conn: Any, proto: WebsocketProtocol, accepted: Accepted
    ) -> None:
        super().__init__(proto, accepted.callbacks, accepted.request)
        self.upgrade = upgrade
        self.conn = conn
        self.sock: socket.socket = conn.sock
        self.done = threading.Event()
        self._timer: threading.Timer | None = None
        self._poll: Any = None  # select.poll() of a TLS socket, once keepalive waits

    def _write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.abort()

    def _closing_started(self) -> None:
        timer = threading.Timer(CLOSE_TIMEOUT, self.abort)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def abort(self) -> None:
        """Wake the reading thread: the connection is done."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
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
            if secure:  # Python's timeout (TLS), shared by recv: recv retries
                self.sock.settimeout(send_timeout)
            else:  # the kernel's receive timeout wakes us when the keepalive is due
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
                # TLS: wait for input or the keepalive here (Python's timeout is the
                # send's).  Once closing, CLOSE_TIMEOUT bounds the wait for the answer.
                if (
                    secure
                    and keepalive is not None
                    and not self.is_closed
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
                events = self.feed(data)
                if not data and not events:
                    break
        except Exception:
            _log.exception("Websocket session failed")
        finally:
            try:
                run_sync(self.finish())
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                self.upgrade._forget(self)
                self.conn.server._drop(self.conn)
                self.done.set()

    # Keepalive: input already waiting is always read first, so a slow handler
    # never makes its peer look gone.  Plain sockets block in ``recv`` with a
    # kernel receive timeout (no system call per message); TLS sockets, whose
    # Python timeout is the send's, wait in ``poll`` first.
    def _keepalive_due(self, keepalive: Keepalive) -> None:
        action = keepalive.expire(time.monotonic())
        if action == Keepalive.PING:
            self.keepalive_ping()
        elif action == Keepalive.FAIL:
            self.keepalive_failed()

    def _receive_timed_out(self, keepalive: Keepalive) -> None:
        """Plain socket: the receive timeout fired.  Ping or fail as due, and time
        the next receive (none once closing: CLOSE_TIMEOUT aborts the wait)."""
        wait = 0.0
        if not self.is_closed:
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

    def feed_pending(self) -> list[WsEvent]:
        """Events of the bytes received with the upgrade request."""
        with self.lock:
            events = self.proto.events()
            self._flush()
        return events


class _Pending:
    """A message (or a close) waiting for its turn on the asyncio link.

    A ``turn`` carries nothing: a worker thread waits for it, then sends its
    message itself (reading its pieces, a file's, on its own thread).
    """

    __slots__ = ("close", "done", "error", "pieces", "turn")

    def __init__(
        self,
        pieces: Iterable[str | bytes] | None,
        done: concurrent.futures.Future[None] | None = None,
        close: tuple[int, str] | None = None,
        turn: bool = False,
    ) -> None:
        self.pieces = pieces
        self.done = done
        self.close = close
        self.turn = turn
        self.error: Exception | None = None

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
        self._held = False  # reading paused until our writes drain
        self._keepalive: Keepalive | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start delivering events (bytes that came with the request first)."""
        with self.lock:
            self._push(self.proto.events())
            self._flush()
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
        if keepalive is None or self.conn.closed or self.finished or self.is_closed:
            return  # closing: CLOSE_TIMEOUT bounds the rest
        now = self.loop.time()
        transport = self.conn.transport
        if self._held or (transport is not None and not transport.is_reading()):
            keepalive.seen(now)  # we stopped reading (a backlog), not the peer sending
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
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

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
            if type(pieces) is tuple and len(pieces) == 1:
                with self.lock:
                    if not (self._loop_busy or self._streaming or self._pending):
                        LinkBase.send_message(self, pieces)  # one frame, nothing ahead of it
                        return
            self._queue(_Pending(pieces))
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
        self._pump()

    def _pump(self) -> None:
        """Send the pending messages in order until one has to wait for a drain."""
        while True:
            with self.lock:
                if self._loop_busy or self._streaming or not self._pending:
                    return
                item = self._pending.popleft()
                if item.turn:  # a worker thread sends this one itself
                    self._streaming = True
                else:
                    self._loop_busy = True
            if item.turn:
                item.finish()  # the worker's _stream_from_thread ends the turn
                return
            try:
                if item.close is not None:
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

    # -- input (loop thread) -----------------------------------------------------
    def _push(self, events: list[WsEvent]) -> None:
        if not events:
            return
        for event in events:
            self._queued += _queued_size(event)
        self._events.extend(events)
        self._wakeup.set()
        if self._queued > _QUEUE_HIGH and self.conn.transport is not None:
            self.conn.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self._keepalive is not None:
            self._keepalive.seen(self.loop.time())
        self._push(self.feed(data))
        if self.finished:
            self.conn.close()
        else:
            self._hold_if_blocked()

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
        transport = self.conn.transport
        if self._queued <= _QUEUE_HIGH and transport is not None and not self.conn.closed:
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._push(self.feed(b""))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._push(self.feed(b""))
        self._wakeup.set()

    async def _deliver(self) -> None:
        try:
            await self.opened()
            while True:
                while self._events:
                    event = self._events.popleft()
                    self._queued -= _queued_size(event)
                    await self.handle([event])
                self._hold_if_blocked()
                if (
                    self._queued <= _QUEUE_HIGH
                    and not self._held
                    and self.conn.transport is not None
                ):
                    self.conn.transport.resume_reading()
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
            self.conn.close()
            await self.finish()
            self.upgrade._forget(self)

    async def shutdown(self) -> None:
        """Graceful stop: close every session with 1001, wait for this one (bounded)."""
        self.upgrade.close_all_aio()
        if self.task is not None and not self.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), CLOSE_TIMEOUT)
            except (TimeoutError, asyncio.TimeoutError):
                pass
