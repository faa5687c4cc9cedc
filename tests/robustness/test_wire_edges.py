"""Wire-level edge cases on real sockets in both transports (and the TestClient where
the dispatch layer decides): CONNECT, bodies of 204/304 answers, non-ASCII header
values and redirects, encoded slashes in static paths, empty lines before a request,
the controller's own ``Date``/``Server``, and ``Expect: 100-continue`` without a body.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simple_http_server import (
    App,
    BytesBody,
    PathValue,
    Redirect,
    Request,
    Response,
    StaticFile,
    WebsocketHandler,
    logger,
)
from simple_http_server.testing import TestClient

from ..conftest import TRANSPORTS, LiveServer, LogRecords, live_server
from .wire import ParsedResponse, parse_responses, read_until_closed, send_and_collect

CLOSING_GET = b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def exchange(live: LiveServer, payload: bytes) -> list[ParsedResponse]:
    """Send ``payload`` on one connection; every response until the server closes."""
    return parse_responses(send_and_collect(live.port, payload))


@pytest.fixture
def errors() -> Iterator[LogRecords]:
    """What the framework logs at ERROR or above while the test runs."""
    records = LogRecords()
    records.setLevel(logging.ERROR)
    logger.add_handler(records)
    try:
        yield records
    finally:
        logger.flush()
        logger.remove_handler(records)


def no_errors(records: LogRecords) -> bool:
    time.sleep(0.1)  # a transport logs after it wrote what it could
    logger.flush()
    return not records.records


# -- CONNECT ----------------------------------------------------------------------
closed_streams: list[str] = []


class Stream:
    """A streamed body that records being closed (as a WSGI server closes one)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __iter__(self) -> Iterator[bytes]:
        yield b"never sent"

    def close(self) -> None:
        closed_streams.append(self.name)


def connect_app(with_connect_route: bool) -> App:
    app = App()

    @app.route("/any")  # no method=: every method but CONNECT
    def any_method() -> dict[str, int]:
        return {"a": 1}

    @app.route("/get", method="GET")
    def get_only() -> str:
        return "get"

    @app.route("/next")
    def next_request() -> str:
        return "next"

    if with_connect_route:

        @app.route("/tunnel", method="CONNECT")
        def tunnel() -> dict[str, str]:
            return {"tunnel": "ok"}

        @app.route("/stream", method="CONNECT")
        def stream() -> Stream:
            return Stream("stream")

        @app.route("/refuse", method="CONNECT")
        def refuse() -> tuple[int, dict[str, str]]:
            return 407, {"error": "proxy authentication required"}

    return app


def connect(target: bytes) -> bytes:
    host = b"t" if target.startswith(b"/") else target  # a path is no Host (a 400)
    return b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


@pytest.mark.parametrize("target", [b"/any", b"/get", b"example.com:443"])
def test_connect_without_a_connect_route_is_501_and_the_connection_stays(
    serve: Any, errors: LogRecords, target: bytes
) -> None:
    live = serve(connect_app(with_connect_route=False))
    first, after = exchange(live, connect(target) + CLOSING_GET)
    assert first.status == 501 and not first.closes
    assert (after.status, after.body) == (200, b"next")
    assert no_errors(errors)


def test_connect_is_served_only_by_routes_that_name_it(serve: Any, errors: LogRecords) -> None:
    live = serve(connect_app(with_connect_route=True))
    # An any-method route does not answer CONNECT; a GET route's path says 405.
    first, after = exchange(live, connect(b"/any") + CLOSING_GET)
    assert first.status == 404 and after.body == b"next"
    first, after = exchange(live, connect(b"/get") + CLOSING_GET)
    assert (first.status, first.header("allow")) == (405, b"GET, HEAD")
    # A non-2xx answer of a CONNECT route is an ordinary answer: the connection stays.
    first, after = exchange(live, connect(b"/refuse") + CLOSING_GET)
    assert first.status == 407 and b"proxy authentication" in first.body
    assert first.header("content-length") == str(len(first.body)).encode()
    assert after.body == b"next"
    assert no_errors(errors)


