"""Local sessions and the pluggable factory API, through every front end."""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trustme

from simple_http_server import (
    App,
    Headers,
    Request,
    Response,
    Session,
    SessionFactory,
    set_session_factory,
)
from simple_http_server import server as server_module
from simple_http_server.dispatch import sessions as sessions_module
from simple_http_server.dispatch.sessions import LocalSessionFactory
from simple_http_server.testing import TestClient

from ..conftest import UniformClient, asgi_server, wsgi_server

COOKIE = "PY_SIM_HTTP_SER_SESSION_ID"


def session_app(timeout: float | None = None) -> App:
    app = App()
    if timeout is not None:
        app.session_timeout = timeout  # type: ignore[assignment]

    @app.route("/set")
    def set_value(session: Session, name: str = "k", value: str = "v") -> dict[str, Any]:
        session.set_attribute(name, value)
        return {"id": session.id, "new": session.is_new}

    @app.route("/get")
    def get_value(session: Session, name: str = "k") -> dict[str, Any]:
        return {
            "id": session.id,
            "new": session.is_new,
            "value": session.get_attribute(name),
            "names": list(session.attribute_names),
        }

    @app.route("/peek")
    def peek(request: Request) -> dict[str, Any]:
        session = request.get_session()  # never creates one
        return {"id": session.id if session else None}

    @app.route("/async-get")
    async def async_get(request: Request, name: str = "k") -> dict[str, Any]:
        session = request.get_session(True)
        assert session is not None
        return {"id": session.id, "value": session.get_attribute(name)}

    @app.route("/invalidate")
    def invalidate(session: Session) -> str:
        session.invalidate()
        return "bye"

    @app.route("/plain")
    def plain() -> str:
        return "no session here"

    return app


def cookie_of(reply: Any) -> str:
    values = [v for v in reply.get_all("Set-Cookie") if v.startswith(COOKIE + "=")]
    assert len(values) == 1, reply.get_all("Set-Cookie")
    return str(values[0])


def test_session_found_by_the_next_request(make_client):
    client = make_client(session_app())
    first = client.get("/set?name=user&value=alice")
    assert first.status == 200 and first.json()["new"] is True
    sid = first.json()["id"]
    assert client.cookies[COOKIE] == sid
    second = client.get("/get?name=user")
    assert second.json() == {"id": sid, "new": False, "value": "alice", "names": ["user"]}
    assert second.get_all("Set-Cookie") == []  # the client already has the cookie
    assert client.get("/async-get?name=user").json() == {"id": sid, "value": "alice"}


def test_cookie_flags_and_id_strength(make_client):
    client = make_client(session_app())
    reply = client.get("/set")
    cookie = cookie_of(reply)
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == f"{COOKIE}={reply.json()['id']}"
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(parts[1:])
    assert "Secure" not in parts  # plain HTTP
    assert len(reply.json()["id"]) >= 43  # >= 256 bits, URL-safe base64
    other = make_client(session_app()).get("/set").json()["id"]
    assert other != reply.json()["id"]


def test_no_session_no_cookie(make_client):
    client = make_client(session_app())
    assert client.get("/plain").get_all("Set-Cookie") == []
    assert client.get("/peek").json() == {"id": None}
    assert client.get("/peek").get_all("Set-Cookie") == []


def test_invalidate_ends_the_session(make_client):
    client = make_client(session_app())
    sid = client.get("/set?value=secret").json()["id"]
    bye = client.get("/invalidate")
    assert bye.status == 200
    removal = cookie_of(bye)
    assert removal.startswith(f"{COOKIE}=;") and "Max-Age=0" in removal and "HttpOnly" in removal
    # the old id is dead even when a client keeps sending it
    stale = client.get("/get", headers={"Cookie": f"{COOKIE}={sid}"})
    assert stale.json()["value"] is None and stale.json()["new"] is True
    assert stale.json()["id"] != sid
    assert cookie_of(stale).startswith(f"{COOKIE}={stale.json()['id']};")


