"""Slow, idle and numerous clients cannot starve either transport; every limit holds."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simple_http_server import App, BytesBody, ClientGone, Response

from ..conftest import LiveServer, LogRecords, small_send_buffer_listener
from ..integration.apps import harness
from .conftest import hostile_app, raise_fd_limit
from .wire import parse_responses, read_until_closed

Serve = Callable[..., LiveServer]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def fast_get(live: LiveServer, path: str = "/") -> bytes:
    conn = live.connection(timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def app() -> tuple[App, dict[str, int], threading.Event]:
    hits: dict[str, int] = {}
    release = threading.Event()
    return hostile_app(hits, release), hits, release


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (a 408 answer may come first)."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
            assert chunk.startswith(b"HTTP/1.1 408 "), chunk
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


# -- slowloris ------------------------------------------------------------------------
def trickle(live: LiveServer, head: bytes, pause: float) -> tuple[bytes, int, float]:
    """Send ``head`` a byte at a time, ``pause`` seconds apart, until the server answers
    or closes (5 s at most): its answer, the bytes sent, the seconds it took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        started = time.monotonic()
        answer = b""
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                sent += 1
            except OSError:
                break
            sock.settimeout(pause)
            try:
                answer = sock.recv(4096)
                break  # the server answered (408) or closed
            except TimeoutError:
                if time.monotonic() - started > 5:
                    break
        return answer, sent, time.monotonic() - started


def test_head_trickled_one_byte_a_second_is_cut_off(serve: Serve) -> None:
    answer, sent, elapsed = trickle(serve(app()[0], head_timeout=1.5), GET, 1.0)
    assert answer.startswith(b"HTTP/1.1 408 ") or answer == b""
    assert elapsed < 1.5 + 2.0
    assert sent <= 4


def test_head_trickled_faster_than_the_sweep_is_cut_off_on_an_idle_server(serve: Serve) -> None:
    """A byte every 0.2 s kept the connection busy whenever the threaded transport's
    sweep (every 0.5 s) looked, so on an otherwise idle server it was never cut."""
    live = serve(app()[0], head_timeout=1.0)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"  # 28 s at this rate
    answer, _sent, elapsed = trickle(live, head, 0.2)
    assert answer.startswith(b"HTTP/1.1 408 "), (answer, elapsed)
    assert elapsed < 1.0 + 1.5, elapsed


