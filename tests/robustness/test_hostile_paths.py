"""Route patterns whose groups can take the same characters (``{name}.{ext}``,
``{y}-{m}-{d}``, ``**`` beside another group) cost time linear in a client's path.

Their regular expressions backtracked ``len(path) ** groups`` steps on a path they
do not match, holding the GIL: one 40 KB request froze the whole server (every
connection, both transports) for 7 s and more.  Routes, filters and websocket
endpoints all match such urls; each is tried here with paths that took seconds,
and must be answered well within 2 s, through the TestClient and both transports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import websocket

from simple_http_server import App, FilterContext, Redirect, WebsocketHandler, WebsocketSession
from simple_http_server.protocol import http11

from ..conftest import LiveServer, UniformClient

#: Each took the regex 3 to 6 s, twice per request (the lookup, then the 404's
#: search for other methods on the path).
DOTS = "." * 40_000
HOSTILE = [
    "/files/" + DOTS + "/",
    "/archive/" + "-" * 1_500 + "/",
    "/deep/x/" + DOTS + "/",
    "/any/" + DOTS + "/",
]
LIMIT = 2.0


def routes_app() -> App:
    app = App()

    @app.route("/files/{name}.{ext}")
    def files(name: str, ext: str) -> str:
        return f"file {name} {ext}"

    @app.route("/archive/{y}-{m}-{d}")
    def archive(y: str, m: str, d: str) -> str:
        return f"archive {y}/{m}/{d}"

    @app.route("/deep/**/{name}.{ext}", method="GET")
    def deep(name: str, ext: str) -> str:
        return f"deep {name} {ext}"

    @app.route("/any/**")
    def anything() -> str:
        return "any"

    @app.request_filter("/any/{name}.{ext}")
    def typed(ctx: FilterContext) -> None:
        ctx.response.set_header("X-Typed", "1")
        ctx.do_chain()

    return app


def timed(client: UniformClient, path: str) -> tuple[int, str, float]:
    start = time.monotonic()
    reply = client.get(path)
    return reply.status, reply.text, time.monotonic() - start


def test_route_patterns_match_as_documented(make_client: Callable[..., UniformClient]) -> None:
    client = make_client(routes_app())
    assert client.get("/files/report.tar.gz").text == "file report.tar gz"
    assert client.get("/archive/2024-01-02").text == "archive 2024/01/02"
    assert client.get("/deep/a/b/c.d").text == "deep c d"
    assert client.get("/files/report").status == 404
    typed = client.get("/any/a.b")
    assert (typed.text, typed.header("X-Typed")) == ("any", "1")
    assert client.get("/any/a/b").header("X-Typed") is None


@pytest.mark.parametrize("path", HOSTILE, ids=["name.ext", "y-m-d", "deep", "filter"])
def test_a_hostile_path_is_answered_at_once(
    make_client: Callable[..., UniformClient], path: str
) -> None:
    client = make_client(routes_app())
    status, text, took = timed(client, path)
    expected = (200, "any") if path.startswith("/any/") else (404, None)
    assert status == expected[0]
    assert expected[1] is None or text == expected[1]
    assert took < LIMIT
    assert client.get("/files/a.b").text == "file a b"  # and the server is fine


def test_a_hostile_websocket_path_is_refused_at_once(serve: Callable[..., LiveServer]) -> None:
    app = App()

    @app.websocket_handler(endpoint="/ws/{name}.{ext}")
    class Typed(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            values: Any = session.request.path_values
            session.send(f"{values['name']} {values['ext']}")

    live = serve(app)
    url = f"ws://127.0.0.1:{live.port}"
    ws = websocket.create_connection(url + "/ws/a.b.c", timeout=10)
    assert ws.recv() == "a.b c"
    ws.close()
    start = time.monotonic()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url + "/ws/" + DOTS + "/", timeout=10)
    assert info.value.status_code == 404
    assert time.monotonic() - start < LIMIT


# -- caches keyed by what the client sends ------------------------------------------
#: Long enough to count (a cache of 2048 such paths would hold 10 MB), well under
#: max_head_size.
LONG = 5_000


def test_long_paths_are_not_kept_by_the_filter_cache(
    make_client: Callable[..., UniformClient],
) -> None:
    """The filters of a path are remembered per path; a client choosing its paths
    (any route with a path value) could make 2048 of them pin 128 MiB."""
    app = App()

    @app.request_filter("/f/{name}")
    def mark(ctx: FilterContext) -> None:
        ctx.response.set_header("X-Filtered", "1")
        ctx.do_chain()

    @app.route("/f/{name}")
    def sized(name: str) -> str:
        return str(len(name))

    client = make_client(app)
    for i in range(10):
        reply = client.get(f"/f/{i}{'a' * LONG}")
        assert (reply.text, reply.header("X-Filtered")) == (str(LONG + 1), "1")
    assert client.get("/f/short").header("X-Filtered") == "1"
    cache = app.compiled()._filter_cache
    assert "/f/short" in cache  # a usual path is still remembered
    assert [len(path) for path in cache if len(path) > LONG] == []


def test_long_header_lines_are_not_kept_by_the_validation_cache(
    make_client: Callable[..., UniformClient],
) -> None:
    """Header lines h11 validated once are remembered (4096 at most); a ``Location``
    echoing the client's path made each of them as long as the client liked: 4096
    requests pinned 256 MiB."""
    marker = uuid.uuid4().hex.encode()
    app = App()

    @app.route("/login")
    def login(next: str) -> Redirect:
        return Redirect(f"/home?from={next}")

    client = make_client(app)
    for i in range(10):
        reply = client.get(f"/login?next={marker.decode()}{i}{'a' * LONG}")
        assert reply.status == 302
        assert reply.header("Location") == f"/home?from={marker.decode()}{i}{'a' * LONG}"
    kept = [line for line in list(http11._VALIDATED) if marker in line[1]]
    assert kept == []
    client.get("/login?next=/short")  # a short line is still remembered
    assert (b"Location", b"/home?from=/short") in http11._VALIDATED
