"""Websocket closing handshakes, message limits and compressed uploads, on real sockets.

Frames are written by hand (or by a wsproto client, when compressed) so a message
and the client's Close can arrive in one read, or the Close while the handler works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from simple_http_server import WebsocketCloseReason, WebsocketHandler, WebsocketSession
from simple_http_server.app import App
from simple_http_server.config import ServerConfig
from simple_http_server.server import init_asgi_proxy
from simple_http_server.testing import TestClient

from ..conftest import LiveServer, asgi_server, live_server
from ..robustness.wire import read_until_closed

Serve = Callable[..., LiveServer]
Closes = list[tuple[int, str]]
KIB, MIB = 1024, 1024 * 1024


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


def rsv2(data: bytes) -> bytes:
    """The frame ``data`` with its reserved bit RSV2 set (a protocol error: 1002)."""
    return bytes([data[0] | 0x20]) + data[1:]


def open_ws(live: LiveServer, path: str, extensions: str = "") -> tuple[socket.socket, bytes]:
    """A raw websocket on ``path``; the bytes that came after the 101 head."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n".encode() if extensions else b""
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + offer + b"\r\n"
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, rest


def frames_until_closed(sock: socket.socket, rest: bytes, timeout: float = 5.0) -> list[Any]:
    """The server's frames until it closes the connection: ("text", str) per text
    message (its fragments joined), ("pong", payload) per Pong, ("close", code,
    reason) for its Close."""
    data = rest + read_until_closed(sock, timeout)
    out: list[Any] = []
    text = b""
    while data:
        fin, opcode, size, pos = data[0] & 0x80, data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, pos = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, pos = struct.unpack("!Q", data[2:10])[0], 10
        payload, data = data[pos : pos + size], data[pos + size :]
        if opcode == 0x8:
            out.append(("close", struct.unpack("!H", payload[:2])[0], payload[2:].decode()))
        elif opcode == 0xA:
            out.append(("pong", payload))
        elif opcode in (0x0, 0x1):
            text += payload
            if fin:
                out.append(("text", text.decode()))
                text = b""
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- the answer to the client's Close follows the replies to what came before it ------
def reply_app(closes: Closes, delay: float) -> App:
    """A handler per style that answers a text message after ``delay`` seconds."""
    app = App()

    def record(reason: WebsocketCloseReason) -> None:
        closes.append((reason.code, reason.reason))

    @app.websocket_handler(endpoint="/sync")
    class Sync(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            time.sleep(delay)
            session.send(f"answer to {message}")

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            record(reason)

    @app.websocket_handler(endpoint="/async")
    class Async:
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            await asyncio.sleep(delay)
            session.send(f"answer to {message}")

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            record(reason)

    @app.websocket_handler(endpoint="/chunked")
    class Chunked:  # a coroutine's message of several frames waits for its turn to be framed
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            await asyncio.sleep(delay)
            session.send(f"answer to {message} " * 20, chunk_size=7)

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            record(reason)

    return app


@pytest.mark.parametrize("path", ["/sync", "/async", "/chunked"])
@pytest.mark.parametrize("together", [True, False], ids=["one-read", "close-while-busy"])
def test_a_reply_goes_out_before_the_answer_to_the_clients_close(
    serve: Serve, path: str, together: bool
) -> None:
    """The client sends a message and then its Close, in one read or while the handler
    is still working on the message: the handler's answer reaches the client, then the
    Close answer (RFC 6455 5.5.1).  The asyncio transport, and the threaded one for a
    message and Close read together, answered the Close at once and dropped the reply."""
    closes: Closes = []
    live = serve(reply_app(closes, 0.0 if together else 0.3))
    sock, rest = open_ws(live, path)
    with sock:
        if together:
            sock.sendall(frame(0x1, b"query") + close_frame(1000, b"done"))
        else:
            sock.sendall(frame(0x1, b"query"))
            time.sleep(0.05)  # the handler is busy now
            sock.sendall(close_frame(1000, b"done"))
        frames = frames_until_closed(sock, rest)
    expected = "answer to query" if path != "/chunked" else "answer to query " * 20
    assert frames == [("text", expected), ("close", 1000, "done")]
    wait_for(lambda: bool(closes))
    assert closes == [(1000, "done")]


def test_what_on_open_sends_goes_out_before_the_answer_to_a_quick_close(serve: Serve) -> None:
    """The client closes while ``on_open`` is still running: what it sends is delivered
    before the Close answer (the asyncio transport answered at once and dropped it)."""
    app = App()
    events: list[Any] = []

    @app.websocket_handler(endpoint="/slow-open")
    class SlowOpen(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            time.sleep(0.3)
            session.send("opened")

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            events.append(message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            events.append((reason.code, reason.reason))

    sock, rest = open_ws(serve(app), "/slow-open")
    with sock:
        sock.sendall(frame(0x1, b"early") + close_frame(1000, b"quick"))
        frames = frames_until_closed(sock, rest)
    assert frames == [("text", "opened"), ("close", 1000, "quick")]
    wait_for(lambda: len(events) == 2)
    assert events == ["early", (1000, "quick")]


@pytest.mark.parametrize(
    ("tail", "code"),
    [(close_frame(1000, b"done"), 1000), (rsv2(frame(0x1, b"bad")), 1002)],
    ids=["client-close", "bad-input"],
)
def test_a_handler_that_does_not_return_does_not_hold_the_close_answer(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tail: bytes, code: int
) -> None:
    """The Close answer (or the Close failing the connection for bad input) waits for
    the handler, but CLOSE_TIMEOUT at most: then it goes out and the connection ends;
    ``on_close`` runs once the handler returned."""
    from simple_http_server.transport import ws_glue

    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 0.5)
    release = threading.Event()
    closes: Closes = []
    app = App()

    @app.websocket_handler(endpoint="/hang")
    class Hang(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            release.wait(10)
            session.send("too late")  # the session is closed by then: nothing is sent

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    sock, rest = open_ws(serve(app), "/hang")
    try:
        with sock:
            started = time.monotonic()
            sock.sendall(frame(0x1, b"hang") + tail)
            frames = frames_until_closed(sock, rest, timeout=4)
            elapsed = time.monotonic() - started
        assert [f[:2] for f in frames] == [("close", code)]
        assert 0.3 < elapsed < 3.0, elapsed
        assert closes == []  # the handler still runs
    finally:
        release.set()
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [code]


def test_the_test_client_delivers_a_reply_before_the_answer_to_its_close() -> None:
    """The TestClient runs the same session code: the reply, then the Close answer."""
    closes: Closes = []
    with TestClient(reply_app(closes, 0.0)).websocket_connect("/chunked") as ws:
        ws.send_text("query")
        ws.close(1000, "done")
        assert ws.receive_text() == "answer to query " * 20
        event = ws.receive()
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (1000, "done")
    assert closes == [(1000, "done")]


# -- what came before bad input is handled, then the connection fails ------------------
BAD_INPUT = {
    "reserved-bit": (rsv2(frame(0x1, b"bad")), 1002),
    "invalid-utf8": (frame(0x1, b"\xff\xfe"), 1007),
    "too-big": (frame(0x1, b"x" * 101), 1009),
}


@pytest.mark.parametrize("path", ["/sync", "/async", "/chunked"])
@pytest.mark.parametrize("bad", list(BAD_INPUT))
def test_a_message_read_with_bad_input_is_handled_before_the_connection_fails(
    serve: Serve, path: str, bad: str
) -> None:
    """A message, then bad input, in one read: the handler gets the message and its
    reply goes out, then the Close failing the connection (RFC 6455 7.1.7 forbids only
    handling what comes after the bad input: nothing after it is read), as when they
    arrive in two reads.  Both transports dropped the message: only its reply was missing
    on the wire, and ``on_close`` came without it."""
    closes: Closes = []
    payload, code = BAD_INPUT[bad]
    live = serve(reply_app(closes, 0.0), max_websocket_message_size=100)
    sock, rest = open_ws(live, path)
    with sock:
        sock.sendall(frame(0x1, b"query") + payload + frame(0x1, b"after"))
        frames = frames_until_closed(sock, rest)
    expected = "answer to query" if path != "/chunked" else "answer to query " * 20
    assert [f[:2] for f in frames] == [("text", expected), ("close", code)]
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [code]


@pytest.mark.parametrize("path", ["/sync", "/async", "/chunked"])
def test_bad_input_read_while_the_handler_works_waits_for_its_reply(
    serve: Serve, path: str
) -> None:
    """Bad input arrives while the handler still works on the message before it: the
    reply goes out, then the Close failing the connection (the asyncio transport failed
    the connection at once and dropped the reply)."""
    closes: Closes = []
    sock, rest = open_ws(serve(reply_app(closes, 0.3)), path)
    with sock:
        sock.sendall(frame(0x1, b"query"))
        time.sleep(0.05)  # the handler is busy now
        sock.sendall(rsv2(frame(0x1, b"bad")))
        frames = frames_until_closed(sock, rest)
    expected = "answer to query" if path != "/chunked" else "answer to query " * 20
    assert [f[:2] for f in frames] == [("text", expected), ("close", 1002)]
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [1002]


def failing_app(closes: Closes) -> App:
    """A text message makes the handler raise (1011); a binary one is kept by
    ``on_binary_frame`` (over a small limit: 1009)."""
    app = App()

    @app.websocket_handler(endpoint="/fail")
    class Fail(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            raise RuntimeError("handler bug")

        def on_binary_frame(self, session: WebsocketSession, fin: bool, payload: bytes) -> bool:
            return True

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    return app


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (frame(0x1, b"raise"), 1011, "Handler error"),
        (frame(0x2, b"x" * 200), 1009, "Message too big"),
    ],
    ids=["handler-error", "kept-piece-too-big"],
)
def test_a_failure_read_with_the_clients_close_is_the_code_on_close_gets(
    serve: Serve, message: bytes, code: int, reason: str
) -> None:
    """Handling a message fails the connection (a handler error, a kept piece over the
    limit) and the client's Close came in the same read: the server's Close carries the
    failure's code, and ``on_close`` gets that code too, as when the Close comes later.
    It got the client's code and reason, which the server never answered."""
    closes: Closes = []
    live = serve(failing_app(closes), max_websocket_message_size=100)
    sock, rest = open_ws(live, "/fail")
    with sock:
        sock.sendall(message + close_frame(1000, b"bye"))
        frames = frames_until_closed(sock, rest)
    assert frames == [("close", code, reason)]
    wait_for(lambda: bool(closes))
    time.sleep(0.1)  # (a second on_close would come now)
    assert closes == [(code, reason)]


# -- a Ping that came before the client's Close gets its Pong -------------------------
@pytest.mark.parametrize(
    "path", ["/sync", "/async"], ids=["WebsocketHandler.on_ping_message", "no-on_ping_message"]
)
@pytest.mark.parametrize("with_text", [False, True], ids=["ping-close", "ping-text-close"])
def test_a_ping_read_with_the_clients_close_is_answered(
    serve: Serve, path: str, with_text: bool
) -> None:
    """A Ping (and a message), then the client's Close, in one read: the Pong and the
    reply go out before the Close answer (RFC 6455 5.5.2: no Pong only for a Ping that
    came after a Close).  Both transports sent no Pong."""
    closes: Closes = []
    sock, rest = open_ws(serve(reply_app(closes, 0.0)), path)
    text = frame(0x1, b"query") if with_text else b""
    with sock:
        sock.sendall(frame(0x9, b"pp") + text + close_frame(1000, b"done"))
        frames = frames_until_closed(sock, rest)
    reply = [("text", "answer to query")] if with_text else []
    assert frames == [("pong", b"pp"), *reply, ("close", 1000, "done")]
    wait_for(lambda: bool(closes))
    assert closes == [(1000, "done")]


# -- the client's end of input (a half-close) comes after what it sent -----------------
@pytest.mark.parametrize("path", ["/sync", "/async", "/chunked"])
@pytest.mark.parametrize("together", [True, False], ids=["one-read", "end-while-busy"])
def test_replies_to_what_came_before_the_clients_end_of_input_go_out(
    serve: Serve, path: str, together: bool
) -> None:
    """A message and a Ping, then the client shuts its writing side (no Close): the
    reply and the Pong still go out, then the server closes and ``on_close`` reports
    the lost connection (1006) once.  The asyncio transport took the end of input at
    once and closed: the handler ran, but what it sent was dropped; the threaded one
    dropped a coroutine's message of several frames still waiting for its turn."""
    closes: Closes = []
    live = serve(reply_app(closes, 0.0 if together else 0.3))
    sock, rest = open_ws(live, path)
    with sock:
        sock.sendall(frame(0x1, b"query") + frame(0x9, b"pp"))
        if not together:
            time.sleep(0.05)  # the handler is busy now
        sock.shutdown(socket.SHUT_WR)
        frames = frames_until_closed(sock, rest)
    expected = "answer to query" if path != "/chunked" else "answer to query " * 20
    # (a Pong may go out ahead of a message still waiting for its turn to be framed)
    assert sorted(frames) == [("pong", b"pp"), ("text", expected)]
    wait_for(lambda: bool(closes))
    time.sleep(0.1)  # (a second on_close would come now)
    assert [c for c, _ in closes] == [1006]


def test_no_keepalive_ping_after_the_clients_end_of_input(serve: Serve) -> None:
    """The client half-closes while a handler works longer than the keepalive's ping
    interval and timeout: the server pings no peer that can answer nothing, so the reply
    goes out instead of a Close with 1011, and ``on_close`` gets 1006."""
    closes: Closes = []
    live = serve(reply_app(closes, 0.6), websocket_ping_interval=0.1, websocket_ping_timeout=0.1)
    sock, rest = open_ws(live, "/async")
    with sock:
        sock.sendall(frame(0x1, b"query"))
        sock.shutdown(socket.SHUT_WR)
        frames = frames_until_closed(sock, rest)
    assert frames == [("text", "answer to query")]
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [1006]


# -- a Close the client never answers ------------------------------------------------
def test_an_unanswered_server_close_reports_its_own_code_and_reason(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closes (4000 'srvbye') and the client never answers: after the close
    timeout ``on_close`` gets the server's code and reason (it said 'connection lost')."""
    from simple_http_server.transport import ws_glue

    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 0.5)
    closes: Closes = []
    app = App()

    @app.websocket_handler(endpoint="/leave")
    class Leave(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.close("srvbye", 4000)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    sock, rest = open_ws(serve(app), "/leave")
    with sock:
        sock.sendall(frame(0x1, b"leave"))
        assert frames_until_closed(sock, rest, timeout=4) == [("close", 4000, "srvbye")]
    wait_for(lambda: bool(closes))
    assert closes == [(4000, "srvbye")]


def long_reason_app(closes: Closes) -> App:
    """The text received is the reason of the session's close (4000)."""
    app = App()

    @app.websocket_handler(endpoint="/reason")
    class Reason(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.close(message, 4000)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    return app


@pytest.mark.parametrize("reason", ["\u00e9" * 100, "r" * 200], ids=["2-byte-chars", "ascii"])
def test_a_close_reason_too_long_for_the_frame_reaches_on_close_as_sent(
    serve: Serve, reason: str
) -> None:
    """A reason longer than a Close frame holds (123 bytes) is cut at a character
    boundary on the wire; ``on_close`` gets it as sent (it got the whole text)."""
    closes: Closes = []
    sock, rest = open_ws(serve(long_reason_app(closes)), "/reason")
    with sock:
        sock.sendall(frame(0x1, reason.encode()))
        time.sleep(0.1)  # the server's Close went out: this is its answer
        sock.sendall(close_frame(4000))
        frames = frames_until_closed(sock, rest)
    sent = reason.encode()[:123].decode("utf-8", "ignore")
    assert frames == [("close", 4000, sent)]
    wait_for(lambda: bool(closes))
    assert closes == [(4000, sent)]


def test_the_test_client_reports_a_long_close_reason_as_sent() -> None:
    closes: Closes = []
    with TestClient(long_reason_app(closes)).websocket_connect("/reason") as ws:
        ws.send_text("\u00e9" * 100)
        event = ws.receive()
    assert isinstance(event, CloseConnection) and event.reason == "\u00e9" * 61
    assert closes == [(4000, "\u00e9" * 61)]


def test_a_long_close_reason_reaches_on_close_as_sent_under_asgi() -> None:
    """Under ASGI the server cuts the reason on the wire: the session hands it the reason
    already cut, and ``on_close`` gets that (it got the whole text)."""
    closes: Closes = []
    reason = "\u00e9" * 100
    with asgi_server(init_asgi_proxy(app_conf=long_reason_app(closes))) as address:
        ws = websocket.create_connection(f"ws://127.0.0.1:{address.port}/reason", timeout=10)
        try:
            ws.send(reason)
            opcode, frame_ = ws.recv_data_frame()
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert frame_.data == struct.pack("!H", 4000) + ("\u00e9" * 61).encode()
        finally:
            ws.close()
        wait_for(lambda: bool(closes))
    assert closes == [(4000, "\u00e9" * 61)]


# -- 5. once the server sent its Close, the client's messages are not delivered ----------
def kick_app(events: list[Any], closed: threading.Event) -> App:
    """Every callback is recorded; the text ``kick`` closes the session with 4000."""
    app = App()

    class Kick(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            events.append(("text", message))
            if message == "kick":
                session.close("bye", 4000)

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            events.append(("binary", message))

        def on_ping_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            events.append(("ping", message))
            session.send_pong(message)

        def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            events.append(("pong", message))

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            events.append(("close", reason.code, reason.reason))
            closed.set()

    class KickFrames(Kick):
        def on_binary_frame(
            self, session: WebsocketSession, fin: bool = False, frame_payload: bytes = b""
        ) -> Any:
            events.append(("frame", fin, frame_payload))
            return True

    class KickAsync(Kick):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:  # type: ignore[override]
            Kick.on_text_message(self, session, message)

    app.websocket_handler(endpoint="/kick")(Kick)
    app.websocket_handler(endpoint="/kick-frames")(KickFrames)
    app.websocket_handler(endpoint="/kick-async")(KickAsync)
    return app


LATE = (
    frame(0x1, b"late text")
    + frame(0x2, b"late binary")
    + frame(0x2, b"part 1", fin=False)
    + frame(0x0, b"part 2")
    + frame(0x9, b"late ping")
    + frame(0xA, b"late pong")
)
KICKED = b"\x88\x05" + struct.pack("!H", 4000) + b"bye"  # the server's Close frame


@pytest.mark.parametrize("path", ["/kick", "/kick-frames", "/kick-async"])
@pytest.mark.parametrize("late", ["with-kick", "after-the-close"])
def test_nothing_the_client_sends_after_the_servers_close_is_delivered(
    serve: Serve, path: str, late: str
) -> None:
    """The handler closes (a kick); the client sends on, before answering the Close: its
    messages, frames, pings and pongs were delivered (for up to 5 s, ``is_closed`` True
    by then) where 0.22.x and naja-atra stopped reading.  They are dropped (no Pong is
    sent: none is due after our Close); ``on_close`` still comes with the client's answer,
    once, with the server's code and reason.  ``with-kick``: they came in the same read
    as the message that closes."""
    events: list[Any] = []
    closed = threading.Event()
    sock, rest = open_ws(serve(kick_app(events, closed), websocket_ping_interval=0), path)
    with sock:
        if late == "with-kick":
            sock.sendall(frame(0x1, b"kick") + LATE)
        else:
            sock.sendall(frame(0x1, b"kick"))
        data = rest
        while len(data) < len(KICKED):  # the handler sends nothing before its Close
            chunk = sock.recv(64)
            assert chunk, data
            data += chunk
        assert data[: len(KICKED)] == KICKED
        sock.sendall(LATE + close_frame(4000))
        assert frames_until_closed(sock, data[len(KICKED) :]) == []  # no Pong, nothing
        assert closed.wait(5)
    assert events == [("text", "kick"), ("close", 4000, "bye")]


def test_the_test_client_drops_what_comes_after_the_servers_close() -> None:
    """A message the client sent while the handler was closing the session (it could not
    know yet) is not delivered; the TestClient runs the same session code."""
    events: list[Any] = []
    closed = threading.Event()
    entered, proceed = threading.Event(), threading.Event()
    app = kick_app(events, closed)

    @app.websocket_handler(endpoint="/slow-kick")
    class SlowKick(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            events.append(("text", message))
            if message == "kick":
                entered.set()
                proceed.wait(5)
                session.close("bye", 4000)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            events.append(("close", reason.code, reason.reason))
            closed.set()

    ws = TestClient(app).websocket_connect("/slow-kick")
    kicker = threading.Thread(target=ws.send_text, args=("kick",))
    kicker.start()
    try:
        assert entered.wait(5)
        late = threading.Thread(target=ws.send_text, args=("late",))
        late.start()  # queued behind "kick", which the handler is still handling
        wait_for(lambda: bool(ws._to_server))
    finally:
        proceed.set()
    kicker.join(5)
    late.join(5)
    assert closed.wait(5)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    assert events == [("text", "kick"), ("close", 4000, "bye")]


# -- max_websocket_message_size=0: no bound, in every front end -----------------------
def echo_app() -> App:
    app = App()

    @app.websocket_handler(endpoint="/echo")
    class Echo(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(message)

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(message)

    return app


@contextlib.contextmanager
def unbounded_server(kind: str) -> Iterator[int]:
    if kind == "asgi":
        proxy = init_asgi_proxy(app_conf=echo_app(), max_websocket_message_size=0)
        with asgi_server(proxy) as address:
            yield address.port
    else:
        with live_server(echo_app(), kind, max_websocket_message_size=0) as live:
            yield live.port


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
def test_a_message_size_limit_of_0_is_no_bound(kind: str) -> None:
    """0 meant "nothing but empty messages" in our transports (1009 for any other),
    while ASGI and compressed messages took it as no bound; it is no bound everywhere."""
    with unbounded_server(kind) as port:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=10)
        try:
            ws.send("hello")
            assert ws.recv() == "hello"
            ws.send_binary(b"x" * 300_000)
            assert ws.recv() == b"x" * 300_000
        finally:
            ws.close()


def test_a_message_size_limit_of_0_is_no_bound_in_the_test_client() -> None:
    config = ServerConfig().with_changes(max_websocket_message_size=0)
    with TestClient(echo_app(), config=config).websocket_connect("/echo") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"x" * 300_000)
        assert ws.receive_bytes() == b"x" * 300_000


# -- compressed uploads streamed to on_binary_frame ----------------------------------
def deflate_client(live: LiveServer, path: str) -> tuple[socket.socket, Connection]:
    """A raw websocket that negotiated permessage-deflate, and its wsproto client."""
    sock, rest = open_ws(live, path, "permessage-deflate")
    extension = PerMessageDeflate()
    extension.finalize("")
    return sock, Connection(ConnectionType.CLIENT, [extension], rest)


def next_text(sock: socket.socket, client: Connection, timeout: float = 10.0) -> str:
    """The next text message, or ``close <code>`` when the server closes instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.events():
            if isinstance(event, TextMessage):
                return str(event.data)
            if isinstance(event, CloseConnection):
                return f"close {event.code}"
        data = sock.recv(65536)
        client.receive_data(data or None)
    raise AssertionError("no answer")


def upload_app(stats: dict[str, int], keep: bool) -> App:
    """``on_binary_frame`` consumes the pieces (or keeps them, ``keep``) and answers
    with the size and digest of what it got, and the largest piece."""
    app = App()
    digest = hashlib.sha256()

    @app.websocket_handler(endpoint="/upload")
    class Upload(WebsocketHandler):
        def on_binary_frame(
            self, session: WebsocketSession, fin: bool, frame_payload: bytes
        ) -> Any:
            digest.update(frame_payload)
            stats["total"] += len(frame_payload)
            stats["biggest"] = max(stats["biggest"], len(frame_payload))
            if fin:
                session.send(f"{stats['total']} {digest.hexdigest()}")
            return keep

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send(f"kept {len(message)}")

    return app


def test_a_compressed_upload_consumed_by_on_binary_frame_is_not_bound_by_the_limit(
    serve: Serve,
) -> None:
    """Streamed pieces that ``on_binary_frame`` consumes are not counted: with
    permessage-deflate the whole message was counted, and closed with 1009 past
    ``max_websocket_message_size``.  A frame that inflates far past the limit (8 MiB
    of zeros in 8 KiB) is handed on in pieces of at most the limit, never whole."""
    limit = 64 * KIB
    stats = {"total": 0, "biggest": 0}
    live = serve(upload_app(stats, keep=False), max_websocket_message_size=limit)
    noise, zeros = os.urandom(256 * KIB), bytes(8 * MIB)
    expected = hashlib.sha256(noise + zeros)
    sock, client = deflate_client(live, "/upload")
    with sock:
        wire = client.send(BytesMessage(data=noise, message_finished=False))
        wire += client.send(BytesMessage(data=zeros, message_finished=True))
        assert len(wire) < 300 * KIB
        tracemalloc.start()
        try:
            sock.sendall(wire)
            answer = next_text(sock, client)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert answer == f"{len(noise) + len(zeros)} {expected.hexdigest()}"
    assert stats["biggest"] <= limit
    assert peak < 4 * MIB, f"{peak >> 20} MiB allocated to stream 8 MiB in 64 KiB pieces"


def deflated(data: bytes) -> bytes:
    """``data`` compressed as one permessage-deflate message (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def rsv1(data: bytes) -> bytes:
    """The frame ``data`` marked compressed (RSV1)."""
    return bytes([data[0] | 0x40]) + data[1:]


@pytest.mark.parametrize(
    "second",
    [frame(0x2, b"\x00\x00"), frame(0x1, b"plain"), rsv1(frame(0x1, deflated(b"next")))],
    ids=["binary", "text", "compressed-text"],
)
def test_a_new_message_inside_a_compressed_one_is_a_protocol_error(
    serve: Serve, second: bytes
) -> None:
    """A compressed message left unfinished, then the first frame of another (RFC 6455
    5.4 forbids it): the connection fails with 1002, as without compression; it failed
    with 1007 (wsproto's extension inflated the new frame as the rest of the first)."""
    closes: Closes = []
    live = serve(reply_app(closes, 0.0))
    sock, rest = open_ws(live, "/sync", "permessage-deflate")
    with sock:
        first = rsv1(frame(0x1, deflated(b"query"), fin=False))
        sock.sendall(first + frame(0x9, b"pp") + second)
        frames = frames_until_closed(sock, rest)
    assert [f[:2] for f in frames] == [("pong", b"pp"), ("close", 1002)]
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [1002]


def test_messages_read_in_tiny_pieces_over_compression_follow_each_other(serve: Serve) -> None:
    """Messages, plain and compressed, in pieces of 3 bytes (a frame's header is read
    again when its mask key is split): each one is a new message, not one inside another."""
    closes: Closes = []
    live = serve(reply_app(closes, 0.0))
    sock, rest = open_ws(live, "/sync", "permessage-deflate")
    wire = frame(0x1, b"a" * 200) + rsv1(frame(0x1, deflated(b"b" * 300))) + frame(0x1, b"c")
    with sock:
        for start in range(0, len(wire), 3):
            sock.sendall(wire[start : start + 3])
        sock.sendall(close_frame(1000))
        extension = PerMessageDeflate()
        extension.finalize("")
        client = Connection(ConnectionType.CLIENT, [extension], rest)
        client.receive_data(read_until_closed(sock, 5.0))
    texts = [e.data for e in client.events() if isinstance(e, TextMessage)]
    assert texts == [f"answer to {'a' * 200}", f"answer to {'b' * 300}", "answer to c"]
    wait_for(lambda: bool(closes))
    assert [c for c, _ in closes] == [1000]


def test_a_compressed_bomb_kept_by_on_binary_frame_is_cut_at_the_limit(serve: Serve) -> None:
    """Pieces that ``on_binary_frame`` keeps count against the limit: 200 MB of zeros in
    one compressed frame end with 1009, without inflating more than a piece or two."""
    limit = 4 * KIB
    stats = {"total": 0, "biggest": 0}
    live = serve(upload_app(stats, keep=True), max_websocket_message_size=limit)
    sock, client = deflate_client(live, "/upload")
    with sock:
        bomb = client.send(BytesMessage(data=bytes(200 * MIB)))
        tracemalloc.start()
        try:
            sock.sendall(bomb)
            answer = next_text(sock, client)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert answer == "close 1009"
    assert stats["total"] <= 2 * limit
    assert peak < 8 * MIB, f"{peak >> 20} MB allocated for a {limit}-byte limit"


# -- close codes: only those RFC 6455 7.4.2 lets an endpoint send ---------------------
REFUSED_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000]
SENT_CODES = [1000, 1003, 1007, 1012, 1013, 1014, 3000, 4999]


def close_code_app(closes: Closes) -> App:
    """The text ``N`` closes the session with code N ('gw'), or answers the ValueError."""
    app = App()

    @app.websocket_handler(endpoint="/close-with")
    class CloseWith(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            try:
                session.close("gw", int(message))
            except ValueError as exc:
                session.send(f"refused: {exc}")

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    return app


@pytest.mark.parametrize("code", REFUSED_CODES)
def test_session_close_refuses_a_code_no_endpoint_may_send(serve: Serve, code: int) -> None:
    """1016-2999 (unassigned) went out, and a client (wsproto, a browser) failed the
    connection with 1002 instead of closing it (RFC 6455 7.4.2)."""
    closes: Closes = []
    live = serve(close_code_app(closes))
    sock, rest = open_ws(live, "/close-with")
    with sock:
        sock.sendall(frame(0x1, str(code).encode()) + close_frame(1000))
        frames = frames_until_closed(sock, rest)
    assert frames == [
        ("text", f"refused: {code} is not a close code an endpoint may send"),
        ("close", 1000, ""),
    ]
    ws = TestClient(close_code_app([])).websocket_connect("/close-with")
    ws.send_text(str(code))
    assert ws.receive_text() == f"refused: {code} is not a close code an endpoint may send"
    ws.close()


@pytest.mark.parametrize("code", SENT_CODES)
def test_session_close_sends_a_registered_or_application_code(serve: Serve, code: int) -> None:
    closes: Closes = []
    live = serve(close_code_app(closes))
    sock, rest = open_ws(live, "/close-with")
    with sock:
        sock.sendall(frame(0x1, str(code).encode()))
        data = rest
        while len(data) < 6:  # the server's Close: 2 + 2 + len("gw")
            chunk = sock.recv(64)
            assert chunk, data
            data += chunk
        sock.sendall(close_frame(code))
        assert frames_until_closed(sock, data) == [("close", code, "gw")]
    wait_for(lambda: bool(closes))
    assert closes == [(code, "gw")]
    ws = TestClient(close_code_app([])).websocket_connect("/close-with")
    ws.send_text(str(code))
    wait_for(lambda: ws.close_code is not None)
    assert (ws.close_code, ws.close_reason) == (code, "gw")


def test_a_clients_close_with_1014_is_answered_not_failed(serve: Serve) -> None:
    """1014 (Bad Gateway) is registered with IANA, but wsproto does not know it: the
    client's Close with it failed the connection with 1002."""
    closes: Closes = []
    live = serve(close_code_app(closes))
    sock, rest = open_ws(live, "/close-with")
    with sock:
        sock.sendall(close_frame(1014, b"upstream"))
        assert frames_until_closed(sock, rest) == [("close", 1014, "upstream")]
    wait_for(lambda: bool(closes))
    assert closes == [(1014, "upstream")]
    sock, rest = open_ws(live, "/close-with")
    with sock:  # its reason is checked as any other's: 1007 for one that is not UTF-8
        sock.sendall(close_frame(1014, b"\xff"))
        assert frames_until_closed(sock, rest)[0][:2] == ("close", 1007)
    sock, rest = open_ws(live, "/close-with")
    with sock:  # an unassigned code is still a protocol error
        sock.sendall(close_frame(1016))
        assert frames_until_closed(sock, rest)[0][:2] == ("close", 1002)
    test_closes: Closes = []
    ws = TestClient(close_code_app(test_closes)).websocket_connect("/close-with")
    ws.close(1014, "upstream")
    assert test_closes == [(1014, "upstream")]


def test_session_close_codes_under_asgi() -> None:
    """The same check under ASGI (the session's), and a registered code goes out."""
    proxy = init_asgi_proxy(app_conf=close_code_app([]))
    with asgi_server(proxy) as address:
        ws = websocket.create_connection(f"ws://127.0.0.1:{address.port}/close-with", timeout=10)
        try:
            ws.send("2000")
            assert ws.recv() == "refused: 2000 is not a close code an endpoint may send"
            ws.send("1014")
            opcode, frame_ = ws.recv_data_frame()
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert frame_.data == struct.pack("!H", 1014) + b"gw"
        finally:
            ws.close()


# -- generated sessions, judged by a wsproto client -----------------------------------
@st.composite
def client_session(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[str, Any]], int]:
    """Frames of a session (messages in fragments, compressed or not, Pings between
    fragments, then a Close or bad input), what the server must answer, its Close code."""
    wire: list[bytes] = []
    answers: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.text(max_size=30)).encode("utf-8", "replace")
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
        compressed = draw(st.booleans())
        body = deflated(data) if compressed else data
        if compressed:  # cut the compressed bytes instead
            cuts = sorted(c * len(body) // max(len(data), 1) for c in cuts)
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        for i, piece in enumerate(pieces):
            head = frame(0x1 if i == 0 else 0x0, piece, fin=i == len(pieces) - 1)
            wire.append(rsv1(head) if compressed and i == 0 else head)
            if i == len(pieces) - 1:
                answers.append(("text", "answer to " + data.decode()))
            if draw(st.integers(0, 3)) == 0:
                ping = draw(st.binary(max_size=8))
                wire.append(frame(0x9, ping))
                answers.append(("pong", ping))
    endings = ["close", *BAD_INPUT, "1005-on-the-wire", "new-message", "end-of-input"]
    ending = draw(st.sampled_from(endings))
    if ending == "end-of-input":  # a half-close: no Close either way, on_close gets 1006
        return wire, answers, 1006
    if ending == "close":
        wire.append(close_frame(4321, b"bye"))
        return wire, answers, 4321
    if ending == "1005-on-the-wire":
        wire.append(close_frame(1005))
        return wire, answers, 1002
    if ending == "new-message":  # a message begun (compressed or not), then another
        begun = frame(0x1, deflated(b"part"), fin=False)
        wire += [rsv1(begun) if draw(st.booleans()) else begun, frame(0x1, b"other")]
        return wire, answers, 1002
    payload, code = BAD_INPUT[ending]
    wire.append(payload)
    return wire, answers, code


def test_generated_sessions_are_answered_as_rfc_6455_says(transport: str) -> None:
    """Generated sessions over permessage-deflate, sent in pieces of every size: each
    message is answered and each Ping ponged in order, the Close carries the client's
    code or the one RFC 6455 7.4.1 gives the bad input (none after a half-close: 1006),
    ``on_close`` runs once with it."""
    closes: Closes = []
    with live_server(
        reply_app(closes, 0.0), transport, websocket_ping_interval=0, max_websocket_message_size=100
    ) as live:

        @settings(max_examples=60, deadline=None, derandomize=True, database=None)
        @given(client_session(), st.integers(1, 40))
        def check(session: tuple[list[bytes], list[tuple[str, Any]], int], size: int) -> None:
            wire, answers, code = session
            closes.clear()
            sock, rest = open_ws(live, "/sync", "permessage-deflate")
            data = b"".join(wire)
            with sock:
                for start in range(0, len(data), size):
                    sock.sendall(data[start : start + size])
                if code == 1006:
                    sock.shutdown(socket.SHUT_WR)
                received = rest + read_until_closed(sock, 5.0)
            extension = PerMessageDeflate()
            extension.finalize("")
            client = Connection(ConnectionType.CLIENT, [extension], received)
            got: list[tuple[str, Any]] = []
            for event in client.events():
                if isinstance(event, TextMessage):
                    got.append(("text", event.data))
                elif isinstance(event, Pong):
                    got.append(("pong", bytes(event.payload)))
                elif isinstance(event, CloseConnection):
                    got.append(("close", event.code))
            assert got == [*answers, *([("close", code)] if code != 1006 else [])]
            wait_for(lambda: bool(closes))
            assert [c for c, _ in closes] == [code]

        check()
