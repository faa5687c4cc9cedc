"""The seam between the dispatch layer and a transport.

A transport hands the dispatcher one :class:`Channel` per request: the
dispatcher pulls the request body from it and pushes the response into it.
The channel's ``async`` methods never suspend in the threaded transport (they
block instead), which lets one dispatch coroutine serve both transports.
"""

from __future__ import annotations

import codecs
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import HttpError
from .invoke import run_sync

__all__ = [
    "DRAIN_LOW_WATER",
    "AnswerCut",
    "Channel",
    "ClientGone",
    "FileShrank",
    "HeadAnswered",
    "HeaderLines",
    "LengthMismatch",
    "declared_length",
    "encode_headers",
    "file_chunks",
    "sends_no_body",
    "with_content_length",
    "without_framing",
]

HeaderLines = list[tuple[bytes, bytes]]
FILE_CHUNK = 256 * 1024
# RFC 9110 5.5: no control character but HTAB in a field value (CR/LF would
# also split the response).
_UNSAFE = str.maketrans({chr(c): " " for c in (*range(0x20), 0x7F) if c != 0x09})


def _header_char(exc: UnicodeError) -> tuple[bytes, int]:
    """The latin-1 error handler of header values: a lone surrogate (a raw byte of
    undecodable request text, ``surrogateescape``) is that byte again; any other
    character beyond U+00FF cannot be sent and becomes ``?``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chars = exc.object[exc.start : exc.end]
    out = bytes(ord(c) - 0xDC00 if 0xDC80 <= ord(c) <= 0xDCFF else 0x3F for c in chars)
    return out, exc.end


codecs.register_error("simple_http_server.header", _header_char)

#: Headers whose value is a URI reference (RFC 9110 10.2.2, 8.7).
_URI_HEADERS = frozenset({"location", "content-location"})
_NON_ASCII = re.compile(rb"[\x80-\xff]")


def _percent(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def _encode(text: str, name: str = "") -> bytes:
    """A header name or value as bytes: latin-1 (ISO-8859-1, as WSGI and HTTP
    clients read it), so each character up to U+00FF is one byte whatever the
    rest of the value; a URI (``Location``) has its non-ASCII percent-encoded
    as UTF-8 (RFC 3986 2.5)."""
    # A field value has no surrounding whitespace either (h11 refuses it).
    if text.isascii() and text.isprintable():  # the common case: nothing to neutralize
        return text.strip(" ").encode("ascii")
    text = text.translate(_UNSAFE).strip(" \t")
    if name.lower() in _URI_HEADERS:
        return _NON_ASCII.sub(_percent, text.encode("utf-8", "surrogateescape"))
    return text.encode("latin-1", "simple_http_server.header")


_NAMES: dict[str, bytes] = {}


def encode_headers(headers: list[tuple[str, str]]) -> HeaderLines:
    """Header lines as bytes (see :func:`_encode`), control characters (CR, LF,
    NUL...) turned into spaces."""
    names = _NAMES
    lines: HeaderLines = []
    for name, value in headers:
        encoded = names.get(name)
        if encoded is None:
            encoded = _encode(name)
            if len(names) < 512:  # header names repeat; values mostly do not
                names[name] = encoded
        if value.isascii() and value.isprintable():  # _encode's common case, inlined
            lines.append((encoded, value.strip(" ").encode("ascii")))
        else:
            lines.append((encoded, _encode(value, name)))
    return lines


def sends_no_body(method: str, status: int) -> bool:
    """True for the answers that carry no body and no ``Content-Length`` or
    ``Transfer-Encoding``: 1xx, 204, 304 (RFC 9110 8.6) and a 2xx to ``CONNECT``
    (RFC 9110 9.3.6: it would open a tunnel, which this server does not relay)."""
    return status < 200 or status in (204, 304) or (status < 300 and method == "CONNECT")


def without_framing(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without ``Content-Length`` and ``Transfer-Encoding`` lines."""
    return [h for h in headers if h[0].lower() not in ("content-length", "transfer-encoding")]


def with_content_length(
    headers: HeaderLines, status: int, size: int, method: str = "GET"
) -> HeaderLines:
    """``headers`` with exactly one ``Content-Length`` line, for a body of ``size``
    bytes; none for the answers that carry none (:func:`sends_no_body`)."""
    lines = [h for h in headers if h[0].lower() != b"content-length"]
    if not sends_no_body(method, status):
        lines.append((b"Content-Length", str(size).encode()))
    return lines


#: ``drain()`` (of a response or a websocket session) returns once at most this is unsent.
DRAIN_LOW_WATER = 64 * 1024


class ClientGone(Exception):
    """The client disconnected or stalled, or the answer cannot be completed; the
    connection is dropped.

    Channel methods raise it; the dispatcher lets it through to the transport
    (no error page, no traceback: there is nobody to answer).
    """


class HeadAnswered(ClientGone):
    """The answer to a ``HEAD`` went out with its head: no body can follow it
    (RFC 9110 9.3.2).

    ``Response.write_bytes`` raises it once the head is sent, so a controller that
    streams stops as it does when the client leaves.  Unlike a departed client, the
    answer is complete: the dispatcher ends it normally and the connection stays.
    """


