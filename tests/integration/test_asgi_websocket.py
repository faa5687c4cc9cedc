"""Websocket sessions under a real uvicorn end as they do in our own transports.

Each test runs the same app in the threaded and asyncio transports and under
uvicorn (``asgi``), with a raw-socket client, and expects the same callbacks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from typing import Any

import pytest
import websocket

from simple_http_server import (
    App,
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
)
from simple_http_server.adapters.asgi_ws import disconnect_event
from simple_http_server.server import init_asgi_proxy
from simple_http_server.testing import TestClient

from ..conftest import LogRecords, asgi_server, ws_server
from ..robustness.test_websocket_hostile import upgraded as upgrade

KINDS = ["threaded", "asyncio", "asgi"]


def frame(opcode: int, payload: bytes = b"", rsv1: bool = False, masked: bool = True) -> bytes:
    """One small client frame (payload < 126 bytes)."""
    assert len(payload) < 126
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode, (0x80 if masked else 0) | len(payload)])
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


def upgraded(port: int, path: str) -> socket.socket:
    """A raw client socket past the 101 of ``path``."""
    return upgrade(socket.create_connection(("127.0.0.1", port), timeout=5), path)


def read_to_end(sock: socket.socket, timeout: float = 5.0) -> None:
    """Read (and drop) what the server sends until it closes, ``timeout`` at most."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline and sock.recv(65536):
            pass