def test_unknown_session_id_is_never_adopted(make_client):
    client = make_client(session_app())
    forced = "attacker-chosen-id"
    reply = client.get("/set", headers={"Cookie": f"{COOKIE}={forced}"})
    assert reply.json()["id"] != forced
    assert cookie_of(reply).startswith(f"{COOKIE}={reply.json()['id']};")
    # a lookup that does not create removes the stale cookie
    peek = client.get("/peek", headers={"Cookie": f"{COOKIE}={forced}"})
    assert peek.json() == {"id": None}
    assert "Max-Age=0" in cookie_of(peek)


def test_expired_session_is_not_found(make_client):
    client = make_client(session_app(timeout=1.5))
    sid = client.get("/set?value=x").json()["id"]
    assert client.get("/get").json()["id"] == sid  # still alive, and touched
    time.sleep(1.8)
    after = client.get("/get", headers={"Cookie": f"{COOKIE}={sid}"})
    assert after.json()["id"] != sid
    assert after.json()["value"] is None and after.json()["new"] is True


def test_idle_timeout_counts_from_last_access():
    factory = LocalSessionFactory(max_inactive_interval=2)
    session = factory.get_session("", create=True)
    assert session is not None
    for _ in range(3):  # accessed every 0.8 s: stays alive past 2 s in total
        time.sleep(0.8)
        assert factory.get_session(session.id) is session
    time.sleep(2.1)
    assert factory.get_session(session.id) is None
    assert len(factory) == 0


def test_secure_cookie_over_tls(serve, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    live = serve(session_app(), ssl_context=server_context)
    conn = http.client.HTTPSConnection("127.0.0.1", live.port, context=client_context, timeout=10)
    try:
        conn.request("GET", "/set")
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie") or ""
    finally:
        conn.close()
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0].startswith(COOKIE + "=")
    assert {"Secure", "HttpOnly", "Path=/", "SameSite=Lax"} <= set(parts)


def test_cookie_name_and_timeout_from_server_start():
    app = session_app()
    thread = threading.Thread(
        target=server_module.start,
        kwargs={
            "host": "127.0.0.1",
            "port": 0,
            "app_conf": app,
            "session_cookie_name": "SID",
            "session_timeout": 7,
        },
        daemon=True,
    )
    thread.start()
    try:
        for _ in range(1000):
            if server_module.is_ready():
                break
            time.sleep(0.01)
        assert server_module.is_ready()
        assert server_module._server is not None
        port = server_module._server.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/set?value=kept")
        resp = conn.getresponse()
        resp.read()
        cookie = (resp.getheader("Set-Cookie") or "").split(";")[0]
        assert cookie.startswith("SID=")
        assert app.session_timeout == 7
        conn.request("GET", "/get", headers={"Cookie": cookie})  # defect 28: it persists
        again = json.loads(conn.getresponse().read())
        conn.close()
        assert again["value"] == "kept" and again["new"] is False
    finally:
        server_module.stop()
        thread.join(15)
    assert not thread.is_alive()
    with pytest.raises(ValueError):
        server_module._build(app_conf=App(), session_cookie_name="bad name;")
    with pytest.raises(ValueError):
        server_module._build(app_conf=App(), session_timeout=0)


def test_concurrent_requests_share_one_session(serve):
    app = session_app()
    live = serve(app)
    conn = live.connection()
    conn.request("GET", "/set?name=start&value=0")
    resp = conn.getresponse()
    resp.read()
    sid = resp.getheader("Set-Cookie", "").split(";")[0].split("=", 1)[1]
    conn.close()

    def hit(index: int) -> int:
        c = live.connection()
        try:
            c.request(
                "GET", f"/set?name=n{index}&value={index}", headers={"Cookie": f"{COOKIE}={sid}"}
            )
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(hit, range(40))) == [200] * 40
    conn = live.connection()
    conn.request("GET", "/get", headers={"Cookie": f"{COOKIE}={sid}"})
    names = set(json.loads(conn.getresponse().read())["names"])
    conn.close()
    assert names == {"start"} | {f"n{i}" for i in range(40)}


