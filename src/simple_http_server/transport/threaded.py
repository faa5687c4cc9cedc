"""The threaded transport: one selector thread, a bounded pool of worker threads.

The selector thread accepts connections and parks idle ones; a connection that
becomes readable is handed to a worker, which feeds its bytes to the protocol
object and serves complete requests.  A connection that has not delivered a
complete request head goes back to the selector, so slow clients never hold a
worker.  The transport has no HTTP knowledge of its own.
"""

from __future__ import annotations

import contextvars
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .. import logger as _logging
from ..config import ServerConfig
from ..dispatch.channel import Channel, HeaderLines
from ..dispatch.dispatcher import Dispatcher
from ..dispatch.invoke import run_sync
from ..protocol import http11
from ..protocol.http11 import HttpConnection
from .common import (
    DRAIN_LIMIT,
    READ_SIZE,
    SERVING,
    BodyPace,
    ClientGone,
    new_connection,
    request_from_head,
    service_unavailable,
)
from .poller import make_poller

__all__ = ["ThreadedServer"]

_log = _logging.get_logger("simple_http_server.threaded")
_LISTEN = object()
#: Seconds a connection closed after an error answer keeps discarding input.
LINGER_SECONDS = 1.0


class _Conn(Channel):
    """A client connection; also the channel of the request it serves."""

    __slots__ = (
        "conn",
        "deadline",
        "head_started",
        "lingering",
        "pace",
        "server",
        "sock",
        "upgrade",
    )

    def __init__(self, server: ThreadedServer, sock: socket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer if isinstance(peer, tuple) else None
        self.conn: HttpConnection = new_connection(server.config)
        self.secure = isinstance(sock, ssl.SSLSocket)
        self.deadline = time.monotonic() + server.config.idle_timeout
        self.head_started = False
        self.lingering = False
        self.upgrade: Any = None
        self.pace: BodyPace | None = None

    # -- Channel -------------------------------------------------------------
    def _recv(self) -> bytes:
        try:
            return self.sock.recv(READ_SIZE)
        except (TimeoutError, OSError) as exc:
            raise ClientGone(str(exc)) from None

    def _write(self, data: bytes) -> None:
        if data:
            try:
                self.sock.sendall(data)
            except (TimeoutError, OSError) as exc:
                raise ClientGone(str(exc)) from None

    async def receive(self) -> bytes:
        conn = self.conn
        while True:
            event = conn.next_event()
            if type(event) is http11.BodyChunk:
                return event.data
            if type(event) is http11.EndOfRequest:
                return b""
            if event is http11.NEED_DATA:
                self._write(conn.send_continue())
                try:
                    data = self.sock.recv(READ_SIZE)
                except TimeoutError:  # body_timeout: answer 408, then close
                    from ..errors import HttpError

                    conn.close_after_response()
                    raise HttpError(408, "", "The request body was not sent in time.") from None
                except OSError as exc:
                    raise ClientGone(str(exc)) from None
                if self.pace is None:
                    self.pace = BodyPace(self.server.config)
                if self.pace.too_slow(len(data)):
                    from ..errors import HttpError

                    conn.close_after_response()
                    raise HttpError(408, "", "The request body is arriving too slowly.")
                conn.receive_data(data)
                continue
            if type(event) is http11.ProtocolFailure:
                from ..errors import HttpError

                raise HttpError(event.status, "", "The request body is malformed.")
            raise ClientGone("connection closed while reading the body")

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self._write(self.conn.send_head(status, headers))

    async def send_data(self, data: bytes) -> None:
        self._write(self.conn.send_body(data))

    async def send_end(self) -> None:
        self._write(self.conn.send_end())

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        conn = self.conn  # the dispatcher set Content-Length; one send for all of it
        self._write(conn.send_head(status, headers) + conn.send_body(body) + conn.send_end())

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        if self.secure:
            await super().send_file(file, offset, count)
            return
        for piece in self.conn.send_body_passthrough(_FileSlice(count)):
            if isinstance(piece, _FileSlice):
                self._sendfile(file, offset, count)
            else:
                self._write(bytes(piece))

    def close_after_response(self) -> None:
        self.conn.close_after_response()

    def _sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        try:
            self.sock.sendfile(file, offset, count)
        except (TimeoutError, OSError) as exc:
            raise ClientGone(str(exc)) from None

    # -- lifecycle -----------------------------------------------------------
    def serve_ready(self) -> bool:
        """Serve what the socket has; True to park the connection again."""
        if self.secure:
            return self._serve_ready_tls()
        self.conn.receive_data(self._recv())
        return self.serve_buffered()

    def _serve_ready_tls(self) -> bool:
        """Like :meth:`serve_ready`, without blocking on a partial TLS record or handshake."""
        sock: Any = self.sock
        while True:
            sock.setblocking(False)
            try:
                data = sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if not self.head_started:  # the handshake or head is under way
                    self.head_started = True
                    self.deadline = time.monotonic() + self.server.config.head_timeout
                return True
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            finally:
                sock.settimeout(self.server.config.body_timeout)
            self.conn.receive_data(data)
            park = self.serve_buffered()
            # TLS may hold decrypted bytes the selector cannot see.
            if not (park and sock.pending()):
                return park

    def serve_buffered(self) -> bool:
        conn = self.conn
        server = self.server
        while True:
            event = conn.next_event()
            kind = type(event)
            if kind is http11.RequestHead:
                self.head_started = False
                if not self._serve_request(event):  # type: ignore[arg-type]
                    return False
                if server.stopping or not conn.start_next_cycle():
                    return False
                continue
            if event is http11.NEED_DATA:
                if server.stopping and not self.head_started:
                    return False
                now = time.monotonic()
                if self.head_started:
                    return True
                if conn.has_buffered_data:
                    self.head_started = True
                    self.deadline = now + server.config.head_timeout
                else:
                    self.deadline = now + server.config.idle_timeout
                return True
            if kind is http11.ProtocolFailure:
                self._write(conn.send_error(event.status))  # type: ignore[union-attr]
                self.linger()
                return False
            return False  # ConnectionLost / PAUSED without an upgrade

    def _serve_request(self, head: http11.RequestHead) -> bool:
        server = self.server
        self.pace = None
        upgrade = server.upgrade_handler
        if upgrade is not None and upgrade.wants(head):
            if upgrade.serve_threaded(self, head):
                self.upgrade = upgrade  # a websocket thread owns the socket now
            return False
        request = request_from_head(head, self.secure)
        sock = self.sock
        if sock.gettimeout() != server.config.body_timeout:
            sock.settimeout(server.config.body_timeout)
        # A fresh context per request: context variables set by one request never
        # leak into the next one served by the same worker thread.
        context = contextvars.Context()
        context.run(SERVING.set, server)
        try:
            context.run(run_sync, server.dispatcher.handle(request, self))
        except ClientGone:
            return False
        except Exception:
            _log.exception("Error while sending the response")
            try:
                self._write(self.conn.send_error(500))
            except ClientGone:
                pass
            return False
        if not self.conn.request_complete:
            if self.conn.closing:  # the body was refused (413): no draining
                self.linger()
                return False
            return self._drain()
        return True

    def _drain(self) -> bool:
        """Discard an unread request body so the connection can go on."""
        drained = 0
        conn = self.conn
        while drained <= DRAIN_LIMIT:
            event = conn.next_event()
            if type(event) is http11.BodyChunk:
                drained += len(event.data)
            elif type(event) is http11.EndOfRequest:
                return True
            elif event is http11.NEED_DATA:
                try:
                    data = self._recv()
                except ClientGone:
                    return False
                conn.receive_data(data)
            else:
                return False
        return False

    def linger(self) -> None:
        """Half-close; the selector then discards what the client still sends.

        Closing with unread input would reset the connection and the client
        could lose our answer (a 400, 413 or 431); lingering holds no worker.
        """
        self.head_started = False
        self.deadline = time.monotonic() + LINGER_SECONDS
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
        try:
            self.sock.close()
        except OSError:
            pass

    def rearm_failed(self) -> None:
        """The poller could not watch this connection again: drop it."""
        self.server._drop(self)


class _FileSlice:
    """A placeholder body piece of known length, written with ``sendfile``."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class ThreadedServer:
    """Serves a dispatcher with a selector thread and worker threads."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        config: ServerConfig,
        listener: socket.socket,
        upgrade_handler: Any = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.config = config
        self.listener = listener
        self.upgrade_handler = upgrade_handler
        self._on_ready = on_ready
        self.stopping = False
        self.ready = threading.Event()
        self.done = threading.Event()
        self._poller = make_poller()
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._idle_workers = 0
        self._busy = 0
        self.owner_thread: threading.Thread | None = None

    # -- worker pool -------------------------------------------------------------
    def _submit(self, conn: _Conn) -> None:
        with self._lock:
            self._busy += 1
            spawn = self._idle_workers == 0 and len(self._workers) < self.config.worker_threads
            if spawn:
                thread = threading.Thread(
                    target=self._work, name=f"shs-worker-{len(self._workers)}", daemon=True
                )
                self._workers.append(thread)
            else:
                self._idle_workers -= 1
        if spawn:
            thread.start()
        self._jobs.put(conn)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            conn = jobs.get()
            if conn is None:
                return
            park = False
            try:
                park = conn.serve_ready()
            except ClientGone:
                park = False
            except Exception:
                _log.exception("Unexpected error on a connection")
                park = False
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle_workers += 1
            if (park or conn.lingering) and not self.stopping:
                # Armed again from this thread: no hand-off to the selector thread.
                if not self._poller.rearm(conn.sock, conn):
                    self._drop(conn)
            elif conn.upgrade is None:
                self._drop(conn)
            else:  # a websocket thread owns the socket now
                self._poller.discard(conn.sock)

    def _drop(self, conn: _Conn) -> None:
        self._poller.discard(conn.sock)
        conn.close()
        with self._lock:
            self._conns.discard(conn)

    def _wake(self) -> None:
        self._poller.wake()

    # -- selector thread -----------------------------------------------------
    def serve_forever(self) -> None:
        """Accept and serve until :meth:`stop`."""
        poller = self._poller
        self.owner_thread = threading.current_thread()
        self.listener.setblocking(False)
        poller.add_static(self.listener, _LISTEN)
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready()
        next_sweep = time.monotonic() + 0.5
        try:
            while not self.stopping:
                for data in poller.poll(0.5):
                    if data is _LISTEN:
                        self._accept()
                    elif data.lingering:
                        if not data.discard_input() or not poller.rearm(data.sock, data):
                            self._drop(data)
                    else:
                        self._submit(data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.5
        finally:
            self._shutdown()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                _log.warning("accept failed", exc_info=True)
                return
            if len(self._conns) >= self.config.max_connections:
                try:
                    sock.setblocking(True)
                    sock.settimeout(1.0)
                    sock.sendall(service_unavailable())
                except OSError:
                    pass
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wrapped = self._wrap(sock)
            if wrapped is None:
                continue
            conn = _Conn(self, wrapped, peer)
            with self._lock:
                self._conns.add(conn)
            self._poller.add(wrapped, conn)

    def _wrap(self, sock: socket.socket) -> socket.socket | None:
        context = self.config.ssl_context
        sock.settimeout(self.config.head_timeout)
        if context is None:
            return sock
        try:
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            sock.close()
            return None

    def _sweep(self, now: float) -> None:
        expired = [conn for conn in self._poller.armed() if conn.deadline <= now]
        for conn in expired:
            self._poller.remove(conn.sock)
            if conn.head_started:
                try:
                    conn.sock.settimeout(0.5)
                    conn.sock.sendall(conn.conn.send_error(408))
                except OSError:
                    pass
            self._drop(conn)

    def _shutdown(self) -> None:
        poller = self._poller
        poller.discard(self.listener)
        self.listener.close()
        if self.upgrade_handler is not None:
            self.upgrade_handler.stop_threaded()  # websockets: close with 1001
        for conn in poller.armed():
            poller.remove(conn.sock)
            self._drop(conn)
        with self._lock:
            in_flight = list(self._conns)
        for conn in in_flight:  # their answers say Connection: close
            conn.conn.close_after_response()
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    break
            time.sleep(0.01)
        for _ in self._workers:
            self._jobs.put(None)
        for thread in self._workers:
            thread.join(timeout=1.0)
        for conn in poller.armed():  # re-armed by the last workers
            poller.remove(conn.sock)
            self._drop(conn)
        with self._lock:
            remaining = list(self._conns)
        for conn in remaining:
            self._drop(conn)
        poller.close()
        self.done.set()

    def stop(self, wait: bool = True) -> None:
        """Stop accepting, finish in-flight requests (up to the drain timeout), close."""
        self.stopping = True
        self._wake()
        if wait and not self.cannot_wait():
            self.done.wait(self.config.drain_timeout + 2)

    def cannot_wait(self) -> bool:
        """True in the selector thread or inside a request: stop() must not wait there."""
        return threading.current_thread() is self.owner_thread or SERVING.get() is self
