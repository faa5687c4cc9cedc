"""Acceptance: a 200 MB upload, a 200 MB download and a 96 MB websocket file barely move
the server's peak RSS.

The server runs as a subprocess (``memory_server.py``) so its ``VmHWM`` (peak
resident set) in ``/proc/<pid>/status`` measures the server alone.  Both
bodies are streamed on the client side too: nothing here holds 200 MB.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc"),
]

SIZE = 200 * 1024 * 1024
BLOCK = 1024 * 1024
LIMIT = 30 * 1024 * 1024
BOUNDARY = "memBoundary42"
SCRIPT = Path(__file__).with_name("memory_server.py")


class ServerProcess:
    def __init__(self, transport: str, static_dir: Path) -> None:
        env = dict(os.environ, TMPDIR=str(static_dir))
        port_file = static_dir / "port"
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), transport, str(static_dir), str(port_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.proc.poll() is None, "the server process exited"
            assert time.monotonic() < deadline, "the server process did not start"
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def peak_rss(self) -> int:
        """VmHWM of the server process, in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def server_process(transport: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(transport, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def _upload(proc: ServerProcess, size: int) -> tuple[dict[str, object], str]:
    """Stream a multipart upload of ``size`` bytes; returns (reply, expected sha256)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="doc"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    block = bytes(range(256)) * (BLOCK // 256)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield head
        sent = 0
        while sent < size:
            piece = block[: min(BLOCK, size - sent)]
            digest.update(piece)
            sent += len(piece)
            yield piece
        yield tail

    conn = proc.connection()
    conn.request(
        "POST",
        "/upload",
        body=body(),
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(head) + size + len(tail)),
        },
    )
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:500]
    reply = json.loads(resp.read())
    conn.close()
    return reply, digest.hexdigest()


def _download(proc: ServerProcess, name: str) -> int:
    conn = proc.connection()
    conn.request("GET", f"/files/{name}")
    resp = conn.getresponse()
    assert resp.status == 200
    received = 0
    while block := resp.read(BLOCK):
        received += len(block)
    conn.close()
    return received


def test_200mb_upload_keeps_peak_rss_low(server_process: ServerProcess):
    _upload(server_process, 2 * BLOCK)  # warm up: imports, threads, buffers
    before = server_process.peak_rss()
    reply, expected = _upload(server_process, SIZE)
    grown = server_process.peak_rss() - before
    assert reply == {"size": SIZE, "sha256": expected, "filename": "big.bin"}
    assert grown < LIMIT, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_200mb_download_keeps_peak_rss_low(server_process: ServerProcess, tmp_path: Path):
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(SIZE)  # sparse: no 200 MB of disk writes
    (tmp_path / "small.bin").write_bytes(b"s" * (2 * BLOCK))
    assert _download(server_process, "small.bin") == 2 * BLOCK  # warm up
    before = server_process.peak_rss()
    assert _download(server_process, "big.bin") == SIZE
    grown = server_process.peak_rss() - before
    assert grown < LIMIT, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_websocket_send_file_from_a_coroutine_streams(
    server_process: ServerProcess, tmp_path: Path
):
    size = 96 * BLOCK
    with (tmp_path / "big.bin").open("wb") as out:
        out.truncate(size)
    (tmp_path / "small.bin").write_bytes(b"s" * (2 * BLOCK))
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server_process.port}/ws/file", timeout=60, enable_multithread=False
    )
    try:

        def receive_file(name: str) -> int:
            ws.send(name)
            received, fin = 0, False
            while not fin:
                frame = ws.recv_frame()  # frame by frame: the test holds no whole file
                received += len(frame.data)
                fin = bool(frame.fin)
                time.sleep(0.002)  # a slowish reader, so the server's buffer fills
            assert ws.recv() == "sent"
            return received

        assert receive_file("small.bin") == 2 * BLOCK  # warm up
        before = server_process.peak_rss()
        assert receive_file("big.bin") == size
        grown = server_process.peak_rss() - before
    finally:
        ws.close()
    assert grown < LIMIT, f"peak RSS grew by {grown / 2**20:.1f} MiB"
