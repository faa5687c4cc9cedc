"""Websocket output the client does not take, in both transports, on raw sockets.

A coroutine's ``send`` never waits for the client and never blocks an event
loop; ``max_send_backlog`` bounds what it leaves unsent (beyond, the session is
dropped), ``await session.drain()`` waits for the client instead.  A thread's
``send`` still waits (flow control), without holding up the session's reading
side, and a keepalive does not fail a client that reads a backlog slowly.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from simple_http_server import App, WebsocketCloseReason, WebsocketHandler, WebsocketSession
from simple_http_server import logger as shs_logger

from ..conftest import LiveServer, LogRecords, small_send_buffer_listener
from ..robustness.test_websocket_hostile import upgraded

Serve = Callable[..., LiveServer]
MIB = 1024 * 1024


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One masked client frame (small payloads)."""
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + masked


def open_ws(live: LiveServer, path: str, rcvbuf: int = 0) -> socket.socket:
    """A raw websocket client socket, after the 101 (``rcvbuf``: set before connecting)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", live.port))
    return upgraded(sock, path)


class SlowReader:
    """Reads server frames ``size`` bytes at a time with a ``pause`` after each read
    (a slow but steady client); answers pings as a browser does."""

    def __init__(self, sock: socket.socket, size: int = 8192, pause: float = 0.0) -> None:
        self.sock, self.size, self.pause = sock, size, pause
        self.buf = bytearray()
        self.pings = 0

    def _need(self, count: int) -> None:
        while len(self.buf) < count:
            chunk = self.sock.recv(self.size)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} bytes pending")
            self.buf += chunk
            if self.pause:
                time.sleep(self.pause)

    def frame(self) -> tuple[int, bytes]:
        """The next frame (opcode, payload), pings answered and skipped."""
        while True:
            self._need(2)
            opcode, size, start = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if size == 126:
                self._need(4)
                size, start = struct.unpack("!H", self.buf[2:4])[0], 4
            elif size == 127:
                self._need(10)
                size, start = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(start + size)
            payload = bytes(self.buf[start : start + size])
            del self.buf[: start + size]
            if opcode != 0x9:
                return opcode, payload
            self.pings += 1
            self.sock.sendall(frame(0xA, payload))


def get(live: LiveServer, path: str) -> tuple[int, bytes, float]:
    """GET ``path``: status, body and how long the answer took."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read(), time.monotonic() - started
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def payloads(count: int, size: int) -> list[bytes]:
    return [bytes([i]) * size for i in range(count)]


# -- a coroutine's sends never block an event loop --------------------------------------
def test_a_coroutine_flooding_a_client_that_reads_nothing_holds_up_no_other_coroutine(
    serve: Serve,
) -> None:
    """Threaded transport: async callbacks share one background loop.  A coroutine's
    sends to a client that reads nothing once blocked it (each up to body_timeout):
    an unrelated ``async def`` controller waited 15 s for its turn."""
    app = App()
    returned = threading.Event()

    @app.route("/fast")
    async def fast() -> str:
        return "fast"

    @app.websocket_handler(endpoint="/flood")
    class Flood(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str = "") -> None:
            for _ in range(32):
                session.send_binary(b"x" * MIB)
            returned.set()

    # (a backlog bound above what is sent: nothing is dropped, nothing waits either)
    live = serve(app, body_timeout=5.0, max_send_backlog=64 * MIB)
    with open_ws(live, "/flood", rcvbuf=4096) as sock:
        sock.sendall(frame(0x1, b"go"))
        time.sleep(0.3)
        status, body, took = get(live, "/fast")
        assert returned.wait(2), "session.send from a coroutine waited for the client"
    assert (status, body) == (200, b"fast")
    assert took < 2.0, took  # was 3 x body_timeout


# -- max_send_backlog ------------------------------------------------------------------
COUNT, SIZE, LIMIT = 8, 512 * 1024, MIB  # 4 MiB sent, 1 MiB allowed unsent


def sender_app(drain: bool, seen: dict[str, Any]) -> App:
    """``/send``: on "go", a coroutine sends COUNT messages of SIZE (awaiting
    ``drain()`` after each when ``drain``), then "done"; ``/echo`` echoes."""
    app = App()
    seen.update(closes=[], ids=[])

    @app.route("/")
    def index() -> str:
        return "ok"

    @app.websocket_handler(endpoint="/send")
    class Sender(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str = "") -> None:
            seen["ids"].append(session.id)
            for data in payloads(COUNT, SIZE):
                session.send_binary(data)
                if drain:
                    await session.drain()
            seen["closed"] = session.is_closed
            session.send("done")  # on a dropped session: does nothing, raises nothing
            seen["returned"] = True

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            seen["closes"].append(reason.code)

    @app.websocket_handler(endpoint="/echo")
    class Echo(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str = "") -> None:
            session.send(message)

    return app


