"""The ASGI adapter: in-process protocol checks and a real uvicorn (HTTP, lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simple_http_server import (
    App,
    Headers,
    JSONBody,
    Request,
    RequestBodyReader,
    Response,
    server,
)

from ..conftest import asgi_server, ws_server
from ..robustness.test_disconnects import leave, quiet_stream_app, wait_for
from ..robustness.wire import parse_responses, read_until_closed
from .apps import harness
from .apps.demo_app import RESOURCES, build_app


def run_asgi(
    scope: dict[str, Any], messages: list[dict[str, Any]], app: Any = None
) -> list[dict[str, Any]]:
    """Run one ASGI call in-process; ``messages`` are what ``receive`` returns, in order."""
    proxy = app or server.init_asgi_proxy(resources=RESOURCES, app_conf=build_app())
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in messages:
            inbox.put_nowait(message)

        async def receive() -> dict[str, Any]:
            return await inbox.get()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            await asyncio.sleep(0)

        await asyncio.wait_for(proxy(scope, receive, send), 10)

    asyncio.run(main())
    return sent


def http_scope(method: str, path: str, query: bytes = b"", headers: Any = ()) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": list(headers), "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def serve_slowly(
    proxy: Any,
    path: str,
    send_seconds: Callable[[dict[str, Any]], float],
    timeout: float = 10,
    on_send: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Serve one GET through ``proxy`` by an ASGI server whose ``send`` takes
    ``send_seconds(message)``; the messages it took, in order."""
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            if not sent:
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()
            return {}

        async def send(message: dict[str, Any]) -> None:
            await asyncio.sleep(send_seconds(message))
            if on_send is not None:
                on_send(message)
            sent.append(message)

        await asyncio.wait_for(proxy(http_scope("GET", path), receive, send), timeout)

    asyncio.run(main())
    return sent


