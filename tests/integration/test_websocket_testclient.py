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
            session.send_binary(message + b"!")

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
            session.send_binary(b"x" * (4 * 1024 * 1024), chunk_size=64 * 1024)
            await session.drain()
            session.send("done")

    with TestClient(app).websocket_connect("/drain") as ws:
        ws.send_text("m")
        assert [ws.receive_text() for _ in range(3)] == ["m 0", "m 1", "m 2"]
        assert ws.receive_bytes() == b"x" * (4 * 1024 * 1024)
        assert ws.receive_text() == "done"


def background_app(log: list[Any]) -> App:
    """A handler that pings or closes from another thread, or later from its loop."""
    import asyncio
    import threading
    import time

    app = App()

    def later(action: Any) -> None:
        threading.Thread(target=lambda: (time.sleep(0.1), action())).start()

    @app.websocket_handler(endpoint="/bg")
    class Background(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            if message == "thread-ping":
                later(lambda: session.send_ping(b"srv"))
            elif message == "thread-close":
                later(lambda: session.close("from-thread", 4003))
            elif message == "loop-ping":  # a send made by the event loop, not a callback
                asyncio.get_running_loop().call_later(0.1, session.send_ping, b"loop")

        def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            log.append(("pong", message))

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            log.append(("close", reason.code, reason.reason))

    return app


def wait_until(predicate: Any, timeout: float = 3.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.01)


@pytest.mark.parametrize(("message", "payload"), [("thread-ping", b"srv"), ("loop-ping", b"loop")])
def test_a_ping_the_server_sends_on_its_own_is_answered_at_once(
    message: str, payload: bytes
) -> None:
    """The client's automatic pong reaches on_pong_message without any further
    action of the test, as it does from a real client."""
    log: list[Any] = []
    with TestClient(background_app(log)).websocket_connect("/bg") as ws:
        ws.send_text(message)
        wait_until(lambda: ("pong", payload) in log)
    assert log == [("pong", payload), ("close", 1000, "")]


def test_a_close_from_another_thread_completes_at_once_with_its_reason() -> None:
    log: list[Any] = []
    ws = TestClient(background_app(log)).websocket_connect("/bg")
    ws.send_text("thread-close")
    wait_until(lambda: bool(log))
    assert log == [("close", 4003, "from-thread")]
    assert (ws.close_code, ws.close_reason) == (4003, "from-thread")
    ws.close()
    assert log == [("close", 4003, "from-thread")]


def test_the_answer_to_a_ping_does_not_run_inside_the_senders_call() -> None:
    """A real server reads the pong on another thread: a sender holding its own lock
    while pinging, and an on_pong_message taking that lock, must not deadlock."""
    import threading
    import time

    app = App()
    log: list[bytes] = []
    lock = threading.Lock()

    @app.websocket_handler(endpoint="/locked")
    class Locked(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            def ping() -> None:
                time.sleep(0.1)  # once the test's own send was delivered
                with lock:
                    session.send_ping(b"locked")

            threading.Thread(target=ping, daemon=True).start()

        def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            with lock:
                log.append(message)

    with TestClient(app).websocket_connect("/locked") as ws:
        ws.send_text("go")
        wait_until(lambda: log == [b"locked"])


def compressed_echo_app() -> App:
    app = App()

    @app.websocket_handler(endpoint="/echo")
    class Echo(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(f"{len(message)}:{message[:8]}")

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(message)

    return app


@pytest.mark.parametrize("compress", [True, False])
def test_compress_negotiates_permessage_deflate(compress: bool) -> None:
    """``compress=True`` offers permessage-deflate, as browsers do: the server's
    negotiation accepts it and every message goes compressed, both ways."""
    ws = TestClient(compressed_echo_app()).websocket_connect("/echo", compress=compress)
    from_server: list[bytes] = []
    received = ws._from_server

    def recording(data: bytes) -> None:  # the server's frames, as they leave it
        from_server.append(data)
        received(data)

    ws._from_server = recording  # type: ignore[method-assign]
    with ws:
        assert ws.compressed is compress
        extensions = ws.headers.get("Sec-WebSocket-Extensions")
        assert extensions == ("permessage-deflate; client_max_window_bits=15" if compress else None)
        ws.send_text("a" * 100_000)
        assert ws.receive_text() == "100000:aaaaaaaa"
        ws.send_bytes(bytes(300_000))
        assert ws.receive_bytes() == bytes(300_000)
        ws.send_frame("x" * 10, fin=False)
        ws.send_frame("y" * 10, fin=True)
        assert ws.receive_text() == "20:xxxxxxxx"
    binary = [chunk for chunk in from_server if chunk[0] & 0x0F == 0x2]
    assert binary and all(bool(chunk[0] & 0x40) is compress for chunk in binary)
    if compress:  # 300 kB of zeros, deflated
        assert sum(len(chunk) for chunk in binary) < 10_000


def test_a_ping_between_compressed_fragments_leaves_the_message_whole() -> None:
    """A Ping between the fragments of a compressed message (RFC 6455 5.4) is answered
    and the message arrives whole, as on a socket (the fragment after it was read as
    plain bytes: 1007 for text)."""
    with TestClient(compressed_echo_app()).websocket_connect("/echo", compress=True) as ws:
        ws.send_frame("x" * 10, fin=False)
        ws.send_ping(b"mid")
        ws.send_frame("y" * 10, fin=True)
        assert ws.receive_pong() == b"mid"
        assert ws.receive_text() == "20:xxxxxxxx"
        ws.send_text("after")
        assert ws.receive_text() == "5:after"


def test_a_compressed_message_past_the_limit_closes_with_1009() -> None:
    """The servers' bound on an inflated message applies under the TestClient too."""
    config = ServerConfig().with_changes(max_websocket_message_size=64 * 1024)
    client = TestClient(compressed_echo_app(), config=config)
    with client.websocket_connect("/echo", compress=True) as ws:
        ws.send_bytes(bytes(1024 * 1024))  # 1 MiB of zeros: about 1 KiB on the wire
        with pytest.raises(ConnectionError, match="1009"):
            ws.receive_bytes()
    assert ws.close_reason == "Message too big"  # as uncompressed (not wsproto's text)
