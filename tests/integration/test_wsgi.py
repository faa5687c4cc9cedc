"""The WSGI adapter: checked by ``wsgiref.validate`` and served by a real gunicorn."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from simple_http_server import App, Headers, Request, server

from ..conftest import LogRecords, _client_maker, wsgi_server
from .apps import harness
from .apps.demo_app import RESOURCES, build_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def wsgiref_server(app: App) -> Iterator[int]:
    """Serve ``validator(init_wsgi_proxy(app))`` with wsgiref on a free port."""
    proxy = server.init_wsgi_proxy(resources=RESOURCES, app_conf=app)
    httpd: WSGIServer = make_server(
        "127.0.0.1", 0, validator(proxy.app_proxy), handler_class=_QuietHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.fixture
def validated() -> Iterator[int]:
    with wsgiref_server(build_app()) as port:
        yield port


def test_get_json(validated: int) -> None:
    status, headers, body = request(validated, "GET", "/hello?name=w%20s")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"hello": "w s"}


def test_path_value_is_decoded_once(validated: int) -> None:
    status, _, body = request(validated, "GET", "/path/a%20b%2525")
    assert (status, body) == (200, b"word=a b%25")


@pytest.mark.parametrize(
    ("path", "body", "ctype", "expected"),
    [
        ("/json", b'{"a": [1, 2]}', "application/json", {"got": {"a": [1, 2]}}),
        (
            "/form",
            b"name=bob&age=7",
            "application/x-www-form-urlencoded",
            {"name": "bob", "age": 7},
        ),
        ("/upload", b"x" * 300_000, "application/octet-stream", {"received": 300_000}),
    ],
)
def test_request_bodies(
    validated: int, path: str, body: bytes, ctype: str, expected: object
) -> None:
    status, _, answer = request(validated, "POST", path, body, {"Content-Type": ctype})
    assert status == 200
    assert json.loads(answer) == expected


def test_bytes_body_and_tuple_headers(validated: int) -> None:
    status, headers, body = request(validated, "POST", "/bytes", b"\x00\x01abc")
    assert (status, headers["X-Length"], body) == (201, "5", b"\x00\x01abc")


def test_streamed_generator_and_write_bytes(validated: int) -> None:
    status, _, body = request(validated, "GET", "/stream?count=3")
    assert (status, body) == (200, b"part-0\npart-1\npart-2\n")
    status, headers, body = request(validated, "GET", "/write")
    assert (status, body) == (200, b"line-0\nline-1\nline-2\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_static_file_get_and_head(validated: int) -> None:
    status, headers, body = request(validated, "GET", "/static/hello.txt")
    assert (status, body) == (200, b"static file body\n")
    etag = headers["ETag"]
    status, headers, body = request(validated, "HEAD", "/static/hello.txt")
    assert (status, body, headers["Content-Length"]) == (200, b"", "17")
    status, _, body = request(
        validated, "GET", "/static/hello.txt", headers={"If-None-Match": etag}
    )
    assert (status, body) == (304, b"")


def call_wsgi(path: str, **environ: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """One direct call of the WSGI app (wsgiref's server would add headers of its own)."""
    proxy = server.init_wsgi_proxy(resources=RESOURCES, app_conf=build_app())
    env: dict[str, object] = {"PATH_INFO": path, **environ}
    setup_testing_defaults(env)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(proxy.app_proxy(env, lambda s, h, e=None: started.append((s, h))))
    return started[0][0], started[0][1], body


def test_no_content_length_on_204_and_304() -> None:
    """RFC 9110 8.6: a 204 has no Content-Length, a 304 none for its empty body."""
    status, headers, _ = call_wsgi("/nothing")
    assert status.startswith("204")
    assert "content-length" not in {name.lower() for name, _ in headers}
    status, headers, _ = call_wsgi("/static/hello.txt")
    etag = dict(headers)["ETag"]
    status, headers, body = call_wsgi("/static/hello.txt", HTTP_IF_NONE_MATCH=etag)
    assert status.startswith("304") and body == b""
    assert "content-length" not in {name.lower() for name, _ in headers}


def test_no_content_length_on_a_2xx_to_connect() -> None:
    """RFC 9110 9.3.6: a 2xx to CONNECT has no Content-Length (nor a body)."""
    app = App()

    @app.route("/tunnel", method="CONNECT")
    def tunnel() -> dict[str, str]:
        return {"tunnel": "ok"}

    proxy = server.init_wsgi_proxy(app_conf=app)
    env: dict[str, object] = {"PATH_INFO": "/tunnel", "REQUEST_METHOD": "CONNECT"}
    setup_testing_defaults(env)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(proxy.app_proxy(env, lambda s, h, e=None: started.append((s, h))))
    assert started[0][0].startswith("200") and body == b""
    assert "content-length" not in {name.lower() for name, _ in started[0][1]}


def test_chunked_body_without_input_terminated_is_411(validated: int) -> None:
    """wsgiref does not de-chunk request bodies (no ``wsgi.input_terminated``): reading
    one would read raw chunk framing, or block.  The answer is 411 Length Required."""
    request = (  # one write: wsgiref answers and closes without reading the body
        b"POST /form HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n8\r\nname=bob\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", validated), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 411 ") or head.startswith(b"HTTP/1.1 411 "), head
    assert json.loads(body)["code"] == 411


@pytest.mark.parametrize("length", [b"abc", b"-1", b"+3", b"3 3", b"\xb2", b"\xd9\xa3"])
def test_invalid_content_length_is_400(length: bytes) -> None:
    """wsgiref hands any ``Content-Length`` on as ``CONTENT_LENGTH`` (its validator
    would refuse it, so none here): one that is no decimal number is a 400, as in our
    transports (it was read as "no body", and ``\xb2``, a digit to ``str.isdigit``,
    was a 500)."""
    proxy = server.init_wsgi_proxy(resources=RESOURCES, app_conf=build_app())
    with wsgi_server(proxy) as address:
        conn = address.connection()
        try:
            conn.putrequest("POST", "/upload")
            conn.putheader("Content-Length", length)
            conn.endheaders()
            response = conn.getresponse()
            status, ctype, body = response.status, response.headers["Content-Type"], response.read()
        finally:
            conn.close()
    assert (status, ctype) == (400, "application/json; charset=utf-8")
    assert json.loads(body) == {"code": 400, "message": "Bad Request", "explain": ""}


def test_empty_content_length_means_no_body() -> None:
    """PEP 3333: an empty ``CONTENT_LENGTH`` is no body, not a malformed one."""
    status, _, body = call_wsgi("/upload", REQUEST_METHOD="POST", CONTENT_LENGTH="")
    assert (status, json.loads(body)) == ("200 OK", {"received": 0})


def test_hop_by_hop_headers_of_the_app_are_not_handed_to_the_wsgi_server() -> None:
    """PEP 3333: an app must not send hop-by-hop headers (wsgiref's validator fails the
    request with a 500 if it does); the connection is the WSGI server's."""
    app = App()

    @app.route("/hop")
    def hop() -> tuple[int, Headers, str]:
        hop_by_hop = {"Connection": "close", "Keep-Alive": "timeout=1", "Upgrade": "h2c"}
        return 200, Headers({**hop_by_hop, "Proxy-Authenticate": "Basic", "X-Kept": "1"}), "x"

    with wsgiref_server(app) as port:
        status, headers, body = request(port, "GET", "/hop")
    assert (status, body, headers["X-Kept"]) == (200, b"x", "1")
    assert not {"Keep-Alive", "Upgrade", "Proxy-Authenticate"} & set(headers.keys())


def test_errors(validated: int) -> None:
    status, _, body = request(validated, "GET", "/nope")
    assert status == 404 and json.loads(body)["code"] == 404
    status, headers, _ = request(validated, "GET", "/only-post")
    assert (status, headers["Allow"]) == (405, "POST")
    status, _, body = request(validated, "GET", "/boom")
    assert status == 500 and b"secret" not in body
    status, _, _ = request(validated, "GET", "/teapot")
    assert status == 418


def test_session_cookie_round_trip(validated: int) -> None:
    status, headers, body = request(validated, "GET", "/counter")
    assert (status, json.loads(body)) == (200, {"n": 1})
    cookie = headers["Set-Cookie"].split(";")[0]
    _, _, body = request(validated, "GET", "/counter", headers={"Cookie": cookie})
    assert json.loads(body) == {"n": 2}


def test_websocket_upgrade_is_501(validated: int) -> None:
    """The 501 has the form of every other handshake refusal (our transports' too): the
    JSON error body with its reason phrase and explain, as UTF-8 JSON (it had neither
    ``explain`` nor a charset)."""
    status, headers, body = request(
        validated, "GET", "/hello", headers={"Upgrade": "websocket", "Connection": "Upgrade"}
    )
    assert status == 501
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    explain = "Websocket is not supported under WSGI"
    assert json.loads(body) == {"code": 501, "message": "Not Implemented", "explain": explain}


def test_plain_callable_and_async_app_proxy() -> None:
    import asyncio
    import io
    from wsgiref.util import setup_testing_defaults

    proxy = server.init_wsgi_proxy(app_conf=build_app())
    environ: dict[str, object] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO="/stream", QUERY_STRING="count=2", **{"wsgi.input": io.BytesIO()})
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None):
        seen.append(status)
        return lambda data: None

    assert b"".join(proxy(environ, start_response)) == b"part-0\npart-1\n"
    body = asyncio.run(proxy.async_app_proxy(environ, start_response))
    assert body == [b"part-0\n", b"part-1\n"]
    assert seen == ["200 OK", "200 OK"]


