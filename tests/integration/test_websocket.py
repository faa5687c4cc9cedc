"""Websockets through real sockets, in both transports (websocket-client and raw frames)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from websocket import ABNF

from simple_http_server import (
    WEBSOCKET_MESSAGE_BINARY,
    WEBSOCKET_MESSAGE_PING,
    WEBSOCKET_MESSAGE_TEXT,
    WEBSOCKET_OPCODE_BINARY,
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
)
from simple_http_server.app import App

from ..conftest import LiveServer, live_server, ws_server

Serve = Callable[..., LiveServer]


def connect(live: LiveServer, path: str, **kwargs: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{live.port}{path}", timeout=10, **kwargs)


def close_frame(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read until the server's Close frame; its code and reason."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            data = frame.data
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            return code, data[2:].decode()
    raise AssertionError("no close frame")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


class Echo(WebsocketHandler):
    closes: list[WebsocketCloseReason]

    def on_open(self, session: WebsocketSession) -> None:
        session.send(f"open {session.request.path_values.get('name', '')}")

    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        if message == "bye":
            session.close("see you")
        elif message == "bye-silently":
            session.close()  # defect 23: no reason still sends a Close frame
        elif message == "pone":
            session.send_pone(b"old spelling")  # the original's name of send_pong
        elif message == "as-binary":
            session.send("bytes please", WEBSOCKET_OPCODE_BINARY)
        elif message == "chunked":
            session.send("abcdefghij", chunk_size=3)
        elif message == "ping-me":
            session.send_ping(b"srv")
        else:
            session.send(message)

    def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
        session.send_binary(message)

    def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> None:
        session.send(f"pong:{message.decode()}")

    def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
        self.closes.append(reason)


def echo_app() -> tuple[App, list[WebsocketCloseReason]]:
    app = App()
    closes: list[WebsocketCloseReason] = []
    handler = type("EchoHandler", (Echo,), {"closes": closes})
    app.websocket_handler(endpoint="/ws/{name}")(handler)
    return app, closes


def test_echo_text_binary_and_path_values(serve: Serve) -> None:
    app, _ = echo_app()
    ws = connect(serve(app), "/ws/bob")
    assert ws.recv() == "open bob"
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(b"\x00\x01\xff")
    assert ws.recv() == b"\x00\x01\xff"
    ws.send("é€😀")
    assert ws.recv() == "é€😀"
    ws.close()


def test_send_honours_opcode_and_chunk_size(serve: Serve) -> None:
    app, _ = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send("as-binary")
    opcode, data = ws.recv_data()
    assert (opcode, data) == (ABNF.OPCODE_BINARY, b"bytes please")
    ws.send("chunked")
    frames = []
    while True:
        frame = ws.recv_frame()  # type: ignore[no-untyped-call]
        frames.append(frame)
        if frame.fin:
            break
    assert [f.data for f in frames] == [b"abc", b"def", b"ghi", b"j"]
    assert frames[0].opcode == ABNF.OPCODE_TEXT
    assert all(f.opcode == ABNF.OPCODE_CONT for f in frames[1:])
    ws.close()


def test_continuation_frames_from_client(serve: Serve) -> None:
    app, _ = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send_frame(ABNF.create_frame("hel", ABNF.OPCODE_TEXT, fin=0))
    ws.ping(b"in-between")  # control frames may come between fragments
    ws.send_frame(ABNF.create_frame(b"lo ", ABNF.OPCODE_CONT, fin=0))
    ws.send_frame(ABNF.create_frame("wörld".encode(), ABNF.OPCODE_CONT, fin=1))
    assert ws.recv() == "hello wörld"
    ws.send_frame(ABNF.create_frame(b"\x01\x02", ABNF.OPCODE_BINARY, fin=0))
    ws.send_frame(ABNF.create_frame(b"\x03", ABNF.OPCODE_CONT, fin=1))
    assert ws.recv() == b"\x01\x02\x03"
    ws.close()


# "bye-silently": close() with no reason still sends a Close frame (defect 23).
@pytest.mark.parametrize(("message", "reason"), [("bye", "see you"), ("bye-silently", "")])
def test_server_initiated_close(serve: Serve, message: str, reason: str) -> None:
    app, closes = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send(message)
    assert close_frame(ws) == (1000, reason)
    ws.send_close(1000)
    wait_for(lambda: len(closes) == 1)
    assert closes[0].code == 1000
    ws.shutdown()  # type: ignore[no-untyped-call]


def test_send_pone_sends_a_pong(serve: Serve) -> None:
    app, _ = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send("pone")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"old spelling")
    ws.close()


def test_the_close_reply_echoes_the_client_code(serve: Serve) -> None:
    app, closes = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send_close(4002, b"leaving")
    assert close_frame(ws)[0] == 4002  # defect 22: the reply carries the status code
    wait_for(lambda: len(closes) == 1)
    assert closes[0].code == 4002


def test_client_close_code_reaches_on_close(serve: Serve) -> None:
    app, closes = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.close(status=4001, reason=b"client leaves")
    wait_for(lambda: len(closes) == 1)
    reason = closes[0]
    assert (reason.code, reason.reason) == (4001, "client leaves")
    assert reason.message == "Client asked to close connection."
    assert isinstance(reason, str)


def test_ping_pong_both_ways(serve: Serve) -> None:
    app, _ = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.ping(b"abc")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"abc")
    ws.send("ping-me")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PING, b"srv")
    ws.pong(b"srv")
    assert ws.recv() == "pong:srv"
    ws.close()


def test_keepalive_pings_keep_a_silent_but_responsive_client_connected(serve: Serve) -> None:
    """The client sends nothing but answers pings (websocket-client does so by itself):
    it stays connected across many intervals, and the pongs of the server's own
    pings never reach on_pong_message (Echo would answer each with a text)."""
    app, closes = echo_app()
    live = serve(app, websocket_ping_interval=0.2, websocket_ping_timeout=0.2)
    ws = connect(live, "/ws/quiet")
    try:
        assert ws.recv() == "open quiet"
        started = time.monotonic()
        seen = []
        while seen.count(ABNF.OPCODE_PING) < 6:
            opcode, _ = ws.recv_data_frame(control_frame=True)  # answers a ping itself
            seen.append(opcode)
        assert time.monotonic() - started >= 1.0  # five intervals and more, still open
        assert set(seen) == {ABNF.OPCODE_PING}
        ws.send("ping-me")  # the application's own ping: its pong does reach the handler
        assert ws.recv() == "pong:srv"
        ws.send("still here")
        assert ws.recv() == "still here"
        assert closes == []
    finally:
        ws.close()


def test_regexp_endpoint_and_request_details(serve: Serve) -> None:
    app = App()
    seen: list[WebsocketRequest] = []

    @app.websocket_handler(regexp="^/ws-reg/([a-z]+)/([0-9]+)$", singleton=False)
    class Reg:  # no base class
        def on_handshake(self, request: WebsocketRequest) -> Any:
            seen.append(request)
            return 0, {"X-Handshake": "yes"}

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            r = session.request
            session.send(f"{r.reg_groups}|{r.get_parameter('q')}|{r.cookies['c'].value}")

    live = serve(app)
    ws = connect(live, "/ws-reg/abc/42?q=1&q=2", header=["Cookie: c=v"])
    assert (ws.getheaders() or {})["x-handshake"] == "yes"
    ws.send("?")
    assert ws.recv() == "('abc', '42')|1|v"
    ws.ping(b"auto")  # no on_ping_message: answered anyway
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"auto")
    ws.close()
    request = seen[0]
    assert request.path == "/ws-reg/abc/42"
    assert request.parameters == {"q": ["1", "2"]} and request.parameter == {"q": "1"}
    assert request.query_string == "q=1&q=2"
    assert request.headers["upgrade"].lower() == "websocket"


@pytest.mark.parametrize("singleton", [True, False])
def test_singleton(serve: Serve, singleton: bool) -> None:
    app = App()

    @app.websocket_handler(endpoint="/ws/**", singleton=singleton)
    class Counter:
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(f"{id(self)}:{session.request.path_values['__path_wildcard']}")

    live = serve(app)
    answers = []
    for path in ("/ws/a/b", "/ws/c"):
        ws = connect(live, path)
        ws.send("x")
        answers.append(str(ws.recv()).split(":"))
        ws.close()
    assert [a[1] for a in answers] == ["a/b", "c"]
    assert (answers[0][0] == answers[1][0]) is singleton


def test_function_style_sync_and_async(serve: Serve) -> None:
    app = App()
    events: list[str] = []
    endpoint = "/ws-fun/{path_val}"

    @app.websocket_handshake(endpoint=endpoint)
    def handshake(request: WebsocketRequest) -> Any:
        return None if request.path_values["path_val"] != "no" else (403, {"X-Why": "no"})

    @app.websocket_open(endpoint=endpoint)
    async def opened(session: WebsocketSession) -> None:
        events.append("open")

    @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_TEXT)
    async def text(session: WebsocketSession, message: str) -> None:
        await asyncio.sleep(0)
        session.send(f"{session.request.path_values['path_val']}-{message}")

    @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_BINARY)
    def binary(session: WebsocketSession, message: bytes) -> None:
        session.send_binary(message[::-1])

    @app.websocket_close(endpoint=endpoint)
    def closed(session: WebsocketSession, reason: WebsocketCloseReason) -> None:
        events.append(f"close {reason.code}")

    live = serve(app)
    ws = connect(live, "/ws-fun/yes")
    ws.send("hi")
    assert ws.recv() == "yes-hi"
    ws.send_binary(b"abc")
    assert ws.recv() == b"cba"
    ws.ping(b"p")  # no ping function: a pong, not a crash (defect 25)
    assert ws.recv_data_frame(control_frame=True)[0] == ABNF.OPCODE_PONG
    ws.close()
    wait_for(lambda: "close 1000" in events)
    assert events[0] == "open"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(live, "/ws-fun/no")
    assert info.value.status_code == 403
    assert (info.value.resp_headers or {})["x-why"] == "no"


def test_function_style_ping_handler(serve: Serve) -> None:
    app = App()

    @app.websocket_message(endpoint="/p", message_type=WEBSOCKET_MESSAGE_PING)
    def ping(session: WebsocketSession, message: bytes) -> None:
        session.send(f"got ping {message.decode()}")

    ws = connect(serve(app), "/p")
    ws.ping(b"x")
    assert ws.recv() == "got ping x"
    ws.close()


def test_unknown_endpoint_is_404(serve: Serve) -> None:
    app, _ = echo_app()
    live = serve(app)
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(live, "/nothing-here")
    assert info.value.status_code == 404


def test_handshake_exception_is_500(serve: Serve) -> None:
    app = App()

    @app.websocket_handler(endpoint="/boom")
    class Boom(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            raise RuntimeError("secret detail")

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(serve(app), "/boom")
    assert info.value.status_code == 500
    assert b"secret detail" not in (info.value.resp_body or b"")


def test_message_over_limit_closes_1009(serve: Serve) -> None:
    app, closes = echo_app()
    ws = connect(serve(app, max_websocket_message_size=1024), "/ws/x")
    ws.recv()
    ws.send("a" * 1024)
    assert ws.recv() == "a" * 1024
    ws.send_frame(ABNF.create_frame(b"x" * 600, ABNF.OPCODE_BINARY, fin=0))
    ws.send_frame(ABNF.create_frame(b"x" * 600, ABNF.OPCODE_CONT, fin=1))
    assert close_frame(ws)[0] == 1009
    wait_for(lambda: len(closes) == 1)
    assert closes[0].code == 1009


def test_invalid_utf8_closes_1007(serve: Serve) -> None:
    app, closes = echo_app()
    ws = connect(serve(app), "/ws/x")
    ws.recv()
    ws.send_frame(ABNF.create_frame(b"ok \xff\xfe", ABNF.OPCODE_TEXT))
    assert close_frame(ws)[0] == 1007
    wait_for(lambda: len(closes) == 1)
    assert closes[0].code == 1007


# -- raw sockets ----------------------------------------------------------------
def raw_handshake(live: LiveServer, path: str, extra: str = "") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
            "Connection: keep-alive, Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    expected = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    if b" 101 " in head.split(b"\r\n")[0]:
        assert expected in head
    return sock, head + b"\r\n\r\n" + rest


def read_close_code(sock: socket.socket, data: bytes = b"") -> int:
    """Read server frames (small, unmasked) until EOF; the code of the Close frame."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    while data:
        length = data[1] & 0x7F
        assert length < 126, data
        if data[0] & 0x0F == 0x8:
            return int(struct.unpack("!H", data[2:4])[0])
        data = data[2 + length :]
    raise AssertionError("no close frame")


