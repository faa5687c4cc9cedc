"""What both transports share: building requests from heads, listening sockets, limits."""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .. import logger as _logging
from ..dispatch.channel import ClientGone  # re-exported for the transports
from ..dispatch.dispatcher import make_request
from ..models import Request
from ..protocol.http11 import DRAIN_LIMIT, HttpConnection, RequestHead

if TYPE_CHECKING:
    import asyncio

    from ..config import ServerConfig

__all__ = [
    "DRAIN_LIMIT",
    "NOWAIT",
    "PACE_SAMPLES",
    "POLL_IN",
    "POLL_OUT",
    "READ_SIZE",
    "SERVING",
    "STOP_WAIT_GRACE",
    "BodyPace",
    "ClientGone",
    "FileSlice",
    "SendPace",
    "backlog_exceeded",
    "bytes_acked",
    "client_name",
    "new_connection",
    "open_listener",
    "progress",
    "request_from_head",
    "send_file",
    "send_rest",
    "service_unavailable",
    "set_kernel_timeouts",
    "set_receive_timeout",
    "stop_wait_bound",
    "unsent_bytes",
    "wait_ready",
]

READ_SIZE = 256 * 1024
#: ``send`` flag: take what the socket takes now, never wait (0 where there is none).
NOWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
POLL_IN: int = getattr(select, "POLLIN", 1)
POLL_OUT: int = getattr(select, "POLLOUT", 4)
#: A wait for a slow client looks at its progress ``body_timeout / PACE_SAMPLES``
#: seconds apart at most: a stall is found that much after ``body_timeout`` at worst.
PACE_SAMPLES = 8
#: Most bytes one ``os.sendfile`` call is asked for.
_FILE_BLOCK = 1 << 30
#: ``struct tcp_info`` (Linux 4.1 and later): ``tcpi_bytes_acked`` at byte 120.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = _BYTES_ACKED_AT + _BYTES_ACKED.size
_log = _logging.get_logger("simple_http_server.transport")


#: The transport serving the current request (seen by user code, in any thread
#: or loop it runs on), so ``stop()`` called from a controller does not wait
#: for that very request to finish.
SERVING: ContextVar[Any] = ContextVar("simple_http_server_serving", default=None)

#: Seconds ``stop()`` waits for a shutdown beyond ``drain_timeout``.  The shutdown
#: bounds itself (the websockets' closing handshakes run alongside the drain, then
#: the last answers flush and the rest is cut); this only keeps a caller from
#: waiting forever on a loop that no longer runs.
STOP_WAIT_GRACE = 15.0


def stop_wait_bound(config: ServerConfig) -> float:
    """Seconds ``stop()`` waits at most for the shutdown to finish."""
    return config.drain_timeout + STOP_WAIT_GRACE


class FileSlice:
    """A placeholder body piece of known length, written with ``sendfile``.

    h11 frames it (``send_with_data_passthrough``) without reading it; the
    transport sends the file's bytes in its place.
    """

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


def unsent_bytes(transport: asyncio.WriteTransport | None) -> int:
    """Bytes an asyncio transport still holds for the client (0 once it is gone:
    Python 3.10's TLS transport raises instead after its connection was lost).

    A TLS transport counts only what it has not encrypted yet; the encrypted bytes
    wait in the socket transport below it, which is counted too.
    """
    if transport is None:
        return 0
    try:
        size = transport.get_write_buffer_size()
    except AttributeError:
        return 0
    below = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if below is not None:
        size += below.get_write_buffer_size()
    return size


