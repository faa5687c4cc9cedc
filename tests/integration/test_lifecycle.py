"""Starting and stopping, in both transports: websockets get their 1001 at once while
requests drain, a request stuck past ``drain_timeout`` is cut then (websockets or not),
``stop()`` returns once stopped and never raises, a ``stop()`` before ``start()`` is not
lost, ``is_ready()`` turns False when the stop begins, ``stop_async()`` from a request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from websocket import ABNF

from simple_http_server import App, Response, WebsocketHandler, WebsocketSession, server
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server
from simple_http_server.transport import ws_glue

from ..conftest import LiveServer, LogRecords
from .test_wire import fetch, run_in_thread

Serve = Callable[..., LiveServer]


class Blocked:
    """A request held in its controller until ``release`` (a raw client: it sees the cut)."""

    def __init__(self, live: LiveServer, entered: threading.Event) -> None:
        self.sock = socket.create_connection((live.host, live.port), timeout=20)
        self.sock.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        self.reply = b""
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert entered.wait(5), "the request did not reach its controller"

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(4096):
                self.reply += chunk
        self.ended_at = time.monotonic()
        self.sock.close()

    def done(self) -> bool:
        return not self.thread.is_alive()


def lifecycle_app(entered: threading.Event, release: threading.Event) -> App:
    app = App()

    @app.route("/block")
    def block() -> str:
        entered.set()
        release.wait(20)
        return "released"

    @app.websocket_handler(endpoint="/ws")
    class Echo(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.send("echo " + message)

    return app


def silent_websocket(live: LiveServer) -> socket.socket:
    """A websocket client that never answers the server's Close."""
    sock = socket.create_connection((live.host, live.port), timeout=10)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    return sock


def wait_until_refused(live: LiveServer) -> None:
    """Until the listening socket is closed (the stop has begun)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((live.host, live.port), timeout=3).close()
        except (ConnectionRefusedError, ConnectionResetError):  # reset: closed meanwhile
            return
        except TimeoutError:  # a SYN the closing listener dropped: try again
            continue
        time.sleep(0.01)
    raise AssertionError("the port still accepts connections")


def frames_until_close(ws: websocket.WebSocket) -> tuple[list[bytes], int]:
    """Data frames received before the server's Close, and its code."""
    frames = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            return frames, struct.unpack("!H", frame.data[:2])[0]
        if opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            frames.append(frame.data)


class Stopper:
    """``server.stop()`` in a thread of its own: when it returned, and what it raised."""

    def __init__(self, srv: Server) -> None:
        self.error: BaseException | None = None
        self.returned_at = 0.0
        self.began = time.monotonic()
        self.thread = threading.Thread(target=self._stop, args=(srv,), daemon=True)
        self.thread.start()

    def _stop(self, srv: Server) -> None:
        try:
            srv.stop()
        except BaseException as exc:
            self.error = exc
        self.returned_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "stop() did not return"


# -- websockets and requests during the stop ---------------------------------------
def test_stop_closes_websockets_at_once_while_requests_drain(serve: Serve) -> None:
    """asyncio sent the 1001 only once the requests in flight had drained (and answered
    messages meanwhile); both now close websockets at once, as the README says."""
    entered, release = threading.Event(), threading.Event()
    live = serve(lifecycle_app(entered, release), drain_timeout=8.0)
    ws = websocket.create_connection(f"ws://127.0.0.1:{live.port}/ws", timeout=10)
    try:
        request = Blocked(live, entered)
        stopper = Stopper(live.server)
        wait_until_refused(live)
        ws.send("after stop")
        frames, code = frames_until_close(ws)
        closed_after = time.monotonic() - stopper.began
        assert code == 1001
        assert frames == []  # not answered: the session was closing already
        assert closed_after < 3.0, closed_after  # was drain_timeout (8 s)
        assert not request.done()  # still in its controller
        release.set()
        request.thread.join(10)
        assert request.reply.startswith(b"HTTP/1.1 200 ")
        assert request.reply.endswith(b"released")
        stopper.join(15)
    finally:
        release.set()
        ws.close()


