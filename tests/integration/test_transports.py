"""Both transports under concurrency: slow controllers, many connections,
stop/start cycles without leaks, ``start_async`` on the caller's loop."""

from __future__ import annotations

import asyncio
import http.client
import os
import resource
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from simple_http_server import App, RequestBodyReader, server
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server

from ..conftest import LiveServer, live_server
from .test_wire import RawConn, fetch, get, run_in_thread


def concurrency_app(started: threading.Event) -> App:
    app = App()

    @app.route("/sleep-sync")
    def sleep_sync() -> str:
        started.set()
        time.sleep(2)
        return "slept"

    @app.route("/sleep-async")
    async def sleep_async() -> str:
        started.set()
        await asyncio.sleep(2)
        return "slept"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    @app.route("/fast-async")
    async def fast_async() -> str:
        return "fast"

    return app


def timed_get(live: LiveServer, path: str) -> float:
    conn = live.connection(timeout=10)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.read() == b"fast"
        return time.perf_counter() - started
    finally:
        conn.close()


# The issue demands these timing assertions explicitly (100 ms while a 2 s
# controller runs); the median of a few requests keeps a loaded machine's
# one-off hiccup from failing them, while a blocked server takes ~2 s.
@pytest.mark.parametrize("slow", ["/sleep-sync", "/sleep-async"])
@pytest.mark.parametrize("fast", ["/fast", "/fast-async"])
def test_slow_controller_does_not_delay_others(
    serve: Callable[..., LiveServer], slow: str, fast: str
):
    started = threading.Event()
    live = serve(concurrency_app(started))
    result: list[bytes] = []

    def slow_client() -> None:
        conn = live.connection(timeout=10)
        conn.request("GET", slow)
        result.append(conn.getresponse().read())
        conn.close()

    thread = threading.Thread(target=slow_client)
    began = time.monotonic()
    thread.start()
    assert started.wait(5)
    latencies = [timed_get(live, fast) for _ in range(5)]
    assert time.monotonic() - began < 1.9, "the fast requests ran after the slow one"
    assert statistics.median(latencies) < 0.1, latencies
    thread.join(10)
    assert result == [b"slept"]


def test_several_slow_controllers_run_in_parallel(serve: Callable[..., LiveServer]):
    started = threading.Event()
    live = serve(concurrency_app(started))
    results: list[bytes] = []

    def client(path: str) -> None:
        conn = live.connection(timeout=10)
        conn.request("GET", path)
        results.append(conn.getresponse().read())
        conn.close()

    threads = [
        threading.Thread(target=client, args=(p,)) for p in ["/sleep-sync", "/sleep-async"] * 4
    ]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"slept"] * 8
    assert time.monotonic() - began < 3.5  # in series it would take 16 s


# -- many connections ----------------------------------------------------------
def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_1000_keep_alive_connections_held_while_serving(serve: Callable[..., LiveServer]):
    count = 1000
    raise_fd_limit(2 * count + 512)
    started = threading.Event()
    live = serve(concurrency_app(started), worker_threads=16)
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((live.host, live.port), timeout=20)
            conns.append(sock)
            sock.sendall(get("/fast"))
        for sock in conns:  # every one was answered and kept open
            data = b""
            while not data.endswith(b"fast"):
                chunk = sock.recv(4096)
                assert chunk, "a keep-alive connection was closed"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close" not in data.lower()
        # A normal client is still served while all of them stay open.
        assert timed_get(live, "/fast") < 5
        # And the parked connections are still alive and usable.
        for sock in conns[::100]:
            sock.sendall(get("/fast"))
            data = b""
            while not data.endswith(b"fast"):
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
    finally:
        for sock in conns:
            sock.close()


def test_connections_over_max_get_503(serve: Callable[..., LiveServer]):
    started = threading.Event()
    live = serve(concurrency_app(started), max_connections=3)
    held = [RawConn(live) for _ in range(3)]
    try:
        for raw in held:
            raw.send(get("/fast"))
            assert raw.response()[1] == b"fast"
        with RawConn(live) as extra:
            resp, _ = extra.response()
            assert resp.status == 503
    finally:
        for raw in held:
            raw.close()
    time.sleep(0.2)
    assert fetch(live.port, "/fast") == b"fast"


