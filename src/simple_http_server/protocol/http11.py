"""HTTP/1.1 server protocol: a pure wrapper over ``h11.Connection``.

Bytes go in through :meth:`HttpConnection.receive_data`, events come out of
:meth:`HttpConnection.next_event`, and every ``send_*`` method returns the bytes
to write.  This module owns the wire decisions (keep-alive, 100-continue, HEAD
bodies, error answers to malformed input) and must never touch sockets,
threads, asyncio or user code.
"""

from __future__ import annotations

import inspect
import operator
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

import h11

from .. import version

__all__ = [
    "DRAIN_LIMIT",
    "NEED_DATA",
    "PAUSED",
    "BodyChunk",
    "ConnectionLost",
    "EndOfRequest",
    "HttpConnection",
    "ProtocolFailure",
    "RequestHead",
    "error_body",
    "reason_phrase",
]

SERVER_HEADER: Final = ("simple-http-server/" + version).encode()
#: Unread request body bytes a transport discards to keep a connection alive.
DRAIN_LIMIT: Final = 1024 * 1024
NEED_DATA: Final = h11.NEED_DATA
PAUSED: Final = h11.PAUSED

#: RFC 9110's reason phrases (Python before 3.13 has older names for these).
_RFC_9110_NAMES = {
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
}
_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus} | _RFC_9110_NAMES


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (empty when unknown)."""
    return _REASONS.get(status, b"")


def error_body(status: int) -> bytes:
    """The JSON body of an error answered before any app code runs (a malformed request)."""
    return b'{"code": %d, "message": "%s", "explain": ""}' % (status, reason_phrase(status))


class _DateCache:
    """The ``Date`` header value, formatted at most once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode()
            self._second = now
        return self._value


http_date: Final = _DateCache()


@dataclass(slots=True)  # not frozen: a frozen __init__ costs per request
class RequestHead:
    """A complete request line and header block."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes
    expects_continue: bool
    #: Whether an ``Upgrade`` header came with the request (None: not checked).
    upgrade: bool | None = None


@dataclass(slots=True)  # not frozen: a frozen __init__ costs per request
class BodyChunk:
    """A piece of the request body (de-chunked by h11)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfRequest:
    """The request body is complete."""


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The peer closed its side of the connection."""


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """The peer sent bytes h11 refused; answer ``status`` and close."""

    status: int
    reason: str


Event = RequestHead | BodyChunk | EndOfRequest | ConnectionLost | ProtocolFailure
_END: Final = EndOfRequest()
#: Chunks of a chunked body already received are handed on together up to this size.
_GATHER: Final = 64 * 1024
_LOST: Final = ConnectionLost()
_END_OF_MESSAGE: Final = h11.EndOfMessage()  # events are immutable: one serves all

# h11 validates every header of every response against its grammar.  Header
# lines that passed that validation once are remembered, and a response made
# only of remembered lines is built on h11's ``_parsed`` path, which skips the
# (identical) regex checks; anything new still goes through h11's validation,
# so a bad name or value from user code raises ``h11.LocalProtocolError``
# exactly as before.  Without ``_parsed`` (another h11) every response validates.
_SKIP_VALIDATION: Final = "_parsed" in inspect.signature(h11.Response.__init__).parameters
_VALIDATED: set[tuple[bytes, bytes]] = set()
_VALIDATED_MAX: Final = 4096  # Date changes every second: forget now and then
#: Longest line remembered: a value may echo the client (a ``Location`` holding its
#: path, up to ``max_head_size``), and 4096 such lines would pin 256 MiB.
_VALIDATED_LINE_MAX: Final = 1024


def _response(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    """An ``h11.Response`` whose header lines are validated at most once."""
    reason = _REASONS.get(status, b"")
    validated = _VALIDATED
    try:
        known = _SKIP_VALIDATION and validated.issuperset(headers)
    except TypeError:  # unhashable lines (lists): let h11 judge them
        known = False
    if known:
        return h11.Response(status_code=status, headers=headers, reason=reason, _parsed=True)
    response = h11.Response(status_code=status, headers=headers, reason=reason)
    if len(validated) > _VALIDATED_MAX:
        validated.clear()
    for line in headers:
        if (
            type(line) is tuple
            and type(line[0]) is bytes
            and type(line[1]) is bytes
            and len(line[0]) + len(line[1]) <= _VALIDATED_LINE_MAX
        ):
            validated.add(line)
    return response


_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})
_DATE_SERVER: Final = frozenset({b"date", b"server"})
_NAME: Final = operator.itemgetter(0)


def _add_date_server(headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``Date`` and ``Server``, each unless the answer has its own."""
    names = {bytes(line[0]).lower() for line in headers}
    if b"date" not in names:
        headers.append((b"Date", http_date.get()))
    if b"server" not in names:
        headers.append((b"Server", SERVER_HEADER))


