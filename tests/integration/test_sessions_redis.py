"""RedisSessionFactory against a real redis-server, in-process and across processes."""

from __future__ import annotations

import json
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from simple_http_server import App, Request, Session
from simple_http_server.dispatch.invoke import in_event_loop
from simple_http_server.sessions_redis import RedisSessionFactory

COOKIE = "PY_SIM_HTTP_SER_SESSION_ID"
ROOT = pathlib.Path(__file__).resolve().parents[2]
SESSION_APP = pathlib.Path(__file__).with_name("session_app.py")


class GuardedRedis(redis.Redis):
    """A real client that records every command issued from an event loop thread."""

    on_loop: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if in_event_loop():
            self.on_loop.append(str(args[0]))
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        if in_event_loop():
            self.on_loop.append("PIPELINE")
        return super().pipeline(transaction, shard_hint)


@pytest.fixture
def client(redis_url: str) -> Iterator[GuardedRedis]:
    guarded = GuardedRedis.from_url(redis_url)
    guarded.on_loop = []
    yield guarded
    guarded.close()


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


def redis_app(factory: RedisSessionFactory) -> App:
    app = App()
    app.session_factory = factory

    @app.route("/set")
    def set_value(session: Session, name: str = "k", value: str = "v") -> dict[str, Any]:
        session.set_attribute(name, {"value": value, "n": [1, 2]})
        return {"id": session.id, "new": session.is_new}

    @app.route("/get")
    def get_value(session: Session, name: str = "k") -> dict[str, Any]:
        return {"id": session.id, "new": session.is_new, "value": session.get_attribute(name)}

    @app.route("/async-set")
    async def async_set(session: Session, name: str = "k", value: str = "v") -> dict[str, Any]:
        session.set_attribute(name, value)
        return {"id": session.id}

    @app.route("/async-get")
    async def async_get(request: Request, name: str = "k") -> dict[str, Any]:
        session = request.get_session()
        return {"value": session.get_attribute(name) if session else None}

    @app.route("/invalidate")
    def invalidate(session: Session) -> str:
        session.invalidate()
        return "bye"

    @app.route("/async-stream")
    async def async_stream(session: Session) -> Any:
        async def body() -> AsyncIterator[bytes]:
            yield b"a"
            session.set_attribute("during", "async-gen")  # the controller has returned
            yield b"b"

        return body()

    @app.route("/sync-stream")
    def sync_stream(session: Session) -> Any:
        def body() -> Iterator[bytes]:
            yield b"a"
            session.set_attribute("during", "sync-gen")
            yield b"b"

        return body()

    return app


