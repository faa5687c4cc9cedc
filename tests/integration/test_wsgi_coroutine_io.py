"""HTTP I/O from ``async def`` controllers under a WSGI server: the WSGI server's
request thread does it, never the shared background loop, so a slow client holds up
no other coroutine; ``write_bytes`` is write-behind, bounded by ``max_send_backlog``
and paced by ``await response.drain()``.  A real threaded wsgiref server on
127.0.0.1 and raw-socket clients; every app runs behind :func:`strict`, which
records any ``write()`` after the app returned and any socket I/O done by another
thread than the request's."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from simple_http_server import App, RequestBodyReader, Response, server

from ..conftest import LogRecords
from ..robustness.wire import read_until_closed
from .test_coroutine_io import (
    MIB,
    add_fast_route,
    expected_body,
    never_reading_client,
    patient_reader_app,
    read_slowly,
    small_window_client,
    streamer_app,
    writer_app,
)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False  # a request thread stuck on a test's client never holds up close


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@dataclass
class WSGILive:
    """A running WSGI server (wsgiref, one thread per request)."""

    port: int

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


class _CheckedInput:
    """``wsgi.input``, recording a read done by another thread than the request's."""

    def __init__(self, wsgi_input: Any, check: Callable[[str], None]) -> None:
        self._input = wsgi_input
        self._check = check

    def read(self, *args: Any) -> bytes:
        self._check("wsgi.input.read()")
        return bytes(self._input.read(*args))


def strict(app: Callable[..., Any], violations: list[str]) -> Callable[..., Any]:
    """``app``, recording what PEP 3333 or the shared loop forbids: ``write()`` after
    the app returned, ``write()`` or a body read by another thread than the request's
    (the shared loop's, say)."""

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        returned = threading.Event()
        request_thread = threading.current_thread()

        def check(call: str) -> None:
            thread = threading.current_thread()
            if thread is not request_thread:
                violations.append(f"{call} in thread {thread.name}")

        def start(*args: Any) -> Callable[[bytes], None]:
            write = start_response(*args)

            def checked_write(data: bytes) -> None:
                if returned.is_set():
                    violations.append("write() after the app returned")
                check("write()")
                write(data)

            return checked_write

        environ["wsgi.input"] = _CheckedInput(environ["wsgi.input"], check)
        try:
            return app(environ, start)
        finally:
            returned.set()

    return checked


