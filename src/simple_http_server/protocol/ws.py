"""WebSocket protocol (RFC 6455), Sans-IO, on wsproto.

The upgrade is detected and validated on the h11 :class:`RequestHead`; the
``101`` answer is serialized by h11 (:meth:`HttpConnection.send_switch`), and a
wsproto connection is then seeded with the bytes h11 received after the
request.  :class:`WebsocketProtocol` assembles messages under a size limit and
turns wsproto's events into a small set of its own.  Framing is wsproto's; this
module never touches sockets, threads, asyncio or user code.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import Any, Final

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    Frame,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)
from wsproto.utilities import LocalProtocolError, generate_accept_token

from .http11 import RequestHead

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "BinaryFrameReceived",
    "BinaryReceived",
    "Closed",
    "Handshake",
    "HandshakeRejection",
    "PingReceived",
    "PongReceived",
    "TextReceived",
    "WebsocketProtocol",
    "accept_headers",
    "check_handshake",
    "data_message",
    "is_websocket_upgrade",
]

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005
CLOSE_ABNORMAL: Final = 1006
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_BAD_GATEWAY: Final = 1014

_VERSION: Final = b"13"


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def _header_values(head: RequestHead, name: bytes) -> list[bytes]:
    return [v for k, v in head.headers if k.lower() == name]


def is_websocket_upgrade(head: RequestHead) -> bool:
    """True when the request asks to switch to the websocket protocol.

    The ``Upgrade`` token is compared case-insensitively; other upgrades
    (``h2c``...) are left to plain HTTP, and so is an HTTP/1.0 request, whose
    ``Upgrade`` header a server must ignore (RFC 9110 7.8).
    """
    if head.http_version == b"1.0":
        return False
    return any(b"websocket" in _tokens(v) for v in _header_values(head, b"upgrade"))


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid opening handshake."""

    key: bytes
    extensions: tuple[str, ...]
    subprotocols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HandshakeRejection:
    """An invalid opening handshake: answer ``status`` with ``headers``."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    message: str


def _reject(message: str, status: int = 400, *headers: tuple[bytes, bytes]) -> HandshakeRejection:
    return HandshakeRejection(status, tuple(headers), message)


def check_handshake(head: RequestHead) -> Handshake | HandshakeRejection:
    """Validate an upgrade request (RFC 6455 section 4.2.1)."""
    if head.method != "GET":
        return _reject("A websocket handshake must use GET.", 405, (b"Allow", b"GET"))
    if head.http_version != b"1.1":
        return _reject("A websocket handshake needs HTTP/1.1.")
    if not any(b"upgrade" in _tokens(v) for v in _header_values(head, b"connection")):
        return _reject("The Connection header must contain 'Upgrade'.")
    versions = _header_values(head, b"sec-websocket-version")
    if [v.strip() for v in versions] != [_VERSION]:
        return _reject(
            "Unsupported Sec-WebSocket-Version (13 expected).",
            426,
            (b"Sec-WebSocket-Version", _VERSION),
        )
    keys = _header_values(head, b"sec-websocket-key")
    if len(keys) != 1:
        return _reject("Missing or repeated Sec-WebSocket-Key.")
    key = keys[0].strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (binascii.Error, ValueError):
        return _reject("Sec-WebSocket-Key must be 16 bytes, base64-encoded.")
    extensions: list[str] = []
    for value in _header_values(head, b"sec-websocket-extensions"):
        extensions.extend(e.strip() for e in value.decode("latin-1").split(",") if e.strip())
    protocols: list[str] = []
    for value in _header_values(head, b"sec-websocket-protocol"):
        protocols.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    return Handshake(key, tuple(extensions), tuple(protocols))


class SteadyDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with control frames kept out of the message's state.

    A Ping, Pong or Close may come between the fragments of a compressed message
    (RFC 6455 5.4); wsproto's extension takes it for the end of the message and
    forgets that the message is compressed, so the next fragment was taken as
    plain bytes (a text message failed with 1007, a binary one was delivered as
    deflate bytes, and the inflater lost its place for the messages after it).
    Here a control frame passes through untouched (RFC 7692 6: never compressed).
    """

    def __init__(self) -> None:
        super().__init__()
        self._control = False  # the frame being received is a control frame
        # A data frame without FIN was received: a message is unfinished.  (Not told by
        # wsproto's state: a frame's header may be read twice, its mask key split.)
        self._unfinished = False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if not self._control:
            if opcode is not Opcode.CONTINUATION and self._unfinished:
                # A new message while one is unfinished (RFC 6455 5.4): wsproto would
                # inflate it as the rest of that one first, and fail with 1007.
                return CloseReason.PROTOCOL_ERROR
            return super().frame_inbound_header(proto, opcode, rsv, payload_length)
        if rsv.rsv1:  # RFC 7692 6.1: a compressed control frame fails the connection
            return CloseReason.PROTOCOL_ERROR
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._control:
            return data
        return super().frame_inbound_payload_data(proto, data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._control:
            return None
        self._unfinished = not fin
        return super().frame_inbound_complete(proto, fin)


class BoundedDeflate(SteadyDeflate):
    """permessage-deflate that never inflates a message past ``max_message_size``.

    wsproto inflates each frame whole before anyone can count the bytes: a
    small frame of compressed zeros would take hundreds of megabytes.  Here
    zlib stops one byte past the limit, and the connection fails with 1009.

    With ``stream_binary`` (set by :class:`WebsocketProtocol`), binary messages
    are handed on piece by piece, not gathered: no message bound applies, and
    a piece inflates ``max_message_size`` bytes at most; what its compressed
    bytes hold beyond that is inflated by :meth:`inflate_more`, one such step
    per call, once the pieces before it were handled.
    """

    def __init__(self, max_message_size: int = 0) -> None:
        super().__init__()
        self._limit = max_message_size
        self._inflated = 0
        self.stream_binary = False
        self._binary = False  # the message being received is binary
        self._backlog = b""  # compressed bytes of the current piece not inflated yet
        self._more_output = False  # zlib may hold output of the current piece
        self._complete: tuple[FrameDecoder | FrameProtocol, bool] | None = None

    @property
    def backlogged(self) -> bool:
        """True while the piece being streamed has more to inflate (:meth:`inflate_more`)."""
        return bool(self._backlog) or self._more_output or self._complete is not None

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:  # a message starts
            self._binary = opcode is Opcode.BINARY
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if (
            self._control
            or not self._limit
            or not self._inbound_compressed
            or not self._inbound_is_compressible
        ):
            return super().frame_inbound_payload_data(proto, data)
        if self.stream_binary and self._binary:
            return self._step(bytes(data))
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(bytes(data), self._limit - self._inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._limit or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def _step(self, data: bytes) -> bytes | CloseReason:
        """Inflate at most ``max_message_size`` bytes of a streamed piece; keep the rest."""
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(data, self._limit)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._backlog = self._decompressor.unconsumed_tail
        self._more_output = len(out) == self._limit
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._control:  # not the end of the message: its count goes on
            return super().frame_inbound_complete(proto, fin)
        if self.backlogged:  # the frame's end comes after the rest of the piece
            self._complete = (proto, fin)
            return None
        result = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return result

    def inflate_more(self) -> tuple[bytes, bool] | CloseReason:
        """The next step of a backlogged piece, and whether the piece is done."""
        out = b""
        if self._backlog or self._more_output:
            step = self._step(self._backlog)
            if isinstance(step, CloseReason):
                return step
            out = step
        if self._backlog or self._more_output:
            return out, False
        if self._complete is not None:
            proto, fin = self._complete
            self._complete = None
            tail = self.frame_inbound_complete(proto, fin)
            if isinstance(tail, CloseReason):
                return tail
            out += tail or b""
        return out, True


#: The parameters of a permessage-deflate offer (RFC 7692 7.1): whether each takes a value.
_DEFLATE_PARAMS: Final = {
    "server_no_context_takeover": False,
    "client_no_context_takeover": False,
    "server_max_window_bits": True,
    "client_max_window_bits": None,  # a value or none
}
_WINDOW_BITS: Final = frozenset(str(bits) for bits in range(8, 16))


def _deflate_params(offer: str) -> list[str] | None:
    """The parameters of a permessage-deflate offer, normalized (``name`` or
    ``name=value``); None when RFC 7692 7 says to decline it: an unknown or
    repeated parameter, or a value missing, unexpected or out of range."""
    params: list[str] = []
    seen: set[str] = set()
    for raw in offer.split(";")[1:]:
        name, has_value, value = (part.strip() for part in raw.partition("="))
        if name not in _DEFLATE_PARAMS or name in seen:
            return None
        seen.add(name)
        takes_value = _DEFLATE_PARAMS[name]
        if not has_value:
            if takes_value:
                return None
            params.append(name)
            continue
        if takes_value is False:
            return None
        if len(value) >= 2 and value[0] == value[-1] == '"':  # a quoted-string
            value = value[1:-1]
        if value not in _WINDOW_BITS:
            return None
        params.append(f"{name}={value}")
    return params


def _agree_deflate(
    offers: tuple[str, ...], max_message_size: int
) -> tuple[bytes, Extension] | None:
    """The first permessage-deflate offer that can be accepted, and its answer.

    Each offer gets a fresh extension object: wsproto's own negotiation lets
    the parameters of a declined or earlier offer stick to the one accepted,
    lets a malformed parameter raise instead of declining, and accepts what
    RFC 7692 says to decline (unknown or repeated parameters): offers are
    checked here first.
    """
    for offer in offers:
        name = offer.split(";", 1)[0].strip()
        if name != PerMessageDeflate.name:
            continue
        params = _deflate_params(offer)
        if params is None:
            continue
        extension = BoundedDeflate(max_message_size)
        try:
            accepted = extension.accept("; ".join([name, *params]))
        except ValueError:  # e.g. client_max_window_bits=abc: decline this offer
            continue
        if accepted is None or accepted is False:
            continue
        answer = name if accepted is True or not accepted else f"{name}; {accepted}"
        return answer.encode("ascii"), extension
    return None


def accept_headers(
    handshake: Handshake, *, deflate: bool = True, max_message_size: int = 0
) -> tuple[list[tuple[bytes, bytes]], list[Extension]]:
    """Headers of the ``101`` answer and the extensions agreed on.

    permessage-deflate is accepted when the client offers it (a valid offer)
    and ``deflate`` is True; no message inflates past ``max_message_size``.
    """
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", generate_accept_token(handshake.key)),
    ]
    extensions: list[Extension] = []
    if deflate and handshake.extensions:
        agreed = _agree_deflate(handshake.extensions, max_message_size)
        if agreed is not None:
            headers.append((b"Sec-WebSocket-Extensions", agreed[0]))
            extensions = [agreed[1]]
    return headers, extensions


# -- events -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextReceived:
    """A complete text message."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryReceived:
    """A complete binary message (gathering mode)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BinaryFrameReceived:
    """A piece of a binary message as it arrives (streaming mode)."""

    data: bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A ping; the application decides about the pong."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A pong."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The websocket is closed (or failing): no more events follow.

    ``by_peer`` is True when the peer sent a Close frame (``code`` is its code);
    otherwise ``code`` says why: the local close code echoed, 1006 for a lost
    connection, or the 1002/1007/1009 the connection was failed with.
    """

    code: int
    reason: str
    by_peer: bool


#: The most bytes of reason a Close frame holds (RFC 6455 5.5: 125 with the code).
MAX_CLOSE_REASON: Final = 123


def close_reason(reason: str) -> str:
    """``reason`` as a Close frame carries it: cut to :data:`MAX_CLOSE_REASON` bytes of
    UTF-8 at a character boundary, as wsproto cuts it."""
    data = reason.encode()
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


def data_message(data: str | bytes, fin: bool = True) -> Message[Any]:
    """The wsproto event of one data frame: text for ``str``, binary for ``bytes``."""
    if isinstance(data, str):
        return TextMessage(data=data, message_finished=fin)
    return BytesMessage(data=data, message_finished=fin)


WsEvent = TextReceived | BinaryReceived | BinaryFrameReceived | PingReceived | PongReceived | Closed


class _CloseCodesProtocol(FrameProtocol):
    """wsproto's frame protocol, which also takes a peer's Close with 1014 (Bad Gateway).

    wsproto fails (1002) a Close whose code of 1000-2999 its ``CloseReason`` does
    not name, and 1014, registered with IANA (RFC 6455 7.4.2), is missing there.
    wsproto checks such a Close as if it carried 1000 (the reason is still its to
    validate); its code is then put back.
    """

    def _process_close(self, frame: Frame) -> Frame:
        payload = frame.payload
        if not isinstance(payload, (bytes, bytearray)) or payload[:2] != _BAD_GATEWAY:
            return super()._process_close(frame)
        fin, last = frame.frame_finished, frame.message_finished
        checked = super()._process_close(Frame(frame.opcode, _NORMAL + payload[2:], fin, last))
        assert isinstance(checked.payload, tuple)
        return Frame(frame.opcode, (CLOSE_BAD_GATEWAY, checked.payload[1]), fin, last)


_BAD_GATEWAY: Final = CLOSE_BAD_GATEWAY.to_bytes(2, "big")
_NORMAL: Final = CLOSE_NORMAL.to_bytes(2, "big")


def take_every_close_code(conn: Connection, extensions: list[Extension]) -> Connection:
    """``conn`` (just built, with ``extensions``) takes a Close with any registered code."""
    conn._proto = _CloseCodesProtocol(conn.client, extensions)
    return conn


class _ServerConnection(Connection):
    """wsproto's connection, which may still send data and pongs after the peer's Close.

    RFC 6455 5.5.1 lets an endpoint delay its answer to a Close until its
    current message is sent, and 5.5.2 wants a Pong for a Ping received before
    that Close; wsproto refuses both once a Close was received, so they then go
    to its frame protocol directly.
    """

    def send(self, event: Event) -> bytes:
        if self.state is ConnectionState.REMOTE_CLOSING:
            if isinstance(event, Message):
                return bytes(self._proto.send_data(event.data, event.message_finished))
            if isinstance(event, Pong):
                return bytes(self._proto.pong(event.payload))
        return super().send(event)


#: A message's pieces shorter than this are gathered in batches...
_SMALL_PIECE: Final = 1024
#: ...of at most this many pieces or this many bytes, then joined into one.
_BATCH_PIECES: Final = 512
_BATCH_BYTES: Final = 64 * 1024


class _Pieces:
    """The pieces of a message being gathered, in order.

    Each piece held costs some 40 bytes besides its data (its object and its slot
    in a list), so a message sent as millions of 2-byte fragments took about 20
    times ``max_message_size`` of memory: small pieces are joined a batch at a
    time, which keeps that cost to a few percent of the message.
    """

    __slots__ = ("_joined", "_small", "_small_size")

    def __init__(self) -> None:
        self._joined: list[Any] = []
        self._small: list[Any] = []
        self._small_size = 0

    def __bool__(self) -> bool:
        return bool(self._joined or self._small)

    def add(self, piece: bytes | str) -> None:
        """Append a piece (all of a message's pieces are of one type)."""
        if len(piece) >= _SMALL_PIECE:
            self._join_small()
            self._joined.append(piece)
            return
        self._small.append(piece)
        self._small_size += len(piece)
        if len(self._small) >= _BATCH_PIECES or self._small_size >= _BATCH_BYTES:
            self._join_small()

    def take(self) -> list[Any]:
        """Every piece so far (fewer, longer ones); the gathering starts over."""
        self._join_small()
        joined, self._joined = self._joined, []
        return joined

    def _join_small(self) -> None:
        small = self._small
        if small:
            self._joined.append(small[0][:0].join(small))
            small.clear()
            self._small_size = 0


class WebsocketProtocol:
    """One server-side websocket connection after the handshake, Sans-IO.

    Received bytes go in with :meth:`receive_data`; :meth:`events` returns what
    they meant; every ``send_*`` call queues bytes that :meth:`data_to_send`
    hands out, so replies that the protocol makes itself leave in order with the
    application's.  A Close owed to the peer goes out with :meth:`answer_close`,
    which the transport calls once the events before it were handled, so replies
    to them still go out first: the answer to the peer's Close (RFC 6455 5.5.1),
    and the Close of a connection failed for what came after them (a protocol
    error, a message too big: RFC 6455 7.1.7 forbids only reading on, so what was
    received before the bad input is handled whether or not it came in one read).

    Args:
        extensions: the extensions agreed in the handshake.
        trailing_data: bytes h11 received after the upgrade request.
        input_ended: the peer's end of input came after ``trailing_data``
            (before the upgrade): the connection counts as lost (1006) once
            the events of ``trailing_data`` were taken.
        max_message_size: largest message gathered in memory (1009 beyond;
            0: no bound).
        stream_binary: deliver binary messages piece by piece
            (:class:`BinaryFrameReceived`) instead of gathered.
    """

    def __init__(
        self,
        *,
        extensions: list[Extension] | None = None,
        trailing_data: bytes = b"",
        input_ended: bool = False,
        max_message_size: int = 16 * 1024 * 1024,
        stream_binary: bool = False,
    ) -> None:
        self._conn = take_every_close_code(
            _ServerConnection(ConnectionType.SERVER, extensions or []), extensions or []
        )
        self._deflate: BoundedDeflate | None = None  # streaming through it
        for extension in extensions or []:
            if isinstance(extension, BoundedDeflate) and stream_binary:
                extension.stream_binary = True
                self._deflate = extension
        self._more = False  # events() stopped early
        self._held_fin = False  # the fin of a piece whose rest is still inflating
        self.max_message_size = max_message_size
        self.stream_binary = stream_binary
        self.compressed = bool(extensions)
        self._out = bytearray()
        self._parts = _Pieces()
        self._size = 0
        self._kept = _Pieces()
        self._kept_size = 0
        self._closed_event: Closed | None = None
        self._local_code: int | None = None
        self._local_reason = ""
        self._failed = False
        self._lost = False
        self._peer_close: CloseConnection | None = None  # the peer's Close, once received
        # A failure found in the input (code, reason): answer_close() applies it.
        self._failing: tuple[int, str] | None = None
        # wsproto would report the loss ahead of the frames still buffered: it is
        # fed once events() took them.
        self._end_pending = input_ended
        if trailing_data:
            self.receive_data(trailing_data)

    # -- state ---------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True while messages can be sent (also while the peer's Close waits for its answer)."""
        state = self._conn.state
        return (state is ConnectionState.OPEN or state is ConnectionState.REMOTE_CLOSING) and (
            not self._failed
        )

    @property
    def answer_due(self) -> bool:
        """True while a Close waits for :meth:`answer_close`: the answer to the
        peer's, or the one failing the connection for bad input."""
        if self._failing is not None:
            return True
        return (
            self._peer_close is not None  # first: cheap, and false on every data read
            and self._conn.state is ConnectionState.REMOTE_CLOSING
            and not self._failed
        )

    @property
    def finished(self) -> bool:
        """True when the transport should close once :meth:`data_to_send` is written."""
        return self._closed_event is not None and (
            self._failed or self._conn.state is ConnectionState.CLOSED
        )

    @property
    def failed(self) -> bool:
        """True once the connection was failed (RFC 6455 7.1.7: read nothing more)."""
        return self._failed

    @property
    def closing(self) -> bool:
        """True once a Close frame was sent by us."""
        return self._local_code is not None

    # -- input ---------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the connection was lost."""
        if (
            self._failed
            or self._failing is not None
            or self._lost
            or self._conn.state is ConnectionState.CLOSED
        ):
            return
        if not data:
            self._lost = True
        try:
            self._conn.receive_data(data if data else None)
        except LocalProtocolError:  # data after the close handshake
            pass

    @property
    def more_events(self) -> bool:
        """True when :meth:`events` stopped early: call it again, before reading more.

        A compressed connection streaming binary messages yields one inflated
        piece per call, so what one read inflates to is handled piece by piece
        instead of sitting in memory all at once.
        """
        return (
            self._more and not self._failed and self._failing is None and self._peer_close is None
        )

    def events(self) -> list[WsEvent]:
        """The events produced by the bytes received so far (none after a Close).

        Input that fails the connection ends the list with a :class:`Closed`
        whose Close frame :meth:`answer_close` sends (:attr:`answer_due`).
        """
        out: list[WsEvent] = []
        if self._failed or self._failing is not None or self._peer_close is not None:
            return out
        self._more = False
        deflate = self._deflate
        if deflate is not None and deflate.backlogged:  # the rest of a streamed piece first
            self._inflate_more(deflate, out)
            return out
        for event in self._conn.events():
            # type() first: wsproto's events are ABCs, isinstance() is slow on them.
            if type(event) is TextMessage or isinstance(event, Message):
                if not self._message(event, out):
                    break
            elif isinstance(event, Ping):
                out.append(PingReceived(bytes(event.payload)))
            elif isinstance(event, Pong):
                out.append(PongReceived(bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                out.append(self._close_received(event))
                break
        if self._end_pending and not self._more and self._closed_event is None:
            self._end_pending = False
            self._end_input(out)
        return out

    def _end_input(self, out: list[WsEvent]) -> None:
        """The peer's end of input, once the frames before it were taken: lost (1006)."""
        self.receive_data(b"")
        for event in self._conn.events():  # wsproto's CloseConnection(1006) comes first
            if isinstance(event, CloseConnection):
                out.append(self._close_received(event))
                return

    def _message(self, event: Message[Any], out: list[WsEvent]) -> bool:
        """Handle a data event; False when :meth:`events` must stop here."""
        data = event.data
        if self.stream_binary and isinstance(event, BytesMessage):
            fin = event.message_finished
            if self._deflate is not None:  # one inflated piece per call of events()
                self._more = True
                if self._deflate.backlogged:  # more of this piece follows
                    self._held_fin, fin = fin, False
            out.append(BinaryFrameReceived(bytes(data), fin))
            return not self._more
        # A message's size is its UTF-8 size (text: its length when it is ASCII).
        if type(data) is str:
            self._size += len(data) if data.isascii() else len(data.encode())
        else:
            self._size += len(data)
        if self._size > self.max_message_size > 0:
            out.append(self._fail_later(CLOSE_TOO_BIG, "Message too big"))
            return False
        if not self._parts and event.message_finished:  # a message in one frame: the hot path
            self._size = 0
            if type(data) is str:
                out.append(TextReceived(data))
            else:
                out.append(BinaryReceived(bytes(data)))
            return True
        if data:  # endless empty continuation frames must not grow the list
            self._parts.add(bytes(data) if isinstance(data, bytearray) else data)
        if event.message_finished:
            parts, self._size = self._parts.take(), 0
            if isinstance(event, TextMessage):
                out.append(TextReceived("".join(parts)))
            else:
                out.append(BinaryReceived(b"".join(parts)))
        return True

    def _inflate_more(self, deflate: BoundedDeflate, out: list[WsEvent]) -> None:
        result = deflate.inflate_more()
        if isinstance(result, CloseReason):
            out.append(self._fail_later(int(result), "error in extension"))
            return
        data, done = result
        self._more = True
        out.append(BinaryFrameReceived(data, self._held_fin if done else False))

    def _close_received(self, event: CloseConnection) -> Closed:
        state = self._conn.state
        code, reason = int(event.code), event.reason or ""
        if state is ConnectionState.REMOTE_CLOSING:  # answered by answer_close()
            self._peer_close = event
            closed = Closed(code, reason, True)
        elif self._lost:
            closed = self._lost_event()
        elif state is ConnectionState.CLOSED:  # the peer answered our Close
            closed = Closed(self._local_code or code, self._local_reason, False)
        else:  # wsproto could not parse the input: fail the connection
            return self._fail_later(code, reason)
        self._closed_event = closed
        return closed

    def _fail_later(self, code: int, reason: str) -> Closed:
        """Bad input: nothing more is read; :meth:`answer_close` fails the connection
        once the events before it were handled."""
        if code == CLOSE_TOO_BIG:  # a compressed message too: not wsproto's "error in extension"
            reason = "Message too big"
        self._failing = (code, reason)
        if self._closed_event is None:
            self._closed_event = Closed(code, reason, False)
        return self._closed_event

    def keep(self, data: bytes) -> Closed | None:
        """Keep a streamed binary piece for the gathered message.

        Returns the :class:`Closed` of the failed connection when the kept
        pieces grow over the limit.
        """
        self._kept_size += len(data)
        if self._kept_size > self.max_message_size > 0:
            return self.fail(CLOSE_TOO_BIG, "Message too big")
        self._kept.add(data)
        return None

    def take_kept(self) -> bytes | None:
        """The pieces kept since the last call, joined (None when nothing was kept)."""
        if not self._kept:
            self._kept_size = 0
            return None
        data = b"".join(self._kept.take())
        self._kept_size = 0
        return data

    # -- output --------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """The bytes queued for the peer since the last call."""
        out = self._out
        if not out:  # most reads queue no reply
            return b""
        data = bytes(out)
        out.clear()
        return data

    def send_data(self, data: str | bytes, fin: bool = True) -> bool:
        """Queue one data frame (``fin=False`` continues a fragmented message)."""
        if not self.is_open:
            return False
        self._out += self._conn.send(data_message(data, fin))
        return True

    def send_ping(self, payload: bytes = b"") -> bool:
        """Queue a ping (payload of at most 125 bytes); none once a Close was received."""
        if self._conn.state is not ConnectionState.OPEN or self._failed:
            return False
        self._out += self._conn.send(Ping(payload=payload[:125]))
        return True

    def send_pong(self, payload: bytes = b"") -> bool:
        """Queue a pong (payload of at most 125 bytes); none once the peer's Close
        was answered (pings received before that Close are still answered)."""
        if not self.is_open:
            return False
        self._out += self._conn.send(Pong(payload=payload[:125]))
        return True

    def send_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bool:
        """Start the closing handshake, or answer the peer's Close with this code
        (False when a Close was sent already)."""
        if not self.is_open:
            return False
        self._local_code, self._local_reason = code, close_reason(reason)
        self._out += self._conn.send(CloseConnection(code=code, reason=reason or None))
        return True

    def answer_close(self) -> bool:
        """Send the Close that is due: the answer to the peer's (its own code), or
        the failure's (False when nothing is due)."""
        if not self.answer_due:
            return False
        if self._failing is not None:
            self.fail(*self._failing)
            return True
        assert self._peer_close is not None
        self._out += self._conn.send(self._peer_close.response())
        return True

    def fail(self, code: int, reason: str) -> Closed:
        """Fail the connection: queue a Close with ``code``; the transport closes after."""
        # A Close still due (the failure found in the input, or the answer to the peer's
        # Close read with what failed) is replaced by this one: its code is the session's.
        due = self.answer_due
        if self.is_open:
            self._local_code, self._local_reason = code, close_reason(reason)
            self._out += self._conn.send(CloseConnection(code=code, reason=reason or None))
        self._failed = True
        closed = Closed(code, reason, False)
        if self._closed_event is None or due:
            self._closed_event = closed
        self._failing = None
        return self._closed_event

    def close_event(self) -> Closed:
        """The final :class:`Closed`; when none happened yet, the connection counts as lost."""
        if self._closed_event is None:
            self._failed = True
            self._closed_event = self._lost_event()
        return self._closed_event

    def _lost_event(self) -> Closed:
        """The connection ended without a Close from the peer: our own Close's code
        and reason when we sent one (its answer never came), else 1006."""
        if self._local_code is not None:
            return Closed(self._local_code, self._local_reason, False)
        return Closed(CLOSE_ABNORMAL, "connection lost", False)
