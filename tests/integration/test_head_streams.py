"""HEAD to a streamed answer (RFC 9110 9.3.2: no content), in all five front ends.

The head goes out as a GET would get it, then a returned stream (generator, async
generator, iterable, file object) is closed unread, and a ``write_bytes`` loop is
stopped by ``ClientGone`` at its first write (as it is under a 204 or 304, which
carry no body either).  Before, the stream ran to its end
behind every HEAD: a threaded worker was pinned for it, WSGI sent no head until it
ended, and the TestClient's ``head()`` waited for it.

Each stream here would run for ``STEPS * TICK`` (15 s); the tests want it closed
within ``PROMPT`` (3 s) and each answer within ``TIMEOUT`` (5 s).  At teardown the
probe's ``stop`` ends whatever still runs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from simple_http_server import App, ClientGone, Response

from ..conftest import LogRecords, UniformClient

STEPS = 1500
TICK = 0.01
PROMPT = 3.0
TIMEOUT = 5.0
EVENTS = "text/event-stream"
STREAMS = ["gen", "agen", "iterable", "file"]
WRITERS = ["write", "awrite"]


class Probe:
    """What the streams and writers of :func:`stream_app` did."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.steps: dict[str, int] = defaultdict(int)
        self.streams: dict[str, Any] = {}
        self.raised: dict[str, BaseException] = {}
        self.ended: dict[str, threading.Event] = defaultdict(threading.Event)

    def step(self, kind: str) -> bool:
        """Count a step of ``kind``; False once the test is over."""
        with self.lock:
            self.steps[kind] += 1
        return not self.stop.is_set()

    def closed(self, kind: str) -> bool:
        """True once the last stream of ``kind`` was closed."""
        stream = self.streams.get(kind)
        if kind == "gen":
            return inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED
        if kind == "agen":
            return stream is not None and stream.ag_frame is None
        return stream is not None and bool(stream.closed)


class Feed:
    """An iterable with ``close()``: an endless feed of events."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.closed = False

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> bytes:
        if not self.probe.step("iterable"):
            raise StopIteration
        time.sleep(TICK)
        return b"data: x\n\n"

    def close(self) -> None:
        self.closed = True


class EventFile(io.BytesIO):
    """A binary file object of ``STEPS`` events; remembers where it was closed."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(b"data: x\n\n" * STEPS)
        self.probe = probe
        self.closed_at = -1

    def readline(self, size: int | None = -1) -> bytes:
        self.probe.step("file")
        return super().readline(size)

    def close(self) -> None:
        if not self.closed:
            self.closed_at = self.tell()
        super().close()


def stream_app(probe: Probe) -> App:
    """Endless event streams, returned or written, and ``/hello``."""
    app = App()

    def events(kind: str, body: Any) -> Response:
        probe.streams[kind] = body
        return Response(headers={"Content-Type": EVENTS}, body=body)

    @app.route("/hello")
    def hello() -> str:
        return "hello"

    @app.route("/gen")
    def gen(n: int = STEPS) -> Response:
        def feed() -> Iterator[bytes]:
            for _ in range(n):
                if not probe.step("gen"):
                    return
                yield b"data: x\n\n"
                time.sleep(TICK)

        return events("gen", feed())

    @app.route("/agen")
    def agen() -> Response:
        async def feed() -> AsyncIterator[bytes]:
            while probe.step("agen"):
                yield b"data: x\n\n"
                await asyncio.sleep(TICK)

        return events("agen", feed())

    @app.route("/iterable")
    def iterable() -> Response:
        return events("iterable", Feed(probe))

    @app.route("/file")
    def file() -> Response:
        return events("file", EventFile(probe))

    @app.route("/write")
    def write(response: Response, n: int = STEPS, status: int = 200) -> None:
        response.status_code = status
        response.set_header("Content-Type", EVENTS)
        try:
            for _ in range(n):
                if not probe.step("write"):
                    return
                response.write_bytes(b"data: x\n\n")
                time.sleep(TICK)
        except ClientGone as exc:
            probe.raised["write"] = exc
            raise
        finally:
            probe.ended["write"].set()

    @app.route("/awrite")
    async def awrite(response: Response, status: int = 200) -> None:
        response.status_code = status
        response.set_header("Content-Type", EVENTS)
        try:
            while probe.step("awrite"):
                response.write_bytes(b"data: x\n\n")
                await response.drain()
                await asyncio.sleep(TICK)
        except ClientGone as exc:
            probe.raised["awrite"] = exc
            raise
        finally:
            probe.ended["awrite"].set()

    @app.route("/write-fails")
    def write_fails(response: Response, status: int = 200) -> None:
        response.status_code = status
        try:
            while probe.step("write-fails"):
                response.write_bytes(b"data: x\n\n")
                time.sleep(TICK)
        except ClientGone:
            raise RuntimeError("cleaning up failed") from None

    return app


