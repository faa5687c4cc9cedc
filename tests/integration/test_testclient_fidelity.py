"""The TestClient answers as the real servers do, for the same request bytes.

Each case runs through the ``TestClient`` (``dispatch``) and through both
transports with a raw socket (so that requests an HTTP library would refuse to
send still reach the server), and compares status, headers (all but ``Date``)
and body.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websocket

from simple_http_server import (
    App,
    BytesBody,
    Headers,
    MultipartFile,
    Request,
    Response,
    WebsocketHandler,
    WebsocketRequest,
)
from simple_http_server.config import ServerConfig
from simple_http_server.testing import TestClient
from simple_http_server.transport.ws_memory import WebsocketRejected

from ..conftest import FRONT_ENDS, LogRecords, live_server
from ..robustness.wire import MalformedResponse, parse_responses


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, without Date
    body: bytes


Ask = Callable[[str, str, Any, bytes], Answer]


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    lines = [(str(k).lower(), str(v)) for k, v in headers]
    return Answer(status, sorted(line for line in lines if line[0] != "date"), body)


def _read_one(sock: socket.socket, head_request: bool) -> Answer:
    """Read exactly one response (the connection may stay open)."""
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        data += chunk
        with contextlib.suppress(MalformedResponse):
            (response,) = parse_responses(data, [head_request])
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
            return _answer(response.status, headers, response.body)
        assert chunk, data
    raise AssertionError(f"no complete response: {data!r}")


@contextlib.contextmanager
def front(kind: str, app: App, **config: Any) -> Iterator[Ask]:
    """``ask(method, target, headers, body)`` through the TestClient or a raw socket.

    The raw request is what the TestClient sends: ``Host: testserver`` (unless a
    ``Host`` is given) and a ``Content-Length`` for a body (unless a framing header is).
    """
    if kind == "dispatch":
        client = TestClient(app, config=ServerConfig().with_changes(**config))

        def ask_client(method: str, target: str, headers: Any, body: bytes) -> Answer:
            reply = client.request(method, target, headers=headers, body=body)
            return _answer(reply.status_code, reply.header_list, reply.content)

        yield ask_client
        return
    with live_server(app, kind, **config) as live:

        def ask_server(method: str, target: str, headers: Any, body: bytes) -> Answer:
            pairs = list(headers.items() if isinstance(headers, dict) else headers)
            hosted = any(name.lower() == "host" for name, _ in pairs)
            lines = [*([] if hosted else [("Host", "testserver")]), *pairs]
            framed = {name.lower() for name, _ in pairs} & {"content-length", "transfer-encoding"}
            if body and not framed:
                lines.append(("Content-Length", str(len(body))))
            head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines)
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
                sock.sendall(head.encode("latin-1") + b"\r\n" + body)
                return _read_one(sock, method == "HEAD")

        yield ask_server


def http_app() -> App:
    app = App()

    @app.route("/text")
    def text() -> str:
        return "hello"

    @app.route("/echo", method="POST")
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/stream")
    def stream() -> Iterator[str]:
        yield "a"
        yield "b"

    @app.route("/header")
    def header(headers: Headers) -> str:
        return str(headers.get("X-A"))

    return app


CASES = {
    "header-over-max-head-size": ("GET", "/text", {"X-Big": "y" * 5000}, b"", 431),
    # RFC 9112 3: a request line longer than the limit is a 414, the other head lines a 431.
    "target-over-max-head-size": ("GET", "/" + "z" * 5000, {}, b"", 414),
    "target-and-header-over-max-head-size": ("GET", "/" + "z" * 1500, {"X": "y" * 1500}, b"", 431),
    # A trailer section that arrives whole is held to max_head_size too.
    "trailers-over-max-head-size": (
        "POST", "/echo", {"Transfer-Encoding": "chunked"},
        b"3\r\nabc\r\n0\r\n" + b"X-T: %s\r\n" % (b"t" * 4000) + b"\r\n",
        400,
    ),
    "trailers-within-max-head-size": (
        "POST", "/echo", {"Transfer-Encoding": "chunked"},
        b"3\r\nabc\r\n0\r\n" + b"X-T: %s\r\n" % (b"t" * 1000) + b"\r\n",
        200,
    ),
    "space-in-target": ("GET", "/a b", {}, b"", 400),
    "del-in-target": ("GET", "/t\x7fext", {}, b"", 400),
    "bad-header-name": ("GET", "/text", {"Bad Name": "v"}, b"", 400),
    "bad-content-length": ("GET", "/text", {"Content-Length": "abc"}, b"", 400),
    "length-and-chunked": (
        "POST", "/echo", {"Content-Length": "5", "Transfer-Encoding": "chunked"}, b"0\r\n\r\n", 400
    ),
    "chunked-request-body": (
        "POST", "/echo", {"Transfer-Encoding": "chunked"}, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 200
    ),
    "body-longer-than-content-length": ("POST", "/echo", {"Content-Length": "3"}, b"abcdef", 200),
    "streamed-answer-is-chunked": ("GET", "/stream", {}, b"", 200),
    "connection-close": ("GET", "/text", {"Connection": "close"}, b"", 200),
    "head": ("HEAD", "/text", {}, b"", 200),
    "plain": ("GET", "/text", {}, b"", 200),
    "header-sent-twice": ("GET", "/header", [("X-A", "1"), ("X-A", "2")], b"", 200),
    # RFC 9112 3.2: a Host that is not uri-host [":" port] is a 400.
    "host-with-a-space": ("GET", "/text", {"Host": "a b"}, b"", 400),
    "host-with-a-slash": ("GET", "/text", {"Host": "evil.example/x"}, b"", 400),
    "host-with-userinfo": ("GET", "/text", {"Host": "user@evil.example"}, b"", 400),
    "host-with-a-bad-port": ("GET", "/text", {"Host": "example.org:80x"}, b"", 400),
    "host-with-non-ascii": ("GET", "/text", {"Host": "caf\u00e9.example"}, b"", 400),
    "host-with-an-open-bracket": ("GET", "/text", {"Host": "[::1:8080"}, b"", 400),
    "ipv6-host": ("GET", "/text", {"Host": "[::1]:8080"}, b"", 200),
    "ipv6-host-with-a-zone": ("GET", "/text", {"Host": "[fe80::1%25eth0]:8080"}, b"", 200),
    "empty-host": ("GET", "/text", {"Host": ""}, b"", 200),
    "percent-encoded-host": ("GET", "/text", {"Host": "a%2Db.example:"}, b"", 200),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_testclient_answers_as_both_transports(case: str) -> None:
    method, target, headers, body, status = CASES[case]
    answers = {}
    for kind in FRONT_ENDS:
        with front(kind, http_app(), max_head_size=2048) as ask:
            answers[kind] = ask(method, target, headers, body)
    assert answers["threaded"].status == status, answers["threaded"]
    assert answers["dispatch"] == answers["threaded"] == answers["asyncio"]


def test_framing_and_connection_headers_of_the_testclient() -> None:
    client = TestClient(http_app())
    streamed = client.get("/stream")
    assert streamed.headers["Transfer-Encoding"] == "chunked" and streamed.content == b"ab"
    assert "Content-Length" not in streamed.headers
    assert client.get("/text", headers={"Connection": "close"}).headers["Connection"] == "close"
    assert "Connection" not in client.get("/text").headers
    body = b"3\r\nabc\r\n0\r\n\r\n"
    chunked = client.post("/echo", headers={"Transfer-Encoding": "chunked"}, body=body)
    assert chunked.content == b"abc"


def test_a_non_ascii_target_is_percent_encoded_as_clients_do() -> None:
    app = App()

    @app.route("/p/{name}")
    def named(name: str) -> str:
        return name

    assert TestClient(app).get("/p/café").text == "café"


def test_a_request_header_valued_none_is_not_sent() -> None:
    """As requests leaves it out (and as a response header valued None is not sent);
    the app read the text ``"None"``."""
    app = App()

    @app.route("/h")
    def headers(request: Request) -> dict[str, Any]:
        return {"x": request.headers.get("X-Absent"), "y": request.headers.get("X-Sent")}

    reply = TestClient(app).get("/h", headers={"X-Absent": None, "X-Sent": "s"})
    assert reply.json() == {"x": None, "y": "s"}


def test_a_multipart_form_is_written_as_browsers_write_it() -> None:
    """Names and file names are quoted as HTML5 says, bytes values sent as they are:
    a '"' in a name ended it early (a file part became a text field named
    'x"; filename="a.txt'), a CR LF in a file name started a header, and bytes
    were sent as their repr ("b'v'")."""
    app = App()

    @app.route("/form", method="POST")
    def form(request: Request) -> dict[str, Any]:
        return {
            name: [[v.filename, v.content.decode()] if isinstance(v, MultipartFile) else v
                   for v in values]
            for name, values in request.parameters.items()
        }  # fmt: skip

    reply = TestClient(app).post(
        "/form",
        data={'k"ey': b"v", "n": ["1", 2]},
        files={'f"ile': ('a"b\r\nX-Evil: 1.txt', b"data")},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        'k"ey': ["v"],
        "n": ["1", "2"],
        'f"ile': [['a"b\r\nX-Evil: 1.txt', "data"]],
    }


def test_a_body_shorter_than_its_content_length_is_a_408_as_after_body_timeout() -> None:
    reply = TestClient(http_app()).post("/echo", headers={"Content-Length": "10"}, body=b"abc")
    assert reply.status_code == 408 and reply.headers["Connection"] == "close"


def test_cr_or_lf_cannot_be_sent() -> None:
    client = TestClient(http_app())
    with pytest.raises(ValueError, match="CR or LF"):
        client.get("/text", headers={"X-Injected": "a\r\nX-Other: b"})


# -- websocket handshakes ---------------------------------------------------------
def handshake_app() -> App:
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Handshake(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            if request.get_parameter("deny"):
                return 403, {"X-Deny": "yes"}
            return 0, {"X-Extra": "1", "Sec-WebSocket-Protocol": "chat"}

    return app


def _without_varying(headers: Any) -> list[tuple[str, str]]:
    skip = {"date", "sec-websocket-accept"}
    return sorted((k.lower(), v) for k, v in headers if k.lower() not in skip)


@contextlib.contextmanager
def ws_front(kind: str) -> Iterator[Callable[[str], Any]]:
    """``open(path)``: (status, headers, subprotocol) of the handshake answer, or
    (status, headers, body) of a refusal, through the TestClient or a real client."""
    if kind == "dispatch":
        client = TestClient(handshake_app())

        def open_client(path: str) -> Any:
            try:
                ws = client.websocket_connect(path, headers={"Sec-WebSocket-Protocol": "chat"})
            except WebsocketRejected as rejected:
                return rejected.status_code, _without_varying(rejected.headers), rejected.body
            with ws:
                return ws.status_code, _without_varying(ws.header_list), ws.subprotocol

        yield open_client
        return
    with live_server(handshake_app(), kind, websocket_ping_interval=0) as live:

        def open_server(path: str) -> Any:
            url = f"ws://127.0.0.1:{live.port}{path}"
            try:
                ws = websocket.create_connection(url, timeout=5, subprotocols=["chat"])
            except websocket.WebSocketBadStatusException as rejected:
                headers = list(rejected.resp_headers.items())
                return rejected.status_code, _without_varying(headers), rejected.resp_body
            try:
                headers = list(ws.getheaders().items())
                return ws.getstatus(), _without_varying(headers), ws.getsubprotocol()
            finally:
                ws.close()

        yield open_server


@pytest.mark.parametrize("path", ["/ws", "/ws?deny=1"], ids=["accepted", "refused"])
def test_the_handshake_answer_is_the_servers(path: str) -> None:
    answers = {}
    for kind in FRONT_ENDS:
        with ws_front(kind) as open_ws:
            answers[kind] = open_ws(path)
    assert answers["dispatch"] == answers["threaded"] == answers["asyncio"], answers
    status, headers, _ = answers["dispatch"]
    if status == 101:
        assert ("x-extra", "1") in headers and answers["dispatch"][2] == "chat"
    else:
        assert ("content-type", "application/json; charset=utf-8") in headers


#: permessage-deflate offers, and how the TestClient makes each (None: ``compress=True``).
DEFLATE_OFFERS = {
    "compress": None,
    "params": "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
    "declined": "permessage-deflate; unknown_param",
    "second": "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
}


def _server_extensions(port: int, offer: str) -> str | None:
    """The ``Sec-WebSocket-Extensions`` of a live server's 101 to ``offer``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: " + offer.encode() + b"\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-extensions":
            return value.strip().decode()
    return None


