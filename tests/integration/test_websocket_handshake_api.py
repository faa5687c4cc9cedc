"""The websocket handshake API as 0.22.x / naja-atra had it: what ``on_handshake`` may
return, the upgrade request's headers (``http.client.HTTPMessage`` there), and which
handler serves an endpoint given a class and function-style handlers.

Each test runs over raw sockets in the threaded and asyncio transports and under
uvicorn (``asgi``), and through the ``TestClient``.
"""

from __future__ import annotations

import contextlib
import http
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simple_http_server import (
    WEBSOCKET_MESSAGE_TEXT,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
)
from simple_http_server.app import App
from simple_http_server.testing import TestClient
from simple_http_server.transport.ws_memory import WebsocketRejected

from ..conftest import LogRecords, ws_server

KINDS = ["threaded", "asyncio", "asgi"]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def handshake(port: int, path: str, extra: list[str] | None = None) -> tuple[int, list[str]]:
    """Send an upgrade request for ``path`` (with ``extra`` header lines); the answer's
    status and header lines."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *(extra or []),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in head and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    status_line, *lines = head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), [_line(*line.split(": ", 1)) for line in lines]


def _line(name: str, value: str) -> str:
    """A header line, its name in lower case (uvicorn sends names so)."""
    return f"{name.lower()}: {value}"


def memory_handshake(
    app: App, path: str, headers: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """What ``TestClient.websocket_connect`` got: the status and header lines."""
    try:
        with TestClient(app).websocket_connect(path, headers=headers) as ws:
            return ws.status_code, [_line(n, v) for n, v in ws.header_list]
    except WebsocketRejected as rejected:
        return rejected.status_code, [_line(n, v) for n, v in rejected.headers]


@pytest.fixture(params=[*KINDS, "testclient"])
def answer(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``answer(app)`` gives ``shake(path, extra_lines=None) -> (status, header lines)``
    for ``app`` served by the parametrized kind."""
    kind = str(request.param)
    with contextlib.ExitStack() as stack:

        def serve(app: App) -> Callable[..., tuple[int, list[str]]]:
            if kind == "testclient":
                return lambda path, extra=None: memory_handshake(
                    app, path, dict(line.split(": ", 1) for line in extra or [])
                )
            port = stack.enter_context(ws_server(kind, app))
            return lambda path, extra=None: handshake(port, path, extra)

        yield serve


# -- what on_handshake returns ------------------------------------------------------
#: on_handshake's result -> (status, header lines the answer must carry, nor carry).
RESULTS: dict[str, tuple[Any, int, list[str], list[str]]] = {
    "status-and-text": ((401, "denied"), 401, [], []),
    "headers-then-status": (({"X-C": "3"}, 403), 403, ["x-c: 3"], []),
    "two-header-dicts": ((0, {"X-D": "4"}, {"X-E": "5"}), 101, ["x-d: 4", "x-e: 5"], []),
    "later-dict-wins": (({"X-F": "1"}, {"X-F": "2"}), 101, ["x-f: 2"], ["x-f: 1"]),
    "zero-then-status": ((0, 403), 403, [], []),
    "first-status-wins": ((403, 401), 403, [], []),
    "none-status": ((None, {"X-B": "2"}), 101, ["x-b: 2"], []),
    "text-status-ignored": (("403", {"X-S": "1"}), 101, ["x-s: 1"], []),
    "only-a-status": ((403,), 403, [], []),
    "empty-tuple": ((), 101, [], []),
    "str": ("ok", 101, [], []),
    "false": (False, 101, [], []),
    "empty-list": ([], 101, [], []),
    "empty-dict": ({}, 101, [], []),
    "list": ([1, 2], 101, [], []),
    "http-status": (http.HTTPStatus.FORBIDDEN, 403, [], []),
    "status-101": ((101, {"X-G": "7"}), 101, ["x-g: 7"], []),
    "headers-list-value": ((0, {"X-L": ["a", "b"]}), 101, ["x-l: a", "x-l: b"], []),
    "none-header-value": (
        {"X-N": None, "X-M": ["m", None]},
        101,
        ["x-m: m"],
        ["x-n: None", "x-m: None"],
    ),
    "invalid-status": ((99, {"X-I": "1"}), 500, [], ["x-i: 1"]),
    "status-700": (700, 500, [], []),
    "true": (True, 500, [], []),
}