def client_name(peer: Any) -> str:
    """``host:port`` of a client for a log line (escaped), else ``a client`` (under
    ASGI the peer is what the server says)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return _logging.escape(f"{peer[0]}:{peer[1]}")
    return "a client"


def backlog_exceeded(peer: Any, unsent: int, limit: int) -> str:
    """Log (once per connection: it is dropped) that a client took too little of
    what coroutines wrote; returns the reason its ``ClientGone`` carries."""
    reason = (
        f"{unsent} bytes written from a coroutine are not taken by {client_name(peer)}: more than "
        f"max_send_backlog ({limit}); connection dropped"
    )
    _log.warning("%s", reason)
    return reason


def request_from_head(head: RequestHead, secure: bool) -> Request:
    """The dispatch-layer request of an h11 request head."""
    target = head.target.decode("latin-1")
    return make_request(head.method, target, head.headers, "https" if secure else "http")


def new_connection(config: ServerConfig) -> HttpConnection:
    """A protocol object configured from the server settings."""
    max_requests = config.keep_alive_max_requests if config.keep_alive else 1
    return HttpConnection(max_head_size=config.limits.max_head_size, max_requests=max_requests)


def service_unavailable() -> bytes:
    """A complete 503 answer for connections over the limit."""
    return HttpConnection().send_error(503)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    micro = int((seconds - whole) * 1e6)
    if seconds > 0 and not (whole or micro):
        micro = 1  # a timeout under a microsecond is not "no timeout" (0)
    return struct.pack("ll", whole, micro)


def set_kernel_timeouts(sock: socket.socket, receive: float, send: float) -> None:
    """Blocking mode with kernel-side timeouts (``SO_RCVTIMEO``/``SO_SNDTIMEO``; 0 = none).

    Python's own socket timeouts ``poll()`` before every ``recv`` and ``send``;
    kernel timeouts cost nothing per call.  A timed-out call raises
    ``BlockingIOError`` (``EAGAIN``) instead of ``TimeoutError``.
    """
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(receive))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(send))


def set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    """Change the kernel receive timeout only (see :func:`set_kernel_timeouts`)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def bytes_acked(sock: Any) -> int | None:
    """Bytes of ours the client's TCP has acknowledged so far (Linux's ``TCP_INFO``:
    ``tcpi_bytes_acked``); None where the system does not tell."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, ValueError, TypeError):  # closed, or not a TCP socket
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])


def progress(sock: Any, fallback: int) -> int:
    """A counter of what the client has taken: the bytes its TCP acknowledged, or
    ``fallback`` (a count of what the socket took) where the system does not tell."""
    acked = bytes_acked(sock)
    return fallback if acked is None else acked


class SendPace:
    """How a client takes the output the server waits to send it.

    Only the time the server waits for the client counts (a write the socket did not
    take at once, until it took it all; output left in an asyncio transport), never
    the time the app takes to produce the answer: a slow event stream is not a slow
    client.  A wait fails once the client took nothing for ``body_timeout`` (a stall),
    or, once the server has waited ``min_send_rate_grace`` seconds for it in all, as
    soon as the client has taken less than ``min_send_rate`` bytes per second of that
    waiting.  One per connection (a websocket session goes on with it).  What the client
    took is what its TCP acknowledged (:func:`progress`), looked at when the socket
    takes more and every :attr:`every` seconds of a wait; the bookkeeping happens only
    while the server waits, never for output taken at once.
    """

    __slots__ = (
        "_body_timeout",
        "_grace",
        "_mark",
        "_min_rate",
        "_progress_at",
        "_since",
        "_taken",
        "_waited",
        "every",
        "peer",
        "waiting",
    )

    def __init__(self, config: ServerConfig, peer: Any) -> None:
        self._body_timeout = config.body_timeout
        self._min_rate = config.min_send_rate
        self._grace = config.min_send_rate_grace
        self.peer = peer
        #: Seconds between two looks at the client's progress during a wait.
        self.every = max(0.005, config.body_timeout / PACE_SAMPLES)
        self.waiting = False
        self._taken = 0  # bytes the client took while the server waited
        self._waited = 0.0  # seconds of the waits that ended
        self._since = 0.0  # when the current wait began
        self._progress_at = 0.0  # when the client last took bytes (or the wait began)
        self._mark = 0  # the progress counter at the last look

    def sample(self, counter: int, rate: bool = True) -> float:
        """Look at the progress ``counter`` (:func:`progress`; a wait begins unless one
        is under way); seconds left before the wait fails (0 or less: it failed).
        ``rate=False``: the counter cannot show the progress under way, only the stall
        bound applies to this look."""
        now = time.monotonic()
        if not self.waiting:
            self.waiting = True
            self._since = self._progress_at = now
        elif counter > self._mark:
            self._taken += counter - self._mark
            self._progress_at = now
        self._mark = counter
        return self._due(rate) - now

    def end(self, counter: int) -> None:
        """The server no longer waits for the client (its output was taken, or it is
        dropped); ``counter``: the progress counter now."""
        if self.waiting:
            now = time.monotonic()
            if counter > self._mark:
                self._taken += counter - self._mark
            self.waiting = False
            self._waited += now - self._since

    def _due(self, rate: bool = True) -> float:
        due = self._progress_at + self._body_timeout
        if self._min_rate and rate:
            waited_by_then = max(self._grace, self._taken / self._min_rate)
            due = min(due, self._since + waited_by_then - self._waited)
        return due

    def failure(self) -> str:
        """Why the wait failed (after :meth:`sample` said so); a client too slow is logged."""
        now = time.monotonic()
        if now >= self._progress_at + self._body_timeout:
            return f"the client took nothing for {self._body_timeout:g} s"
        waited = self._waited + (now - self._since if self.waiting else 0.0)
        reason = (
            f"{client_name(self.peer)} took {self._taken} bytes in {waited:.1f} s of waiting "
            f"for it: slower than min_send_rate ({self._min_rate:g} bytes/s); connection dropped"
        )
        _log.warning("%s", reason)
        return reason


def send_rest(sock: socket.socket, data: bytes | memoryview, sent: int, pace: SendPace) -> None:
    """Write ``data`` but its first ``sent`` bytes (what a :data:`NOWAIT` send took)
    on a blocking socket: wait until the socket takes more, write what it takes, and
    so on, as long as the client keeps the pace (``TimeoutError`` once it fails).

    Not ``sendall`` on a kernel send timeout: a ``send`` that took some bytes before
    its wait timed out returns their count, and the next one waits the whole timeout
    again, so a client that stopped reading held the socket twice as long (or more).
    """
    with memoryview(data) as view:
        size = len(view)
        try:
            while sent < size:
                left = pace.sample(progress(sock, sent))
                if left <= 0:
                    raise TimeoutError(pace.failure())
                if _writable(sock, min(left, pace.every)):
                    try:
                        sent += sock.send(view[sent:], NOWAIT)
                    except BlockingIOError:  # woken for nothing: wait again
                        pass
        finally:
            pace.end(progress(sock, sent))


def send_file(
    sock: socket.socket, file: Any, offset: int, count: int, pace_of: Callable[[], SendPace]
) -> int:
    """``os.sendfile`` of ``count`` bytes of ``file`` from ``offset`` on a blocking
    socket, as the client takes them (``TimeoutError`` once its pace fails); returns
    the bytes sent, fewer when the file ended early.  The socket is non-blocking
    meanwhile (``sendfile`` has no ``MSG_DONTWAIT``)."""
    out, source = sock.fileno(), file.fileno()
    sent = 0
    pace: SendPace | None = None
    sock.setblocking(False)
    try:
        while sent < count:
            try:
                taken = os.sendfile(out, source, offset + sent, min(count - sent, _FILE_BLOCK))
            except BlockingIOError:
                taken = -1
            if taken == 0:  # the file ended
                break
            if taken > 0:
                sent += taken
                continue
            if pace is None:
                pace = pace_of()
            left = pace.sample(progress(sock, sent))
            if left <= 0:
                raise TimeoutError(pace.failure())
            _writable(sock, min(left, pace.every))
    finally:
        if pace is not None:
            pace.end(progress(sock, sent))
        try:
            sock.setblocking(True)
        except OSError:  # closed under us (stop() cut it): the caller hears it
            pass
    return sent


def wait_ready(sock: Any, events: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to be ready for ``events``
    (:data:`POLL_IN`, :data:`POLL_OUT`); True when it is (or failed: the next call
    on it says how)."""
    if timeout <= 0:
        return False
    try:
        if hasattr(select, "poll"):  # not select(): descriptors may exceed FD_SETSIZE
            poller = select.poll()
            poller.register(sock, events)
            return bool(poller.poll(math.ceil(timeout * 1000)))
        readers = [sock] if events == POLL_IN else []
        writers = [sock] if events == POLL_OUT else []
        return any(select.select(readers, writers, [], timeout)[:2])
    except ValueError as exc:  # closed under us (by another thread)
        raise OSError(errno.EBADF, str(exc)) from None