# -- a real gunicorn ---------------------------------------------------------
@pytest.fixture(scope="module")
def gunicorn() -> Iterator[harness.Proc]:
    port = harness.free_port()
    args = harness.gunicorn(
        "--workers", "2", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "2",
        "tests.integration.apps.demo_app:wsgi",
    )  # fmt: skip
    with harness.running(args, port) as proc:
        yield proc


def test_gunicorn_basic(gunicorn: harness.Proc) -> None:
    status, headers, body = gunicorn.get("/hello?name=g")
    assert (status, json.loads(body)) == (200, {"hello": "g"})
    assert headers["Server"].startswith("gunicorn")


def test_gunicorn_chunked_request_body(gunicorn: harness.Proc) -> None:
    parts = (b"y" * 50_000 for _ in range(4))
    assert gunicorn.post_chunked("/upload", parts) == (200, {"received": 200_000})


def test_gunicorn_answers_a_body_failing_at_its_first_piece_with_our_500(
    gunicorn: harness.Proc,
) -> None:
    """The head goes to ``start_response`` only once the body's first piece is there:
    our 500 replaces it whole (gunicorn added the headers of a second ``start_response``,
    even one with ``exc_info``, to the first one's: two ``Content-Type``)."""
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=10) as sock:
        sock.sendall(b"GET /fails-at-once HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 500")
    assert [line for line in lines if line.startswith(b"content-type:")] == [
        b"content-type: application/json; charset=utf-8"
    ]
    assert body == b'{"code": 500, "message": "Internal Server Error", "explain": ""}'


