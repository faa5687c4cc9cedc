"""Regression tests for the HTTP defects of the original (API-INVENTORY section 13),
on raw sockets in both transports.  Numbers refer to that list."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from simple_http_server import App, BytesBody, Header, JSONBody, PathValue, Request, Session

from ..conftest import TRANSPORTS, LiveServer, live_server
from .wire import parse_responses, read_until_closed, send_and_collect

SESSION_COOKIE = b"PY_SIM_HTTP_SER_SESSION_ID"


def defects_app() -> App:
    app = App()

    @app.route("/echo", method=["POST", "PATCH"])
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/q")
    def query(a: str = "", b: str = "") -> dict[str, str]:
        return {"a": a, "b": b}

    @app.route("/json", method="POST")
    def json_body(data: JSONBody) -> dict[str, object]:
        return {"data": data}

    @app.route("/p/{value}")
    def path_value(value: PathValue) -> str:
        return str(value)

    @app.route("/h")
    def header(token: Header = Header(name="X-Token", default="")) -> str:
        return str(token)

    @app.route("/session")
    def session(session: Session) -> str:
        return session.id

    @app.route("/host")
    def host(request: Request) -> dict[str, object]:
        return {
            "host": request.host,
            "type": request.content_type,
            "length": request.content_length,
        }

    return app


@pytest.fixture(scope="module", params=TRANSPORTS)
def live(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    with live_server(defects_app(), str(request.param), keep_alive_max_requests=10) as server:
        yield server


def one(live: LiveServer, request: bytes) -> tuple[int, bytes]:
    if b"Connection:" not in request:
        request = request.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    responses = parse_responses(send_and_collect(live.port, request))
    assert len(responses) == 1
    return responses[0].status, responses[0].body


def test_30_request_properties_without_their_headers(live: LiveServer) -> None:
    status, body = one(live, b"GET /host HTTP/1.0\r\n\r\n")  # HTTP/1.0 needs no Host
    assert (status, json.loads(body)) == (200, {"host": "", "type": "", "length": None})
    status, body = one(live, b"GET /host HTTP/1.1\r\nHost: example.org:8080\r\n\r\n")
    assert json.loads(body)["host"] == "example.org:8080"


def test_8_chunked_request_body_is_decoded(live: LiveServer) -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    assert one(live, request) == (200, b"hello world")


def test_9_content_length_without_content_type(live: LiveServer) -> None:
    assert one(live, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi") == (
        200,
        b"hi",
    )


def test_10_patch_can_be_mapped(live: LiveServer) -> None:
    request = b"PATCH /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
    assert one(live, request) == (200, b"x")


def test_11_head_is_answered_for_get_routes(live: LiveServer) -> None:
    data = send_and_collect(live.port, b"HEAD /q HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    (response,) = parse_responses(data, [True])
    assert response.status == 200 and response.body == b""
    assert int(response.header("content-length") or 0) > 0


def test_12_13_14_persistence_and_the_10th_request(live: LiveServer) -> None:
    """HTTP/1.1 stays open without a Connection header; the 10th (last allowed)
    answer is a real status line with ``Connection: close``; keep-alive also holds
    in the asyncio transport (no write_eof after each response)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        for _ in range(9):
            sock.sendall(b"GET /q?a=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, "closed before the limit"
                data += chunk
            (response,) = parse_responses(data)
            assert response.status == 200 and not response.closes
        sock.sendall(b"GET /q?a=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        (last,) = parse_responses(read_until_closed(sock))
    assert last.status == 200 and last.closes


def test_undecodable_path_value_is_not_a_500(live: LiveServer) -> None:
    # (15, a non-latin-1 HttpError message, is in test_malformed.py: /error-unicode)
    assert one(live, b"GET /p/%ff HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200


def test_16_query_with_question_mark_and_plus(live: LiveServer) -> None:
    status, body = one(live, b"GET /q?a=1?2&b=x+y%2Bz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b'{"a": "1?2", "b": "x y+z"}')


def test_17_invalid_json_is_a_400(live: LiveServer) -> None:
    request = (
        b"POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\n\r\n{bad}"
    )
    assert one(live, request)[0] == 400


@pytest.mark.parametrize(
    ("target", "value"),
    [
        (b"/p/a%2520b", b"a%20b"),
        (b"/p/a%20b", b"a b"),
        (b"/p/a:b@c!$&'()*+,;=", b"a:b@c!$&'()*+,;="),
    ],
)
def test_18_path_values_decoded_once_with_every_pchar(
    live: LiveServer, target: bytes, value: bytes
) -> None:
    assert one(live, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n") == (200, value)


def test_19_header_names_ignore_case(live: LiveServer) -> None:
    assert one(live, b"GET /h HTTP/1.1\r\nHost: t\r\nx-TOKEN: abc\r\n\r\n") == (200, b"abc")


def test_4_unknown_session_id_is_not_adopted(live: LiveServer) -> None:
    request = b"GET /session HTTP/1.1\r\nHost: t\r\nCookie: %s=attacker-id\r\n\r\n" % SESSION_COOKIE
    status, body = one(live, request)
    assert status == 200 and body and body != b"attacker-id"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_20_stop_closes_the_listening_socket(transport: str) -> None:
    with live_server(defects_app(), transport) as server:
        port = server.port
        assert one(server, b"GET /q HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
