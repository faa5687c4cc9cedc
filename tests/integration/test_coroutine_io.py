"""HTTP I/O from ``async def`` controllers: it never blocks an event loop (in the
threaded transport the worker thread does it), never buffers without bound
(``max_send_backlog``), and ``await response.drain()`` paces a coroutine's
``write_bytes`` to its client.  Real sockets in both transports; the TestClient and
WSGI where the dispatch layer decides."""

from __future__ import annotations

import asyncio
import http.client
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from simple_http_server import App, HttpError, RequestBodyReader, Response, logger

from ..conftest import LiveServer, LogRecords, UniformClient
from ..robustness.wire import parse_responses, read_until_closed

Serve = Callable[..., LiveServer]
MIB = 1024 * 1024


def small_window_client(port: int, window: int = 4096) -> socket.socket:
    """A client whose receive buffer is ``window`` bytes (set before connecting, so the
    server's sends stall soon when it reads nothing, or go at its pace)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


never_reading_client = small_window_client


def timed_get(live: LiveServer, path: str) -> tuple[float, bytes]:
    """Seconds an unrelated GET takes, and its body."""
    started = time.monotonic()
    conn = live.connection(timeout=15)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    return time.monotonic() - started, body


def add_fast_route(app: App) -> None:
    @app.route("/fast")
    async def fast() -> str:
        return "fast"


def read_slowly(sock: socket.socket, limit: float = 20.0, pause_first: float = 0.0) -> bytes:
    """Read until the server closes (after ``pause_first`` seconds of reading nothing),
    with a short pause after each read: a slow reader that never stalls."""
    time.sleep(pause_first)
    data = bytearray()
    deadline = time.monotonic() + limit
    sock.settimeout(5)
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
        time.sleep(0.002)
    raise AssertionError(f"not closed within {limit}s ({len(data)} bytes read)")


# -- defect 1: a coroutine's socket I/O never blocks the threaded transport's loop ------
def streamer_app() -> tuple[App, dict[str, Any]]:
    """``/stream`` writes 8 MiB at once from a coroutine (more than the kernel's buffers
    take), then 64 KiB every 20 ms; ``seen`` records how it ended."""
    app = App()
    add_fast_route(app)
    seen: dict[str, Any] = {"done": threading.Event(), "outcome": None}

    @app.route("/stream")
    async def stream(response: Response) -> None:
        try:
            for _ in range(128):
                response.write_bytes(b"s" * 65536)
            for _ in range(750):  # 15 s at most
                response.write_bytes(b"s" * 65536)
                await asyncio.sleep(0.02)
            seen["outcome"] = "never noticed"
        except Exception as exc:
            seen["outcome"] = type(exc).__name__
            raise
        finally:
            seen["done"].set()

    return app, seen


def test_a_coroutine_streaming_to_a_client_that_never_reads_delays_no_other_coroutine(
    serve: Serve,
) -> None:
    """The streamer's writes wait for nobody; the other coroutines go on, and the
    streamer learns that its client left (ClientGone)."""
    app, seen = streamer_app()
    live = serve(app, body_timeout=5.0, max_send_backlog=64 * MIB)
    with never_reading_client(live.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.5)  # the client's window and the server's buffers are full
        took, body = timed_get(live, "/fast")
        assert body == b"fast"
        assert took < 2.0, f"an unrelated coroutine waited {took:.1f}s for a stalled client"
    assert seen["done"].wait(10)
    assert seen["outcome"] == "ClientGone"


def test_a_coroutine_streaming_to_a_stalled_client_learns_it_after_body_timeout(
    serve: Serve,
) -> None:
    """A stall (nothing taken for body_timeout) surfaces in the coroutine's next
    ``write_bytes`` although the backlog never fills.  A blocked kernel send that
    takes a little now and then may stretch it to a few body_timeouts."""
    app, seen = streamer_app()
    live = serve(app, body_timeout=1.0, max_send_backlog=64 * MIB)
    with never_reading_client(live.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert seen["done"].wait(15)
        took = time.monotonic() - started
    assert seen["outcome"] == "ClientGone"
    assert 1.0 < took < 10.0, took


def test_a_coroutine_reading_a_stalled_upload_delays_no_other_coroutine(serve: Serve) -> None:
    """``await reader.read()`` waits for the body off the loop; the body then arrives whole."""
    app = App()
    add_fast_route(app)

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
        return {"received": total}

    live = serve(app, body_timeout=8.0)
    size = 100_000
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + b"u" * 10
        )
        time.sleep(0.3)  # the controller now waits for the rest of the body
        result: list[tuple[float, bytes]] = []
        getter = threading.Thread(target=lambda: result.append(timed_get(live, "/fast")))
        getter.start()
        getter.join(4.0)  # the rest of the body comes after the GET, or after 4 s
        sock.sendall(b"u" * (size - 10))
        getter.join(10)
        answer = parse_responses(read_one_answer(sock))
    assert result and result[0][1] == b"fast"
    assert result[0][0] < 2.0, f"an unrelated coroutine waited {result[0][0]:.1f}s for a body"
    assert [r.status for r in answer] == [200]
    assert answer[0].body == b'{"received": 100000}'


def test_a_coroutine_reader_sends_100_continue_before_it_waits(serve: Serve) -> None:
    app = App()

    @app.route("/upload", method="PUT")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        return {"received": len(await reader.read())}

    live = serve(app)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"c" * 5000)
        [answer] = parse_responses(read_one_answer(sock))
    assert answer.status == 200 and answer.body == b'{"received": 5000}'


def patient_reader_app(timeouts: list[int]) -> App:
    """``/upload``: reads the body with ``wait_for(reader.read(), 0.2)``, noting in
    ``timeouts`` what it had when one timed out, and says whether all came intact."""
    app = App()

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        body = b""
        for _ in range(50):  # 10 s at most
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.2)
            except asyncio.TimeoutError:
                timeouts.append(len(body))
                continue
            if not chunk:
                break
            body += chunk
        return {"received": len(body), "intact": body == b"0123456789" * 1000}

    return app


def test_a_body_read_the_coroutine_stopped_waiting_for_loses_nothing(serve: Serve) -> None:
    """``asyncio.wait_for(reader.read(), ...)`` times out while the body is late (the
    read went on elsewhere); the next read gets every byte."""
    timeouts: list[int] = []
    live = serve(patient_reader_app(timeouts))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n")
        time.sleep(0.5)  # the controller's read times out meanwhile
        sock.sendall(b"0123456789" * 1000)
        [answer] = parse_responses(read_one_answer(sock))
    assert timeouts and timeouts[0] == 0
    assert answer.status == 200
    assert answer.body == b'{"received": 10000, "intact": true}'


def async_reader_app() -> App:
    app = App()
    add_fast_route(app)

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        return {"received": len(await reader.read())}

    return app


@pytest.mark.parametrize(
    "settings",
    [
        {"body_timeout": 2.0},  # the body stops
        {"body_timeout": 8.0, "min_body_rate": 1000.0, "min_body_rate_grace": 2.0},  # too slow
    ],
    ids=["body_timeout", "min_body_rate"],
)
def test_a_coroutine_reading_a_stalled_body_gets_a_408(
    serve: Serve, settings: dict[str, float]
) -> None:
    """``await reader.read()`` keeps the limits of every body read: a 408 (and the
    connection closed) after body_timeout, or once min_body_rate fails."""
    live = serve(async_reader_app(), **settings)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123")
        took, body = timed_get(live, "/fast")  # served while the body is awaited
        data = read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
    assert body == b"fast" and took < 1.5, took
    responses = parse_responses(data)
    assert [r.status for r in responses] == [408] and responses[0].closes
    assert 1.9 <= elapsed < 5.0, elapsed


def read_one_answer(sock: socket.socket) -> bytes:
    """One Content-Length response (the connection stays open)."""
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


# -- defect 2: max_send_backlog bounds what a coroutine leaves unsent -----------------
def writer_app(piece: int, count: int, drain: bool) -> tuple[App, dict[str, Any]]:
    """``/write`` writes ``count`` pieces of ``piece`` bytes from a coroutine (numbered,
    so a reordered or lost piece shows), awaiting ``response.drain()`` between them
    when ``drain``; ``seen`` records how it ended."""
    app = App()
    seen: dict[str, Any] = {"done": threading.Event(), "outcome": None}

    @app.route("/write")
    async def write(response: Response) -> None:
        try:
            for i in range(count):
                response.write_bytes(bytes([65 + i % 26]) * piece)
                if drain:
                    await response.drain()
            seen["outcome"] = "complete"
        except Exception as exc:
            seen["outcome"] = type(exc).__name__
            raise
        finally:
            seen["done"].set()

    return app, seen


def expected_body(piece: int, count: int) -> bytes:
    return b"".join(bytes([65 + i % 26]) * piece for i in range(count))


def test_a_coroutine_that_outruns_a_client_that_never_reads_is_dropped_at_the_backlog(
    serve: Serve, log_records: LogRecords
) -> None:
    app, seen = writer_app(MIB, 8, drain=False)
    live = serve(app, body_timeout=30.0, max_send_backlog=MIB)
    with never_reading_client(live.port) as sock:
        sock.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
        assert seen["done"].wait(5), "the coroutine is still writing"
        data = read_until_closed(sock, timeout=5)  # dropped: well before body_timeout
    assert seen["outcome"] == "ClientGone"
    assert len(data) < 8 * MIB and not data.endswith(b"0\r\n\r\n")
    warnings = [r.getMessage() for r in log_records.records if "max_send_backlog" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_a_coroutine_that_drains_between_writes_reaches_a_slow_reader_whole(
    serve: Serve,
) -> None:
    """8 MiB through a 1 MiB backlog: ``await response.drain()`` waits for the client."""
    app, seen = writer_app(512 * 1024, 16, drain=True)
    live = serve(app, body_timeout=5.0, max_send_backlog=MIB)
    with small_window_client(live.port, 65536) as sock:
        sock.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_slowly(sock)
    assert seen["done"].wait(5) and seen["outcome"] == "complete"
    [answer] = parse_responses(data)
    assert answer.status == 200 and answer.body == expected_body(512 * 1024, 16)


def test_many_small_coroutine_writes_arrive_in_order_on_a_kept_alive_connection(
    serve: Serve,
) -> None:
    app = App()

    @app.route("/pieces")
    async def pieces(response: Response) -> str:
        response.add_header("Content-Type", "text/plain")
        for i in range(2000):
            response.write_bytes(b"%d," % i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        return "ignored: the response was streamed"

    @app.route("/closed")
    async def closed(response: Response) -> None:
        for i in range(300):
            response.write_bytes(b"%d;" % i)
        response.close()

    live = serve(app)
    conn = live.connection()
    try:
        for path, sep in (("/pieces", b","), ("/closed", b";"), ("/pieces", b",")):
            count = 2000 if path == "/pieces" else 300
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Transfer-Encoding") == "chunked"
            assert resp.read() == b"".join(b"%d%s" % (i, sep) for i in range(count))
            assert not resp.will_close
    finally:
        conn.close()


def test_a_task_that_outlives_its_request_cannot_write_into_the_next_answer(
    serve: Serve,
) -> None:
    """A task the controller left behind holds its ``response``: once the request is
    over, its ``write_bytes`` raises instead of landing in the next response on the
    same connection."""
    app = App()
    late: dict[str, Any] = {"go": threading.Event(), "done": threading.Event()}

    @app.route("/leave-a-task")
    async def leave_a_task(response: Response) -> str:
        async def write_later() -> None:
            await asyncio.get_running_loop().run_in_executor(None, late["go"].wait, 10)
            try:
                response.write_bytes(b"LATE")
                late["outcome"] = "written"
            except Exception as exc:
                late["outcome"] = type(exc).__name__
            late["done"].set()

        late["task"] = asyncio.ensure_future(write_later())
        return "first"

    @app.route("/next")
    def next_answer() -> str:
        late["go"].set()
        assert late["done"].wait(10)
        return "second"

    conn = serve(app).connection()  # one kept-alive connection for both requests
    try:
        conn.request("GET", "/leave-a-task")
        assert conn.getresponse().read() == b"first"
        conn.request("GET", "/next")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b"second")
    finally:
        conn.close()
    assert late["outcome"] == "RuntimeError"


class _SlowValue:
    """A header value whose ``str()`` holds up one thread (the writer's) until its
    response is marked sent, so that writer's ``write_bytes`` is under way when the
    controller returns; every other thread gets the value at once."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.writer: threading.Thread | None = None
        self.entered = threading.Event()

    def __str__(self) -> str:
        if threading.current_thread() is self.writer:
            self.entered.set()
            deadline = time.monotonic() + 10
            while not self.response.is_sent and time.monotonic() < deadline:
                time.sleep(0.001)
        return "v"


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_threads_write_under_way_as_the_controller_returns_goes_out_whole(
    make_any_client: Callable[..., UniformClient], kind: str
) -> None:
    """A thread that called ``write_bytes`` before the controller returned gets its
    bytes into this answer, before its end (the body the controller returned is
    dropped with a warning); its next write raises ``RuntimeError``.
    Before, the answer went out first and the thread's head followed it: h11 failed
    the connection, and the next request on it got no answer."""
    app = App()
    outcome: dict[str, Any] = {}

    def write_from_a_thread(response: Response) -> None:
        value = _SlowValue(response)
        response.set_header("X-Value", value)

        def writer() -> None:
            try:
                response.write_bytes(b"late")
                outcome["first"] = "written"
                response.write_bytes(b"later")
                outcome["second"] = "written"
            except Exception as exc:
                outcome.setdefault("first", type(exc).__name__)
                outcome["second"] = type(exc).__name__

        thread = value.writer = outcome["thread"] = threading.Thread(target=writer)
        thread.start()
        assert value.entered.wait(10)  # the thread's write_bytes is under way

    if kind == "def":

        @app.route("/begun")
        def begun(response: Response) -> str:
            write_from_a_thread(response)
            return "returned"
    else:

        @app.route("/begun")
        async def begun_async(response: Response) -> str:
            write_from_a_thread(response)
            return "returned"

    @app.route("/next")
    def next_answer() -> str:
        return "second"

    records = LogRecords()
    logger.add_handler(records)
    client = make_any_client(app)
    live = client.address if client.front_end in ("threaded", "asyncio") else None
    conn = live.connection() if live is not None else None
    try:
        if conn is None:
            reply = client.get("/begun")
            assert (reply.status, reply.body, reply.header("X-Value")) == (200, b"late", "v")
        else:  # one kept-alive connection for both requests
            conn.request("GET", "/begun")
            first = conn.getresponse()
            assert (first.status, first.read(), first.getheader("X-Value")) == (200, b"late", "v")
            conn.request("GET", "/next")
            second = conn.getresponse()
            assert (second.status, second.read()) == (200, b"second")
    finally:
        logger.remove_handler(records)
        if conn is not None:
            conn.close()
    outcome["thread"].join(10)
    assert (outcome["first"], outcome["second"]) == ("written", "RuntimeError")
    warnings = [r.getMessage() for r in records.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "GET /begun: a write_bytes from another thread started the answer as the controller"
        " returned; the body it returned is not sent"
    ]


@pytest.mark.parametrize("failure", ["raise", "http-error"])
def test_a_controller_failing_as_a_threads_write_starts_the_answer_cuts_it(
    make_any_client: Callable[..., UniformClient], failure: str
) -> None:
    """The thread's write, under way as the controller failed, sent its head once the
    controller was done: that answer was ended as complete (a 200 passed off as whole,
    after "Error while serving"), where a failure after write_bytes cuts the answer."""
    app = App()
    threads: list[threading.Thread] = []

    @app.route("/fails")
    def fails(response: Response) -> str:
        value = _SlowValue(response)
        response.set_header("X-Value", value)
        thread = value.writer = threading.Thread(target=response.write_bytes, args=(b"part",))
        threads.append(thread)
        thread.start()
        assert value.entered.wait(10)  # the thread's write_bytes is under way
        if failure == "raise":
            raise RuntimeError("the controller failed")
        raise HttpError(409, "conflict")

    client = make_any_client(app)
    try:
        reply = client.get("/fails")
    except http.client.IncompleteRead:  # the client saw the answer cut: as it should
        pass
    else:
        # wsgiref answers in HTTP/1.0: without a Content-Length the end of the
        # connection ends the body, so a cut cannot show; nothing may say it is whole.
        assert client.front_end == "wsgi", f"passed off as whole: {reply.status} {reply.body!r}"
        assert reply.header("Content-Length") is None
    finally:
        for thread in threads:
            thread.join(10)


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_thread_writing_after_its_request_never_breaks_the_connection(
    serve: Serve, kind: str
) -> None:
    """A thread the controller left behind keeps writing as the request ends: each of
    its writes goes out within the answer or raises ``RuntimeError``, never after the
    answer's end, so the next request on the connection is answered. Before, a write
    could slip in after the end (a chunk where the next status line belongs) or set
    h11 in error (the next answer failed, with the asyncio transport's error flood)."""
    app = App()
    failures: list[str] = []

    def leave_a_writer(response: Response) -> None:
        response.write_bytes(b"a")

        def writer() -> None:
            for _ in range(200):
                try:
                    response.write_bytes(b"X")
                except RuntimeError:
                    return
                except Exception as exc:
                    failures.append(repr(exc))
                    return

        threading.Thread(target=writer).start()

    if kind == "def":

        @app.route("/leave")
        def leave(response: Response) -> None:
            leave_a_writer(response)
    else:

        @app.route("/leave")
        async def leave_async(response: Response) -> None:
            leave_a_writer(response)

    @app.route("/next")
    def next_answer() -> str:
        return "next"

    live = serve(app)
    records = LogRecords()
    logger.add_handler(records)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows at once
    conn = live.connection()
    try:
        for _ in range(150):
            conn.request("GET", "/leave")
            first = conn.getresponse()
            body = first.read()
            assert (first.status, body[:1], body.strip(b"X")) == (200, b"a", b"a")
            conn.request("GET", "/next")
            second = conn.getresponse()
            assert (second.status, second.read()) == (200, b"next")
    finally:
        sys.setswitchinterval(interval)
        conn.close()
        logger.remove_handler(records)
    assert failures == []
    assert [r.getMessage() for r in records.records if r.levelno >= logging.WARNING] == []


def test_a_task_that_outlives_its_request_cannot_read_the_next_requests_body(
    serve: Serve,
) -> None:
    """A task the controller left behind holds its ``RequestBodyReader``: once the
    request is over, reading raises instead of taking the body of the next request on
    the same connection."""
    app = App()
    late: dict[str, Any] = {"go": threading.Event(), "done": threading.Event()}

    @app.route("/leave-a-reader", method="POST")
    async def leave_a_reader(reader: RequestBodyReader) -> str:
        async def read_later() -> None:
            await asyncio.get_running_loop().run_in_executor(None, late["go"].wait, 10)
            try:
                late["outcome"] = await reader.read()
            except Exception as exc:
                late["outcome"] = type(exc).__name__
            late["done"].set()

        late["task"] = asyncio.ensure_future(read_later())
        return "first"

    @app.route("/next", method="POST")
    async def next_request(reader: RequestBodyReader) -> bytes:
        late["go"].set()
        await asyncio.get_running_loop().run_in_executor(None, late["done"].wait, 10)
        return await reader.read()

    conn = serve(app).connection()  # one kept-alive connection for both requests
    try:
        conn.request("POST", "/leave-a-reader", body=b"FIRST-BODY")
        assert conn.getresponse().read() == b"first"
        conn.request("POST", "/next", body=b"SECOND-BODY")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b"SECOND-BODY")
    finally:
        conn.close()
    assert late["outcome"] == "RuntimeError"


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_threads_writing_one_response_at_once_take_turns(serve: Serve, kind: str) -> None:
    """Several threads call ``write_bytes`` on one response at once (the controller
    waits for them): the head goes out once and each call's bytes whole. Before, two
    first writes could both send a head: h11 failed the answer (an error logged, the
    connection dropped)."""
    app = App()
    failures: list[str] = []

    def write_from_threads(response: Response) -> list[threading.Thread]:
        start = threading.Barrier(4)

        def writer(i: int) -> None:
            try:
                start.wait(10)
                for j in range(50):
                    response.write_bytes(b"<%d:%d>" % (i, j) * 20)
            except Exception as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        return threads

    if kind == "def":

        @app.route("/fan")
        def fan(response: Response) -> None:
            for thread in write_from_threads(response):
                thread.join(10)
    else:

        @app.route("/fan")
        async def fan_async(response: Response) -> None:
            threads = write_from_threads(response)
            for thread in threads:
                await asyncio.to_thread(thread.join, 10)

    live = serve(app)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows at once
    conn = live.connection()
    try:
        for _ in range(20):
            conn.request("GET", "/fan")
            reply = conn.getresponse()
            body = reply.read()
            pieces = re.findall(rb"<(\d+):(\d+)>", body)
            assert reply.status == 200
            assert len(pieces) == 4 * 50 * 20
            assert len(body) == sum(len(b"<%s:%s>" % piece) for piece in pieces)
    finally:
        sys.setswitchinterval(interval)
        conn.close()
    assert failures == []


