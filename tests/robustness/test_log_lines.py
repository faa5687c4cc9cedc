"""What a client sends never forges or breaks a log line (CWE-117): control characters,
``"`` and ``\\`` in the path (and the other client-controlled text the framework logs)
are escaped as ``\\xHH``, so each request is one access-log line."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from simple_http_server import App, Response, WebsocketHandler, WebsocketRequest, logger
from simple_http_server.config import ServerConfig
from simple_http_server.testing import TestClient

from ..conftest import LogRecords, live_server

#: (request target, the path as the log lines show it)
PATHS = [
    (
        "/x%0D%0A[2026-01-01]-[simple_http_server.access:1]%20INFO:%2010.0.0.1%20%22GET%20/a%22",
        "/x\\x0d\\x0a[2026-01-01]-[simple_http_server.access:1] INFO: 10.0.0.1 \\x22GET /a\\x22",
    ),
    ("/colour%1B[2J%1B[31mRED%1B[0m", "/colour\\x1b[2J\\x1b[31mRED\\x1b[0m"),
    ("/nul%00tab%09del%7Fbs%5C", "/nul\\x00tab\\x09del\\x7fbs\\x5c"),
    ("/raw%FFbidi%E2%80%AEsep%E2%80%A8c1%C2%9B", "/raw\\xffbidi\\u202esep\\u2028c1\\x9b"),
    ("/caf%C3%A9/%E6%97%A5", "/café/日"),  # printable text stays as it is
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/plain/path?q=1", "/plain/path?q=1"),
        ("a\r\nb", "a\\x0d\\x0ab"),
        ('say "hi"', "say \\x22hi\\x22"),
        ("back\\slash", "back\\x5cslash"),
        ("\x1b[0m\x9b\x85", "\\x1b[0m\\x9b\\x85"),
        ("\u2028\u2029\u202e\u200b\ufeff", "\\u2028\\u2029\\u202e\\u200b\\ufeff"),
        ("\udcff\udc80", "\\xff\\x80"),  # undecodable bytes (surrogateescape)
        ("\U000e0001", "\\U000e0001"),
        ("café 日本 😀", "café 日本 😀"),
    ],
)
def test_escape(text: str, expected: str) -> None:
    assert logger.escape(text) == expected


def test_escape_returns_clean_text_itself() -> None:
    text = "/a/clean/path"
    assert logger.escape(text) is text


def logging_app() -> App:
    app = App()

    @app.route(regexp="^/p/")
    def fail() -> None:
        raise RuntimeError("controller failed")

    @app.websocket_handler(regexp="^/ws/")
    class Refusing(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            raise RuntimeError("handshake failed")

    return app


def exchange(port: int, head: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def get(port: int, target: str) -> bytes:
    return exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def messages(log_records: LogRecords, name: str) -> list[str]:
    return [r.getMessage() for r in log_records.records if r.name == f"simple_http_server.{name}"]


def check_one_line_each(log_records: LogRecords) -> None:
    """Every record's message, as a handler formats it, is a single printable line."""
    formatter = logging.Formatter(logger.DEFAULT_FORMAT, logger.DEFAULT_DATE_FORMAT)
    for record in log_records.records:
        line = formatter.format(logging.makeLogRecord({**record.__dict__, "exc_text": None}))
        assert line.isprintable(), repr(line)


def test_request_paths_are_escaped_in_access_and_error_lines(
    serve: Callable[..., Any], log_records: LogRecords
) -> None:
    live = serve(logging_app(), access_log=True)
    for target, _ in PATHS:
        assert get(live.port, target).startswith(b"HTTP/1.1 404 ")
        assert get(live.port, "/p" + target).startswith(b"HTTP/1.1 500 ")
    access = messages(log_records, "access")
    assert len(access) == 2 * len(PATHS)
    for (_, shown), line, failed in zip(PATHS, access[::2], access[1::2], strict=True):
        assert re.fullmatch(rf'127\.0\.0\.1 "GET {re.escape(shown)}" 404 \d+ [\d.]+ms', line)
        assert re.fullmatch(rf'127\.0\.0\.1 "GET /p{re.escape(shown)}" 500 \d+ [\d.]+ms', failed)
    errors = messages(log_records, "dispatch")
    assert errors == [f"Error while serving GET /p{shown}" for _, shown in PATHS]
    check_one_line_each(log_records)


