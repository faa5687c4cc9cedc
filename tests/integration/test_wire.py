"""HTTP/1.1 on the wire, in both transports: keep-alive, pipelining, 100-continue,
HEAD, chunked bodies, malformed input, idle timeout, graceful stop and restart."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simple_http_server import App, BytesBody, Request, server
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server
from simple_http_server.testing import TestClient

from ..conftest import LiveServer, LogRecords


# -- raw-socket helpers (also used by test_transports.py) -------------------
class _NoClose:
    """A file wrapper whose close() keeps the shared buffered reader open."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


class _FileSock:
    def __init__(self, file: Any) -> None:
        self._file = _NoClose(file)

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return self._file


class RawConn:
    """A raw client socket that reads responses one after the other."""

    def __init__(self, live: LiveServer, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((live.host, live.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        resp = http.client.HTTPResponse(_FileSock(self.file), method=method)  # type: ignore[arg-type]
        resp.begin()
        return resp, resp.read()

    def read_eof(self) -> bytes:
        """Everything until the server closes (raises on timeout)."""
        return self.file.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def wire_app() -> App:
    app = App()

    @app.route("/")
    def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.route("/host")
    def host(req: Request) -> dict[str, str]:
        return {"host": req.host, "header": req.headers.get("Host"), "path": req.path}

    @app.route("/port")
    def port(req: Request) -> str:
        assert req.client_address is not None
        return str(req.client_address[1])

    @app.route("/slow")
    def slow(ms: int = 200) -> str:
        time.sleep(ms / 1000)
        return "slow"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    @app.route("/query")
    def query(req: Request) -> dict[str, Any]:
        return {"path": req.path, "query": req.query_string, "parameter": req.parameter}

    @app.route("/echo", method=["POST", "PUT"])
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/big")
    def big(size: int = 1024) -> bytes:
        return b"x" * size

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    return app


# -- keep-alive and pipelining ----------------------------------------------
def test_keep_alive_reuses_one_connection_for_100_requests(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    conn = live.connection()
    try:
        ports = set()
        first_sock = None
        for _ in range(100):
            conn.request("GET", "/port")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert resp.getheader("Connection") is None
            ports.add(body)
            first_sock = first_sock or conn.sock
            assert conn.sock is first_sock
        assert len(ports) == 1
        assert int(ports.pop()) == first_sock.getsockname()[1]
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(get("/slow?ms=300") + get("/fast") + get("/slow?ms=0"))
        bodies = [raw.response()[1] for _ in range(3)]
    assert bodies == [b"slow", b"fast", b"slow"]


def test_pipelined_post_bodies_stay_separate(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\ndefg"
        )
        assert raw.response()[1] == b"abc"
        assert raw.response()[1] == b"defg"


def test_requests_then_the_clients_end_are_all_answered_then_closed(
    serve: Callable[..., LiveServer],
):
    """The end of input read with (or after) the last request is seen once it is
    answered: the connection closes instead of waiting for its idle timeout."""
    live = serve(wire_app(), idle_timeout=30)
    for requests in (1, 2):
        with RawConn(live, timeout=5) as raw:
            raw.send(get("/fast") * requests)
            raw.sock.shutdown(socket.SHUT_WR)
            assert [raw.response()[1] for _ in range(requests)] == [b"fast"] * requests
            assert raw.read_eof() == b""


def test_keep_alive_max_requests_closes(serve: Callable[..., LiveServer]):
    live = serve(wire_app(), keep_alive_max_requests=3)
    with RawConn(live) as raw:
        raw.send(get("/fast") * 3)
        closes = [raw.response()[0].getheader("Connection") for _ in range(3)]
        assert closes == [None, None, "close"]
        assert raw.read_eof() == b""


def test_a_client_keep_alive_header_does_not_override_the_server_limits(
    serve: Callable[..., LiveServer],
):
    live = serve(wire_app(), keep_alive_max_requests=3)
    with RawConn(live) as raw:
        raw.send(get("/fast", "Keep-Alive: timeout=0, max=1\r\n") * 3)
        closes = [raw.response()[0].getheader("Connection") for _ in range(3)]
        assert closes == [None, None, "close"]


def test_keep_alive_disabled_closes_each_response(serve: Callable[..., LiveServer]):
    live = serve(wire_app(), keep_alive=False)
    with RawConn(live) as raw:
        raw.send(get("/fast"))
        resp, body = raw.response()
        assert body == b"fast" and resp.getheader("Connection") == "close"
        assert raw.read_eof() == b""


@pytest.mark.parametrize(
    ("target", "query", "parameter"),
    [
        ("/query?q=1#frag", "q=1", {"q": "1"}),
        ("/query#frag?q=1", "", {}),
        ("/query?q=a%23b#f", "q=a%23b", {"q": "a#b"}),
    ],
)
def test_a_fragment_in_the_target_is_dropped(
    serve: Callable[..., LiveServer], target: str, query: str, parameter: dict[str, str]
):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(get(target))
        resp, body = raw.response()
    assert resp.status == 200
    assert json.loads(body) == {"path": "/query", "query": query, "parameter": parameter}
    assert TestClient(wire_app()).get(target).json() == json.loads(body)


# -- request bodies -----------------------------------------------------------
def test_expect_100_continue(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(
            b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        # The body is sent only after the interim answer arrives.
        assert raw.file.readline() == b"HTTP/1.1 100 Continue\r\n"
        while raw.file.readline() != b"\r\n":
            pass
        raw.send(b"hello")
        resp, body = raw.response()
        assert resp.status == 200 and body == b"hello"


def test_no_100_continue_when_the_body_is_refused(serve: Callable[..., LiveServer]):
    live = serve(wire_app(), max_body_size=10)
    with RawConn(live) as raw:
        raw.send(
            b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        resp, _ = raw.response()  # a final answer, not 100 Continue
        assert resp.status == 413
        # The client may or may not send the body now: the server closes.
        assert resp.getheader("Connection") == "close"
        assert raw.read_eof() == b""


def test_chunked_upload(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    conn = live.connection()
    try:
        pieces = [b"a" * 1000, b"b" * 70000, b"c"]
        conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b"".join(pieces)
        conn.request("GET", "/fast")  # the connection is still usable
        assert conn.getresponse().read() == b"fast"
    finally:
        conn.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_answer_before_a_large_body_says_close(
    serve: Callable[..., LiveServer], framing: str
) -> None:
    """More than DRAIN_LIMIT (1 MiB) of unread body, or an unknown amount (chunked), is
    not drained: the answer says ``Connection: close`` and a lingering close lets the
    client, still sending, read it (no reset, no keep-alive promise broken)."""
    live = serve(wire_app())
    body = b"z" * (8 << 20)
    conn = live.connection()
    if framing == "length":
        conn.request("POST", "/nowhere", body=body)
    else:
        conn.request("POST", "/nowhere", body=iter([body[:65536]] * 3), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 404
    assert resp.getheader("Connection") == "close"
    resp.read()
    conn.close()


def test_unread_body_is_skipped_on_keep_alive(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(
            b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" + get("/fast")
        )
        assert raw.response()[1] == b"fast"
        assert raw.response()[1] == b"fast"


def test_large_response_arrives_whole(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    conn = live.connection()
    try:
        size = 8 * 1024 * 1024
        conn.request("GET", f"/big?size={size}")
        resp = conn.getresponse()
        assert resp.status == 200
        assert len(resp.read()) == size
    finally:
        conn.close()


# -- HEAD ---------------------------------------------------------------------
def test_head_has_headers_and_no_body(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(b"HEAD /big?size=5000 HTTP/1.1\r\nHost: t\r\n\r\n" + get("/fast"))
        resp, body = raw.response("HEAD")
        assert resp.status == 200
        assert resp.getheader("Content-Length") == "5000"
        assert body == b""
        # No stray body bytes: the next response parses cleanly.
        resp, body = raw.response()
        assert body == b"fast"


# -- errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_line",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"],
)
def test_malformed_request_line_gets_400_and_server_keeps_serving(
    serve: Callable[..., LiveServer], request_line: bytes
):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(request_line)
        resp, body = raw.response()
        assert resp.status == 400
        assert resp.getheader("Connection") == "close"
        assert b'"code": 400' in body
        assert raw.read_eof() == b""
    conn = live.connection()
    try:
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_100kb_header_line_gets_431(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        # Everything is sent before reading: the server must not reset the connection.
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        resp, _ = raw.response()
        assert resp.status == 431
        assert resp.getheader("Connection") == "close"


def test_error_answer_is_readable_while_client_keeps_sending(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(b"NOT HTTP AT ALL\r\n\r\n")
        time.sleep(0.1)
        try:
            raw.send(b"x" * 200_000)  # the server discards it instead of resetting
        except OSError:
            pass
        resp, _ = raw.response()
        assert resp.status == 400


def test_405_carries_allow(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(get("/echo"))
        resp, _ = raw.response()
        assert resp.status == 405
        assert set(resp.getheader("Allow", "").replace(" ", "").split(",")) == {"POST", "PUT"}


def test_raising_controller_gives_500_without_exception_text(
    serve: Callable[..., LiveServer],
):
    live = serve(wire_app())
    with RawConn(live) as raw:
        raw.send(get("/boom") + get("/fast"))
        resp, body = raw.response()
        assert resp.status == 500
        assert b"secret" not in body and b"Traceback" not in body
        assert raw.response()[1] == b"fast"


@pytest.mark.parametrize("path", ["//", "//example.com/x", "//?a=1", "///"])
def test_double_slash_path_is_answered(serve: Callable[..., LiveServer], path: str):
    live = serve(wire_app())
    with RawConn(live, timeout=5) as raw:
        raw.send(get(path) + get("/fast"))
        resp, _ = raw.response()
        assert resp.status in (200, 404)
        assert raw.response()[1] == b"fast"


def test_absolute_form_target_is_answered(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    with RawConn(live, timeout=5) as raw:
        raw.send(get("http://t/fast"))
        resp, body = raw.response()
        assert (resp.status, body) == (200, b"fast")


ABSOLUTE_FORMS = {
    "http://real.example:8080/host": "real.example:8080",
    "HTTP://Real.Example/host?x=1": "Real.Example",  # the scheme is case-insensitive
    "https://[::1]:8443/host": "[::1]:8443",
}


@pytest.mark.parametrize("target", list(ABSOLUTE_FORMS))
def test_an_absolute_form_targets_host_wins_over_the_host_header(
    serve: Callable[..., LiveServer], target: str
) -> None:
    """RFC 9112 3.2.2: the server MUST ignore Host and use the target's host."""
    expected = {"host": ABSOLUTE_FORMS[target], "header": ABSOLUTE_FORMS[target], "path": "/host"}
    with RawConn(serve(wire_app()), timeout=5) as raw:
        raw.send(get(target).replace(b"Host: t", b"Host: other.example"))
        resp, body = raw.response()
        assert (resp.status, json.loads(body)) == (200, expected)
    reply = TestClient(wire_app()).get(target, headers={"Host": "other.example"})
    assert reply.json() == expected


@pytest.mark.parametrize(
    "target", ["http://user@real.example/host", "http:///host", "http://a<b/host"]
)
def test_an_absolute_form_target_without_a_valid_host_is_a_400(
    serve: Callable[..., LiveServer], target: str
) -> None:
    """RFC 9110 4.2.4: userinfo is an error; an http URI needs a host (4.2.1)."""
    with RawConn(serve(wire_app()), timeout=5) as raw:
        raw.send(get(target))
        resp, _ = raw.response()
        assert (resp.status, resp.getheader("Connection")) == (400, "close")


@pytest.mark.parametrize("target", ["a/b", "host", "?x=1", "ftp://real.example/host"])
def test_a_target_that_is_no_path_is_a_400(serve: Callable[..., LiveServer], target: str) -> None:
    """RFC 9112 3.2: an origin-form target starts with ``/`` (``GET a/b`` was served
    as ``/a/b``); only OPTIONS' ``*`` and CONNECT's authority-form are other forms."""
    calls: list[str] = []
    with RawConn(serve(asterisk_app(calls)), timeout=5) as raw:
        raw.send(get(target))
        resp, _ = raw.response()
        assert (resp.status, resp.getheader("Connection")) == (400, "close")
    reply = TestClient(asterisk_app(calls)).get(target)
    assert reply.status_code == 400
    assert calls == []


def asterisk_app(calls: list[str]) -> App:
    """A catch-all route (which ``*`` must never reach) and routes naming methods."""
    app = App()

    @app.route("/**")
    def anything(request: Request) -> str:
        calls.append(f"{request.method} {request.path}")
        return "any"

    @app.route("/p", method="POST")
    def post() -> str:
        return "p"

    @app.route("/d", method=["DELETE", "PUT"])
    def delete() -> str:
        return "d"

    return app


def test_options_asterisk_is_answered_for_the_server(make_any_client: Any) -> None:
    """``OPTIONS *`` (RFC 9110 9.3.7: about the server in general) reached a ``/**``
    route as the path ``/*``; it gets a 200 with the methods the routes name (and
    GET/HEAD, which static files and the icon answer), in every front end."""
    calls: list[str] = []
    reply = make_any_client(asterisk_app(calls)).request("OPTIONS", "*")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.header("Allow") == "DELETE, GET, HEAD, OPTIONS, POST, PUT"
    assert calls == []


@pytest.mark.parametrize(("method", "target"), [("GET", "*"), ("POST", "*"), ("OPTIONS", "*?x=1")])
def test_the_asterisk_target_is_a_400_but_for_options(
    make_any_client: Any, method: str, target: str
) -> None:
    """RFC 9112 3.2.4: ``*`` is only a target for OPTIONS; ``GET *`` was routed as ``/*``."""
    calls: list[str] = []
    reply = make_any_client(asterisk_app(calls)).request(method, target)
    assert reply.status == 400
    assert calls == []


def test_a_websocket_handshake_to_the_asterisk_target_is_a_400(
    serve: Callable[..., LiveServer],
) -> None:
    app = asterisk_app([])

    @app.websocket_handler(regexp=".*")
    class Anywhere:
        def on_text_message(self, session: Any, message: str) -> None:
            session.send(message)

    with RawConn(serve(app), timeout=5) as raw:
        raw.send(
            b"GET * HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        resp, _ = raw.response()
        assert resp.status == 400


# -- timeouts -----------------------------------------------------------------
def test_idle_connection_is_closed_after_idle_timeout(serve: Callable[..., LiveServer]):
    live = serve(wire_app(), idle_timeout=0.5)
    with RawConn(live) as raw:
        raw.send(get("/fast"))
        assert raw.response()[1] == b"fast"
        started = time.monotonic()
        assert raw.read_eof() == b""
        waited = time.monotonic() - started
    assert 0.3 <= waited < 5


def test_silent_fresh_connection_is_closed_after_head_timeout(serve: Callable[..., LiveServer]):
    """No request yet: the head is due (head_timeout); idle_timeout is for between requests."""
    live = serve(wire_app(), head_timeout=0.5, idle_timeout=30)
    with RawConn(live, timeout=5) as raw:
        assert raw.read_eof() == b""


def test_partial_head_gets_408_after_head_timeout(serve: Callable[..., LiveServer]):
    live = serve(wire_app(), head_timeout=0.5)
    with RawConn(live) as raw:
        raw.send(b"GET / HTTP/1.1\r\nHost")
        resp, _ = raw.response()
        assert resp.status == 408


def test_slow_head_does_not_hold_a_worker(serve: Callable[..., LiveServer]):
    """With one worker, a client stuck mid-head must not block everyone else."""
    live = serve(wire_app(), worker_threads=1)
    stuck = [RawConn(live) for _ in range(3)]
    try:
        for raw in stuck:
            raw.send(b"GET / HTTP/1.1\r\nHo")
        time.sleep(0.1)
        conn = live.connection(timeout=5)
        conn.request("GET", "/fast")
        assert conn.getresponse().read() == b"fast"
        conn.close()
        for raw in stuck:  # and they still complete
            raw.send(b"st: t\r\n\r\n")
            assert raw.response()[1] == b'{"hello": "world"}'
    finally:
        for raw in stuck:
            raw.close()


# -- stop and restart -----------------------------------------------------------
def test_stop_finishes_in_flight_request(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    result: dict[str, Any] = {}

    def client() -> None:
        conn = live.connection()
        conn.request("GET", "/slow?ms=700")
        resp = conn.getresponse()
        result["status"], result["body"] = resp.status, resp.read()
        conn.close()

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.3)  # the request is in the controller now
    stopper = threading.Thread(target=live.server.stop)
    stopper.start()
    stopper.join(5)
    thread.join(5)
    assert result == {"status": 200, "body": b"slow"}
    assert not live.server.is_ready()
    with pytest.raises(OSError):
        socket.create_connection((live.host, live.port), timeout=1).close()


def test_stop_cuts_requests_still_running_after_drain_timeout(
    serve: Callable[..., LiveServer],
) -> None:
    """Requests stuck past drain_timeout are cut then, all at once (the threaded
    transport used to join each stuck worker for a second before closing anything)."""
    app = App()
    release = threading.Event()

    @app.route("/stuck")
    def stuck() -> str:
        release.wait(30)
        return "late"

    live = serve(app, drain_timeout=1.0)
    socks = []
    try:
        for _ in range(5):
            sock = socket.create_connection((live.host, live.port), timeout=10)
            sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(sock)
        time.sleep(0.3)  # every request is in its controller
        started = time.monotonic()
        stopper = threading.Thread(target=live.server.stop)
        stopper.start()
        for sock in socks:  # each client learns it soon after the drain timeout
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):
                    pass
        cut = time.monotonic() - started
        stopper.join(10)
        assert cut < 3.0, cut
        assert time.monotonic() - started < 4.0
    finally:
        release.set()
        for sock in socks:
            sock.close()


def test_stop_cuts_a_request_blocked_writing_to_a_client_that_does_not_read(
    serve: Callable[..., LiveServer],
) -> None:
    """Past drain_timeout a request whose worker is blocked in a write is cut: closing
    the socket did not wake the write (threaded), which went on until body_timeout."""
    app = App()
    finished = threading.Event()

    @app.route("/forever")
    def forever() -> Iterator[bytes]:
        try:
            for _ in range(100_000):
                yield b"y" * 65536
        finally:
            finished.set()

    live = serve(app, drain_timeout=1.0, body_timeout=8.0)
    with socket.create_connection((live.host, live.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
        time.sleep(0.5)  # the worker fills the buffers and blocks in its write
        started = time.monotonic()
        stopper = threading.Thread(target=live.server.stop)
        stopper.start()
        assert finished.wait(6.0)
        elapsed = time.monotonic() - started
        stopper.join(10)
    assert elapsed < 1.0 + 1.5, elapsed  # body_timeout (8 s) before


def test_stop_during_a_stalled_file_download_logs_no_error(
    serve: Callable[..., LiveServer], tmp_path: Any
) -> None:
    """asyncio aborted the transport under its own ``loop.sendfile``, and asyncio
    logged an ``InvalidStateError`` traceback ("Exception in callback ...")."""
    import logging

    (tmp_path / "big.bin").write_bytes(b"x" * (32 * 1024 * 1024))
    records = LogRecords()
    watched = [logging.getLogger("asyncio"), logging.getLogger("simple_http_server")]
    for logger in watched:
        logger.addHandler(records)
    try:
        live = serve(App(), resources={"/files/*": str(tmp_path)}, drain_timeout=1.0)
        with socket.create_connection((live.host, live.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")  # and reads no more
            time.sleep(0.5)
            started = time.monotonic()
            live.server.stop()
            assert time.monotonic() - started < 4.0
            time.sleep(0.2)  # callbacks the abort scheduled
    finally:
        for logger in watched:
            logger.removeHandler(records)
    errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_stop_returns_within_a_second_when_idle(serve: Callable[..., LiveServer]):
    live = serve(wire_app())
    idle = [RawConn(live) for _ in range(5)]  # parked keep-alive connections
    try:
        for raw in idle:
            raw.send(get("/fast"))
            raw.response()
        started = time.monotonic()
        done = threading.Event()
        threading.Thread(target=lambda: (live.server.stop(), done.set())).start()
        assert done.wait(5)
        assert time.monotonic() - started < 1.0
        for raw in idle:
            assert raw.read_eof() == b""
    finally:
        for raw in idle:
            raw.close()


def run_in_thread(srv: Server) -> threading.Thread:
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.is_ready():
            break
        time.sleep(0.01)
    assert srv.is_ready()
    return thread


def fetch(port: int, path: str = "/") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_start_stop_start_same_server_object(transport: str):
    srv = Server(
        wire_app(),
        ServerConfig(host="127.0.0.1", port=0),
        prefer_coroutine=transport == "asyncio",
    )
    for _ in range(3):
        thread = run_in_thread(srv)
        assert fetch(srv.port) == b'{"hello": "world"}'
        srv.stop()
        thread.join(5)
        assert not thread.is_alive() and not srv.is_ready()


@pytest.fixture
def free_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


def test_module_start_stop_start_on_one_port(transport: str, free_port: int):
    app = wire_app()
    for _ in range(2):
        thread = threading.Thread(
            target=server.start,
            kwargs={
                "host": "127.0.0.1",
                "port": free_port,
                "app_conf": app,
                "prefer_coroutine": transport == "asyncio",
            },
            daemon=True,
        )
        thread.start()
        for _ in range(500):
            if server.is_ready():
                break
            time.sleep(0.01)
        assert server.is_ready()
        assert fetch(free_port, "/fast") == b"fast"
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert not server.is_ready()
