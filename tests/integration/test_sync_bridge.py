"""Sync user code under every front end: where it runs and which threads it holds.

* A request never needs more than one thread of a pool, whatever its chain of
  ``def`` and ``async def`` filters: a thread blocked in ``ctx.do_chain()`` runs
  the sync code behind it (else ``worker_threads`` requests in ``def`` filters
  starve the pool for good).
* Each server, and each ASGI app, has its own pool of ``worker_threads``; it ends
  with the server.
* A sync ``bind()`` and a per-request controller's constructor are sync code:
  never on the event loop; before a ``def`` controller, in the controller's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from simple_http_server import App, Headers, HttpError, ModelBinding, Request, Response, server
from simple_http_server.config import ServerConfig
from simple_http_server.testing import TestClient

from ..conftest import TRANSPORTS, live_server
from .apps import harness
from .test_asgi import _InProcessUvicorn

#: Every front end: our two transports, a real uvicorn, a threaded wsgiref, the TestClient.
FRONT_ENDS = [*TRANSPORTS, "asgi", "wsgi", "dispatch"]
LOOP_FRONT_ENDS = [*TRANSPORTS, "asgi"]

Get = Callable[..., tuple[int, bytes]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _http_get(port: int) -> Get:
    def get(path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    return get


@contextlib.contextmanager
def front_end(kind: str, app: App, **options: Any) -> Iterator[Get]:
    """``get(path, timeout=5)`` -> (status, body) of ``app`` served by ``kind``."""
    if kind in TRANSPORTS:
        options.setdefault("drain_timeout", 1)  # a stuck request must not hold stop()
        with live_server(app, kind, **options) as live:
            yield _http_get(live.port)
    elif kind == "asgi":
        with _InProcessUvicorn(server.init_asgi_proxy(app_conf=app, **options)) as uvicorn:
            yield _http_get(uvicorn.port)
    elif kind == "wsgi":
        proxy = server.init_wsgi_proxy(app_conf=app, **options)
        httpd = make_server(
            "127.0.0.1", 0, proxy, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield _http_get(int(httpd.server_address[1]))
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)
    else:
        client = TestClient(app, config=ServerConfig().with_changes(**options))

        def get(path: str, timeout: float = 5.0) -> tuple[int, bytes]:
            reply = client.get(path)
            return reply.status_code, reply.content

        yield get


def concurrently(get: Get, paths: list[str], timeout: float = 5.0) -> list[Any]:
    """GET every path at once, each from a client thread of its own: the answers
    (a ``(status, body)``, or the name of the client's error), in order."""
    results: list[Any] = [None] * len(paths)

    def client(index: int) -> None:
        try:
            results[index] = get(paths[index], timeout)
        except Exception as exc:  # a timeout: the server never answered
            results[index] = type(exc).__name__

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return results


# -- one pool thread per request, whatever its chain ---------------------------------
def _mark(request: Request) -> None:
    """Note the thread running this piece of sync code in the request's headers."""
    headers = request.headers
    headers["x-sync-threads"] = f"{headers.get('x-sync-threads', '')}{threading.get_ident()},"


def _threads_of(request: Request) -> int:
    return len(set(filter(None, str(request.headers.get("x-sync-threads", "")).split(","))))


def _sync_filter() -> Callable[[Any], None]:
    """A new ``def`` filter (a function registered twice would run once)."""

    def sync_filter(ctx: Any) -> None:
        _mark(ctx.request)
        ctx.do_chain()

    return sync_filter


def _async_filter() -> Callable[[Any], Any]:
    async def async_filter(ctx: Any) -> None:
        await asyncio.sleep(0)  # a real suspension on the loop
        await ctx.do_chain()

    return async_filter


def chain_app() -> App:
    """Filters by path segment: ``/d/`` a ``def`` filter, ``/a/`` an ``async def`` one;
    ``/x/.../def`` and ``/x/.../async`` the controllers.  Each sync piece notes its
    thread; the controller answers how many threads the request's sync code used."""
    app = App()
    # Registration order is chain order: a path runs its filters left to right.
    for level in range(3):
        app.request_filter(regexp=f"^/x/(?:[ad]/){{{level}}}d/")(_sync_filter())
        app.request_filter(regexp=f"^/x/(?:[ad]/){{{level}}}a/")(_async_filter())

    @app.route(regexp="^/x/.*def$")
    def sync_controller(request: Request) -> dict[str, int]:
        _mark(request)
        return {"threads": _threads_of(request)}

    @app.route(regexp="^/x/.*async$")
    async def async_controller(request: Request) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"threads": _threads_of(request)}

    return app