def test_a_coroutine_past_max_send_backlog_drops_the_session(serve: Serve) -> None:
    """A client that reads nothing: the coroutine's sends pile up past the limit, the
    connection is dropped at once (not after body_timeout), a warning says which
    session and how much; on_close runs with 1006, later sends do nothing."""
    seen: dict[str, Any] = {}
    live = serve(sender_app(False, seen), body_timeout=10.0, max_send_backlog=LIMIT)
    records = LogRecords()
    shs_logger.add_handler(records)
    try:
        with open_ws(live, "/send", rcvbuf=4096) as sock:
            started = time.monotonic()
            sock.sendall(frame(0x1, b"go"))
            wait_for(lambda: bool(seen["closes"]))
            took = time.monotonic() - started
            sock.settimeout(5)
            received = 0
            while chunk := sock.recv(65536):  # the server dropped the connection
                received += len(chunk)
    finally:
        shs_logger.remove_handler(records)
    assert took < 5.0, took
    assert seen["closes"] == [1006]
    assert seen["returned"] and seen["closed"]
    assert received < COUNT * SIZE
    warnings = [r.getMessage() for r in records.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert seen["ids"][0] in warnings[0] and "max_send_backlog" in warnings[0]
    assert get(live, "/")[:2] == (200, b"ok")  # the server serves others
    with open_ws(live, "/echo") as sock:
        sock.sendall(frame(0x1, b"still here"))
        assert SlowReader(sock).frame() == (0x1, b"still here")


def test_max_send_backlog_0_bounds_nothing(serve: Serve) -> None:
    """``max_send_backlog=0`` turns the bound off (as for HTTP responses): the sends
    to a client that reads nothing all queue, the session stays open."""
    seen: dict[str, Any] = {}
    live = serve(sender_app(False, seen), body_timeout=10.0, max_send_backlog=0)
    with open_ws(live, "/send", rcvbuf=4096) as sock:
        sock.sendall(frame(0x1, b"go"))
        wait_for(lambda: bool(seen.get("returned")))
        time.sleep(0.2)
        assert seen["closed"] is False and seen["closes"] == []


def test_drain_lets_a_coroutine_send_to_a_slow_reader_without_a_drop(serve: Serve) -> None:
    """The same sender awaiting ``session.drain()`` between sends, to a client that
    reads slowly but steadily: every message arrives whole, nothing is dropped."""
    seen: dict[str, Any] = {}
    live = serve(sender_app(True, seen), body_timeout=10.0, max_send_backlog=LIMIT)
    records = LogRecords()
    shs_logger.add_handler(records)
    try:
        with open_ws(live, "/send", rcvbuf=32768) as sock:
            sock.sendall(frame(0x1, b"go"))
            reader = SlowReader(sock, 16384, 0.002)
            got = [reader.frame() for _ in range(COUNT + 1)]
            sock.sendall(frame(0x8, struct.pack("!H", 1000)))
            assert reader.frame()[0] == 0x8
    finally:
        shs_logger.remove_handler(records)
    assert got == [(0x2, data) for data in payloads(COUNT, SIZE)] + [(0x1, b"done")]
    assert seen["closed"] is False
    wait_for(lambda: bool(seen["closes"]))
    assert seen["closes"] == [1000]
    assert not [r for r in records.records if r.levelno >= logging.WARNING]


# -- threads: flow control without holding the session ---------------------------------
def test_a_stalled_thread_send_does_not_hold_up_the_reading_side(serve: Serve) -> None:
    """A thread's send waits for a client that stopped reading; meanwhile the client's
    Close is still read and on_close runs at once with its code (the session lock
    was held across the stalled write: on_close came after body_timeout, with 1006)."""
    app = App()
    closes: list[tuple[int | None, float]] = []
    stalled = threading.Event()

    @app.websocket_handler(endpoint="/ws")
    class Flood(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            def flood() -> None:
                for _ in range(64):
                    if session.is_closed:
                        return
                    stalled.set()
                    session.send_binary(b"f" * MIB)

            threading.Thread(target=flood, daemon=True).start()

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, time.monotonic()))

    live = serve(app, body_timeout=5.0)
    with open_ws(live, "/ws", rcvbuf=4096) as sock:
        assert stalled.wait(5)
        time.sleep(0.5)  # the socket buffers are full: the thread's send is stuck
        sent = time.monotonic()
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        wait_for(lambda: bool(closes), 10)
    code, when = closes[0]
    assert code == 1000
    assert when - sent < 2.0, when - sent  # was body_timeout (5 s)