def test_gunicorn_streams_without_buffering(gunicorn: harness.Proc) -> None:
    # 1000 parts, 50 ms apart: buffered, the first byte would come after 50 s (> timeout).
    request = b"GET /stream?count=1000&pause=0.05 HTTP/1.1\r\nHost: x\r\n\r\n"
    received = gunicorn.read_until(request, b"part-2\n")
    assert b"Transfer-Encoding: chunked" in received


@pytest.fixture(scope="module")
def gunicorn_below_api() -> Iterator[harness.Proc]:
    """The demo app mounted at ``/api`` (gunicorn's ``SCRIPT_NAME``)."""
    port = harness.free_port()
    args = harness.gunicorn(
        "--workers", "1", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "2",
        "tests.integration.apps.demo_app:wsgi",
    )  # fmt: skip
    with harness.running(args, port, env={"SCRIPT_NAME": "/api"}) as proc:
        yield proc


@pytest.mark.parametrize(
    "path",
    ["/static/hello.txt", "/static/%2Fhello.txt", "/static/x%2F..%2Fhello.txt", "/path/a%2Fb",
     "/path/a%20b", "/hello?name=a%26b"],
)  # fmt: skip
def test_below_script_name_the_raw_target_is_used(
    gunicorn_below_api: harness.Proc, path: str
) -> None:
    """Below a ``SCRIPT_NAME``, the target is the server's raw one without that prefix,
    as without one: ``PATH_INFO`` (decoded) served an encoded slash as a ``/``."""
    from simple_http_server.testing import TestClient

    status, _, body = gunicorn_below_api.get("/api" + path)
    expected = TestClient(build_app(), RESOURCES).get(path)
    assert (status, body) == (expected.status_code, expected.content)


