"""What both transports share: building requests from heads, listening sockets, limits."""

from __future__ import annotations

import socket
import struct
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..dispatch.channel import ClientGone  # re-exported for the transports
from ..dispatch.dispatcher import make_request
from ..models import Request
from ..protocol.http11 import HttpConnection, RequestHead

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = [
    "DRAIN_LIMIT",
    "READ_SIZE",
    "SERVING",
    "BodyPace",
    "ClientGone",
    "FileSlice",
    "new_connection",
    "open_listener",
    "request_from_head",
    "service_unavailable",
    "set_kernel_timeouts",
]

#: Unread request body bytes a transport discards to keep a connection alive.
DRAIN_LIMIT = 1024 * 1024
READ_SIZE = 256 * 1024


#: The transport serving the current request (seen by user code, in any thread
#: or loop it runs on), so ``stop()`` called from a controller does not wait
#: for that very request to finish.
SERVING: ContextVar[Any] = ContextVar("simple_http_server_serving", default=None)


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


def set_kernel_timeouts(sock: socket.socket, receive: float, send: float) -> None:
    """Blocking mode with kernel-side timeouts (``SO_RCVTIMEO``/``SO_SNDTIMEO``; 0 = none).

    Python's own socket timeouts ``poll()`` before every ``recv`` and ``send``;
    kernel timeouts cost nothing per call.  A timed-out call raises
    ``BlockingIOError`` (``EAGAIN``) instead of ``TimeoutError``.
    """
    sock.settimeout(None)
    for option, seconds in ((socket.SO_RCVTIMEO, receive), (socket.SO_SNDTIMEO, send)):
        whole = int(seconds)
        sock.setsockopt(
            socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1e6))
        )


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

    One per request; ``too_slow(n)`` is called with each piece read from the peer.
    """

    __slots__ = ("_grace", "_min_rate", "_received", "_started")

    def __init__(self, config: ServerConfig) -> None:
        self._min_rate = config.min_body_rate
        self._grace = config.min_body_rate_grace
        self._started = time.monotonic()
        self._received = 0

    def too_slow(self, received: int) -> bool:
        """Count ``received`` bytes; True once the body is slower than allowed."""
        self._received += received
        if not self._min_rate:
            return False
        elapsed = time.monotonic() - self._started
        return elapsed > self._grace and self._received < self._min_rate * elapsed
