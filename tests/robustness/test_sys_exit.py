"""``sys.exit()`` in user code ends its request or websocket session, nothing more; so
does any other ``BaseException`` that is not an ``Exception`` (a ``CancelledError``
that is no cancellation of the task, ``GeneratorExit``, a subclass of the user's).

Wherever the server runs user code (controllers and their streamed bodies, filters,
binders, controller constructors, session factories and sessions, error pages, websocket
callbacks), a ``SystemExit`` gets exactly what an ordinary exception raised at the same
place gets: the same answer (a 500 before the head, a cut body after it; the same close
code), the same log lines, in every front end.  ``SystemExit`` is special to asyncio (a
task that lets it out stops its loop), so each case then checks that the server still
answers a plain and an ``async def`` route, and a websocket with ``async def`` callbacks:
its event loop, the shared background loop and its threads all live on.  A
``CancelledError`` let out of a task made it pass for a cancelled one: the asyncio
transport left the client without an answer and the connection open for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websocket
from websocket import ABNF

from simple_http_server import (
    WEBSOCKET_MESSAGE_BINARY,
    WEBSOCKET_MESSAGE_BINARY_FRAME,
    WEBSOCKET_MESSAGE_PING,
    WEBSOCKET_MESSAGE_TEXT,
    HttpError,
    ModelBinding,
    Response,
    Session,
    SessionFactory,
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
)
from simple_http_server.app import App
from simple_http_server.server import init_asgi_proxy
from simple_http_server.testing import TestClient, WebsocketRejected

from ..conftest import (
    ALL_FRONT_ENDS,
    LogRecords,
    UniformClient,
    _client_maker,
    asgi_server,
    live_server,
)

TIMEOUT = 3.0  # a dead loop leaves the client waiting: fail in seconds, not minutes


class Odd(BaseException):
    """A ``BaseException`` of the user's own."""


#: How user code fails besides raising an exception: each gets what ``raise`` gets.
#: Python 3.10 cannot tell a task's cancellation from another CancelledError.
ODD_KINDS = ["exit", "base", "genexit"] + (["cancel"] if sys.version_info >= (3, 11) else [])


class Failing:
    """User code calls it where it is to fail: ``kind`` says how, ``site`` where (the
    calls naming no site always fail)."""

    def __init__(self) -> None:
        self.kind = "raise"
        self.site: str | None = None

    def __call__(self, site: str | None = None) -> None:
        if site is not None and site != self.site:
            return
        if self.kind == "exit":
            sys.exit(3)
        if self.kind == "cancel":  # what awaiting a future something else cancelled raises
            raise asyncio.CancelledError
        if self.kind == "base":
            raise Odd("boom")
        if self.kind == "genexit":
            raise GeneratorExit
        raise RuntimeError("boom")


# -- HTTP ---------------------------------------------------------------------------------
class Thing:
    pass


class AsyncThing:
    pass


class BuiltThing:
    pass


class _Store(Session):
    """A session whose ``is_valid`` and ``flush`` fail on demand."""

    def __init__(self, fail: Failing, session_id: str) -> None:
        super().__init__()
        self._fail = fail
        self._id = session_id
        self._attrs: dict[str, Any] = {}

    @property
    def id(self) -> str:
        self._fail("id")
        return self._id

    @property
    def is_valid(self) -> bool:
        self._fail("is_valid")
        return True

    def get_attribute(self, name: str) -> Any:
        return self._attrs.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self._attrs[name] = value

    def invalidate(self) -> None:
        self._attrs.clear()

    def flush(self) -> None:
        self._fail("flush")


class _Sessions(SessionFactory):
    def __init__(self, fail: Failing) -> None:
        self._fail = fail
        self._count = 0
        self._lock = threading.Lock()

    def get_session(self, session_id: str, create: bool = False) -> Session | None:
        self._fail("get_session")
        with self._lock:
            self._count += 1
            return _Store(self._fail, f"s{self._count}")


