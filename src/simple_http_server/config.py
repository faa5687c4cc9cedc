"""Server settings: one frozen, validated object with safe defaults.

Every limit and timeout of the transports and the dispatch layer is here, so
``server.start(...)``, the command line and the adapters share one source.
"""

from __future__ import annotations

import math
import operator
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict

__all__ = ["MAX_SECONDS", "ConfigOptions", "Limits", "ServerConfig", "media_types"]

KIB = 1024
MIB = 1024 * KIB
#: Longest accepted timeout, in seconds (about 115 days): sockets and the kernel's
#: timeouts cannot take much more.
MAX_SECONDS = 10_000_000.0
_TIMES = (
    "idle_timeout",
    "head_timeout",
    "body_timeout",
    "drain_timeout",
    "websocket_ping_interval",
    "websocket_ping_timeout",
    "min_body_rate_grace",
    "min_send_rate_grace",
)
#: Settings that count something: whole numbers (nan, 2.5 and bools are refused).
_WHOLE = (
    "port",
    "keep_alive_max_requests",
    "max_connections",
    "worker_threads",
    "gzip_min_size",
    "gzip_compress_level",
)


def whole_number(name: str, value: Any) -> int:
    """``value`` as an int: an int or an integral float (``16e6``); never a bool, a
    string, ``nan``, ``inf`` or ``2.5`` (ValueError naming the setting)."""
    if not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():  # False for nan and inf
            return int(value)
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"{name} must be a whole number, not {value!r}")