CHAINS = [
    "d/def", "d/d/def", "d/a/def", "a/d/def", "d/a/d/def", "a/d/a/def", "d/a/async", "d/d/async",
]  # fmt: skip


@pytest.mark.parametrize("kind", FRONT_ENDS)
def test_any_chain_of_filters_needs_one_thread(kind: str) -> None:
    """With one worker thread, every chain of def/async filters in front of a def or
    async controller is served, and all its sync code runs on one thread."""
    with front_end(kind, chain_app(), worker_threads=1) as get:
        for chain in CHAINS:
            assert get(f"/x/{chain}", 5) == (200, b'{"threads": 1}'), chain


def filter_app(barrier: threading.Barrier) -> App:
    """The README's filter: a plain ``def`` filter calling ``ctx.do_chain()`` in front
    of a ``def`` controller; ``/plain`` has no filter."""
    app = App()

    @app.request_filter("/api/**")
    def auth(ctx: Any) -> None:
        barrier.wait()  # every request sits in the filter at once
        ctx.request.headers["x-filter-thread"] = str(threading.get_ident())
        ctx.do_chain()

    @app.route("/api/data")
    def data(request: Request) -> str:
        same = request.headers.get("x-filter-thread") == str(threading.get_ident())
        return "same thread" if same else "another thread"

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    return app


@pytest.mark.parametrize("kind", LOOP_FRONT_ENDS)
def test_worker_threads_requests_in_def_filters_do_not_starve_the_pool(kind: str) -> None:
    """``worker_threads`` requests in a ``def`` filter at once: each filter's thread
    runs its own controller (it was a deadlock for good of every ``def`` route)."""
    workers = 3
    barrier = threading.Barrier(workers, timeout=5)
    with front_end(kind, filter_app(barrier), worker_threads=workers) as get:
        answers = concurrently(get, ["/api/data"] * workers)
        assert answers == [(200, b"same thread")] * workers
        assert get("/plain", 5) == (200, b"plain")


# -- a pool per server -----------------------------------------------------------------
def barrier_app(barrier: threading.Barrier, seen: list[threading.Thread]) -> App:
    """``/meet``: a def controller that needs ``barrier.parties`` of them at once."""
    app = App()

    @app.route("/meet")
    def meet() -> str:
        seen.append(threading.current_thread())
        barrier.wait()
        return "met"

    return app


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_second_server_leaves_the_first_ones_pool_alone(kind: str) -> None:
    """Server B's ``worker_threads=1`` does not shrink server A's pool (it was one
    pool for the process, sized by the last server started)."""
    barrier = threading.Barrier(3, timeout=5)
    seen: list[threading.Thread] = []
    small = threading.Barrier(1)
    with front_end(kind, barrier_app(barrier, seen), worker_threads=3) as get_a:
        assert concurrently(get_a, ["/meet"] * 3) == [(200, b"met")] * 3
        barrier.reset()
        with front_end(kind, barrier_app(small, []), worker_threads=1) as get_b:
            assert get_b("/meet") == (200, b"met")
            assert concurrently(get_a, ["/meet"] * 3) == [(200, b"met")] * 3


def counting_app(state: dict[str, Any]) -> App:
    """``/count``: a def controller noting how many of it run at once."""
    app = App()
    lock = threading.Lock()

    @app.route("/count")
    def count() -> str:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return "counted"

    return app


