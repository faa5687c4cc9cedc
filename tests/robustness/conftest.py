"""Fixtures of the robustness suite: a hostile-input test app and resource counters.

``hostile`` is one live server per transport and test module (starting one
per payload would dominate the run time); its ``/canary`` route counts hits,
which proves that no smuggled second request was ever read.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from simple_http_server import App, BytesBody, Header, HttpError, Redirect, Response

from ..conftest import TRANSPORTS, LiveServer, live_server

BIG_RESPONSE = 8 * 1024 * 1024


@dataclass
class Hostile:
    """A live server of :func:`hostile_app` and its hit counters."""

    live: LiveServer
    hits: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return self.live.port

    @property
    def canary(self) -> int:
        return self.hits.get("canary", 0)


def hostile_app(hits: dict[str, int], release: threading.Event) -> App:
    """Routes that hostile-input tests aim at."""
    app = App()
    lock = threading.Lock()

    def count(name: str) -> None:
        with lock:
            hits[name] = hits.get(name, 0) + 1

    @app.route("/", method=["GET", "POST"])
    def index() -> str:
        return "ok"

    @app.route("/canary", method=["GET", "POST"])
    def canary() -> str:
        count("canary")
        return "canary"

    @app.route("/echo", method=["POST", "PUT"])
    def echo(body: BytesBody) -> bytes:
        return bytes(body)

    @app.route("/header")
    def header(x_fold: Header = Header(name="X-Fold", default="")) -> str:
        return str(x_fold)

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("secret-detail /etc/passwd")

    @app.route("/error-crlf")
    def error_crlf() -> None:
        raise HttpError(400, "bad\r\nSet-Cookie: evil=1\r\n\r\nHTTP/1.1 200 OK")

    @app.route("/error-unicode")
    def error_unicode() -> None:
        raise HttpError(400, "bad \u2603 input")

    @app.route("/redirect-crlf")
    def redirect_crlf() -> Redirect:
        return Redirect("/somewhere\r\nSet-Cookie: evil=1")

    @app.route("/header-crlf")
    def header_crlf() -> Response:
        response = Response(body="fine")
        response.set_header("X-Value", "a\r\nSet-Cookie: evil=1\r\n\r\ninjected")
        response.set_header("X-Nul", "a\0b")
        return response

    @app.route("/block")
    def block() -> str:
        count("block")
        release.wait(10)
        return "released"

    @app.route("/big")
    def big() -> bytes:
        return b"x" * BIG_RESPONSE

    return app


@pytest.fixture(scope="module", params=TRANSPORTS)
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    """One live server of :func:`hostile_app` per transport (module scope)."""
    hits: dict[str, int] = {}
    release = threading.Event()
    app = hostile_app(hits, release)
    with live_server(app, str(request.param), max_body_size=64 * 1024) as live:
        yield Hostile(live, hits, release)
        release.set()


# -- resource accounting --------------------------------------------------------
def open_fds() -> int:
    """File descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


POOL_PREFIXES = ("shs-worker", "shs-sync")


def pool_threads() -> int:
    """Threads of the bounded worker pools (they stay, up to ``worker_threads``)."""
    return sum(t.name.startswith(POOL_PREFIXES) for t in threading.enumerate())


def other_threads() -> int:
    """Every thread that is not a pool worker (per-connection threads, timers...)."""
    return threading.active_count() - pool_threads()


def settle(threads: int, fds: int, timeout: float = 10.0) -> tuple[int, int]:
    """Non-pool thread and fd counts once back to ``threads``/``fds`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = other_threads(), open_fds()
        if (counts[0] <= threads and counts[1] <= fds) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (skip when the hard limit is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