@pytest.mark.parametrize("kind", list(DEFLATE_OFFERS))
def test_the_test_client_negotiates_permessage_deflate_as_the_servers_do(kind: str) -> None:
    """Before, the TestClient declined every offer (``compress=`` did not exist)."""
    given = DEFLATE_OFFERS[kind]
    client = TestClient(handshake_app())
    if given is None:
        ws = client.websocket_connect("/ws", compress=True)
    else:
        ws = client.websocket_connect("/ws", headers={"Sec-WebSocket-Extensions": given})
    with ws:
        ours = ws.headers.get("Sec-WebSocket-Extensions")
        assert ws.compressed == (ours is not None)
        ws.send_text("ping")  # still a working session, compressed or not
    offer = given or "permessage-deflate; client_max_window_bits"
    for transport in ("threaded", "asyncio"):
        with live_server(handshake_app(), transport, websocket_ping_interval=0) as live:
            assert _server_extensions(live.port, offer) == ours, transport
    assert (ours is None) == (kind == "declined")


def test_the_handshake_sends_the_cookie_jar() -> None:
    app = App()
    seen: list[str | None] = []

    @app.route("/login")
    def login(response: Response) -> str:
        response.add_cookie("token", "secret")
        return "ok"

    @app.websocket_handler(endpoint="/ws")
    class Reader(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> None:
            token = request.cookies.get("token")
            seen.append(token.value if token is not None else None)

    client = TestClient(app)
    with client.websocket_connect("/ws"):
        pass
    client.get("/login")
    with client.websocket_connect("/ws"):
        pass
    with client.websocket_connect("/ws", cookies={"token": "given"}):
        pass
    with client.websocket_connect("/ws", headers={"Cookie": "token=header"}):
        pass
    assert seen == [None, "secret", "given", "header"]


# -- is it a websocket handshake? ---------------------------------------------------
KEY_AND_VERSION = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", **KEY_AND_VERSION}
UPGRADES = {
    "plain-get": ("GET", {}, b"", 200),
    "h2c-is-plain-http": ("GET", {**HANDSHAKE, "Upgrade": "h2c"}, b"", 200),
    "accepted": ("GET", HANDSHAKE, b"", 101),
    "mixed-case-token": ("GET", {**HANDSHAKE, "Upgrade": "WebSocket"}, b"", 101),
    "token-list": ("GET", {**HANDSHAKE, "Upgrade": "h2c, websocket"}, b"", 101),
    "version-8": ("GET", {**HANDSHAKE, "Sec-WebSocket-Version": "8"}, b"", 426),
    "no-connection-upgrade": ("GET", {**HANDSHAKE, "Connection": "keep-alive"}, b"", 400),
    "post": ("POST", HANDSHAKE, b"", 405),
    "with-a-body": ("GET", HANDSHAKE, b"abc", 400),
}


def upgrade_app(events: list[Any]) -> App:
    """``/ws``: a plain HTTP route and a websocket handler on the same path."""
    app = App()

    @app.route("/ws", method=["GET", "POST"])
    def plain() -> str:
        return "plain HTTP"

    @app.websocket_handler(endpoint="/ws")
    class Recorder(WebsocketHandler):
        def on_open(self, session: Any) -> None:
            events.append("open")

        def on_close(self, session: Any, reason: Any) -> None:
            events.append(("close", reason.code))

    return app


def _events_once_closed(events: list[Any]) -> list[Any]:
    """``events`` once ``on_close`` ran (a server runs it after the client left)."""
    deadline = time.monotonic() + 5
    while not any(isinstance(e, tuple) for e in events):
        assert time.monotonic() < deadline, events
        time.sleep(0.01)
    return list(events)


@pytest.mark.parametrize("case", list(UPGRADES))
def test_a_websocket_handshake_is_told_apart_as_the_servers_do(transport: str, case: str) -> None:
    """``request()`` answers what the servers answer: the handshake's answer for an
    ``Upgrade: websocket`` (a 101 whose session then sees the client go), plain HTTP
    for any other request; ``websocket_connect`` opens or raises that same answer."""
    method, headers, body, status = UPGRADES[case]
    answers, events = {}, {}
    for kind in ("dispatch", transport):
        events[kind] = []
        with front(kind, upgrade_app(events[kind])) as ask:
            answers[kind] = ask(method, "/ws", headers, body)
            if answers[kind].status == 101:
                events[kind] = _events_once_closed(events[kind])
    assert answers["dispatch"] == answers[transport], answers
    assert answers["dispatch"].status == status
    assert events["dispatch"] == events[transport]
    assert events["dispatch"] == (["open", ("close", 1006)] if status == 101 else [])
    if "Upgrade" in headers and method == "GET" and not body:
        try:
            with TestClient(upgrade_app([])).websocket_connect("/ws", headers) as ws:
                opened = _answer(ws.status_code, ws.header_list, b"")
        except WebsocketRejected as rejected:
            opened = _answer(rejected.status_code, rejected.headers, rejected.body)
        assert opened == answers[transport]


# -- a failure after the answer started ---------------------------------------------
def failing_app() -> App:
    """Routes that fail once their streamed answer started."""
    app = App()

    @app.route("/generator")
    def generator() -> Iterator[bytes]:
        yield b"first;"
        raise RuntimeError("the generator broke")

    @app.route("/async-generator")
    def async_generator() -> Any:
        async def chunks() -> Any:
            yield b"first;"
            raise RuntimeError("the async generator broke")

        return chunks()

    @app.route("/write-bytes")
    def write_bytes(response: Response) -> None:
        response.write_bytes(b"partial;")
        raise RuntimeError("the controller broke")

    @app.route("/async-write-bytes")
    async def async_write_bytes(response: Response) -> None:
        response.write_bytes(b"partial;")
        raise RuntimeError("the coroutine broke")

    return app


def _errors(log_records: LogRecords, since: int) -> list[tuple[str, str]]:
    """The errors logged after the first ``since`` records: message and exception line."""
    return [
        (r.getMessage(), (r.exc_text or "").rpartition("\n")[2])
        for r in log_records.records[since:]
        if r.levelno >= logging.ERROR
    ]


def _truncated_over_a_socket(port: int, path: str) -> tuple[Answer, bool]:
    """The answer as ``http.client`` reads it, and whether its body was cut short."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "testserver"})
        response = conn.getresponse()
        try:
            body, truncated = response.read(), False
        except http.client.IncompleteRead as cut:
            body, truncated = cut.partial, True
        return _answer(response.status, response.getheaders(), body), truncated
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path", ["/generator", "/async-generator", "/write-bytes", "/async-write-bytes"]
)
def test_a_failure_after_the_answer_started_truncates_it_as_the_servers_do(
    transport: str, path: str, log_records: LogRecords
) -> None:
    """The TestClient answers (it does not raise): the head and the body sent before the
    failure, marked ``truncated`` (a real client reads no final chunk), and the error is
    logged as the servers log it."""
    reply = TestClient(failing_app()).get(path)
    dispatched = _answer(reply.status_code, reply.header_list, reply.content), reply.truncated
    logged = _errors(log_records, 0)
    start = len(log_records.records)
    with live_server(failing_app(), transport) as live:
        served = _truncated_over_a_socket(live.port, path)
        deadline = time.monotonic() + 5
        while len(_errors(log_records, start)) < len(logged) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert dispatched == served
    assert reply.status_code == 200 and reply.truncated
    assert reply.content == (b"partial;" if "write" in path else b"first;")
    assert logged == _errors(log_records, start) and len(logged) == 1, logged
    assert logged[0][1].startswith("RuntimeError: the ")


def test_a_complete_answer_is_not_truncated() -> None:
    client = TestClient(http_app())
    assert not client.get("/stream").truncated and not client.get("/text").truncated
    assert not client.head("/text").truncated
    assert not client.get("/text", headers={"X-Big": "y" * 70_000}).truncated  # a 431