@pytest.mark.parametrize("path", ["/generator", "/async-generator", "/iterator", "/file-object"])
def test_upload_stays_open_for_a_streamed_answer(monkeypatch: pytest.MonkeyPatch, path: str):
    """The WSGI server pulls a streamed body after the app returned: the uploads stay
    open until it has, and are closed once."""
    from .test_bodies import CloseLog, mp_headers, multipart_body, streaming_upload_app

    log = CloseLog(monkeypatch)
    data = bytes(range(256)) * 1200  # spooled to disk
    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", data)])
    with wsgiref_server(streaming_upload_app(log)) as port:
        status, _, answer = request(port, "POST", path, body, mp_headers())
    assert (status, answer == data) == (200, True)
    log.wait_all_closed(1)


def test_the_originals_wsgi_proxy_class_is_importable_from_server() -> None:
    """``from simple_http_server.server import WSGIProxy`` (the original's name, as
    ``ASGIProxy``) is the class ``init_wsgi_proxy`` builds; a wsgiref server serves it."""
    from simple_http_server.server import WSGIProxy

    proxy = server.init_wsgi_proxy(app_conf=build_app())
    assert isinstance(proxy, WSGIProxy)
    with wsgi_server(proxy.app_proxy) as address:
        status, _, body = request(address.port, "GET", "/hello?name=w")
    assert status == 200 and json.loads(body)["hello"] == "w"


def _bodiless_app() -> App:
    app = App()

    @app.route("/none")
    def none() -> tuple[int, str]:
        return 204, ""

    @app.route("/tagged")
    def tagged() -> tuple[int, Headers, str]:
        return 200, Headers({"ETag": '"v1"'}), "tagged body"

    return app


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [("/none", {}, 204), ("/tagged", {"If-None-Match": '"v1"'}, 304)],
)
def test_no_content_length_on_the_wire_for_204_and_304(
    path: str, headers: dict[str, str], expected: int
) -> None:
    """RFC 9110 8.6, 15.4.5: wsgiref adds ``Content-Length: 0`` to an empty list (its
    ``finish_content``); a 204 must have none, a 304 none but the 200's length, as
    our transports send them."""
    with wsgiref_server(_bodiless_app()) as port:
        status, answer, body = request(port, "GET", path, headers=headers)
    assert (status, body, answer["Content-Length"]) == (expected, b"", None)
    assert status != 304 or answer["ETag"] == '"v1"'


def _failing_body_app() -> App:
    app = App()

    @app.route("/fails-at-once")
    def fails_at_once() -> Iterator[bytes]:
        raise ValueError("secret detail")
        yield b"never"  # pragma: no cover

    @app.route("/async-fails-at-once")
    async def async_fails_at_once() -> object:
        async def body() -> AsyncIterator[bytes]:
            raise ValueError("secret detail")
            yield b"never"  # pragma: no cover

        return body()

    return app


@pytest.mark.parametrize("path", ["/fails-at-once", "/async-fails-at-once"])
def test_a_body_failing_at_its_first_piece_gets_our_500(log_records: LogRecords, path: str) -> None:
    """The head waits in the WSGI server for the body's first piece: a body that fails
    there gets our 500 page (``start_response`` with ``exc_info``, which wsgiref's
    validator checks) and our log line, as our transports answer a failure before
    their head is out; the exception reached wsgiref, which sent its own page."""
    with wsgiref_server(_failing_body_app()) as port:
        status, headers, body = request(port, "GET", path)
    expected = b'{"code": 500, "message": "Internal Server Error", "explain": ""}'
    assert (status, headers["Content-Type"], body) == (
        500,
        "application/json; charset=utf-8",
        expected,
    )
    failures = [r for r in log_records.records if r.getMessage() == f"{_FAILED_SENDING} GET {path}"]
    assert len(failures) == 1 and "ValueError: secret detail" in str(failures[0].exc_text)


_FAILED_SENDING = "Error while sending the response to"


# -- the adapter's own refusals answer as our transports do ------------------------
_HANDSHAKE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
REFUSED = {
    "HEAD, malformed Content-Length": b"HEAD /hello HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n",
    "HEAD upgrade": b"HEAD /hello HTTP/1.1\r\nHost: t\r\n" + _HANDSHAKE,
    "POST upgrade": b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n" + _HANDSHAKE,
    "HTTP/1.0 upgrade": b"GET /hello HTTP/1.0\r\nHost: t\r\n" + _HANDSHAKE,
}


