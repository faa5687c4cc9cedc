"""Abrupt disconnects leak nothing; blocked controllers do not block others."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from simple_http_server import App, BytesBody

from ..conftest import LiveServer
from .conftest import BIG_RESPONSE, hostile_app, settle
from .wire import parse_responses, send_and_collect

Serve = Callable[..., LiveServer]
WORKERS = 4
ROUNDS = 150


def leak_app() -> App:
    app = App()
    barrier = threading.Barrier(WORKERS, timeout=5)

    @app.route("/")
    def index() -> str:
        return "ok"

    @app.route("/barrier")
    def wait_for_all() -> str:
        barrier.wait()  # WORKERS controllers at once: every pool thread exists
        return "met"

    @app.route("/echo", method="POST")
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/big")
    def big() -> bytes:
        return b"x" * BIG_RESPONSE

    return app


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def mid_head(port: int, rst: bool) -> None:
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Par")
    reset(sock) if rst else sock.close()


def mid_body(port: int, rst: bool) -> None:
    sock = connect(port)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n\r\n" + b"b" * 1000)
    reset(sock) if rst else sock.close()


def mid_response(port: int, rst: bool) -> None:
    sock = connect(port)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    received = 0
    while received < 64 * 1024:
        chunk = sock.recv(65536)
        assert chunk
        received += len(chunk)
    reset(sock) if rst else sock.close()


def no_request(port: int, rst: bool) -> None:
    sock = connect(port)
    reset(sock) if rst else sock.close()


ABUSES = [mid_head, mid_body, mid_response, no_request]


def warm_up(live: LiveServer) -> None:
    results: list[bytes] = []

    def call(path: str) -> None:
        conn = live.connection(timeout=10)
        conn.request("GET", path)
        results.append(conn.getresponse().read())
        conn.close()

    threads = [threading.Thread(target=call, args=("/barrier",)) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [b"met"] * WORKERS
    for abuse in ABUSES:
        for rst in (False, True):
            abuse(live.port, rst)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_abrupt_disconnects_leak_no_threads_or_fds(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    live = serve(leak_app(), worker_threads=WORKERS)
    warm_up(live)
    threads, fds = settle(0, 0, timeout=1.0)  # a moment for the warm-up to close
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for i in range(ROUNDS):
            for abuse in ABUSES:
                abuse(live.port, rst=i % 2 == 0)
        assert send_and_collect(
            live.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ).endswith(b"ok")
        after = settle(threads, fds)
    assert after[0] <= threads, f"threads: {threads} before, {after[0]} after"
    assert after[1] <= fds, f"file descriptors: {fds} before, {after[1]} after"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_blocked_controller_does_not_block_others(serve: Serve) -> None:
    hits: dict[str, int] = {}
    release = threading.Event()
    live = serve(hostile_app(hits, release))
    blocked = connect(live.port)
    try:
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 5
        while not hits.get("block") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hits.get("block") == 1
        for _ in range(20):
            data = send_and_collect(
                live.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            assert [r.body for r in parse_responses(data)] == [b"ok"]
        release.set()
        blocked.settimeout(5)
        assert blocked.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        release.set()
        blocked.close()