def _header_triples(headers: Any) -> Any:
    """(raw name, lowercased name, value) of each header line.

    h11 keeps both spellings of every name; its private ``_full_items`` hands
    them over without lowercasing each name again (other h11s: computed here).
    """
    triples = getattr(headers, "_full_items", None)
    if triples is None:
        return [(name, name.lower(), value) for name, value in headers.raw_items()]
    return triples


#: RFC 9110 7.2 / RFC 3986 3.2.2: ``uri-host [ ":" port ]`` (an IP literal in brackets,
#: or a reg-name of unreserved, sub-delims and percent-encoded characters), or nothing;
#: an IPv6 literal may hold a zone ("[fe80::1%25eth0]", RFC 6874).
_VALID_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:.!$&'()*+,;=_~%-]+\]|(?:[0-9A-Za-z!$&'()*+,;=._~-]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
).fullmatch
#: The authority of an absolute-form target (RFC 9112 3.2.2), scheme in any case.
_ABSOLUTE_AUTHORITY: Final = re.compile(rb"[hH][tT][tT][pP][sS]?://([^/?#]*)").match


def _bad_target(target: bytes, method: bytes) -> str | None:
    """Why a request target is invalid (RFC 9112 3.2), or None: an origin-form one
    must start with ``/``; an absolute-form one's host must be ``uri-host[:port]``,
    not empty, without userinfo (RFC 9110 4.2.4); ``*`` and a ``CONNECT``'s
    authority-form are left to the dispatcher."""
    if target[:1] == b"/":  # origin-form, the common case
        return None
    absolute = _ABSOLUTE_AUTHORITY(target)
    if absolute is None:
        if target == b"*" or method == b"CONNECT":
            return None
        return "invalid request target"
    authority = absolute[1]
    return "invalid Host header" if not authority or _VALID_HOST(authority) is None else None


_EMPTY_LINES: Final = re.compile(rb"(?:\r?\n)*")
_LINE_ENDS: Final = (13, 10)  # CR, LF


def _receive_buffer(conn: h11.Connection) -> Any:
    """h11's buffer of received bytes (one object for the connection's life; None
    with another h11)."""
    buffer = getattr(conn, "_receive_buffer", None)
    return buffer if hasattr(buffer, "_data") else None


def _starts_head(unparsed: bytearray | None) -> bool:
    """True when the request not parsed yet is a ``HEAD`` (its answer has no body)."""
    return unparsed is not None and unparsed.startswith(b"HEAD ")


def _spoken_version(version: bytes) -> bytes | None:
    """The version a request is served in: ``1.0`` or ``1.1``; a later HTTP/1 minor
    (``HTTP/1.2``) is served as 1.1 (RFC 9110 2.5), another major is None (a 505)."""
    if version == b"1.0" or version == b"1.1":
        return version
    return b"1.1" if version.startswith(b"1.") else None