def _exchange(port: int, head: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(status code, the Allow lines, body) of the answer to ``head``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            head + b"Connection: close\r\n\r\n" if b"Upgrade" not in head else head + b"\r\n"
        )
        data = b""
        for _ in range(1000):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    answer, _, body = data.partition(b"\r\n\r\n")
    lines = answer.split(b"\r\n")
    allow = [line for line in lines if line.lower().startswith(b"allow:")]
    return lines[0].split(b" ")[1], allow, body


@pytest.mark.parametrize("name", list(REFUSED))
def test_refusals_answer_as_the_transports_do(name: str) -> None:
    """RFC 9110 9.3.2: a HEAD's refusal has no body; a handshake by another method than
    GET is a 405 with ``Allow: GET`` (not the 501 of a websocket under WSGI); an HTTP/1.0
    ``Upgrade`` is ignored (RFC 9110 7.8): a plain request."""
    answers = []
    for front_end in ("threaded", "wsgi"):
        maker = _client_maker(front_end)
        client = next(maker)(build_app())
        answers.append(_exchange(client.address.port, REFUSED[name]))
        maker.close()
    assert answers[1] == answers[0]
    status, _, body = answers[0]
    if name.startswith("HEAD"):
        assert body == b""
    assert status != b"501"


def call_app(app: App, environ: dict[str, object]) -> tuple[str, list[tuple[str, str]], bytes]:
    """One direct call of ``app`` through the WSGI adapter with ``environ``."""
    proxy = server.init_wsgi_proxy(app_conf=app)
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(proxy.app_proxy(environ, lambda s, h, e=None: started.append((s, h))))
    return started[0][0], started[0][1], body


def adapter_app() -> App:
    app = App()

    @app.route("/echo", method="POST")
    def echo(request: Request) -> bytes:
        return bytes(request.body)

    @app.route("/peer")
    def peer(request: Request) -> dict[str, object]:
        return {"peer": list(request.client_address or ())}

    @app.route("/odd")
    def odd() -> tuple[int, str]:
        return 299, "no reason phrase"

    return app


def test_a_body_shorter_than_its_content_length_is_a_400() -> None:
    """The client left before sending all of its ``Content-Length``, as our transports."""
    environ: dict[str, object] = {
        "PATH_INFO": "/echo", "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "10",
        "CONTENT_TYPE": "application/octet-stream", "wsgi.input": io.BytesIO(b"abc"),
    }  # fmt: skip
    status, _, _ = call_app(adapter_app(), environ)
    assert status.startswith("400 ")


def test_the_client_port_comes_from_remote_port() -> None:
    environ: dict[str, object] = {
        "PATH_INFO": "/peer", "REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "5555"
    }  # fmt: skip
    _, _, body = call_app(adapter_app(), environ)
    assert json.loads(body) == {"peer": ["10.1.2.3", 5555]}


def test_a_status_without_a_reason_phrase_is_unknown() -> None:
    status, _, _ = call_app(adapter_app(), {"PATH_INFO": "/odd"})
    assert status == "299 Unknown"


def test_a_raw_target_not_below_the_script_name_falls_back_to_path_info() -> None:
    """``/apix/hello`` does not start with the segment ``/api``: ``PATH_INFO`` is used."""
    status, _, body = call_wsgi(
        "/hello", SCRIPT_NAME="/api", RAW_URI="/apix/hello?name=z", QUERY_STRING="name=z"
    )
    assert status.startswith("200 ") and json.loads(body) == {"hello": "z"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RAW_URI": "http://example.org:8080/host?x=1"}, "http://example.org:8080/host?x=1"),
        ({"RAW_URI": "HTTPS://example.org/host", "SCRIPT_NAME": ""}, "HTTPS://example.org/host"),
        ({"RAW_URI": "http://example.org/api/host", "SCRIPT_NAME": "/api"},
         "http://example.org/host"),
        ({"REQUEST_URI": "http://example.org/apix/host", "SCRIPT_NAME": "/api",
          "PATH_INFO": "/host"}, "http://example.org/host"),
    ],
)  # fmt: skip
def test_an_absolute_form_raw_target_keeps_its_host(environ: dict[str, str], expected: str):
    """gunicorn passes an absolute-form target in ``RAW_URI``: it was dropped for
    ``PATH_INFO``, and with it the target's host, which RFC 9112 3.2.2 makes the
    request's (``request.host``) whatever the ``Host`` header says."""
    from simple_http_server.adapters.wsgi import request_target

    assert request_target(environ) == expected