# -- the first request: head_timeout from the accept; idle_timeout between requests ------
def test_a_fresh_connection_that_sends_nothing_is_closed_after_head_timeout(
    serve: Serve,
) -> None:
    """A connection that never sent a request holds no slot for idle_timeout: it is
    closed head_timeout after the accept, silently (nothing was asked, nothing to answer)."""
    live = serve(app()[0], head_timeout=1.0, idle_timeout=30.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        data = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert data == b""
    assert 0.9 <= elapsed < 1.0 + 1.0, elapsed


def test_the_first_head_is_due_head_timeout_after_the_accept_not_after_its_first_byte(
    serve: Serve,
) -> None:
    live = serve(app()[0], head_timeout=2.0, idle_timeout=30.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        time.sleep(1.2)
        sock.sendall(b"GET / HTTP/1.1\r\nHo")  # late, and never finished
        data = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [408]
    assert 1.9 <= elapsed < 3.0, elapsed  # from its first byte it would be 3.2 s at least


def test_idle_timeout_not_head_timeout_applies_between_requests(serve: Serve) -> None:
    live = serve(app()[0], head_timeout=0.5, idle_timeout=2.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(GET)
        started = time.monotonic()
        data = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [200]  # closed silently afterwards
    assert 1.9 <= elapsed < 2.0 + 1.0, elapsed


def test_300_slowloris_clients_do_not_stop_a_normal_client(serve: Serve) -> None:
    raise_fd_limit(2048)
    live = serve(app()[0], head_timeout=2.0, worker_threads=4)
    slow = [socket.create_connection(("127.0.0.1", live.port), timeout=5) for _ in range(300)]
    try:
        started = time.monotonic()
        for sock in slow:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
        for _ in range(20):  # normal clients are served while the slow ones trickle
            for sock in slow[:50]:
                try:
                    sock.sendall(b"s")
                except OSError:
                    pass
            assert fast_get(live) == b"ok"
        assert time.monotonic() - started < 2.0 + 5, "normal clients waited for slow ones"
        deadline = time.monotonic() + 2.0 + 3.0
        pending = list(slow)
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if not closed_by_server(s)]
            time.sleep(0.1)
        assert not pending, f"{len(pending)} slow clients were never cut off"
        assert fast_get(live) == b"ok"
    finally:
        for sock in slow:
            sock.close()


def test_2000_idle_connections_do_not_stop_a_normal_client(serve: Serve) -> None:
    count = 2000
    raise_fd_limit(2 * count + 1024)
    # Fresh connections that send nothing yet: head_timeout bounds them, not idle_timeout.
    live = serve(app()[0], worker_threads=8, head_timeout=60.0)
    idle: list[socket.socket] = []
    try:
        for _ in range(count):
            idle.append(socket.create_connection(("127.0.0.1", live.port), timeout=10))
        assert fast_get(live) == b"ok"
        for sock in idle[::200]:  # accepted and alive, not stuck in a backlog
            sock.sendall(GET)
            data = b""
            while not data.endswith(b"ok"):
                chunk = sock.recv(4096)
                assert chunk, "an idle connection was dropped"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle:
            sock.close()
    assert fast_get(live) == b"ok"


def test_stalled_body_is_cut_off_after_body_timeout(serve: Serve) -> None:
    live = serve(app()[0], body_timeout=1.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        assert fast_get(live) == b"ok"  # served while the stalled body holds its request
        data = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.9
    responses = parse_responses(data)
    assert [r.status for r in responses] == [408]
    assert responses[0].closes


def test_body_trickled_below_the_minimum_rate_is_cut_off(serve: Serve) -> None:
    # Each byte arrives well within body_timeout, but far below min_body_rate.
    live = serve(app()[0], body_timeout=5.0, min_body_rate=100.0, min_body_rate_grace=0.5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        data = b""
        for _ in range(40):  # at most ~8 s of trickling
            try:
                sock.sendall(b"x")
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - started > 1.0:
                data = read_until_closed(sock, timeout=0.05)
                if data:
                    break
        elapsed = time.monotonic() - started
        data += read_until_closed(sock, timeout=1.0)
    assert [r.status for r in parse_responses(data)] == [408]
    assert elapsed < 5.0  # before body_timeout could have fired


def test_a_fast_body_that_stops_is_cut_off_at_body_timeout(serve: Serve) -> None:
    """100 KB at once is 100 s of credit at min_body_rate=1000: the stall is still cut
    off after body_timeout, which bounds every wait for the body."""
    live = serve(app()[0], body_timeout=1.0, min_body_rate=1000.0, min_body_rate_grace=0.5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n")
        sock.sendall(b"x" * 100_000)
        data = read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [408]
    assert 0.9 <= elapsed < 4.0, elapsed


def test_a_body_that_stops_is_cut_off_when_its_rate_fails_not_at_the_next_byte(
    serve: Serve,
) -> None:
    """No byte arrives after the head: the minimum rate fails once the grace is over,
    long before body_timeout (the check used to wait for a byte to arrive)."""
    live = serve(app()[0], body_timeout=6.0, min_body_rate=1000.0, min_body_rate_grace=1.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123")
        data = read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [408]
    assert 0.9 <= elapsed < 4.0, elapsed


def test_an_unread_body_is_drained_at_the_minimum_rate_too(serve: Serve) -> None:
    """A 404 answers before the body is read; discarding the rest is paced like reading
    it, so a trickling client does not hold the connection (or a worker) for long."""
    live = serve(
        app()[0], body_timeout=6.0, min_body_rate=1000.0, min_body_rate_grace=1.0,
        worker_threads=1,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\nab")
        data, closed = b"", False
        while not closed and time.monotonic() - started < 8:
            try:  # 1 byte every 0.2 s: far below 1000 bytes a second
                sock.sendall(b"x")
            except OSError:
                break
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                while chunk := sock.recv(65536):
                    data += chunk
                closed = True
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            sock.setblocking(True)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [404]
    assert elapsed < 4.0, elapsed  # drained for ~1 s (the grace), then a lingering close
    assert fast_get(live) == b"ok"  # the one worker is free again


def test_a_pause_within_body_timeout_is_fine_once_the_rate_is_kept(serve: Serve) -> None:
    """The threaded transport bounded a body read the minimum rate made short with the
    socket's kernel receive timeout (1 s here) and left it so: a later read, which the
    rate no longer limited, got 408 after that 1 s instead of body_timeout."""
    application = App()

    @application.route("/upload", method="POST")
    def upload(body: BytesBody) -> str:
        return f"got {len(bytes(body))}"

    live = serve(application, body_timeout=3.0, min_body_rate=1, min_body_rate_grace=1.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        time.sleep(0.1)  # the first read waits 1 s at most: the rate's grace
        sock.sendall(b"x" * 10)  # 10 bytes at 1 byte/s: the rate is kept for 10 s
        time.sleep(2.0)  # a pause within body_timeout
        sock.sendall(b"y" * 990)
        sock.shutdown(socket.SHUT_WR)
        responses = parse_responses(read_until_closed(sock, timeout=5))
    assert [(r.status, r.body) for r in responses] == [(200, b"got 1000")]


def test_body_at_a_normal_pace_is_not_cut_off(serve: Serve) -> None:
    live = serve(app()[0], min_body_rate=1000.0, min_body_rate_grace=0.3)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\n\r\n")
        for _ in range(4):  # 2,000 bytes a second: above the minimum
            sock.sendall(b"y" * 1000)
            time.sleep(0.5)
        sock.shutdown(socket.SHUT_WR)
        responses = parse_responses(read_until_closed(sock, timeout=5))
    assert [r.status for r in responses] == [200]


def big_answer_app(folder: Path, size: int) -> App:
    """The hostile app plus ``/big`` (``size`` bytes from memory) and ``big.bin`` in
    ``folder`` (the same size, served from a static mount)."""
    application = app()[0]
    (folder / "big.bin").write_bytes(b"f" * size)

    @application.route("/big")
    def big() -> bytes:
        return b"m" * size

    return application


@pytest.mark.parametrize("source", ["memory", "file"])
def test_client_that_stops_reading_is_cut_off_after_body_timeout(
    serve: Serve, tmp_path: Path, source: str
) -> None:
    """A stuck reader frees its worker; with one worker, others wait at most body_timeout."""
    size = 32 * 1024 * 1024
    application = big_answer_app(tmp_path, size)
    live = serve(application, {"/files/*": str(tmp_path)}, body_timeout=1.0, worker_threads=1)
    path = "/big" if source == "memory" else "/files/big.bin"
    with socket.create_connection(("127.0.0.1", live.port)) as stuck:
        stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        time.sleep(0.3)  # the answer is under way and stalls: nothing is read
        started = time.monotonic()
        assert fast_get(live) == b"ok"
        assert time.monotonic() - started < 4.0
        time.sleep(1.5)  # past body_timeout: the server has given up on it
        received = len(read_until_closed(stuck, timeout=5))
    assert received < size


@pytest.mark.parametrize("source", ["memory", "file"])
def test_a_slow_but_steady_reader_gets_the_whole_answer(
    serve: Serve, tmp_path: Path, source: str
) -> None:
    """body_timeout bounds a stall, not the whole response: a client that keeps
    reading, even if the answer takes several body_timeouts, gets all of it."""
    size = 8 * 1024 * 1024
    application = big_answer_app(tmp_path, size)
    live = serve(application, {"/files/*": str(tmp_path)}, body_timeout=0.5)
    path = "/big" if source == "memory" else "/files/big.bin"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        started, received = time.monotonic(), b""
        while chunk := sock.recv(65536):  # ~6 MB/s: the answer takes over 1 s
            received += chunk
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == size
    assert elapsed > 1.0  # several body_timeouts: only progress kept it going


def streaming_app(given_up: threading.Event) -> App:
    """Endless streamed answers (128 MiB at most: the buffers fill long before) that
    set ``given_up`` once the server abandons them."""
    application = App()

    @application.route("/generator")
    def generator() -> Iterator[bytes]:
        try:
            for _ in range(2000):
                yield b"g" * 65536
        finally:  # closed: the answer was abandoned
            given_up.set()

    @application.route("/write-bytes")
    def write_bytes(response: Response) -> None:
        try:
            for _ in range(2000):
                response.write_bytes(b"w" * 65536)
        except ClientGone:
            given_up.set()

    @application.route("/coroutine")
    async def coroutine(response: Response) -> None:
        try:
            for _ in range(2000):
                response.write_bytes(b"c" * 65536)  # queued; the worker thread writes it
                await response.drain()
        except ClientGone:
            given_up.set()

    return application


def stalled_reader(live: LiveServer, path: str) -> socket.socket:
    """A client that asks for ``path`` and never reads (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    sock.settimeout(10)
    sock.connect(("127.0.0.1", live.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("path", ["/generator", "/write-bytes", "/coroutine"])
def test_a_client_that_stops_reading_a_stream_is_dropped_after_one_body_timeout(
    serve: Serve, path: str
) -> None:
    """body_timeout is the longest a client may take nothing: the threaded transport
    took two (or three) of them, its socket's kernel send timeout restarting after a
    send that the timeout cut short."""
    given_up = threading.Event()
    live = serve(streaming_app(given_up), body_timeout=2.0)
    with stalled_reader(live, path):
        started = time.monotonic()
        assert given_up.wait(10), "the server still waits for a client that reads nothing"
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3.5, elapsed  # 4 to 6 s before


@pytest.mark.parametrize("path", ["/generator", "/write-bytes", "/coroutine"])
def test_a_slow_but_steady_reader_gets_a_whole_stream(serve: Serve, path: str) -> None:
    """Any byte taken is progress: a reader slower than the stream, whose answer takes
    several body_timeouts, is never taken for a stalled one."""
    given_up = threading.Event()
    # Small, fixed kernel buffers: the socket shows that it takes more often.
    live = serve(streaming_app(given_up), listener=small_send_buffer_listener(), body_timeout=1.0)
    wanted = 4 * 1024 * 1024
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        started, received = time.monotonic(), 0
        while received < wanted:  # 16 KiB every 10 ms at most: over 2.5 s in all
            chunk = sock.recv(16384)
            assert chunk, f"dropped after {received} bytes"
            received += len(chunk)
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        assert not given_up.is_set()  # (before the close, which ends the stream)
    assert elapsed > 2.0  # several body_timeouts: only progress kept it going


@pytest.mark.parametrize("path", ["/generator", "/write-bytes", "/coroutine"])
def test_a_client_that_stops_after_taking_a_little_is_dropped_one_body_timeout_later(
    serve: Serve, path: str
) -> None:
    """body_timeout counts from the last bytes the client took.  The asyncio transport
    looked at the client's progress only at the end of each body_timeout window, so a
    client that took a little early in a window and then nothing was dropped nearly two
    body_timeouts after its last bytes."""
    given_up = threading.Event()
    live = serve(streaming_app(given_up), listener=small_send_buffer_listener(), body_timeout=2.0)
    with stalled_reader(live, path) as sock:
        time.sleep(0.3)  # the answer stalls: the server waits for the client
        received = 0
        while received < 24 * 1024:  # a little (the server's buffers stay well filled)
            chunk = sock.recv(4096)
            assert chunk
            received += len(chunk)
        last_taken = time.monotonic()
        assert given_up.wait(10), "the server still waits for a client that reads nothing"
        elapsed = time.monotonic() - last_taken
    assert 1.5 < elapsed < 3.0, elapsed  # about 3.7 s before (asyncio)


def paced_reader(live: LiveServer, path: str, piece: int, pause: float, wanted: int) -> int:
    """Ask for ``path`` and read ``piece`` bytes at most every ``pause`` seconds (a
    receive buffer of ``piece`` bytes) until ``wanted`` bytes came or the connection
    ended: the bytes read."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, piece)  # before connect
        sock.settimeout(10)
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        received = 0
        try:
            while received < wanted and (chunk := sock.recv(piece)):
                received += len(chunk)
                time.sleep(pause)
        except ConnectionResetError:
            pass
        return received


def rate_app(folder: Path, size: int) -> App:
    """``/big`` (bytes), ``/files/big.bin`` (a static file, with its mount) and
    ``/generator`` (pieces of 64 KiB), each ``size`` bytes."""
    application = big_answer_app(folder, size)

    @application.route("/generator")
    def generator() -> Iterator[bytes]:
        for _ in range(size // 65536):
            yield b"g" * 65536

    return application


SOURCES = {"memory": "/big", "file": "/files/big.bin", "generator": "/generator"}


def dropped_as_too_slow(log_records: LogRecords, timeout: float) -> float | None:
    """When (``time.time()``) the server logged that a client was too slow (None: not
    within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in log_records.records:
            if "slower than min_send_rate" in record.getMessage():
                return record.created
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_reader_slower_than_min_send_rate_is_dropped_after_the_grace(
    serve: Serve, tmp_path: Path, source: str, log_records: LogRecords
) -> None:
    """A slow-read client takes the answer a little at a time, never stalling: it held
    a worker of the threaded transport for as long as it liked (64 of them, every
    worker).  Below min_send_rate once min_send_rate_grace has passed, it is dropped,
    and with one worker thread the next client is served then."""
    size = 32 * 1024 * 1024
    live = serve(
        rate_app(tmp_path, size),
        {"/files/*": str(tmp_path)},
        listener=small_send_buffer_listener(),  # the client soon reads the end once dropped
        worker_threads=1,
        body_timeout=10.0,  # never a stall: the rate drops it
        min_send_rate=256 * 1024,
        min_send_rate_grace=1.0,
    )
    received: list[int] = []
    reader = threading.Thread(  # 80 KiB/s at most
        target=lambda: received.append(paced_reader(live, SOURCES[source], 4096, 0.05, size))
    )
    started = time.time()
    reader.start()
    try:
        time.sleep(0.3)
        assert fast_get(live) == b"ok"  # served once the slow reader's worker is free
        served = time.time() - started
        dropped = dropped_as_too_slow(log_records, 5.0)
    finally:
        reader.join(30)  # it reads what the kernel's buffers still hold, then the end
    assert dropped is not None, "a client slower than min_send_rate was not dropped"
    assert 0.9 < dropped - started < 4.0, dropped - started  # waited on for 1 s
    assert served < 5.0, served
    assert received[0] < size


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_reader_faster_than_min_send_rate_gets_the_whole_answer(
    serve: Serve, tmp_path: Path, source: str
) -> None:
    """The rate is the client's over the time the server waited for it: a reader four
    times faster than the minimum, slower than the server, is never dropped."""
    size = 1024 * 1024
    live = serve(
        rate_app(tmp_path, size),
        {"/files/*": str(tmp_path)},
        listener=small_send_buffer_listener(),  # the server waits for the client
        min_send_rate=100 * 1024,
        min_send_rate_grace=0.3,
    )
    received = paced_reader(live, SOURCES[source], 16384, 0.04, 2 * size)  # 400 KiB/s at most
    assert received > size  # (the head too)


def test_the_time_the_app_takes_never_counts_against_the_client(serve: Serve) -> None:
    """A slow stream (server-sent events...) is not a slow client: only the time the
    server waits for the client to take bytes counts toward min_send_rate."""
    application = App()

    @application.route("/events")
    def events() -> Iterator[bytes]:
        for number in range(30):  # 20 bytes every 50 ms: far below the minimum
            time.sleep(0.05)
            yield f"data: {number:>12}\n\n".encode()

    live = serve(application, min_send_rate=1024 * 1024, min_send_rate_grace=0.2)
    conn = live.connection(timeout=10)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert body.count(b"data: ") == 30


def test_a_closed_connection_whose_answer_is_stuck_is_dropped_and_frees_its_slot(
    serve: Serve,
) -> None:
    """``Connection: close`` and a client that never reads: the last of the answer
    is stuck (in asyncio: in the transport's buffer, below the high-water mark, so
    no drain waits for it) when the connection is closed.  The server drops it after
    body_timeout, and its max_connections slot serves the next client."""
    body = 60 * 1024  # the kernel takes part of it; the rest stays in the transport
    application = app()[0]

    @application.route("/answer")
    def answer() -> bytes:
        return b"a" * body

    # Small, fixed kernel buffers on both sides, so what the kernel takes is known
    # (accepted sockets inherit the listener's SO_SNDBUF): about 32 KiB here.
    listener = small_send_buffer_listener()
    live = serve(application, listener=listener, max_connections=1, body_timeout=1.0)
    with socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        stuck.settimeout(5)
        stuck.connect(("127.0.0.1", live.port))
        stuck.sendall(b"GET /answer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.2)  # answered and closed, the answer still unsent: the slot is held
        started = time.monotonic()
        get = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as extra:
            extra.sendall(get)
            assert [r.status for r in parse_responses(read_until_closed(extra))] == [503]
        while True:  # the slot frees up once the stuck connection is dropped
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
                sock.sendall(get)
                statuses = [r.status for r in parse_responses(read_until_closed(sock))]
            if statuses == [200]:
                break
            assert statuses == [503]
            # body_timeout (asyncio: and a sweep); the threaded transport took up to 3
            assert time.monotonic() - started < 8, "the stuck connection still holds its slot"
            time.sleep(0.1)
        received = b""
        try:
            while chunk := stuck.recv(65536):
                received += chunk
        except ConnectionResetError:  # dropped, not closed after a flush
            pass
    assert len(received) < body


# -- connection limits ----------------------------------------------------------------
def test_idle_keep_alive_connection_is_closed_after_idle_timeout(serve: Serve) -> None:
    live = serve(app()[0], idle_timeout=1.0)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(GET)
        started = time.monotonic()
        data = read_until_closed(sock, timeout=4)
        elapsed = time.monotonic() - started
    assert [r.status for r in parse_responses(data)] == [200]
    assert 0.9 <= elapsed < 4


def test_keep_alive_max_requests_closes_the_connection(serve: Serve) -> None:
    live = serve(app()[0], keep_alive_max_requests=3)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(GET * 5)
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.closes for r in responses] == [False, False, True]


def test_connections_over_max_connections_get_503(serve: Serve) -> None:
    live = serve(app()[0], max_connections=20)
    held = [socket.create_connection(("127.0.0.1", live.port), timeout=5) for _ in range(20)]
    try:
        for sock in held:  # each is accepted and served
            sock.sendall(GET)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as extra:
            responses = parse_responses(read_until_closed(extra))
        assert [r.status for r in responses] == [503]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the slots free up once the server sees the closes
        try:
            assert fast_get(live) == b"ok"
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("size", [0, 1000, 100_000, 3_000_000])
def test_the_503_over_max_connections_is_readable_while_the_client_sends(
    serve: Serve, size: int
) -> None:
    """The refused client may be sending its request: a lingering close lets it read
    the 503 (closing at once reset the connection: BrokenPipe / ConnectionReset)."""
    live = serve(app()[0], max_connections=1)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as held:
        held.sendall(GET)
        assert held.recv(4096).startswith(b"HTTP/1.1 200 ")
        conn = live.connection(timeout=10)
        try:
            conn.request("POST", "/echo", body=b"b" * size)
            resp = conn.getresponse()
            assert resp.status == 503
            resp.read()
        finally:
            conn.close()


def test_a_request_whose_client_left_still_holds_its_connection_slot(serve: Serve) -> None:
    """Clients that reset right after sending their request: the requests still run,
    so they still count against max_connections (else the limit bounds nothing)."""
    application = App()
    done = threading.Event()

    @application.route("/slow")
    async def slow() -> str:
        await asyncio.sleep(1.5)
        return "slow"

    @application.route("/")
    def index() -> str:
        return "ok"

    live = serve(application, max_connections=2)
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)  # the request is running
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as extra:
        responses = parse_responses(read_until_closed(extra))
    assert [r.status for r in responses] == [503]
    deadline = time.monotonic() + 5
    while not done.is_set():  # the slots free up once those requests end
        try:
            assert fast_get(live) == b"ok"
            done.set()
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


_FD_STARVED_SERVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from simple_http_server import App, server
app = App()

@app.route("/")
def index():
    return "ok"

server.start(host="127.0.0.1", port=int(sys.argv[1]), app_conf=app,
             prefer_coroutine=sys.argv[2] == "asyncio")
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_running_out_of_file_descriptors_does_not_spin(transport: str) -> None:
    """accept() failing with EMFILE leaves the listener readable: the server must pause
    accepting (and log once in a while), not spin on it; it recovers once fds free up."""
    free_port = harness.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _FD_STARVED_SERVER, str(free_port), transport],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    held: list[socket.socket] = []
    try:
        harness.wait_listening(free_port)
        for _ in range(80):  # more connections than the server has descriptors
            held.append(socket.create_connection(("127.0.0.1", free_port), timeout=5))
        time.sleep(0.5)
        before = _cpu_seconds(proc.pid)
        time.sleep(2.0)
        assert _cpu_seconds(proc.pid) - before < 0.5  # spinning burns the whole 2 s
        for sock in held:
            sock.close()
        held.clear()
        deadline = time.monotonic() + 10
        while True:  # accepts resume once descriptors are free again
            try:
                with socket.create_connection(("127.0.0.1", free_port), timeout=2) as sock:
                    sock.sendall(GET + b"")
                    if sock.recv(4096).startswith(b"HTTP/1.1 200 "):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.2)
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        _, errors = proc.communicate(timeout=10)
    assert errors.count(b"accept") < 50, errors[-2000:]  # a line a second, not a flood


_THREAD_STARVED_SERVER = """
import os, resource, sys, time
from simple_http_server import App, WebsocketHandler, server
# Imported before the switch to a user that may not read them.
import simple_http_server.transport.aio, simple_http_server.transport.threaded
import simple_http_server.transport.ws_glue, wsproto

class Echo(WebsocketHandler):
    def on_text_message(self, session, message):
        session.send(message)

app = App()
app.websocket_handler(endpoint="/ws")(Echo)

@app.route("/")
def index():
    return "ok"

@app.route("/slow")
def slow():
    time.sleep(0.5)
    return "slow"

# An unprivileged user (root ignores RLIMIT_NPROC) that may run 20 threads in all.
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[3]))
resource.setrlimit(resource.RLIMIT_NPROC, (20, 20))
server.start(host="127.0.0.1", port=int(sys.argv[1]), app_conf=app,
             prefer_coroutine=sys.argv[2] == "asyncio", worker_threads=64)
"""


def _get(port: int, path: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock, 30)


def _websocket_answer(port: int) -> tuple[socket.socket, bytes]:
    """A websocket that sent "hi": the first frame the server answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + bytes([0x81, 0x82, 0, 0, 0, 0])
        + b"hi"
    )
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 4:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), data
    return sock, frames[:4]


def _lone_uid() -> int:
    """A user id no other process runs as: RLIMIT_NPROC counts every process and thread
    of the user, so a shared one (``nobody``) would let another test run on this machine
    use up the limit before the server even starts."""
    return 3_000_000 + os.getpid() % 100_000


def _start_starved(
    script: str, transport: str, tmp_path: Path
) -> tuple[int, Path, subprocess.Popen[bytes]]:
    """Start ``script``'s server as a user of its own (its port, log file and process);
    its output goes to a file: a pipe nobody reads could stall the server."""
    free_port = harness.free_port()
    src = str(Path(__import__("simple_http_server").__file__).parents[1])
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(free_port), transport, str(_lone_uid())],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": src},
        )
    return free_port, log, proc


def test_a_thread_the_system_refuses_costs_no_request_and_not_the_server(
    transport: str, tmp_path: Path
) -> None:
    """Past a thread limit (a container's pids.max), the threaded transport's selector
    thread died on "can't start new thread": the server stopped accepting; asyncio
    answered 500 with a traceback per request.  Now the running threads serve in
    turn, a websocket that gets no thread is closed with 1013, one warning a second."""
    if os.geteuid() != 0:
        pytest.skip("needs root: to run the server as an unprivileged user with RLIMIT_NPROC")
    free_port, log, proc = _start_starved(_THREAD_STARVED_SERVER, transport, tmp_path)
    held: list[socket.socket] = []
    try:
        harness.wait_listening(free_port)
        answers: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: answers.append(_get(free_port, b"/slow")))
            for _ in range(40)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == 40
        assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"slow") for a in answers)
        closes = 0
        for _ in range(30):  # the threaded transport gives each session a thread
            sock, frame = _websocket_answer(free_port)
            held.append(sock)
            assert frame in (b"\x81\x02hi", b"\x88\x11\x03\xf5"), frame  # echo, or 1013
            closes += frame == b"\x88\x11\x03\xf5"
        assert (closes > 0) == (transport == "threaded")
        assert _get(free_port, b"/").endswith(b"\r\n\r\nok")  # and the server serves on
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        proc.wait(10)
    errors = log.read_bytes()
    assert b"Traceback" not in errors, errors[-3000:]
    assert b"could not be started" in errors, errors[-3000:]


