"""The Sans-IO core of the h11 "ceiling" servers: bytes in, bytes out, nothing else.

It drives ``h11`` directly and answers a fixed JSON response to every GET (and
echoes POST bodies); a websocket upgrade on ``/ws`` is answered with a 101
built from h11, after which a bare ``wsproto`` connection (seeded with h11's
trailing bytes) echoes every frame.  No routing, no headers parsing beyond
h11's, no allocation that h11 or wsproto do not need: an upper bound for any
h11-based server of the same transport design.
"""

from __future__ import annotations

import h11  # type: ignore[import-not-found, unused-ignore]
from _common import JSON_BYTES
from wsproto.connection import (  # type: ignore[import-not-found, unused-ignore]
    Connection,
    ConnectionState,
    ConnectionType,
)
from wsproto.events import (  # type: ignore[import-not-found, unused-ignore]
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import generate_accept_token  # type: ignore[import-not-found, unused-ignore]

_JSON_HEADERS = [
    (b"Content-Type", b"application/json"),
    (b"Content-Length", str(len(JSON_BYTES)).encode()),
]
_ECHO_TYPE = (b"Content-Type", b"application/octet-stream")


class CeilingConnection:
    """One client connection: :meth:`feed` returns the bytes to send back."""

    __slots__ = ("body", "closed", "http", "is_upgrade", "method", "ws", "ws_key")

    def __init__(self) -> None:
        self.http = h11.Connection(h11.SERVER)
        self.ws: Connection | None = None
        self.closed = False
        self.method = b""
        self.body: list[bytes] = []
        self.is_upgrade = False
        self.ws_key = b""

    def feed(self, data: bytes) -> bytes:
        """Take received bytes (``b""`` at end of stream) and return the reply bytes."""
        if self.ws is not None:
            return self._feed_ws(data)
        http = self.http
        http.receive_data(data)
        out: list[bytes] = []
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError:
                self.closed = True
                break
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self.body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                out.append(self._respond())
            elif event is h11.PAUSED:
                if self.ws is not None:
                    trailing = http.trailing_data[0]
                    if trailing:
                        out.append(self._feed_ws(trailing))
                    break
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                    continue
                self.closed = True
                break
            else:  # NEED_DATA or ConnectionClosed
                self.closed = self.closed or isinstance(event, h11.ConnectionClosed)
                break
        if http.our_state is h11.MUST_CLOSE:
            self.closed = True
        return b"".join(out)

    def _on_request(self, event: h11.Request) -> None:
        self.method = event.method
        self.body = []
        self.is_upgrade = False
        if event.target == b"/ws":
            for name, value in event.headers:
                if name == b"upgrade" and value.lower() == b"websocket":
                    self.is_upgrade = True
                elif name == b"sec-websocket-key":
                    self.ws_key = value

    def _respond(self) -> bytes:
        http = self.http
        if self.is_upgrade:
            accept = generate_accept_token(self.ws_key)
            if isinstance(accept, str):  # str before wsproto 1.3
                accept = accept.encode()
            head = http.send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        (b"Upgrade", b"websocket"),
                        (b"Connection", b"Upgrade"),
                        (b"Sec-WebSocket-Accept", accept),
                    ],
                )
            )
            self.ws = Connection(ConnectionType.SERVER)
            return head
        if self.method == b"POST":
            body = b"".join(self.body)
            headers = [_ECHO_TYPE, (b"Content-Length", str(len(body)).encode())]
        else:
            body, headers = JSON_BYTES, _JSON_HEADERS
        return (
            http.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
            + http.send(h11.Data(data=body))
            + http.send(h11.EndOfMessage())
        )

    def _feed_ws(self, data: bytes) -> bytes:
        ws = self.ws
        assert ws is not None
        ws.receive_data(data or None)
        out: list[bytes] = []
        for event in ws.events():
            if isinstance(event, TextMessage):
                out.append(
                    ws.send(TextMessage(data=event.data, message_finished=event.message_finished))
                )
            elif isinstance(event, BytesMessage):
                out.append(
                    ws.send(BytesMessage(data=event.data, message_finished=event.message_finished))
                )
            elif isinstance(event, Ping):
                out.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    out.append(ws.send(event.response()))
                self.closed = True
        if not data:
            self.closed = True
        return b"".join(out)