def test_a_stuck_request_is_cut_at_drain_timeout_and_stop_returns_once_stopped(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a websocket client that never answers the Close: threaded started the drain
    deadline only after waiting for the websockets (a stuck request ran drain_timeout +
    CLOSE_TIMEOUT); asyncio cut it only after them too, and its stop() raised
    TimeoutError, the shutdown outlasting drain_timeout + 2 s."""
    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 3.0)
    entered, release = threading.Event(), threading.Event()
    live = serve(lifecycle_app(entered, release), drain_timeout=1.0)
    silent = silent_websocket(live)
    try:
        request = Blocked(live, entered)
        stopper = Stopper(live.server)
        request.thread.join(10)
        cut_after = request.ended_at - stopper.began
        assert b"released" not in request.reply
        assert cut_after < 2.5, cut_after  # drain_timeout (1 s); it was 4 s and more
        stopper.join(20)
        assert stopper.error is None, repr(stopper.error)
        live.thread.join(1)  # stop() returned once the server had stopped
        assert not live.thread.is_alive()
        assert not live.server.is_ready()
    finally:
        release.set()
        silent.close()


def test_is_ready_turns_false_when_the_stop_begins(serve: Serve) -> None:
    """It stayed True while stop() drained, though the port refused connections."""
    entered, release = threading.Event(), threading.Event()
    live = serve(lifecycle_app(entered, release), drain_timeout=8.0)
    try:
        request = Blocked(live, entered)
        stopper = Stopper(live.server)
        wait_until_refused(live)
        assert not live.server.is_ready()
        assert not request.done()  # the drain goes on
        release.set()
        request.thread.join(10)
        assert request.reply.endswith(b"released")
        stopper.join(15)
    finally:
        release.set()


# -- stop() before start(), start() twice ------------------------------------------
def new_server(transport: str, app: App | None = None, **config: Any) -> Server:
    settings = ServerConfig(host="127.0.0.1", port=0).with_changes(**config)
    return Server(app or App(), settings, prefer_coroutine=transport == "asyncio")


def test_a_stop_before_start_makes_start_return(transport: str) -> None:
    """stop() before start() (so also one right after starting the server in another
    thread) was dropped, and the server then served forever."""
    srv = new_server(transport)
    srv.stop()
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert not srv.is_ready()
    # That stop() is spent; one after a run does nothing: the server starts again.
    for _ in range(2):
        thread = run_in_thread(srv)
        assert fetch(srv.port, "/missing").startswith(b'{"code": 404')
        srv.stop()
        srv.stop()
        thread.join(5)
        assert not thread.is_alive()


def test_a_stop_right_after_start_in_another_thread_is_not_lost(transport: str) -> None:
    for _ in range(20):
        srv = new_server(transport)
        thread = threading.Thread(target=srv.start, daemon=True)
        thread.start()
        srv.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert not srv.is_ready()


def module_start(transport: str) -> threading.Thread:
    kwargs = {"host": "127.0.0.1", "port": 0, "app_conf": App()}
    kwargs["prefer_coroutine"] = transport == "asyncio"
    thread = threading.Thread(target=server.start, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_module_stop_before_start_is_not_lost(transport: str) -> None:
    """server.stop() read the previous (stopped) server, or none: the next one served on."""
    server.stop()  # none runs: the next start() returns at once
    thread = module_start(transport)
    thread.join(5)
    assert not thread.is_alive()
    for _ in range(5):  # right after starting it in another thread
        thread = module_start(transport)
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
    thread = module_start(transport)  # nothing left pending: this one serves
    try:
        for _ in range(500):
            if server.is_ready():
                break
            time.sleep(0.01)
        assert server._server is not None
        assert fetch(server._server.port, "/missing").startswith(b'{"code": 404')
    finally:
        server.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_a_second_start_while_running_raises(transport: str) -> None:
    """A second start() (or start_async()) served a second instance no stop() reached."""
    srv = new_server(transport)
    thread = run_in_thread(srv)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            if transport == "asyncio":
                asyncio.run(srv.start_async())
            else:
                srv.start()
        except BaseException as exc:
            errors.append(exc)

    again = threading.Thread(target=second, daemon=True)
    again.start()
    again.join(5)
    try:
        assert not again.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
        assert fetch(srv.port, "/missing").startswith(b'{"code": 404')  # the first serves on
    finally:
        srv.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_start_async_twice_on_one_loop() -> None:
    srv = new_server("asyncio")

    async def main() -> None:
        first = asyncio.create_task(srv.start_async())
        for _ in range(500):
            if srv.is_ready():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError):
            await srv.start_async()
        await srv.stop_async()
        await asyncio.wait_for(first, 5)

    asyncio.run(main())
    assert not srv.is_ready()


def test_cancelling_start_async_stops_the_server_with_its_connections() -> None:
    """Cancelling the task awaiting ``start_async()`` closed the port only: requests in
    flight and keep-alive connections were served on (no ``Connection: close``), their
    sockets left open."""
    app = App()
    entered = threading.Event()

    @app.route("/slow")
    async def slow() -> str:
        entered.set()
        await asyncio.sleep(0.5)
        return "slow"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    srv = new_server("asyncio", app, drain_timeout=10.0)
    replies: dict[str, bytes] = {}

    async def main() -> None:
        serving = asyncio.create_task(srv.start_async())
        for _ in range(500):
            if srv.is_ready():
                break
            await asyncio.sleep(0.01)
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        idle.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        busy = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        first = await asyncio.to_thread(idle.recv, 4096)  # answered, kept alive
        assert first.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in first
        assert await asyncio.to_thread(entered.wait, 5)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        replies["idle"] = await asyncio.to_thread(read_until_eof, idle)
        replies["busy"] = await asyncio.to_thread(read_until_eof, busy)

    asyncio.run(asyncio.wait_for(main(), 20))
    assert replies["idle"] == b""  # closed, not waiting for a next request
    assert b"Connection: close\r\n" in replies["busy"]
    assert replies["busy"].endswith(b"\r\n\r\nslow")
    assert not srv.is_ready()


def test_cancelling_start_async_on_the_threaded_transport_stops_the_server() -> None:
    """``start_async(prefer_coroutine=False)`` serves in a thread: cancelling the task
    awaiting it left the server running, and ``asyncio.run()`` then waited for that
    thread forever."""
    ended = threading.Event()
    ports: list[int] = []

    async def main() -> None:
        serving = asyncio.create_task(
            server.start_async(host="127.0.0.1", port=0, prefer_coroutine=False, app_conf=App())
        )
        for _ in range(500):
            if server.is_ready():
                break
            await asyncio.sleep(0.01)
        ports.append(server._server.port)  # type: ignore[union-attr]
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving

    def run() -> None:
        asyncio.run(main())
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        assert ended.wait(15), "asyncio.run() did not return"
        assert not server.is_ready()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", ports[0]), timeout=5).close()
    finally:
        running = server._server
        if running is not None:
            running.stop()  # not the module's stop(): after a run, it would hold the next start()


def test_start_with_the_asyncio_transport_in_a_running_loop_says_what_to_do() -> None:
    """It raised asyncio.run()'s error about a running loop, and left a coroutine never
    awaited (a RuntimeWarning)."""
    srv = new_server("asyncio")

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"await start_async\(\)"):
            srv.start()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [w.message for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert not srv.is_ready()
    thread = run_in_thread(srv)  # nothing left claimed: it serves afterwards
    srv.stop()
    thread.join(5)
    assert not thread.is_alive()


# -- stop_async() from a request of the server's own -------------------------------
@pytest.mark.parametrize("path", ["/stop-async", "/stop-async-from-def"])
def test_stop_async_in_a_controller_does_not_wait_for_its_own_request(
    transport: str, path: str
) -> None:
    """``await stop_async()`` in a controller waited for that very request: the client
    got no answer (cut after drain_timeout), unlike with stop()."""
    app = App()
    holder: dict[str, Server] = {}

    @app.route("/stop-async")
    async def stop_async() -> str:
        await holder["server"].stop_async()
        return "bye"

    @app.route("/stop-async-from-def")
    def stop_async_from_def() -> str:
        asyncio.run(holder["server"].stop_async())
        return "bye"

    srv = holder["server"] = new_server(transport, app, drain_timeout=6.0)
    thread = run_in_thread(srv)
    began = time.monotonic()
    assert fetch(srv.port, path) == b"bye"
    assert time.monotonic() - began < 3.0  # drain_timeout: 6 s
    thread.join(5)
    assert not thread.is_alive()
    assert not srv.is_ready()


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_stop_in_a_websocket_callback_does_not_wait_for_the_shutdown(
    transport: str, kind: str
) -> None:
    """In the threaded transport, stop() in a websocket callback waited for the shutdown,
    which waited 5 s for the session's closing handshake, held up by that very callback:
    the server stopped 5 s late, and the callback went on only then."""
    app = App()
    holder: dict[str, Server] = {}
    stopped: list[float] = []

    def goodbye(session: WebsocketSession, message: str) -> None:
        session.send("bye " + message)
        holder["server"].stop()
        stopped.append(time.monotonic())

    @app.websocket_handler(endpoint="/ws")
    class StopHere(WebsocketHandler):
        if kind == "def":

            def on_text_message(self, session: WebsocketSession, message: str) -> None:
                goodbye(session, message)

        else:

            async def on_text_message(self, session: WebsocketSession, message: str) -> None:
                goodbye(session, message)

    srv = holder["server"] = new_server(transport, app, websocket_ping_interval=0)
    thread = run_in_thread(srv)
    client = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=10)
    try:
        began = time.monotonic()
        client.send("now")
        frames, code = frames_until_close(client)
        assert (frames, code) == ([b"bye now"], 1001)
        client.send_close()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - began < 3.0  # not the 5 s of an unanswered Close
        assert stopped and stopped[0] - began < 3.0
    finally:
        client.close()


@pytest.mark.parametrize("callback", ["on_handshake", "on_open"])
def test_stop_in_a_websocket_handshake_or_open_callback_does_not_wait(
    transport: str, callback: str
) -> None:
    """In the threaded transport, stop() in ``on_handshake`` waited for the shutdown,
    which waited drain_timeout for that very handshake: the client got nothing for
    10 s, then the connection was cut."""
    app = App()
    holder: dict[str, Server] = {}

    @app.websocket_handler(endpoint="/ws")
    class StopHere(WebsocketHandler):
        def on_handshake(self, request: Any) -> None:
            if callback == "on_handshake":
                holder["server"].stop()

        def on_open(self, session: WebsocketSession) -> None:
            if callback == "on_open":
                holder["server"].stop()

    srv = holder["server"] = new_server(transport, app, websocket_ping_interval=0)
    thread = run_in_thread(srv)
    began = time.monotonic()
    client = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=10)
    try:
        assert frames_until_close(client) == ([], 1001)
        client.send_close()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - began < 3.0  # drain_timeout: 10 s
    finally:
        client.close()


def stop_here_app(holder: dict[str, Server]) -> App:
    """Routes that stop their server: in a controller, a filter, or while streaming."""
    app = App()

    @app.route("/def")
    def in_def() -> str:
        holder["server"].stop()
        return "bye"

    @app.route("/async")
    async def in_async() -> str:
        holder["server"].stop()
        return "bye"

    @app.route("/stop-async")
    async def in_stop_async() -> str:
        await holder["server"].stop_async()
        return "bye"

    @app.route("/filtered")
    def filtered() -> str:
        return "bye"

    @app.request_filter("/filtered")
    def stop_first(ctx: Any) -> None:
        holder["server"].stop()
        ctx.do_chain()

    @app.route("/write")
    def write(response: Response) -> None:
        holder["server"].stop()
        response.write_bytes(b"bye")

    return app


@pytest.mark.parametrize("path", ["/def", "/async", "/stop-async", "/filtered", "/write"])
def test_a_request_that_stops_its_server_is_answered_with_connection_close(
    transport: str, path: str
) -> None:
    """Its answer often went out before the shutdown marked the requests in flight
    (with ``prefer_coroutine=True`` always, from an ``async def``): no ``Connection:
    close``, yet the connection closed right after it."""
    for _ in range(3):
        holder: dict[str, Server] = {}
        srv = holder["server"] = new_server(transport, stop_here_app(holder))
        thread = run_in_thread(srv)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        reply = read_until_eof(sock)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nConnection: close" in head
        assert b"bye" in body
        thread.join(10)
        assert not thread.is_alive()


# -- stop() cancels what its requests still await ------------------------------------
class Awaiting:
    """An app whose ``async def`` code awaits what never comes: a long-poll, an event
    stream (an async generator awaiting its next event), a websocket callback."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.entered = threading.Semaphore(0)
        self.app = App()
        app, log, entered = self.app, self.log, self.entered

        @app.route("/poll")
        async def poll() -> str:
            try:
                entered.release()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("poll cancelled")
                raise
            finally:
                log.append("poll finally")
            return "never"

        @app.route("/events")
        async def events() -> Any:
            async def stream() -> Any:
                try:
                    yield b"data: first\n\n"
                    entered.release()
                    await asyncio.Event().wait()
                finally:
                    log.append("stream finally")

            return stream()

        @app.websocket_handler(endpoint="/ws")
        class Waits(WebsocketHandler):
            async def on_text_message(self, session: WebsocketSession, message: str) -> None:  # type: ignore[override]
                try:
                    entered.release()
                    await asyncio.Event().wait()
                finally:
                    log.append("callback finally")

    def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=5), "the request did not reach its coroutine"

    def wait_logged(self, expected: list[str]) -> list[str]:
        deadline = time.monotonic() + 3
        while sorted(self.log) != sorted(expected) and time.monotonic() < deadline:
            time.sleep(0.01)
        return sorted(self.log)