def http_app(fail: Failing) -> App:
    app = App()
    app.session_factory = _Sessions(fail)

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    @app.route("/async")
    async def in_async() -> str:
        await asyncio.sleep(0)
        return "async"

    @app.route("/sync")
    def sync() -> str:
        fail()
        return "never"

    @app.route("/coroutine")
    async def coroutine() -> str:
        await asyncio.sleep(0)
        fail()
        return "never"

    @app.route("/coroutine-write")
    async def coroutine_write(response: Response) -> None:
        response.write_bytes(b"first;")
        await asyncio.sleep(0)
        fail()

    @app.route("/gen")
    def gen() -> Iterator[str]:
        def body() -> Iterator[str]:
            yield "first;"
            fail()

        return body()

    @app.route("/agen")
    async def agen() -> AsyncIterator[str]:
        async def body() -> AsyncIterator[str]:
            yield "first;"
            await asyncio.sleep(0)
            fail()

        return body()

    class Closing:  # a streamed body whose close() fails once it is sent
        def __iter__(self) -> Iterator[bytes]:
            yield b"whole"

        def close(self) -> None:
            fail()

    class AsyncClosing:
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"whole"

        async def aclose(self) -> None:
            fail()

    @app.route("/body-close")
    def body_close() -> Any:
        return Closing()

    @app.route("/abody-close")
    async def abody_close() -> Any:
        return AsyncClosing()

    @app.route("/page")
    def page() -> None:
        raise HttpError(409)

    @app.error_message(409)
    def conflict_page() -> str:
        fail()
        return "never"

    @app.request_filter("/filtered/sync")
    def sync_filter(ctx: Any) -> None:
        fail()

    @app.request_filter("/filtered/async")
    async def async_filter(ctx: Any) -> None:
        await asyncio.sleep(0)
        fail()

    @app.route("/filtered/sync")
    @app.route("/filtered/async")
    def filtered() -> str:
        return "never"

    @app.request_filter("/around/**")
    async def around(ctx: Any) -> None:  # the rest of the chain is a task of its own
        await ctx.do_chain()

    @app.request_filter("/around-sync/**")
    def around_sync(ctx: Any) -> None:  # on an event loop: a task the thread waits for
        ctx.do_chain()

    @app.route("/around/coroutine")
    @app.route("/around-sync/coroutine")
    async def around_coroutine() -> str:
        fail()
        return "never"

    @app.model_binding(Thing)
    class ThingBinding(ModelBinding):
        def bind(self) -> Thing:
            fail()
            return Thing()

    @app.model_binding(AsyncThing)
    class AsyncThingBinding(ModelBinding):
        async def bind(self) -> AsyncThing:
            await asyncio.sleep(0)
            fail()
            return AsyncThing()

    @app.model_binding(BuiltThing)
    class FailingBinding(ModelBinding):  # its constructor fails, before its async bind()
        def __init__(self, *args: Any) -> None:
            fail()
            super().__init__(*args)

        async def bind(self) -> BuiltThing:
            return BuiltThing()

    @app.route("/binder")
    def binder(thing: Thing) -> str:
        return "never"

    @app.route("/binder-async")
    async def binder_async(thing: AsyncThing) -> str:
        return "never"

    @app.route("/binder-sync-async")
    async def binder_sync_async(thing: Thing) -> str:
        return "never"

    @app.route("/binder-init")
    @app.route("/around/binder-init")
    async def binder_init(thing: BuiltThing) -> str:
        return "never"

    @app.controller(singleton=False)
    class PerRequest:
        def __init__(self) -> None:
            fail()

        @app.request_map("/ctor")
        def sync_method(self) -> str:
            return "never"

        @app.request_map("/ctor-async")
        @app.request_map("/around/ctor-async")
        async def async_method(self) -> str:
            return "never"

    @app.route("/session-sync")
    def session_sync(session: Session) -> str:
        session.set_attribute("a", 1)
        return "ok"

    @app.route("/session-async")
    async def session_async(session: Session) -> str:
        session.set_attribute("a", 1)
        return "ok"

    return app