def test_lifespan_startup_and_shutdown() -> None:
    sent = run_asgi(
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_body_without_content_length_in_many_messages() -> None:
    messages = [{"type": "http.request", "body": b"z" * 1000, "more_body": True}] * 5
    messages += [{"type": "http.request", "body": b"", "more_body": False}]
    sent = run_asgi(http_scope("POST", "/upload", headers=[(b"transfer-encoding", b"chunked")]),
                    messages)  # fmt: skip
    assert sent[0]["status"] == 200
    assert json.loads(body_of(sent)) == {"received": 5000}


def test_http2_body_without_framing_headers_is_read() -> None:
    """HTTP/2 frames the body itself: no Content-Length, no Transfer-Encoding."""
    scope = http_scope(
        "POST", "/form", headers=[(b"content-type", b"application/x-www-form-urlencoded")]
    )
    scope["http_version"] = "2"
    messages = [
        {"type": "http.request", "body": b"name=b", "more_body": True},
        {"type": "http.request", "body": b"ob&age=7", "more_body": False},
    ]
    sent = run_asgi(scope, messages)
    assert sent[0]["status"] == 200
    assert json.loads(body_of(sent)) == {"name": "bob", "age": 7}
    scope = http_scope("GET", "/hello")
    scope["http_version"] = "2"
    sent = run_asgi(scope, [{"type": "http.request", "body": b"", "more_body": False}])
    assert json.loads(body_of(sent)) == {"hello": "world"}


def test_no_content_length_on_204_and_304() -> None:
    sent = run_asgi(http_scope("GET", "/nothing"), [{"type": "http.request"}])
    assert sent[0]["status"] == 204
    assert b"content-length" not in dict(sent[0]["headers"])
    sent = run_asgi(http_scope("GET", "/static/hello.txt"), [{"type": "http.request"}])
    etag = dict(sent[0]["headers"])[b"etag"]
    sent = run_asgi(
        http_scope("GET", "/static/hello.txt", headers=[(b"if-none-match", etag)]),
        [{"type": "http.request"}],
    )
    assert sent[0]["status"] == 304
    assert b"content-length" not in dict(sent[0]["headers"])


def connect_app() -> Any:
    app = App()

    @app.route("/tunnel", method="CONNECT")
    def tunnel() -> dict[str, str]:
        return {"tunnel": "ok"}

    return server.init_asgi_proxy(app_conf=app)


def test_no_content_length_on_a_2xx_to_connect() -> None:
    """RFC 9110 9.3.6: a 2xx to CONNECT has no Content-Length (nor a body)."""
    sent = run_asgi(http_scope("CONNECT", "/tunnel"), [{"type": "http.request"}], connect_app())
    assert sent[0]["status"] == 200
    assert b"content-length" not in dict(sent[0]["headers"])
    assert body_of(sent) == b""


def test_header_lists_and_cookies_reach_the_client() -> None:
    # defect 37: header lists crashed the original's handshake; here several values survive
    sent = run_asgi(http_scope("GET", "/counter"), [{"type": "http.request"}])
    start = sent[0]
    names = [name for name, _ in start["headers"]]
    assert all(name == name.lower() for name in names)
    assert b"set-cookie" in names and b"content-length" in names
    assert json.loads(body_of(sent)) == {"n": 1}


def test_hop_by_hop_headers_of_the_app_are_not_handed_to_the_asgi_server() -> None:
    """The connection and its framing are the ASGI server's (README: The same app everywhere)."""
    app = App()
    hop_by_hop = {"Connection": "close", "Keep-Alive": "timeout=1", "Upgrade": "h2c",
                  "TE": "trailers", "Trailers": "x", "Transfer-Encoding": "chunked"}  # fmt: skip

    @app.route("/hop")
    def hop() -> tuple[int, Headers, str]:
        return 200, Headers({**hop_by_hop, "X-Kept": "1"}), "x"

    sent = run_asgi(http_scope("GET", "/hop"), [{"type": "http.request"}],
                    server.init_asgi_proxy(app_conf=app))  # fmt: skip
    names = {name for name, _ in sent[0]["headers"]}
    assert b"x-kept" in names and b"content-length" in names
    assert not names & {name.lower().encode() for name in hop_by_hop}


def test_disconnect_stops_a_streamed_response() -> None:
    sent = run_asgi(
        http_scope("GET", "/stream", b"count=1000&pause=0.01"),
        [{"type": "http.request"}, {"type": "http.disconnect"}],
    )
    chunks = [m for m in sent if m["type"] == "http.response.body"]
    assert len(chunks) < 1000  # the disconnect stopped the stream early


def test_websocket_refused_without_handlers() -> None:
    proxy = server.init_asgi_proxy(app_conf=build_app())
    scope = {"type": "websocket", "path": "/nowhere", "raw_path": b"/nowhere", "headers": [],
             "query_string": b"", "subprotocols": []}  # fmt: skip
    sent = run_asgi(scope, [{"type": "websocket.connect"}], proxy)
    assert sent[0]["type"] == "websocket.close"


def _ws_scope(path: str, extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    key = [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13")]
    return {"type": "websocket", "path": path, "raw_path": path.encode(), "headers": key,
            "query_string": b"", "subprotocols": [], "extensions": extensions or {}}  # fmt: skip


def _handshake_app() -> Any:
    from simple_http_server import App, WebsocketHandler, WebsocketRequest

    app = App()

    @app.websocket_handler(endpoint="/ws/{answer}")
    class Handshake(WebsocketHandler):  # defect 37: handshake headers reach the client
        def on_handshake(self, request: WebsocketRequest) -> Any:
            if request.path_values["answer"] == "no":
                return 403, {"X-Why": "no"}
            return 0, {"X-A": "1"}

    return server.init_asgi_proxy(app_conf=app)


def test_websocket_handshake_headers_reach_the_accept_message() -> None:
    sent = run_asgi(
        _ws_scope("/ws/yes"),
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
        _handshake_app(),
    )
    assert sent[0]["type"] == "websocket.accept"
    assert (b"x-a", b"1") in sent[0]["headers"]


def test_websocket_refusal_headers_reach_the_http_response() -> None:
    sent = run_asgi(
        _ws_scope("/ws/no", {"websocket.http.response": {}}),
        [{"type": "websocket.connect"}],
        _handshake_app(),
    )
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403
    assert (b"x-why", b"no") in [(k.lower(), v) for k, v in sent[0]["headers"]]


# -- a real uvicorn ----------------------------------------------------------
@pytest.fixture(scope="module")
def uvicorn() -> Iterator[harness.Proc]:
    port = harness.free_port()
    args = [
        *harness.tool("uvicorn"),
        "tests.integration.apps.demo_app:asgi", "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "on", "--ws", "wsproto", "--log-level", "warning",
    ]  # fmt: skip
    with harness.running(args, port) as proc:
        yield proc


def test_uvicorn_basic(uvicorn: harness.Proc) -> None:
    status, headers, body = uvicorn.get("/hello?name=u")
    assert (status, json.loads(body)) == (200, {"hello": "u"})
    assert headers["server"] == "uvicorn"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/write", b"line-0\nline-1\nline-2\n"),
        ("/write-async", b"async-0\nasync-1\nasync-2\n"),
        ("/stream?count=2", b"part-0\npart-1\n"),
        ("/static/hello.txt", b"static file body\n"),
    ],
)
def test_uvicorn_streamed_bodies(uvicorn: harness.Proc, path: str, expected: bytes) -> None:
    status, _, body = uvicorn.get(path)
    assert (status, body) == (200, expected)


def test_uvicorn_chunked_request_body(uvicorn: harness.Proc) -> None:
    parts = (b"y" * 70_000 for _ in range(5))
    assert uvicorn.post_chunked("/upload", parts) == (200, {"received": 350_000})


def test_uvicorn_streams_without_buffering(uvicorn: harness.Proc) -> None:
    request = b"GET /astream?count=1000&pause=0.05 HTTP/1.1\r\nHost: x\r\n\r\n"
    received = uvicorn.read_until(request, b"part-2\n")
    assert b"transfer-encoding: chunked" in received.lower()


def test_uvicorn_errors_and_head(uvicorn: harness.Proc) -> None:
    assert uvicorn.get("/nope")[0] == 404
    status, headers, _ = uvicorn.get("/only-post")
    assert (status, headers["allow"]) == (405, "POST")
    status, _, body = uvicorn.get("/boom")
    assert status == 500 and b"secret" not in body
    conn = http.client.HTTPConnection("127.0.0.1", uvicorn.port, timeout=10)
    try:
        conn.request("HEAD", "/static/hello.txt")
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.headers["content-length"]) == (200, b"", "17")
    finally:
        conn.close()


def test_uvicorn_websocket_session(uvicorn: harness.Proc) -> None:
    import websocket

    conn = websocket.create_connection(f"ws://127.0.0.1:{uvicorn.port}/ws/echo/r1", timeout=10)
    try:
        assert conn.recv() == "open r1"
        conn.send("hi")
        assert conn.recv() == "echo: hi"
        conn.send_binary(b"abc")
        assert conn.recv() == b"cba"  # an async handler
        conn.send("bye")  # the handler closes with 4000 "done"
        opcode, data = conn.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert (int.from_bytes(data[:2], "big"), data[2:]) == (4000, b"done")
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "statuses"), [
    ("/ws/echo/r1?deny=1", (403,)),  # on_handshake said no
    ("/ws/nowhere", (403, 404)),
])  # fmt: skip
def test_uvicorn_websocket_rejected(
    uvicorn: harness.Proc, path: str, statuses: tuple[int, ...]
) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"ws://127.0.0.1:{uvicorn.port}{path}", timeout=10)
    assert info.value.status_code in statuses