# -- custom factories, written as the README shows ---------------------------
class MySessionImpl(Session):
    def __init__(self, session_id: str) -> None:
        super().__init__()
        self._id = session_id
        self._created = self._accessed = time.time()
        self._attrs: dict[str, Any] = {}
        self._new = True

    @property
    def id(self) -> str:
        return self._id

    @property
    def creation_time(self) -> float:
        return self._created

    @property
    def last_accessed_time(self) -> float:
        return self._accessed

    @property
    def is_new(self) -> bool:
        return self._new

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self._attrs)

    def get_attribute(self, name: str) -> Any:
        return self._attrs.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self._attrs[name] = value

    def invalidate(self) -> None:
        self._attrs.clear()
        self._accessed = 0


class MySessionFacImpl(SessionFactory):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []
        self.sessions: dict[str, MySessionImpl] = {}
        self.lock = threading.Lock()

    def get_session(self, session_id: str, create: bool = False) -> Session:
        with self.lock:
            self.calls.append((session_id, create))
            found = self.sessions.get(session_id)
            if found is not None and found.is_valid:
                found._new = False
                found._accessed = time.time()
                return found
            session = MySessionImpl(f"my-{len(self.sessions)}")
            self.sessions[session.id] = session
            return session


@pytest.fixture
def global_factory(monkeypatch):
    factory = MySessionFacImpl()
    monkeypatch.setattr(sessions_module, "_global_factory", None)
    set_session_factory(session_factory=factory)  # the original's keyword
    return factory


def guarded_app() -> App:
    """Controllers with a ``Session`` argument behind a filter, as 0.22.x apps write them."""
    app = App()

    @app.request_filter("/admin/**")
    def login_required(ctx: Any) -> None:
        if ctx.request.headers.get("X-Token") != "ok":
            ctx.response.send_redirect("/login")
            return
        ctx.do_chain()

    @app.route("/admin/page")
    def page(session: Session) -> dict[str, Any]:
        return {"id": session.id}

    @app.route("/typed")
    def typed(n: int, session: Session) -> dict[str, Any]:
        return {"n": n, "id": session.id}

    @app.route("/typed-after")
    def typed_after(session: Session, n: int) -> dict[str, Any]:
        return {"n": n, "id": session.id}

    @app.route("/async-typed")
    async def async_typed(n: int, session: Session) -> dict[str, Any]:
        return {"n": n, "id": session.id}

    @app.route("/async-typed-after")
    async def async_typed_after(session: Session, n: int) -> dict[str, Any]:
        return {"n": n, "id": session.id}

    return app


TYPED = ["/typed", "/typed-after", "/async-typed", "/async-typed-after"]


def test_no_session_is_made_for_a_request_a_filter_answers(make_client):
    """0.22.x made the session when the controller's arguments were bound: a request
    its filter turned away (a redirect to the login page) made none and set no cookie.
    Each made one here, so anonymous clients filled the store (evicting real sessions)."""
    client = make_client(guarded_app())
    refused = client.get("/admin/page")
    assert refused.status == 302
    assert refused.get_all("Set-Cookie") == []
    failed = client.get("/typed?n=x")  # an argument before the session fails to bind
    assert failed.status == 400
    assert failed.get_all("Set-Cookie") == []
    admitted = client.get("/admin/page", headers={"X-Token": "ok"})
    assert admitted.status == 200
    assert cookie_of(admitted).startswith(f"{COOKIE}={admitted.json()['id']};")


@pytest.mark.parametrize("path", TYPED)
def test_no_session_is_made_for_a_request_whose_arguments_fail_to_bind(make_any_client, path):
    """Whatever the order of the arguments: a session argument before one that fails
    made a session and sent its cookie with the 400 (0.22.x sent no cookie with it)."""
    client = make_any_client(guarded_app())
    failed = client.get(f"{path}?n=x")
    assert failed.status == 400
    assert failed.get_all("Set-Cookie") == []
    bound = client.get(f"{path}?n=1")
    assert bound.status == 200
    assert cookie_of(bound).startswith(f"{COOKIE}={bound.json()['id']};")


@pytest.mark.parametrize("path", TYPED)
def test_a_blocking_store_makes_no_session_for_arguments_that_fail_to_bind(
    make_any_client, global_factory, path
):
    """A store that blocks was asked for a new session before any argument was bound
    (off the event loop): each 400 made one, unlike the local store."""
    client = make_any_client(guarded_app())
    failed = client.get(f"{path}?n=x")
    assert failed.status == 400
    assert failed.get_all("Set-Cookie") == []
    assert global_factory.calls == []
    bound = client.get(f"{path}?n=1")
    assert bound.status == 200
    assert cookie_of(bound).startswith(f"{COOKIE}={bound.json()['id']};")
    assert global_factory.calls == [("", True)]


