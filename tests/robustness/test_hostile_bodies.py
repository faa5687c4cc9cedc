"""Hostile request bodies: charsets chosen by the client, huge forms.

A body a client sends in one request must cost the server time and memory in
proportion to its size, and never stall the event loop that serves the others.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simple_http_server import App, JSONBody, MultipartFile, RequestBodyReader
from simple_http_server.dispatch.bodies import CHARSETS, is_charset
from simple_http_server.server import init_asgi_proxy

from ..conftest import Address, LiveServer, asgi_server, live_server
from ..integration.apps import harness
from .wire import parse_responses, read_until_closed

BOUNDARY = "hostileBoundary"
# Codecs Python knows that are no charsets: punycode decodes in quadratic time.
NOT_CHARSETS = ["punycode", "idna", "utf-7", "unicode_escape", "raw_unicode_escape", "charmap"]
FORM = "application/x-www-form-urlencoded"


def body_app() -> App:
    app = App()

    @app.route("/form", method="POST")
    def form(a: str = "") -> dict[str, Any]:
        return {"a": a}

    @app.route("/json", method="POST")
    def json_body(data: JSONBody) -> dict[str, Any]:
        return {"keys": sorted(data)}

    @app.route("/upload", method="POST")
    def upload(t: str = "", doc: MultipartFile | None = None) -> dict[str, Any]:
        return {"t": t, "filename": doc.filename if doc is not None else None}

    @app.route("/ping")
    async def ping() -> str:
        return "pong"

    return app


def multipart(charset_part: str = "", filename_charset: str = "") -> bytes:
    """A text field (with a charset) and a file part (with a ``filename*``)."""
    text_type = f"Content-Type: text/plain; charset={charset_part}\r\n" if charset_part else ""
    disposition = 'form-data; name="doc"; filename="a.txt"'
    if filename_charset:
        disposition = f"form-data; name=\"doc\"; filename*={filename_charset}''abc"
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="t"\r\n{text_type}\r\n'
        f"x-a\r\n--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Type: text/plain\r\n\r\nhi\r\n--{BOUNDARY}--\r\n"
    ).encode()


def post(port: int, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(data) if data else None


def test_every_allowed_charset_is_a_canonical_codec_name():
    """The allow-list holds ``codecs.lookup`` names only (an alias would never match)."""
    for name in CHARSETS:
        assert codecs.lookup(name).name == name
    for alias in ("latin-1", "ISO-8859-1", "Shift_JIS", "UTF8", "windows-1252", "us-ascii"):
        assert is_charset(alias)
    for name in NOT_CHARSETS:
        assert not is_charset(name)


@pytest.mark.parametrize("charset", NOT_CHARSETS)
def test_codecs_that_are_no_charsets_are_400(serve, charset):
    """``charset=punycode`` (quadratic to decode) and the other non-charsets are refused
    in every place a request names a charset: form, JSON, a part, a ``filename*``."""
    port = serve(body_app()).port
    status, reply = post(port, "/form", f"{FORM}; charset={charset}", b"a=x-a")
    assert (status, "charset" in reply["explain"]) == (400, True), reply
    status, reply = post(port, "/json", f"application/json; charset={charset}", b'{"k": 1}')
    assert (status, "charset" in reply["explain"]) == (400, True), reply
    mp_type = f"multipart/form-data; boundary={BOUNDARY}"
    status, reply = post(port, "/upload", mp_type, multipart(charset_part=charset))
    assert status == 400, reply
    status, reply = post(port, "/upload", mp_type, multipart(filename_charset=charset))
    assert status == 400, reply
    status, reply = post(port, "/upload", f"{mp_type}; charset={charset}", multipart())
    assert status == 400, reply
    # The real charsets still work in each place.
    assert post(port, "/form", f"{FORM}; charset=latin-1", b"a=x-a") == (200, {"a": "x-a"})
    status, reply = post(port, "/upload", mp_type, multipart("iso-8859-1", "utf-8"))
    assert (status, reply) == (200, {"t": "x-a", "filename": "abc"})


def test_a_punycode_form_is_refused_by_the_test_client():
    from simple_http_server.testing import TestClient

    body = b"a=" + b"x" * 50_000 + b"-" + b"a" * 50_000
    reply = TestClient(body_app()).post(
        "/form", body=body, headers={"Content-Type": f"{FORM}; charset=punycode"}
    )
    assert reply.status_code == 400


@contextlib.contextmanager
def front_end(kind: str, app: App) -> Iterator[LiveServer | Address]:
    if kind == "asgi":
        with asgi_server(init_asgi_proxy(app_conf=app)) as address:
            yield address
    else:
        with live_server(app, kind) as live:
            yield live


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


@pytest.mark.parametrize("kind", ["threaded", "asyncio", "asgi"])
def test_a_big_percent_escaped_form_leaves_the_loop_free(kind):
    """Unquoting megabytes of ``%41`` takes seconds of Python code: it runs off the
    event loop, so another client is answered meanwhile (the loop used to stall)."""
    body = b"a=" + b"%41" * 4_500_000  # 13.5 MB: seconds to parse
    with front_end(kind, body_app()) as server:
        form: dict[str, Any] = {}

        def send_form() -> None:
            form["took"], form["reply"] = timed(lambda: post(server.port, "/form", FORM, body))

        thread = threading.Thread(target=send_form)
        thread.start()
        time.sleep(0.5)  # the body is sent and being parsed
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        ping_took, _ = timed(lambda: (conn.request("GET", "/ping"), conn.getresponse().read()))
        conn.close()
        thread.join(60)
    status, reply = form["reply"]
    assert (status, len(reply["a"])) == (200, 4_500_000)
    # Relative, not absolute: the ping waited for the whole parse when it ran on the loop.
    assert ping_took < (form["took"] - 0.5) / 3, (ping_took, form["took"])


def fields(count: int) -> bytes:
    return "&".join(f"f{i}=v" for i in range(count)).encode()


def test_form_fields_are_bounded_by_max_form_fields(make_any_client):
    """``max_form_fields`` (default 1000) counts the ``&``-separated pieces of a form."""
    client = make_any_client(body_app())
    headers = {"Content-Type": FORM}
    assert client.post("/form", headers=headers, body=fields(999) + b"&a=x").status == 200
    reply = client.post("/form", headers=headers, body=fields(1000) + b"&a=x")
    assert reply.status == 413, reply.text
    assert "max_form_fields" in reply.json()["explain"]
    assert client.post("/form", headers=headers, body=b"&" * 1000).status == 413
    small = make_any_client(body_app(), max_form_fields=3)
    assert small.post("/form", headers=headers, body=b"a=x&b=y&c=z").json() == {"a": "x"}
    assert small.post("/form", headers=headers, body=b"a=x&b=y&c=z&d=w").status == 413
    unbounded = make_any_client(body_app(), max_form_fields=0)
    assert unbounded.post("/form", headers=headers, body=fields(5000) + b"&a=x").status == 200


def test_sixteen_mib_of_empty_fields_is_refused_before_parsing(serve):
    """``a&a&...`` up to ``max_body_size``: 8 million fields took the server from 47 MB
    to 760 MB (and, in the asyncio transport, stalled the loop for seconds)."""
    live = serve(body_app())
    body = b"a&" * (8 * 1024 * 1024 - 8)
    status, reply = post(live.port, "/form", FORM, body)
    assert status == 413 and "max_form_fields" in reply["explain"], reply
    assert post(live.port, "/form", FORM, b"a=still+fine") == (200, {"a": "still fine"})


def _piece_counting_app() -> App:
    app = App()

    @app.route("/sync", method="POST")
    def read_sync(reader: RequestBodyReader) -> dict[str, int]:
        pieces = size = 0
        while chunk := reader.read_blocking(65536):
            pieces, size = pieces + 1, size + len(chunk)
        return {"pieces": pieces, "size": size}

    @app.route("/async", method="POST")
    async def read_async(reader: RequestBodyReader) -> dict[str, int]:
        pieces = size = 0
        while chunk := await reader.read(65536):
            pieces, size = pieces + 1, size + len(chunk)
        return {"pieces": pieces, "size": size}

    return app


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_a_body_of_tiny_chunks_reaches_the_reader_in_large_pieces(serve, path):
    """One piece per chunk: 1-byte chunks cost a read each (under asyncio, a ``def``
    controller's read is a trip to the loop: ten times the parse, 9 s for 100,000)."""
    live = serve(_piece_counting_app())
    count = 20_000
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"1\r\na\r\n" * count + b"0\r\n\r\n")
        (response,) = parse_responses(read_until_closed(sock, 30))
    assert response.status == 200, response
    reply = json.loads(response.body)
    assert reply["size"] == count
    assert reply["pieces"] < count // 10, reply  # one per read of the socket at most