#: (path, site, what an exception there gets): a 500, a cut body, the answer anyway
#: (the error is only logged), or the error page's own status.
HTTP_CASES = [
    ("/sync", None, 500),
    ("/coroutine", None, 500),
    ("/coroutine-write", None, "cut"),
    ("/gen", None, "cut"),
    ("/agen", None, "cut"),
    ("/body-close", None, 200),
    ("/abody-close", None, 200),
    ("/page", None, 409),
    ("/filtered/sync", None, 500),
    ("/filtered/async", None, 500),
    ("/around/coroutine", None, 500),
    ("/around-sync/coroutine", None, 500),
    ("/around/ctor-async", None, 500),
    ("/binder", None, 500),
    ("/binder-async", None, 500),
    ("/binder-sync-async", None, 500),
    ("/binder-init", None, 500),
    ("/around/binder-init", None, 500),
    ("/ctor", None, 500),
    ("/ctor-async", None, 500),
    ("/session-sync", "get_session", 500),
    ("/session-sync", "flush", 500),  # what the session could not save: never a 200
    ("/session-sync", "is_valid", 200),
    ("/session-sync", "id", 500),
    ("/session-async", "get_session", 500),
    ("/session-async", "flush", 500),
]


@pytest.fixture(scope="module", params=ALL_FRONT_ENDS)
def http_front(request: pytest.FixtureRequest) -> Iterator[tuple[UniformClient, Failing]]:
    """One server of :func:`http_app` per front end, for every case."""
    fail = Failing()
    for make in _client_maker(str(request.param)):
        yield make(http_app(fail)), fail