_WRITER_STARVED_SERVER = """
import asyncio, os, resource, sys, threading
from simple_http_server import App, WebsocketHandler, server
import simple_http_server.transport.aio, simple_http_server.transport.threaded
import simple_http_server.transport.ws_glue, wsproto

class Big(WebsocketHandler):
    async def on_text_message(self, session, message):
        release = threading.Event()
        hogs = 0
        while hogs < 200:  # take every thread left: a writer thread gets none
            try:
                threading.Thread(target=release.wait, daemon=True).start()
            except RuntimeError:
                break
            hogs += 1
        try:
            session.send("x" * 16_000_000)  # more than the socket takes at once
            await asyncio.wait_for(session.drain(), 20)
            print("drained", flush=True)
        finally:
            release.set()

    def on_close(self, session, reason):
        print("on_close", reason.code, flush=True)

app = App()
app.websocket_handler(endpoint="/ws")(Big)
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[3]))
resource.setrlimit(resource.RLIMIT_NPROC, (30, 30))
server.start(host="127.0.0.1", port=int(sys.argv[1]), app_conf=app, max_send_backlog=0,
             prefer_coroutine=sys.argv[2] == "asyncio", worker_threads=4)
"""


def test_a_websocket_writer_thread_the_system_refuses_ends_the_session(
    transport: str, tmp_path: Path
) -> None:
    """The threaded transport's session writes what a coroutine's send leaves unsent
    from a writer thread started on demand.  Refused (a thread limit), the send raised
    RuntimeError into the handler and the session hung: the rest of the message never
    went, drain() never returned, the client waited for ever.  Now the session ends:
    the client reads the end of the connection, on_close runs (1006: the Close cannot
    follow a frame cut short), one warning.  (asyncio writes from its loop: no thread.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root: to run the server as an unprivileged user with RLIMIT_NPROC")
    free_port, log, proc = _start_starved(_WRITER_STARVED_SERVER, transport, tmp_path)
    got = 0
    try:
        harness.wait_listening(free_port)
        with socket.create_connection(("127.0.0.1", free_port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                + bytes([0x81, 0x82, 0, 0, 0, 0])
                + b"go"
            )
            time.sleep(1.0)  # not reading yet: the send leaves bytes for the writer
            while got < 16_000_000:  # the whole message (asyncio), or the end (threaded)
                chunk = sock.recv(1 << 20)  # the timeout: what hung before
                if not chunk:
                    break
                got += len(chunk)
        deadline = time.monotonic() + 20
        while b"on_close" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
    output = log.read_bytes()
    assert b"Traceback" not in output, output[-3000:]
    if transport == "threaded":
        assert got < 16_000_000
        assert b"A websocket writer thread could not be started" in output, output[-3000:]
        assert b"on_close 1006" in output, output[-3000:]
    else:
        assert got > 16_000_000 and b"drained" in output, output[-3000:]


def test_worker_threads_bound_concurrent_sync_controllers(serve: Serve) -> None:
    application, hits, release = app()
    live = serve(application, worker_threads=2)
    results: list[bytes] = []

    def client() -> None:
        results.append(fast_get(live, "/block"))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 5
        while hits.get("block", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert hits.get("block", 0) == 2  # two threads, two controllers at a time
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert results == [b"released"] * 6