def results_app() -> App:
    app = App()

    @app.websocket_handler(endpoint="/hs/{case}")
    class Returns(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            return RESULTS[request.path_values["case"]][0]

    return app


def test_on_handshake_results_are_read_as_the_original_read_them(
    answer: Callable[..., Any], log_records: LogRecords
) -> None:
    """Anything false accepts; in a tuple the first non-zero int is the status and
    every dict adds headers; another type is accepted with a warning; a status no
    answer may carry is a logged 500 (0.22.x sent its status line)."""
    shake = answer(results_app())
    got = {case: shake(f"/hs/{case}") for case in RESULTS}
    wrong = {}
    for case, (_, status, present, absent) in RESULTS.items():
        seen_status, lines = got[case]
        if (
            seen_status != status
            or any(h not in lines for h in present)
            or set(absent) & set(lines)
        ):
            wrong[case] = got[case]
    assert not wrong
    messages = [r.getMessage() for r in log_records.records]
    for text in ("'ok'", "[1, 2]"):
        assert any("neither a status nor headers: accepted" in m and text in m for m in messages)
    tracebacks = [r.exc_text or "" for r in log_records.records if r.levelname == "ERROR"]
    for n in (99, 700, 1):
        assert any(
            f"ValueError: on_handshake returned the invalid status {n}" in t for t in tracebacks
        )


# -- the upgrade request's headers ----------------------------------------------------
def headers_app(seen: list[dict[str, Any]]) -> App:
    app = App()

    @app.websocket_handler(endpoint="/auth")
    class Auth(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            headers = request.headers
            seen.append(
                {
                    "missing": headers["X-Missing"],
                    "get": headers.get("x-rep"),
                    "first": headers["X-REP"],
                    "all": headers.get_all("x-Rep"),
                    "all-missing": headers.get_all("X-Missing"),
                    "all-default": headers.get_all("X-Missing", []),
                    "in": ("x-rep" in headers, "X-Missing" in headers),
                    "keys": [k for k in headers.keys() if k.lower() == "x-rep"],
                    "items": [kv for kv in headers.items() if kv[0].lower() == "x-rep"],
                    "iter": [k for k in headers if k.lower() == "x-rep"],
                    "cookies": {k: m.value for k, m in request.cookies.items()},
                }
            )
            token = headers["Authorization"]  # a token check written for 0.22.x
            if not token:
                return 401, {"WWW-Authenticate": "Bearer"}
            return {"X-Token": token}

    return app


def test_a_missing_header_reads_as_none_and_a_repeated_one_as_its_first_value(
    answer: Callable[..., Any],
) -> None:
    """``request.headers`` answers as the original's ``HTTPMessage``: ``[name]`` is
    the first value or None, ``get_all`` every value, names in any case."""
    seen: list[dict[str, Any]] = []
    shake = answer(headers_app(seen))
    status, lines = shake("/auth", ["X-Rep: r1", "x-rep: r2", "Cookie: a=1", "cookie: b=2"])
    assert status == 401 and "www-authenticate: Bearer" in lines
    status, lines = shake("/auth", ["Authorization: t0k", "X-Rep: r1"])
    assert status == 101 and "x-token: t0k" in lines
    first = seen[0]
    assert first["missing"] is None
    assert first["all-missing"] is None and first["all-default"] == []
    assert first["in"] == (True, False)
    assert first["get"] == first["first"] == "r1"
    assert first["all"] == ["r1", "r2"]
    # Listed once, under the name first sent (uvicorn gives every name in lower case).
    assert [k.lower() for k in first["keys"]] == [k.lower() for k in first["iter"]] == ["x-rep"]
    assert [(k.lower(), v) for k, v in first["items"]] == [("x-rep", "r1")]
    assert first["cookies"] == {"a": "1", "b": "2"}  # every Cookie line, as before
    assert seen[1]["all"] == ["r1"]


def test_handshake_headers_stay_consistent_when_changed() -> None:
    """``get_all`` follows what a handler sets, deletes or pops."""
    from simple_http_server.models import HandshakeHeaders

    headers = HandshakeHeaders.from_lines([(b"X-Rep", b"r1"), (b"x-rep", b"r2"), (b"A", b"1")])
    assert headers["x-REP"] == "r1" and headers["nope"] is None
    assert headers.get_all("X-REP") == ["r1", "r2"]
    headers["X-Rep"] = "new"
    assert headers.get_all("x-rep") == ["new"] and headers["X-REP"] == "new"
    del headers["x-rep"]
    assert headers.get_all("X-Rep") is None and "X-Rep" not in headers
    copied = headers.copy()
    assert isinstance(copied, HandshakeHeaders) and copied.get_all("a") == ["1"]
    assert headers.pop("A") == "1" and headers.get_all("A") is None
    with pytest.raises(KeyError):
        del headers["gone"]


# -- a class and function-style handlers on one endpoint --------------------------
def mixed_app(class_first: bool) -> App:
    app = App()

    class Room(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            return {"X-Served-By": "class"}

    def text(session: WebsocketSession, message: str) -> None:
        session.send("function")

    def register_class() -> None:
        app.websocket_handler(endpoint="/mix")(Room)

    def register_function() -> None:
        app.websocket_message(endpoint="/mix", message_type=WEBSOCKET_MESSAGE_TEXT)(text)

    order = [register_class, register_function]
    for register in order if class_first else order[::-1]:
        register()
    return app


@pytest.mark.parametrize("class_first", [True, False])
def test_a_class_serves_its_endpoint_whatever_functions_are_registered_with_it(
    answer: Callable[..., Any], log_records: LogRecords, class_first: bool
) -> None:
    """As in naja-atra: the ``@websocket_handler`` class holds the endpoint in either
    order; the functions are ignored, and a warning says so."""
    status, lines = answer(mixed_app(class_first))("/mix")
    assert status == 101 and "x-served-by: class" in lines
    warnings = [r.getMessage() for r in log_records.records if r.levelname == "WARNING"]
    assert any("'/mix'" in m and "Room" in m and "text" in m for m in warnings), warnings


def test_of_two_classes_on_one_endpoint_the_last_serves_it(
    answer: Callable[..., Any], log_records: LogRecords
) -> None:
    app = App()
    for name in ("First", "Second"):

        def on_handshake(self: Any, request: WebsocketRequest, name: str = name) -> Any:
            return {"X-Served-By": name}

        handler = type(name, (WebsocketHandler,), {"on_handshake": on_handshake})
        app.websocket_handler(endpoint="/dup/{x}")(handler)
    status, lines = answer(app)("/dup/a")
    assert status == 101 and "x-served-by: Second" in lines
    warnings = [r.getMessage() for r in log_records.records if r.levelname == "WARNING"]
    assert any("'/dup/{x}'" in m and "First" in m for m in warnings), warnings


def test_an_absolute_form_handshake_reads_the_targets_host(answer: Callable[..., Any]) -> None:
    """RFC 9112 3.2.2, as for HTTP requests: the target's host replaces ``Host``."""
    app = App()

    @app.websocket_handler(endpoint="/where")
    class Where(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            hosts = request.headers.get_all("Host")
            return 0, {"X-Host": request.headers["Host"], "X-Hosts": len(hosts)}

    shake = answer(app)
    status, lines = shake("http://real.example:8080/where")
    assert status == 101 and "x-host: real.example:8080" in lines and "x-hosts: 1" in lines
    status, lines = shake("/where")
    assert status == 101 and ("x-host: 127.0.0.1" in lines or "x-host: testserver" in lines)