def fetch(client: UniformClient, path: str) -> tuple[Any, ...]:
    """(status, body), ("cut", body so far) or ("timeout",) / ("gone", error)."""
    test_client = client._test_client
    if test_client is not None:
        test_client.cookies.clear()
        reply = test_client.get(path)
        return ("cut", reply.content) if reply.truncated else (reply.status_code, reply.content)
    assert client._live is not None
    conn = client._live.connection(timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        try:
            return response.status, response.read()
        except http.client.IncompleteRead as exc:
            return "cut", exc.partial
    except TimeoutError:
        return ("timeout",)
    except (OSError, http.client.HTTPException) as exc:
        return "gone", type(exc).__name__
    finally:
        conn.close()


def problems(records: LogRecords, start: int) -> list[str]:
    """The warnings and errors logged since record ``start``, sorted."""
    return sorted(r.getMessage() for r in records.records[start:] if r.levelno >= 30)


def settled_problems(records: LogRecords, start: int, want: int) -> list[str]:
    """:func:`problems`, once there are ``want`` of them (10 s at most): a body's close
    is logged after its answer went out, so it may come after the next requests."""
    deadline = time.monotonic() + 10
    found = problems(records, start)
    while len(found) < want and time.monotonic() < deadline:
        time.sleep(0.02)
        found = problems(records, start)
    return found


def assert_http_serves(client: UniformClient) -> None:
    assert fetch(client, "/plain") == (200, b"plain")
    assert fetch(client, "/async") == (200, b"async")


@pytest.mark.parametrize(("path", "site", "expected"), HTTP_CASES)
def test_sys_exit_and_odd_base_exceptions_get_what_an_exception_gets(
    http_front: tuple[UniformClient, Failing],
    path: str,
    site: str | None,
    expected: int | str,
    log_records: LogRecords,
) -> None:
    client, fail = http_front
    fail.site = site
    outcomes: dict[str, tuple[Any, ...]] = {}
    logged: dict[str, list[str]] = {}
    try:
        for kind in ("raise", *ODD_KINDS):
            fail.kind = kind
            start = len(log_records.records)
            outcomes[kind] = fetch(client, path)
            assert_http_serves(client)  # also lets the failed request's logging end
            # What "raise" logged, the odd kinds log too; a body's close logs one error.
            want = len(logged["raise"]) if logged else int(path.endswith("body-close"))
            logged[kind] = settled_problems(log_records, start, want)
    finally:
        fail.kind, fail.site = "raise", None
    if expected == "cut":  # wsgiref ends a body by closing: a cut one looks whole
        cut = (200 if client.front_end == "wsgi" else "cut", b"first;")
        assert outcomes["raise"] == cut
    else:
        assert outcomes["raise"][0] == expected
    for kind in ODD_KINDS:
        assert (kind, outcomes[kind]) == (kind, outcomes["raise"])
        assert (kind, logged[kind]) == (kind, logged["raise"])


# -- websockets ---------------------------------------------------------------------------
WS_FRONT_ENDS = ["dispatch", "threaded", "asyncio", "asgi"]
WS_STYLES = ["class-sync", "class-async", "functions-sync", "functions-async"]
WS_SITES = ["handshake", "open", "text", "binary_frame", "ping", "close"]


def ws_app(fail: Failing) -> App:
    app = App()

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    @app.route("/async")
    async def in_async() -> str:
        await asyncio.sleep(0)
        return "async"

    @app.websocket_handler(endpoint="/ws/healthy")
    class Healthy(WebsocketHandler):  # async def callbacks: on the background loop if threaded
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            session.send(message)

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:  # type: ignore[override]
            await asyncio.sleep(0)

    @app.websocket_handler(endpoint="/ws/class-sync")
    class SyncHandler(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            fail("handshake")

        def on_open(self, session: WebsocketSession) -> None:
            fail("open")

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            fail("text")
            session.send(message)

        def on_binary_frame(
            self, session: WebsocketSession, fin: bool = False, frame_payload: bytes = b""
        ) -> Any:
            fail("binary_frame")
            return True

        def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send(message)

        def on_ping_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            fail("ping")
            session.send_pong(message)

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            fail("close")

    @app.websocket_handler(endpoint="/ws/class-async")
    class AsyncHandler(WebsocketHandler):
        async def on_handshake(self, request: WebsocketRequest) -> Any:  # type: ignore[override]
            await asyncio.sleep(0)
            fail("handshake")

        async def on_open(self, session: WebsocketSession) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            fail("open")

        async def on_text_message(self, session: WebsocketSession, message: str) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            fail("text")
            session.send(message)

        async def on_binary_frame(  # type: ignore[override]
            self, session: WebsocketSession, fin: bool = False, frame_payload: bytes = b""
        ) -> Any:
            fail("binary_frame")
            return True

        async def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:  # type: ignore[override]
            session.send(message)

        async def on_ping_message(self, session: WebsocketSession, message: bytes = b"") -> None:  # type: ignore[override]
            fail("ping")
            session.send_pong(message)

        async def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            fail("close")

    def sync_functions(endpoint: str) -> None:
        @app.websocket_handshake(endpoint=endpoint)
        def handshake(request: WebsocketRequest) -> Any:
            fail("handshake")

        @app.websocket_open(endpoint=endpoint)
        def opened(session: WebsocketSession) -> None:
            fail("open")

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_TEXT)
        def text(session: WebsocketSession, message: str) -> None:
            fail("text")
            session.send(message)

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_BINARY_FRAME)
        def frame(session: WebsocketSession, fin: bool, data: bytes) -> bool:
            fail("binary_frame")
            return True

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_BINARY)
        def binary(session: WebsocketSession, message: bytes) -> None:
            session.send(message)

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_PING)
        def ping(session: WebsocketSession, message: bytes) -> None:
            fail("ping")
            session.send_pong(message)

        @app.websocket_close(endpoint=endpoint)
        def closed(session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            fail("close")

    def async_functions(endpoint: str) -> None:
        @app.websocket_handshake(endpoint=endpoint)
        async def handshake(request: WebsocketRequest) -> Any:
            fail("handshake")

        @app.websocket_open(endpoint=endpoint)
        async def opened(session: WebsocketSession) -> None:
            fail("open")

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_TEXT)
        async def text(session: WebsocketSession, message: str) -> None:
            await asyncio.sleep(0)
            fail("text")
            session.send(message)

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_BINARY_FRAME)
        async def frame(session: WebsocketSession, fin: bool, data: bytes) -> bool:
            fail("binary_frame")
            return True

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_BINARY)
        async def binary(session: WebsocketSession, message: bytes) -> None:
            session.send(message)

        @app.websocket_message(endpoint=endpoint, message_type=WEBSOCKET_MESSAGE_PING)
        async def ping(session: WebsocketSession, message: bytes) -> None:
            fail("ping")
            session.send_pong(message)

        @app.websocket_close(endpoint=endpoint)
        async def closed(session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            await asyncio.sleep(0)
            fail("close")

    sync_functions("/ws/functions-sync")
    async_functions("/ws/functions-async")
    return app


class WsFront:
    """The websocket side of one front end: a TestClient, or a server's port."""

    def __init__(self, kind: str, app: App, port: int = 0) -> None:
        self.kind = kind
        self.app = app
        self.port = port

    def fetch(self, path: str) -> tuple[Any, ...]:
        if self.kind == "dispatch":
            reply = TestClient(self.app).get(path)
            return reply.status_code, reply.content
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except TimeoutError:
            return ("timeout",)
        finally:
            conn.close()

    def session(self, path: str, site: str | None) -> tuple[Any, ...]:
        """Open ``path``, do what reaches callback ``site`` (None: an echo), and
        return what the client saw: ("rejected", status), ("closed", code) or
        ("echo", message)."""
        if self.kind == "dispatch":
            return self._memory_session(path, site)
        try:
            ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}{path}", timeout=TIMEOUT)
        except websocket.WebSocketBadStatusException as exc:
            return "rejected", exc.status_code
        except (OSError, websocket.WebSocketException) as exc:
            return "failed", type(exc).__name__
        try:
            if site is None:
                ws.send("hello")
                return "echo", ws.recv()
            if site == "text":
                ws.send("x")
            elif site == "binary_frame":
                ws.send_binary(b"x")
            elif site == "ping":
                ws.ping(b"p")
            elif site == "close":
                ws.send_close(1000)
            return "closed", _close_code(ws)
        except (OSError, websocket.WebSocketException) as exc:
            return "failed", type(exc).__name__
        finally:
            ws.close(timeout=0.2)

    def _memory_session(self, path: str, site: str | None) -> tuple[Any, ...]:
        try:
            ws = TestClient(self.app).websocket_connect(path)
        except WebsocketRejected as exc:
            return "rejected", exc.status_code
        with ws:
            if site is None:
                ws.send_text("hello")
                return "echo", ws.receive_text()
            if site == "text":
                ws.send_text("x")
            elif site == "binary_frame":
                ws.send_bytes(b"x")
            elif site == "ping":
                ws.send_ping(b"p")
            elif site == "close":
                ws.close(1000)
            deadline = time.monotonic() + TIMEOUT
            while ws.close_code is None and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    ws.receive(0.1)
            return "closed", ws.close_code


