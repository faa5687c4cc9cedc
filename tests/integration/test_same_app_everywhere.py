"""One demo app, four servers: our threaded and asyncio transports, gunicorn, uvicorn.

Every server must answer each request exactly as the dispatch layer does (the
TestClient is the reference): same status, same headers that matter, same body.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from simple_http_server.testing import TestClient

from .apps import harness
from .apps.demo_app import RESOURCES, build_app

SERVERS = ["threaded", "asyncio", "gunicorn", "uvicorn"]
HEADERS_THAT_MATTER = (
    "content-type", "content-length", "location", "allow", "etag", "last-modified",
    "accept-ranges", "content-range", "x-length",
)  # fmt: skip
FORM = "application/x-www-form-urlencoded"
CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("GET", "/hello?name=x%20y", b"", {}),
    ("GET", "/path/a%20b", b"", {}),
    ("POST", "/json", b'{"k": [1, "two"]}', {"Content-Type": "application/json"}),
    ("POST", "/form", b"name=n%C3%A9&age=3", {"Content-Type": FORM}),
    ("POST", "/bytes", b"\x00raw\xff", {"Content-Type": "application/octet-stream"}),
    ("POST", "/upload", b"u" * 200_000, {"Content-Type": "application/octet-stream"}),
    ("GET", "/stream?count=4", b"", {}),
    ("GET", "/write", b"", {}),
    ("GET", "/async", b"", {}),
    ("GET", "/teapot", b"", {}),
    ("GET", "/boom", b"", {}),
    ("GET", "/go", b"", {}),
    ("GET", "/only-post", b"", {}),
    ("GET", "/nope", b"", {}),
    ("GET", "/static/hello.txt", b"", {}),
    ("HEAD", "/static/hello.txt", b"", {}),
    ("GET", "/static/hello.txt", b"", {"Range": "bytes=0-5"}),
    ("GET", "/counter", b"", {}),
    # absolute-form (RFC 9112 3.2.2): the target's host, not the Host header
    ("GET", "http://example.org:8080/host?x=1", b"", {"Host": "other.example"}),
]


def command(kind: str, port: int) -> list[str]:
    if kind in ("threaded", "asyncio"):
        return harness.python("-m", "tests.integration.apps.demo_app", str(port), kind)
    if kind == "gunicorn":
        return harness.gunicorn(
            "-w", "1", "-b", f"127.0.0.1:{port}", "tests.integration.apps.demo_app:wsgi",
        )  # fmt: skip
    return [
        *harness.tool("uvicorn"),
        "tests.integration.apps.demo_app:asgi", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning",
    ]  # fmt: skip


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[harness.Proc]:
    port = harness.free_port()
    with harness.running(command(str(request.param), port), port) as proc:
        yield proc


def essentials(status: int, headers: list[tuple[str, str]], body: bytes) -> tuple[object, ...]:
    """What must be identical: status, the headers that matter, cookie names, the body."""
    kept = sorted((k.lower(), v) for k, v in headers if k.lower() in HEADERS_THAT_MATTER)
    cookies = sorted(
        v.split("=", 1)[0] + ";" + v.split(";", 1)[1]
        for k, v in headers
        if k.lower() == "set-cookie"
    )
    return status, kept, cookies, body


def reference(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[object, ...]:
    client = TestClient(build_app(), RESOURCES)
    reply = client.request(method, path, headers=headers, body=body)
    return essentials(reply.status_code, reply.header_list, reply.content)


def test_every_server_answers_like_the_dispatch_layer(served: harness.Proc) -> None:
    for method, path, body, headers in CASES:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            got = essentials(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        expected = reference(method, path, body, headers)
        if method == "HEAD":  # a HEAD answer has no body; its length is the GET one's
            expected = (*expected[:3], b"")
        assert got == expected, (method, path)


def test_websocket_everywhere_but_wsgi(
    served: harness.Proc, request: pytest.FixtureRequest
) -> None:
    import websocket

    url = f"ws://127.0.0.1:{served.port}/ws/echo/all"
    if "gunicorn" in request.node.callspec.id:  # WSGI cannot carry websockets: a clear 501
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(url, timeout=10)
        assert info.value.status_code == 501
        return
    conn = websocket.create_connection(url, timeout=10)
    try:
        assert conn.recv() == "open all"
        conn.send("same")
        assert conn.recv() == "echo: same"
    finally:
        conn.close()
