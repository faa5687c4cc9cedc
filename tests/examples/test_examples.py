"""Each example starts on a free port, answers one real request, and stops."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LAUNCH = Path(__file__).with_name("launch.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"example exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError("example did not start listening")


@contextlib.contextmanager
def running(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})})
    try:
        wait_port(port, proc)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def example(name: str, env: dict[str, str] | None = None) -> Iterator[int]:
    port = free_port()
    with running([sys.executable, str(LAUNCH), str(EXAMPLES / name), str(port)], port, env):
        yield port


def get(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def test_hello() -> None:
    with example("hello.py") as port:
        status, body, resp = get(port, "/")
        assert status == 200
        assert json.loads(body) == {"hello": "world"}
        assert resp.getheader("Content-Type") == "application/json; charset=utf-8"


def test_controllers() -> None:
    with example("controllers.py") as port:
        status, body, _ = get(port, "/greet/ada?times=2")
        assert (status, body) == (200, b"Hi ada! Hi ada!")
        status, body, _ = get(port, "/search")
        assert status == 400
        status, body, _ = get(port, "/files/notes.txt")  # RegGroup(n) counts from 0
        assert (status, body) == (200, b"you asked for notes")


def test_upload(tmp_path: Path) -> None:
    with example("upload.py", {"UPLOAD_DIR": str(tmp_path)}) as port:
        status, body, _ = get(port, "/public/upload.html")
        assert status == 200 and b"<form" in body
        boundary = "exampleboundary"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\nhello upload\r\n--{boundary}--\r\n"
        ).encode()
        status, body, _ = get(
            port,
            "/upload",
            "POST",
            payload,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert status == 200, body
        assert json.loads(body)["size"] == len(b"hello upload")
        assert (tmp_path / "a.txt").read_bytes() == b"hello upload"


def test_websocket_chat() -> None:
    websocket = pytest.importorskip("websocket")
    with example("websocket_chat.py") as port:
        a = websocket.create_connection(f"ws://127.0.0.1:{port}/chat/room1", timeout=10)
        b = websocket.create_connection(f"ws://127.0.0.1:{port}/chat/room1", timeout=10)
        try:
            time.sleep(0.2)
            a.send("hi all")
            assert b.recv() == "hi all"
            assert a.recv() == "hi all"
        finally:
            a.close()
            b.close()
        status, body, _ = get(port, "/public/chat.html")
        assert status == 200 and b"WebSocket" in body


def test_sessions_redis() -> None:
    from tests.redis_server import redis_server

    with redis_server() as redis:
        port = free_port()
        args = [sys.executable, str(EXAMPLES / "sessions_redis.py"), str(port)]
        with running(args, port, {"REDIS_URL": redis.url}):
            status, body, resp = get(port, "/login?user=alice")
            assert status == 200, body
            cookie = resp.getheader("Set-Cookie")
            assert cookie and "PY_SIM_HTTP_SER_SESSION_ID=" in cookie
            status, body, _ = get(port, "/me", headers={"Cookie": cookie.split(";")[0]})
            assert status == 200 and json.loads(body)["user"] == "alice"


def test_wsgi_app_under_gunicorn() -> None:
    from tests.integration.apps.harness import gunicorn

    port = free_port()
    args = gunicorn("-w", "1", "-b", f"127.0.0.1:{port}", "examples.wsgi_app:application")
    with running(args, port):
        status, body, _ = get(port, "/hello_wsgi?name=you")
        assert (status, body) == (200, b"Hello, you!")


def test_asgi_app_under_uvicorn() -> None:
    from tests.integration.apps.harness import tool

    port = free_port()
    args = [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), "examples.asgi_app:app"]
    with running(args, port):
        status, body, _ = get(port, "/hello_asgi?name=you")
        assert status == 200 and json.loads(body) == {"hello": "you"}