def test_a_blocking_store_is_not_asked_for_a_new_session_a_filter_turns_away(
    make_client, global_factory
):
    client = make_client(guarded_app())
    assert client.get("/admin/page").status == 302
    assert global_factory.calls == []
    assert client.get("/admin/page", headers={"X-Token": "ok"}).status == 200
    assert global_factory.calls == [("", True)]


def test_set_session_factory_is_used_for_every_request(make_client, global_factory):
    client = make_client(session_app())
    assert client.get("/set?value=1").json()["id"] == "my-0"
    assert client.get("/get").json() == {"id": "my-0", "new": False, "value": "1", "names": ["k"]}
    assert client.get("/async-get").json() == {"id": "my-0", "value": "1"}
    # A sent id is looked up before the filters run (create=False) and reused; a new
    # session is made (create=True) only when the arguments are bound.
    assert global_factory.calls == [("", True), ("my-0", False), ("my-0", False)]
    client.get("/invalidate")
    # invalidated: never resurrected, even when the old id is sent again (this factory
    # makes a new session for an id it does not know, even when not asked to create)
    again = client.get("/get", headers={"Cookie": f"{COOKIE}=my-0"}).json()
    assert again["id"] == "my-1" and again["value"] is None
    assert global_factory.calls[-2:] == [("my-0", False), ("my-0", False)]


def test_app_session_factory_wins_over_the_global_one(make_client, global_factory):
    app = session_app()
    own = MySessionFacImpl()
    app.session_factory = own
    client = make_client(app)
    client.get("/set")
    client.get("/get")
    assert len(own.calls) == 2 and global_factory.calls == []


def test_test_client_session_factory_argument():
    factory = MySessionFacImpl()
    client = TestClient(session_app(), session_factory=factory)
    assert client.get("/set").json()["id"] == "my-0"
    assert client.get("/get").json()["id"] == "my-0"
    assert len(factory.calls) == 2


@pytest.mark.parametrize("front_end", ["dispatch", "wsgi", "asgi"])
def test_an_explicit_factory_is_used_even_while_it_is_empty(front_end: str) -> None:
    """``LocalSessionFactory`` defines ``__len__``: empty, it is falsy, and was passed
    over for the app's (or a private) store; its own timeout was ignored."""
    factory = LocalSessionFactory(max_inactive_interval=7)
    app = session_app()

    @app.route("/timeout")
    def timeout(session: Session) -> dict[str, Any]:
        return {"id": session.id, "timeout": session.max_inactive_interval}

    with contextlib.ExitStack() as stack:
        if front_end == "dispatch":
            client = UniformClient(front_end, TestClient(app, session_factory=factory), None)
        elif front_end == "wsgi":
            proxy = server_module.init_wsgi_proxy(app_conf=app, session_factory=factory)
            client = UniformClient(front_end, None, stack.enter_context(wsgi_server(proxy)))
        else:
            proxy = server_module.init_asgi_proxy(app_conf=app, session_factory=factory)
            client = UniformClient(front_end, None, stack.enter_context(asgi_server(proxy)))
        assert len(factory) == 0
        made = client.get("/timeout").json()
        assert made["timeout"] == 7
        assert len(factory) == 1 and factory.get_session(made["id"]) is not None
        assert client.get("/timeout").json() == made  # found again, in that factory


@pytest.mark.parametrize("own_factory", [False, True], ids=["app store", "LocalSessionFactory()"])
def test_the_default_idle_timeout_is_30_minutes(make_client, own_factory: bool) -> None:
    """README: sessions end after 30 idle minutes unless told otherwise, in the app's
    store and in a ``LocalSessionFactory()`` built without arguments."""
    app = session_app()
    if own_factory:
        app.session_factory = LocalSessionFactory()

    @app.route("/timeout")
    def timeout(session: Session) -> dict[str, Any]:
        return {"timeout": session.max_inactive_interval}

    assert make_client(app).get("/timeout").json() == {"timeout": 1800}