@pytest.fixture
def probe() -> Iterator[Probe]:
    """A fresh probe; whatever stream still runs at the end is told to stop."""
    state = Probe()
    yield state
    state.stop.set()


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    will_close: bool

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None


def within(seconds: float, func: Callable[[], Answer]) -> Answer:
    """``func()``, which must return within ``seconds``."""
    result: list[Answer] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(func())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if errors:
        raise errors[0]
    assert result, f"no answer within {seconds} s"
    return result[0]


def exchange(client: UniformClient, *requests: tuple[str, str, dict[str, str]]) -> list[Answer]:
    """Each request in turn on one connection (a TestClient call each), each answered
    within ``TIMEOUT``.  http.client reopens a connection the server closed:
    ``Answer.will_close`` tells whether it was kept."""
    test_client = client.test_client
    if test_client is not None:

        def call(method: str, path: str, headers: dict[str, str]) -> Answer:
            reply = test_client.request(method, path, headers=headers)
            return Answer(reply.status_code, reply.header_list, reply.content, False)

        return [within(TIMEOUT, functools.partial(call, *r)) for r in requests]
    assert client.address is not None
    conn = client.address.connection(timeout=TIMEOUT)
    answers = []
    try:
        for method, path, headers in requests:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            answers.append(Answer(resp.status, resp.getheaders(), resp.read(), resp.will_close))
    finally:
        conn.close()
    return answers


def wait_until(predicate: Callable[[], bool], seconds: float = PROMPT) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def keeps_connections(client: UniformClient) -> bool:
    """wsgiref answers HTTP/1.0 and closes every connection; the others keep them."""
    return client.front_end != "wsgi"


@pytest.mark.parametrize("kind", STREAMS)
def test_a_head_to_a_returned_stream_closes_it_unread(
    make_any_client: Callable[..., UniformClient], probe: Probe, kind: str
) -> None:
    client = make_any_client(stream_app(probe))
    head, after = exchange(client, ("HEAD", f"/{kind}", {}), ("GET", "/hello", {}))
    assert (head.status, head.body, head.header("content-type")) == (200, b"", EVENTS)
    # The length of the body a GET gets is unknown: the head claims none (RFC 9110 8.6).
    assert head.header("content-length") is None
    assert (after.status, after.body) == (200, b"hello")
    assert not head.will_close or not keeps_connections(client)
    assert wait_until(lambda: probe.closed(kind)), f"{kind} not closed"
    assert probe.steps[kind] == 0  # never read
    if kind == "file":
        assert probe.streams[kind].closed_at == 0


@pytest.mark.parametrize("kind", WRITERS)
def test_a_head_stops_a_write_bytes_loop_at_its_first_write(
    make_any_client: Callable[..., UniformClient], probe: Probe, kind: str
) -> None:
    client = make_any_client(stream_app(probe))
    head, after = exchange(client, ("HEAD", f"/{kind}", {}), ("GET", "/hello", {}))
    assert (head.status, head.body, head.header("content-type")) == (200, b"", EVENTS)
    assert head.header("content-length") is None
    assert (after.status, after.body) == (200, b"hello")
    assert not head.will_close or not keeps_connections(client)
    assert probe.ended[kind].wait(PROMPT), f"{kind} still writing"
    assert isinstance(probe.raised.get(kind), ClientGone)
    assert probe.steps[kind] == 1  # the first write sent the head, then raised


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("kind", WRITERS)
def test_a_bodiless_status_stops_a_write_bytes_loop_at_its_first_write(
    make_any_client: Callable[..., UniformClient], probe: Probe, kind: str, status: int
) -> None:
    """A 204 or 304 carries no body (RFC 9110 8.6): as for a HEAD, its head is the
    whole answer.  Before, the loop ran to its end, its bytes dropped."""
    client = make_any_client(stream_app(probe))
    answer, after = exchange(client, ("GET", f"/{kind}?status={status}", {}), ("GET", "/hello", {}))
    assert (answer.status, answer.body) == (status, b"")
    assert answer.header("content-length") is None or client.front_end == "wsgi"  # wsgiref's 0
    assert answer.header("transfer-encoding") is None
    assert (after.status, after.body) == (200, b"hello")
    assert not answer.will_close or not keeps_connections(client)
    assert probe.ended[kind].wait(PROMPT), f"{kind} still writing"
    assert isinstance(probe.raised.get(kind), ClientGone)
    assert probe.steps[kind] == 1