def server_threads(before: set[threading.Thread]) -> list[str]:
    """The threads of servers started since ``before`` still alive (a second at most
    after the stop), not the process' shared loop for ``async def`` code."""
    deadline = time.monotonic() + 1
    while True:
        names = sorted(
            t.name
            for t in threading.enumerate()
            if t not in before and t.name.startswith(("shs-worker", "shs-sync", "shs-ws"))
        )
        if not names or time.monotonic() >= deadline:
            return names
        time.sleep(0.01)


def open_requests(live: LiveServer, paths: list[str]) -> list[socket.socket]:
    socks = []
    for path in paths:
        sock = socket.create_connection((live.host, live.port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        socks.append(sock)
    return socks


def read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            data += chunk
    sock.close()
    return data


def test_stop_cancels_the_coroutines_of_requests_past_drain_timeout(transport: str) -> None:
    """Threaded: the requests were cut, but the coroutines they awaited stayed on the
    shared loop for good (their ``finally`` never ran) and a worker thread per request
    outlived stop(), piling up with each Server.  README: their threads "end with
    stop()"; their worker and their generator's finally "finish then"."""
    awaiting = Awaiting()
    before = set(threading.enumerate())
    srv = new_server(transport, awaiting.app, drain_timeout=0.5)
    thread = run_in_thread(srv)
    socks = open_requests(
        LiveServer(srv, transport, thread), ["/poll", "/poll", "/events", "/events"]
    )
    awaiting.wait_entered(4)
    began = time.monotonic()
    srv.stop()
    assert time.monotonic() - began < 4.0
    thread.join(5)
    assert not thread.is_alive()
    expected = ["poll cancelled", "poll finally"] * 2 + ["stream finally"] * 2
    assert awaiting.wait_logged(expected) == sorted(expected)
    replies = [read_until_eof(sock) for sock in socks]
    assert [r.startswith(b"HTTP/1.1 200 ") for r in replies] == [False, False, True, True]
    assert all(b"0\r\n\r\n" not in r for r in replies)  # cut, not ended
    assert server_threads(before) == []


def test_stop_cancels_a_websocket_callback_still_awaiting(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threaded: the session's thread waited for its callback for good after stop()."""
    monkeypatch.setattr(ws_glue, "CLOSE_TIMEOUT", 0.5)
    awaiting = Awaiting()
    before = set(threading.enumerate())
    srv = new_server(transport, awaiting.app, drain_timeout=0.5, websocket_ping_interval=0)
    thread = run_in_thread(srv)
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=10)
    try:
        ws.send("wait")
        awaiting.wait_entered(1)
        srv.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert awaiting.wait_logged(["callback finally"]) == ["callback finally"]
        assert server_threads(before) == []
    finally:
        ws.close(timeout=0.2)


def test_stop_cancels_only_the_coroutines_of_its_own_server() -> None:
    """The threaded transport runs every Server's ``async def`` code on one loop."""
    first, second = Awaiting(), Awaiting()
    servers = [new_server("threaded", a.app, drain_timeout=0.5) for a in (first, second)]
    threads = [run_in_thread(srv) for srv in servers]
    socks = [
        open_requests(LiveServer(srv, "threaded", t), ["/poll"])[0]
        for srv, t in zip(servers, threads, strict=True)
    ]
    first.wait_entered(1)
    second.wait_entered(1)
    servers[0].stop()
    assert first.wait_logged(["poll cancelled", "poll finally"]) == [
        "poll cancelled",
        "poll finally",
    ]
    assert second.log == []  # still awaiting
    servers[1].stop()
    assert second.wait_logged(["poll cancelled", "poll finally"]) == [
        "poll cancelled",
        "poll finally",
    ]
    for sock in socks:
        sock.close()
    for thread in threads:
        thread.join(5)


def test_the_listener_closes_when_keyboard_interrupt_ends_an_asyncio_server() -> None:
    """``KeyboardInterrupt`` raised by user code is left to stop things (the operator's
    Ctrl-C): ``start()`` raises it.  The listening socket stayed open after it, so new
    clients waited until the process exited."""
    app = App()

    @app.route("/interrupt")
    async def interrupt() -> str:
        raise KeyboardInterrupt

    srv = new_server("asyncio", app)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            srv.start()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.is_ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    port = srv.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /interrupt HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_until_eof(sock) == b""
    thread.join(5)
    assert not thread.is_alive()
    assert [type(exc) for exc in raised] == [KeyboardInterrupt]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_serving_on_ipv6_logs_the_address_in_brackets(
    transport: str, log_records: LogRecords
) -> None:
    """``Serving on ::1:8080`` could not be pasted into a URL (nor read at a glance)."""
    app = App()

    @app.route("/")
    def home() -> str:
        return "v6"

    srv = Server(app, ServerConfig(host="::1", port=0), prefer_coroutine=transport == "asyncio")
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not srv.is_ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("::1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        srv.stop()
        thread.join(15)
    messages = [r.getMessage() for r in log_records.records]
    assert f"Serving on [::1]:{srv.port}" in messages, messages