def test_a_websocket_path_is_escaped_when_its_handshake_fails(
    serve: Callable[..., Any], log_records: LogRecords
) -> None:
    live = serve(logging_app())
    target, shown = PATHS[0]
    answer = exchange(
        live.port,
        f"GET /ws{target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert messages(log_records, "websocket") == [f"Websocket handshake of /ws{shown} failed"]
    check_one_line_each(log_records)


def test_the_testclient_logs_the_same_escaped_lines(log_records: LogRecords) -> None:
    client = TestClient(logging_app(), config=ServerConfig(access_log=True))
    for target, _ in PATHS:
        assert client.get("/p" + target).status_code == 500
    errors = messages(log_records, "dispatch")
    assert errors == [f"Error while serving GET /p{shown}" for _, shown in PATHS]
    access = messages(log_records, "access")
    assert [line.split(" ", 1)[1].rsplit(" ", 3)[0] for line in access] == [
        f'"GET /p{shown}"' for _, shown in PATHS
    ]
    check_one_line_each(log_records)


def byte_count_app() -> App:
    app = App()

    @app.route("/hi")
    def hi() -> str:
        return "hello"  # 5 body bytes

    @app.route("/wb")
    def streamed(response: Response) -> None:
        response.write_bytes(b"abcd")
        response.write_bytes(bytearray(b"efghi"))  # 9 body bytes
        time.sleep(0.1)  # a HEAD client has the whole answer and leaves meanwhile

    @app.route("/none")
    def no_content(response: Response) -> None:
        response.status_code = 204
        response.write_bytes(b"dropped")  # a 204 has no body
        time.sleep(0.1)

    @app.route("/awb")
    async def streamed_from_a_coroutine(response: Response) -> None:
        response.write_bytes(b"abc")
        await response.drain()
        response.write_bytes(b"defg")  # 7 body bytes

    return app


def access_lines(log_records: LogRecords, count: int) -> list[str]:
    """The access lines, once ``count`` are there: a line follows its answer."""
    deadline = time.monotonic() + 5
    while len(lines := messages(log_records, "access")) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines


def test_access_lines_count_the_body_bytes_sent(make_any_client, log_records: LogRecords) -> None:
    """``write_bytes`` answers were logged with -1 bytes, and HEAD answers with the size
    of the GET body, which is not sent; under wsgiref, which gives ``REMOTE_ADDR`` but
    no ``REMOTE_PORT``, the client was ``-``; under uvicorn a streamed HEAD or 204 answer
    whose client left once it had the head was taken as a client gone: no line at all."""
    client = make_any_client(byte_count_app(), access_log=True)
    asked = [("GET", "/hi"), ("HEAD", "/hi"), ("GET", "/wb"), ("HEAD", "/wb"), ("GET", "/awb"),
             ("GET", "/none")]  # fmt: skip
    for method, path in asked:
        assert client.request(method, path).status == (204 if path == "/none" else 200)
    lines = sorted(access_lines(log_records, len(asked)))  # the order may vary a little
    shown = sorted(line.rsplit(" ", 1)[0] for line in lines)
    client_address = "-" if client.front_end == "dispatch" else "127.0.0.1"  # no socket there
    expected = ['"GET /hi" 200 5', '"HEAD /hi" 200 0', '"GET /wb" 200 9', '"HEAD /wb" 200 0',
                '"GET /awb" 200 7', '"GET /none" 204 0']  # fmt: skip
    assert shown == sorted(f"{client_address} {line}" for line in expected), lines


class StrictUtf8Handler(logging.Handler):
    """Formats records as a handler writing a strict UTF-8 file does (a lone
    surrogate cannot be written: ``handleError`` then drops the record)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(logger.DEFAULT_FORMAT))
        self.written: list[bytes] = []
        self.failed: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.written.append(self.format(record).encode("utf-8"))
        except UnicodeError as exc:
            self.failed.append(exc)


def surrogate_app() -> App:
    app = App()

    @app.route("/user/{uid}")
    def user(uid: str) -> None:
        raise LookupError(f"no user {uid}")  # a path value in an exception's message

    return app


@pytest.mark.parametrize("front_end", ["dispatch", "threaded", "asyncio"])
def test_an_undecodable_byte_in_a_logged_exception_is_escaped(front_end: str) -> None:
    """``/user/caf%E9``: the traceback's last line holds a lone surrogate, which a
    strict UTF-8 handler could not write (the error record was lost)."""
    handler = StrictUtf8Handler()
    logger.add_handler(handler)
    try:
        if front_end == "dispatch":
            assert TestClient(surrogate_app()).get("/user/caf%E9").status_code == 500
        else:
            with live_server(surrogate_app(), front_end) as live:
                assert get(live.port, "/user/caf%E9").startswith(b"HTTP/1.1 500 ")
        logger.flush()
    finally:
        logger.remove_handler(handler)
    assert handler.failed == []
    errors = [line for line in handler.written if b"Error while serving GET /user/caf" in line]
    assert len(errors) == 1
    assert errors[0].endswith(b"LookupError: no user caf\\xe9")