# -- leaks ----------------------------------------------------------------------
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(expected_threads: int, expected_fds: int) -> tuple[int, int]:
    """Thread and fd counts once closing threads and sockets have gone (bounded)."""
    deadline = time.monotonic() + 5
    while True:
        counts = threading.active_count(), open_fds()
        settled = counts[0] <= expected_threads and counts[1] <= expected_fds
        if settled or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def one_cycle(transport: str, app: App) -> None:
    with live_server(app, transport) as live:
        idle = RawConn(live)  # left open and parked when stop() comes
        idle.send(get("/fast"))
        assert idle.response()[1] == b"fast"
        for path in ("/fast", "/fast-async"):
            assert fetch(live.port, path) == b"fast"
        partial = socket.create_connection((live.host, live.port), timeout=5)
        partial.sendall(b"GET / HTTP/1.1\r\nHo")  # a half-sent head at stop time
        time.sleep(0.05)
    assert idle.read_eof() == b""
    idle.close()
    partial.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_ten_stop_start_cycles_leak_nothing(transport: str):
    app = concurrency_app(threading.Event())
    one_cycle(transport, app)  # warm-up: the shared background loop and pools
    threads, fds = settle(10**6, 10**6)
    began = time.monotonic()
    for _ in range(10):
        one_cycle(transport, app)
    assert time.monotonic() - began < 30
    after_threads, after_fds = settle(threads, fds)  # fewer: idle pool threads ended meanwhile
    assert after_threads <= threads and after_fds <= fds, (after_threads, after_fds)


# -- stop from inside -------------------------------------------------------------
def test_stop_from_a_controller_does_not_deadlock(transport: str):
    app = App()
    holder: dict[str, Server] = {}

    @app.route("/shutdown")
    def shutdown() -> str:
        holder["server"].stop()
        return "bye"

    @app.route("/shutdown-async")
    async def shutdown_async() -> str:
        holder["server"].stop()
        return "bye"

    for path in ("/shutdown", "/shutdown-async"):
        srv = Server(
            app, ServerConfig(host="127.0.0.1", port=0), prefer_coroutine=transport == "asyncio"
        )
        holder["server"] = srv
        thread = run_in_thread(srv)
        began = time.monotonic()
        assert fetch(srv.port, path) == b"bye"
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - began < 2
        assert not srv.is_ready()


# -- start_async on the caller's loop ---------------------------------------------
async def aio_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(path, "Connection: close\r\n"))
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data.partition(b"\r\n\r\n")[2]


async def wait_ready(srv: Server) -> None:
    for _ in range(500):
        if srv.is_ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("server did not become ready")


def test_start_async_on_callers_loop_and_stop_async():
    app = concurrency_app(threading.Event())

    async def main() -> None:
        srv = Server(app, ServerConfig(host="127.0.0.1", port=0), prefer_coroutine=True)
        assert not srv.is_ready()
        task = asyncio.create_task(srv.start_async())
        await wait_ready(srv)
        transport: Any = srv._transport
        assert transport.loop is asyncio.get_running_loop()  # the caller's loop
        assert await aio_get(srv.port, "/fast") == b"fast"
        assert await aio_get(srv.port, "/fast-async") == b"fast"
        began = time.monotonic()
        await srv.stop_async()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - began < 1
        assert not srv.is_ready()

    asyncio.run(main())


def test_start_async_stopped_from_another_thread():
    app = concurrency_app(threading.Event())

    async def main() -> None:
        srv = Server(app, ServerConfig(host="127.0.0.1", port=0), prefer_coroutine=True)
        task = asyncio.create_task(srv.start_async())
        await wait_ready(srv)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        await asyncio.wait_for(task, 2)
        stopper.join(2)
        assert not stopper.is_alive()
        assert not srv.is_ready()

    asyncio.run(main())