def finite_number(name: str, value: Any) -> float:
    """``value`` as a float: an int or a finite float; never a bool, a string, ``nan``
    or an infinity (ValueError naming the setting)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"{name} must be a finite number, not {value!r}")


def media_types(value: Any) -> frozenset[str]:
    """A set of media types from one type (``"text/plain"``), a comma-separated list
    (``"text/html, text/css"``), any iterable of them, or None; never the characters
    of a string."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    types = set()
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"gzip_content_types holds {item!r}: media types are strings")
        if item.strip():
            types.add(item.strip())
    return frozenset(types)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits of requests and messages."""

    #: Largest request line plus headers (431 beyond; 414 for a request line alone beyond).
    max_head_size: int = 64 * KIB
    #: Largest body buffered in memory: JSON, urlencoded forms, ``BytesBody`` (413 beyond).
    max_body_size: int = 16 * MIB
    #: Largest multipart body; file parts stream to disk (413 beyond).
    max_upload_size: int = 1024 * MIB
    #: Most fields in one urlencoded form body: ``&``-separated pieces (413 beyond).
    max_form_fields: int = 1000
    #: Most parts in one multipart body (413 beyond).
    max_parts: int = 1000
    #: Most file parts in one multipart body; each may hold a temporary file open
    #: until the request ends (413 beyond).
    max_files: int = 100
    #: Largest header line of one multipart part (413 beyond).
    max_part_header_size: int = 8 * KIB
    #: Largest websocket message (close 1009 beyond; 0: no bound).
    max_websocket_message_size: int = 16 * MIB
    #: Most output a connection may hold unsent when it was written from a coroutine
    #: (``response.write_bytes``, ``session.send``), which never waits for the client:
    #: beyond it the client is taken as not reading and the connection is dropped
    #: (0: no bound).
    max_send_backlog: int = 16 * MIB

    def __post_init__(self) -> None:
        for f in fields(self):
            value = whole_number(f.name, getattr(self, f.name))
            if value < 0:
                raise ValueError(f"{f.name} must not be negative")
            object.__setattr__(self, f.name, value)
        if self.max_head_size == 0:  # a head is buffered whole: it always has a bound
            raise ValueError("max_head_size must be positive (0 would refuse every request)")


def _check_server_context(context: ssl.SSLContext) -> None:
    """Refuse a TLS context no server can use: each connection would fail (in the
    threaded transport, the first one ended the server with a ``ValueError``)."""
    if context.protocol == ssl.PROTOCOL_TLS_CLIENT:
        raise ValueError(
            "ssl_context is a client context (PROTOCOL_TLS_CLIENT, as ssl.create_default_context()"
            " makes); use ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)"
            " or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)"
        )
    if context.check_hostname:
        raise ValueError(
            "ssl_context.check_hostname (ssl_check_hostname=True) cannot apply to a server:"
            " it has no host name to check; leave it False"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything a transport needs to serve; see the README's limits table."""

    host: str = "127.0.0.1"
    port: int = 9090
    limits: Limits = field(default_factory=Limits)
    #: Keep connections open between requests.
    keep_alive: bool = True
    #: Requests served on one connection before it is closed (0: no limit).
    keep_alive_max_requests: int = 0
    #: Seconds a kept-alive connection is kept idle between two requests (never
    #: before the first request: ``head_timeout`` bounds that one).
    idle_timeout: float = 60.0
    #: Seconds allowed to deliver a complete request head: a new connection's first
    #: head (and TLS handshake) from the accept, a later head from its first byte.
    head_timeout: float = 10.0
    #: Seconds allowed between two pieces of a request body, and the longest a client
    #: may take none of the output while the server waits for it.
    body_timeout: float = 30.0
    #: Slowest accepted request body, in bytes per second, once ``min_body_rate_grace``
    #: seconds have passed (0 disables): a client trickling its body is cut off with 408.
    min_body_rate: float = 1024.0
    #: Seconds a body may take before ``min_body_rate`` is enforced.
    min_body_rate_grace: float = 10.0
    #: Slowest accepted client of the output, in bytes per second, once the server has
    #: waited ``min_send_rate_grace`` seconds for it (0 disables): only the time the
    #: server waits for the client to take bytes counts, never the time the app takes
    #: to produce them.  A slower client is dropped (a slow reader cannot hold a worker).
    min_send_rate: float = 4096.0
    #: Seconds the server may wait for a client's reading before ``min_send_rate`` is
    #: enforced.
    min_send_rate_grace: float = 10.0
    #: Most simultaneous connections; more get a 503 and are closed.
    max_connections: int = 10000
    #: Threads serving requests (threaded transport) or running sync code (asyncio).
    worker_threads: int = 64
    #: Seconds ``stop()`` waits for in-flight requests.
    drain_timeout: float = 10.0
    #: Seconds without anything from a websocket peer before the server pings it
    #: (0: no keepalive pings).  Not under ASGI: the ASGI server does the framing.
    websocket_ping_interval: float = 20.0
    #: Seconds a pinged websocket peer has to send anything (its pong or any frame);
    #: then the server closes with 1011 and drops it (0: never, pings only).
    websocket_ping_timeout: float = 20.0
    #: Write one access-log line per request.
    access_log: bool = False
    ssl_context: ssl.SSLContext | None = None
    #: Media types (or prefixes such as ``"text/"``) to gzip; empty: gzip is off.
    gzip_content_types: frozenset[str] = frozenset()
    #: Smallest body gzipped, in bytes (0 or more).
    gzip_min_size: int = 1024
    #: zlib level, 1 (fast) to 9 (small).
    gzip_compress_level: int = 6

    def __post_init__(self) -> None:
        types = self.gzip_content_types
        if not isinstance(types, frozenset) or not all(isinstance(t, str) for t in types):
            object.__setattr__(self, "gzip_content_types", media_types(types))
        for name in _WHOLE:
            object.__setattr__(self, name, whole_number(name, getattr(self, name)))
        for name in (*_TIMES, "min_body_rate", "min_send_rate"):
            object.__setattr__(self, name, finite_number(name, getattr(self, name)))
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if self.worker_threads < 1:
            raise ValueError("worker_threads must be at least 1")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.keep_alive_max_requests < 0:
            raise ValueError("keep_alive_max_requests must not be negative")
        if self.gzip_min_size < 0:
            raise ValueError("gzip_min_size must not be negative")
        if not 1 <= self.gzip_compress_level <= 9:
            raise ValueError("gzip_compress_level must be in 1..9")
        for name in _TIMES:
            if getattr(self, name) > MAX_SECONDS:
                raise ValueError(f"{name} must be a number of seconds up to {MAX_SECONDS:.0f}")
        if self.min_body_rate < 0 or self.min_body_rate_grace < 0:
            raise ValueError("min_body_rate and min_body_rate_grace must not be negative")
        if self.min_send_rate < 0 or self.min_send_rate_grace < 0:
            raise ValueError("min_send_rate and min_send_rate_grace must not be negative")
        for name in ("idle_timeout", "head_timeout", "body_timeout", "drain_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("websocket_ping_interval", "websocket_ping_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 turns it off)")
        if self.ssl_context is not None:
            _check_server_context(self.ssl_context)

    def with_changes(self, **changes: Any) -> ServerConfig:
        """A copy with some settings changed (``limits`` fields accepted too)."""
        limit_names = {f.name for f in fields(Limits)}
        limit_changes = {k: changes.pop(k) for k in list(changes) if k in limit_names}
        config = replace(self, **changes)
        if limit_changes:
            config = replace(config, limits=replace(config.limits, **limit_changes))
        return config

    @property
    def secure(self) -> bool:
        """True when serving TLS."""
        return self.ssl_context is not None


class ConfigOptions(TypedDict, total=False):
    """The settings ``ServerConfig.with_changes``, ``server.start`` and the WSGI/ASGI
    proxies take by name, for type checkers: the fields of :class:`ServerConfig` and of
    :class:`Limits`.  Sizes and counts are typed ``float``: a whole float (``16e6``)
    is taken too."""

    host: str
    port: int
    limits: Limits
    keep_alive: bool
    keep_alive_max_requests: float
    idle_timeout: float
    head_timeout: float
    body_timeout: float
    min_body_rate: float
    min_body_rate_grace: float
    min_send_rate: float
    min_send_rate_grace: float
    max_connections: float
    worker_threads: float
    drain_timeout: float
    websocket_ping_interval: float
    websocket_ping_timeout: float
    access_log: bool
    ssl_context: ssl.SSLContext | None
    gzip_content_types: str | Iterable[str] | None
    gzip_min_size: float
    gzip_compress_level: float
    max_head_size: float
    max_body_size: float
    max_upload_size: float
    max_form_fields: float
    max_parts: float
    max_files: float
    max_part_header_size: float
    max_websocket_message_size: float
    max_send_backlog: float