def test_a_coroutine_and_a_thread_writing_one_response_at_once_take_turns(
    make_any_client: Callable[..., UniformClient],
) -> None:
    """An ``async def`` controller writes (say, an event stream's heartbeats) while a
    thread it started writes the same response: the head goes out once, each call's
    bytes whole and each writer's in its order.  Before, in the asyncio transport the
    coroutine's write could go out ahead of the thread's head: h11 failed the answer
    (an error logged, the connection dropped)."""
    app = App()
    failures: list[str] = []

    @app.route("/mix")
    async def mix(response: Response) -> None:
        def producer() -> None:
            try:
                for j in range(100):
                    response.write_bytes(b"<t:%d>" % j * 50)
            except Exception as exc:
                failures.append(repr(exc))

        thread = threading.Thread(target=producer)
        thread.start()
        try:
            for j in range(100):
                response.write_bytes(b"<c:%d>" % j * 50)
                await asyncio.sleep(0)
        finally:
            await asyncio.to_thread(thread.join, 10)

    client = make_any_client(app)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows at once
    try:
        for _ in range(10):
            reply = client.get("/mix")
            assert reply.status == 200
            for who in (b"t", b"c"):
                order = [int(j) for j in re.findall(rb"<%s:(\d+)>" % who, reply.body)]
                assert order == [j for j in range(100) for _ in range(50)]
            assert re.sub(rb"<[tc]:\d+>", b"", reply.body) == b""
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def test_a_coroutines_write_and_close_during_a_threads_write_go_out_after_it(
    serve: Serve,
) -> None:
    """A thread's write waits for a client that does not read yet; the coroutine's
    write and ``close()`` meanwhile never wait (nor block the loop): they go out after
    the thread's bytes, and the answer ends there."""
    app = App()
    big = b"x" * (4 * MIB)
    started = threading.Event()
    failures: list[str] = []

    @app.route("/behind")
    async def behind(response: Response) -> None:
        def producer() -> None:
            started.set()
            try:
                response.write_bytes(big)
            except Exception as exc:
                failures.append(repr(exc))

        thread = threading.Thread(target=producer)
        thread.start()
        await asyncio.to_thread(started.wait, 10)
        await asyncio.sleep(0.2)  # the thread's write is under way, the client not reading
        response.write_bytes(b"tail")
        response.close()
        await asyncio.to_thread(thread.join, 10)

    live = serve(app)
    with small_window_client(live.port) as sock:
        sock.sendall(b"GET /behind HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert started.wait(10)
        time.sleep(0.4)
        replies = parse_responses(read_until_closed(sock, 20))
    assert [r.status for r in replies] == [200]
    assert replies[0].body == big + b"tail"
    assert failures == []


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_thread_reading_the_body_as_its_request_ends_never_takes_the_next_request(
    serve: Serve, kind: str
) -> None:
    """A thread the controller left behind reads the body (``read_blocking``) while the
    request ends: its read under way ends first (the server then drains the rest), its
    next read raises ``RuntimeError``, and the next request on the connection is
    answered. Before, in the threaded transport the thread and the server read the
    connection at once: the next request hung, or the connection was lost; in the
    asyncio transport the thread got a ``CancelledError``."""
    app = App()
    outcomes: list[str] = []

    def leave_a_reader(reader: RequestBodyReader) -> None:
        def read() -> None:
            try:
                outcomes.append(f"read {len(reader.read_blocking())}")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
            except BaseException as exc:  # CancelledError
                outcomes.append(type(exc).__name__)

        threading.Thread(target=read).start()

    if kind == "def":

        @app.route("/up", method="POST")
        def up(reader: RequestBodyReader) -> str:
            leave_a_reader(reader)
            time.sleep(0.002)  # the thread's read is under way as it returns
            return "up"
    else:

        @app.route("/up", method="POST")
        async def up_async(reader: RequestBodyReader) -> str:
            leave_a_reader(reader)
            await asyncio.sleep(0.002)  # the thread's read is under way as it returns
            return "up"

    @app.route("/next", method="POST")
    def next_request(reader: RequestBodyReader) -> bytes:
        return reader.read_blocking()

    live = serve(app)
    body = b"B" * 3000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows at once
    try:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
                sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
                sock.sendall(body[:100])
                time.sleep(0.003)  # the thread starts its read of the rest meanwhile
                sock.sendall(body[100:])
                sock.sendall(
                    b"POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Connection: close\r\n\r\nNEXT"
                )
                replies = parse_responses(read_until_closed(sock, timeout=3))
            assert [(r.status, r.body) for r in replies] == [(200, b"up"), (200, b"NEXT")]
    finally:
        sys.setswitchinterval(interval)
    deadline = time.monotonic() + 5
    while len(outcomes) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(outcomes) <= {"read 3000", "RuntimeError"}, outcomes
    assert len(outcomes) == 30


def test_a_body_read_the_coroutine_gave_up_holds_up_nothing(serve: Serve) -> None:
    """A coroutine stops waiting for its body (``wait_for``) and answers: the threaded
    worker doing the read for it let the answer wait up to body_timeout (or the
    min_body_rate grace) before it was sent."""
    app = App()

    @app.route("/up", method="POST")
    async def up(reader: RequestBodyReader) -> str:
        try:
            return f"got {len(await asyncio.wait_for(reader.read(), 0.5))}"
        except asyncio.TimeoutError:
            return "gave up"

    live = serve(app, body_timeout=6.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        started = time.monotonic()
        head = sock.recv(65536)
        took = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"gave up"), head
    assert took < 3, took


def test_a_coroutine_may_read_and_write_at_once(serve: Serve) -> None:
    """Full duplex: one task reads the body as it comes, another echoes each piece
    (``write_bytes`` + ``drain()``); the client sends a piece once it saw the echo of
    the one before.  A pending read held up the echo until body_timeout (threaded)."""
    app = App()

    @app.route("/echo", method="POST")
    async def echo(reader: RequestBodyReader, response: Response) -> None:
        pieces: asyncio.Queue[bytes] = asyncio.Queue()

        async def read_in() -> None:
            while True:
                data = await reader.read(64)
                await pieces.put(data)
                if not data:
                    return

        async def write_out() -> None:
            while data := await pieces.get():
                response.write_bytes(data)
                await response.drain()

        await asyncio.gather(read_in(), write_out())

    live = serve(app, body_timeout=5.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        seen = b""
        for i in range(3):
            piece = b"ping%d" % i
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            while piece not in seen:
                chunk = sock.recv(4096)
                assert chunk, seen
                seen += chunk
        took = time.monotonic() - started
    assert took < 3, took


def test_a_coroutine_writes_at_once_while_its_read_waits_for_the_client(serve: Serve) -> None:
    """A read waiting for a client that sends nothing yet, and writes meanwhile: each
    write waited for the worker's read slice to end (up to 50 ms, threaded), so each
    ``drain()`` of a large write did too."""
    app = App()

    @app.route("/push", method="POST")
    async def push(reader: RequestBodyReader, response: Response) -> None:
        body = asyncio.ensure_future(reader.read())  # the client sends it at the end
        for i in range(30):
            response.write_bytes(bytes([65 + i]) * 100_000)
            await response.drain()
        response.write_bytes(await body)

    live = serve(app, body_timeout=5.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
        started = time.monotonic()
        seen = b""
        while b"^" * 100 not in seen:  # the 30th write
            chunk = sock.recv(65536)
            assert chunk, len(seen)
            seen += chunk
        took = time.monotonic() - started
        sock.sendall(b"end")
        while not seen.endswith(b"end\r\n0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, len(seen)
            seen += chunk
    assert took < 0.75, took  # 30 drains: 1.5 s and more with 50 ms each


# -- drain() in every front end ----------------------------------------------------
DRAINED = b"".join(bytes([48 + i]) * 100_000 for i in range(4))


def add_drained_route(app: App) -> App:
    """``/drained``: four 100 kB writes from a coroutine, each followed by ``drain()``."""

    @app.route("/drained")
    async def drained(response: Response) -> None:
        response.add_header("Content-Type", "application/octet-stream")
        for i in range(4):
            response.write_bytes(bytes([48 + i]) * 100_000)
            await response.drain()

    return app


def test_drain_works_in_every_front_end(make_client: Callable[..., Any]) -> None:
    client = make_client(add_drained_route(App()))
    reply = client.get("/drained")
    assert reply.status == 200 and reply.body == DRAINED


def test_drain_outside_a_request_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(Response().drain())


def test_drain_raises_client_gone_once_the_client_left(serve: Serve) -> None:
    app = App()
    seen: dict[str, Any] = {"done": threading.Event(), "outcome": None}

    @app.route("/gone")
    async def gone(response: Response) -> None:
        try:
            for _ in range(400):  # 8 s at most
                response.write_bytes(b"g" * 65536)
                await response.drain()
                await asyncio.sleep(0.02)
            seen["outcome"] = "never noticed"
        except Exception as exc:
            seen["outcome"] = type(exc).__name__
            raise
        finally:
            seen["done"].set()

    live = serve(app)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536)
    assert seen["done"].wait(10)
    assert seen["outcome"] == "ClientGone"


# -- async generator bodies that await, where no loop runs the dispatch --------------
def awaiting_generator_app(events: list[str]) -> App:
    """``/agen`` streams an async generator that awaits between pieces and in its
    ``finally``; ``/agen-endless`` never ends (its client leaves)."""
    app = App()

    async def pieces(count: int) -> Any:
        try:
            for i in range(count):
                await asyncio.sleep(0.001)
                yield b"a%d;" % i
        finally:
            await asyncio.sleep(0)
            events.append("finally")

    @app.route("/agen")
    async def agen() -> Response:
        return Response(headers={"Content-Type": "text/plain"}, body=pieces(50))

    @app.route("/agen-endless")
    def agen_endless() -> Response:  # a plain function may return one too
        return Response(headers={"Content-Type": "text/plain"}, body=pieces(100_000))

    return app


def test_an_async_generator_that_awaits_is_streamed_by_every_front_end(
    make_client: Callable[..., Any],
) -> None:
    events: list[str] = []
    client = make_client(awaiting_generator_app(events))
    reply = client.get("/agen")
    assert reply.status == 200
    assert reply.body == b"".join(b"a%d;" % i for i in range(50))
    deadline = time.monotonic() + 5
    while "finally" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == ["finally"]


def test_an_async_generator_left_by_its_client_runs_its_awaiting_finally(serve: Serve) -> None:
    events: list[str] = []
    live = serve(awaiting_generator_app(events))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /agen-endless HTTP/1.1\r\nHost: x\r\n\r\n")
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
        while b"a0;" not in received:  # the stream started: one left before its first
            received += sock.recv(65536)  # step never runs, nor its finally
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    deadline = time.monotonic() + 15
    while "finally" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == ["finally"]


def test_drain_and_awaiting_generators_under_wsgi() -> None:
    from .test_wsgi import request, wsgiref_server

    events: list[str] = []
    app = add_drained_route(awaiting_generator_app(events))
    with wsgiref_server(app) as port:
        status, _, body = request(port, "GET", "/agen")
        assert status == 200 and body == b"".join(b"a%d;" % i for i in range(50))
        status, _, body = request(port, "GET", "/drained")
        assert status == 200 and body == DRAINED
    assert events == ["finally"]
