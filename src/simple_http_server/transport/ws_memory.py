"""An in-memory websocket transport for ``TestClient.websocket_connect``.

The server side is the real one (handshake negotiation, protocol, session,
callbacks); the client is a wsproto client connection; bytes go from one to
the other in memory, with no socket.  Handler callbacks run in the calling
thread (async ones on the shared background loop), so after ``send_text``
returns, the handler has seen the message.  The handshake goes through the
servers' own HTTP protocol object (their limits and checks, their ``101`` and
refusal answers).  What the server sends on its own account (a ping or a close
from another thread) is answered at once: the client's automatic replies (pong,
Close echo) reach the handler from a thread of their own, in the order they were made.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate

from ..dispatch.invoke import run_sync
from ..dispatch.ws_handlers import Rejected, negotiate
from ..dispatch.ws_session import LinkBase
from ..models import Headers
from ..protocol.http11 import HttpConnection, RequestHead
from ..protocol.ws import WebsocketProtocol, data_message, take_every_close_code
from .ws_glue import _reject_bytes, _request_done

__all__ = [
    "DEFLATE_OFFER",
    "TestWebsocket",
    "WebsocketRejected",
    "open_websocket",
    "response_head",
]


def response_head(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, header lines (latin-1 text) and the rest of a response our
    protocol object serialized (well-formed by construction)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return int(status_line.split(b" ", 2)[1]), headers, rest


class WebsocketRejected(Exception):
    """The server refused the upgrade with an HTTP response (the real servers' answer:
    ``headers`` has its ``Content-Type``, ``Content-Length``, ``Connection: close``...)."""

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"websocket handshake rejected with {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body

    @classmethod
    def from_response(cls, data: bytes) -> WebsocketRejected:
        """The refusal of a serialized response (``Content-Length`` framed)."""
        status, headers, body = response_head(data)
        return cls(status, headers, body)


class _MemoryLink(LinkBase):
    def __init__(self, client: TestWebsocket, *args: Any) -> None:
        super().__init__(*args)
        self.client = client

    def _write(self, data: bytes) -> None:
        self.client._from_server(data)

    def _send_out(self, wait: bool = True) -> None:
        # The lock is released here: the client's automatic replies may go in.
        self.client._replies_ready()


#: What ``websocket_connect(..., compress=True)`` offers: browsers' offer.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def _client_extensions(agreed: str | None) -> list[Extension]:
    """The client's end of the extension the server agreed on (its
    ``Sec-WebSocket-Extensions`` answer), as a websocket client sets it up."""
    if not agreed or agreed.split(";", 1)[0].strip() != PerMessageDeflate.name:
        return []
    extension = PerMessageDeflate()
    extension.finalize(agreed)
    return [extension]


class TestWebsocket:
    """The client end of an in-memory websocket (a context manager).

    ``status_code`` (101), ``headers`` (case-insensitive) and ``header_list`` are
    those of the handshake answer; ``subprotocol`` is the one the handler chose
    (its ``Sec-WebSocket-Protocol``), else None; ``compressed`` is True when
    permessage-deflate was agreed on (messages are compressed both ways).
    """

    __test__ = False

    def __init__(self, status_code: int = 101, header_list: list[tuple[str, str]] | None = None):
        self._link: _MemoryLink | None = None
        self._received: deque[Any] = deque()
        self._cond = threading.Condition()
        #: Bytes for the server side, in the order they were made.
        self._to_server: deque[bytes] = deque()
        #: Held by the one thread delivering ``_to_server`` (see :meth:`_pump`).
        self._pumping = threading.Lock()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.status_code = status_code
        self.header_list = header_list or []
        self.headers = Headers()
        for name, value in self.header_list:
            self.headers[name] = value
        self.subprotocol: str | None = self.headers.get("Sec-WebSocket-Protocol")
        extensions = _client_extensions(self.headers.get("Sec-WebSocket-Extensions"))
        self.compressed = bool(extensions)
        self._client = take_every_close_code(
            Connection(ConnectionType.CLIENT, extensions), extensions
        )

    # -- plumbing ----------------------------------------------------------------
    def _from_server(self, data: bytes) -> None:
        with self._cond:
            self._client.receive_data(data)
            for event in self._client.events():
                if isinstance(event, CloseConnection):
                    self.close_code, self.close_reason = int(event.code), event.reason or ""
                    if self._client.state is ConnectionState.REMOTE_CLOSING:
                        self._to_server.append(self._client.send(event.response()))
                elif isinstance(event, Ping):
                    self._to_server.append(self._client.send(event.response()))
                self._received.append(event)
            self._cond.notify_all()

    def _pump(self, wait: bool = True) -> None:
        """Deliver the queued bytes to the server side, in order, in this thread.

        One thread at a time delivers; ``wait`` False leaves the bytes to the thread
        delivering already (it looks again before it stops, so none is left behind).
        The test's own actions wait until nothing is left, so the handler has seen
        what they sent and what it answered.
        """
        link = self._link
        if link is None:  # still in the handshake: open_websocket() pumps after on_open
            return
        while True:
            if not self._pumping.acquire(blocking=wait):
                return
            try:
                self._deliver(link)
            finally:
                self._pumping.release()
            with self._cond:
                if not self._to_server:
                    return

    def _deliver(self, link: _MemoryLink) -> None:
        while True:
            with self._cond:
                if not self._to_server:
                    return
                chunk = self._to_server.popleft()
            run_sync(link.handle(link.feed(chunk)))
            if link.finished:
                run_sync(link.finish())

    def _replies_ready(self) -> None:
        """The server sent something (from any thread): the client's automatic
        replies go in at once, from a thread of their own, as from a real client:
        never inside the sender's call (it may hold its own locks)."""
        with self._cond:
            if not self._to_server:
                return
        if self._pumping.locked():  # its holder looks again after it lets go
            return
        threading.Thread(target=self._pump, args=(False,), name="shs-test-ws", daemon=True).start()

    def _send(self, event: Any) -> None:
        with self._cond:
            self._to_server.append(self._client.send(event))
        self._pump()

    # -- API ---------------------------------------------------------------------
    def send_text(self, data: str) -> None:
        """Send a text message."""
        self._send(TextMessage(data=data))

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._send(BytesMessage(data=data))

    def send_frame(self, data: str | bytes, fin: bool) -> None:
        """Send one frame of a fragmented message."""
        self._send(data_message(data, fin))

    def send_ping(self, payload: bytes = b"") -> None:
        """Send a ping."""
        self._send(Ping(payload=payload))

    def receive(self, timeout: float = 5.0) -> Any:
        """The next wsproto event from the server (messages, pings, pongs, close)."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._received), timeout):
                raise TimeoutError("nothing received from the websocket handler")
            return self._received.popleft()

    def _message(self, kind: type, timeout: float) -> Any:
        parts: list[Any] = []
        while True:
            event = self.receive(timeout)
            if isinstance(event, CloseConnection):
                raise ConnectionError(f"websocket closed: {event.code} {event.reason}")
            if isinstance(event, Pong | Ping):
                continue
            if not isinstance(event, kind):
                raise TypeError(f"expected {kind.__name__}, got {event!r}")
            message: Any = event
            parts.append(message.data)
            if message.message_finished:
                return "".join(parts) if kind is TextMessage else b"".join(parts)

    def receive_text(self, timeout: float = 5.0) -> str:
        """The next text message."""
        return str(self._message(TextMessage, timeout))

    def receive_bytes(self, timeout: float = 5.0) -> bytes:
        """The next binary message."""
        return bytes(self._message(BytesMessage, timeout))

    def receive_pong(self, timeout: float = 5.0) -> bytes:
        """The payload of the next pong."""
        while True:
            event = self.receive(timeout)
            if isinstance(event, Pong):
                return bytes(event.payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the websocket (the handler's ``on_close`` runs before this returns)."""
        if self._client.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason or None))
        link = self._link
        if link is not None:
            run_sync(link.finish())

    def _disconnect(self) -> None:
        """The client goes away without a Close, as a plain HTTP client does after the 101
        (the handler's ``on_close`` runs before this returns)."""
        link = self._link
        if link is None:
            return
        with self._pumping:
            run_sync(link.handle(link.feed(b"")))
        run_sync(link.finish())

    @property
    def is_closed(self) -> bool:
        """True once either side sent a Close frame."""
        return self._client.state is not ConnectionState.OPEN

    def __enter__(self) -> TestWebsocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_websocket(app: Any, config: Any, http: HttpConnection, head: RequestHead) -> TestWebsocket:
    """Run the handshake of ``head``, a request :func:`.ws_glue.wants_websocket` takes,
    read from ``http`` (the servers' HTTP protocol object): the open :class:`TestWebsocket`,
    else :class:`WebsocketRejected` with the servers' refusal."""
    if not _request_done(http):
        result: Any = Rejected(400, [], "A websocket upgrade request must not have a body.")
    else:
        limit = config.limits.max_websocket_message_size
        result = run_sync(negotiate(app.compiled().websockets, head, max_message_size=limit))
    if isinstance(result, Rejected):
        raise WebsocketRejected.from_response(_reject_bytes(http, result))
    status, headers, _ = response_head(http.send_switch(result.headers))
    client = TestWebsocket(status, headers)
    proto = WebsocketProtocol(
        extensions=result.extensions,
        max_message_size=config.limits.max_websocket_message_size,
        stream_binary=result.callbacks.on_binary_frame is not None,
    )
    link = client._link = _MemoryLink(client, proto, result.callbacks, result.request)
    with client._pumping:  # replies to what on_open sends wait until it returned
        run_sync(link.opened())
    client._pump()
    return client