def test_unmasked_client_frame_closes_1002(serve: Serve) -> None:
    app, _ = echo_app()
    sock, head = raw_handshake(serve(app), "/ws/x")
    with sock:
        sock.sendall(b"\x81\x02hi")  # unmasked text frame
        assert read_close_code(sock, head.partition(b"\r\n\r\n")[2]) == 1002


def test_permessage_deflate_negotiated(serve: Serve) -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage
    from wsproto.extensions import PerMessageDeflate

    app, _ = echo_app()
    sock, head = raw_handshake(
        serve(app),
        "/ws/x",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    assert b"permessage-deflate" in head.lower()
    ext = PerMessageDeflate()
    ext.finalize(head.split(b"ermessage-deflate", 1)[1].split(b"\r\n")[0].decode().lstrip(";, "))
    client = Connection(ConnectionType.CLIENT, [ext], head.partition(b"\r\n\r\n")[2])
    text = "compress me " * 200
    with sock:
        sock.sendall(client.send(TextMessage(data=text)))
        received: list[str] = []
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            for event in client.events():
                if isinstance(event, TextMessage):
                    received.append(event.data)
            if len(received) < 2:
                client.receive_data(sock.recv(65536))
        assert received == ["open x", text]


def deflate_session(live: LiveServer, offers: str) -> tuple[socket.socket, Any, bytes]:
    """A raw websocket with ``offers`` as Sec-WebSocket-Extensions, and a wsproto
    client configured from the server's answer (no extension when it declined)."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.extensions import PerMessageDeflate

    sock, head = raw_handshake(live, "/ws/x", f"Sec-WebSocket-Extensions: {offers}\r\n")
    head, _, rest = head.partition(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    answer = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-extensions":
            answer = value.strip()
    extensions = []
    if answer:
        ext = PerMessageDeflate()
        ext.finalize(answer.decode().partition(";")[2])
        extensions.append(ext)
    return sock, Connection(ConnectionType.CLIENT, extensions, rest), answer


def echo_texts(sock: socket.socket, client: Any, texts: list[str]) -> list[str]:
    from wsproto.events import TextMessage

    received: list[str] = []
    for text in texts:
        sock.sendall(client.send(TextMessage(data=text)))
    deadline = time.monotonic() + 10
    while len(received) < len(texts) + 1 and time.monotonic() < deadline:
        for event in client.events():
            if isinstance(event, TextMessage):
                received.append(event.data)
        if len(received) < len(texts) + 1:
            data = sock.recv(65536)
            assert data, received
            client.receive_data(data)
    return received


@pytest.mark.parametrize(
    "offers",
    [
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; client_max_window_bits=99",
        # RFC 7692 7: unknown or repeated parameters, a value missing or where none goes
        "permessage-deflate; foo=bar",
        "permessage-deflate; x-unknown",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=12",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_no_context_takeover=yes",
        "permessage-deflate; client_max_window_bits=010",
    ],
)
def test_a_malformed_deflate_offer_is_declined(serve: Serve, offers: str) -> None:
    """A bad parameter declines the offer (no extension), never a 500 or a dropped socket.
    Unknown and repeated parameters, and missing or unexpected values, were accepted."""
    app, _ = echo_app()
    sock, client, answer = deflate_session(serve(app), offers)
    with sock:
        assert answer == b""
        assert echo_texts(sock, client, ["plain"]) == ["open x", "plain"]


def test_the_first_acceptable_of_several_deflate_offers_is_used(serve: Serve) -> None:
    """Only the accepted offer's parameters apply (a 9-bit window from a first offer
    used to stick while the answer named the last one: valid messages got 1007)."""
    app, _ = echo_app()
    offers = "permessage-deflate; client_max_window_bits=9, permessage-deflate"
    sock, client, answer = deflate_session(serve(app), offers)
    with sock:
        assert answer == b"permessage-deflate; client_max_window_bits=9"
        texts = ["compress me " * 300, "and me too, with the same context " * 300]
        assert echo_texts(sock, client, texts) == ["open x", *texts]
    sock, client, answer = deflate_session(
        serve(app), "x-unknown, permessage-deflate; client_max_window_bits=abc, permessage-deflate"
    )
    with sock:
        assert answer == b"permessage-deflate"
        assert echo_texts(sock, client, ["a" * 5000]) == ["open x", "a" * 5000]
    offers = "permessage-deflate; foo=bar, permessage-deflate; server_no_context_takeover"
    sock, client, answer = deflate_session(serve(app), offers)  # the valid one after it
    with sock:
        assert answer == b"permessage-deflate; server_no_context_takeover"
        assert echo_texts(sock, client, ["b" * 5000]) == ["open x", "b" * 5000]
    offers = 'permessage-deflate; client_max_window_bits="10"'  # a quoted value is valid
    sock, client, answer = deflate_session(serve(app), offers)
    with sock:
        assert answer == b"permessage-deflate; client_max_window_bits=10"
        assert echo_texts(sock, client, ["c" * 5000]) == ["open x", "c" * 5000]


_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
_V13 = "Sec-WebSocket-Version: 13\r\n"


@pytest.mark.parametrize(
    ("key_and_version", "status"),
    [
        (_KEY + "Sec-WebSocket-Version: 8\r\n", 426),
        (_V13, 400),  # no key
        (_KEY + _KEY + _V13, 400),  # RFC 6455 4.2.1: one key, not two
        ("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" + _V13, 400),  # 15 bytes, not 16
    ],
    ids=["version 8", "no key", "two keys", "short key"],
)
def test_bad_handshakes(serve: Serve, key_and_version: str, status: int) -> None:
    app, _ = echo_app()
    live = serve(app)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            (
                "GET /ws/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"{key_and_version}\r\n"
            ).encode()
        )
        answer = sock.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in answer


# -- streaming, threads, shutdown -----------------------------------------------
def test_binary_frame_streaming_20mb(serve: Serve) -> None:
    app = App()
    stats: dict[str, Any] = {"total": 0, "biggest": 0, "fins": 0, "messages": []}
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
                stats["fins"] += 1
                session.send(f"{stats['total']}:{digest.hexdigest()}")
            return None  # consumed: nothing is gathered

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            stats["messages"].append(len(message))

    ws = connect(serve(app), "/upload")  # default limit 16 MiB < 20 MB
    block = os.urandom(1024 * 1024)
    expected = hashlib.sha256()
    for i in range(20):
        expected.update(block)
        opcode = ABNF.OPCODE_BINARY if i == 0 else ABNF.OPCODE_CONT
        ws.send_frame(ABNF.create_frame(block, opcode, fin=int(i == 19)))
    assert ws.recv() == f"{20 * 1024 * 1024}:{expected.hexdigest()}"
    assert stats["fins"] == 1 and stats["messages"] == []
    assert stats["biggest"] <= 1024 * 1024  # delivered piece by piece
    ws.close()


def test_binary_frame_gathering(serve: Serve) -> None:
    app = App()

    @app.websocket_handler(endpoint="/gather")
    class Gather(WebsocketHandler):
        def on_binary_frame(
            self, session: WebsocketSession, fin: bool, frame_payload: bytes
        ) -> Any:
            return frame_payload != b"skip"

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(message)

    ws = connect(serve(app), "/gather")
    ws.send_binary(b"single")  # unfragmented binary works (defect 21)
    assert ws.recv() == b"single"
    ws.send_frame(ABNF.create_frame(b"a", ABNF.OPCODE_BINARY, fin=0))
    ws.send_frame(ABNF.create_frame(b"skip", ABNF.OPCODE_CONT, fin=0))
    ws.send_frame(ABNF.create_frame(b"b", ABNF.OPCODE_CONT, fin=1))
    assert ws.recv() == b"ab"
    ws.close()


def test_binary_frame_override_may_call_the_base_class(serve: Serve) -> None:
    """The original's base class had ``on_binary_frame`` (True: keep the frame); an override
    calling ``super()`` failed the session with 1011.  Inheriting it streams nothing."""
    app = App()
    frames: list[bytes] = []

    @app.websocket_handler(endpoint="/super")
    class CallsSuper(WebsocketHandler):
        def on_binary_frame(
            self, session: WebsocketSession, fin: bool = False, frame_payload: bytes = b""
        ) -> Any:
            frames.append(frame_payload)
            return super().on_binary_frame(session, fin, frame_payload)

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(b"got:" + message)

    @app.websocket_handler(endpoint="/inherits")
    class Inherits(WebsocketHandler):
        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(b"whole:%d" % len(message))

    live = serve(app, max_websocket_message_size=1000)
    ws = connect(live, "/super")
    ws.send_frame(ABNF.create_frame(b"ab", ABNF.OPCODE_BINARY, fin=0))
    ws.send_frame(ABNF.create_frame(b"c", ABNF.OPCODE_CONT, fin=1))
    assert ws.recv() == b"got:abc"
    assert frames == [b"ab", b"c"]
    ws.close()
    ws = connect(live, "/inherits")  # not streamed: gathered, and bounded by the limit
    ws.send_binary(b"x" * 1000)
    assert ws.recv() == b"whole:1000"
    ws.send_binary(b"x" * 1001)
    assert close_frame(ws)[0] == 1009


def test_send_from_other_threads_and_coroutines(serve: Serve, tmp_path: Any) -> None:
    app = App()
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(300_000))

    @app.websocket_handler(endpoint="/push")
    class Push(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            def worker() -> None:
                for i in range(20):
                    session.send(f"thread {i}")

            threading.Thread(target=worker).start()

        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(f"async {message}")
            session.send_file(str(path), chunk_size=50_000)

    ws = connect(serve(app), "/push")
    got = [ws.recv() for _ in range(20)]
    assert got == [f"thread {i}" for i in range(20)]
    ws.send("x")
    assert ws.recv() == "async x"
    assert ws.recv() == path.read_bytes()
    ws.close()


def random_file(tmp_path: Any, size: int) -> Any:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(size))
    return path


def on_text_app(endpoint: str, on_text_message: Callable[..., Any]) -> App:
    """An app whose handler at ``endpoint`` has only ``on_text_message``."""
    app = App()
    handler = type("OnText", (WebsocketHandler,), {"on_text_message": on_text_message})
    app.websocket_handler(endpoint=endpoint)(handler)
    return app


def test_a_streamed_file_keeps_its_place_before_later_sends_and_close(
    serve: Serve, tmp_path: Any
) -> None:
    path = random_file(tmp_path, 8 * 1024 * 1024)

    async def on_text_message(self: Any, session: WebsocketSession, message: str) -> None:
        session.send_file(str(path), chunk_size=256 * 1024)
        # A worker thread's send waits for the file (the loop stays free meanwhile).
        await asyncio.to_thread(session.send, "from a thread")
        session.send("after")
        session.close("done")

    ws = connect(serve(on_text_app("/file", on_text_message)), "/file")
    ws.send("go")
    time.sleep(0.3)  # the server's send buffer fills: the rest must wait for drains
    assert ws.recv() == path.read_bytes()
    assert [ws.recv(), ws.recv()] == ["from a thread", "after"]
    assert close_frame(ws) == (1000, "done")


def test_a_thread_sending_while_a_coroutine_streams_keeps_every_message_whole(
    serve: Serve, tmp_path: Any
) -> None:
    path = random_file(tmp_path, 4 * 1024 * 1024)

    async def on_text_message(self: Any, session: WebsocketSession, message: str) -> None:
        def chatter() -> None:
            for i in range(200):
                session.send(f"t{i}")
                time.sleep(0.0005)  # spread over the file's frames

        thread = threading.Thread(target=chatter)
        thread.start()
        session.send_file(str(path), chunk_size=4 * 1024)
        await asyncio.to_thread(thread.join)
        session.send("end")

    ws = connect(serve(on_text_app("/mix", on_text_message)), "/mix")
    ws.send("go")
    texts: list[str] = []
    files: list[bytes] = []
    while (message := ws.recv()) != "end":
        if isinstance(message, str):
            texts.append(message)
        else:
            files.append(message)
    assert files == [path.read_bytes()]
    assert texts == [f"t{i}" for i in range(200)]
    ws.close()


def test_close_from_a_thread_waits_for_a_streaming_file(serve: Serve, tmp_path: Any) -> None:
    path = random_file(tmp_path, 24 * 1024 * 1024)  # more than the socket buffers take

    async def on_text_message(self: Any, session: WebsocketSession, message: str) -> None:
        session.send_file(str(path), chunk_size=64 * 1024)
        await asyncio.to_thread(session.close, "done")

    ws = connect(serve(on_text_app("/file", on_text_message)), "/file")
    ws.send("go")
    time.sleep(0.3)  # the server's buffer fills: the rest waits for drains
    assert ws.recv() == path.read_bytes()
    assert close_frame(ws) == (1000, "done")


def test_stop_closes_idle_websockets_with_1001(transport: str) -> None:

    app, closes = echo_app()
    started = time.monotonic()
    with live_server(app, transport) as live:
        sockets = [connect(live, "/ws/idle") for _ in range(3)]
        for ws in sockets:
            assert ws.recv() == "open idle"
        stopper = threading.Thread(target=live.stop)
        stopper.start()
        for ws in sockets:
            assert close_frame(ws)[0] == 1001
            ws.send_close(1001)
        stopper.join(15)
        assert not stopper.is_alive()
    assert time.monotonic() - started < 10
    wait_for(lambda: len(closes) == 3)
    assert {c.code for c in closes} == {1001}


def test_handler_exception_closes_1011(serve: Serve) -> None:
    app = App()
    closes: list[int | None] = []

    @app.websocket_handler(endpoint="/fail")
    class Failing(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            raise ValueError("bug")

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append(reason.code)

    ws = connect(serve(app), "/fail")
    ws.send("x")
    assert close_frame(ws)[0] == 1011
    wait_for(lambda: closes == [1011])


def _bytes_read_by(native_id: int) -> int:
    """Bytes the thread read through read(2) and the like (its ``rchar``: files,
    not sockets, which asyncio reads with recv)."""
    with open(f"/proc/self/task/{native_id}/io") as io:
        for line in io:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar")


def test_a_sync_handlers_file_queued_behind_the_loop_is_read_off_the_loop(
    serve: Serve, transport: str, tmp_path: Any
) -> None:
    """A worker thread's ``send_file`` that must wait for a message the loop is still
    sending keeps its place, and its file is read on the worker, not on the loop."""
    path = random_file(tmp_path, 16 * 1024 * 1024)  # more than the socket buffers take
    big = os.urandom(16 * 1024 * 1024)
    loop: dict[str, int] = {}

    class Mixed(WebsocketHandler):
        async def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            loop["id"] = threading.get_native_id()  # the event loop's thread (asyncio)
            loop["read"] = _bytes_read_by(loop["id"]) if transport == "asyncio" else 0
            session.send_binary(big, chunk_size=64 * 1024)  # the loop finishes it in a task

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send_file(str(path), chunk_size=64 * 1024)  # queued behind ``big``
            session.send("after")

    app = App()
    app.websocket_handler(endpoint="/mixed")(Mixed)
    ws = connect(serve(app), "/mixed")
    ws.send_binary(b"start")
    ws.send("go")
    time.sleep(0.5)  # the buffers fill; the worker's file waits for its turn
    assert ws.recv() == big
    assert ws.recv() == path.read_bytes()
    assert ws.recv() == "after"
    if transport == "asyncio" and os.path.isdir("/proc/self/task"):
        read_on_loop = _bytes_read_by(loop["id"]) - loop["read"]
        assert read_on_loop < 1024 * 1024, f"{read_on_loop} bytes read on the event loop"
    ws.close()


def test_a_large_file_from_a_sync_handler_is_never_buffered_whole(
    serve: Serve, transport: str, tmp_path: Any
) -> None:
    """A 64 MiB file sent by a worker thread (behind a message the loop is still
    sending) to a client that reads it frame by frame: the server holds a few of
    its frames at a time, never the file."""
    import tracemalloc

    path = random_file(tmp_path, 64 * 1024 * 1024)
    frame = 64 * 1024
    first = b"L" * (4 * 1024 * 1024)  # allocated before the count starts

    class Sender(WebsocketHandler):
        async def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(first, chunk_size=frame)

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send_file(str(path), chunk_size=frame)
            session.send("end")

    app = App()
    app.websocket_handler(endpoint="/big")(Sender)
    ws = connect(serve(app), "/big")
    tracemalloc.start()
    try:
        ws.send_binary(b"start")
        ws.send("go")
        time.sleep(0.3)  # the buffers fill; the file waits for its turn
        received = 0
        while True:
            got = ws.recv_frame()  # one frame at a time: the client holds one
            if got.opcode == ABNF.OPCODE_TEXT:
                assert got.data == b"end"
                break
            received += len(got.data)
            time.sleep(0.0002)  # a reader a bit slower than the server
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == len(first) + 64 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"{peak} bytes held at the peak"
    ws.close()


def test_files_and_texts_from_the_loop_and_threads_stay_whole_and_in_order(
    serve: Serve, tmp_path: Any
) -> None:
    """Messages from the loop, a handler thread streaming files and another thread
    interleave only between messages, each sender's in the order it sent them."""
    # (threaded transport: the "loop" callbacks run on the session's thread)
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(3 * 1024 * 1024 + i))
        files.append(path)
    big = [os.urandom(4 * 1024 * 1024 + i) for i in range(2)]
    loops: list[asyncio.AbstractEventLoop] = []
    ticked = threading.Event()
    TICKS = 400  # about a second: they go on while the files are streamed

    class Mixed(WebsocketHandler):
        async def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            loops.append(asyncio.get_running_loop())
            for i, data in enumerate(big):  # the loop streams these in tasks
                session.send(f"loop {i}")
                session.send_binary(data, chunk_size=32 * 1024)

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            async def ticker() -> None:  # the loop sends while the threads send theirs
                for i in range(TICKS):
                    session.send(f"tick {i}")
                    await asyncio.sleep(0.002)
                ticked.set()

            def other() -> None:
                for i in range(100):
                    session.send(f"other {i}")
                    time.sleep(0.001)

            asyncio.run_coroutine_threadsafe(ticker(), loops[0])
            thread = threading.Thread(target=other)
            thread.start()
            for i, path in enumerate(files):  # the first waits for ``big``: a turn
                session.send_file(str(path), chunk_size=16 * 1024)
                session.send(f"file {i}")
            thread.join()
            assert ticked.wait(10)
            session.send("end")

    app = App()
    app.websocket_handler(endpoint="/mixed")(Mixed)
    ws = connect(serve(app), "/mixed")
    ws.send_binary(b"start")
    ws.send("go")
    time.sleep(0.3)  # the buffers fill: later messages queue behind the loop's
    payloads = {data: f"big {i}" for i, data in enumerate(big)}
    payloads.update({path.read_bytes(): f"file data {i}" for i, path in enumerate(files)})
    got: list[str] = []
    while (message := ws.recv()) != "end":
        got.append(message if isinstance(message, str) else payloads.get(message, "torn"))
    ws.close()
    assert "torn" not in got
    assert [m for m in got if m.startswith(("loop", "big"))] == [
        "loop 0", "big 0", "loop 1", "big 1"
    ]  # fmt: skip
    assert [m for m in got if m.startswith("file")] == [
        x for i in range(3) for x in (f"file data {i}", f"file {i}")
    ]
    assert [m for m in got if m.startswith("other")] == [f"other {i}" for i in range(100)]
    assert [m for m in got if m.startswith("tick")] == [f"tick {i}" for i in range(TICKS)]


