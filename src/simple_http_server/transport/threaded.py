"""The threaded transport: one selector thread, a bounded pool of worker threads.

The selector thread accepts connections and parks idle ones; a connection that
becomes readable is handed to a worker, which feeds its bytes to the protocol
object and serves complete requests.  A connection that has not delivered a
complete request head goes back to the selector, so slow clients never hold a
worker.  The transport has no HTTP knowledge of its own; the per-connection
work (reading, serving, the request's channel) is in :mod:`.threaded_conn`.
"""

from __future__ import annotations

import errno
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import logger as _logging
from ..config import ServerConfig
from ..dispatch.dispatcher import Dispatcher
from ..dispatch.invoke import LoopHelper, ThreadStarts, help_while_waiting
from .common import (
    SERVING,
    ClientGone,
    service_unavailable,
    set_kernel_timeouts,
    stop_wait_bound,
)
from .poller import make_poller
from .threaded_conn import ThreadedConn

__all__ = ["ThreadedServer"]

_log = _logging.get_logger("simple_http_server.threaded")
_LISTEN = object()
#: Seconds accepts pause when the process is out of file descriptors (or memory).
ACCEPT_RETRY_DELAY = 1.0
#: TLS connections over ``max_connections`` refused at once at most: each needs its
#: handshake before it can read the 503 (bounded by ``head_timeout``, then a linger of a
#: second).  Past this many, a connection is closed at once, unanswered.
TLS_REFUSALS = 128
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _cut_at_stop() -> BaseException:
    return ClientGone("the request was cut: the server stopped")


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
        self._hurried = False  # hurry(): the shutdown waits for no request
        self.ready = threading.Event()
        self.done = threading.Event()
        self._poller = make_poller()
        self._jobs: queue.SimpleQueue[ThreadedConn | None] = queue.SimpleQueue()
        self._conns: set[ThreadedConn] = set()
        #: TLS connections over max_connections being refused (not in ``_conns``).
        self._refusing: set[ThreadedConn] = set()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        #: The workers' helpers: what they wait for is cancelled past the drain deadline.
        self._helpers: list[LoopHelper] = []
        self._idle_workers = 0
        self._busy = 0
        self.owner_thread: threading.Thread | None = None
        self._accept_resumes = 0.0  # when accepts paused for lack of fds resume
        self._starts = ThreadStarts(
            "A worker thread could not be started (%s): %d worker(s) serve the requests in turn"
        )

    # -- worker pool -------------------------------------------------------------
    def _submit(self, conn: ThreadedConn) -> None:
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
        if spawn and self._starts.start(thread, self._workers, self._lock) is not None:
            with self._lock:
                if not self._workers:  # not one thread to serve it: it cannot wait
                    self._busy -= 1
                    owed = False
                else:  # the running workers take it in turn: one of them is owed to it
                    self._idle_workers -= 1
                    owed = True
            if not owed:
                self._drop(conn)
                return
        self._jobs.put(conn)

    def _work(self) -> None:
        jobs = self._jobs
        # While this thread waits for an async controller, it does its socket I/O.
        helper = LoopHelper()
        help_while_waiting(helper)
        # Every piece of user code this thread runs (a websocket's on_handshake too)
        # is this server's: stop() there must not wait for the shutdown.
        SERVING.set(self)
        with self._lock:
            self._helpers.append(helper)
        while True:
            conn = jobs.get()
            if conn is None:
                return
            conn.helper = helper
            park = False
            try:
                park = conn.serve_ready()
            except ClientGone:
                park = False
            except BaseException:  # not even SystemExit may kill a worker of the pool
                _log.exception("Unexpected error on a connection")
                park = False
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle_workers += 1
            if (park or conn.lingering) and not self.stopping:
                if park and conn.deadline <= time.monotonic():
                    # Bytes that keep coming never leave it armed for the sweep to
                    # see (slowloris): its deadline is checked here too.
                    self._expire(conn)
                # Armed again from this thread: no hand-off to the selector thread.
                elif not self._poller.rearm(conn.sock, conn):
                    self._drop(conn)
            elif conn.upgrade is None:
                self._drop(conn)
            else:  # a websocket thread owns the socket now
                self._poller.discard(conn.sock)

    def _drop(self, conn: ThreadedConn) -> None:
        self._poller.discard(conn.sock)
        conn.close()
        with self._lock:
            self._conns.discard(conn)
            self._refusing.discard(conn)

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
                if self._accept_resumes and now >= self._accept_resumes:
                    self._accept_resumes = 0.0
                    poller.add_static(self.listener, _LISTEN)
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
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    # The listener stays readable: without a pause the selector
                    # thread would spin on it.  Connections wait in the backlog.
                    _log.warning("accept failed (%s); pausing accepts for %.0f s",
                                 exc, ACCEPT_RETRY_DELAY)  # fmt: skip
                    self._poller.remove(self.listener)
                    self._accept_resumes = time.monotonic() + ACCEPT_RETRY_DELAY
                else:
                    _log.warning("accept failed", exc_info=True)
                return
            if len(self._conns) >= self.config.max_connections:
                if self.config.ssl_context is None:
                    self._refuse(sock, peer)
                else:
                    self._refuse_tls(sock, peer)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wrapped = self._wrap(sock)
            if wrapped is None:
                continue
            conn = ThreadedConn(self, wrapped, peer)
            with self._lock:
                self._conns.add(conn)
            self._poller.add(wrapped, conn)

    def _refuse(self, sock: socket.socket, peer: Any) -> None:
        """Answer 503 and close with a lingering close: closing at once, with the
        client's request unread, would reset the connection and lose the 503."""
        try:
            sock.setblocking(False)
            sock.send(service_unavailable())
        except OSError:
            sock.close()
            return
        refused = ThreadedConn(self, sock, peer)  # not counted in max_connections
        refused.linger()
        if not refused.lingering:
            sock.close()
            return
        self._poller.add(sock, refused)

    def _refuse_tls(self, sock: socket.socket, peer: Any) -> None:
        """Over TLS the 503 must go out encrypted, after a handshake: the connection is
        served like any other (its handshake runs on a worker as its bytes arrive,
        within head_timeout), but only to answer 503 and linger.  Not counted in
        max_connections; at most TLS_REFUSALS at once, so a flood of handshakes past
        the limit cannot pile up (beyond them, closed at once)."""
        with self._lock:
            crowded = len(self._refusing) >= TLS_REFUSALS
        wrapped = None if crowded else self._wrap(sock)
        if wrapped is None:
            sock.close()
            return
        refused = ThreadedConn(self, wrapped, peer)
        refused.refused = True
        with self._lock:
            self._refusing.add(refused)
        self._poller.add(wrapped, refused)

    def _wrap(self, sock: socket.socket) -> socket.socket | None:
        context = self.config.ssl_context
        if context is None:
            # Read only when the poller saw input; the head deadline is the sweep's.
            timeout = self.config.body_timeout
            set_kernel_timeouts(sock, timeout, timeout)
            return sock
        # The handshake runs in non-blocking reads as its bytes arrive
        # (ThreadedConn._serve_ready_tls); the sweep bounds it with the first
        # request head (head_timeout from the accept).  A TLS socket stays
        # non-blocking: its reads and writes wait in poll, bounded as they go.
        try:
            wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            wrapped.setblocking(False)
        except (OSError, ssl.SSLError):
            sock.close()
            return None
        return wrapped

    def _sweep(self, now: float) -> None:
        expired = [conn for conn in self._poller.armed() if conn.deadline <= now]
        for conn in expired:
            self._poller.remove(conn.sock)
            self._expire(conn)

    def _expire(self, conn: ThreadedConn) -> None:
        """Close a connection (not armed) whose deadline passed: a 408 only for a started
        head (a silent connection is closed silently); one non-blocking try, so this
        never waits on a client."""
        if conn.head_started:
            try:
                conn.sock.setblocking(False)
                conn.sock.send(conn.conn.send_error(408))
            except (OSError, ValueError):  # full buffer, or a TLS handshake under way
                pass
        self._drop(conn)

    def _shutdown(self) -> None:
        # In-flight requests get drain_timeout from the stop, however long the
        # websockets' closing handshakes take: those run alongside the drain.
        deadline = time.monotonic() + self.config.drain_timeout
        poller = self._poller
        poller.discard(self.listener)
        self.listener.close()
        upgrade = self.upgrade_handler
        if upgrade is not None:
            upgrade.close_threaded()  # websockets: 1001 now
        for conn in poller.armed():
            poller.remove(conn.sock)
            self._drop(conn)
        with self._lock:
            in_flight = list(self._conns)
        for conn in in_flight:  # their answers say Connection: close
            conn.conn.close_after_response()
        while time.monotonic() < deadline and not self._hurried:
            with self._lock:
                if self._busy == 0:
                    break
            time.sleep(0.01)
        for _ in self._workers:
            self._jobs.put(None)
        # Past the drain deadline: cut the requests still served, so their clients
        # learn it now, then give the workers one second in all (not one each).
        # Websockets end on their own (within CLOSE_TIMEOUT of their 1001).
        with self._lock:
            stuck = [conn for conn in self._conns if conn.upgrade is None]
        for conn in stuck:
            conn.cut()  # wakes a worker blocked writing to a client that does not read
            self._drop(conn)
        # A worker waiting for a coroutine (on the loop every Server shares) that waits
        # for what never comes: the coroutine is cancelled (its finally runs), the
        # worker's wait ends as for a client gone.
        with self._lock:
            helpers = list(self._helpers)
        for helper in helpers:
            helper.cancel_waits(_cut_at_stop)
        join_deadline = time.monotonic() + 1.0
        for thread in self._workers:
            thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
        if upgrade is not None:
            upgrade.wait_threaded()
        for conn in poller.armed():  # re-armed by the last workers
            poller.remove(conn.sock)
            self._drop(conn)
        with self._lock:
            remaining = list(self._conns)
        for conn in remaining:
            conn.cut()
            self._drop(conn)
        poller.close()
        self.done.set()

    def hurry(self) -> None:
        """Stop waiting for the requests in flight (a second ^C): they are cut now."""
        self._hurried = True
        self.stop(wait=False)

    def stop(self, wait: bool = True) -> None:
        """Stop accepting, finish in-flight requests (up to the drain timeout), close."""
        self.stopping = True
        self._wake()
        if wait and not self.cannot_wait():
            self.done.wait(stop_wait_bound(self.config))

    def cannot_wait(self) -> bool:
        """True in the selector thread or inside a request: stop() must not wait there."""
        return threading.current_thread() is self.owner_thread or SERVING.get() is self
