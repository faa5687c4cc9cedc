"""A TLS socket that several threads read and write: one TLS call at a time.

OpenSSL does not allow two threads in one TLS connection at once.  A threaded
websocket session reads on its own thread while other threads send, and a TLS
1.3 peer's key update makes the reading side write (the answering key update)
and change the keys the writing side encrypts with: unserialized, the peer
soon sees a record it cannot decrypt.

:class:`SerializedTls` puts the socket in non-blocking mode and makes every
call into the TLS layer under one lock; the waits for the socket (``poll``)
happen outside it, so a reader waiting for input never holds up a writer.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable

from .common import POLL_IN, POLL_OUT, SendPace, progress, wait_ready

__all__ = ["WRITE_SLICE", "SerializedTls", "send_close_notify", "send_tls"]

#: The most one TLS write takes on: progress shows between slices.
WRITE_SLICE = 65536
_IN = POLL_IN
_OUT = POLL_OUT


def send_close_notify(sock: ssl.SSLSocket) -> None:
    """Send TLS's closure alert (``close_notify``) without waiting for the peer's: a
    connection closed without one looks cut short to the client (RFC 8446 6.1)."""
    try:
        sock.setblocking(False)
        sock.unwrap()  # sends ours; the peer's is not waited for (SSLWantReadError)
    except (OSError, ValueError):  # not waited for, a peer gone, no TLS state any more
        pass


def send_tls(sock: ssl.SSLSocket, data: bytes, pace_of: Callable[[], SendPace]) -> None:
    """Write all of ``data`` on a non-blocking TLS socket, in writes of
    :data:`WRITE_SLICE` at most, waiting for the socket while the client keeps the
    pace (``TimeoutError`` once it fails; ``pace_of`` gives the pace at the first wait).

    A write OpenSSL could not finish is offered again with the same bytes (it may
    have sent some of them already).
    """
    with memoryview(data) as view:
        size = len(view)
        done = 0
        pace: SendPace | None = None
        try:
            while done < size:
                try:
                    done += sock.send(view[done : done + WRITE_SLICE])
                    continue
                except ssl.SSLWantWriteError:
                    want = _OUT
                except ssl.SSLWantReadError:
                    want = _IN
                if pace is None:
                    pace = pace_of()
                left = pace.sample(progress(sock, done))
                if left <= 0:
                    raise TimeoutError(pace.failure())
                wait_ready(sock, want, min(left, pace.every))
        finally:
            if pace is not None:
                pace.end(progress(sock, done))


class SerializedTls:
    """The parts of a socket a websocket session uses, on a shared TLS socket.

    ``timeout`` bounds a wait without progress (``TimeoutError``), as a socket's
    timeout does.  A write OpenSSL could not finish must be offered again, with the
    same bytes first (the caller's queue keeps them): :meth:`send` checks that.

    A read may have to write too (the answer to a TLS 1.3 key update), which OpenSSL
    refuses ("bad length") while a record of another write is half sent: a reader
    first completes that write, with the bytes it was begun with, and the writer's
    next call reports them as taken.
    """

    __slots__ = ("_flushed", "_lock", "_pending", "_sock", "timeout")

    def __init__(self, sock: ssl.SSLSocket, timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._lock = threading.Lock()
        #: The bytes of a write OpenSSL has begun and must be offered again.
        self._pending: bytes | None = None
        #: How many of those a reader's call completed for the writer.
        self._flushed = 0
        self.timeout = timeout

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> int:
        """Decrypted bytes waiting in the TLS layer."""
        with self._lock:
            return self._sock.pending()

    def close_notify(self) -> None:
        """Send TLS's closure alert (after any write under way)."""
        with self._lock:
            send_close_notify(self._sock)

    def shutdown(self, how: int) -> None:
        """Shut the descriptor down (not ``SSLSocket.shutdown``: that drops the TLS
        state under a thread that may be using it)."""
        socket.socket.shutdown(self._sock, how)

    def recv(self, size: int) -> bytes:
        """Wait (up to ``timeout``) for decrypted bytes; ``b""`` at the end."""
        deadline = time.monotonic() + self.timeout
        while True:
            with self._lock:
                want = self._finish_pending_write()
                if not want:
                    try:
                        return self._sock.recv(size)
                    except ssl.SSLWantReadError:
                        want = _IN
                    except ssl.SSLWantWriteError:
                        want = _OUT
            self._wait(want, deadline)

    def _finish_pending_write(self) -> int:
        """Complete a write another thread began (the lock held): 0 once none is
        pending, else what to wait for first."""
        pending = self._pending
        if pending is None:
            return 0
        try:
            self._flushed = self._sock.send(pending)
        except ssl.SSLWantWriteError:
            return _OUT
        except ssl.SSLWantReadError:
            return _IN
        self._pending = None
        return 0

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Write what the socket takes now (``flags`` are ignored: it never waits).
        Raises ``BlockingIOError`` when it took nothing."""
        with self._lock:
            sent, _want = self._write(data)
        if not sent:
            raise BlockingIOError("the TLS socket takes nothing now")
        return sent

    def sendall(self, data: bytes | memoryview, pace: SendPace) -> None:
        """Write all of ``data``, waiting for the socket while the client keeps the
        pace (``TimeoutError`` once it fails)."""
        with memoryview(data) as view:
            done = 0
            try:
                while done < len(view):
                    with self._lock:
                        sent, want = self._write(view[done:])
                    if sent:
                        done += sent
                        continue
                    left = pace.sample(progress(self._sock, done))
                    if left <= 0:
                        raise TimeoutError(pace.failure())
                    wait_ready(self._sock, want, min(left, pace.every))
            finally:
                pace.end(progress(self._sock, done))

    def _write(self, data: bytes | memoryview) -> tuple[int, int]:
        """One TLS write of at most a slice (the lock held): bytes taken, and what to
        wait for when none were."""
        piece = data[:WRITE_SLICE]
        pending = self._pending
        if pending is not None and len(piece) < len(pending):
            # OpenSSL would fail the retry ("bad write retry")
            raise RuntimeError("a TLS write must be offered again before other bytes")
        if self._flushed:  # a reader completed the write begun with these bytes
            sent, self._flushed = self._flushed, 0
            return sent, 0
        try:
            sent = self._sock.send(piece)
        except ssl.SSLWantWriteError:
            if pending is None:  # it may have written part of the piece already
                self._pending = bytes(piece)
            return 0, _OUT
        except ssl.SSLWantReadError:
            if pending is None:
                self._pending = bytes(piece)
            return 0, _IN
        self._pending = None
        return sent, 0

    def _wait(self, events: int, deadline: float) -> None:
        """Wait outside the lock until the socket is ready for ``events``."""
        if not wait_ready(self._sock, events, deadline - time.monotonic()):
            raise TimeoutError("timed out")