def test_asgi_worker_threads_bounds_the_pool() -> None:
    """``init_asgi_proxy(worker_threads=2)``: two def controllers at a time (it was
    ignored: the process' pool of 64 ran them all)."""
    state = {"now": 0, "most": 0}
    with front_end("asgi", counting_app(state), worker_threads=2) as get:
        assert concurrently(get, ["/count"] * 5) == [(200, b"counted")] * 5
    assert state["most"] == 2


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_stop_ends_the_servers_pool_threads(kind: str) -> None:
    seen: list[threading.Thread] = []
    with front_end(kind, barrier_app(threading.Barrier(2, timeout=5), seen)) as get:
        assert concurrently(get, ["/meet"] * 2) == [(200, b"met")] * 2
    assert len(seen) == 2
    assert not [t.name for t in seen if t.is_alive()], "threads outlived stop()"


def test_asgi_lifespan_shutdown_ends_the_pool_threads() -> None:
    import uvicorn

    seen: list[threading.Thread] = []
    proxy = server.init_asgi_proxy(app_conf=barrier_app(threading.Barrier(2, timeout=5), seen))
    port = harness.free_port()
    config = uvicorn.Config(proxy, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uvicorn_server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        assert concurrently(_http_get(port), ["/meet"] * 2) == [(200, b"met")] * 2
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)
    assert len(seen) == 2
    assert not [t.name for t in seen if t.is_alive()], "threads outlived the lifespan"


# -- sync code on the way to a controller ------------------------------------------------
class User:
    def __init__(self, name: str, thread: int) -> None:
        self.name = name
        self.thread = thread


def binder_app(started: threading.Event, release: threading.Event) -> App:
    """``/me``: a def controller whose sync binder blocks until ``release``; ``/me-async``
    the same binder before an async controller; ``/obj`` a per-request class whose
    constructor blocks; ``/ping`` an async controller."""
    app = App()

    @app.model_binding(User)
    class UserBinding(ModelBinding):
        def bind(self) -> User:  # a blocking lookup (a database, a remote service)
            started.set()
            release.wait(5)
            return User(str(self.request.get_parameter("u", "anon")), threading.get_ident())

    @app.route("/me")
    def me(user: User) -> dict[str, Any]:
        return {"user": user.name, "same thread": user.thread == threading.get_ident()}

    @app.route("/me-async")
    async def me_async(user: User) -> dict[str, Any]:
        return {"user": user.name, "same thread": user.thread == threading.get_ident()}

    @app.controller(singleton=False)
    class PerRequest:
        def __init__(self) -> None:
            started.set()
            release.wait(5)
            self.thread = threading.get_ident()

        @app.request_map("/obj")
        def obj(self) -> dict[str, Any]:
            return {"user": "obj", "same thread": self.thread == threading.get_ident()}

    @app.route("/ping")
    async def ping() -> str:
        return "pong"

    return app


@pytest.mark.parametrize("kind", [*LOOP_FRONT_ENDS, "wsgi"])
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/me?u=bob", b'{"user": "bob", "same thread": true}'),
        ("/obj", b'{"user": "obj", "same thread": true}'),
        ("/me-async?u=bob", b'{"user": "bob", "same thread": false}'),
    ],
)
def test_sync_code_before_a_controller_never_blocks_the_loop(
    kind: str, path: str, expected: bytes
) -> None:
    """While a sync ``bind()`` or constructor blocks, an async route still answers;
    before a def controller it runs in the controller's own pool job."""
    started, release = threading.Event(), threading.Event()
    with front_end(kind, binder_app(started, release)) as get:
        blocked = concurrently_started(get, path)
        try:
            assert started.wait(5)
            assert get("/ping", 2) == (200, b"pong")  # the loop is free
        finally:
            release.set()
        blocked.join(10)
        assert blocked.result == (200, expected)