def _writable(sock: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to take bytes."""
    return wait_ready(sock, POLL_OUT, timeout)


def open_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class BodyPace:
    """Tracks how fast a request body arrives, against ``min_body_rate``.

    One per request, started with the request head.  :meth:`add` counts the
    body bytes handed to the dispatcher; :meth:`next_wait` bounds the wait for
    more, so a client that stops sending is cut off as soon as its rate falls
    below the minimum (after ``min_body_rate_grace``), not only when a byte
    finally arrives.  Bytes already waiting are always read first: a slow
    consumer never makes its client look slow.
    """

    __slots__ = ("_body_timeout", "_grace", "_min_rate", "_received", "_started")

    def __init__(self, config: ServerConfig) -> None:
        self._min_rate = config.min_body_rate
        self._grace = config.min_body_rate_grace
        self._body_timeout = config.body_timeout
        self._started = time.monotonic()
        self._received = 0

    def add(self, size: int) -> None:
        """Count ``size`` body bytes received."""
        self._received += size

    def next_wait(self) -> float:
        """Seconds to wait for more of the body: ``body_timeout``, or less when the
        body would be too slow by then (at least a millisecond, to take what the
        socket already holds)."""
        if not self._min_rate:
            return self._body_timeout
        due = max(self._grace, self._received / self._min_rate)
        left = due - (time.monotonic() - self._started)
        return max(0.001, min(self._body_timeout, left))

    def limited_by_rate(self, wait: float) -> bool:
        """True when a wait of ``wait`` seconds was cut short by the minimum rate."""
        return wait < self._body_timeout
