"""Upload / download load generator: one large body through ``http.client``.

``upload`` streams a multipart/form-data body with one file part named ``file``
of ``--size-mb`` MiB to ``POST /upload`` (the server answers ``{"size": N}``);
``download`` reads ``GET /files/<name>`` to the end into a reused buffer.
Prints one JSON object: bytes, seconds, mb_per_s, error.

    python transfer.py upload --port 8080 --size-mb 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

MIB = 1024 * 1024
BLOCK = bytes(range(256)) * (MIB // 256)  # no CR LF pair, no "--": never a boundary
BOUNDARY = "benchmark-boundary-7d1f0c2a"


def multipart_body(size: int) -> tuple[int, Iterator[bytes]]:
    """Length and chunks of a multipart body with one ``size``-byte file part."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        left = size
        while left > 0:
            piece = BLOCK if left >= MIB else BLOCK[:left]
            left -= len(piece)
            yield piece
        yield tail

    return len(head) + size + len(tail), chunks()


def upload(port: int, size: int, timeout: float) -> dict[str, Any]:
    """POST the body; check the server saw every byte."""
    length, body = multipart_body(size)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    early = ""
    try:
        conn.request(
            "POST",
            "/upload",
            body=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(length),
            },
        )
    except (BrokenPipeError, ConnectionResetError) as exc:
        early = f"server closed the connection before the whole body was sent ({exc}); "
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    error = ""
    if early:
        error = f"{early}status {response.status}: {payload[:120]!r}"
    elif response.status != 200:
        error = f"status {response.status}: {payload[:200]!r}"
    elif json.loads(payload).get("size") != size:
        error = f"server saw {payload[:200]!r}, sent {size} bytes"
    return {"bytes": size, "seconds": elapsed, "error": error}


def download(port: int, path: str, size: int, timeout: float) -> dict[str, Any]:
    """GET the file and read it to the end."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    buffer = memoryview(bytearray(MIB))
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    received = 0
    while True:
        count = response.readinto(buffer)
        if not count:
            break
        received += count
    elapsed = time.perf_counter() - started
    conn.close()
    error = ""
    if response.status != 200:
        error = f"status {response.status}"
    elif received != size:
        error = f"received {received} of {size} bytes"
    return {"bytes": received, "seconds": elapsed, "error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("upload", "download"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size-mb", type=float, default=200.0)
    parser.add_argument("--path", default="/files/big.bin")
    parser.add_argument("--timeout", type=float, default=120.0)
    ns = parser.parse_args()
    size = int(ns.size_mb * MIB)
    try:
        if ns.mode == "upload":
            result = upload(ns.port, size, ns.timeout)
        else:
            result = download(ns.port, ns.path, size, ns.timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        result = {"bytes": 0, "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}"}
    seconds = result["seconds"]
    result["mb_per_s"] = result["bytes"] / MIB / seconds if seconds and not result["error"] else 0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