class HttpConnection:
    """One server-side HTTP/1.1 connection, Sans-IO.

    Args:
        max_head_size: largest request line plus headers accepted (431 beyond, 414
            for a request line alone beyond; also bounds a trailer section).
        max_requests: requests served on one connection before it is closed
            (0 means no limit).
    """

    __slots__ = (
        "_blank",
        "_body_error",
        "_body_left",
        "_buffer",
        "_closing",
        "_complete",
        "_conn",
        "_connect_request",
        "_drop_body",
        "_end_pending",
        "_max_head_size",
        "_max_requests",
        "_served",
    )

    def __init__(self, *, max_head_size: int = 65536, max_requests: int = 0) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._buffer = _receive_buffer(self._conn)  # its ``_data``: bytes not parsed yet
        self._max_head_size = max_head_size
        self._max_requests = max_requests
        self._body_left: int | None = 0  # request body bytes not read yet (None: chunked)
        self._body_error: h11.RemoteProtocolError | None = None  # met while gathering chunks
        self._served = 0
        self._connect_request = False
        self._drop_body = False  # HEAD, 204, 304, a 2xx to CONNECT: no body goes out
        self._closing = False
        self._end_pending = False
        #: h11 gave the request's EndOfMessage (their state is DONE or MUST_CLOSE, and
        #: nobody waits for a 100): known without asking h11, until input fails or ends.
        self._complete = False
        self._blank = 0  # empty-line bytes skipped before the next request line

    # -- input ---------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed."""
        self._conn.receive_data(data)

    def next_event(self) -> Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """The next protocol event, ``NEED_DATA`` or ``PAUSED``."""
        if self._end_pending:
            self._end_pending = False
            return _END
        conn = self._conn
        state = conn.their_state
        head = False
        if state is h11.IDLE:
            buffer = self._buffer
            if buffer is not None:
                unparsed = buffer._data
                if not unparsed:
                    if not conn._receive_buffer_closed:
                        return h11.NEED_DATA  # what h11 answers here, without a parse round
                elif unparsed[0] in _LINE_ENDS:
                    early = self._skip_empty_lines(unparsed)
                    if early is not None:
                        return early
                # h11 consumes a head it refuses: whether it was a HEAD's is known only now.
                head = _starts_head(unparsed)
        in_body = state is h11.SEND_BODY
        try:
            error = self._body_error
            if error is not None:
                self._body_error = None
                raise error
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._closing = True
            self._complete = False
            if head:
                self._drop_body = True  # the refusal of a HEAD's bad head has no body either
            status = exc.error_status_hint
            if status == 431:
                status = self._oversized_status(in_body)
            return ProtocolFailure(status, str(exc))
        cls = type(event)
        if cls is h11.Data:
            data = bytes(event.data)  # type: ignore[union-attr]
            if self._body_left is not None:
                self._body_left -= len(data)
            elif len(data) < _GATHER:
                data = self._gather_chunks(data)
            return BodyChunk(data)
        if cls is h11.Request:
            return self._request_head(event)  # type: ignore[arg-type]
        if cls is h11.EndOfMessage:
            if self._trailers_too_large(event):  # type: ignore[arg-type]
                return ProtocolFailure(400, "trailer section too large")
            self._complete = True
            return _END
        if cls is h11.ConnectionClosed:
            self._complete = False
            return _LOST
        return event  # type: ignore[return-value]  # NEED_DATA / PAUSED sentinels

    def _gather_chunks(self, data: bytes) -> bytes:
        """``data`` and the chunks of a chunked body that follow it in what was
        received, up to ``_GATHER`` bytes: h11 gives one event per chunk, and one
        body piece per byte sent as 1-byte chunks cost a reader (a thread hop each
        under asyncio) ten times what the parse does.  An end of the body met on
        the way is reported next, as is bad input."""
        conn, buffer = self._conn, self._buffer
        pieces = [data]
        size = len(data)
        while size < _GATHER and (buffer is None or buffer._data):
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._body_error = exc
                self._closing = True  # an answer sent before it is reported says so
                break
            cls = type(event)
            if cls is h11.Data:
                piece = event.data  # type: ignore[union-attr]
                pieces.append(piece)
                size += len(piece)
            else:
                if cls is h11.EndOfMessage:
                    if self._trailers_too_large(event):  # type: ignore[arg-type]
                        self._body_error = h11.RemoteProtocolError("trailer section too large")
                        break
                    self._end_pending = self._complete = True
                break  # NEED_DATA: the rest was not received yet
        return data if len(pieces) == 1 else b"".join(pieces)

    def _oversized_status(self, in_body: bool) -> int:
        """The answer to h11's "receive buffer too long": a request line longer than
        ``max_head_size`` (no line end received yet) is a 414 (RFC 9112 3), other
        head lines a 431; an endless chunk header or trailer (in a body) a 400."""
        if in_body:
            return 400
        buffer = self._buffer
        if buffer is not None and b"\n" not in buffer._data:
            return 414
        return 431

    def _trailers_too_large(self, end: h11.EndOfMessage) -> bool:
        """True (and closing) for a trailer section over ``max_head_size``: h11 bounds
        only one that arrives in pieces (measured as request heads are)."""
        if not end.headers:  # the common case: no trailers
            return False
        size = 2
        for name, _lower, value in _header_triples(end.headers):
            size += len(name) + len(value) + 4
        if size <= self._max_head_size:
            return False
        self._closing = True
        self._complete = False
        return True

    def _skip_empty_lines(self, data: bytearray) -> ProtocolFailure | type[h11.NEED_DATA] | None:
        """Drop the empty lines before a request line (RFC 9112 2.2: some clients
        send a CRLF after a body); more than ``max_head_size`` bytes of them is a 400.
        ``data`` is h11's buffer of unparsed bytes."""
        skipped = _EMPTY_LINES.match(data).end()  # type: ignore[union-attr]  # always matches
        if skipped:
            self._conn._receive_buffer._extract(skipped)
            self._blank += skipped
            if self._blank > self._max_head_size:
                self._closing = True
                return ProtocolFailure(400, "too many empty lines before the request line")
        if data == b"\r" and not self._conn._receive_buffer_closed:
            return h11.NEED_DATA  # the rest of a CRLF split between two reads
        return None

    def _request_head(self, req: h11.Request) -> RequestHead | ProtocolFailure:
        self._served += 1
        self._blank = 0
        self._complete = False
        method = req.method.decode("ascii")
        self._drop_body = method == "HEAD"
        self._connect_request = method == "CONNECT"
        if self._max_requests and self._served >= self._max_requests:
            self._closing = True
        # h11 bounds only heads that arrive in pieces; a whole head read at once
        # is measured here (request line + header lines, as parsed).
        size = len(req.target) + len(req.method) + 12
        length = chunked = upgrade = bad_host = False
        headers = []
        self._body_left = 0
        for name, lower, value in _header_triples(req.headers):
            headers.append((name, value))
            size += len(name) + len(value) + 4
            if lower == b"content-length":
                length = True
                self._body_left = int(value)  # h11 checked it: digits, one value
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"upgrade":
                upgrade = True
            elif lower == b"host" and not _VALID_HOST(value):
                bad_host = True  # RFC 9112 3.2: a 400 (h11 checks only its presence)
        if size > self._max_head_size:
            self._closing = True
            if len(req.target) + len(req.method) + 12 > self._max_head_size:
                return ProtocolFailure(414, "request line too long")  # RFC 9112 3
            return ProtocolFailure(431, "request header fields too large")
        target_problem = _bad_target(req.target, req.method)
        if bad_host or target_problem is not None:
            self._closing = True
            return ProtocolFailure(400, target_problem or "invalid Host header")
        version = req.http_version
        spoken: bytes | None = version
        if version != b"1.1" and version != b"1.0":  # no call for the common case
            spoken = _spoken_version(version)
        # RFC 9112 6.1/6.3: both framings, or chunked in HTTP/1.0, is a smuggling
        # attempt; h11 would pick one and keep the connection, we refuse and close.
        if chunked:
            self._body_left = None
        if chunked and (length or spoken != b"1.1"):
            self._closing = True
            return ProtocolFailure(400, "ambiguous message framing")
        if spoken is None:
            # h11 parses any HTTP/x.y; only HTTP/1.x is spoken here (RFC 9110 15.6.6).
            self._closing = True
            return ProtocolFailure(505, "HTTP version not supported")
        if not (self._body_left or chunked or upgrade or method == "CONNECT"):
            # No body (none declared, or Content-Length: 0): take h11's EndOfMessage
            # now, so the request is complete when the dispatcher runs, no transport
            # needs a drain round, and an ``Expect: 100-continue`` is settled (a
            # client waiting for a 100 would otherwise make the answer close);
            # next_event() still reports it (EndOfRequest) to whoever asks.
            self._conn.next_event()
            self._end_pending = self._complete = True
        expects_continue = not self._complete and self._conn.they_are_waiting_for_100_continue
        return RequestHead(
            method=method,
            target=req.target,
            headers=headers,
            http_version=spoken,
            expects_continue=expects_continue,
            upgrade=upgrade,
        )

    # -- state ---------------------------------------------------------------
    @property
    def waiting_for_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits for it."""
        return self._conn.they_are_waiting_for_100_continue

    @property
    def request_complete(self) -> bool:
        """The current request's body has been read to its end."""
        return self._complete or self._conn.their_state in (h11.DONE, h11.MUST_CLOSE)

    @property
    def response_started(self) -> bool:
        """A response head has been sent for the current request."""
        return self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE)

    @property
    def has_buffered_data(self) -> bool:
        """True when received bytes wait in the parser (e.g. a partial head)."""
        buffer = self._buffer
        if buffer is not None:
            return bool(buffer._data)
        return self.buffered_size > 0

    @property
    def idle(self) -> bool:
        """Right after :meth:`start_next_cycle`: nothing received waits and the input
        has not ended, so :meth:`next_event` would say ``NEED_DATA`` (False: ask it)."""
        buffer = self._buffer
        return buffer is not None and not buffer._data and not self._conn._receive_buffer_closed

    @property
    def buffered_size(self) -> int:
        """How many received bytes wait in the parser."""
        buffer = getattr(self._conn, "_receive_buffer", None)
        return len(buffer) if buffer is not None else len(self._conn.trailing_data[0])

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the current request (used by protocol upgrades)."""
        return bytes(self._conn.trailing_data[0])

    @property
    def input_ended(self) -> bool:
        """True once the peer's end of input (``b""``) was received."""
        return bool(self._conn.trailing_data[1])

    def close_after_response(self) -> None:
        """Ask for ``Connection: close`` on the next response (e.g. shutting down)."""
        self._closing = True

    @property
    def closing(self) -> bool:
        """True when the connection closes after the current response."""
        return self._closing

    def start_next_cycle(self) -> bool:
        """Prepare for the next request; False when the connection must close."""
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not self._closing:
            conn.start_next_cycle()
            self._end_pending = self._complete = False
            self._drop_body = False  # a bad next request's error page has its body
            return True
        return False

    # -- output --------------------------------------------------------------
    def send_continue(self) -> bytes:
        """``100 Continue`` when the client waits for it, else ``b""``."""
        if not self._conn.they_are_waiting_for_100_continue:  # h11 clears it once a 1xx is sent
            return b""
        return self._conn.send(
            h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
        )

    def send_switch(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """``101 Switching Protocols`` accepting the client's ``Upgrade``.

        Valid once the request was read to its end (``next_event()`` gave
        ``PAUSED``); afterwards :attr:`trailing_data` holds the first bytes of
        the new protocol.
        """
        _add_date_server(headers)  # on_handshake may have given its own
        response = h11.InformationalResponse(
            status_code=101, headers=headers, reason=b"Switching Protocols"
        )
        return self._conn.send(response) or b""

    @property
    def switched(self) -> bool:
        """True once the connection switched to another protocol."""
        return self._conn.our_state is h11.SWITCHED_PROTOCOL

    def send_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """Serialize a response head; adds ``Date`` and ``Server`` (unless given) and
        close framing.

        A final answer to a client still waiting for ``100 Continue`` closes the
        connection: that client may or may not send its body now.  A 204 or 304
        carries no body and no framing headers (RFC 9110 8.6, 15.3.5); a 2xx to
        ``CONNECT`` is head only too (RFC 9110 9.3.6: the tunnel it announces is
        not served here, so the connection closes after it).
        """
        conn = self._conn
        if self._complete:  # the common case: neither of the two below
            pass
        elif conn.they_are_waiting_for_100_continue:
            self._closing = True
        elif conn.their_state is h11.SEND_BODY:
            # Answered before the body was read: the transport discards at most
            # DRAIN_LIMIT bytes of it to keep the connection, so say "close" now
            # when more (or an unknown amount) is left, not after the fact.
            left = self._body_left
            if left is None or left > DRAIN_LIMIT:
                self._closing = True
        if status in (204, 304) or (status < 300 and self._connect_request):
            headers = [h for h in headers if h[0].lower() not in _FRAMING]
            self._drop_body = True
            if status not in (204, 304):  # h11 switches protocols: no next request
                self._closing = True
        try:  # one pass in C over the names: the common answer sets neither
            own = not _DATE_SERVER.isdisjoint(map(bytes.lower, map(_NAME, headers)))
        except TypeError:  # a name that is not bytes: h11 judges the lines
            own = False
        if own:
            _add_date_server(headers)
        else:
            headers.append((b"Date", http_date.get()))
            headers.append((b"Server", SERVER_HEADER))
        if self._closing:
            headers.append((b"Connection", b"close"))
        return self._conn.send(_response(status, headers)) or b""

    def send_body(self, data: bytes) -> bytes:
        """Serialize a body chunk (nothing for HEAD, 204, 304 or a 2xx to CONNECT)."""
        if self._drop_body or not data:
            return b""
        return self._conn.send(h11.Data(data=data)) or b""

    def send_body_passthrough(self, data: Any) -> list[Any]:
        """Frame a body piece whose bytes the transport writes itself (``sendfile``).

        ``data`` needs only ``__len__``; it comes back unchanged among the pieces.
        """
        if self._drop_body:
            return []
        return self._conn.send_with_data_passthrough(h11.Data(data=data)) or []

    def send_end(self) -> bytes:
        """Serialize the end of the response."""
        if self._drop_body and self._conn.our_state is h11.SWITCHED_PROTOCOL:
            return b""  # a 2xx to CONNECT: the head was all of it
        return self._conn.send(_END_OF_MESSAGE) or b""

    def send_response(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> bytes:
        """Head, body and end in one buffer, with ``Content-Length`` set."""
        headers.append((b"Content-Length", str(len(body)).encode()))
        return self.send_head(status, headers) + self.send_body(body) + self.send_end()

    def send_error(self, status: int) -> bytes:
        """A plain-text error answer that closes the connection, if one can be sent;
        the head alone for a ``HEAD`` (RFC 9110 9.3.2), even one whose head is cut
        short (a 408) or malformed (a 400)."""
        self._closing = True
        conn = self._conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        body = error_body(status)
        headers = [(b"Content-Type", b"application/json; charset=utf-8")]
        try:
            buffer = self._buffer
            if conn.their_state is h11.IDLE and buffer is not None and _starts_head(buffer._data):
                self._drop_body = True  # a HEAD's head still arriving (a 408)
            if not self._drop_body or conn.their_state not in (h11.IDLE, h11.ERROR):
                return self.send_response(status, headers, body)
            # A HEAD h11 never parsed: it frames the answer as a GET's, so the end
            # (a body that is not sent) is not asked of it; the connection closes.
            headers.append((b"Content-Length", str(len(body)).encode()))
            return self.send_head(status, headers)
        except h11.LocalProtocolError:
            return b""

    def send_failed(self) -> None:
        """Record that the response could not be completed; the connection must close."""
        self._closing = True
        if self._conn.our_state is not h11.ERROR:
            self._conn.send_failed()