def _endless_app(ended: threading.Event) -> Any:
    app = App()

    @app.route("/endless")
    def endless() -> Iterator[bytes]:
        def events() -> Iterator[bytes]:
            try:
                for _ in range(3000):  # 15 s at least: far past the wait below
                    yield b"data: x\n\n"
                    time.sleep(0.005)
            finally:
                ended.set()

        return events()

    @app.route("/late-body", method="POST")
    async def late_body(response: Response, reader: RequestBodyReader) -> None:
        response.add_header("Content-Type", "text/plain")
        response.write_bytes(b"started\n")
        await response.drain()
        size = len(await reader.read())  # the body, read once the answer started
        try:
            for _ in range(3000):
                response.write_bytes(b"data: %d\n" % size)
                await response.drain()
                await asyncio.sleep(0.005)
        finally:
            ended.set()

    return app


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
@pytest.mark.parametrize(
    ("head", "body"),
    [(b"GET /endless HTTP/1.1\r\nContent-Length: 00\r\n", b""),
     (b"POST /late-body HTTP/1.1\r\nContent-Length: 5\r\n", b"hello")],
)  # fmt: skip
def test_a_stream_stops_when_its_client_leaves_whatever_the_body(
    kind: str, head: bytes, body: bytes
) -> None:
    """uvicorn's ``send`` ignores a client that left, so only the watch for
    ``http.disconnect`` stops a stream: it did not run for a ``Content-Length: 00``
    (no body, which was taken for one) nor once a body was read after the answer
    started, and the stream ran on for nobody (an endless one for ever)."""
    ended = threading.Event()
    with ws_server(kind, _endless_app(ended)) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(head + b"Host: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.sendall(body)
            received = b""
            while b"data:" not in received:
                received += sock.recv(65536)
        finally:
            sock.close()
        assert ended.wait(10), "the stream went on after its client left"


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
@pytest.mark.parametrize("stream", ["sync", "async"])
def test_a_quiet_stream_ends_when_its_client_leaves(kind: str, stream: str) -> None:
    """Under ASGI the ``http.disconnect`` was only noted for the next write: a quiet
    event stream (an async generator waiting for an event that never comes) ran on
    for nobody until the server stopped.  Now it ends at once, as in our transports,
    at its ``await``; a sync one after the step under way, never its 60 s wait."""
    events: list[str] = []
    with ws_server(kind, quiet_stream_app(events)) as port:
        leave(port, f"/{stream}", "fin")
        assert wait_for(events, f"{stream} finally", 5.0), events
    assert events == [f"{stream} finally"]


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
@pytest.mark.parametrize(("path", "status"), [("/ws/no", 403), ("/nowhere", 404)])
def test_a_refused_handshake_is_framed_by_its_content_length(
    kind: str, path: str, status: int
) -> None:
    """uvicorn's denial response (``websocket.http.response``) carries our refusal with
    its ``Content-Length``, as our transports send it; it went out chunked."""
    from simple_http_server import App, WebsocketHandler, WebsocketRequest

    app = App()

    @app.websocket_handler(endpoint="/ws/{answer}")
    class Handshake(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            return 403, {"X-Why": "no"}

    upgrade = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")  # fmt: skip
    with ws_server(kind, app) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
            (answer,) = parse_responses(read_until_closed(sock))
    assert answer.status == status
    assert answer.header("Content-Length") == str(len(answer.body)).encode()
    assert answer.header("Transfer-Encoding") is None
    assert json.loads(answer.body)["code"] == status
    assert path != "/ws/no" or answer.header("X-Why") == b"no"


@pytest.mark.parametrize("path", ["/generator", "/async-generator", "/iterator", "/file-object"])
def test_upload_stays_open_for_a_streamed_answer(monkeypatch: pytest.MonkeyPatch, path: str):
    from .test_bodies import CloseLog, mp_headers, multipart_body, streaming_upload_app

    log = CloseLog(monkeypatch)
    data = bytes(range(256)) * 1200  # spooled to disk
    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", data)])
    headers = [(k.lower().encode(), v.encode()) for k, v in mp_headers().items()]
    headers.append((b"content-length", str(len(body)).encode()))
    proxy = server.init_asgi_proxy(app_conf=streaming_upload_app(log))
    sent = run_asgi(
        http_scope("POST", path, headers=headers),
        [{"type": "http.request", "body": body, "more_body": False}],
        proxy,
    )
    assert sent[0]["status"] == 200
    assert body_of(sent) == data
    log.wait_all_closed(1)


# -- a websocket peer that stops reading (body_timeout) -------------------------
def connect_then_go() -> asyncio.Queue[dict[str, Any]]:
    """A websocket client's first messages to the app: connect, then the text "go"."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.receive", "text": "go"})
    return inbox


def _flood_app(async_handler: bool = False) -> tuple[Any, dict[str, Any]]:
    """An app whose handler sends 64 MiB on ``go``; ``seen`` records how it ended."""
    import threading

    from simple_http_server import App, WebsocketHandler, WebsocketSession

    app = App()
    seen: dict[str, Any] = {"closed": threading.Event(), "returned": threading.Event()}
    chunk = b"f" * (1024 * 1024)

    class Flood(WebsocketHandler):
        def on_close(self, session: WebsocketSession, reason: Any) -> None:
            seen["code"] = reason.code
            seen["closed"].set()

    if async_handler:  # on the loop: the sends queue, nothing blocks the handler

        async def on_text_message(self: Any, session: WebsocketSession, message: str) -> None:
            for _ in range(64):
                session.send_binary(chunk)
            seen["returned"].set()

    else:  # on a worker thread: each send waits for the ASGI server to take it

        def on_text_message(self: Any, session: WebsocketSession, message: str) -> None:
            try:
                for _ in range(64):  # 64 MiB: far more than any socket buffer holds
                    if session.is_closed:
                        return
                    session.send_binary(chunk)
            finally:
                seen["returned"].set()

    Flood.on_text_message = on_text_message  # type: ignore[method-assign]
    app.websocket_handler(endpoint="/flood")(Flood)
    return app, seen


@pytest.mark.parametrize("async_handler", [False, True], ids=["sync", "async"])
def test_a_send_the_asgi_server_never_takes_is_dropped_after_body_timeout(
    async_handler: bool,
) -> None:
    """The ASGI ``send`` never completes (a server applying backpressure for a client
    that stopped reading): the session is dropped after body_timeout, the handler's
    send returns, on_close runs with 1006 and the app returns."""
    import time

    app, seen = _flood_app(async_handler)
    # (a backlog bound above the 64 MiB queued: body_timeout is what drops it here)
    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=0.5, max_send_backlog=128 << 20)
    sends: list[str] = []

    async def main() -> float:
        inbox = connect_then_go()

        async def receive() -> dict[str, Any]:
            return await inbox.get()  # nothing after "go": the client is silent

        async def send(message: dict[str, Any]) -> None:
            sends.append(message["type"])
            if message["type"] == "websocket.send":
                await asyncio.Event().wait()  # never taken

        started = time.monotonic()
        await asyncio.wait_for(proxy(_ws_scope("/flood"), receive, send), 10)
        return time.monotonic() - started

    took = asyncio.run(main())
    assert seen["returned"].wait(5), "the handler is still blocked in session.send"
    assert seen["closed"].wait(5) and seen["code"] == 1006
    assert 0.4 <= took < 5, took
    assert sends[0] == "websocket.accept"
    assert sends.count("websocket.send") <= 2  # dropped: the rest was never offered


def test_a_slow_asgi_server_that_keeps_taking_messages_is_not_dropped() -> None:
    """body_timeout bounds one send, not the session: sends that each take a while,
    together several body_timeouts, all go out, and the session closes normally."""
    import threading

    from simple_http_server import App, WebsocketHandler, WebsocketSession

    app = App()
    closes: list[int | None] = []
    returned = threading.Event()

    @app.websocket_handler(endpoint="/slow")
    class Slow(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            for i in range(8):
                session.send(f"m{i}")
            session.close("done")
            returned.set()

        def on_close(self, session: WebsocketSession, reason: Any) -> None:
            closes.append(reason.code)

    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=0.5)
    texts: list[str] = []

    async def main() -> None:
        inbox = connect_then_go()

        async def receive() -> dict[str, Any]:
            return await inbox.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await asyncio.sleep(0.2)  # slow, but well within body_timeout
                texts.append(message["text"])
            elif message["type"] == "websocket.close":
                inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

        await asyncio.wait_for(proxy(_ws_scope("/slow"), receive, send), 10)

    asyncio.run(main())
    assert returned.is_set()
    assert texts == [f"m{i}" for i in range(8)]  # 1.6 s in all: more than body_timeout
    assert closes == [1000]


def test_drain_waits_until_the_asgi_server_took_the_messages() -> None:
    """``await session.drain()`` returns once the server took what was queued; a
    coroutine that does not drain has its sends queued (it never waits)."""
    from simple_http_server import App, WebsocketHandler, WebsocketSession

    app = App()
    taken: list[str] = []
    seen_at_drain: list[int] = []

    @app.websocket_handler(endpoint="/drain")
    class Drainer(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            for i in range(3):
                session.send(f"m{i}")
                session.send(f"n{i}")
                await session.drain()
                seen_at_drain.append(len(taken))
            session.close("done")

    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=5)

    async def main() -> None:
        inbox = connect_then_go()

        async def receive() -> dict[str, Any]:
            return await inbox.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await asyncio.sleep(0.05)  # a server that takes its time
                taken.append(message["text"])
            elif message["type"] == "websocket.close":
                inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

        await asyncio.wait_for(proxy(_ws_scope("/drain"), receive, send), 10)

    asyncio.run(main())
    assert seen_at_drain == [2, 4, 6]
    assert taken == ["m0", "n0", "m1", "n1", "m2", "n2"]


def test_a_coroutine_past_max_send_backlog_is_dropped_at_once() -> None:
    """A coroutine's sends that the ASGI server does not take pile up: past
    max_send_backlog the session is dropped (a warning, on_close with 1006) at once,
    not after body_timeout, and the app returns."""
    import time

    from simple_http_server import logger

    from ..conftest import LogRecords

    app, seen = _flood_app(async_handler=True)
    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=30, max_send_backlog=4 << 20)
    records = LogRecords()
    logger.add_handler(records)

    async def main() -> float:
        inbox = connect_then_go()

        async def receive() -> dict[str, Any]:
            return await inbox.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await asyncio.Event().wait()  # never taken

        started = time.monotonic()
        await asyncio.wait_for(proxy(_ws_scope("/flood"), receive, send), 10)
        return time.monotonic() - started

    try:
        took = asyncio.run(main())
    finally:
        logger.remove_handler(records)
    assert took < 5, took
    assert seen["returned"].is_set() and seen["closed"].is_set() and seen["code"] == 1006
    warnings = [r.getMessage() for r in records.records if r.levelno >= 30]
    assert len(warnings) == 1 and "max_send_backlog" in warnings[0], warnings


class _InProcessUvicorn:
    """A real uvicorn (wsproto) serving ``app`` in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        self.port = harness.free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ws="wsproto", lifespan="off",
            log_level="warning", timeout_graceful_shutdown=1,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _InProcessUvicorn:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(10)


def small_window_client(port: int) -> socket.socket:
    """A client socket with a 4 KiB receive buffer (set before connecting, so the
    server's sends stall soon once it stops reading)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def test_uvicorn_drops_a_websocket_client_that_stops_reading() -> None:
    """Through real sockets: a sync handler sending to a client that reads nothing
    is freed after body_timeout (it waited forever), and on_close runs."""
    import base64
    import os
    import time

    app, seen = _flood_app()
    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=1.0)
    with _InProcessUvicorn(proxy) as live:
        with small_window_client(live.port) as sock:
            key = base64.b64encode(os.urandom(16))
            sock.sendall(
                b"GET /flood HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            mask = os.urandom(4)
            sock.sendall(b"\x81\x82" + mask + bytes(b ^ mask[i] for i, b in enumerate(b"go")))
            started = time.monotonic()  # from here on the client reads nothing
            assert seen["closed"].wait(15), "the session waited for a client that reads nothing"
            took = time.monotonic() - started
            assert seen["returned"].wait(5), "the handler is still blocked in session.send"
    assert seen["code"] == 1006
    assert 0.9 <= took < 10, took


# -- an HTTP response the ASGI server stops taking (body_timeout) ----------------
def _stream_app() -> tuple[Any, dict[str, Any]]:
    """``/write`` streams with ``write_bytes`` from a worker thread, ``/generator``
    returns a generator (sent by the dispatcher on the loop); 64 MiB each."""
    import threading

    app = App()
    seen: dict[str, Any] = {"returned": threading.Event(), "error": None}
    chunk = b"w" * (1024 * 1024)

    @app.route("/write")
    def write(response: Response) -> None:
        try:
            for _ in range(64):
                response.write_bytes(chunk)
        except Exception as exc:  # the client is gone: the controller hears it
            seen["error"] = type(exc).__name__
            raise
        finally:
            seen["returned"].set()

    @app.route("/generator")
    def generator() -> Any:
        def pieces() -> Any:
            try:
                for _ in range(64):
                    yield chunk
            finally:
                seen["returned"].set()

        return pieces()

    return app, seen


@pytest.mark.parametrize("path", ["/write", "/generator"])
def test_an_http_send_the_asgi_server_never_takes_ends_after_body_timeout(path: str) -> None:
    """The ASGI ``send`` of a response body never completes (backpressure for a client
    that stopped reading): after body_timeout the response is abandoned, a worker
    thread blocked in ``write_bytes`` returns, and the app returns."""
    import time

    app, seen = _stream_app()
    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=0.5)
    kinds: list[str] = []

    async def main() -> float:
        async def receive() -> dict[str, Any]:
            if not kinds:
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client says nothing more
            return {}

        async def send(message: dict[str, Any]) -> None:
            kinds.append(message["type"])
            if message["type"] == "http.response.body" and message.get("body"):
                await asyncio.Event().wait()  # never taken

        started = time.monotonic()
        await asyncio.wait_for(proxy(http_scope("GET", path), receive, send), 10)
        return time.monotonic() - started

    took = asyncio.run(main())
    assert seen["returned"].wait(5), "the controller is still blocked in its send"
    assert 0.4 <= took < 5, took
    assert kinds.count("http.response.body") == 1  # abandoned: nothing more offered
    if path == "/write":
        assert seen["error"] == "ClientGone"


def test_a_slow_asgi_server_that_keeps_taking_the_body_is_not_cut() -> None:
    """body_timeout bounds one send, not the response: sends that each take a while,
    together several body_timeouts, all go out."""
    app = App()

    @app.route("/write")
    def write(response: Response) -> None:
        for i in range(8):
            response.write_bytes(b"part-%d;" % i)

    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=0.5)
    # 8 sends of 0.2 s: 1.6 s in all, against 0.5 s per send
    sent = serve_slowly(proxy, "/write", lambda message: 0.2)
    assert body_of(sent) == b"".join(b"part-%d;" % i for i in range(8))
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.parametrize("path", ["/write", "/generator"])
def test_uvicorn_abandons_a_response_to_a_client_that_stops_reading(path: str) -> None:
    """Through real sockets: uvicorn holds each ``send`` while its client reads
    nothing; the response is abandoned after body_timeout (the controller's worker
    thread waited forever before) instead of holding the request open."""
    import time

    app, seen = _stream_app()
    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=1.0)
    with _InProcessUvicorn(proxy) as live:
        with small_window_client(live.port) as sock:
            sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            started = time.monotonic()  # from here on the client reads nothing
            assert seen["returned"].wait(15), "the response waits for a client reading nothing"
            took = time.monotonic() - started
    assert 0.9 <= took < 10, took


# -- large pieces go to the ASGI server in slices (body_timeout bounds progress) -----
BIG_PIECE = bytes(range(256)) * (20_000_000 // 256)  # about 20 MB


def _big_piece_app() -> App:
    """One large piece three ways: a ``bytes`` result, one ``write_bytes``, one
    generator item."""
    app = App()

    @app.route("/bytes")
    def big_bytes() -> bytes:
        return BIG_PIECE

    @app.route("/write")
    def write(response: Response) -> None:
        response.write_bytes(BIG_PIECE)

    @app.route("/generator")
    def generator() -> Any:
        def pieces() -> Any:
            yield BIG_PIECE

        return pieces()

    return app


@pytest.mark.parametrize("path", ["/bytes", "/write", "/generator"])
def test_uvicorn_gives_a_slow_but_steady_reader_a_large_piece_whole(path: str) -> None:
    """20 MB read at a steady few MB/s takes several body_timeouts; the client never
    stalls, so it gets every byte (one send of the whole piece was cut off; uvicorn
    holds no final message, so a ``bytes`` result was whole already there)."""
    import time

    from ..robustness.wire import parse_responses

    proxy = server.init_asgi_proxy(app_conf=_big_piece_app(), body_timeout=1.0)
    with _InProcessUvicorn(proxy) as live:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # paced by the reader
            sock.settimeout(10)
            sock.connect(("127.0.0.1", live.port))
            sock.sendall(
                b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            data = bytearray()
            deadline = time.monotonic() + 60
            while chunk := sock.recv(65536):
                data += chunk
                time.sleep(0.01)
                assert time.monotonic() < deadline, len(data)
    [answer] = parse_responses(bytes(data))
    assert answer.status == 200
    assert len(answer.body) == len(BIG_PIECE) and answer.body == BIG_PIECE


@pytest.mark.parametrize("path", ["/bytes", "/write", "/generator"])
def test_an_asgi_server_taking_a_large_piece_at_a_steady_pace_gets_it_whole(path: str) -> None:
    """An ASGI server whose ``send`` takes time in proportion to the body (10 MB/s):
    each send stays well within body_timeout, however large the piece."""
    proxy = server.init_asgi_proxy(app_conf=_big_piece_app(), body_timeout=0.5)
    sent = serve_slowly(proxy, path, lambda message: len(message.get("body", b"")) / 10_000_000, 20)
    assert body_of(sent) == BIG_PIECE
    assert sent[-1]["more_body"] is False


def test_a_coroutine_writer_past_max_send_backlog_is_dropped_under_asgi() -> None:
    """The sends a coroutine's ``write_bytes`` chains hold at most max_send_backlog:
    beyond it the writer gets ClientGone at once and the app returns (it waited for
    body_timeout, the writes piling up meanwhile)."""
    import threading
    import time

    app = App()
    seen: dict[str, Any] = {"outcome": None, "done": threading.Event()}

    @app.route("/write")
    async def write(response: Response) -> None:
        try:
            for _ in range(8):
                response.write_bytes(b"w" * (1024 * 1024))
            seen["outcome"] = "complete"
        except Exception as exc:
            seen["outcome"] = type(exc).__name__
            raise
        finally:
            seen["done"].set()

    proxy = server.init_asgi_proxy(app_conf=app, body_timeout=5.0, max_send_backlog=1024 * 1024)

    async def main() -> float:
        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()  # the client says nothing more
            return {}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                await asyncio.Event().wait()  # never taken

        started = time.monotonic()
        await asyncio.wait_for(proxy(http_scope("GET", "/write"), receive, send), 10)
        return time.monotonic() - started

    took = asyncio.run(main())
    assert seen["done"].is_set() and seen["outcome"] == "ClientGone"
    assert took < 4.0, took


def test_drain_raises_client_gone_when_the_asgi_servers_send_fails() -> None:
    """An ASGI server's ``send`` raises once its client left (uvicorn: an ``OSError``);
    ``drain()`` and ``write_bytes`` say ``ClientGone``, as the README promises."""
    from simple_http_server import ClientGone

    app = App()
    seen: dict[str, Any] = {}

    @app.route("/drained")
    async def drained(response: Response) -> None:
        try:
            for _ in range(3):
                response.write_bytes(b"piece")
                await response.drain()
        except Exception as exc:
            seen["error"] = exc
            raise

    def fail(message: dict[str, Any]) -> None:
        if message.get("body"):
            raise OSError("the client disconnected")

    proxy = server.init_asgi_proxy(app_conf=app)
    with contextlib.suppress(OSError):
        serve_slowly(proxy, "/drained", lambda message: 0, on_send=fail)
    assert isinstance(seen["error"], ClientGone)


def test_drain_waits_for_the_asgi_server() -> None:
    """``await response.drain()`` returns once the ASGI server took the chained sends."""
    app = App()
    order: list[str] = []

    @app.route("/drained")
    async def drained(response: Response) -> None:
        for i in range(3):
            response.write_bytes(b"d%d;" % i)
            await response.drain()
            order.append(f"drained {i}")

    def record(message: dict[str, Any]) -> None:
        if message.get("body"):
            order.append(f"sent {message['body'].decode()}")

    proxy = server.init_asgi_proxy(app_conf=app)
    sent = serve_slowly(proxy, "/drained", lambda message: 0.05, on_send=record)  # a slow server
    assert body_of(sent) == b"d0;d1;d2;"
    assert order == ["sent d0;", "drained 0", "sent d1;", "drained 1", "sent d2;", "drained 2"]


# -- served under a path prefix: scope["root_path"] ---------------------------
def _prefixed_app() -> Any:
    from simple_http_server import WebsocketSession

    app = App()

    @app.route("/hello")
    def hello(request: Request) -> dict[str, str]:
        return {"path": request.path}

    @app.route("/apix/hello")
    def apix() -> dict[str, str]:
        return {"path": "apix"}

    @app.route("/{name}/x")
    def value(name: str) -> dict[str, str]:
        return {"name": name}

    @app.websocket_handler(endpoint="/ws/{room}")
    class Room:
        def on_open(self, session: WebsocketSession) -> None:
            session.send(f"room {session.request.path_values['room']} at {session.request.path}")

    return app


def test_uvicorn_root_path_serves_the_apps_own_paths() -> None:
    """``uvicorn --root-path /api`` (behind a proxy that strips /api) puts the prefix in
    ``path`` and ``raw_path``: routes are matched below it, as WSGI's SCRIPT_NAME."""
    import websocket

    proxy = server.init_asgi_proxy(app_conf=_prefixed_app())
    with asgi_server(proxy, root_path="/api") as address:
        conn = address.connection()
        try:
            for target, status, body in [
                ("/hello", 200, {"path": "/hello"}),
                ("/a%20b/x?q=1", 200, {"name": "a b"}),
            ]:
                conn.request("GET", target)
                resp = conn.getresponse()
                assert (resp.status, json.loads(resp.read())) == (status, body), target
        finally:
            conn.close()
        ws = websocket.create_connection(f"ws://127.0.0.1:{address.port}/ws/r1", timeout=10)
        try:
            assert ws.recv() == "room r1 at /ws/r1"
        finally:
            ws.close()


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi", "asgi-root-path"])
def test_asterisk_and_absolute_form_targets_below_a_root_path(kind: str) -> None:
    """uvicorn puts its ``--root-path`` in front of every target, ``*`` and an
    absolute-form one too (``/api*``, ``/apihttp://host/hello``): neither is below the
    prefix as a path is, so ``OPTIONS *`` and ``GET http://host/hello`` were 404s there.
    They are answered as in every other front end."""
    requests = (
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET http://example.org/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    app = _prefixed_app()
    with contextlib.ExitStack() as stack:
        if kind.startswith("asgi"):
            options = {"root_path": "/api"} if kind == "asgi-root-path" else {}
            proxy = server.init_asgi_proxy(app_conf=app)
            port = stack.enter_context(asgi_server(proxy, **options)).port
        else:
            port = stack.enter_context(ws_server(kind, app))
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(requests)
            options_answer, get_answer = parse_responses(read_until_closed(sock))
        finally:
            sock.close()
    assert options_answer.status == 200
    assert b"GET" in (options_answer.header("Allow") or b"")
    assert (get_answer.status, json.loads(get_answer.body)) == (200, {"path": "/hello"})


@pytest.mark.parametrize(
    ("path", "raw_path", "root_path", "expected"),
    [
        ("/api/hello", b"/api/hello", "/api", "/hello"),  # uvicorn >= 0.26, Starlette's Mount
        ("/api/hello", None, "/api", "/hello"),  # no raw_path
        ("/hello", b"/hello", "/api", "/hello"),  # older servers: path below root_path
        ("/api/apix/hello", b"/api/apix/hello", "/api/", "apix"),
        ("/apix/hello", b"/apix/hello", "/api", "apix"),  # /apix is not below /api
        ("/my app/hello", b"/my%20app/hello", "/my app", "/hello"),
    ],
)
def test_root_path_is_stripped_from_the_route_path(
    path: str, raw_path: bytes | None, root_path: str, expected: str
) -> None:
    scope = http_scope("GET", path)
    scope["root_path"] = root_path
    if raw_path is None:
        del scope["raw_path"]
    else:
        scope["raw_path"] = raw_path
    proxy = server.init_asgi_proxy(app_conf=_prefixed_app())
    sent = run_asgi(scope, [{"type": "http.request"}], proxy)
    assert sent[0]["status"] == 200
    assert json.loads(body_of(sent))["path"] == expected


def test_websocket_scope_with_root_path() -> None:
    scope = _ws_scope("/api/ws/r2")
    scope["root_path"] = "/api"
    sent = run_asgi(
        scope,
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
        server.init_asgi_proxy(app_conf=_prefixed_app()),
    )
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1] == {"type": "websocket.send", "text": "room r2 at /ws/r2"}


# -- a request body that stalls (body_timeout, min_body_rate) ---------------------
def _body_app() -> App:
    """Bodies read every way: by the controller (sync and async) or by the dispatcher
    before the controller runs (a form for a ``def``, JSON for an ``async def``)."""
    app = App()

    @app.route("/reader-def", method="POST")
    def reader_def(reader: RequestBodyReader) -> dict[str, int]:
        return {"received": len(reader.read_blocking())}

    @app.route("/reader-async", method="POST")
    async def reader_async(reader: RequestBodyReader) -> dict[str, int]:
        return {"received": len(await reader.read())}

    @app.route("/form-def", method="POST")
    def form_def(name: str = "") -> dict[str, str]:
        return {"name": name}

    @app.route("/json-async", method="POST")
    async def json_async(item: JSONBody) -> dict[str, Any]:
        return {"item": item}

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    return app


BODY_KINDS = {
    "reader-def": b"application/octet-stream",
    "reader-async": b"application/octet-stream",
    "form-def": b"application/x-www-form-urlencoded",
    "json-async": b"application/json",
}


def _start_body(
    port: int, path: str, sent: bytes = b"name=abc", length: int = 100
) -> socket.socket:
    """A POST of a ``length``-byte body that stops after ``sent``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /" + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: " + BODY_KINDS[path]
        + b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + sent
    )  # fmt: skip
    return sock


@pytest.mark.parametrize("path", list(BODY_KINDS))
def test_uvicorn_answers_a_stalled_body_with_408_after_body_timeout(path: str) -> None:
    """uvicorn bounds no request body: the adapter does, as our transports do (the
    stalled request held its pool thread, and its connection, forever)."""
    proxy = server.init_asgi_proxy(app_conf=_body_app(), body_timeout=1.0, worker_threads=1)
    # uvicorn's own keep-alive timeout must not be what closes the connection.
    with asgi_server(proxy, timeout_keep_alive=60) as address:
        with _start_body(address.port, path) as sock:
            started = time.monotonic()
            data = read_until_closed(sock, timeout=8)
            elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 5.0, elapsed
        responses = parse_responses(data)
        assert [r.status for r in responses] == [408] and responses[0].closes
        assert b"not sent in time" in responses[0].body
        conn = address.connection(timeout=5)
        conn.request("GET", "/fast")  # the one pool thread serves again
        assert conn.getresponse().read() == b"fast"
        conn.close()


@pytest.mark.parametrize("path", ["reader-def", "form-def"])
def test_uvicorn_answers_a_body_below_min_body_rate_with_408(path: str) -> None:
    """No byte after the head: the minimum rate fails once its grace is over,
    long before body_timeout."""
    proxy = server.init_asgi_proxy(
        app_conf=_body_app(), body_timeout=8.0, min_body_rate=1000.0, min_body_rate_grace=1.0
    )
    with asgi_server(proxy, timeout_keep_alive=60) as address:
        with _start_body(address.port, path) as sock:
            started = time.monotonic()
            data = read_until_closed(sock, timeout=10)
            elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5.0, elapsed
    responses = parse_responses(data)
    assert [r.status for r in responses] == [408] and responses[0].closes
    assert b"too slowly" in responses[0].body


def test_uvicorn_body_at_a_normal_pace_is_read_whole() -> None:
    proxy = server.init_asgi_proxy(
        app_conf=_body_app(), body_timeout=1.0, min_body_rate=1000.0, min_body_rate_grace=0.3
    )
    with asgi_server(proxy) as address:
        with _start_body(address.port, "reader-def", b"", length=1000) as sock:
            for _ in range(10):  # 2,000 bytes a second for 0.5 s: above the minimum
                sock.sendall(b"y" * 100)
                time.sleep(0.05)
            data = b""
            while not data.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"received": 1000}'), data


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_a_408_closes_the_connection_under_http_1_only(version: str) -> None:
    """``Connection: close`` is HTTP/1.x's: an HTTP/2 answer must not carry it."""
    scope = http_scope("POST", "/reader-async", headers=[(b"content-length", b"100")])
    scope["http_version"] = version
    proxy = server.init_asgi_proxy(app_conf=_body_app(), body_timeout=0.2)
    sent = run_asgi(scope, [{"type": "http.request", "body": b"x", "more_body": True}], proxy)
    assert sent[0]["status"] == 408
    assert ((b"connection", b"close") in sent[0]["headers"]) == (version == "1.1")


@pytest.mark.parametrize("path", ["form-def", "reader-async"])
@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_uvicorn_closes_the_connection_after_a_413(framing: str, path: str) -> None:
    """As our transports do: the rest of a body too large is never read, so the 413
    says ``Connection: close`` and uvicorn closes at once (before, it kept reading the
    body to its end, then kept the connection).  A form is read by the dispatcher, a
    ``RequestBodyReader`` stream by the controller."""
    proxy = server.init_asgi_proxy(app_conf=_body_app(), max_body_size=1000, max_upload_size=1000)
    head = b"POST /" + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: " + BODY_KINDS[path]
    if framing == "declared":
        head += b"\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 2000
    else:  # over the limit, and never finished
        head += b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"7d0\r\n" + b"a" * 2000 + b"\r\n"
    with asgi_server(proxy, timeout_keep_alive=60) as address:  # its timeout is not the close
        with socket.create_connection(("127.0.0.1", address.port), timeout=10) as sock:
            sock.sendall(head)
            responses = parse_responses(read_until_closed(sock, timeout=5))
    assert [r.status for r in responses] == [413] and responses[0].closes


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_a_413_closes_the_connection_under_http_1_only(version: str) -> None:
    scope = http_scope(
        "POST",
        "/form-def",
        headers=[(b"content-length", b"5000"), (b"content-type", BODY_KINDS["form-def"])],
    )
    scope["http_version"] = version
    proxy = server.init_asgi_proxy(app_conf=_body_app(), max_body_size=1000)
    sent = run_asgi(scope, [{"type": "http.request", "body": b"a" * 5000}], proxy)
    assert sent[0]["status"] == 413
    assert ((b"connection", b"close") in sent[0]["headers"]) == (version == "1.1")


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_a_path_decoded_with_surrogateescape_is_routed_as_its_bytes(root_path: str) -> None:
    """A server that gives no ``raw_path`` and decodes ``path`` with surrogateescape
    (``%E9`` is a lone surrogate): the path is its bytes again, not a 500
    (``UnicodeEncodeError``)."""
    scope = http_scope("GET", "/")
    scope["path"], scope["root_path"] = root_path + "/caf\udce9/x", root_path
    del scope["raw_path"]
    proxy = server.init_asgi_proxy(app_conf=_prefixed_app())
    sent = run_asgi(scope, [{"type": "http.request"}], proxy)
    assert sent[0]["status"] == 200
    assert body_of(sent) == b'{"name": "caf\xe9"}'


def test_the_originals_readme_asgi_program_runs_under_uvicorn() -> None:
    """The original's README (Chinese edition) imports ``ASGIProxy`` from
    ``simple_http_server.server`` to annotate a proxy built on first request."""
    from simple_http_server.server import ASGIProxy

    routes = App()

    @routes.route("/hello_asgi")
    def hello(name: str = "ASGI") -> dict[str, str]:
        return {"hello": name}

    asgi_proxy: ASGIProxy | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal asgi_proxy
        if asgi_proxy is None:
            asgi_proxy = server.init_asgi_proxy(app_conf=routes)
        await asgi_proxy.app_proxy(scope, receive, send)

    with asgi_server(app) as address:
        conn = address.connection()
        conn.request("GET", "/hello_asgi?name=u")
        reply = conn.getresponse()
        assert (reply.status, json.loads(reply.read())) == (200, {"hello": "u"})
        conn.close()
    assert isinstance(asgi_proxy, ASGIProxy)


def scheme_app() -> Any:
    app = App()

    @app.route("/scheme")
    def scheme(request: Request) -> dict[str, Any]:
        return {"scheme": request.scheme, "peer": list(request.client_address or ())}

    return server.init_asgi_proxy(app_conf=app)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_scheme_and_client_come_from_the_scope(scheme: str) -> None:
    scope = http_scope("GET", "/scheme")
    scope["scheme"] = scheme
    sent = run_asgi(scope, [{"type": "http.request"}], scheme_app())
    assert json.loads(body_of(sent)) == {"scheme": scheme, "peer": ["127.0.0.1", 5000]}


def test_a_head_answer_hands_no_body_to_the_asgi_server() -> None:
    """RFC 9110 9.3.2: the head alone, with the GET's Content-Length."""
    got = run_asgi(http_scope("GET", "/hello"), [{"type": "http.request"}])
    sent = run_asgi(http_scope("HEAD", "/hello"), [{"type": "http.request"}])
    length = dict(got[0]["headers"])[b"content-length"]
    assert int(length) == len(body_of(got)) > 0
    assert dict(sent[0]["headers"])[b"content-length"] == length
    assert body_of(sent) == b""


def test_an_app_that_cannot_start_reports_lifespan_startup_failed() -> None:
    """The ASGI server is told (and refuses to serve) instead of hearing "complete"."""

    class Unstartable(App):
        def compiled(self) -> Any:
            raise RuntimeError("no configuration")

    proxy = server.init_asgi_proxy(app_conf=Unstartable())
    sent = run_asgi(
        {"type": "lifespan", "asgi": {"version": "3.0"}}, [{"type": "lifespan.startup"}], proxy
    )
    assert sent == [{"type": "lifespan.startup.failed", "message": "no configuration"}]