@pytest.mark.parametrize("path", [b"/tunnel", b"/stream"])
def test_a_2xx_to_connect_is_a_head_without_framing_then_close(
    serve: Any, errors: LogRecords, path: bytes
) -> None:
    """RFC 9110 9.3.6: a 2xx to CONNECT starts a tunnel and has no Content-Length or
    Transfer-Encoding; no tunnel is relayed here, so the head is all, then the close
    (the GET after it is never served: it would be tunnel data)."""
    closed_streams.clear()
    live = serve(connect_app(with_connect_route=True))
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(connect(path) + CLOSING_GET)
        data = read_until_closed(sock)
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and rest == b"", data
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 200 ok"
    assert not [line for line in lines if line.startswith((b"content-length", b"transfer-enc"))]
    assert no_errors(errors)
    assert closed_streams == ([] if path == b"/tunnel" else ["stream"])  # closed unread


def test_connect_in_the_test_client() -> None:
    client = TestClient(connect_app(with_connect_route=False))
    assert client.request("CONNECT", "/any").status_code == 501
    client = TestClient(connect_app(with_connect_route=True))
    assert client.request("CONNECT", "/any").status_code == 404
    tunnel = client.request("CONNECT", "/tunnel")
    assert (tunnel.status_code, tunnel.content) == (200, b"")
    assert tunnel.headers.get("Content-Length") is None
    assert client.request("CONNECT", "/refuse").status_code == 407


# -- 204 / 304 with a body ------------------------------------------------------------
def bodiless_app(folder: Path) -> App:
    app = App()
    (folder / "a.txt").write_bytes(b"0123456789" * 10)

    @app.route("/204-file")
    def file_204() -> tuple[int, StaticFile]:
        return 204, StaticFile(str(folder / "a.txt"))

    @app.route("/204-bytes")
    def bytes_204() -> Response:
        return Response(204, {"Content-Length": "5"}, b"hello")

    @app.route("/204-stream")
    def stream_204() -> Response:
        return Response(204, body=Stream("204"))

    @app.route("/204-write")
    def write_204(response: Response) -> None:
        response.status_code = 204
        response.set_header("Content-Length", "4")
        response.write_bytes(b"abcd")
        response.close()

    @app.route("/304-file")
    def file_304() -> tuple[int, StaticFile]:
        return 304, StaticFile(str(folder / "a.txt"))

    @app.route("/205-file")
    def file_205() -> tuple[int, StaticFile]:
        return 205, StaticFile(str(folder / "a.txt"))

    @app.route("/205-bytes")
    def bytes_205() -> Response:
        return Response(205, {"Content-Length": "5"}, b"hello")

    @app.route("/205-stream")
    def stream_205() -> Response:
        return Response(205, {"Transfer-Encoding": "gzip"}, body=Stream("205"))

    @app.route("/205-write")
    def write_205(response: Response) -> None:
        response.status_code = 205
        response.set_header("Content-Length", "four")  # replaced: never a 500
        response.write_bytes(b"abcd")
        response.close()

    @app.route("/next")
    def next_request() -> str:
        return "next"

    return app


BODILESS = ["/204-file", "/204-bytes", "/204-stream", "/204-write", "/304-file"]
RESET = ["/205-file", "/205-bytes", "/205-stream", "/205-write"]


@pytest.mark.parametrize("path", BODILESS)
def test_a_204_or_304_sends_no_body_and_keeps_the_connection(
    serve: Any, errors: LogRecords, tmp_path: Path, path: str
) -> None:
    closed_streams.clear()
    live = serve(bodiless_app(tmp_path))
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    first, after = exchange(live, request + CLOSING_GET)  # strict: a stray body fails here
    assert first.status == int(path[1:4]) and first.body == b""
    assert first.header("content-length") is None and not first.closes
    assert (after.status, after.body) == (200, b"next")
    assert no_errors(errors)
    assert closed_streams == (["204"] if path == "/204-stream" else [])


