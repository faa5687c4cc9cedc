"""A strict HTTP/1.1 response parser and raw-socket helpers for hostile-input tests.

The parser accepts only what a correct server may send (a status line, token
header names, values without CR/LF/NUL, exact framing); anything else raises
:class:`MalformedResponse`.  It has no socket code, so the fuzzer (a unit test)
uses it too.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

__all__ = [
    "MalformedResponse",
    "ParsedResponse",
    "parse_responses",
    "read_until_closed",
    "send_and_collect",
]

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)\r\n")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)\r\n")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)\r\n")


class MalformedResponse(AssertionError):
    """The bytes are not a well-formed sequence of HTTP/1.1 responses."""


@dataclass
class ParsedResponse:
    """One response read off the wire."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> bytes | None:
        """The first value of header ``name`` (case-insensitive)."""
        lower = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def closes(self) -> bool:
        """The response announces ``Connection: close``."""
        return (self.header("connection") or b"").lower() == b"close"


def _parse_one(data: bytes, pos: int, head_request: bool) -> tuple[ParsedResponse, int]:
    match = _STATUS_LINE.match(data, pos)
    if match is None:
        raise MalformedResponse(f"bad status line at {pos}: {data[pos : pos + 80]!r}")
    response = ParsedResponse(int(match.group(1)), match.group(2))
    pos = match.end()
    while not data.startswith(b"\r\n", pos):
        line = _HEADER_LINE.match(data, pos)
        if line is None:
            raise MalformedResponse(f"bad header line: {data[pos : pos + 80]!r}")
        response.headers.append((line.group(1), line.group(2).rstrip(b" \t")))
        pos = line.end()
    pos += 2
    if response.status < 200 or response.status in (204, 304) or head_request:
        return response, pos
    te = (response.header("transfer-encoding") or b"").lower()
    length = response.header("content-length")
    if te and length is not None:
        raise MalformedResponse("both Transfer-Encoding and Content-Length")
    if te == b"chunked":
        body = bytearray()
        while True:
            chunk = _CHUNK_LINE.match(data, pos)
            if chunk is None:
                raise MalformedResponse(f"bad chunk header: {data[pos : pos + 40]!r}")
            size = int(chunk.group(1), 16)
            pos = chunk.end()
            if size == 0:
                if not data.startswith(b"\r\n", pos):
                    raise MalformedResponse("bad chunked body end")
                response.body = bytes(body)
                return response, pos + 2
            if len(data) < pos + size + 2 or data[pos + size : pos + size + 2] != b"\r\n":
                raise MalformedResponse("truncated chunk")
            body += data[pos : pos + size]
            pos += size + 2
    if te:
        raise MalformedResponse(f"unexpected Transfer-Encoding {te!r}")
    if length is not None:
        if not length.isdigit():
            raise MalformedResponse(f"bad Content-Length {length!r}")
        end = pos + int(length)
        if len(data) < end:
            raise MalformedResponse("truncated body")
        response.body = data[pos:end]
        return response, end
    response.body = data[pos:]  # close-delimited
    return response, len(data)


def parse_responses(data: bytes, head_requests: list[bool] | None = None) -> list[ParsedResponse]:
    """Every response in ``data``; ``head_requests[i]`` says response i answers a HEAD.

    Interim ``1xx`` responses are returned too and do not consume a slot of
    ``head_requests``.
    """
    responses: list[ParsedResponse] = []
    flags = list(head_requests or [])
    pos = 0
    while pos < len(data):
        head = bool(flags[0]) if flags else False
        response, pos = _parse_one(data, pos, head)
        responses.append(response)
        if response.status >= 200 and flags:
            flags.pop(0)
    return responses


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it does not close in time."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"server did not close within {timeout}s; got {bytes(data)!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def send_and_collect(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything
        return read_until_closed(sock, timeout)