def test_start_async_finishes_in_flight_request_on_stop():
    started = threading.Event()
    app = concurrency_app(started)

    async def main() -> None:
        srv = Server(app, ServerConfig(host="127.0.0.1", port=0), prefer_coroutine=True)
        task = asyncio.create_task(srv.start_async())
        await wait_ready(srv)
        request = asyncio.create_task(aio_get(srv.port, "/sleep-async"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        srv.stop()  # sync stop on the loop thread: schedules the shutdown
        assert await asyncio.wait_for(request, 5) == b"slept"
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_module_start_async_and_stop():
    app = concurrency_app(threading.Event())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        task = asyncio.create_task(server.start_async(host="127.0.0.1", port=port, app_conf=app))
        for _ in range(500):
            if server.is_ready():
                break
            await asyncio.sleep(0.01)
        assert server.is_ready()
        assert await aio_get(port, "/fast") == b"fast"
        server.stop()
        await asyncio.wait_for(task, 2)
        assert not server.is_ready()

    asyncio.run(main())


def test_module_start_with_prefer_coroutine_serves_keep_alive():
    app = concurrency_app(threading.Event())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    thread = threading.Thread(
        target=server.start,
        kwargs={"host": "127.0.0.1", "port": port, "app_conf": app, "prefer_coroutine": True},
        daemon=True,
    )
    thread.start()
    for _ in range(500):
        if server.is_ready():
            break
        time.sleep(0.01)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        first = None
        for _ in range(20):
            conn.request("GET", "/fast")
            assert conn.getresponse().read() == b"fast"
            first = first or conn.sock
            assert conn.sock is first  # keep-alive works in coroutine mode
        conn.close()
    finally:
        began = time.monotonic()
        server.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - began < 1  # no fixed sleep in stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_module_start_takes_the_originals_positional_arguments(transport: str) -> None:
    """``server.start("", 8080)`` worked in 0.22.3; it was a TypeError (``workers`` came first)."""
    app = concurrency_app(threading.Event())
    port, coroutine = free_port(), transport == "asyncio"
    # host, port, ssl, ssl_protocol, ssl_check_hostname, keyfile, certfile, keypass,
    # ssl_context, resources, connection_idle_time, keep_alive, keep_alive_max_request,
    # prefer_coroutine, app_conf: every argument in the original's order
    args = ("127.0.0.1", port, False, ssl.PROTOCOL_TLS_SERVER, False, "", "", "", None, None,
            None, True, None, coroutine, app)  # fmt: skip
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.is_ready() or errors:
            break
        time.sleep(0.01)
    try:
        assert errors == []
        assert server._server is not None and server._server.prefer_coroutine is coroutine
        assert fetch(port, "/fast") == b"fast"
    finally:
        server.stop()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("prefer_coroutine", [None, True, False])
def test_module_start_async_takes_the_originals_positional_arguments(
    prefer_coroutine: bool | None,
) -> None:
    """``await server.start_async("", 8080)``: asyncio unless ``prefer_coroutine`` says
    otherwise, given by name or in its place among the positional arguments."""
    app = concurrency_app(threading.Event())
    port = free_port()
    if prefer_coroutine is None:
        args: tuple[Any, ...] = ("127.0.0.1", port)
        kwargs: dict[str, Any] = {"app_conf": app}
    else:
        args = ("127.0.0.1", port, False, ssl.PROTOCOL_TLS_SERVER, False, "", "", "", None,
                None, None, True, None, prefer_coroutine, app)  # fmt: skip
        kwargs = {}

    async def main() -> None:
        task = asyncio.create_task(server.start_async(*args, **kwargs))
        for _ in range(500):
            if server.is_ready() or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception()
        assert server._server is not None
        assert server._server.prefer_coroutine is (prefer_coroutine is not False)
        assert await aio_get(port, "/fast") == b"fast"
        server.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


# -- backpressure -------------------------------------------------------------------
def backpressure_app(produced: list[int], reading: threading.Event) -> App:
    app = App()

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> str:
        await asyncio.sleep(1.0)  # not reading: the upload must stall, not pile up
        reading.set()
        size = 0
        while chunk := await reader.read(1 << 20):
            size += len(chunk)
        return str(size)

    @app.route("/download")
    def download() -> Any:
        def chunks() -> Any:
            for _ in range(256):
                produced.append(1)
                yield b"x" * (1 << 20)

        return chunks()

    return app


def test_upload_backpressure(serve: Callable[..., LiveServer]):
    live = serve(backpressure_app([], reading := threading.Event()))
    total = 256 << 20
    sock = socket.create_connection((live.host, live.port), timeout=10)
    try:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        sock.setblocking(False)
        piece = b"u" * (1 << 16)
        sent = 0
        while not reading.is_set() and sent < total:
            try:
                sent += sock.send(piece[: total - sent])
            except BlockingIOError:
                time.sleep(0.005)
        absorbed = sent
        sock.settimeout(30)
        while sent < total:
            sent += sock.send(piece[: total - sent])
        reply = RawConn.__new__(RawConn)
        reply.sock, reply.file = sock, sock.makefile("rb")
        resp, body = reply.response()
        reply.file.close()
    finally:
        sock.close()
    assert resp.status == 200 and body == str(total).encode()
    # Kernel buffers absorb a few MB; without paused reading all 256 MB would.
    assert absorbed < 64 << 20, absorbed


def test_download_backpressure(serve: Callable[..., LiveServer]):
    produced: list[int] = []
    live = serve(backpressure_app(produced, threading.Event()))
    with RawConn(live, timeout=30) as raw:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        raw.send(get("/download"))
        assert raw.file.readline().startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # the client does not read: the generator must wait
        stalled_at = len(produced)
        size = 0
        while line := raw.file.readline():  # chunked framing
            if line == b"\r\n":
                break
        while True:
            length = int(raw.file.readline().strip(), 16)
            if not length:
                break
            size += len(raw.file.read(length))
            raw.file.readline()
    assert size == 256 << 20
    assert len(produced) == 256
    assert stalled_at < 64, stalled_at


def test_module_start_serves_the_app_conf_given(transport: str) -> None:
    import simple_http_server.server as server_module
    from simple_http_server import get_app_conf

    app = get_app_conf("transport-test-app-conf")

    @app.route("/tagged")
    def tagged() -> dict:
        return {"app": "tagged"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thread = threading.Thread(
        target=server_module.start,
        kwargs={
            "host": "127.0.0.1",
            "port": port,
            "app_conf": app,
            "prefer_coroutine": transport == "asyncio",
        },
        daemon=True,
    )
    thread.start()
    try:
        for _ in range(500):
            if server_module.is_ready():
                break
            time.sleep(0.01)
        assert fetch(port, "/tagged") == b'{"app": "tagged"}'
    finally:
        server_module.stop()
        thread.join(10)
    assert not thread.is_alive()