class _Started(threading.Thread):
    """A GET from a thread of its own; ``result`` once joined."""

    def __init__(self, get: Get, path: str) -> None:
        super().__init__(daemon=True)
        self.get, self.path = get, path
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = self.get(self.path, 10)
        except Exception as exc:
            self.result = type(exc).__name__


def concurrently_started(get: Get, path: str) -> _Started:
    thread = _Started(get, path)
    thread.start()
    return thread


def async_binder_app() -> App:
    """An async ``bind()`` that really suspends, before a def and an async controller."""
    app = App()

    @app.model_binding(User)
    class UserBinding(ModelBinding):
        async def bind(self) -> User:
            await asyncio.sleep(0.01)
            return User(str(self.request.get_parameter("u", "anon")), 0)

    @app.route("/me")
    def me(user: User) -> str:
        return user.name

    @app.route("/me-async")
    async def me_async(user: User) -> str:
        return user.name

    return app


@pytest.mark.parametrize("kind", FRONT_ENDS)
def test_an_async_bind_that_suspends_works_everywhere(kind: str) -> None:
    """It was a 500 wherever no loop runs the dispatch (threaded, WSGI, TestClient)."""
    with front_end(kind, async_binder_app()) as get:
        assert get("/me?u=ann") == (200, b"ann")
        assert get("/me-async?u=bob") == (200, b"bob")


# -- a sync stream runs on one thread ---------------------------------------------------
def stream_app(closed: list[bool]) -> App:
    """Sync streams whose steps need the thread their controller ran on: a ``sqlite3``
    cursor (its objects belong to their thread) and a ``threading.local``.  Each
    stream ends with how many threads its controller and steps used."""
    app = App()
    local = threading.local()

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(":memory:")
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(300)])
        local.name = "mine"
        return db

    def rows(threads: set[int], db: sqlite3.Connection | None = None) -> Iterator[str]:
        """The rows of ``db`` (made by the controller), or of one the stream makes."""

        def gen() -> Iterator[str]:
            nonlocal db
            if db is None:  # an async def controller's thread is the event loop's
                db = connect()
            try:
                for (x,) in db.execute("select x from t"):
                    threads.add(threading.get_ident())
                    yield f"{x}," if local.name == "mine" else "lost,"
                yield f"threads={len(threads)}"
            finally:
                db.close()

        return gen()

    @app.route("/rows")
    def plain() -> Iterator[str]:
        return rows({threading.get_ident()}, connect())

    @app.route("/tuple")
    def in_tuple() -> tuple[Any, ...]:
        return (
            200,
            Headers({"Content-Type": "text/plain"}),
            rows({threading.get_ident()}, connect()),
        )

    @app.route("/response")
    def in_response() -> Response:
        return Response(200, body=rows({threading.get_ident()}, connect()))

    @app.request_filter("/filtered")
    def before(ctx: Any) -> None:
        ctx.do_chain()

    @app.route("/filtered")
    def filtered() -> Iterator[str]:
        return rows({threading.get_ident()}, connect())

    @app.route("/from-async")
    async def from_async() -> Iterator[str]:
        return rows(set())

    @app.route("/cut")
    def cut() -> tuple[Any, ...]:
        """Longer than its Content-Length: closed after its first piece."""
        made_in = threading.get_ident()

        def gen() -> Iterator[bytes]:
            try:
                yield b"too long"
                yield b"never"
            finally:
                closed.append(threading.get_ident() == made_in)

        return Headers({"Content-Length": "1"}), gen()

    return app


EXPECTED_ROWS = "".join(f"{x}," for x in range(300)).encode()


@pytest.mark.parametrize("kind", FRONT_ENDS)
@pytest.mark.parametrize("path", ["/rows", "/tuple", "/response", "/filtered", "/from-async"])
def test_a_sync_stream_runs_on_the_thread_of_its_controller(kind: str, path: str) -> None:
    """Every step of a ``def`` controller's stream runs on the controller's thread (in
    the asyncio transport and under ASGI too, where each step took whatever pool
    thread was free: the ``sqlite3`` cursor failed mid-body); a stream of an
    ``async def`` controller runs on one thread of its own."""
    with front_end(kind, stream_app([])) as get:
        for _ in range(3):
            assert get(path) == (200, EXPECTED_ROWS + b"threads=1")