class Recorder:
    """The callbacks a handler saw, and a way to wait for its ``on_close``."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.closed = threading.Event()

    def add(self, *event: Any) -> None:
        self.events.append(event)

    def close(self, reason: WebsocketCloseReason) -> None:
        self.add("close", reason.code, reason.reason, reason.message)
        self.closed.set()

    def wait(self) -> list[Any]:
        assert self.closed.wait(10), self.events
        return self.events


def replying_app(seen: Recorder) -> App:
    """``/sync`` and ``/async`` answer every message; ``/slow-open`` sends from a slow on_open."""
    app = App()

    @app.websocket_handler(endpoint="/sync")
    class SyncEcho(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.add("text", message)
            session.send("echo " + message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen.close(reason)

    @app.websocket_handler(endpoint="/async")
    class AsyncEcho:
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.add("text", message)
            session.send("echo " + message)

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen.close(reason)

    @app.websocket_handler(endpoint="/slow-open")
    class SlowOpen(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            time.sleep(0.5)  # the client's messages and Close arrive meanwhile
            session.send("opened")

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.add("text", message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen.close(reason)

    return app


@pytest.mark.parametrize("path", ["/sync", "/async"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_handler_that_replies_gets_every_message_and_the_clients_close(
    kind: str, path: str
) -> None:
    """Three messages and a Close in one write: the replies to the first meet a
    client that is closing (uvicorn's send raises); the other two are still
    delivered and on_close gets the client's code and reason."""
    seen = Recorder()
    with ws_server(kind, replying_app(seen)) as port, upgraded(port, path) as sock:
        sock.sendall(
            frame(0x1, b"m1") + frame(0x1, b"m2") + frame(0x1, b"m3") + close_frame(1000, b"bye")
        )
        events = seen.wait()
        read_to_end(sock)
    assert events == [
        ("text", "m1"), ("text", "m2"), ("text", "m3"),
        ("close", 1000, "bye", "Client asked to close connection."),
    ]  # fmt: skip


def subprotocol_app(offers: list[object]) -> App:
    """``/proto`` accepts the last subprotocol the client offers (RFC 6455 4.2.2)."""
    app = App()

    @app.websocket_handler(endpoint="/proto")
    class Chooser(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            offered = request.headers["Sec-WebSocket-Protocol"]
            offers.append(offered)
            if offered:
                return 0, {"Sec-WebSocket-Protocol": offered.split(",")[-1].strip()}
            return None

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(message)

    return app


@pytest.mark.parametrize("kind", KINDS)
def test_the_offered_subprotocols_reach_on_handshake(kind: str) -> None:
    """The client's Sec-WebSocket-Protocol reaches ``on_handshake``, so the handler can
    choose one.  uvicorn's wsproto leaves it out of the scope's headers (it gives it as
    ``subprotocols``): under ASGI the handler saw none and answered none, and a client
    that asked for one (a browser) fails the connection."""
    offers: list[object] = []
    with ws_server(kind, subprotocol_app(offers)) as port:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/proto", timeout=10, subprotocols=["chat", "superchat"]
        )
        try:
            assert ws.getsubprotocol() == "superchat"
            ws.send("hi")
            assert ws.recv() == "hi"
        finally:
            ws.close()
    assert [str(offer).replace(" ", "") for offer in offers] == ["chat,superchat"]


def stubborn_app() -> App:
    """``/proto`` always answers the subprotocol ``chat``, offered or not."""
    app = App()

    @app.websocket_handler(endpoint="/proto")
    class Stubborn(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            return 0, {"Sec-WebSocket-Protocol": "chat", "X-Kept": "1"}

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(message)

    return app


@pytest.mark.parametrize("offers", [[], ["json", "xml"]])
@pytest.mark.parametrize("kind", KINDS)
def test_a_subprotocol_the_client_did_not_offer_is_left_out(
    kind: str, offers: list[str], log_records: LogRecords
) -> None:
    """RFC 6455 4.2.2: the server answers one of the offered subprotocols or none (a
    client fails the connection on another, 4.1).  Our transports sent the handler's
    choice whatever the offer; uvicorn refused it (a traceback, the connection dropped)."""
    with ws_server(kind, stubborn_app()) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            offer = f"Sec-WebSocket-Protocol: {', '.join(offers)}\r\n" if offers else ""
            sock.sendall(
                b"GET /proto HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n" + offer.encode() + b"\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, head
                head += chunk
            sock.sendall(frame(0x1, b"hi"))
            assert sock.recv(64).endswith(b"hi")
    lines = head.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 101 "), lines
    assert b"x-kept: 1" in lines
    assert not [line for line in lines if line.startswith(b"sec-websocket-protocol")], lines
    assert any("did not offer" in r.getMessage() for r in log_records.records)


def test_the_testclient_leaves_out_a_subprotocol_the_client_did_not_offer() -> None:
    with TestClient(stubborn_app()).websocket_connect("/proto") as ws:
        assert ws.subprotocol is None
        assert ws.headers["X-Kept"] == "1"
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
    headers = {"Sec-WebSocket-Protocol": "xml, chat"}
    with TestClient(stubborn_app()).websocket_connect("/proto", headers=headers) as ws:
        assert ws.subprotocol == "chat"


@pytest.mark.parametrize("kind", KINDS)
def test_a_send_from_on_open_while_the_client_closes_loses_nothing(kind: str) -> None:
    seen = Recorder()
    with ws_server(kind, replying_app(seen)) as port, upgraded(port, "/slow-open") as sock:
        sock.sendall(frame(0x1, b"early") + close_frame(1000, b"quick"))
        events = seen.wait()
        read_to_end(sock)
    assert events == [
        ("text", "early"),
        ("close", 1000, "quick", "Client asked to close connection."),
    ]


def server_closing_app(seen: Recorder) -> App:
    """``/close`` closes on "m1"; ``/raise`` raises on "m1"."""
    app = App()

    @app.websocket_handler(endpoint="/close")
    class Closer(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.add("text", message)
            if message == "m1":
                session.close("srv", 4000)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen.close(reason)

    @app.websocket_handler(endpoint="/raise")
    class Raiser(Closer):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.add("text", message)
            if message == "m1":
                raise ValueError("boom")

    return app


@pytest.mark.parametrize("kind", KINDS)
def test_no_message_is_delivered_after_the_servers_close(kind: str) -> None:
    """``m1`` closes the session: ``m2`` and ``m3``, read with it or after it, are not
    delivered (as in 0.22.x and naja-atra, which stopped reading); ``on_close`` still
    waits for the client's answer and gets the server's code.  They were delivered."""
    seen = Recorder()
    with ws_server(kind, server_closing_app(seen)) as port, upgraded(port, "/close") as sock:
        sock.sendall(frame(0x1, b"m1") + frame(0x1, b"m2"))
        time.sleep(0.3)  # the client answers the server's Close a moment later
        sock.sendall(frame(0x1, b"m3") + close_frame(4000))
        events = seen.wait()
        read_to_end(sock)
    assert events == [("text", "m1"), ("close", 4000, "srv", "Server asked to close connection.")]


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_delivered_after_a_callback_failed(kind: str) -> None:
    seen = Recorder()
    with ws_server(kind, server_closing_app(seen)) as port, upgraded(port, "/raise") as sock:
        sock.sendall(frame(0x1, b"m1") + frame(0x1, b"m2"))
        time.sleep(0.3)
        sock.sendall(close_frame(1011))
        events = seen.wait()
        read_to_end(sock)
    assert events == [("text", "m1"), ("close", 1011, "Handler error", "Handler error.")]


def closing_app(seen: Recorder) -> App:
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Quiet(WebsocketHandler):
        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen.close(reason)

    return app


LOST = (1006, "connection lost", "Connection lost.")
PROTOCOL = "Protocol error."
BY_CLIENT = "Client asked to close connection."


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"", LOST),  # the client's TCP FIN without a Close frame
        (frame(0x8), (1005, "", BY_CLIENT)),  # a Close frame without a code
        (close_frame(4001, b"mine"), (4001, "mine", BY_CLIENT)),
        (frame(0x1, b"x", rsv1=True), (1002, None, PROTOCOL)),
        (frame(0x1, b"x", masked=False), (1002, None, PROTOCOL)),
        (frame(0x3, b"x"), (1002, None, PROTOCOL)),
        (frame(0x8, b"\x03"), (1002, None, PROTOCOL)),  # a 1-byte Close payload
        (frame(0x1, b"\xff\xfe"), (1007, None, "Invalid message data.")),
    ],
    ids=["fin", "empty-close", "close-4001", "rsv1", "unmasked", "opcode-3", "close-1-byte",
         "bad-utf8"],
)  # fmt: skip
@pytest.mark.parametrize("kind", KINDS)
def test_on_close_tells_a_lost_connection_and_protocol_errors_from_a_clients_close(
    kind: str, sent: bytes, expected: tuple[int, str | None, str]
) -> None:
    seen = Recorder()
    with ws_server(kind, closing_app(seen)) as port, upgraded(port, "/ws") as sock:
        if sent:
            sock.sendall(sent)
        else:
            sock.shutdown(socket.SHUT_WR)
        events = seen.wait()
        read_to_end(sock)
    ((_name, code, reason, message),) = events
    assert (code, message) == (expected[0], expected[2]), events
    if expected[1] is not None:
        assert reason == expected[1]


def test_a_uvicorn_shutdown_is_the_servers_close_not_the_clients() -> None:
    """uvicorn closes open websockets with 1012 when it stops (no Close from the client)."""
    seen = Recorder()
    with asgi_server(init_asgi_proxy(app_conf=closing_app(seen))) as address:
        sock = upgraded(address.port, "/ws")
    with sock:  # uvicorn stopped first; the client is still there
        events = seen.wait()
    assert events == [("close", 1012, "", "Server asked to close connection.")]


# What each uvicorn websocket backend puts in ``websocket.disconnect`` (uvicorn 0.54;
# ``websockets`` is the legacy backend, ``websockets-sansio`` what ``auto`` picks).
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"code": 1005}, (1006, "connection lost", False)),  # wsproto, sansio: TCP lost
        ({"code": 1006, "reason": ""}, (1006, "connection lost", False)),  # legacy: lost
        ({"code": 1005, "reason": ""}, (1005, "", True)),  # a Close frame without a code
        ({"code": 1000, "reason": "bye"}, (1000, "bye", True)),
        ({"code": 1002, "reason": "bad"}, (1002, "bad", False)),  # the server's check
        ({"code": 1007, "reason": ""}, (1007, "", False)),
        ({"code": 1009, "reason": "too big"}, (1009, "too big", False)),  # ws_max_size
        ({"code": 1012}, (1012, "", False)),  # uvicorn shutting down
        ({}, (1006, "connection lost", False)),
    ],
)
def test_disconnect_event_of_each_uvicorn_backend(
    message: dict[str, Any], expected: tuple[int, str, bool]
) -> None:
    event = disconnect_event({"type": "websocket.disconnect", **message})
    assert (event.code, event.reason, event.by_peer) == expected
