"""Stopping, in both transports: websockets get their 1001 at once while requests
drain, a request stuck past ``drain_timeout`` is cut then (websockets or not), and
``stop()`` returns once stopped and never raises."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
import websocket
from websocket import ABNF

from simple_http_server import App, WebsocketHandler, WebsocketSession
from simple_http_server.server import Server
from simple_http_server.transport import ws_glue

from ..conftest import LiveServer

Serve = Callable[..., LiveServer]


class Blocked:
    """A request held in its controller until ``release`` (a raw client: it sees the cut)."""

    def __init__(self, live: LiveServer, entered: threading.Event) -> None:
        self.sock = socket.create_connection((live.host, live.port), timeout=20)
        self.sock.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        self.reply = b""
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert entered.wait(5), "the request did not reach its controller"

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(4096):
                self.reply += chunk
        self.ended_at = time.monotonic()
        self.sock.close()

    def done(self) -> bool:
        return not self.thread.is_alive()


def lifecycle_app(entered: threading.Event, release: threading.Event) -> App:
    app = App()

    @app.route("/block")
    def block() -> str:
        entered.set()
        release.wait(20)
        return "released"

    @app.websocket_handler(endpoint="/ws")
    class Echo(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send("echo " + message)

    return app


def silent_websocket(live: LiveServer) -> socket.socket:
    """A websocket client that never answers the server's Close."""
    sock = socket.create_connection((live.host, live.port), timeout=10)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    return sock


def wait_until_refused(live: LiveServer) -> None:
    """Until the listening socket is closed (the stop has begun)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((live.host, live.port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):  # reset: closed meanwhile
            return
        time.sleep(0.01)
    raise AssertionError("the port still accepts connections")


def frames_until_close(ws: websocket.WebSocket) -> tuple[list[bytes], int]:
    """Data frames received before the server's Close, and its code."""
    frames = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            return frames, struct.unpack("!H", frame.data[:2])[0]
        if opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            frames.append(frame.data)


class Stopper:
    """``server.stop()`` in a thread of its own: when it returned, and what it raised."""

    def __init__(self, srv: Server) -> None:
        self.error: BaseException | None = None
        self.returned_at = 0.0
        self.began = time.monotonic()
        self.thread = threading.Thread(target=self._stop, args=(srv,), daemon=True)
        self.thread.start()

    def _stop(self, srv: Server) -> None:
        try:
            srv.stop()
        except BaseException as exc:
            self.error = exc
        self.returned_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "stop() did not return"


# -- websockets and requests during the stop ---------------------------------------
def test_stop_closes_websockets_at_once_while_requests_drain(serve: Serve) -> None:
    """asyncio sent the 1001 only once the requests in flight had drained (and answered
    messages meanwhile); both now close websockets at once, as the README says."""
    entered, release = threading.Event(), threading.Event()
    live = serve(lifecycle_app(entered, release), drain_timeout=8.0)
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.port}/ws", timeout=10)
    try:
        request = Blocked(live, entered)
        stopper = Stopper(live.server)
        wait_until_refused(live)
        ws.send("after stop")
        frames, code = frames_until_close(ws)
        closed_after = time.monotonic() - stopper.began
        assert code == 1001
        assert frames == []  # not answered: the session was closing already
        assert closed_after < 3.0, closed_after  # was drain_timeout (8 s)
        assert not request.done()  # still in its controller
        release.set()
        request.thread.join(10)
        assert request.reply.startswith(b"HTTP/1.1 200 ")
        assert request.reply.endswith(b"released")
        stopper.join(15)
    finally:
        release.set()
        ws.close()


def test_a_stuck_request_is_cut_at_drain_timeout_and_stop_returns_once_stopped(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a websocket client that never answers the Close: threaded started the drain
    deadline only after waiting for the websockets (a stuck request ran drain_timeout +
    CLOSE_TIMEOUT); asyncio cut it only after them too, and its stop() raised
    TimeoutError, the shutdown outlasting drain_timeout + 2 s."""
    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 3.0)
    entered, release = threading.Event(), threading.Event()
    live = serve(lifecycle_app(entered, release), drain_timeout=1.0)
    silent = silent_websocket(live)
    try:
        request = Blocked(live, entered)
        stopper = Stopper(live.server)
        request.thread.join(10)
        cut_after = request.ended_at - stopper.began
        assert b"released" not in request.reply
        assert cut_after < 2.5, cut_after  # drain_timeout (1 s); it was 4 s and more
        stopper.join(20)
        assert stopper.error is None, repr(stopper.error)
        live.thread.join(1)  # stop() returned once the server had stopped
        assert not live.thread.is_alive()
        assert not live.server.is_ready()
    finally:
        release.set()
        silent.close()