_UPLOAD_SERVER = """
import hashlib, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from simple_http_server import App, Request, server
app = App()

@app.route("/up", method="POST")
def up(request: Request):
    return {name: hashlib.sha256(files[0].content).hexdigest()[:8]
            for name, files in request.files.items()}

server.start(host="127.0.0.1", port=int(sys.argv[1]), app_conf=app,
             prefer_coroutine=sys.argv[2] == "asyncio", max_files=100)
"""

_PART = 70_000  # larger than SPOOL_THRESHOLD: spilled to disk


def _file_parts(count: int) -> bytes:
    return b"".join(
        f"--{BOUNDARY}\r\n".encode()
        + f'Content-Disposition: form-data; name="f{i}"; filename="a"\r\n\r\n'.encode()
        + bytes([i]) * _PART
        + b"\r\n"
        for i in range(count)
    )


def test_uploads_waiting_for_their_controller_hold_no_file_descriptors(
    transport: str, tmp_path: Path
) -> None:
    """Spilled file parts hold no descriptor once written: two uploads stalled after
    25 spilled parts each, then one of 30, fit a process limited to 64 descriptors
    (each part held one until its request ended: the third upload got a 503).  The
    content reads back whole, and no temporary file is left behind."""
    port = harness.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _UPLOAD_SERVER, str(port), transport],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    stalled: list[socket.socket] = []
    try:
        harness.wait_listening(port)
        mp_type = f"multipart/form-data; boundary={BOUNDARY}"
        head = f"POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: {mp_type}\r\n"
        for _ in range(2):  # the body never ends: its parts wait for the controller
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            body = _file_parts(25)
            sock.sendall(f"{head}Content-Length: {len(body) + 1000}\r\n\r\n".encode() + body)
            stalled.append(sock)
        deadline = time.monotonic() + 10
        while len(list(tmp_path.iterdir())) < 2 * 25:  # both stalled uploads are stored
            assert time.monotonic() < deadline, "the stalled uploads were not read"
            time.sleep(0.05)
        body = _file_parts(30) + f"--{BOUNDARY}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/up", body, {"Content-Type": mp_type})
        reply = conn.getresponse()
        assert reply.status == 200, reply.read()
        expected = {f"f{i}": hashlib.sha256(bytes([i]) * _PART).hexdigest()[:8] for i in range(30)}
        assert json.loads(reply.read()) == expected
        conn.close()
        for sock in stalled:
            sock.close()
        stalled.clear()
        deadline = time.monotonic() + 10
        while list(tmp_path.iterdir()):  # every request ended: its files are removed
            assert time.monotonic() < deadline, list(tmp_path.iterdir())
            time.sleep(0.05)
    finally:
        for sock in stalled:
            sock.close()
        proc.kill()
        proc.communicate(timeout=10)
