"""Websocket echo load generator: N clients, each one message in flight, for D seconds.

Stdlib only and as cheap per message as possible so the server, not the client,
is the bottleneck: every client sends one pre-masked text frame and waits for
the exact unmasked echo frame (compared byte for byte) before sending the next.
Prints one JSON object: messages, seconds, msgs_per_s, p50_ms, p99_ms, errors.

    python ws_echo.py --port 8080 --clients 50 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
from typing import Any

CLOSE_NORMAL = struct.pack("!H", 1000)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, masked) for a payload shorter than 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class EchoClient(asyncio.Protocol):
    """One websocket client: handshake, then send/await-echo until the deadline."""

    def __init__(self, path: str, payload: bytes, deadline: float, latencies: list[float]):
        self.path = path
        self.frame = masked_frame(0x1, payload)
        self.expected = bytes([0x81, len(payload)]) + payload
        self.deadline = deadline
        self.latencies = latencies
        self.buffer = bytearray()
        self.transport: Any = None
        self.handshaken = False
        self.sent_at = 0.0
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 101 " not in status_line + b" ":
                self._finish(f"handshake refused: {status_line!r}")
                return
            del buffer[: end + 4]
            self.handshaken = True
            self._send()
            return
        size = len(self.expected)
        while len(buffer) >= size and not self.done.done():
            if buffer[:size] != self.expected:
                self._finish(f"unexpected frame {bytes(buffer[:16])!r}")
                return
            del buffer[:size]
            now = time.perf_counter()
            self.latencies.append(now - self.sent_at)
            if now >= self.deadline:
                self.transport.write(masked_frame(0x8, CLOSE_NORMAL))
                self._finish("")
                return
            self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)

    def _finish(self, error: str) -> None:
        if not self.done.done():
            self.done.set_result(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(f"connection lost: {exc}" if exc else "connection closed by server")


async def run(port: int, clients: int, duration: float, size: int, path: str) -> dict[str, Any]:
    """Drive ``clients`` echo clients for ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    payload = (b"x" * size)[:125]
    latencies: list[float] = []
    deadline = time.perf_counter() + 3600.0
    protos: list[EchoClient] = []
    for _ in range(clients):
        _transport, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: EchoClient(path, payload, deadline, latencies), "127.0.0.1", port
            ),
            10,
        )
        protos.append(proto)
    started = time.perf_counter()
    for proto in protos:
        proto.deadline = started + duration
    done, _pending = await asyncio.wait([p.done for p in protos], timeout=duration + 10)
    elapsed = time.perf_counter() - started
    errors = [f.result() for f in done if f.result()] + ["timeout"] * (len(protos) - len(done))
    for proto in protos:
        proto.transport.close()
    latencies.sort()

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000.0

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(0.50) if latencies else None,
        "p99_ms": percentile(0.99) if latencies else None,
        "errors": len(errors),
        "error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=32, help="message bytes (< 126)")
    parser.add_argument("--path", default="/ws")
    ns = parser.parse_args()
    try:
        result = asyncio.run(run(ns.port, ns.clients, ns.duration, ns.size, ns.path))
    except (OSError, asyncio.TimeoutError) as exc:
        result = {"requests": 0, "rps": 0.0, "errors": 1, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
