"""Hostile websocket clients on raw sockets, in both transports.

Frames are built by hand (masked unless the test says otherwise) so every
protocol violation reaches the server exactly as written.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest

from simple_http_server import App, WebsocketHandler, WebsocketSession

from ..conftest import LiveServer, small_send_buffer_listener
from .conftest import pool_threads, settle
from .wire import parse_responses, read_until_closed

Serve = Callable[..., LiveServer]
LIMIT = 4096


class Echo(WebsocketHandler):
    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        session.send(message)

    def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
        session.send_binary(message)


def ws_app() -> App:
    app = App()
    app.websocket_handler(endpoint="/ws")(type("EchoHandler", (Echo,), {}))

    @app.route("/")
    def index() -> str:
        return "ok"

    return app


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """One websocket frame as a client sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake(
    live: LiveServer, extra: bytes = b"", key: bool = True, version: bytes = b"13"
) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
    lines = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
    if key:
        lines += b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
    if version:
        lines += b"Sec-WebSocket-Version: " + version + b"\r\n"
    sock.sendall(lines + extra + b"\r\n")
    return sock


def open_ws(live: LiveServer) -> socket.socket:
    sock = handshake(live)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def read_frames(sock: socket.socket, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Server frames (opcode, payload) until the server closes the TCP connection."""
    data = read_until_closed(sock, timeout)
    frames = []
    pos = 0
    while pos + 2 <= len(data):
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        assert not data[pos + 1] & 0x80, "server frames must not be masked"
        pos += 2
        if size == 126:
            size, pos = struct.unpack("!H", data[pos : pos + 2])[0], pos + 2
        elif size == 127:
            size, pos = struct.unpack("!Q", data[pos : pos + 8])[0], pos + 8
        frames.append((opcode, data[pos : pos + size]))
        pos += size
    return frames


def close_code(sock: socket.socket) -> int:
    return close_frame(sock)[0]


def close_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The code and reason of the server's Close."""
    frames = read_frames(sock)
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes, frames
    return int(struct.unpack("!H", closes[0][:2])[0]), closes[0][2:]


# -- handshake ------------------------------------------------------------------------
def test_missing_key_gets_400(serve: Serve) -> None:
    with handshake(serve(ws_app()), key=False) as sock:
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [400]


def test_wrong_version_gets_426_with_supported_version(serve: Serve) -> None:
    with handshake(serve(ws_app()), version=b"8") as sock:
        sock.settimeout(5)
        answer = sock.recv(65536)
    response = parse_responses(answer)[0]
    assert response.status == 426
    assert response.header("sec-websocket-version") == b"13"


def test_upgrade_token_is_case_insensitive(serve: Serve) -> None:
    sock = open_ws(serve(ws_app()))  # "Upgrade: WebSocket"
    sock.close()


@pytest.mark.parametrize(("target", "status"), [(b"/", 200), (b"/ws", 404)])
def test_an_http_1_0_request_is_served_as_plain_http_despite_its_upgrade_header(
    serve: Serve, target: bytes, status: int
) -> None:
    """RFC 9110 7.8: a server must ignore an Upgrade header in an HTTP/1.0 request.  It
    gets the route's answer (404 at a websocket-only path), and the connection closes,
    as any HTTP/1.0 one.  Both transports refused the handshake (400, needs HTTP/1.1)."""
    live = serve(ws_app())
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(
            b"GET " + target + b" HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [status]
    if status == 200:
        assert responses[0].body == b"ok"


# -- frames ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("unmasked frame", frame(0x1, b"hi", masked=False), 1002),
        ("fragmented ping", frame(0x9, b"p", fin=False) + frame(0x0, b"q"), 1002),
        ("control frame over 125 bytes", frame(0x9, b"p" * 126), 1002),
        ("reserved opcode", frame(0x3, b"x"), 1002),
        ("continuation without start", frame(0x0, b"x"), 1002),
        ("invalid UTF-8 text", frame(0x1, b"\xff\xfe\xfd"), 1007),
        ("oversized message", frame(0x2, b"x" * (LIMIT + 1)), 1009),
        (
            "oversized fragmented message",
            b"".join(frame(0x2 if i == 0 else 0x0, b"x" * 1000, fin=False) for i in range(5))
            + frame(0x0, b"x", fin=True),
            1009,
        ),
    ],
)
def test_protocol_violation_closes_with_its_code(
    serve: Serve, name: str, payload: bytes, code: int
) -> None:
    live = serve(ws_app(), max_websocket_message_size=LIMIT)
    with open_ws(live) as sock:
        sock.sendall(payload)
        assert close_code(sock) == code, name
    with open_ws(live) as sock:  # and the server goes on serving
        sock.sendall(frame(0x1, b"still here"))
        sock.settimeout(5)
        assert sock.recv(64) == b"\x81\x0astill here"