class FileShrank(ClientGone):
    """A static file got shorter while it was sent: the body can never fill its
    ``Content-Length``, so the connection is dropped (the client sees a short body).

    An expected runtime condition (a file rewritten or truncated on disk), not a
    bug: the dispatcher logs it as one warning line, without a traceback.
    """

    def __init__(self, file: object, expected: int, sent: int) -> None:
        self.path = _file_name(file)
        self.expected = expected
        self.sent = sent
        super().__init__(f"file shrank while sending: {self.path}: {sent} of {expected} bytes sent")


def file_chunks(file: BinaryIO, offset: int, count: int) -> Iterator[bytes]:
    """``count`` bytes of ``file`` from ``offset``, the ones its ETag and size describe:
    no more when it grew since, and :class:`FileShrank` when it ends before."""
    file.seek(offset)
    left = count
    while left > 0:
        chunk = file.read(min(FILE_CHUNK, left))
        if not chunk:
            raise FileShrank(file, count, count - left)
        left -= len(chunk)
        yield chunk


class AnswerCut(ClientGone):
    """The controller failed after its streamed answer started: the answer is cut
    (the connection dropped) rather than passed off as complete."""


class LengthMismatch(AnswerCut):
    """A streamed body (a generator's, or what ``Response.write_bytes`` wrote)
    disagrees with the ``Content-Length`` its controller set: the answer can never be
    completed, so the connection is dropped before the extra bytes or instead of
    the end (the client sees a cut answer).

    A controller's bug, not the client's: the dispatcher logs it as one error line.
    """

    def __init__(self, declared: int, sent: int) -> None:
        self.declared = declared
        self.sent = sent  # what the body came to, or would have with the refused piece
        if sent > declared:
            problem = f"longer than its Content-Length: {declared} (at least {sent} bytes)"
        else:
            problem = f"shorter than its Content-Length: {declared} ({sent} bytes)"
        super().__init__(f"the controller's streamed body is {problem}")


def declared_length(headers: list[tuple[str, str]]) -> int | None:
    """The ``Content-Length`` a controller set on a streamed answer (checked by
    ``check_framing``: one non-negative integer, maybe repeated), or None."""
    for name, value in headers:
        if name.lower() == "content-length":
            length = value.split(",")[0].strip(" \t")
            return int(length) if length.isdigit() and length.isascii() else None
    return None


def _file_name(file: object) -> str:
    name = getattr(file, "name", file)
    try:
        return os.fsdecode(name)  # type: ignore[arg-type]
    except TypeError:  # a file object without a path
        return repr(name)


class Channel(ABC):
    """One request/response exchange with a client."""

    #: True when the connection is TLS.
    secure: bool = False
    #: (host, port) of the peer, when known.
    peer: tuple[str, int] | None = None
    #: True when a request body may come without ``Content-Length`` or
    #: ``Transfer-Encoding`` (HTTP/2 and later behind an ASGI server).
    unframed_body: bool = False

    @abstractmethod
    async def receive(self) -> bytes:
        """The next piece of the request body; ``b""`` once it is complete."""

    @abstractmethod
    async def send_head(self, status: int, headers: HeaderLines) -> None:
        """Send the response head."""

    @abstractmethod
    async def send_data(self, data: bytes) -> None:
        """Send a piece of the response body."""

    @abstractmethod
    async def send_end(self) -> None:
        """Finish the response."""

    async def discard_body(self, limit: int) -> bool:
        """Read and drop the rest of the request body, at most ``limit`` bytes, so the
        connection can serve the next request; False when it is larger or fails."""
        discarded = 0
        try:
            while discarded <= limit:
                chunk = await self.receive()
                if not chunk:
                    return True
                discarded += len(chunk)
        except (ClientGone, HttpError):
            return False
        return False

    def close_after_response(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """The rest of the request body will not be read (e.g. a 413): answer with
        ``Connection: close`` and close with a lingering close, no draining."""

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset``, a chunk at a time."""
        for chunk in file_chunks(file, offset, count):
            await self.send_data(chunk)

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        """Send a complete response whose body is in memory (one write when possible)."""
        await self.send_head(status, headers)
        await self.send_data(body)
        await self.send_end()

    # Blocking forms, for user code that streams from a plain function
    # (``Response.write_bytes``).  Transports override them when the async
    # forms may suspend.
    def start_blocking(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send a response head from synchronous code."""
        run_sync(self.send_head(status, encode_headers(headers)))

    def write_blocking(self, data: bytes) -> None:
        """Send body bytes from synchronous code."""
        run_sync(self.send_data(data))

    def end_blocking(self) -> None:
        """Finish the response from synchronous code."""
        run_sync(self.send_end())

    def watch_departure(self, cancel: Callable[[], object] | None) -> None:  # noqa: B027
        """A streamed answer starts going out: from now on (once the request is read
        whole) the client's EOF or a reset means it left, and the stream ends at once,
        also while it waits for its next piece.  On an event loop ``cancel`` (the
        stream task's) is called then; without one (``None``) the transport cancels
        what its thread waits for itself.  By default nothing is watched: the stream
        learns it at a write."""

    def unwatch_departure(self) -> bool:
        """The streamed answer ended (or failed): stop watching; True when the client
        left meanwhile."""
        return False

    async def drain(self) -> None:  # noqa: B027 - optional hook, immediate by default
        """Wait until the client has taken most of what the blocking forms wrote from
        a coroutine (they never wait there); ``ClientGone`` once it is gone.  Returns
        at once where those writes wait for the client themselves."""
