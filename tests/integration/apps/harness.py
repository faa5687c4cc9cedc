"""Subprocess servers for integration tests: free ports, readiness, always killed."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(port: int, timeout: float = 10.0, proc: Any = None) -> None:
    """Wait until something accepts on 127.0.0.1:port (``proc``, a ``Popen``: fail at
    once when it exits first)."""
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited early with {proc.returncode}")
        assert time.monotonic() < deadline, f"the server did not start on port {port}"
        time.sleep(0.05)


@dataclass
class Proc:
    """A running server process and its port."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Any

    def output(self) -> str:
        """What the process printed so far."""
        self.log.flush()
        self.log.seek(0)
        return str(self.log.read().decode(errors="replace"))

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """``GET path`` on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def post_chunked(self, path: str, parts: Iterator[bytes]) -> tuple[int, Any]:
        """``POST path`` with a chunked octet-stream body: (status, decoded JSON answer)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=parts, encode_chunked=True,
                         headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def read_until(self, request: bytes, marker: bytes) -> bytes:
        """Send raw ``request``; what was received once ``marker`` arrived."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            received = b""
            while marker not in received:
                data = sock.recv(4096)
                assert data, received
                received += data
        return received


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this checkout's ``src`` first on its path
    (not whichever copy of the package the interpreter has installed)."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT, os.path.join(ROOT, "src"), environ.get("PYTHONPATH", "")]
    )
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(env or {})
    return environ


@contextlib.contextmanager
def running(
    args: Sequence[str],
    port: int,
    cwd: str = ROOT,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
) -> Iterator[Proc]:
    """Start ``args``, wait until ``port`` accepts, yield; always killed afterwards."""
    environ = child_environment(env)
    log = tempfile.TemporaryFile()
    popen = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc = Proc(popen, port, log)
    try:
        try:
            wait_listening(port, ready_timeout, popen)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{proc.output()}") from None
        yield proc
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            popen.wait(timeout=10)
        log.close()


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def tool(name: str) -> list[str]:
    """A console script installed next to this interpreter (gunicorn, uvicorn)."""
    return [os.path.join(BIN, name)]


_GUNICORN_EXTRA: list[str] | None = None


def gunicorn(*args: str) -> list[str]:
    """A gunicorn command line; without its shared control socket where it has one."""
    global _GUNICORN_EXTRA
    if _GUNICORN_EXTRA is None:
        help_text = subprocess.run(
            [*tool("gunicorn"), "--help"], capture_output=True, text=True, timeout=30
        ).stdout
        _GUNICORN_EXTRA = ["--no-control-socket"] if "--no-control-socket" in help_text else []
    return [*tool("gunicorn"), *_GUNICORN_EXTRA, *args]