def test_a_deflate_bomb_is_refused_without_inflating_it(serve: Serve) -> None:
    """200 MB of zeros compress to ~200 KB: the message limit must hold while inflating
    (1009 once the limit is passed), not be checked after the whole frame is inflated."""
    live = serve(ws_app(), max_websocket_message_size=LIMIT)
    squeezer = zlib.compressobj(wbits=-15)
    bomb = squeezer.compress(bytes(200 << 20)) + squeezer.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb.removesuffix(b"\x00\x00\xff\xff")
    sock = handshake(live, b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    with sock:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert b"permessage-deflate" in head.lower(), head
        tracemalloc.start()
        try:
            compressed = bytearray(frame(0x2, bomb))
            compressed[0] |= 0x40  # RSV1: a compressed message
            sock.sendall(bytes(compressed))
            assert close_frame(sock) == (1009, b"Message too big")  # as uncompressed
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MB allocated for a {LIMIT}-byte limit"
    with open_ws(live) as sock:  # and the server goes on serving
        sock.sendall(frame(0x1, b"still here"))
        sock.settimeout(5)
        assert sock.recv(64) == b"\x81\x0astill here"


def open_deflate_ws(live: LiveServer) -> tuple[socket.socket, bytes]:
    """A websocket that agreed on permessage-deflate; the bytes read after the 101."""
    sock = handshake(live, b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and b"permessage-deflate" in head.lower(), head
    return sock, rest


def deflated(squeezer: zlib._Compress, data: bytes) -> bytes:
    """``data`` compressed as one permessage-deflate message (RFC 7692 7.2.1)."""
    out = squeezer.compress(data) + squeezer.flush(zlib.Z_SYNC_FLUSH)
    return out.removesuffix(b"\x00\x00\xff\xff")


def deflate_bomb() -> bytes:
    """A compressed binary frame that inflates to 5 MB of zeros."""
    squeezer = zlib.compressobj(wbits=-15)
    bomb = bytearray(frame(0x2, deflated(squeezer, bytes(5 << 20))))
    bomb[0] |= 0x40  # RSV1: a compressed message
    return bytes(bomb)


def read_to_end(sock: socket.socket, data: bytes) -> bytes:
    """What the server sends until its end of output (a reset fails the test)."""
    sock.settimeout(5)
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(("bad", "code"), [("unmasked", 1002), ("bomb", 1009)])
def test_a_failed_connection_is_closed_without_a_reset_while_the_client_sends(
    serve: Serve, bad: str, code: int
) -> None:
    """The server stops reading once it fails the connection; closing with the client's
    input unread would reset it, and the client could lose the Close frame."""
    live = serve(ws_app(), max_websocket_message_size=LIMIT)
    sock, rest = open_deflate_ws(live)
    stop = threading.Event()

    def keep_sending() -> None:
        try:
            sock.sendall(frame(0x1, b"hi", masked=False) if bad == "unmasked" else deflate_bomb())
            deadline = time.monotonic() + 3
            while not stop.is_set() and time.monotonic() < deadline:
                sock.sendall(frame(0x1, b"x" * 1000))
                time.sleep(0.001)
        except OSError:
            pass

    sender = threading.Thread(target=keep_sending)
    sender.start()
    with sock:
        try:
            data = read_to_end(sock, rest)
        finally:
            stop.set()
            sender.join()
    assert data[0] == 0x88 and len(data) == 2 + data[1], data  # the whole Close, alone
    assert data[2:4] == struct.pack("!H", code), data


def read_messages(sock: socket.socket, rest: bytes, count: int) -> list[tuple[int, bytes]]:
    """``count`` server messages and control frames (opcode, payload), inflated."""
    inflater = zlib.decompressobj(-15)
    data, out, pos = bytearray(rest), [], 0
    deadline = time.monotonic() + 10
    while len(out) < count and time.monotonic() < deadline:
        if pos + 2 <= len(data):
            size, start = data[pos + 1] & 0x7F, pos + 2
            if size == 126:
                size, start = struct.unpack("!H", data[pos + 2 : pos + 4])[0], pos + 4
            if start + size <= len(data):
                head, payload = data[pos], bytes(data[start : start + size])
                assert head & 0x80, "the server sends unfragmented messages here"
                if head & 0x40:
                    payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
                out.append((head & 0x0F, payload))
                pos = start + size
                continue
        chunk = sock.recv(65536)
        assert chunk, out
        data += chunk
    return out


@pytest.mark.parametrize("limit", [LIMIT, 0])
@pytest.mark.parametrize(("opcode", "control"), [(0x1, 0x9), (0x2, 0x9), (0x1, 0xA), (0x2, 0xA)])
def test_a_control_frame_between_compressed_fragments_leaves_the_message_whole(
    serve: Serve, limit: int, opcode: int, control: int
) -> None:
    """RFC 6455 5.4: a Ping or Pong may come between the fragments of a message, and
    RFC 7692 6: only data messages are compressed.  wsproto took the control frame
    for the message's end: the next fragment was read as plain bytes (text failed
    with 1007, binary was delivered as deflate bytes) and the inflater lost its place."""
    live = serve(ws_app(), max_websocket_message_size=limit)
    squeezer = zlib.compressobj(wbits=-15)
    first, second = b"fragmented message " * 20, b"and the next one " * 20
    packed = deflated(squeezer, first)
    fragments = bytearray(frame(opcode, packed[:5], fin=False))
    fragments[0] |= 0x40  # RSV1 on the first fragment only
    then = bytearray(frame(opcode, deflated(squeezer, second)))  # same context (takeover)
    then[0] |= 0x40
    sock, rest = open_deflate_ws(live)
    with sock:
        sock.sendall(
            bytes(fragments) + frame(control, b"pp") + frame(0x0, packed[5:]) + bytes(then)
        )
        messages = read_messages(sock, rest, 3 if control == 0x9 else 2)
    expected = [(opcode, first), (opcode, second)]
    assert [m for m in messages if m[0] != 0xA] == expected
    if control == 0x9:
        assert (0xA, b"pp") in messages


@pytest.mark.parametrize("control", [0x9, 0xA], ids=["ping", "pong"])
def test_a_compressed_control_frame_fails_the_connection(serve: Serve, control: int) -> None:
    """RFC 7692 6.1: RSV1 on a control frame (never compressed) is a protocol error,
    even once permessage-deflate is agreed: 1002, not a pong nor silence."""
    live = serve(ws_app())
    sock, _ = open_deflate_ws(live)
    with sock:
        flagged = bytearray(frame(control, b"pp"))
        flagged[0] |= 0x40
        sock.sendall(bytes(flagged))
        assert close_code(sock) == 1002


def test_a_message_after_endless_empty_continuation_frames_is_whole(serve: Serve) -> None:
    """Their memory cost (none) is measured in tests/unit/test_ws_protocol.py."""
    live = serve(ws_app(), max_websocket_message_size=LIMIT)
    with open_ws(live) as sock:
        sock.sendall(frame(0x1, b"a", fin=False) + frame(0x0, b"", fin=False) * 20000)
        sock.sendall(frame(0x0, b"b", fin=True))
        sock.settimeout(10)
        data = b""
        while len(data) < 4:
            data += sock.recv(64)
        assert data == b"\x81\x02ab"


@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_a_message_of_tiny_fragments_costs_about_its_size(serve: Serve, opcode: int) -> None:
    """A piece held per fragment cost some 40 bytes besides its data (a text one 55):
    30,000 fragments of 2 bytes took 2 to 4 MB for a 60 KB message (a 16 MiB message
    sent so, some 400 MB)."""
    count, piece = 30_000, b"ab"
    live = serve(ws_app(), max_websocket_message_size=1 << 20, websocket_ping_interval=0)
    key = b"\0\0\0\0"  # a zero mask keeps the payload as it is: quick to build
    fragment = bytes([0x00, 0x82]) + key + piece
    with open_ws(live) as sock:
        sock.settimeout(30)
        tracemalloc.start()
        try:
            sock.sendall(bytes([opcode, 0x82]) + key + piece)
            for _ in range(count // 1000):
                sock.sendall(fragment * 1000)
            sock.sendall(bytes([0x80, 0x82]) + key + piece)
            size = 2 * (count + 2)
            data = b""
            while len(data) < size + 4:  # a 126-length header
                chunk = sock.recv(1 << 16)
                assert chunk, len(data)
                data += chunk
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert data[:4] == bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
    assert data.endswith(piece * 1000)
    assert peak < 1 << 20, f"{peak >> 10} KB allocated for a {size >> 10} KB message"


def server_frames(sock: socket.socket) -> list[tuple[bool, int, bytes]]:
    """(fin, opcode, payload) of every frame until the server closes the connection."""
    data = read_until_closed(sock)
    frames, pos = [], 0
    while pos + 2 <= len(data):
        fin, opcode, size = bool(data[pos] & 0x80), data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size, pos = struct.unpack("!H", data[pos : pos + 2])[0], pos + 2
        frames.append((fin, opcode, data[pos : pos + size]))
        pos += size
    return frames


def test_nothing_is_delivered_after_a_handler_failed_the_connection(serve: Serve) -> None:
    """RFC 6455 7.1.7: once failed (1011), the rest of what was read is not processed."""
    app = App()
    seen: list[str] = []

    @app.websocket_handler(endpoint="/ws")
    class Fragile(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            seen.append(message)
            if message == "boom":
                raise RuntimeError("handler bug")

    with open_ws(serve(app)) as sock:
        sock.sendall(frame(0x1, b"first") + frame(0x1, b"boom") + frame(0x1, b"after"))
        assert close_code(sock) == 1011
    assert seen == ["first", "boom"]


def test_a_message_that_cannot_be_framed_half_way_fails_the_connection(serve: Serve) -> None:
    """A piece that fails to encode after frames went out (a lone surrogate): the message
    can never be finished, so the connection fails with 1011; the next send must not be
    glued onto the broken message."""
    app = App()
    errors: list[str] = []

    @app.websocket_handler(endpoint="/ws")
    class Sender(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            try:
                session.send_text("abcdefgh\udcff" + "ijkl", chunk_size=4)
            except UnicodeEncodeError as exc:
                errors.append(type(exc).__name__)
            session.send_text("NEXT MESSAGE")  # dropped: the session is failed

    with open_ws(serve(app)) as sock:
        sock.sendall(frame(0x1, b"go"))
        frames = server_frames(sock)
    assert errors == ["UnicodeEncodeError"]
    assert frames[:2] == [(False, 0x1, b"abcd"), (False, 0x0, b"efgh")]
    assert [opcode for _, opcode, _ in frames[2:]] == [0x8]
    assert struct.unpack("!H", frames[2][2][:2])[0] == 1011


def check_stop_with_a_stuck_sender(
    serve: Serve, wrap: Callable[[socket.socket], socket.socket], **config: object
) -> None:
    """A handler thread blocked sending to a client that stopped reading (holding the
    session's lock) must not hold up ``stop()``: the session is cut, on_close runs."""
    app = App()
    closes: list[int] = []
    started = threading.Event()

    @app.websocket_handler(endpoint="/ws")
    class Flood(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            def flood() -> None:
                started.set()
                for _ in range(2000):  # 128 MB at most: the kernel buffers fill first
                    if session.is_closed:
                        return
                    try:
                        session.send_binary(b"x" * 65536)
                    except Exception:
                        return

            threading.Thread(target=flood, daemon=True).start()

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            closes.append(getattr(reason, "code", 0))

    live = serve(app, body_timeout=20.0, **config)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    sock = wrap(raw)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert sock.recv(12).startswith(b"HTTP/1.1 101")
    assert started.wait(5)
    time.sleep(1.0)  # the buffers are full: the sender is stuck (the client never reads)
    begun = time.monotonic()
    live.stop()
    took = time.monotonic() - begun
    sock.close()
    assert took < 4.0, took  # was up to 2 x body_timeout, and forever over TLS (asyncio: 5 s)
    assert closes and len(closes) == 1


def test_stop_is_not_held_up_by_a_stuck_sender(serve: Serve) -> None:
    check_stop_with_a_stuck_sender(serve, lambda sock: sock)


def test_a_handshake_that_ends_during_shutdown_is_closed_with_1001(serve: Serve) -> None:
    app = App()
    events: list[object] = []

    @app.websocket_handler(endpoint="/ws")
    class Slow(WebsocketHandler):
        def on_handshake(self, request: object) -> None:
            time.sleep(1.0)  # stop() is called meanwhile

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            events.append(getattr(reason, "code", 0))

    live = serve(app)
    sock = handshake(live)
    time.sleep(0.3)
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    with sock:
        data = b""
        while b"\r\n\r\n" not in data or (data.startswith(b"HTTP/1.1 101") and b"\x88" not in data):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 101"):
            sock.sendall(frame(0x8, struct.pack("!H", 1001)))  # as a client answers a Close
        data += read_until_closed(sock, timeout=8)
    stopper.join(15)
    assert not stopper.is_alive()
    head, _, rest = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 101 "):
        assert rest[:1] == b"\x88" and struct.unpack("!H", rest[2:4])[0] == 1001
        assert events == [1001]
    else:
        assert head.startswith(b"HTTP/1.1 503 "), head


def test_ping_flood_is_answered_with_backpressure(serve: Serve) -> None:
    """Pings sent without reading the pongs: the server stops reading (bounded memory).

    A server that buffered every pong would accept all 32 MiB of pings; one that
    stops reading once its pongs cannot be written makes the flooder block.
    """
    live = serve(ws_app())
    ping = frame(0x9, b"p" * 125)
    block = ping * 8192  # about 1 MiB
    limit = 32 * 1024 * 1024
    sent = 0
    with open_ws(live) as sock:
        sock.settimeout(2.0)
        try:
            while sent < limit:
                sock.sendall(block)
                sent += len(block)
        except TimeoutError:
            pass
        assert sent < limit, "the server read 32 MiB of pings without sending the pongs"
        sock.setblocking(False)
        pongs = 0
        deadline = time.monotonic() + 5
        while pongs < 100 and time.monotonic() < deadline:
            try:
                pongs += sock.recv(65536).count(b"\x8a\x7d")
            except BlockingIOError:
                time.sleep(0.01)
        assert pongs >= 100, "pings were not answered"
    with open_ws(live) as sock:
        sock.sendall(frame(0x1, b"alive"))
        sock.settimeout(5)
        assert sock.recv(64) == b"\x81\x05alive"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_disconnects_mid_frame_leak_nothing(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    live = serve(ws_app(), worker_threads=4)
    for _ in range(5):  # warm-up
        with open_ws(live) as sock:
            sock.sendall(frame(0x1, b"x"))
            sock.recv(64)
    threads, fds = settle(0, 0, timeout=1.0)
    pools = pool_threads()  # every server's pool of the process, the default one too
    with caplog.at_level(logging.WARNING):
        for i in range(100):
            sock = open_ws(live)
            sock.sendall(frame(0x2, b"y" * 1000)[: 100 + i])  # cut inside the frame
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        after = settle(threads, fds)
    assert after[0] <= threads, f"threads: {threads} before, {after[0]} after"
    assert after[1] <= fds, f"file descriptors: {fds} before, {after[1]} after"
    assert pool_threads() <= pools + 4  # at most this server's pool (worker_threads) more
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_client_that_stops_reading_is_dropped_after_body_timeout(serve: Serve) -> None:
    """A peer that takes no frames cannot hold the sender: it is cut off, on_close runs."""
    app = App()
    closed = threading.Event()

    class Flood(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            chunk = b"f" * (1024 * 1024)
            for _ in range(64):  # 64 MiB: far more than any socket buffer holds
                if session.is_closed:
                    return
                session.send_binary(chunk)

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            closed.set()

    app.websocket_handler(endpoint="/ws")(Flood)
    live = serve(app, body_timeout=1.0)
    with open_ws(live) as sock:
        sock.sendall(frame(0x1, b"go"))
        started = time.monotonic()
        assert closed.wait(10), "the server kept waiting for a client that reads nothing"
        assert time.monotonic() - started >= 0.9
        received = len(read_until_closed(sock, timeout=10))
    assert received < 64 * 1024 * 1024


class _Flood(WebsocketHandler):
    """Sends messages (128 MiB at most) while the session is open; on_close sets
    ``closed`` (given to a subclass made for each test)."""

    closed: threading.Event

    def on_close(self, session: WebsocketSession, reason: object) -> None:
        self.closed.set()


class _ThreadFlood(_Flood):
    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        for _ in range(2000):
            if session.is_closed:
                return
            session.send_binary(b"t" * 65536)


class _LargeFlood(_Flood):
    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        for _ in range(128):  # written in slices
            if session.is_closed:
                return
            session.send_binary(b"l" * (1024 * 1024))


class _CoroutineFlood(_Flood):
    async def on_text_message(self, session: WebsocketSession, message: str) -> None:
        for _ in range(2000):
            if session.is_closed:
                return
            session.send_binary(b"c" * 65536)  # queued: the session's writer thread sends it
            await session.drain()


@pytest.mark.parametrize("flood", [_ThreadFlood, _LargeFlood, _CoroutineFlood])
def test_a_client_that_stops_reading_is_dropped_after_one_body_timeout(
    serve: Serve, flood: type[_Flood]
) -> None:
    """A send the client takes nothing of fails after body_timeout: the threaded
    transport took two (or three) of them, its socket's kernel send timeout
    restarting after a send that the timeout cut short."""
    closed = threading.Event()
    app = App()
    app.websocket_handler(endpoint="/ws")(type("Flood", (flood,), {"closed": closed}))
    live = serve(app, body_timeout=2.0, websocket_ping_interval=0)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with upgraded(raw) as sock:
        sock.sendall(frame(0x1, b"go"))
        started = time.monotonic()
        assert closed.wait(10), "the server kept waiting for a client that reads nothing"
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3.5, elapsed  # 4 to 6 s before


class _TrickleFlood(_Flood):
    async def on_text_message(self, session: WebsocketSession, message: str) -> None:
        for _ in range(2000):
            if session.is_closed:
                return
            session.send(b"p" * 65536)  # never waits: the server keeps what is not taken
            await asyncio.sleep(0.05)


def read_slowly_until(sock: socket.socket, closed: threading.Event, seconds: float) -> None:
    """Read 4 KiB at most every 50 ms (80 KiB/s) until ``closed`` is set, the
    connection ends or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    try:
        while not closed.is_set() and time.monotonic() < deadline:
            if not sock.recv(4096):
                return
            time.sleep(0.05)
    except OSError:  # dropped
        pass


@pytest.mark.parametrize("flood", [_ThreadFlood, _LargeFlood, _CoroutineFlood, _TrickleFlood])
def test_a_client_slower_than_min_send_rate_is_dropped(serve: Serve, flood: type[_Flood]) -> None:
    """A client that reads a broadcast slowly held the threaded sender (a handler's
    thread, or the session's writer thread) for as long as it kept reading a little:
    below min_send_rate once min_send_rate_grace has passed, the session is dropped
    (on_close runs) in both transports, whether the sender waits for the client or not."""
    closed = threading.Event()
    app = App()
    app.websocket_handler(endpoint="/ws")(type("Flood", (flood,), {"closed": closed}))
    live = serve(
        app,
        listener=small_send_buffer_listener(),  # the server soon waits for the client
        body_timeout=10.0,  # never a stall: the rate drops it
        min_send_rate=256 * 1024,
        min_send_rate_grace=1.0,
        websocket_ping_interval=0,
    )
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with upgraded(raw) as sock:
        sock.sendall(frame(0x1, b"go"))
        started = time.monotonic()
        read_slowly_until(sock, closed, 8.0)
        assert closed.wait(5), "a client slower than min_send_rate was not dropped"
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5.0, elapsed


# -- keepalive pings --------------------------------------------------------------------
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def keepalive_app(closes: list[tuple[int, str]], pongs: list[bytes]) -> App:
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Quiet(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send(message)

        def on_pong_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            pongs.append(message)

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            closes.append((getattr(reason, "code", 0), getattr(reason, "reason", "")))

    return app


def upgraded(sock: socket.socket, path: str = "/ws") -> socket.socket:
    """Send the upgrade request for ``path`` on ``sock``; return it once the 101 head is read."""
    sock.sendall(UPGRADE.replace(b" /ws ", b" " + path.encode() + b" ", 1))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def frames_until(sock: socket.socket, wanted: tuple[int, bytes]) -> list[tuple[int, bytes]]:
    """Server frames (small ones) until ``wanted`` arrives."""
    data, frames = b"", []
    while wanted not in frames:
        chunk = sock.recv(4096)
        assert chunk, frames
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
            size = data[1] & 0x7F
            assert size < 126
            frames.append((data[0] & 0x0F, data[2 : 2 + size]))
            data = data[2 + size :]
    return frames


def check_unanswered_pings_close_1011(
    serve: Serve, wrap: Callable[[socket.socket], socket.socket], **config: object
) -> None:
    """A peer that completed the handshake, then reads and answers nothing (what a
    network cut looks like): pinged after the interval, closed with 1011 when the
    timeout passes too, and on_close runs."""
    closes: list[tuple[int, str]] = []
    live = serve(
        keepalive_app(closes, []),
        websocket_ping_interval=0.3,
        websocket_ping_timeout=0.3,
        **config,
    )
    sock = upgraded(wrap(socket.create_connection(("127.0.0.1", live.port), timeout=5)))
    try:
        opened = time.monotonic()
        while not closes and time.monotonic() - opened < 5:
            time.sleep(0.01)
        elapsed = time.monotonic() - opened
        frames = read_frames(sock)  # only now: the client read nothing until on_close ran
    finally:
        sock.close()
    assert closes == [(1011, "keepalive ping timeout")]
    assert 0.5 <= elapsed < 0.6 + 1.0, elapsed
    assert [opcode for opcode, _ in frames] == [0x9, 0x8], frames
    assert struct.unpack("!H", frames[1][1][:2])[0] == 1011


def test_a_peer_that_answers_no_ping_is_closed_with_1011(serve: Serve) -> None:
    check_unanswered_pings_close_1011(serve, lambda sock: sock)


@pytest.mark.parametrize(
    ("interval", "timeout"), [(0, 0.2), (0.2, 0)], ids=["no-pings", "no-ping-timeout"]
)
def test_keepalive_can_be_turned_off(serve: Serve, interval: float, timeout: float) -> None:
    """websocket_ping_interval=0: no pings at all; websocket_ping_timeout=0: pings,
    but a peer that never answers them is not closed."""
    closes: list[tuple[int, str]] = []
    live = serve(
        keepalive_app(closes, []),
        websocket_ping_interval=interval,
        websocket_ping_timeout=timeout,
    )
    with upgraded(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
        time.sleep(1.2)  # six intervals of 0.2 s, answering nothing
        sock.sendall(frame(0x1, b"still here"))
        frames = frames_until(sock, (0x1, b"still here"))
    pings = [opcode for opcode, _ in frames if opcode == 0x9]
    assert [opcode for opcode, _ in frames if opcode not in (0x1, 0x9)] == []  # no Close
    assert len(pings) == 0 if interval == 0 else len(pings) >= 2
    assert closes in ([], [(1006, "connection lost")])  # only our own close, afterwards


def test_pongs_of_the_servers_own_pings_do_not_reach_on_pong_message(serve: Serve) -> None:
    """Keepalive is invisible to the handler; an unsolicited pong (or one answering the
    application's own send_ping) still reaches on_pong_message."""
    closes: list[tuple[int, str]] = []
    pongs: list[bytes] = []
    live = serve(
        keepalive_app(closes, pongs), websocket_ping_interval=0.2, websocket_ping_timeout=0.5
    )
    with upgraded(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
        answered = 0
        data = b""
        while answered < 3:
            data += sock.recv(4096)
            while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                opcode, size = data[0] & 0x0F, data[1] & 0x7F
                payload, data = data[2 : 2 + size], data[2 + size :]
                assert opcode == 0x9, (opcode, payload)
                sock.sendall(frame(0xA, payload))  # the pong a browser sends
                answered += 1
        sock.sendall(frame(0xA, b"mine") + frame(0x1, b"sync"))
        frames_until(sock, (0x1, b"sync"))
    assert pongs == [b"mine"]
    assert closes in ([], [(1006, "connection lost")])


def test_keepalive_leaves_a_closing_handshake_to_its_own_timeout(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closed (1000) and the client never answers: the close timeout ends
    it with the server's code, not a keepalive 1011 on top."""
    from simple_http_server.transport import ws_glue

    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 1.0)
    app = App()
    closes: list[tuple[int, str]] = []

    @app.websocket_handler(endpoint="/ws")
    class Leaving(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            session.close("bye")

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            closes.append((getattr(reason, "code", 0), getattr(reason, "reason", "")))

    live = serve(app, websocket_ping_interval=0.1, websocket_ping_timeout=0.1)
    with upgraded(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
        started = time.monotonic()
        while not closes and time.monotonic() - started < 5:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        frames = read_frames(sock)
    assert closes == [(1000, "bye")]  # our code and reason, not "connection lost"
    assert 0.8 <= elapsed < 3.0, elapsed
    assert [opcode for opcode, _ in frames] == [0x8]  # the Close, no ping after it


def test_a_handler_that_is_behind_never_makes_its_peer_look_gone(serve: Serve) -> None:
    """The server stops reading while its handler works through a backlog (over 1 MiB
    queued in asyncio): the client's pongs wait unread in the kernel, which is no
    reason to close it with 1011.  It answers every ping; all its messages are handled."""
    closes: list[tuple[int, str]] = []
    handled = threading.Event()
    count = [0]
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Slow(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            time.sleep(0.002)  # behind: 1,500 messages take about 3 s
            count[0] += 1
            if count[0] == 1500:
                handled.set()

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            closes.append((getattr(reason, "code", 0), getattr(reason, "reason", "")))

    live = serve(app, websocket_ping_interval=0.3, websocket_ping_timeout=0.3)
    with upgraded(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
        message = frame(0x1, b"x" * 1000)
        sock.sendall(message * 1500)  # about 1.5 MB at once
        data, deadline = b"", time.monotonic() + 20
        while not handled.is_set() and not closes and time.monotonic() < deadline:
            sock.settimeout(0.05)
            try:
                data += sock.recv(4096)
            except TimeoutError:
                continue
            while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                opcode, size = data[0] & 0x0F, data[1] & 0x7F
                payload, data = data[2 : 2 + size], data[2 + size :]
                if opcode == 0x9:
                    sock.sendall(frame(0xA, payload))  # answered at once
        # Read before this client leaves: its leaving is a 1006 of its own.
        closed_while_connected = list(closes)
    assert handled.is_set(), (count[0], closes)
    assert closed_while_connected == []


# -- a client gone right after its handshake ------------------------------------------------
def gone_app(events: list[object], slow: str, go_on: threading.Event) -> App:
    """Records ``"open"``, the texts received and the close code; the callback named by
    ``slow`` waits until ``go_on`` is set (the client has left meanwhile)."""
    app = App()

    @app.route("/")
    def index() -> str:
        return "ok"

    class Recorder(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            events.append("open")
            if slow == "on_open":
                go_on.wait(5)

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            events.append(message)

        def on_close(self, session: WebsocketSession, reason: object) -> None:
            events.append(getattr(reason, "code", 0))

    class SlowHandshake(Recorder):
        def on_handshake(self, request: object) -> None:
            go_on.wait(5)

    class SlowAsyncHandshake(Recorder):
        async def on_handshake(self, request: object) -> None:
            for _ in range(500):  # (bounded: 5 s)
                if go_on.is_set():
                    return
                await asyncio.sleep(0.01)

    handlers = {"on_handshake": SlowHandshake, "async on_handshake": SlowAsyncHandshake}
    app.websocket_handler(endpoint="/ws")(handlers.get(slow, Recorder))
    return app


def slot_serves_within(
    live: LiveServer, wrap: Callable[[socket.socket], socket.socket], seconds: float
) -> bool:
    """True once a GET gets a 200 within ``seconds`` (at ``max_connections=1``, a server
    whose one slot is held answers 503)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with wrap(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                if read_until_closed(sock, 5).startswith(b"HTTP/1.1 200 "):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def shut_down(sock: socket.socket) -> None:
    """The client's end of input (FIN); it still reads."""
    sock.shutdown(socket.SHUT_WR)


def check_a_client_gone_after_the_handshake(
    serve: Serve,
    wrap: Callable[[socket.socket], socket.socket],
    leave: Callable[[socket.socket], None],
    sent: bytes = b"",
    texts: tuple[str, ...] = (),
    slow: str = "",
    **config: object,
) -> None:
    """A client sends its handshake and ``sent`` (the frames of ``texts``), then leaves
    (``leave``) before the 101 reaches it, or while the ``slow`` callback runs: as in the
    threaded transport, the session opens, gets the messages sent before the end of input,
    ends with 1006 at once and frees its connection.  Keepalive is off: nothing else would
    ever notice the client gone."""
    events: list[object] = []
    go_on = threading.Event()
    live = serve(
        gone_app(events, slow, go_on), max_connections=1, websocket_ping_interval=0, **config
    )
    with wrap(socket.create_connection(("127.0.0.1", live.port), timeout=5)) as sock:
        sock.sendall(UPGRADE + sent)
        leave(sock)
        if slow:
            time.sleep(0.2)  # the end of input reaches the server while the callback waits
        go_on.set()
        if leave is shut_down:  # the server answers, then closes at once
            assert read_until_closed(sock, 3.0).startswith(b"HTTP/1.1 101 ")
        # (A socket closed with unread input sends a reset, which may come before the
        # 101 is written: the TLS client's socket stays open, with the tickets unread.)
        deadline = time.monotonic() + 3.0  # the bug: never
        while not any(isinstance(e, int) for e in events) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert events == ["open", *texts, 1006]
    assert slot_serves_within(live, wrap, 3.0), "the connection was never released"


@pytest.mark.parametrize(
    ("leave", "texts", "sent"),
    [
        (shut_down, (), b""),
        (socket.socket.close, (), b""),
        (shut_down, ("one", "two"), frame(0x1, b"one") + frame(0x1, b"two")),
        (socket.socket.close, ("one",), frame(0x1, b"one")),
        (shut_down, (), frame(0x1, b"cut short")[:5]),
    ],
    ids=["fin", "close", "messages-fin", "message-close", "partial-frame-fin"],
)
def test_a_client_gone_right_after_the_handshake_is_closed_with_1006(
    serve: Serve, leave: Callable[[socket.socket], None], texts: tuple[str, ...], sent: bytes
) -> None:
    check_a_client_gone_after_the_handshake(serve, lambda sock: sock, leave, sent, texts)


@pytest.mark.parametrize("slow", ["on_handshake", "async on_handshake", "on_open"])
def test_a_client_gone_while_a_callback_runs_is_closed_with_1006(serve: Serve, slow: str) -> None:
    """The client's end of input arrives while ``on_handshake`` (a thread's or a
    coroutine's) or ``on_open`` still runs."""
    check_a_client_gone_after_the_handshake(
        serve, lambda sock: sock, shut_down, frame(0x1, b"early"), ("early",), slow
    )
