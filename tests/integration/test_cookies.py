"""Request cookies as browsers send them, in every front end and in websocket handshakes.

One pair ``SimpleCookie`` cannot parse (a JSON value, a space, a pair without ``=``,
UTF-8) used to drop every cookie of the request, the session cookie included.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from simple_http_server import App, Cookie, Request, Response, Session, WebsocketSession
from simple_http_server.server import init_asgi_proxy
from simple_http_server.testing import TestClient

from ..conftest import TRANSPORTS, asgi_server, live_server


def wire(text: str) -> str:
    """``text`` as its UTF-8 bytes read as latin-1: what a header carries on the wire
    (http.client sends a str header value as latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def cookie_app() -> App:
    app = App()

    @app.route("/login")
    def login(session: Session) -> dict[str, Any]:
        session.set_attribute("user", "alice")
        return {"new": session.is_new}

    @app.route("/me")
    def me(request: Request) -> dict[str, Any]:
        session = request.get_session()
        cookies = {name: morsel.value for name, morsel in request.cookies.items()}
        return {"user": session.get_attribute("user") if session else None, "cookies": cookies}

    @app.route("/theme")
    def theme(t: Cookie = Cookie("theme", required=True)) -> dict[str, Any]:
        return {"theme": t.value}

    @app.route("/set")
    def set_cookie(response: Response, value: str) -> str:
        response.add_cookie("kept", value)  # SimpleCookie quotes what needs it
        return "ok"

    return app


# (a pair browsers store and send back, the value the app must see; None: skipped)
ODD_PAIRS = [
    ('pref={"lang":"en"}', '{"lang":"en"}'),
    ("msg=hello world", "hello world"),
    ("flag", None),
    ("name=José", "José"),
]


@pytest.mark.parametrize(("pair", "value"), ODD_PAIRS, ids=["json", "space", "no-equals", "utf8"])
def test_one_odd_cookie_costs_no_other(make_any_client, pair: str, value: str | None) -> None:
    client = make_any_client(cookie_app())
    client.get("/login")
    session_cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    client.cookies.clear()

    me = client.get("/me", headers={"Cookie": wire(f"{pair}; {session_cookie}")}).json()
    assert me["user"] == "alice", me  # still logged in
    name = pair.partition("=")[0]
    assert me["cookies"].get(name) == value, me
    reply = client.get("/theme", headers={"Cookie": wire(f"{session_cookie}; theme=dark; {pair}")})
    assert (reply.status, reply.json()) == (200, {"theme": "dark"})


def test_rfc2109_attributes_are_not_cookies(make_any_client) -> None:
    """``$Version``/``$Path`` in a ``Cookie`` header (RFC 2109) are attributes, not
    cookies, as ``SimpleCookie`` and 0.22.x read them: they were cookies named ``$Path``."""
    client = make_any_client(cookie_app())
    header = '$Version="1"; theme="dark"; $Path="/"; other=x; $Domain=example.org'
    me = client.get("/me", headers={"Cookie": header}).json()
    assert me["cookies"] == {"theme": "dark", "other": "x"}
    assert client.get("/theme", headers={"Cookie": header}).json() == {"theme": "dark"}


def test_a_quoted_value_comes_back_unquoted(make_any_client) -> None:
    client = make_any_client(cookie_app())
    reply = client.get("/set?value=a%3Bb%20c%22d")
    assert reply.status == 200
    assert reply.header("Set-Cookie") == r'kept="a\073b c\"d"'  # SimpleCookie's quoting
    assert client.get("/me").json()["cookies"] == {"kept": 'a;b c"d'}


QUOTED = 'a;b c"d'  # add_cookie sends it quoted: kept="a\073b c\"d"


def _jar_round_trip(kind: str) -> tuple[Any, Any]:
    """What ``/me`` reads after ``/set`` set a quoted cookie, sent back by a client
    that keeps cookies: the TestClient, or urllib's cookie jar over a real socket."""
    app, query = cookie_app(), "/set?value=" + urllib.parse.quote(QUOTED)
    if kind == "dispatch":
        client = TestClient(app)
        client.get(query)
        return client.get("/me").json()["cookies"], client.cookies["kept"].value
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with live_server(app, kind) as live:
        base = f"http://127.0.0.1:{live.port}"
        opener.open(base + query, timeout=10).read()
        me = json.loads(opener.open(base + "/me", timeout=10).read())
    return me["cookies"], QUOTED


@pytest.mark.parametrize("kind", ["dispatch", *TRANSPORTS])
def test_a_quoted_cookie_set_by_the_app_comes_back_whole(kind: str) -> None:
    """The TestClient kept the unquoted value and sent ``kept=a;b c"d`` raw: the app
    read ``a`` where a browser's request gives the whole value."""
    cookies, kept = _jar_round_trip(kind)
    assert cookies == {"kept": QUOTED}
    assert kept == QUOTED  # client.cookies holds the decoded value


def expiring_app() -> App:
    app = cookie_app()

    @app.route("/remember")
    def remember(response: Response) -> str:
        for name in ("by_expires", "by_max_age", "by_dashes", "future"):
            response.add_cookie(name, "token")
        return "ok"

    @app.route("/forget")
    def forget(response: Response) -> str:
        # deletions that keep a value, as 0.22.x removed its session cookie
        response.add_cookie("by_expires", "gone", expires="Thu, 01 Jan 1970 00:00:00 GMT")
        response.add_cookie("by_max_age", "gone", max_age=-1)
        response.add_cookie("by_dashes", "gone", expires="Thu, 01-Jan-1970 00:00:00 GMT")
        response.add_cookie("future", "kept", expires="Thu, 01 Jan 2099 00:00:00 GMT")
        return "ok"

    return app


@pytest.mark.parametrize("kind", ["dispatch", *TRANSPORTS])
def test_a_cookie_expired_by_its_response_is_no_longer_sent(kind: str) -> None:
    """The TestClient dropped a cookie only for ``Max-Age=0`` or an empty value: one
    deleted with a past ``Expires`` or a negative ``Max-Age`` (and a value) was sent
    again, where a browser's jar (here ``http.cookiejar``) forgets it."""
    app = expiring_app()
    if kind == "dispatch":
        client = TestClient(app)
        client.get("/remember")
        client.get("/forget")
        cookies = client.get("/me").json()["cookies"]
    else:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with live_server(app, kind) as live:
            base = f"http://127.0.0.1:{live.port}"
            opener.open(base + "/remember", timeout=10).read()
            opener.open(base + "/forget", timeout=10).read()
            cookies = json.loads(opener.open(base + "/me", timeout=10).read())["cookies"]
    assert cookies == {"future": "kept"}


# -- websocket handshakes ----------------------------------------------------
def ws_app() -> App:
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Cookies:
        def on_open(self, session: WebsocketSession) -> None:
            cookies = session.request.cookies
            session.send(repr(sorted((k, m.value) for k, m in cookies.items())))

    return app


@contextlib.contextmanager
def ws_port(kind: str, app: App) -> Iterator[int]:
    if kind in TRANSPORTS:
        with live_server(app, kind) as live:
            yield live.port
    else:
        with asgi_server(init_asgi_proxy(app_conf=app)) as address:
            yield address.port


EXPECTED = repr([("pref", '{"a":1}'), ("sid", "abc"), ("who", "José")])


@pytest.mark.parametrize("kind", [*TRANSPORTS, "asgi"])
def test_websocket_handshake_cookies(kind: str) -> None:
    with ws_port(kind, ws_app()) as port:
        ws = websocket.create_connection(  # it sends the header as UTF-8 itself
            f"ws://127.0.0.1:{port}/ws",
            timeout=10,
            cookie='$Version=1; sid=abc; pref={"a":1}; $Path=/; who=José',
        )
        try:
            assert ws.recv() == EXPECTED
        finally:
            ws.close()


def test_websocket_handshake_cookies_in_the_test_client() -> None:
    client = TestClient(ws_app())
    cookie = wire('$Version=1; sid=abc; pref={"a":1}; $Path=/; who=José')
    with client.websocket_connect("/ws", headers={"Cookie": cookie}) as ws:
        assert ws.receive_text() == EXPECTED


def test_a_crafted_quoted_cookie_costs_no_seconds(make_client) -> None:
    """``"\\0\\0..."`` (58 KB): the stdlib's unquoting (CVE-2024-7592, Python before
    3.11.10 / 3.12.6) took 6 s of CPU per request, holding the GIL (and the event
    loop: every ``async def`` controller reads the cookies for the session)."""
    app = App()

    @app.route("/async")
    async def plain() -> str:
        return "async ok"

    @app.route("/session")
    def with_session(session: Session, request: Request) -> str:
        return f"{session.is_new} {len(request.cookies['a'].value)} {request.cookies['b'].value}"

    client = make_client(app)
    cookie = {"Cookie": 'a="' + "\\0" * 29_000 + '"; b="x\\073y"'}
    for path, expected in (("/async", "async ok"), ("/session", "True 29000 x;y")):
        start = time.monotonic()
        reply = client.get(path, headers=cookie)
        assert (reply.status, reply.text) == (200, expected)
        assert time.monotonic() - start < 2.0