def _close_code(ws: websocket.WebSocket) -> int | None:
    """Read until the server's Close frame: its code (None: none came)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            data = frame.data
            return int(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else 1005
    return None


@pytest.fixture(scope="module", params=WS_FRONT_ENDS)
def ws_front(request: pytest.FixtureRequest) -> Iterator[tuple[WsFront, Failing]]:
    """One server of :func:`ws_app` per front end (keepalive pings off)."""
    fail = Failing()
    app = ws_app(fail)
    kind = str(request.param)
    if kind == "dispatch":
        yield WsFront(kind, app), fail
    elif kind == "asgi":
        with asgi_server(init_asgi_proxy(app_conf=app)) as address:
            yield WsFront(kind, app, address.port), fail
    else:
        with live_server(app, kind, websocket_ping_interval=0) as live:
            yield WsFront(kind, app, live.port), fail


def wait_for_logs(records: LogRecords, start: int, count: int) -> list[str]:
    """The problems logged since ``start`` once there are ``count`` (2 s at most: a
    session's last log line may come after its client saw the close)."""
    deadline = time.monotonic() + 2
    while len(problems(records, start)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return problems(records, start)


@pytest.mark.parametrize("site", WS_SITES)
@pytest.mark.parametrize("style", WS_STYLES)
def test_sys_exit_or_an_odd_base_exception_in_a_websocket_callback_gets_what_an_exception_gets(
    ws_front: tuple[WsFront, Failing], style: str, site: str, log_records: LogRecords
) -> None:
    front, fail = ws_front
    path = f"/ws/{style}"
    if site == "ping" and front.kind == "asgi":
        check_the_asgi_server_answers_pings_itself(front, fail, path, log_records)
        return
    outcomes: dict[str, tuple[Any, ...]] = {}
    logged: dict[str, list[str]] = {}
    try:
        for kind in ("raise", *ODD_KINDS):
            fail.kind, fail.site = kind, site
            start = len(log_records.records)
            outcomes[kind] = front.session(path, site)
            logged[kind] = wait_for_logs(log_records, start, len(logged.get("raise", [1])))
            fail.site = None
            # the server goes on: HTTP, and a session whose callbacks are async def
            assert front.fetch("/plain") == (200, b"plain")
            assert front.fetch("/async") == (200, b"async")
            assert front.session("/ws/healthy", None) == ("echo", "hello")
    finally:
        fail.kind, fail.site = "raise", None
    expected = {"handshake": ("rejected", 500), "close": ("closed", 1000)}.get(
        site, ("closed", 1011)
    )
    assert outcomes["raise"] == expected
    for kind in ODD_KINDS:
        assert (kind, outcomes[kind]) == (kind, expected)
        assert (kind, logged[kind]) == (kind, logged["raise"])


def check_the_asgi_server_answers_pings_itself(
    front: WsFront, fail: Failing, path: str, log_records: LogRecords
) -> None:
    """Under ASGI the server answers a ping (README): the failing callback never runs."""
    fail.kind, fail.site = "exit", "ping"
    start = len(log_records.records)
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{front.port}{path}", timeout=TIMEOUT)
        try:
            ws.ping(b"p")
            opcode, frame = ws.recv_data_frame(control_frame=True)
            assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"p")
            ws.send("hello")  # the session goes on
        finally:
            ws.close(timeout=0.2)
    finally:
        fail.kind, fail.site = "raise", None
    assert problems(log_records, start) == []
    assert front.fetch("/async") == (200, b"async")


# -- what user code lets out of a task of its own, and KeyboardInterrupt --------------------
def loop_stopper_app() -> App:
    app = App()

    @app.route("/async")
    async def in_async() -> str:
        await asyncio.sleep(0)
        return "async"

    @app.route("/interrupt")
    async def interrupt() -> str:
        raise KeyboardInterrupt  # left alone: the operator's Ctrl-C

    @app.route("/task-exits")
    async def task_exits() -> str:
        async def later() -> None:
            sys.exit(3)

        task = asyncio.ensure_future(later())  # a task of the user's own
        await asyncio.wait([task])
        return f"ended with {task.exception()!r}"

    return app


@pytest.mark.parametrize("path", ["/interrupt", "/task-exits"])
def test_the_background_loop_outlives_a_task_that_stops_it(
    path: str, log_records: LogRecords
) -> None:
    """The threaded transport runs every ``async def`` on one shared loop: a task that
    lets ``KeyboardInterrupt`` or ``SystemExit`` out stops ``run_forever()``, and each
    later ``async def`` request used to wait for it forever.  The loop goes on."""
    with live_server(loop_stopper_app(), "threaded") as live:
        conn = live.connection(timeout=TIMEOUT)
        try:
            conn.request("GET", path)
            conn.getresponse().read()  # /interrupt: the connection is dropped
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        for _ in range(3):
            conn = live.connection(timeout=TIMEOUT)
            try:
                conn.request("GET", "/async")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"async")
            finally:
                conn.close()
    messages = [r.getMessage() for r in log_records.records]
    assert "A task stopped the background event loop; it goes on" in messages