@pytest.mark.parametrize("path", BODILESS)
def test_a_204_or_304_sends_no_body_in_the_test_client(tmp_path: Path, path: str) -> None:
    reply = TestClient(bodiless_app(tmp_path)).get(path)
    assert (reply.status_code, reply.content) == (int(path[1:4]), b"")
    assert reply.headers.get("Content-Length") is None


@pytest.mark.parametrize("path", RESET)
def test_a_205_sends_no_content_and_keeps_the_connection(
    serve: Any, errors: LogRecords, tmp_path: Path, path: str
) -> None:
    """RFC 9110 15.3.6: a server MUST NOT generate content in a 205 (0.22.x sent it)."""
    closed_streams.clear()
    live = serve(bodiless_app(tmp_path))
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    first, after = exchange(live, request + CLOSING_GET)  # strict: a stray body fails here
    assert (first.status, first.body, first.header("content-length")) == (205, b"", b"0")
    assert not first.closes
    assert (after.status, after.body) == (200, b"next")
    assert no_errors(errors)
    assert closed_streams == (["205"] if path == "/205-stream" else [])


@pytest.mark.parametrize("path", RESET)
def test_a_205_sends_no_content_in_every_front_end(
    make_any_client: Any, tmp_path: Path, path: str
) -> None:
    client = make_any_client(bodiless_app(tmp_path))
    reply = client.get(path)
    assert (reply.status, reply.body, reply.header("Content-Length")) == (205, b"", "0")


# -- header encoding ----------------------------------------------------------------
def encoding_app() -> App:
    app = App()

    @app.route("/name")
    def name(v: str = "") -> Response:
        return Response(headers={"X-Name": v}, body="ok")

    @app.route("/go")
    def go(to: str = "") -> Redirect:
        return Redirect(to)

    @app.route("/located")
    def located() -> Response:
        return Response(headers={"Content-Location": "/doc/\u00e9t\u00e9"}, body="ok")

    @app.route("/raw/{value}")
    def raw(value: PathValue) -> Redirect:
        return Redirect("/path/" + str(value))  # undecodable bytes: surrogateescape

    @app.route("/path/{p}")
    def path(p: PathValue) -> str:
        return str(p)

    return app


def head_of(live: LiveServer, target: str) -> dict[bytes, bytes]:
    request = f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    (response,) = exchange(live, request)
    return {name.lower(): value for name, value in response.headers}


def test_header_values_are_latin_1_whatever_else_they_hold(serve: Any) -> None:
    live = serve(encoding_app())
    assert head_of(live, "/name?v=caf%C3%A9")[b"x-name"] == b"caf\xe9"
    # Before, the whole value went out as UTF-8 once one character was beyond latin-1.
    assert head_of(live, "/name?v=caf%C3%A9%20%E2%98%83")[b"x-name"] == b"caf\xe9 ?"


def test_location_is_a_uri_and_a_redirect_round_trips(serve: Any) -> None:
    live = serve(encoding_app())
    location = head_of(live, "/go?to=/path/caf%C3%A9%E2%98%83")[b"location"]
    assert location == b"/path/caf%C3%A9%E2%98%83"
    assert head_of(live, "/located")[b"content-location"] == b"/doc/%C3%A9t%C3%A9"
    assert head_of(live, "/raw/%FF")[b"location"] == b"/path/%FF"  # the byte as it came
    conn = live.connection()
    try:
        conn.request("GET", location.decode("ascii"))  # http.client follows it as given
        assert conn.getresponse().read().decode("utf-8") == "caf\u00e9\u2603"
    finally:
        conn.close()