@contextlib.contextmanager
def wsgi_server(app: App, **config: Any) -> Iterator[WSGILive]:
    """Serve ``strict(init_wsgi_proxy(app_conf=app, **config))`` until the block ends;
    then fail if :func:`strict` saw a violation."""
    violations: list[str] = []
    proxy = server.init_wsgi_proxy(app_conf=app, **config)
    httpd = make_server(
        "127.0.0.1",
        0,
        strict(proxy, violations),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield WSGILive(int(httpd.server_address[1]))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
    assert not violations, sorted(set(violations))


def timed_get(live: WSGILive, path: str, timeout: float = 6.0) -> tuple[float, bytes]:
    """Seconds an unrelated GET takes (``timeout`` at most: the loop is stalled), and its body."""
    started = time.monotonic()
    conn = live.connection(timeout)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
    except TimeoutError:
        return time.monotonic() - started, b""
    finally:
        conn.close()
    return time.monotonic() - started, body


def split_answer(data: bytes) -> tuple[bytes, bytes]:
    """The status line and the body of one close-delimited wsgiref answer."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    return head.split(b"\r\n")[0], body


# -- the request thread writes: a stalled client delays no other coroutine -----------
def test_a_coroutine_streaming_to_a_client_that_never_reads_delays_no_other_coroutine() -> None:
    app, seen = streamer_app()
    with wsgi_server(app, max_send_backlog=64 * MIB) as live:
        with never_reading_client(live.port) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)  # the client's window and the server's buffers are full
            took, body = timed_get(live, "/fast")
        # The client left: the failed write() reaches the coroutine as ClientGone.
        assert seen["done"].wait(10)
    assert body == b"fast", f"an unrelated coroutine waited {took:.1f}s for a stalled client"
    assert took < 2.0, f"an unrelated coroutine waited {took:.1f}s for a stalled client"
    assert seen["outcome"] == "ClientGone"


# -- the request thread reads: a trickled upload delays no other coroutine -----------
def test_a_coroutine_reading_a_trickled_upload_delays_no_other_coroutine() -> None:
    app = App()
    add_fast_route(app)

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
        return {"received": total}

    size = 100_000
    with wsgi_server(app) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + b"u" * 10
            )
            time.sleep(0.3)  # the controller now waits for the rest of the body
            result: list[tuple[float, bytes]] = []
            getter = threading.Thread(target=lambda: result.append(timed_get(live, "/fast")))
            getter.start()
            getter.join(4.0)  # the rest of the body comes after the GET, or after 4 s
            for _ in range(10):  # trickled: ten pieces
                sock.sendall(b"u" * ((size - 10) // 10))
                time.sleep(0.01)
            getter.join(10)
            status, body = split_answer(read_until_closed(sock, timeout=10))
    assert result and result[0][1] == b"fast"
    assert result[0][0] < 2.0, f"an unrelated coroutine waited {result[0][0]:.1f}s for a body"
    assert status.endswith(b" 200 OK") and body == b'{"received": 100000}'


def test_a_body_read_the_coroutine_stopped_waiting_for_loses_nothing() -> None:
    """``asyncio.wait_for(reader.read(), ...)`` times out while the body is late (the
    request thread goes on reading); the next read gets every byte."""
    timeouts: list[int] = []
    with wsgi_server(patient_reader_app(timeouts)) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n")
            time.sleep(0.5)  # the controller's read times out meanwhile
            sock.sendall(b"0123456789" * 1000)
            status, body = split_answer(read_until_closed(sock, timeout=10))
    assert timeouts and timeouts[0] == 0
    assert status.endswith(b" 200 OK")
    assert body == b'{"received": 10000, "intact": true}'


def test_an_async_generator_body_reads_the_upload_it_echoes() -> None:
    """A streamed answer (the response iterable) whose generator awaits body reads."""
    app = App()

    @app.route("/echo", method="POST")
    async def echo(reader: RequestBodyReader) -> Any:
        async def pieces() -> Any:
            while chunk := await reader.read(4096):
                yield chunk.upper()

        return pieces()

    data = bytes(range(97, 123)) * 4000
    with wsgi_server(app) as live:
        conn = live.connection(10)
        try:
            conn.request("POST", "/echo", body=data)
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, data.upper())
        finally:
            conn.close()


# -- write-behind: in order, paced by drain(), bounded by max_send_backlog -----------
def test_many_small_coroutine_writes_arrive_in_order() -> None:
    app = App()

    @app.route("/pieces")
    async def pieces(response: Response) -> None:
        response.add_header("Content-Type", "text/plain")
        for i in range(2000):
            response.write_bytes(b"%d," % i)
            if i % 500 == 0:
                await asyncio.sleep(0)

    with wsgi_server(app) as live:
        for _ in range(3):
            conn = live.connection(10)
            try:
                conn.request("GET", "/pieces")
                reply = conn.getresponse()
                assert reply.status == 200
                assert reply.read() == b"".join(b"%d," % i for i in range(2000))
            finally:
                conn.close()


def test_drain_paces_a_large_body_to_a_slow_reader_whole_and_in_order() -> None:
    """8 MiB through a 1 MiB backlog: ``await response.drain()`` waits for a client
    that reads nothing for 3 s (another coroutine is served meanwhile), then slowly."""
    app, seen = writer_app(512 * 1024, 16, drain=True)
    add_fast_route(app)
    with wsgi_server(app, max_send_backlog=MIB) as live:
        with small_window_client(live.port, 65536) as sock:
            sock.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)
            took, fast = timed_get(live, "/fast")
            data = read_slowly(sock, pause_first=max(0.0, 3.0 - took))
        assert seen["done"].wait(5)
    assert fast == b"fast" and took < 2.0, f"an unrelated coroutine waited {took:.1f}s"
    assert seen["outcome"] == "complete"
    status, body = split_answer(data)
    assert status.endswith(b" 200 OK") and body == expected_body(512 * 1024, 16)


def test_a_coroutine_that_outruns_a_client_that_never_reads_is_dropped_at_the_backlog(
    log_records: LogRecords,
) -> None:
    app, seen = writer_app(MIB, 8, drain=False)
    with wsgi_server(app, max_send_backlog=MIB) as live:
        with never_reading_client(live.port) as sock:
            sock.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
            stopped = seen["done"].wait(5)
            # The request thread still writes the first MiB; then the answer is cut.
            data = read_until_closed(sock, timeout=10)
    assert stopped, "the coroutine is still writing"
    assert seen["outcome"] == "ClientGone"
    assert len(data) < 3 * MIB
    warnings = [r.getMessage() for r in log_records.records if "max_send_backlog" in r.getMessage()]
    assert len(warnings) == 1, warnings