@pytest.mark.parametrize("accept", ["identity", "gzip"])
@pytest.mark.parametrize("kind", ["gen", "write"])
def test_a_head_to_a_stream_gets_the_head_of_the_get(
    make_any_client: Callable[..., UniformClient], probe: Probe, kind: str, accept: str
) -> None:
    client = make_any_client(stream_app(probe), gzip_content_types=[EVENTS])
    headers = {"Accept-Encoding": accept}
    get, head = exchange(
        client, ("GET", f"/{kind}?n=2", headers), ("HEAD", f"/{kind}", headers)
    )  # fmt: skip
    assert get.status == head.status == 200 and get.body and not head.body
    assert [h for h in head.headers if h[0].lower() != "date"] == [
        h for h in get.headers if h[0].lower() != "date"
    ]
    assert head.header("content-length") is None
    gzipped = kind == "gen" and accept == "gzip"  # write_bytes is never gzipped
    assert head.header("content-encoding") == ("gzip" if gzipped else None)
    assert probe.steps[kind] == 2 + (kind == "write")  # the GET's; the HEAD's first write


def test_heads_to_streams_leave_the_workers_free(
    make_any_client: Callable[..., UniformClient], probe: Probe
) -> None:
    """Before, each HEAD pinned a threaded worker until its stream ended."""
    client = make_any_client(stream_app(probe), worker_threads=2)
    for _ in range(6):  # each on a connection of its own, closed once answered
        (head,) = exchange(client, ("HEAD", "/gen", {}))
        assert (head.status, head.body) == (200, b"")
    (after,) = exchange(client, ("GET", "/hello", {}))
    assert (after.status, after.body) == (200, b"hello")
    assert probe.steps["gen"] == 0


def test_a_head_whose_writer_fails_after_its_head_is_still_answered(
    make_any_client: Callable[..., UniformClient], probe: Probe, log_records: LogRecords
) -> None:
    """The head is all of a HEAD's answer: a controller failing after it was sent ends
    the answer normally (a GET's would be cut: its body would be truncated), and the
    connection stays."""
    client = make_any_client(stream_app(probe))
    head, after = exchange(client, ("HEAD", "/write-fails", {}), ("GET", "/hello", {}))
    assert (head.status, head.body) == (200, b"")
    assert (after.status, after.body) == (200, b"hello")
    assert not head.will_close or not keeps_connections(client)
    assert probe.steps["write-fails"] == 1
    assert [r.getMessage() for r in log_records.records if r.levelname == "ERROR"] == [
        "Error while serving HEAD /write-fails"
    ]


def test_a_204_whose_writer_fails_after_its_head_is_still_answered(
    make_any_client: Callable[..., UniformClient], probe: Probe, log_records: LogRecords
) -> None:
    """As for a HEAD: the head is all of a 204's answer, so the connection stays."""
    client = make_any_client(stream_app(probe))
    answer, after = exchange(
        client, ("GET", "/write-fails?status=204", {}), ("GET", "/hello", {})
    )  # fmt: skip
    assert (answer.status, answer.body) == (204, b"")
    assert (after.status, after.body) == (200, b"hello")
    assert not answer.will_close or not keeps_connections(client)
    assert probe.steps["write-fails"] == 1
    assert [r.getMessage() for r in log_records.records if r.levelname == "ERROR"] == [
        "Error while serving GET /write-fails"
    ]