def test_header_encoding_in_the_test_client() -> None:
    client = TestClient(encoding_app())
    assert client.get("/name?v=caf%C3%A9").headers["X-Name"] == "caf\u00e9"
    location = client.get("/go?to=/path/caf%C3%A9").headers["Location"]
    assert location == "/path/caf%C3%A9"
    assert client.get(location).text == "caf\u00e9"


# -- static paths ---------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("top")
    (tmp_path / "sub" / "b.css").write_text("body{}")
    return tmp_path


def static_app() -> App:
    app = App()

    @app.route("/route/{name}")
    def route(name: PathValue) -> str:
        return str(name)

    return app


@pytest.mark.parametrize(
    "path",
    [
        "/tree/sub%2Fb.css",
        "/tree/sub%2fb.css",
        "/tree/x%2F..%2Fa.txt",
        "/tree/sub/%2e%2e/a.txt",
        "/tree/sub/%2E/b.css",
        "/tree/sub/../a.txt",
        "/tree/./a.txt",
        "/tree/sub%5Cb.css",
        "/flat/sub%2Fb.css",
    ],
)
def test_static_paths_with_encoded_slashes_or_dot_segments_are_404(
    make_client: Any, tree: Path, path: str
) -> None:
    client = make_client(static_app(), {"/tree/**": str(tree), "/flat/*": str(tree)})
    assert client.get(path).status == 404
    assert client.get("/tree/sub/b.css").body == b"body{}"
    assert client.get("/tree/a.txt").body == b"top"
    assert client.get("/route/x%2Fy").status == 404  # routes: decoded once, as documented
    assert client.get("/route/../route/z").text == "z"


# -- empty lines before a request line --------------------------------------------------
def crlf_app() -> App:
    app = App()

    @app.route("/echo", method="POST")
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/next")
    def next_request() -> str:
        return "next"

    return app