@pytest.mark.parametrize("kind", FRONT_ENDS)
def test_a_sync_stream_closes_on_its_thread(kind: str) -> None:
    """A stream closed early (here: longer than its Content-Length) runs its
    ``finally`` on the thread its steps ran on."""
    closed: list[bool] = []
    with front_end(kind, stream_app(closed)) as get:
        with contextlib.suppress(Exception):  # the answer is cut: the client may fail
            get("/cut")
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert closed == [True]


@pytest.mark.parametrize("kind", ["asyncio", "asgi"])
def test_a_stream_waiting_in_a_step_holds_no_pool_thread(kind: str) -> None:
    """With one pool thread, a ``def`` controller is served while another request's
    stream blocks in a step: the stream's thread left the pool (it held the pool's
    only thread until its step ended).  In the threaded transport the request holds
    its worker until it is answered, as README says."""
    app = App()
    entered, release = threading.Event(), threading.Event()

    @app.route("/slow")
    def slow() -> Iterator[bytes]:
        def gen() -> Iterator[bytes]:
            yield b"a"
            entered.set()
            release.wait(10)
            yield b"b"

        return gen()

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    with front_end(kind, app, worker_threads=1) as get:
        streamed = concurrently_started(get, "/slow")
        try:
            assert entered.wait(5)
            assert get("/plain", 3) == (200, b"plain")
        finally:
            release.set()
        streamed.join(10)
        assert streamed.result == (200, b"ab")


def unsent_stream_app() -> App:
    """``def`` controllers return generators that no answer sends: a filter (``def``,
    or ``async def``) refuses the request once the controller has returned."""
    app = App()

    def numbers() -> Iterator[str]:
        yield "never sent"

    @app.request_filter("/refused")
    def refuse(ctx: Any) -> None:
        ctx.do_chain()
        raise HttpError(403, "refused after the controller")

    @app.request_filter("/refused-async")
    async def refuse_async(ctx: Any) -> None:
        await ctx.do_chain()
        raise HttpError(403, "refused after the controller")

    @app.route("/refused")
    def refused() -> Iterator[str]:
        return numbers()

    @app.route("/refused-async")
    def refused_async() -> Iterator[str]:
        return numbers()

    return app


@pytest.mark.parametrize("kind", FRONT_ENDS)
@pytest.mark.parametrize("path", ["/refused", "/refused-async"])
def test_the_thread_kept_for_a_stream_never_sent_ends_with_its_request(
    kind: str, path: str
) -> None:
    """The pool thread kept for a ``def`` controller's stream waited for the stream to
    be claimed or to be garbage; a filter's exception holds it in a reference cycle, so
    each such request left a parked thread until a full garbage collection (1285
    threads after 2000 requests with worker_threads=8)."""
    with front_end(kind, unsent_stream_app(), worker_threads=2) as get:
        assert get(path)[0] == 403
        before = threading.active_count()
        gc.disable()  # no collection to free the streams: only the request's end may
        try:
            for _ in range(20):
                assert get(path)[0] == 403
            deadline = time.monotonic() + 10
            while threading.active_count() > before + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert threading.active_count() <= before + 2
        finally:
            gc.enable()


@pytest.mark.parametrize("kind", ["asyncio", "asgi"])
def test_the_threads_of_streams_end_with_them(kind: str) -> None:
    """A stream's thread ends (or goes back to the pool) once it is sent or dropped
    unread (a HEAD): no thread is left per stream."""
    with front_end(kind, stream_app([]), worker_threads=2) as get:
        before = threading.active_count()
        for _ in range(10):
            assert get("/rows")[0] == 200
            assert get("/from-async")[0] == 200
        deadline = time.monotonic() + 10
        while threading.active_count() > before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before + 2