def test_attributes_stored_in_a_redis_hash(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_client(redis_app(factory))
    first = web.get("/set?name=cart&value=book")
    sid = first.json()["id"]
    assert first.json()["new"] is True and len(sid) >= 43
    assert web.cookies[COOKIE] == sid
    stored = client.hgetall(prefix + sid)
    assert json.loads(stored[b"a:cart"]) == {"value": "book", "n": [1, 2]}
    assert float(stored[b"m:created"]) <= time.time()
    second = web.get("/get?name=cart")
    assert second.json() == {"id": sid, "new": False, "value": {"value": "book", "n": [1, 2]}}
    assert client.on_loop == []


def test_ttl_is_the_idle_timeout_and_refreshed_on_access(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client, max_inactive_interval=100)
    web = make_client(redis_app(factory))
    sid = web.get("/set").json()["id"]
    assert 95 <= client.ttl(prefix + sid) <= 100
    client.expire(prefix + sid, 5)
    web.get("/get")
    assert client.ttl(prefix + sid) >= 95


def test_a_session_given_no_attribute_expires_too(make_client, client, prefix):
    """A session only looked at (nothing written) still gets the idle TTL when it is
    made: a key without one (TTL -1) would stay in Redis for good."""
    factory = RedisSessionFactory(prefix=prefix, client=client, max_inactive_interval=100)
    web = make_client(redis_app(factory))
    sid = web.get("/get").json()["id"]
    assert 95 <= client.ttl(prefix + sid) <= 100


def test_a_held_session_is_invalid_once_idle_past_its_timeout(client, prefix):
    """README: ``is_valid`` is False once idle for longer than ``max_inactive_interval``,
    also for a session object a caller kept (Redis has dropped its key by then)."""
    factory = RedisSessionFactory(prefix=prefix, client=client, max_inactive_interval=1)
    session = factory.get_session("", create=True)
    assert session is not None and session.is_valid is True
    time.sleep(1.3)
    assert session.is_valid is False


def test_expired_session_is_not_found(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client, max_inactive_interval=1)
    web = make_client(redis_app(factory))
    sid = web.get("/set").json()["id"]
    time.sleep(1.3)
    after = web.get("/get", headers={"Cookie": f"{COOKIE}={sid}"}).json()
    assert after["id"] != sid and after["value"] is None and after["new"] is True
    assert client.exists(prefix + sid) == 0


def test_invalidate_deletes_the_hash(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_client(redis_app(factory))
    sid = web.get("/set").json()["id"]
    bye = web.get("/invalidate")
    assert any("Max-Age=0" in v for v in bye.get_all("Set-Cookie"))
    assert client.exists(prefix + sid) == 0
    stale = web.get("/get", headers={"Cookie": f"{COOKIE}={sid}"}).json()
    assert stale["id"] != sid and stale["value"] is None


def test_unknown_id_is_not_adopted(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_client(redis_app(factory))
    reply = web.get("/set", headers={"Cookie": f"{COOKIE}=chosen-by-attacker"})
    assert reply.json()["id"] != "chosen-by-attacker"
    assert client.exists(prefix + "chosen-by-attacker") == 0


def test_async_controllers_never_call_redis_on_the_loop(make_client, client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_client(redis_app(factory))
    sid = web.get("/async-set?value=from-async").json()["id"]
    assert json.loads(client.hget(prefix + sid, "a:k")) == "from-async"
    assert web.get("/async-get").json() == {"value": "from-async"}
    assert web.get("/get").json()["value"] == "from-async"
    assert client.on_loop == []


@pytest.mark.parametrize("kind", ["", "async-", "filtered-", "filtered-async-"])
def test_no_session_is_stored_for_arguments_that_fail_to_bind(
    make_any_client, client, prefix, kind
):
    """The session was made (stored, its cookie sent with the 400) before the arguments
    were bound, even when one before the ``Session`` argument failed; the local store
    made none. It is still made off the event loop, also behind an ``async def`` filter
    (whose chain goes on on a loop in every front end)."""
    app = redis_app(RedisSessionFactory(prefix=prefix, client=client))

    filtered: list[str] = []

    @app.request_filter("/filtered-*")
    async def passing(ctx: Any) -> None:
        filtered.append(ctx.request.path)
        await ctx.do_chain()

    @app.route("/filtered-typed")
    def filtered_typed(n: int, session: Session) -> dict[str, Any]:
        return {"id": session.id}

    @app.route("/filtered-async-typed")
    async def filtered_async_typed(n: int, session: Session) -> dict[str, Any]:
        return {"id": session.id}

    @app.route("/typed")
    def typed(n: int, session: Session) -> dict[str, Any]:
        return {"id": session.id}

    @app.route("/async-typed")
    async def async_typed(n: int, session: Session) -> dict[str, Any]:
        return {"id": session.id}

    web = make_any_client(app)
    failed = web.get(f"/{kind}typed?n=x")
    assert (failed.status, failed.get_all("Set-Cookie")) == (400, [])
    assert client.keys(prefix + "*") == []
    sid = web.get(f"/{kind}typed?n=1").json()["id"]
    assert client.keys(prefix + "*") == [(prefix + sid).encode()]
    assert client.on_loop == []
    assert len(filtered) == (2 if kind.startswith("filtered") else 0)


def stored(client: redis.Redis, key: str, field: str) -> Any:
    """A field of a session hash, waited for a moment: the dispatcher writes what a
    streamed body wrote after the body is sent, maybe after the client read it."""
    deadline = time.monotonic() + 3
    while (value := client.hget(key, field)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return None if value is None else json.loads(value)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_writes_from_a_streamed_body_are_stored(make_any_client, client, prefix, kind):
    """An (async) generator body runs after the controller returned and after the
    session was flushed: its writes (kept in memory on a loop) used to be lost."""
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_any_client(redis_app(factory))
    sid = web.get("/set").json()["id"]
    reply = web.get(f"/{kind}-stream")
    assert (reply.status, reply.body) == (200, b"ab")
    assert stored(client, prefix + sid, "a:during") == f"{kind}-gen"
    assert web.get("/get?name=during").json()["value"] == f"{kind}-gen"
    assert client.on_loop == []


def test_a_write_never_recreates_an_ended_session(client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    session = factory.get_session("", create=True)
    assert session is not None
    client.delete(prefix + session.id)  # expired or invalidated by another process
    session.set_attribute("late", 1)
    assert client.exists(prefix + session.id) == 0
    assert session.is_valid is False


def test_json_by_default_pickle_only_when_asked(client, prefix):
    factory = RedisSessionFactory(prefix=prefix, client=client)
    session = factory.get_session("", create=True)
    assert session is not None
    with pytest.raises(TypeError):
        session.set_attribute("when", object())
    pickled = RedisSessionFactory(prefix=prefix, client=client, serializer="pickle")
    session = pickled.get_session("", create=True)
    assert session is not None
    session.set_attribute("tags", {"a", "b"})
    again = pickled.get_session(session.id)
    assert again is not None and again.get_attribute("tags") == {"a", "b"}
    # the JSON factory does not unpickle what it finds
    json_view = factory.get_session(session.id)
    assert json_view is not None and json_view.attribute_names == ()
    with pytest.raises(ValueError):
        RedisSessionFactory(client=client, serializer="yaml")


# -- several server processes sharing one Redis ------------------------------
class ServerProcess:
    """``session_app.py`` in its own interpreter."""

    def __init__(self, redis_url: str, prefix: str, transport: str, port: int = 0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        args = [sys.executable, str(SESSION_APP), "--redis-url", redis_url]
        args += ["--prefix", prefix, "--transport", transport, "--port", str(port)]
        # bufsize=0: an unbuffered pipe, so select() below never misses a line that
        # a buffered reader had already pulled in with the previous one.
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
            bufsize=0,
        )
        self.port = self._read_port()

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        output = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                output += line
                if line.startswith(b"PORT "):
                    threading.Thread(target=self._drain, daemon=True).start()
                    return int(line.split()[1])
                if not line and self.process.poll() is not None:
                    break
        self.kill()
        raise AssertionError(f"server process did not start: {output.decode(errors='replace')}")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def get(self, path: str, sid: str | None = None) -> tuple[dict[str, Any], str | None]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Cookie": f"{COOKIE}={sid}"} if sid else {}
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200, body
            return body, resp.getheader("Set-Cookie")
        finally:
            conn.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.kill()


def test_two_processes_share_sessions_and_survive_a_restart(redis_url, prefix, processes):
    first = ServerProcess(redis_url, prefix, "threaded")
    processes.append(first)
    second = ServerProcess(redis_url, prefix, "asyncio")
    processes.append(second)
    assert first.port != second.port

    created, cookie = first.get("/set?name=user&value=alice")
    sid = created["id"]
    assert cookie is not None and cookie.startswith(f"{COOKIE}={sid};")
    seen, cookie = second.get("/get?name=user", sid)
    assert seen["value"] == "alice" and seen["id"] == sid
    assert seen["pid"] != created["pid"] and cookie is None
    second.get("/set?name=lang&value=fr", sid)

    # kill the first process hard and start it again on the same port
    port = first.port
    first.kill()
    restarted = ServerProcess(redis_url, prefix, "threaded", port=port)
    processes.append(restarted)
    assert restarted.port == port
    back, cookie = restarted.get("/get?name=user", sid)
    assert back["id"] == sid and back["value"] == "alice" and back["pid"] != created["pid"]
    assert restarted.get("/get?name=lang", sid)[0]["value"] == "fr"
    assert cookie is None  # the very same session: no new cookie


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "60", 0.5])
def test_a_session_timeout_redis_cannot_keep_is_refused_when_built(value: Any) -> None:
    """``inf`` raised ``OverflowError`` and ``True`` was taken as 1 second."""
    with pytest.raises(ValueError, match="max_inactive_interval"):
        RedisSessionFactory(client=object(), max_inactive_interval=value)


def test_an_undecodable_byte_of_request_text_is_stored(make_client, client, prefix):
    """A path value holding ``%FF`` (a lone surrogate) is stored as that byte and
    read back as the same text (``set_attribute`` raised ``UnicodeEncodeError``: 500)."""
    factory = RedisSessionFactory(prefix=prefix, client=client)
    app = redis_app(factory)

    @app.route("/keep/{value}")
    def keep(session: Session, value: str) -> dict[str, Any]:
        session.set_attribute("raw", value)
        return {"id": session.id}

    web = make_client(app)
    first = web.get("/keep/caf%E9%FF")
    assert first.status == 200
    stored = client.hgetall(prefix + first.json()["id"])
    assert stored[b"a:raw"] == b'"caf\xe9\xff"'
    again = web.get("/async-get?name=raw")
    assert again.body == b'{"value": "caf\xe9\xff"}'


def test_an_undecodable_byte_in_an_attribute_name_is_stored(make_client, client, prefix):
    """An attribute named after request text holding ``%FF`` answered 500
    (``UnicodeEncodeError``) with Redis, where the local store keeps it."""
    factory = RedisSessionFactory(prefix=prefix, client=client)
    app = redis_app(factory)

    @app.route("/draft/{name}")
    def draft(session: Session, name: str) -> dict[str, Any]:
        session.set_attribute(f"draft:{name}", 1)
        return {"id": session.id}

    @app.route("/drop/{name}")
    def drop(request: Request, name: str) -> dict[str, Any]:
        session = request.get_session()
        assert session is not None
        names = sorted(session.attribute_names)
        session.remove_attribute(f"draft:{name}")  # type: ignore[attr-defined]
        return {"names": names}

    web = make_client(app)
    first = web.get("/draft/caf%E9%FF")
    assert first.status == 200
    stored = client.hgetall(prefix + first.json()["id"])
    assert stored[b"a:draft:caf\xe9\xff"] == b"1"
    dropped = web.get("/drop/caf%E9%FF")
    assert dropped.status == 200
    assert dropped.body == b'{"names": ["draft:caf\xe9\xff"]}'
    assert b"a:draft:caf\xe9\xff" not in client.hgetall(prefix + first.json()["id"])


# -- what async code ends, and what Redis refuses ------------------------------
def ending_app(factory: RedisSessionFactory, redis_url: str) -> App:
    """Async controllers that end a session (their writes wait for the flush)."""
    app = redis_app(factory)

    @app.route("/async-renew")
    async def renew(request: Request) -> dict[str, Any]:
        old = request.get_session()
        assert old is not None
        old.invalidate()  # a new id at login: the old one must die
        new = request.get_session(True)
        assert new is not None
        new.set_attribute("k", "renewed")
        return {"old": old.id, "new": new.id}

    @app.route("/async-logout")
    async def logout(request: Request) -> dict[str, Any]:
        session = request.get_session()
        assert session is not None
        session.invalidate()
        again = request.get_session()  # a filter or helper that looks again
        return {"again": again.id if again else None}

    @app.route("/async-full")
    async def full(session: Session) -> str:
        with redis.Redis.from_url(redis_url) as admin:
            admin.config_set("maxmemory", 1)  # Redis is full: it refuses writes
        session.set_attribute("k", "lost")
        return "stored"

    return app


def test_async_code_that_ends_a_session_never_brings_it_back(make_any_client, client, prefix):
    """On a loop ``invalidate()`` waits for the flush; a second lookup of the client's
    id found the session still in Redis: ``get_session(True)`` gave the OLD id back
    (no new id at login) and the invalidation was never written (logout undone)."""
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_any_client(ending_app(factory, ""))
    old = web.get("/set").json()["id"]
    renewed = web.get("/async-renew")
    assert renewed.status == 200
    new = renewed.json()["new"]
    assert renewed.json()["old"] == old and new != old
    assert web.cookies[COOKIE] == new
    assert client.exists(prefix + old) == 0
    assert web.get("/get").json()["value"] == "renewed"

    out = web.get("/async-logout")
    assert out.json() == {"again": None}
    assert any("Max-Age=0" in v for v in out.get_all("Set-Cookie"))
    assert client.exists(prefix + new) == 0
    assert COOKIE not in web.cookies


def test_a_write_redis_refuses_after_async_code_is_a_500(
    make_any_client, client, prefix, redis_url
):
    """A write kept for the flush (``async def``) that Redis refused was only logged:
    the client got 200 for what was lost, where a ``def`` controller's write gets 500."""
    factory = RedisSessionFactory(prefix=prefix, client=client)
    web = make_any_client(ending_app(factory, redis_url))
    sid = web.get("/set?value=before").json()["id"]
    try:
        reply = web.get("/async-full")
    finally:
        client.config_set("maxmemory", 0)
    assert reply.status == 500 and b"stored" not in reply.body
    assert json.loads(client.hget(prefix + sid, "a:k")) == {"value": "before", "n": [1, 2]}


def test_a_lookup_only_the_controller_needs_fails_only_when_it_asks(make_any_client):
    """Redis down: an ``async def`` controller requested with the session cookie failed
    (500) though it never touches the session; the lookup made for it in advance is
    speculative, and its error belongs to ``get_session()``."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        factory = RedisSessionFactory(url=f"redis://127.0.0.1:{port}/0", prefix="down:")
        app = App()
        app.session_factory = factory

        @app.route("/async-health")
        async def health() -> dict[str, bool]:
            return {"ok": True}

        @app.route("/async-peek")
        async def peek(request: Request) -> dict[str, Any]:
            session = request.get_session()
            return {"id": session.id if session else None}

        web = make_any_client(app)
        cookie = {"Cookie": f"{COOKIE}=abc"}
        health_reply = web.get("/async-health", headers=cookie)
        assert (health_reply.status, health_reply.json()) == (200, {"ok": True})
        assert health_reply.get_all("Set-Cookie") == []
        assert web.get("/async-peek", headers=cookie).status == 500
        factory.close()


def test_a_redis_that_never_answers_is_a_500_after_the_timeout(make_any_client):
    """A Redis that accepts connections and says nothing (stopped, overloaded, a dead
    link) fails the request after the client's timeout; the server goes on serving."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing ever answers
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=0.5&socket_connect_timeout=0.5"
        factory = RedisSessionFactory(url=url, prefix="silent:")
        app = redis_app(factory)

        @app.route("/plain")
        def plain() -> str:
            return "plain"

        web = make_any_client(app)
        started = time.monotonic()
        assert web.get("/set").status == 500
        assert time.monotonic() - started < 4.5  # bounded: never a hang
        assert web.get("/plain").body == b"plain"
        factory.close()


def test_the_client_built_from_a_url_has_timeouts():
    """redis-py before 8 has no timeout by default: a silent Redis held each worker
    that asked it forever. The factory gives 5 s unless the URL says otherwise."""
    factory = RedisSessionFactory(url="redis://127.0.0.1:1/0")
    options = factory.client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (5.0, 5.0)
    tuned = RedisSessionFactory(url="redis://127.0.0.1:1/0?socket_timeout=0.5")
    assert tuned.client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