@pytest.mark.parametrize(
    "pieces",
    [
        [b"\r\n" + CLOSING_GET],
        [b"\r\n\r\n\n" + CLOSING_GET],
        [b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\r\n" + CLOSING_GET],
        [b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\r\n", CLOSING_GET],
        [b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\r", b"\n" + CLOSING_GET],
    ],
    ids=["one", "several", "after a body", "after a body, later", "split CRLF"],
)
def test_empty_lines_before_a_request_line_are_skipped(serve: Any, pieces: list[bytes]) -> None:
    """RFC 9112 2.2 (some clients send a CRLF after a POST body); was a 400."""
    live = serve(crlf_app())
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.2)  # separate reads on the server
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [200] * len(responses)
    assert responses[-1].body == b"next"


def test_a_stream_of_empty_lines_ends_with_a_400(serve: Any) -> None:
    """Skipped empty lines count toward max_head_size: a client sending only CRLFs
    gets a 400 and the close, long before any timeout."""
    live = serve(crlf_app(), max_head_size=4096, head_timeout=30, idle_timeout=30)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"\r\n" + CLOSING_GET.replace(b"Connection: close\r\n", b""))
        try:
            for _ in range(64):
                sock.sendall(b"\r\n" * 512)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_until_closed(sock)
    first, flood = parse_responses(data)
    assert (first.status, first.body) == (200, b"next")
    assert flood.status == 400 and flood.closes
    assert time.monotonic() - started < 10


# -- Date and Server set by the controller ----------------------------------------------
def date_server_app() -> App:
    app = App()

    @app.route("/own")
    def own() -> Response:
        return Response(
            headers={"Server": "my-app", "Date": "Mon, 01 Jan 2001 00:00:00 GMT"}, body="x"
        )

    @app.route("/server-only")
    def server_only(response: Response) -> str:
        response.set_header("SERVER", "hidden")
        return "x"

    @app.route("/plain")
    def plain() -> str:
        return "x"

    @app.websocket_handler(endpoint="/ws")
    class Handshake(WebsocketHandler):
        def on_handshake(self, request: Request) -> dict[str, str]:
            return {"Server": "ws-app"}

    return app


def values(response: ParsedResponse, name: bytes) -> list[bytes]:
    return [v for k, v in response.headers if k.lower() == name]


def test_the_controllers_date_and_server_are_not_repeated(serve: Any) -> None:
    live = serve(date_server_app())
    get = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
    own, server_only, plain = exchange(
        live,
        get % b"/own"
        + get % b"/server-only"
        + get.replace(b"\r\n\r\n", b"\r\n") % b"/plain"
        + b"Connection: close\r\n\r\n",
    )
    assert values(own, b"server") == [b"my-app"]
    assert values(own, b"date") == [b"Mon, 01 Jan 2001 00:00:00 GMT"]
    assert values(server_only, b"server") == [b"hidden"]
    assert len(values(server_only, b"date")) == 1
    assert values(plain, b"server")[0].startswith(b"simple-http-server/")
    assert len(values(plain, b"date")) == 1


def test_a_websocket_handshake_with_its_own_server_header(serve: Any) -> None:
    live = serve(date_server_app())
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    lines = data.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 101")
    assert [line for line in lines if line.startswith(b"server:")] == [b"server: ws-app"]
    assert len([line for line in lines if line.startswith(b"date:")]) == 1


# -- Expect: 100-continue without a body ----------------------------------------------
@pytest.mark.parametrize("path", [b"/echo", b"/next"])
def test_expect_continue_with_content_length_0_keeps_the_connection(
    serve: Any, path: bytes
) -> None:
    live = serve(crlf_app())
    method = b"POST" if path == b"/echo" else b"GET"
    request = (
        method + b" " + path + b" HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    first, after = exchange(live, request + CLOSING_GET)
    assert first.status == 200 and not first.closes  # and no 100 Continue before it
    assert (after.status, after.body) == (200, b"next")


# -- property-based: generated request streams, judged by h11 as a client -----------
def fuzz_app() -> App:
    """Routes of every kind the generated requests aim at."""
    app = App()

    @app.route("/", method=["GET", "POST", "PUT"])
    def index() -> str:
        return "ok"

    @app.route("/echo", method=["POST", "PUT"])
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/json")
    def json_answer(name: str = "x") -> dict[str, str]:
        return {"name": name}

    @app.route("/stream")
    def stream() -> Iterator[bytes]:
        yield from (b"part-1 ", b"part-2")

    @app.route("/nothing")
    def nothing() -> tuple[int, str]:
        return 204, ""

    @app.route("/go")
    def go() -> Redirect:
        return Redirect("/json")

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    return app


FUZZ_METHODS = ["GET", "GET", "HEAD", "POST", "PUT", "OPTIONS", "DELETE", "get", "FOO"]
FUZZ_TARGETS = [
    "/", "/echo", "/json?name=a%20b", "/stream", "/nothing", "/go", "/boom", "/files/a.txt",
    "/files/../a.txt", "//json", "/json;x", "/missing", "*", "http://h:8/json", "/%ff?%",
]  # fmt: skip
FUZZ_VERSIONS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1"]
FUZZ_HEADERS = [
    "Connection: close", "Connection: keep-alive", "Expect: 100-continue", "Range: bytes=0-3",
    "Range: bytes=9-", "Range: x", 'If-None-Match: "x", *', "If-Modified-Since: nope",
    "Accept-Encoding: gzip", "Accept-Encoding: gzip;q=0", "Cookie: a=b; ;=", "Host: t",
    "Content-Type: application/json", "X-A:", "X-Fold: a\r\n b", "Upgrade: websocket",
    "Transfer-Encoding: gzip, chunked", "Content-Length: 1",
]  # fmt: skip
FUZZ_BODIES = [b"", b"{}", b"abc", b"x" * 300]


@st.composite
def fuzz_request(draw: st.DrawFn) -> tuple[bytes, str]:
    """One request (maybe malformed, never with a body shorter than declared) and its method."""
    method = draw(st.sampled_from(FUZZ_METHODS))
    line = f"{method} {draw(st.sampled_from(FUZZ_TARGETS))} {draw(st.sampled_from(FUZZ_VERSIONS))}"
    headers = ["Host: t", *draw(st.lists(st.sampled_from(FUZZ_HEADERS), max_size=4))]
    body = draw(st.sampled_from(FUZZ_BODIES))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "length":
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        body = (b"%x;ext=1\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\nX-T: 1\r\n\r\n"
    else:
        body = b""
    head = line + "\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode() + body, method


def h11_read(data: bytes, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """``data`` read by h11 as the client that sent ``methods``: every response, with
    exact framing; a response that announces ``Connection: close`` must be the last."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")  # the server closed: the helpers read until it did
    answers: list[tuple[int, dict[str, str], bytes]] = []
    for method in methods:
        conn.send(h11.Request(method=method if method == "HEAD" else "GET", target="/",
                              headers=[("Host", "t")]))  # fmt: skip
        conn.send(h11.EndOfMessage())
        event = conn.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = conn.next_event()
        if isinstance(event, h11.ConnectionClosed):
            return answers  # the rest was never answered: the previous answer closed
        assert isinstance(event, h11.Response), event
        body = b""
        while not isinstance(part := conn.next_event(), h11.EndOfMessage):
            assert isinstance(part, h11.Data), part
            body += part.data
        headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
        answers.append((event.status_code, headers, body))
        if conn.their_state is h11.MUST_CLOSE:
            assert not conn.trailing_data[0], "bytes after an answer that closed"
            return answers
        conn.start_next_cycle()
    raise AssertionError("the closing request was not answered with a close")


def comparable(answers: list[tuple[int, dict[str, str], bytes]]) -> list[tuple[Any, ...]]:
    """What both transports must agree on: statuses, headers but the date, bodies."""
    return [(s, sorted((k, v) for k, v in h.items() if k != "date"), b) for s, h, b in answers]


@pytest.fixture(scope="module")
def fuzz_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """One live server of :func:`fuzz_app` per transport, with a static folder."""
    folder = tmp_path_factory.mktemp("fuzz-files")
    (folder / "a.txt").write_bytes(b"static text body")
    with contextlib.ExitStack() as stack:
        yield {
            kind: stack.enter_context(
                live_server(fuzz_app(), kind, {"/files/**": str(folder)}, max_body_size=4096)
            )
            for kind in TRANSPORTS
        }


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(requests=st.lists(fuzz_request(), min_size=1, max_size=3))
def test_generated_request_streams_get_well_framed_answers_alike_in_both_transports(
    fuzz_servers: dict[str, LiveServer], errors: LogRecords, requests: list[tuple[bytes, str]]
) -> None:
    """Whatever the pipelined requests, h11 as a client reads exact answers (one per
    request up to an answer that closes, then the close), no 5xx but the controller's
    failure (and 501/505 for what is not spoken), no traceback, no error logged but that
    failure's, and the threaded and asyncio transports answer byte for byte alike but for
    the ``Date``."""
    payload = b"".join(raw for raw, _ in requests) + CLOSING_GET
    methods = [method for _, method in requests] + ["GET"]
    seen = {}
    for kind, live in fuzz_servers.items():
        answers = h11_read(send_and_collect(live.port, payload), methods)
        assert answers, "no answer at all"
        for (raw, _), (status, _, body) in zip(requests, answers):
            assert status < 500 or status in (501, 505) or b"/boom" in raw.split(b"\r\n")[0]
            assert b"Traceback" not in body and b"secret" not in body
        seen[kind] = comparable(answers)
    assert seen["threaded"] == seen["asyncio"]
    logger.flush()
    assert all(r.getMessage().endswith("/boom") for r in errors.records), errors.records
    errors.records.clear()
