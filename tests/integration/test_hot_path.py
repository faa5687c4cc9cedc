"""The hot-path shortcuts of issue 10 seen through real sockets, in both transports."""

from __future__ import annotations

import contextvars
import socket
from collections.abc import Callable
from typing import Any

import pytest

from simple_http_server import App, Headers, Request, Session

from ..conftest import LiveServer

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def hot_path_app() -> App:
    app = App()

    @app.route("/bad-header")
    def bad_header() -> Headers:
        return Headers({"Bad Name": "x", "X-Fine": "1"})

    @app.route("/fine")
    def fine() -> dict[str, str]:
        return {"ok": "yes"}

    @app.request_filter("/ctx/**")
    async def tag(ctx: Any) -> None:
        REQUEST_ID.set(ctx.request.path)
        await ctx.do_chain()

    @app.route("/ctx/{name}")
    def ctx_read() -> str:  # a plain function: the pool thread sees the filter's context
        return REQUEST_ID.get()

    @app.route("/count")
    def count(session: Session) -> str:
        n = int(session.get_attribute("n") or 0) + 1
        session.set_attribute("n", n)
        return str(n)

    @app.route("/lazy")
    def lazy(req: Request) -> str:
        session = req.get_session()
        return "none" if session is None else str(session.get_attribute("n"))

    return app


def test_a_bad_header_name_from_user_code_becomes_a_500(serve: Callable[..., LiveServer]) -> None:
    live = serve(hot_path_app())
    for _ in range(2):  # the second time X-Fine is a remembered (validated) line
        conn = live.connection(timeout=5)
        conn.request("GET", "/bad-header")
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 500
        assert reply.getheader("X-Fine") is None and b"Bad Name" not in body
        conn.close()
    conn = live.connection(timeout=5)
    conn.request("GET", "/fine")
    assert conn.getresponse().read() == b'{"ok": "yes"}'
    conn.close()


def test_sync_controllers_see_the_context_of_their_request(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(hot_path_app())
    conn = live.connection(timeout=5)
    for name in ("a", "b", "c"):
        conn.request("GET", f"/ctx/{name}")
        assert conn.getresponse().read() == f"/ctx/{name}".encode()
    conn.close()


def test_sessions_still_work_when_built_lazily(serve: Callable[..., LiveServer]) -> None:
    live = serve(hot_path_app())
    conn = live.connection(timeout=5)
    conn.request("GET", "/lazy")
    reply = conn.getresponse()
    assert reply.read() == b"none" and reply.getheader("Set-Cookie") is None
    conn.request("GET", "/count")
    reply = conn.getresponse()
    assert reply.read() == b"1"
    cookie = reply.getheader("Set-Cookie", "").split(";", 1)[0]
    assert cookie
    for expected in (b"2", b"3"):
        conn.request("GET", "/count", headers={"Cookie": cookie})
        assert conn.getresponse().read() == expected
    conn.request("GET", "/lazy", headers={"Cookie": cookie})
    assert conn.getresponse().read() == b"3"
    conn.close()


LEAKY: contextvars.ContextVar[str] = contextvars.ContextVar("leaky", default="unset")


def test_context_variables_do_not_leak_between_requests(
    serve: Callable[..., LiveServer],
) -> None:
    app = App()

    @app.route("/set")
    def set_value() -> str:
        LEAKY.set("from an earlier request")
        return "set"

    @app.route("/get")
    def get_value() -> str:
        return LEAKY.get()

    live = serve(app, worker_threads=1)  # one worker: the same thread serves both
    conn = live.connection()
    try:
        for path, expected in (("/set", b"set"), ("/get", b"unset"), ("/get", b"unset")):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.read() == expected
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_context_variables_do_not_leak_into_pipelined_requests(
    serve: Callable[..., LiveServer], kind: str
) -> None:
    """A pipelined request is started while its predecessor finishes (asyncio: from
    inside that request's task); it must still begin with a clean context."""
    app = App()
    if kind == "def":

        @app.route("/set")
        def set_value() -> str:
            LEAKY.set("from an earlier request")
            return "set"

    else:

        @app.route("/set")
        async def set_value() -> str:
            LEAKY.set("from an earlier request")
            return "set"

    @app.route("/get")
    async def get_value() -> str:
        return LEAKY.get()

    live = serve(app, worker_threads=1)
    request = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(request % b"/set" + request % b"/get" + request % b"/get")
        data = b""
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"unset"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"set", b"unset", b"unset"]