# -- a singleton handler is built once, off the event loop ---------------------
def room_app(built: list[object], init_seconds: float, entered: threading.Event) -> App:
    app = App()

    @app.websocket_handler(endpoint="/room")  # singleton by default
    class Room(WebsocketHandler):
        def __init__(self) -> None:
            entered.set()
            built.append(self)
            self.members: set[WebsocketSession] = set()
            time.sleep(init_seconds)  # any slow constructor

        def on_open(self, session: WebsocketSession) -> None:
            self.members.add(session)
            session.send(str(id(self)))

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    return app


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
def test_clients_connecting_at_once_share_one_singleton_handler(kind: str) -> None:
    built: list[object] = []
    with ws_server(kind, room_app(built, 0.3, threading.Event())) as port:
        handlers: list[str] = []
        start = threading.Barrier(5)

        def join() -> None:
            start.wait(5)
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/room", timeout=10)
            try:
                handlers.append(str(ws.recv()))
            finally:
                ws.close()

        threads = [threading.Thread(target=join) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
    assert len(handlers) == 5
    assert len(built) == 1 and set(handlers) == {str(id(built[0]))}


@pytest.mark.parametrize("kind", ["asyncio", "asgi"])
def test_a_slow_handler_constructor_does_not_hold_up_the_event_loop(kind: str) -> None:
    entered = threading.Event()
    with ws_server(kind, room_app([], 3.0, entered)) as port:
        opened: list[str] = []

        def join() -> None:
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/room", timeout=10)
            try:
                opened.append(str(ws.recv()))
            finally:
                ws.close()

        joining = threading.Thread(target=join)
        joining.start()
        assert entered.wait(5), "the handler was never built"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            started = time.monotonic()
            conn.request("GET", "/ping")
            assert conn.getresponse().read() == b"pong"
            took = time.monotonic() - started
        finally:
            conn.close()
        joining.join(10)
    assert took < 1.5, f"/ping waited {took:.1f}s for the constructor (3 s) on the loop"
    assert len(opened) == 1


def test_handshake_headers_are_encoded_as_http_answers_are(serve: Serve) -> None:
    """Headers ``on_handshake`` returns go out as an HTTP answer's: latin-1, an
    undecodable request byte (``%E9`` in a path value) as that byte (it was ``?``),
    control characters as spaces."""
    app = App()

    @app.websocket_handler(endpoint="/named/{name}")
    class Named(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            return {"X-Name": request.path_values["name"], "X-Split": "a\r\nInjected: 1"}

    live = serve(app)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"GET /named/caf%E9 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in head and time.monotonic() < deadline:
            head += sock.recv(4096)
    lines = head.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 101 ")
    assert b"X-Name: caf\xe9" in lines
    assert b"X-Split: a  Injected: 1" in lines
