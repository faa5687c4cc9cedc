"""Abrupt disconnects leak nothing; blocked controllers do not block others."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from simple_http_server import App, BytesBody, RequestBodyReader
from simple_http_server.server import init_wsgi_proxy

from ..conftest import LiveServer, live_server, wsgi_server
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


def truncation_app(calls: list[str]) -> App:
    """A form, a ``BytesBody`` and both readers; ``calls`` records what ran to the end."""
    app = App()

    @app.route("/form", method="POST")
    def form(to: str = "", amount: str = "") -> str:
        calls.append(f"form {to} {amount}")
        return "done"

    @app.route("/bytes", method="POST")
    def raw(body: BytesBody) -> str:
        calls.append(f"bytes {bytes(body)!r}")
        return "done"

    @app.route("/reader", method="POST")
    def sync_reader(reader: RequestBodyReader) -> str:
        data = reader.read_blocking()
        calls.append(f"reader {data!r}")
        return "done"

    @app.route("/async-reader", method="POST")
    async def async_reader(reader: RequestBodyReader) -> str:
        data = await reader.read()
        calls.append(f"async-reader {data!r}")
        return "done"

    return app


@contextlib.contextmanager
def truncation_front_end(kind: str, app: App) -> Iterator[int]:
    if kind == "wsgi":
        with wsgi_server(init_wsgi_proxy(app_conf=app)) as address:
            yield address.port
    else:
        with live_server(app, kind) as live:
            yield live.port


@pytest.mark.parametrize("path", ["/form", "/bytes", "/reader", "/async-reader"])
@pytest.mark.parametrize("kind", ["threaded", "asyncio", "wsgi"])
def test_a_body_cut_short_by_the_client_is_never_taken_as_complete(kind: str, path: str) -> None:
    """The client sends 18 of its 23 declared bytes, then its FIN: under WSGI the
    controller used to run with ``amount=10`` instead of ``amount=1000000``."""
    calls: list[str] = []
    body = b"to=alice&amount=1000000"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode()
    with truncation_front_end(kind, truncation_app(calls)) as port:
        sock = connect(port)
        try:
            sock.sendall(head + body[:18])
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.") and answer.split(b" ")[1] == b"400", answer
    assert calls == []


def test_a_wsgi_body_read_the_client_resets_is_no_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A reset while the app read ``wsgi.input`` escaped as an ``OSError``: an error
    logged with its traceback (now a 400 that nobody reads, quietly)."""
    from simple_http_server import logger

    from ..conftest import LogRecords

    calls: list[str] = []
    body = b"to=alice&amount=1000000"
    head = (
        f"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode()
    records = LogRecords()
    logger.add_handler(records)
    try:
        with truncation_front_end("wsgi", truncation_app(calls)) as port:
            sock = connect(port)
            sock.sendall(head + body[:18])
            time.sleep(0.2)  # the app waits in its read
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset
            time.sleep(0.5)
        errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
    finally:
        logger.remove_handler(records)
    assert calls == []
    assert errors == []
    assert "Traceback" not in capfd.readouterr().err


def quiet_stream_app(events: list[str]) -> App:
    """Event streams that send one event, then wait for one that never comes: a sync
    generator (its wait bounded, as a sync step cannot be interrupted), an async one."""
    import asyncio

    app = App()

    @app.route("/sync")
    def sync_stream() -> Iterator[bytes]:
        def events_of() -> Iterator[bytes]:
            try:
                yield b"data: 1\n\n"
                time.sleep(1.0)  # a quiet source; the next piece is never sent
                yield b"data: 2\n\n"
                time.sleep(60)  # would hold the thread, were the stream not ended
            finally:
                events.append("sync finally")

        return events_of()

    @app.route("/async")
    def async_stream() -> object:
        async def events_of() -> object:
            try:
                yield b"data: 1\n\n"
                await asyncio.Event().wait()  # no event ever comes
            finally:
                events.append("async finally")

        return events_of()

    return app


def leave(port: int, path: str, how: str) -> None:
    """Ask for a stream, read its first event, then leave: a FIN (``shutdown``) or
    an RST."""
    sock = connect(port)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        received = b""
        while b"data: 1" not in received:
            chunk = sock.recv(4096)
            assert chunk
            received += chunk
        if how == "fin":
            sock.shutdown(socket.SHUT_WR)
    finally:
        reset(sock) if how == "rst" else sock.close()


def wait_for(events: list[str], expected: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while expected not in events and time.monotonic() < deadline:
        time.sleep(0.02)
    return expected in events


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_quiet_stream_whose_client_left_ends_without_its_next_piece(
    serve: Serve, kind: str, how: str
) -> None:
    """A quiet event stream whose client left (FIN or RST) was never closed: an async
    generator waiting for its next event kept its task (or its worker thread) and its
    connection slot, its ``finally`` never ran; a sync one ran a step more.  Now it
    ends at once (a sync step in progress ends first), and the server goes on."""
    events: list[str] = []
    live = serve(quiet_stream_app(events), worker_threads=1, max_connections=2)
    leave(live.port, f"/{kind}", how)
    # The async stream at once; the sync one after its step (1 s), never its second.
    assert wait_for(events, f"{kind} finally", 5.0), events
    for _ in range(3):  # one worker, two connections: none is held by the stream
        answer = send_and_collect(
            live.port, b"GET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 404 "), answer
    assert events == [f"{kind} finally"]


def test_a_pipelined_request_behind_a_stream_is_no_departure(serve: Serve) -> None:
    """Input after the request (the next one, pipelined) does not end the stream:
    only the client's EOF or a reset does."""
    app = App()

    @app.route("/stream")
    def stream() -> Iterator[bytes]:
        def pieces() -> Iterator[bytes]:
            yield b"one,"
            time.sleep(0.3)  # the next request arrives meanwhile
            yield b"two"

        return pieces()

    @app.route("/next")
    def next_one() -> str:
        return "next"

    live = serve(app)
    request = b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    sock = connect(live.port)
    try:
        sock.sendall(request)
        time.sleep(0.1)
        sock.sendall(last)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert [r.body for r in parse_responses(data)] == [b"one,two", b"next"]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_sync_stream_whose_client_left_closes_on_its_thread(serve: Serve, how: str) -> None:
    """A ``def`` controller's sync stream whose client left during a step ends after
    that step, and its ``finally`` runs once, on the thread of its controller and
    steps (where its ``threading.local`` state is), not on another pool thread."""
    events: list[str] = []
    app = App()
    local = threading.local()

    @app.route("/sync")
    def sync_stream() -> Iterator[bytes]:
        made_in = threading.get_ident()
        local.name = "mine"

        def events_of() -> Iterator[bytes]:
            try:
                yield b"data: 1\n\n"
                time.sleep(0.5)  # the client leaves meanwhile
                yield b"data: 2\n\n"
                time.sleep(60)  # would hold the thread, were the stream not ended
            finally:
                here = threading.get_ident() == made_in
                events.append(f"finally on its thread={here} local={local.__dict__}")

        return events_of()

    live = serve(app, worker_threads=4)
    leave(live.port, "/sync", how)
    expected = "finally on its thread=True local={'name': 'mine'}"
    assert wait_for_finally(events, 5.0), events
    assert events == [expected]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_an_async_stream_whose_client_left_mid_step_is_closed_after_it(
    serve: Serve, how: str
) -> None:
    """The client leaves while a step of an async stream runs and cannot take its
    cancellation (it blocks its loop): the step ends with a piece, then the stream is
    closed, its ``finally`` runs once.  In the threaded transport the worker saw the
    step running and left the close to the step's cancellation, which reached the
    background loop after the step ended: the stream stayed at its next piece, never
    closed (until the garbage collector found it)."""
    import asyncio

    events: list[str] = []
    mid_step = threading.Event()
    app = App()

    @app.route("/events")
    def events_route() -> object:
        async def events_of() -> object:
            try:
                yield b"data: 1\n\n"
                mid_step.set()
                time.sleep(0.5)  # the client leaves meanwhile
                yield b"data: 2\n\n"
                await asyncio.Event().wait()  # no event ever comes
            finally:
                events.append("finally")

        return events_of()

    live = serve(app, worker_threads=2)
    sock = connect(live.port)
    try:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while b"data: 1" not in received:
            chunk = sock.recv(4096)
            assert chunk
            received += chunk
        assert mid_step.wait(5)
        if how == "fin":
            sock.shutdown(socket.SHUT_WR)
    finally:
        reset(sock) if how == "rst" else sock.close()
    assert wait_for_finally(events, 5.0), events
    assert events == ["finally"]


def test_the_awaiting_finally_of_a_quiet_stream_left_by_its_client_runs_whole(
    serve: Serve,
) -> None:
    """The client's departure cancels a quiet async stream once: its ``finally``,
    which awaits, runs to its end (no second cancellation cuts it short)."""
    import asyncio

    events: list[str] = []
    app = App()

    @app.route("/events")
    def events_route() -> object:
        async def events_of() -> object:
            try:
                yield b"data: 1\n\n"
                await asyncio.Event().wait()  # no event ever comes
            finally:
                events.append("finally")
                await asyncio.sleep(0.2)  # a goodbye to a broker, say
                events.append("finally done")

        return events_of()

    live = serve(app)
    leave(live.port, "/events", "rst")
    assert wait_for(events, "finally done", 5.0), events
    assert events == ["finally", "finally done"]


def wait_for_finally(events: list[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a second close would show by now
    return bool(events)
