"""A ``CancelledError`` that reaches user code from a future something else cancelled
(a shared task cancelled elsewhere) is an error of its request or websocket session, as
any exception is: a 500 (logged), a 1011 Close.  The asyncio transport took it for the
request's own cancellation: no answer, no log line, and the connection stayed open for
good, whatever the idle, head and body timeouts, holding its ``max_connections`` slot.
Whatever a request lets out, its connection is closed then (the request task's
own cancellation): never left open without a deadline.

Python 3.10 cannot tell a task's cancellation from another ``CancelledError``
(``Task.cancelling()`` is 3.11's): there the connection is closed without an answer.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any

import pytest
import websocket
from websocket import ABNF

from simple_http_server import App, WebsocketCloseReason, WebsocketHandler, WebsocketSession
from simple_http_server.testing import TestClient

from ..conftest import LiveServer, LogRecords, UniformClient, live_server

Serve = Any
#: What the client waits at most; the bug left it waiting for good (8 s and more).
WAIT = 3.0
SHORT = {"idle_timeout": 1.0, "head_timeout": 1.0, "body_timeout": 1.0}
TELLS_CANCELS_APART = sys.version_info >= (3, 11)


async def cancelled_elsewhere() -> None:
    """Await a future that something else cancels meanwhile."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_soon(future.cancel)
    await future


def cancelled_app(closed: list[int]) -> App:
    app = App()

    @app.route("/ok")
    def ok() -> str:
        return "ok"

    @app.route("/cancelled-future")
    async def cancelled_future() -> str:
        await cancelled_elsewhere()
        return "never"

    @app.route("/self-cancel")
    async def self_cancel() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the task's own cancellation: nothing to answer on its loop
        await asyncio.sleep(5)
        return "never"

    @app.websocket_handler(endpoint="/ws")
    class Handler(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:  # type: ignore[override]
            if message == "cancel":
                await cancelled_elsewhere()
            session.send("echo " + message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closed.append(reason.code)

    return app


def raw_get(port: int, path: str) -> tuple[bytes, float]:
    """The first bytes answered to ``GET path`` (b"": closed without an answer; None
    never: a client still waiting after ``WAIT`` fails) and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        began = time.monotonic()
        try:
            data = sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"{path}: no answer and the connection still open after {WAIT} s")
        return data, time.monotonic() - began


@pytest.mark.skipif(not TELLS_CANCELS_APART, reason="Python 3.10 has no Task.cancelling()")
def test_a_future_cancelled_elsewhere_gets_a_500_in_every_front_end(
    make_any_client: Any, log_records: LogRecords
) -> None:
    client: UniformClient = make_any_client(cancelled_app([]), **SHORT)
    reply = client.get("/cancelled-future")
    assert reply.status == 500
    assert client.get("/ok").body == b"ok"
    messages = [r.getMessage() for r in log_records.records]
    assert "Error while serving GET /cancelled-future" in messages


def test_the_connection_is_answered_or_closed_at_once(transport: str) -> None:
    """Never left open: a 500 for a future cancelled elsewhere (3.11+); for the request
    task's own cancellation, asyncio closes the connection (the threaded transport ran
    the coroutine as a task of the shared loop: its cancellation is the request's
    error, a 500).  With ``max_connections=1`` the slot comes back each time."""
    with live_server(cancelled_app([]), transport, max_connections=1, **SHORT) as live:
        data, took = get_when_free(live.port, "/cancelled-future")
        if TELLS_CANCELS_APART or transport == "threaded":
            assert data.startswith(b"HTTP/1.1 500 ")
        else:
            assert data == b""
        assert took < 2.0, took
        data, took = get_when_free(live.port, "/self-cancel")
        if transport == "asyncio":
            assert data == b""
        else:
            assert data.startswith(b"HTTP/1.1 500 ")
        assert took < 2.0, took
        data, _ = get_when_free(live.port, "/ok")
        assert data.startswith(b"HTTP/1.1 200 "), data


def get_when_free(port: int, path: str) -> tuple[bytes, float]:
    """:func:`raw_get` once the only slot is free (the server sees a client's close a
    moment after it; the bug held the slot for good: a 503 every time)."""
    for _ in range(40):
        data, took = raw_get(port, path)
        if not data.startswith(b"HTTP/1.1 503 "):
            return data, took
        time.sleep(0.05)
    pytest.fail(f"{path}: the connection slot never came back")


@pytest.mark.skipif(not TELLS_CANCELS_APART, reason="Python 3.10 has no Task.cancelling()")
@pytest.mark.parametrize("front_end", ["dispatch", "threaded", "asyncio"])
def test_a_future_cancelled_elsewhere_in_a_websocket_callback_closes_with_1011(
    front_end: str, log_records: LogRecords
) -> None:
    """asyncio dropped the connection without a Close frame (``on_close``: 1006)."""
    closed: list[int] = []
    app = cancelled_app(closed)
    if front_end == "dispatch":
        with TestClient(app).websocket_connect("/ws") as ws:
            ws.send_text("cancel")
            deadline = time.monotonic() + WAIT
            while ws.close_code is None and time.monotonic() < deadline:
                try:
                    ws.receive(0.1)
                except TimeoutError:
                    pass
            code = ws.close_code
    else:
        with live_server(app, front_end, websocket_ping_interval=0) as live:
            code = ws_close_code(live)
    deadline = time.monotonic() + WAIT
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (code, closed) == (1011, [1011])
    messages = [r.getMessage() for r in log_records.records]
    assert any(m.startswith("Websocket handler ") and m.endswith(" failed") for m in messages)


def ws_close_code(live: LiveServer) -> int | None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.port}/ws", timeout=WAIT)
    try:
        ws.send("first")
        assert ws.recv() == "echo first"
        ws.send("cancel")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == ABNF.OPCODE_CLOSE
        return int.from_bytes(frame.data[:2], "big")
    finally:
        ws.close(timeout=0.2)
