"""Sync user code under every front end: where it runs and which threads it holds.

* A request never needs more than one thread of a pool, whatever its chain of
  ``def`` and ``async def`` filters: a thread blocked in ``ctx.do_chain()`` runs
  the sync code behind it (else ``worker_threads`` requests in ``def`` filters
  starve the pool for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from simple_http_server import App, Request, server
from simple_http_server.config import ServerConfig
from simple_http_server.testing import TestClient

from ..conftest import TRANSPORTS, live_server
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
