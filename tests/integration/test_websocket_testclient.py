"""``TestClient.websocket_connect``: the same handlers, no socket."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_socket

from simple_http_server import (
    WEBSOCKET_MESSAGE_TEXT,
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
)
from simple_http_server.app import App
from simple_http_server.config import ServerConfig
from simple_http_server.testing import TestClient
from simple_http_server.transport.ws_memory import WebsocketRejected


@pytest.fixture(autouse=True)
def _no_sockets() -> Any:
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()


def make_app() -> tuple[App, list[Any]]:
    app = App()
    log: list[Any] = []

    @app.websocket_handler(endpoint="/chat/{room}")
    class Chat(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            if request.get_parameter("token") != "ok":
                return 401, {"WWW-Authenticate": "Token"}
            return {"X-Room": request.path_values["room"]}

        def on_open(self, session: WebsocketSession) -> None:
            session.send(f"welcome to {session.request.path_values['room']}")

        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            if message == "leave":
                session.close("bye")
            else:
                session.send(message.upper())

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send(message + b"!")

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            log.append((reason.code, reason.reason, reason.message))

    return app, log


def test_echo_and_close_by_client() -> None:
    app, log = make_app()
    with TestClient(app).websocket_connect("/chat/lobby?token=ok") as ws:
        assert ws.receive_text() == "welcome to lobby"
        ws.send_text("hi")
        assert ws.receive_text() == "HI"
        ws.send_bytes(b"data")
        assert ws.receive_bytes() == b"data!"
        ws.send_ping(b"p")
        assert ws.receive_pong() == b"p"
        ws.send_frame("frag", fin=False)
        ws.send_frame("ment", fin=True)
        assert ws.receive_text() == "FRAGMENT"
    assert log == [(1000, "", "Client asked to close connection.")]


def test_server_close() -> None:
    app, log = make_app()
    ws = TestClient(app).websocket_connect("/chat/x?token=ok")
    ws.receive_text()
    ws.send_text("leave")
    assert ws.is_closed
    assert (ws.close_code, ws.close_reason) == (1000, "bye")
    assert log == [(1000, "bye", "Server asked to close connection.")]


def test_rejected_and_unknown() -> None:
    app, _ = make_app()
    client = TestClient(app)
    with pytest.raises(WebsocketRejected) as info:
        client.websocket_connect("/chat/x")
    assert info.value.status_code == 401
    assert ("WWW-Authenticate", "Token") in info.value.headers
    with pytest.raises(WebsocketRejected) as info:
        client.websocket_connect("/nope")
    assert info.value.status_code == 404


def test_limit_and_function_style() -> None:
    app = App()
    closes: list[int | None] = []

    @app.websocket_message(endpoint="/f", message_type=WEBSOCKET_MESSAGE_TEXT)
    def text(session: WebsocketSession, message: str) -> None:
        session.send(message)

    @app.websocket_close(endpoint="/f")
    def close(session: WebsocketSession, reason: WebsocketCloseReason) -> None:
        closes.append(reason.code)

    config = ServerConfig().with_changes(max_websocket_message_size=10)
    ws = TestClient(app, config=config).websocket_connect("/f")
    ws.send_text("0123456789")
    assert ws.receive_text() == "0123456789"
    ws.send_text("0123456789+")
    assert ws.close_code == 1009
    assert closes == [1009]


def test_drain_returns_at_once_in_memory() -> None:
    """``await session.drain()`` works under the test client (nothing is ever unsent)."""
    app = App()

    @app.websocket_handler(endpoint="/drain")
    class Drainer(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            for i in range(3):
                session.send(f"{message} {i}")
                await session.drain()
            session.send(b"x" * (4 * 1024 * 1024), chunk_size=64 * 1024)
            await session.drain()
            session.send("done")

    with TestClient(app).websocket_connect("/drain") as ws:
        ws.send_text("m")
        assert [ws.receive_text() for _ in range(3)] == ["m 0", "m 1", "m 2"]
        assert ws.receive_bytes() == b"x" * (4 * 1024 * 1024)
        assert ws.receive_text() == "done"
