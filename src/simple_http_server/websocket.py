"""The websocket API: handlers, requests, sessions and the decorators.

Handlers are classes decorated with ``@websocket_handler`` (inheriting
:class:`WebsocketHandler` is optional) or plain functions decorated with
``@websocket_handshake``/``@websocket_open``/``@websocket_close``/
``@websocket_message``.  This module holds no protocol or I/O code: sessions
send through a link object that a transport provides.
"""

from __future__ import annotations

import codecs
import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol

from .app import default_app
from .dispatch.ws_handlers import (
    WebsocketHandlerClass,
    WebsocketHandlerProxy,
    compile_websockets,
)
from .models import Cookies, Headers

__all__ = [
    "WEBSOCKET_MESSAGE_BINARY",
    "WEBSOCKET_MESSAGE_BINARY_FRAME",
    "WEBSOCKET_MESSAGE_PING",
    "WEBSOCKET_MESSAGE_PONG",
    "WEBSOCKET_MESSAGE_TEXT",
    "WEBSOCKET_OPCODE_BINARY",
    "WEBSOCKET_OPCODE_CLOSE",
    "WEBSOCKET_OPCODE_CONTINUATION",
    "WEBSOCKET_OPCODE_PING",
    "WEBSOCKET_OPCODE_PONG",
    "WEBSOCKET_OPCODE_TEXT",
    "WebsocketCloseReason",
    "WebsocketException",
    "WebsocketFileError",
    "WebsocketHandler",
    "WebsocketHandlerClass",
    "WebsocketHandlerProxy",
    "WebsocketRequest",
    "WebsocketSession",
    "WebsocketTypeError",
    "WebsocketValueError",
    "compile_websockets",
    "websocket_close",
    "websocket_handler",
    "websocket_handshake",
    "websocket_message",
    "websocket_open",
]

WEBSOCKET_OPCODE_CONTINUATION: Final = 0x0
WEBSOCKET_OPCODE_TEXT: Final = 0x1
WEBSOCKET_OPCODE_BINARY: Final = 0x2
WEBSOCKET_OPCODE_CLOSE: Final = 0x8
WEBSOCKET_OPCODE_PING: Final = 0x9
WEBSOCKET_OPCODE_PONG: Final = 0xA

WEBSOCKET_MESSAGE_TEXT: Final = "WEBSOCKET_MESSAGE_TEXT"
WEBSOCKET_MESSAGE_BINARY: Final = "WEBSOCKET_MESSAGE_BINARY"
WEBSOCKET_MESSAGE_BINARY_FRAME: Final = "WEBSOCKET_MESSAGE_BINARY_FRAME"
WEBSOCKET_MESSAGE_PING: Final = "WEBSOCKET_MESSAGE_PING"
WEBSOCKET_MESSAGE_PONG: Final = "WEBSOCKET_MESSAGE_PONG"

_FILE_CHUNK = 64 * 1024