# -- keepalive behind a backlog ----------------------------------------------------------
@pytest.mark.parametrize("sender", ["thread", "coroutine"])
def test_keepalive_spares_a_client_that_reads_a_backlog_slowly(serve: Serve, sender: str) -> None:
    """Pings wait behind megabytes of output that a slow client reads at its pace: its
    pongs come late, yet it is alive (it takes the output) and must not get a 1011."""
    app = App()
    closes: list[tuple[int | None, str]] = []
    data = payloads(4, MIB)
    tasks: list[Any] = []

    def send_all_from_a_thread(session: WebsocketSession) -> None:
        for item in data:
            session.send_binary(item)
        session.send("done")

    async def send_all_from_a_coroutine(session: WebsocketSession) -> None:
        for item in data:
            session.send_binary(item)
            await session.drain()
        session.send("done")

    class Sender(WebsocketHandler):
        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closes.append((reason.code, reason.reason))

    if sender == "thread":

        def on_text_message(self: Any, session: WebsocketSession, message: str = "") -> None:
            threading.Thread(target=send_all_from_a_thread, args=(session,), daemon=True).start()

    else:  # a task of the loop: the callback returns, the sends go on

        async def on_text_message(self: Any, session: WebsocketSession, message: str = "") -> None:
            tasks.append(asyncio.get_running_loop().create_task(send_all_from_a_coroutine(session)))

    Sender.on_text_message = on_text_message  # type: ignore[method-assign]
    app.websocket_handler(endpoint="/ws")(Sender)
    live = serve(app, websocket_ping_interval=0.2, websocket_ping_timeout=0.3, body_timeout=10.0)
    with open_ws(live, "/ws", rcvbuf=32768) as sock:
        sock.sendall(frame(0x1, b"go"))
        reader = SlowReader(sock, 8192, 0.004)  # about 2 MB/s: 4 MiB take 2 s
        got = []
        try:
            while (message := reader.frame()) != (0x1, b"done"):
                got.append(message)
        except EOFError:
            pass
        assert closes == [], closes
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))
    assert got == [(0x2, item) for item in data]
    wait_for(lambda: bool(closes))
    assert closes == [(1000, "")]


# -- a close that cannot be sent ----------------------------------------------------------
def test_an_unsendable_close_is_refused_at_once_and_the_session_goes_on(serve: Serve) -> None:
    """A close queued behind a coroutine's message and failing to frame (a lone
    surrogate in its reason) killed the threaded link's writer thread: nothing queued
    afterwards went out and ``drain()`` never returned.  ``close()`` now refuses a reason
    or a code that can never be sent (RFC 6455 7.4), at once, in every transport."""
    seen: dict[str, Any] = {}
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Closer(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send_binary(b"x" * (2 * MIB), chunk_size=64 * 1024)  # still going out
            refused = []
            for reason, code in (("bad\ud800", 1000), ("", 1005), ("", 999), ("", 5000)):
                try:
                    session.close(reason, code)
                except ValueError:
                    refused.append(code)
            seen["refused"] = refused
            session.send_binary(b"after")
            await session.drain()
            session.close("done", 4000)

    live = serve(app)
    reader = SlowReader(open_ws(live, "/ws", rcvbuf=4096))
    reader.sock.sendall(frame(0x1, b"go"))
    time.sleep(0.3)  # the coroutine has queued behind the first message meanwhile
    first = b""
    while len(first) < 2 * MIB:
        opcode, payload = reader.frame()
        first += payload
    assert reader.frame() == (0x2, b"after")
    opcode, payload = reader.frame()
    assert (opcode, payload[2:]) == (0x8, b"done")
    assert int.from_bytes(payload[:2], "big") == 4000
    assert seen["refused"] == [1000, 1005, 999, 5000]
    reader.sock.close()


def test_drain_waits_until_a_chunked_message_is_out(serve: Serve) -> None:
    """A coroutine's message sent in chunks is framed piece by piece when its turn
    comes; ``drain()`` returns only once all but 64 KiB of it went to the client, not
    while the rest of it still waits to be framed."""
    size = 8 * MIB
    seen: dict[str, Any] = {}
    app = App()

    @app.websocket_handler(endpoint="/chunked")
    class Chunked(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send_binary(b"c" * size, chunk_size=64 * 1024)
            await session.drain()
            seen["drained_at"] = time.monotonic()

    # Small kernel buffers on both sides (accepted sockets inherit the listener's
    # SO_SNDBUF), so what the client has not read is mostly in the server's hands.
    listener = small_send_buffer_listener()
    live = serve(app, listener=listener, body_timeout=10.0)
    with open_ws(live, "/chunked", rcvbuf=4096) as sock:
        sock.sendall(frame(0x1, b"go"))
        reader = SlowReader(sock, 16384, 0.001)
        progress: list[tuple[float, int]] = []
        received = 0
        while received < size:
            payload = reader.frame()[1]
            received += len(payload)
            progress.append((time.monotonic(), received))
    wait_for(lambda: "drained_at" in seen)
    at_drain = max((got for when, got in progress if when <= seen["drained_at"]), default=0)
    assert at_drain >= size - 512 * 1024, (at_drain, size)
