"""What both transports share: building requests from heads, listening sockets, limits."""

from __future__ import annotations

import errno
import math
import select
import socket
import struct
import time
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
    "READ_SIZE",
    "SERVING",
    "STOP_WAIT_GRACE",
    "BodyPace",
    "ClientGone",
    "FileSlice",
    "backlog_exceeded",
    "new_connection",
    "open_listener",
    "request_from_head",
    "send_rest",
    "service_unavailable",
    "set_kernel_timeouts",
    "set_receive_timeout",
    "stop_wait_bound",
    "unsent_bytes",
]

READ_SIZE = 256 * 1024
#: ``send`` flag: take what the socket takes now, never wait (0 where there is none).
NOWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
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


def backlog_exceeded(peer: Any, unsent: int, limit: int) -> str:
    """Log (once per connection: it is dropped) that a client took too little of
    what coroutines wrote; returns the reason its ``ClientGone`` carries."""
    client = "a client"
    if isinstance(peer, tuple) and len(peer) >= 2:  # under ASGI, what the server says
        client = _logging.escape(f"{peer[0]}:{peer[1]}")
    reason = (
        f"{unsent} bytes written from a coroutine are not taken by {client}: more than "
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


def send_rest(sock: socket.socket, data: bytes | memoryview, sent: int, timeout: float) -> None:
    """Write ``data`` but its first ``sent`` bytes (what a :data:`NOWAIT` send took)
    on a blocking socket: wait until the socket takes more, write what it takes, and
    so on.  ``TimeoutError`` once it took nothing for ``timeout`` seconds.

    Not ``sendall`` on a kernel send timeout: a ``send`` that took some bytes before
    its wait timed out returns their count, and the next one waits the whole timeout
    again, so a client that stopped reading held the socket twice as long (or more).
    Any byte taken is progress, as in the asyncio transport: a slow reader that keeps
    reading is never dropped.
    """
    with memoryview(data) as view:
        size = len(view)
        deadline = time.monotonic() + timeout
        while sent < size:
            if not _writable(sock, deadline - time.monotonic()):
                raise TimeoutError(f"the client took nothing for {timeout:g} s")
            try:
                sent += sock.send(view[sent:], NOWAIT)
            except BlockingIOError:  # woken for nothing: wait again, within the deadline
                continue
            deadline = time.monotonic() + timeout


def _writable(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to take bytes (True; also when it
    failed or was shut down: the ``send`` then says how)."""
    if timeout <= 0:
        return False
    try:
        if hasattr(select, "poll"):  # not select(): descriptors may exceed FD_SETSIZE
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            return bool(poller.poll(math.ceil(timeout * 1000)))
        return bool(select.select([], [sock], [], timeout)[1])
    except ValueError as exc:  # closed under us (by another thread)
        raise OSError(errno.EBADF, str(exc)) from None


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