def test_an_apps_empty_local_factory_is_used_by_every_front_end(make_any_client) -> None:
    factory = LocalSessionFactory(max_inactive_interval=7)
    app = session_app()
    app.session_factory = factory
    client = make_any_client(app)
    made = client.get("/set").json()
    assert len(factory) == 1 and factory.get_session(made["id"]) is not None


def test_a_streamed_response_carries_the_session_it_created(make_client):
    app = session_app()

    @app.route("/stream")
    def stream(request: Request, response: Response) -> None:
        session = request.get_session(True)
        assert session is not None
        session.set_attribute("k", "streamed")
        response.add_header("Content-Type", "text/plain")
        response.write_bytes(b"one;")
        response.write_bytes(b"two")
        response.close()

    client = make_client(app)
    reply = client.get("/stream")
    assert reply.status == 200 and reply.body == b"one;two"
    sid = cookie_of(reply).split(";", 1)[0].split("=", 1)[1]
    assert client.get("/get").json()["id"] == sid
    assert client.get("/get").json()["value"] == "streamed"


def test_a_controller_that_fails_after_a_login_sends_no_session_cookie(make_any_client):
    """The 500 of an unexpected exception drops the controller's cookies so that one
    that failed half-way does not log the client in; the session cookie of the
    session it had just created and filled went out with that 500 all the same."""
    app = session_app()

    @app.route("/login")
    def login(session: Session) -> str:
        session.set_attribute("k", "alice")
        raise RuntimeError("failed after the login was stored")

    @app.route("/async-login")
    async def async_login(request: Request) -> str:
        session = request.get_session(True)
        assert session is not None
        session.set_attribute("k", "alice")
        raise RuntimeError("failed after the login was stored")

    @app.route("/renew")
    def renew(request: Request) -> str:
        old = request.get_session()
        assert old is not None
        old.invalidate()  # a new id at login, then the failure
        new = request.get_session(True)
        assert new is not None
        new.set_attribute("k", "alice")
        raise RuntimeError("failed after the login was stored")

    @app.route("/unsendable")
    def unsendable(session: Session) -> Any:
        session.set_attribute("k", "alice")
        return Headers({"X Bad": "1"}), "welcome"  # the logged 500 of Results

    client = make_any_client(app)
    for path in ("/login", "/async-login", "/unsendable"):
        failed = client.get(path)
        assert failed.status == 500
        assert failed.get_all("Set-Cookie") == []
        assert client.get("/peek").json() == {"id": None}
    sid = client.get("/set?k=anonymous").json()["id"]
    failed = client.get("/renew")
    assert failed.status == 500
    assert "Max-Age=0" in cookie_of(failed)  # the old session is gone, no new one
    assert client.get("/get", headers={"Cookie": f"{COOKIE}={sid}"}).json()["id"] != sid


def test_a_full_local_store_ends_its_least_recently_used_session(
    make_any_client, log_records
) -> None:
    """Clients that never send their cookie back cannot grow the local store without
    bound: past ``max_sessions`` a new session ends the least recently used one."""
    factory = LocalSessionFactory(max_sessions=2)
    app = session_app()
    app.session_factory = factory
    client = make_any_client(app)

    def as_user(jar: dict[str, str], path: str) -> dict[str, Any]:
        client.cookies = jar
        return client.get(path).json()  # type: ignore[no-any-return]

    a: dict[str, str] = {}
    b: dict[str, str] = {}
    c: dict[str, str] = {}
    made_a = as_user(a, "/set?value=a")
    made_b = as_user(b, "/set?value=b")
    assert as_user(a, "/get")["value"] == "a"  # a is now used more recently than b
    as_user(c, "/set?value=c")  # the store is full: b, the least recently used, ends
    assert len(factory) == 2
    assert as_user(a, "/get") == {"id": made_a["id"], "new": False, "value": "a", "names": ["k"]}
    again_b = as_user(b, "/get")
    assert again_b["id"] != made_b["id"] and again_b["value"] is None
    assert as_user(c, "/get")["id"] != made_a["id"]
    assert [r for r in log_records.records if "max_sessions=2" in r.getMessage()]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_sessions_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        LocalSessionFactory(max_sessions=bad)
