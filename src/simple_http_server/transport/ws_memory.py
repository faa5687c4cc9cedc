"""An in-memory websocket transport for ``TestClient.websocket_connect``.

The server side is the real one (handshake negotiation, protocol, session,
callbacks); the client is a wsproto client connection; bytes go from one to
the other in memory, with no socket.  Handler callbacks run in the calling
thread (async ones on the shared background loop), so after ``send_text``
returns, the handler has seen the message.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ..dispatch.invoke import run_sync
from ..dispatch.ws_handlers import Rejected, negotiate
from ..dispatch.ws_session import LinkBase
from ..protocol.http11 import RequestHead
from ..protocol.ws import WebsocketProtocol, data_message

__all__ = ["TestWebsocket", "WebsocketRejected", "connect"]


class WebsocketRejected(Exception):
    """The server refused the upgrade with an HTTP response."""

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"websocket handshake rejected with {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


class _MemoryLink(LinkBase):
    def __init__(self, client: TestWebsocket, *args: Any) -> None:
        super().__init__(*args)
        self.client = client

    def _write(self, data: bytes) -> None:
        self.client._from_server(data)


class TestWebsocket:
    """The client end of an in-memory websocket (a context manager)."""

    __test__ = False

    def __init__(self) -> None:
        self._client = Connection(ConnectionType.CLIENT)
        self._link: _MemoryLink | None = None
        self._received: deque[Any] = deque()
        self._cond = threading.Condition()
        self._to_server: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str = ""

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

    def _pump(self, data: bytes = b"") -> None:
        """Deliver ``data`` and any automatic replies to the server side."""
        link = self._link
        assert link is not None
        pending = [data] if data else []
        while True:
            with self._cond:
                pending.extend(self._to_server)
                self._to_server.clear()
            if not pending:
                return
            for chunk in pending:
                run_sync(link.handle(link.feed(chunk)))
            pending = []
            if link.finished:
                run_sync(link.finish())

    def _send(self, event: Any) -> None:
        with self._cond:
            data = self._client.send(event)
        self._pump(data)

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

    @property
    def is_closed(self) -> bool:
        """True once either side sent a Close frame."""
        return self._client.state is not ConnectionState.OPEN

    def __enter__(self) -> TestWebsocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(app: Any, config: Any, path: str, headers: Mapping[str, str] | None) -> TestWebsocket:
    """Run the handshake in memory; the open :class:`TestWebsocket`."""
    raw = [
        (b"Host", b"testserver"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", base64.b64encode(os.urandom(16))),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    for name, value in (headers or {}).items():
        raw.append((name.encode("latin-1"), value.encode("latin-1")))
    head = RequestHead("GET", path.encode(), raw, b"1.1", False)
    result = run_sync(negotiate(app.compiled().websockets, head, deflate=False))
    if isinstance(result, Rejected):
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in result.headers]
        raise WebsocketRejected(result.status, pairs, result.body())
    client = TestWebsocket()
    proto = WebsocketProtocol(
        max_message_size=config.limits.max_websocket_message_size,
        stream_binary=result.callbacks.on_binary_frame is not None,
    )
    link = client._link = _MemoryLink(client, proto, result.callbacks, result.request)
    run_sync(link.opened())
    client._pump()
    return client