class WebsocketRequest:
    """The upgrade request of a websocket session."""

    def __init__(
        self,
        path: str = "/",
        query_string: str = "",
        headers: Headers | None = None,
        parameters: dict[str, list[str]] | None = None,
        path_values: dict[str, str] | None = None,
        reg_groups: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.query_string = query_string
        self.headers: Headers = headers if headers is not None else Headers()
        self.parameters: dict[str, list[str]] = parameters or {}
        self.path_values: dict[str, str] = path_values or {}
        self.reg_groups: tuple[str, ...] = reg_groups
        self._cookies: Cookies | None = None

    @property
    def cookies(self) -> Cookies:
        """The cookies of the upgrade request."""
        if self._cookies is None:
            self._cookies = Cookies.of_header(self.headers.get("Cookie"))
        return self._cookies

    @property
    def parameter(self) -> dict[str, str]:
        """Query parameters, the first value of each name."""
        return {k: v[0] for k, v in self.parameters.items() if v}

    def get_parameter(self, key: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``key``."""
        values = self.parameters.get(key)
        return values[0] if values else default


class WebsocketCloseReason(str):
    """Why a session closed: a readable ``message``, the close ``code`` and ``reason``.

    ``code`` is the peer's close code when the peer closed, the code the server
    closed with otherwise (1006 when the connection was lost).
    """

    message: str
    code: int | None
    reason: str

    def __new__(cls, message: str = "", code: int | None = None, reason: str = "") -> Any:
        obj = super().__new__(cls, message)
        obj.message = message
        obj.code = code
        obj.reason = reason
        return obj


class WebsocketException(Exception):
    """0.22.x's error of a session's send methods (``from
    simple_http_server.websocket_request_handler import WebsocketException`` works too).

    Each send method raises a subclass that is also the standard error of its kind, so
    ``except WebsocketException`` and ``except TypeError`` (...) both catch it.  Raised
    from a handler, it is an error like any other, as in 0.22.x.
    """

    def __init__(self, reason: WebsocketCloseReason | None = None, graceful: bool = False) -> None:
        super().__init__(reason)
        self._graceful = graceful
        self._reason = reason

    @property
    def is_graceful(self) -> bool:
        """0.22.x's flag: True when the session was closed on request."""
        return self._graceful

    @property
    def reason(self) -> WebsocketCloseReason | None:
        """What went wrong."""
        return self._reason


class WebsocketTypeError(WebsocketException, TypeError):
    """A message that is neither ``str`` nor ``bytes``."""

    def __init__(self, message: str) -> None:
        super().__init__(WebsocketCloseReason(message))


class WebsocketValueError(WebsocketException, ValueError):
    """An opcode no message can be sent with."""

    def __init__(self, message: str) -> None:
        super().__init__(WebsocketCloseReason(message))


class WebsocketFileError(WebsocketException, FileNotFoundError):
    """``send_file`` of a path that is not a readable file."""

    def __init__(self, path: str) -> None:
        super().__init__(
            WebsocketCloseReason(f"File in {path} does not exist or is not accessible.")
        )
        # As open() would raise it: "[Errno 2] No such file or directory: 'path'".
        self.errno, self.strerror, self.filename = errno.ENOENT, os.strerror(errno.ENOENT), path


class SessionLink(Protocol):
    """What a transport provides to send on one websocket."""

    @property
    def is_closed(self) -> bool: ...

    def send_message(self, pieces: Iterable[str | bytes]) -> None: ...

    def send_control(self, opcode: int, payload: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    async def drain(self) -> None: ...


#: Close codes of 1000-2999 an endpoint may send: those registered with IANA (RFC 6455
#: 7.4.2), but for 1004 (reserved) and 1005/1006/1015 ("no code", "abnormal closure",
#: "TLS failure": never in a Close frame).  3000-4999 are for libraries and applications.
_SENDABLE_PROTOCOL_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


class _Chunks:
    """A message cut into frames of ``chunk_size``; ``nbytes`` is its size."""

    __slots__ = ("chunk_size", "data", "nbytes")

    def __init__(self, data: str | bytes, chunk_size: int) -> None:
        self.data = data
        self.chunk_size = chunk_size
        self.nbytes = len(data)

    def __iter__(self) -> Iterator[str | bytes]:
        data, size = self.data, self.chunk_size
        return (data[start : start + size] for start in range(0, len(data), size))


def _pieces(data: str | bytes, chunk_size: int) -> Iterable[str | bytes]:
    if chunk_size <= 0 or len(data) <= chunk_size:
        return (data,)  # one frame: the links' fast path
    return _Chunks(data, chunk_size)


class _TextChunks(_Chunks):
    """UTF-8 bytes sent as text in frames of ``chunk_size`` bytes, decoded frame by frame
    (a character cut by a frame boundary goes out with the next frame)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[str | bytes]:
        decode = codecs.getincrementaldecoder("utf-8")().decode
        data, size, end = self.data, self.chunk_size, self.nbytes
        assert isinstance(data, bytes)
        return (
            decode(data[start : start + size], start + size >= end) for start in range(0, end, size)
        )


_TEXT_OR_BYTES = (str, bytes)


def _message(message: object, method: str) -> str | bytes:
    """``message`` as ``str`` or ``bytes``; ``TypeError`` for any other type (an ``int``
    made ``bytes(n)``: n NUL bytes)."""
    if isinstance(message, _TEXT_OR_BYTES):  # a tuple: a union is built at each call
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)  # a snapshot: the caller may reuse its buffer
    raise WebsocketTypeError(
        f"{method}() takes str or bytes (or bytearray, memoryview), not {type(message).__name__}"
    )


def _not_text(reason: str, position: int) -> ValueError:
    return ValueError(
        f"a text message must be valid UTF-8 ({reason} at byte {position}):"
        " send other bytes with send_binary() or opcode=WEBSOCKET_OPCODE_BINARY"
    )


#: Bytes sent as text are checked in slices of this size when they go out in frames.
_CHECK_SLICE = 64 * 1024


def _check_utf8(data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is UTF-8 (checked in slices: no copy of it whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view, end = memoryview(data), len(data)
    for start in range(0, end, _CHECK_SLICE):
        held = len(decoder.getstate()[0])  # the start of a character cut by the slice
        try:
            decoder.decode(view[start : start + _CHECK_SLICE], start + _CHECK_SLICE >= end)
        except UnicodeDecodeError as exc:
            raise _not_text(exc.reason, start - held + exc.start) from exc


def _binary_pieces(data: str | bytes, chunk_size: int) -> Iterable[str | bytes]:
    """The frames of a binary message; a ``str`` is sent UTF-8 encoded."""
    return _pieces(data.encode() if isinstance(data, str) else data, chunk_size)


def _text_pieces(data: str | bytes, chunk_size: int) -> Iterable[str | bytes]:
    """The frames of a text message; bytes are checked for UTF-8 before any goes out."""
    if isinstance(data, str):
        return _pieces(data, chunk_size)
    if chunk_size <= 0 or len(data) <= chunk_size:
        try:
            return (data.decode("utf-8"),)
        except UnicodeDecodeError as exc:
            raise _not_text(exc.reason, exc.start) from exc
    _check_utf8(data)
    return _TextChunks(data, chunk_size)


def _file_pieces(path: str, chunk_size: int) -> Iterator[str | bytes]:
    """The file's pieces; it is opened now, so a queued message still has it."""
    file = open(path, "rb")  # noqa: SIM115 - closed by the generator

    def pieces() -> Iterator[str | bytes]:
        with file:
            while piece := file.read(chunk_size):
                yield piece

    return pieces()


class WebsocketSession:
    """One websocket connection, as handlers see it.

    Every method is safe to call from any thread and from coroutines, in both
    transports; sending on a closed session does nothing.
    """

    def __init__(self, request: WebsocketRequest, link: SessionLink) -> None:
        self.id: str = uuid.uuid4().hex
        self.request = request
        self._link = link

    @property
    def is_closed(self) -> bool:
        """True once the closing handshake started or the connection is gone."""
        return self._link.is_closed

    def send(
        self,
        message: str | bytes | bytearray | memoryview,
        opcode: int | None = WEBSOCKET_OPCODE_TEXT,
        chunk_size: int = 0,
    ) -> None:
        """Send a message: text by default, as in 0.22.x, ``bytes`` too.

        Args:
            message: ``str`` or ``bytes`` (``bytearray``, ``memoryview``); any other
                type raises ``TypeError``, and nothing is sent.
            opcode: ``WEBSOCKET_OPCODE_TEXT`` (default; None too), ``BINARY``,
                ``PING``, ``PONG`` or ``CLOSE``.  Bytes sent as text must be UTF-8
                (``ValueError`` otherwise: send them with ``WEBSOCKET_OPCODE_BINARY``).
            chunk_size: when > 0, the message is sent in frames of this size.
        """
        data = _message(message, "send")
        if opcode == WEBSOCKET_OPCODE_TEXT or opcode is None:
            self._link.send_message(_text_pieces(data, chunk_size))
        elif opcode == WEBSOCKET_OPCODE_BINARY:
            self._link.send_message(_binary_pieces(data, chunk_size))
        elif opcode in (WEBSOCKET_OPCODE_PING, WEBSOCKET_OPCODE_PONG):
            self._control(opcode, data, "send")
        elif opcode == WEBSOCKET_OPCODE_CLOSE:
            self.close(data if isinstance(data, str) else data.decode())
        else:
            raise WebsocketValueError(f"cannot send a message with opcode {opcode!r}")

    def send_text(self, message: str | bytes | bytearray | memoryview, chunk_size: int = 0) -> None:
        """Send a text message (in frames of ``chunk_size`` characters, or bytes, when > 0).

        ``bytes`` must be UTF-8: ``ValueError`` otherwise, before anything is sent.
        """
        self._link.send_message(_text_pieces(_message(message, "send_text"), chunk_size))

    def send_binary(
        self, binary: str | bytes | bytearray | memoryview, chunk_size: int = 0
    ) -> None:
        """Send a binary message (in frames of ``chunk_size`` bytes when > 0); a ``str``
        is sent UTF-8 encoded."""
        self._link.send_message(_binary_pieces(_message(binary, "send_binary"), chunk_size))

    def send_file(self, path: str, chunk_size: int = 0) -> None:
        """Stream a file as one binary message, without reading it whole."""
        if not os.path.isfile(path):
            raise WebsocketFileError(path)
        self._link.send_message(_file_pieces(path, chunk_size if chunk_size > 0 else _FILE_CHUNK))

    def send_ping(self, message: str | bytes | bytearray | memoryview = b"") -> None:
        """Send a ping; a ``str`` payload is sent UTF-8 encoded (cut at 125 bytes)."""
        self._control(WEBSOCKET_OPCODE_PING, message, "send_ping")

    def send_pong(self, message: str | bytes | bytearray | memoryview = b"") -> None:
        """Send a pong; a ``str`` payload is sent UTF-8 encoded (cut at 125 bytes)."""
        self._control(WEBSOCKET_OPCODE_PONG, message, "send_pong")

    send_pone = send_pong  # the original's misspelling, kept for compatibility

    def _control(self, opcode: int, message: object, method: str) -> None:
        data = _message(message, method)
        self._link.send_control(opcode, data.encode() if isinstance(data, str) else data)

    def close(self, reason: str = "", code: int = 1000) -> None:
        """Start the closing handshake with ``code`` (1000) and ``reason``.

        Raises ``ValueError`` for a code no endpoint may send (RFC 6455 7.4.2:
        only 1000-1003, 1007-1014 and 3000-4999 may be) and for a reason that is
        not valid UTF-8 text (a lone surrogate), whatever the transport and
        whenever it is sent.
        """
        if code not in _SENDABLE_PROTOCOL_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"{code} is not a close code an endpoint may send")
        reason.encode("utf-8")  # UnicodeEncodeError (a ValueError) now, not when it goes out
        self._link.close(code, reason)

    async def drain(self) -> None:
        """Wait until the client has taken this session's output, but for 64 KiB.

        A coroutine's ``send`` returns at once, whatever the client takes; one
        that sends a lot awaits this between sends (beyond ``max_send_backlog``
        unsent, the session is dropped).  Returns at once on a closed session.
        """
        await self._link.drain()


class WebsocketHandler:
    """Optional base class of websocket handlers; override the events you need."""

    def on_handshake(self, request: WebsocketRequest) -> Any:
        """Accept (``None``/``0``/``101``) or reject (``(status, headers)``) the upgrade."""
        return None

    def on_open(self, session: WebsocketSession) -> Any:
        """The session is open."""

    def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> Any:
        """The session closed; ``reason.code`` is the close code."""

    def on_ping_message(self, session: WebsocketSession, message: bytes = b"") -> Any:
        """A ping arrived; answers with a pong by default."""
        session.send_pong(message)
        return None

    def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> Any:
        """A pong arrived."""

    def on_text_message(self, session: WebsocketSession, message: str) -> Any:
        """A text message arrived."""

    def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> Any:
        """A binary message arrived (what ``on_binary_frame`` kept, if defined)."""

    def on_binary_frame(
        self, session: WebsocketSession, fin: bool = False, frame_payload: bytes = b""
    ) -> Any:
        """A binary frame arrived; True keeps it for ``on_binary_message`` (as here).

        Only an override switches a session to streaming frames (see the README): this
        default exists so that an override may call ``super().on_binary_frame(...)``.
        """
        return True

    on_binary_frame.inherited_default = True  # type: ignore[attr-defined]


_app = default_app()
websocket_handler = _app.websocket_handler
websocket_handshake = _app.websocket_handshake
websocket_open = _app.websocket_open
websocket_close = _app.websocket_close
websocket_message = _app.websocket_message
