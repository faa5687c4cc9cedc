"""What ``WebsocketSession``'s send methods take and send, as in 0.22.x.

Real sockets in both transports (raw frames, so the opcode of every frame is seen,
and websocket-client), and the TestClient.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable

import pytest
import websocket

from simple_http_server import (
    WEBSOCKET_OPCODE_BINARY,
    WEBSOCKET_OPCODE_PING,
    WebsocketCloseReason,
    WebsocketException,
    WebsocketHandler,
    WebsocketSession,
)
from simple_http_server.app import App
from simple_http_server.testing import TestClient

from ..conftest import LiveServer
from .test_websocket_closing import close_frame, frame, frames_until_closed, open_ws, wait_for

Serve = Callable[..., LiveServer]
Action = Callable[[WebsocketSession], object]
Frame = tuple[bool, int, bytes]  # fin, opcode, payload
TEXT, CONT, BINARY, PING, PONG, CLOSE = 0x1, 0x0, 0x2, 0x9, 0xA, 0x8


class Frames:
    """The server's frames on a raw socket, read as they come."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.data = bytearray(rest)

    def _parse(self) -> Frame | None:
        data = self.data
        if len(data) < 2:
            return None
        size, pos = data[1] & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                return None
            size, pos = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                return None
            size, pos = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < pos + size:
            return None
        parsed = (bool(data[0] & 0x80), data[0] & 0x0F, bytes(data[pos : pos + size]))
        del data[: pos + size]
        return parsed

    def next(self, timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while (parsed := self._parse()) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no frame in time"
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            self.data += chunk
        return parsed

    def until_done(self) -> tuple[list[Frame], str]:
        """The frames before the handler's ``done:<outcome>`` text, and the outcome."""
        frames: list[Frame] = []
        while True:
            fin, opcode, payload = self.next()
            if fin and opcode == TEXT and payload.startswith(b"done:"):
                return frames, payload[5:].decode()
            frames.append((fin, opcode, payload))


def run_action(actions: dict[str, Action], session: WebsocketSession, name: str) -> None:
    """Run the action ``name``; tell its outcome (``ok``, or the error) in a text message."""
    try:
        actions[name](session)
        outcome = "ok"
    except Exception as exc:  # what the caller's code gets
        outcome = f"{type(exc).__name__}: {exc}"
    session.send(f"done:{outcome}")


def actions_app(actions: dict[str, Action], closes: list[int | None]) -> App:
    """``/sync`` and ``/async`` run the action a text message names."""
    app = App()

    @app.websocket_handler(endpoint="/sync")
    class Sync(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            run_action(actions, session, message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append(reason.code)

    @app.websocket_handler(endpoint="/async")
    class Async:
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            run_action(actions, session, message)

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append(reason.code)

    return app


def outcomes(live: LiveServer, path: str, names: list[str]) -> dict[str, tuple[list[Frame], str]]:
    """Run each action in turn on one session: the frames it sent and its outcome.  The
    session must stay open throughout, and close normally when the client closes."""
    sock, rest = open_ws(live, path)
    with sock:
        frames = Frames(sock, rest)
        out = {}
        for name in names:
            sock.sendall(frame(TEXT, name.encode()))
            out[name] = frames.until_done()
        sock.sendall(close_frame(1000))
        assert frames_until_closed(sock, bytes(frames.data)) == [("close", 1000, "")]
    return out


ALIVE: dict[str, Action] = {"alive": lambda s: s.send("still open")}


# -- 1. any other type is a TypeError, and nothing is sent ------------------------------
WRONG_TYPES: dict[str, Action] = {
    "send(5)": lambda s: s.send(5),  # type: ignore[arg-type]
    "send(1_000_000)": lambda s: s.send(1_000_000),  # type: ignore[arg-type]
    "send(True)": lambda s: s.send(True),  # type: ignore[arg-type]
    "send([104, 105])": lambda s: s.send([104, 105]),  # type: ignore[arg-type]
    "send({})": lambda s: s.send({}),  # type: ignore[arg-type]
    "send(3, BINARY)": lambda s: s.send(3, WEBSOCKET_OPCODE_BINARY),  # type: ignore[arg-type]
    "send(3, PING)": lambda s: s.send(3, WEBSOCKET_OPCODE_PING),  # type: ignore[arg-type]
    "send_text(5)": lambda s: s.send_text(5),  # type: ignore[arg-type]
    "send_binary(3)": lambda s: s.send_binary(3),  # type: ignore[arg-type]
    "send_binary([1, 2])": lambda s: s.send_binary([1, 2]),  # type: ignore[arg-type]
    "send_ping(4)": lambda s: s.send_ping(4),  # type: ignore[arg-type]
    "send_pong(4)": lambda s: s.send_pong(4),  # type: ignore[arg-type]
    "send_pone(4)": lambda s: s.send_pone(4),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_a_send_of_another_type_raises_type_error_and_sends_nothing(
    serve: Serve, path: str
) -> None:
    """``bytes(message)`` made 5 NUL bytes of ``send(5)`` (a megabyte of ``send(1_000_000)``),
    ``b"hi"`` of ``send([104, 105])``: they went out as binary messages.  0.22.x raised
    for ``send``; now every send method raises ``TypeError`` before anything is sent,
    and the session stays open (what the caller does with the error is its business)."""
    closes: list[int | None] = []
    live = serve(actions_app({**WRONG_TYPES, **ALIVE}, closes))
    got = outcomes(live, path, [*WRONG_TYPES, "alive"])
    method = {name: name.split("(")[0].replace("pone", "pong") for name in WRONG_TYPES}
    assert {name: (frames, outcome.split(" (")[0]) for name, (frames, outcome) in got.items()} == {
        **{
            name: ([], f"WebsocketTypeError: {method[name]}() takes str or bytes")
            for name in WRONG_TYPES
        },
        "alive": ([(True, TEXT, b"still open")], "ok"),
    }
    wait_for(lambda: bool(closes))
    assert closes == [1000]


# -- 0.22.x's WebsocketException ---------------------------------------------------------
def caught(action: Action, kind: type[Exception]) -> Action:
    """``action`` under ``except WebsocketException``, as 0.22.x code wrote it: it must
    be caught there, and be ``kind`` too."""

    def run(session: WebsocketSession) -> None:
        try:
            action(session)
        except WebsocketException as exc:
            assert isinstance(exc, kind), repr(exc)
            session.send(f"caught:{exc.reason}")

    return run


def missing_file(session: WebsocketSession) -> None:
    session.send_file("/nonexistent/simple-http-server-test")


CAUGHT: dict[str, Action] = {
    "send(5)": caught(lambda s: s.send(5), TypeError),  # type: ignore[arg-type]
    "send_binary(3)": caught(lambda s: s.send_binary(3), TypeError),  # type: ignore[arg-type]
    "send(opcode 3)": caught(lambda s: s.send(b"x", 3), ValueError),
    "send_file(missing)": caught(missing_file, FileNotFoundError),
}


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_what_0_22_raised_as_websocket_exception_is_caught_as_one(serve: Serve, path: str) -> None:
    """0.22.x raised ``WebsocketException`` for a message of another type and a file
    that is not there; code catching it ran nowhere here (there was no such name).  The
    send methods' errors are ``WebsocketException`` and the standard error alike."""
    closes: list[int | None] = []
    live = serve(actions_app({**CAUGHT, **ALIVE}, closes))
    got = outcomes(live, path, [*CAUGHT, "alive"])
    assert got == {
        "send(5)": ([(True, TEXT, b"caught:send() takes str or bytes (or bytearray, "
                     b"memoryview), not int")], "ok"),
        "send_binary(3)": ([(True, TEXT, b"caught:send_binary() takes str or bytes (or "
                            b"bytearray, memoryview), not int")], "ok"),
        "send(opcode 3)": ([(True, TEXT, b"caught:cannot send a message with opcode 3")], "ok"),
        "send_file(missing)": ([(True, TEXT, b"caught:File in /nonexistent/simple-http-server"
                                b"-test does not exist or is not accessible.")], "ok"),
        "alive": ([(True, TEXT, b"still open")], "ok"),
    }  # fmt: skip
    wait_for(lambda: bool(closes))
    assert closes == [1000]


def test_websocket_exception_is_importable_where_0_22_defined_it() -> None:
    from simple_http_server.websocket_request_handler import WebsocketException as Original

    assert Original is WebsocketException
    reason = WebsocketCloseReason("gone", 1000, "bye")
    exc = Original(reason=reason, graceful=True)
    assert (exc.reason, exc.is_graceful, str(exc)) == (reason, True, "gone")


# -- 4 and 6. what each method sends -----------------------------------------------------
SENT: dict[str, tuple[Action, list[Frame]]] = {
    # bytes go out as text by default, as in 0.22.x (0.22.x's signature: opcode=TEXT)
    "send(bytes)": (lambda s: s.send(b"raw"), [(True, TEXT, b"raw")]),
    "send(json bytes)": (
        lambda s: s.send(json.dumps({"a": 1}).encode()),
        [(True, TEXT, b'{"a": 1}')],
    ),
    "send(bytes, None)": (lambda s: s.send(b"n", None), [(True, TEXT, b"n")]),
    "send(bytearray)": (lambda s: s.send(bytearray(b"ba")), [(True, TEXT, b"ba")]),
    "send(memoryview)": (lambda s: s.send(memoryview(b"mv")), [(True, TEXT, b"mv")]),
    "send_text(bytes)": (lambda s: s.send_text(b"tb"), [(True, TEXT, b"tb")]),
    "send_text(utf-8 bytes)": (lambda s: s.send_text("é".encode()), [(True, TEXT, b"\xc3\xa9")]),
    # in frames of chunk_size bytes; a character cut by a frame boundary goes in the next
    "send(bytes, chunk_size)": (
        lambda s: s.send("héllo".encode(), chunk_size=2),
        [(False, TEXT, b"h"), (False, CONT, b"\xc3\xa9l"), (True, CONT, b"lo")],
    ),
    # binary: send_binary, or the BINARY opcode
    "send(bytes, BINARY)": (
        lambda s: s.send(b"\x00\xff", WEBSOCKET_OPCODE_BINARY),
        [(True, BINARY, b"\x00\xff")],
    ),
    "send(str, BINARY)": (
        lambda s: s.send("s", WEBSOCKET_OPCODE_BINARY),
        [(True, BINARY, b"s")],
    ),
    "send_binary(bytes)": (lambda s: s.send_binary(b"\x01\x02"), [(True, BINARY, b"\x01\x02")]),
    "send_binary(bytearray)": (
        lambda s: s.send_binary(bytearray(b"\x03")),
        [(True, BINARY, b"\x03")],
    ),
    "send_binary(memoryview)": (
        lambda s: s.send_binary(memoryview(b"abcd")[1:3]),
        [(True, BINARY, b"bc")],
    ),
    "send_binary(str)": (lambda s: s.send_binary("é"), [(True, BINARY, b"\xc3\xa9")]),
    "send_binary(bytes, chunk_size)": (
        lambda s: s.send_binary(b"\xff" * 5, chunk_size=2),
        [(False, BINARY, b"\xff\xff"), (False, CONT, b"\xff\xff"), (True, CONT, b"\xff")],
    ),
    # pings and pongs: a str is sent UTF-8 encoded (0.22.x did; it raised TypeError here)
    "send_ping(str)": (lambda s: s.send_ping("ps"), [(True, PING, b"ps")]),
    "send_pone(str)": (lambda s: s.send_pone("pôs"), [(True, PONG, "pôs".encode())]),
    "send_pong(str)": (lambda s: s.send_pong("po"), [(True, PONG, b"po")]),
    "send_ping(bytes)": (lambda s: s.send_ping(b"pb"), [(True, PING, b"pb")]),
    "send_ping(bytearray)": (lambda s: s.send_ping(bytearray(b"pa")), [(True, PING, b"pa")]),
    "send(str, PING)": (lambda s: s.send("op", WEBSOCKET_OPCODE_PING), [(True, PING, b"op")]),
    # a control frame's payload is cut at 125 bytes (RFC 6455 5.5)
    "send_pong(long str)": (lambda s: s.send_pong("x" * 200), [(True, PONG, b"x" * 125)]),
    "send_ping(long str)": (
        lambda s: s.send_ping("é" * 100),
        [(True, PING, ("é" * 100).encode()[:125])],
    ),
}


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_each_send_method_sends_what_0_22_sent(serve: Serve, path: str) -> None:
    """``send(bytes)`` and ``send_text(bytes)`` sent binary messages (0.22.x: text; a
    browser got a Blob instead of a string); ``send_ping("text")`` and
    ``send_pone("text")`` raised TypeError and closed the session with 1011."""
    closes: list[int | None] = []
    live = serve(actions_app({name: action for name, (action, _) in SENT.items()}, closes))
    got = outcomes(live, path, list(SENT))
    assert got == {name: (expected, "ok") for name, (_, expected) in SENT.items()}
    wait_for(lambda: bool(closes))
    assert closes == [1000]


def test_websocket_client_receives_bytes_sent_by_default_as_a_string(serve: Serve) -> None:
    """websocket-client's ``recv()`` gave ``b'raw'`` for ``session.send(b"raw")`` where
    0.22.x gave ``'raw'``."""
    payload = {"user": "zoé", "n": 1}
    actions: dict[str, Action] = {
        "bytes": lambda s: s.send(b"raw"),
        "json": lambda s: s.send(json.dumps(payload).encode()),
        "binary": lambda s: s.send_binary(b"raw"),
    }
    live = serve(actions_app(actions, []))
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.port}/sync", timeout=10)
    try:
        received = []
        for name in actions:
            ws.send(name)
            received.append(ws.recv())
            assert ws.recv() == "done:ok"
    finally:
        ws.close()
    assert received == ["raw", json.dumps(payload), b"raw"]
    assert json.loads(received[1]) == payload


# -- 6. bytes sent as text must be UTF-8 -------------------------------------------------
NOT_TEXT: dict[str, tuple[Action, int]] = {
    "send(b'\\xff\\xfe')": (lambda s: s.send(b"\xff\xfe"), 0),
    "send_text(cut character)": (lambda s: s.send_text(b"ok\xc3"), 2),
    "send(latin-1 bytes)": (lambda s: s.send("café".encode("latin-1")), 3),
    "send(bytes, chunk_size)": (lambda s: s.send(b"ok" * 100 + b"\xff", chunk_size=16), 200),
    "send(bytes past 64 KiB, chunk_size)": (
        lambda s: s.send(b"a" * 70_000 + b"\xff", chunk_size=4096),
        70_000,
    ),
    "send(bytes, chunk_size) cut at 64 KiB": (
        lambda s: s.send(b"a" * 65_535 + b"\xc3x", chunk_size=4096),
        65_535,
    ),
    "send_text(bytes, chunk_size)": (
        lambda s: s.send_text(b"\xc3\xa9" * 10 + b"\x80", chunk_size=4),
        20,
    ),
}


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_bytes_that_are_not_utf8_raise_value_error_before_anything_is_sent(
    serve: Serve, path: str
) -> None:
    """A text frame must be valid UTF-8 (RFC 6455 8.1: a client fails the connection
    otherwise): bytes that are not raise ``ValueError`` naming ``send_binary()``, before
    any frame goes out, and the session stays open.  A message in frames is checked
    first too, a coroutine's as well (its frames may go out later)."""
    closes: list[int | None] = []
    actions = {name: action for name, (action, _) in NOT_TEXT.items()}
    live = serve(actions_app({**actions, **ALIVE}, closes))
    got = outcomes(live, path, [*NOT_TEXT, "alive"])
    hint = "send other bytes with send_binary() or opcode=WEBSOCKET_OPCODE_BINARY"
    for name, (_, position) in NOT_TEXT.items():
        frames, outcome = got[name]
        assert frames == [], name
        assert outcome.startswith("ValueError: a text message must be valid UTF-8 ("), name
        assert outcome.endswith(f" at byte {position}): {hint}"), (name, outcome)
    assert got["alive"] == ([(True, TEXT, b"still open")], "ok")
    wait_for(lambda: bool(closes))
    assert closes == [1000]


def test_the_test_client_sees_the_same_messages() -> None:
    """The TestClient runs the same session code: text for bytes, the errors."""
    actions: dict[str, Action] = {
        "bytes": lambda s: s.send(b"raw"),
        "bytes across 64 KiB": lambda s: s.send(b"a" * 65_535 + "é".encode(), chunk_size=4096),
        "binary": lambda s: s.send_binary(b"\x00"),
        "ping": lambda s: s.send_ping("ps"),
        "not utf-8": lambda s: s.send(b"\xff"),
        "int": lambda s: s.send(5),  # type: ignore[arg-type]
    }
    closes: list[int | None] = []
    with TestClient(actions_app(actions, closes)).websocket_connect("/async") as ws:
        ws.send_text("bytes")
        assert ws.receive_text() == "raw"
        assert ws.receive_text() == "done:ok"
        ws.send_text("bytes across 64 KiB")
        assert ws.receive_text() == "a" * 65_535 + "é"
        assert ws.receive_text() == "done:ok"
        ws.send_text("binary")
        assert ws.receive_bytes() == b"\x00"
        assert ws.receive_text() == "done:ok"
        ws.send_text("ping")
        assert ws.receive_text() == "done:ok"  # the client answered the ping itself
        ws.send_text("not utf-8")
        assert ws.receive_text().startswith("done:ValueError: a text message must be valid")
        ws.send_text("int")
        assert (
            ws.receive_text()
            == "done:WebsocketTypeError: send() takes str or bytes (or bytearray, memoryview),"
            " not int"
        )
    assert closes == [1000]
