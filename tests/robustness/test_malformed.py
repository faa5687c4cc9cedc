"""Malformed and smuggling requests on real sockets, in both transports.

Every payload is followed by a request to ``/canary``: each must be answered
with exactly one error response and a closed connection, and the canary must
never be reached (one payload, never two requests).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from simple_http_server import App

from ..conftest import LiveServer
from .conftest import Hostile
from .wire import parse_responses, read_until_closed, send_and_collect

CANARY = b"GET /canary HTTP/1.1\r\nHost: t\r\n\r\n"


def post(headers: bytes, body: bytes = b"", path: bytes = b"/echo") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + body


def get_closing(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


# (payload, expected status)
MALFORMED: dict[str, tuple[bytes, int]] = {
    "bad method token": (b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "missing version": (b"GET /\r\nHost: t\r\n\r\n", 400),
    "http/0.9 style": (b"GET /\r\n\r\n", 400),
    "space in target": (b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "control byte in target": (b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", 400),
    "NUL in header name": (b"GET / HTTP/1.1\r\nHost: t\r\nX\x00A: b\r\n\r\n", 400),
    "non-ASCII in header name": (b"GET / HTTP/1.1\r\nHost: t\r\nX\xe9A: b\r\n\r\n", 400),
    "NUL in header value": (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
    "fold before first header": (b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400),
    "missing Host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "binary garbage": (bytes(range(256)) + b"\r\n\r\n", 400),
    "TLS hello on plain port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32, 400),
    "HTTP/2.0 request line": (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "HTTP/9.9 request line": (b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 505),
}

# Smuggling vectors: each would hide "GET /canary" in what a lax parser reads
# as a body, or expose it as a second request.
SMUGGLING: dict[str, tuple[bytes, int]] = {
    "CL.TE": (
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "TE.CL": (
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", b"0\r\n\r\n"),
        400,
    ),
    "TE obs-folded with CL": (
        post(b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "two different Content-Lengths": (
        post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
        400,
    ),
    "Content-Length list": (post(b"Content-Length: 5, 6\r\n", b"hello!"), 400),
    "negative Content-Length": (post(b"Content-Length: -1\r\n"), 400),
    "signed Content-Length": (post(b"Content-Length: +5\r\n", b"hello"), 400),
    "hex Content-Length": (post(b"Content-Length: 0x5\r\n", b"hello"), 400),
    "space inside Transfer-Encoding name": (
        post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "chunked in HTTP/1.0": (
        b"POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "unknown transfer coding": (post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501),
    "chunked twice": (post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 501),
    "non-hex chunk size": (
        post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "negative chunk size": (
        post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "overflowing chunk size": (
        post(b"Transfer-Encoding: chunked\r\n", b"f" * 40 + b"\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "chunk longer than its size": (
        post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "chunk-extension of 1 MiB": (
        post(
            b"Transfer-Encoding: chunked\r\n", b"5;" + b"e" * (1 << 20) + b"\r\nhello\r\n0\r\n\r\n"
        ),
        400,
    ),
    "invalid trailer": (
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n"),
        400,
    ),
    "bare-LF chunk framing": (post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n"), 400),
}


def assert_single_error(hostile: Hostile, payload: bytes, status: int) -> None:
    before = hostile.canary
    data = send_and_collect(hostile.port, payload + CANARY)
    responses = parse_responses(data)
    assert [r.status for r in responses] == [status], data
    assert responses[0].closes, "an error answer must announce Connection: close"
    assert b"Traceback" not in data
    assert hostile.canary == before, "a smuggled request was served"


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_head_gets_one_error_and_close(hostile: Hostile, name: str) -> None:
    payload, status = MALFORMED[name]
    assert_single_error(hostile, payload, status)


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_vector_gets_one_error_and_close(hostile: Hostile, name: str) -> None:
    payload, status = SMUGGLING[name]
    assert_single_error(hostile, payload, status)


# Empty lines before a request line were in MALFORMED (a 400, h11's "no request line
# received"); RFC 9112 2.2 says a server SHOULD ignore at least one, and some clients
# send a CRLF after a POST body: they are skipped now, within the head size limit.
def test_empty_lines_before_a_request_line_are_ignored(hostile: Hostile) -> None:
    before = hostile.canary
    closing_canary = CANARY.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    first = b"\r\n\r\n\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
    data = send_and_collect(hostile.port, first + b"\r\n" + closing_canary)
    responses = parse_responses(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"canary")], data
    assert hostile.canary == before + 1


def test_server_keeps_serving_after_every_vector(hostile: Hostile) -> None:
    before = hostile.canary
    data = send_and_collect(
        hostile.port, CANARY.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert parse_responses(data)[0].body == b"canary"
    assert hostile.canary == before + 1


def test_a_later_http_1_minor_version_is_served_as_http_1_1(hostile: Hostile) -> None:
    """RFC 9110 2.5: a higher minor version of a major one spoken is processed as the
    highest minor spoken (HTTP/1.2 as HTTP/1.1: kept alive, chunked allowed), as
    0.22.x did; it was answered 505 and closed."""
    before = hostile.canary
    payload = (
        b"GET /canary HTTP/1.2\r\nHost: t\r\n\r\n"
        + post(b"Transfer-Encoding: chunked\r\n", b"2\r\nhi\r\n0\r\n\r\n").replace(
            b"HTTP/1.1", b"HTTP/1.9"
        )
        + get_closing(b"/canary").replace(b"HTTP/1.1", b"HTTP/1.2")
    )
    responses = parse_responses(send_and_collect(hostile.port, payload))
    assert [(r.status, r.body) for r in responses] == [
        (200, b"canary"),
        (200, b"hi"),
        (200, b"canary"),
    ]
    assert [r.closes for r in responses] == [False, False, True]
    assert hostile.canary == before + 2


# -- decided by h11's (RFC-permitted) behaviour -----------------------------------
def test_bare_lf_head_is_one_request(hostile: Hostile) -> None:
    """RFC 9112 2.2 lets a server accept bare LF as a line end in the head; h11 does.

    The request is served once; a bare LF inside a header block never starts a
    second request.
    """
    before = hostile.canary
    payload = b"GET /canary HTTP/1.1\nHost: t\nX-A: GET /canary HTTP/1.1\nConnection: close\n\n"
    responses = parse_responses(send_and_collect(hostile.port, payload))
    assert [r.status for r in responses] == [200]
    assert hostile.canary == before + 1


def test_obs_fold_is_unfolded_to_one_space(hostile: Hostile) -> None:
    """RFC 9112 5.2: a server rejects obs-fold or replaces it with SP; h11 replaces."""
    payload = b"GET /header HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n  b\r\nConnection: close\r\n\r\n"
    responses = parse_responses(send_and_collect(hostile.port, payload))
    assert [(r.status, r.body) for r in responses] == [(200, b"a b")]


def test_smuggled_text_in_a_body_is_only_a_body(hostile: Hostile) -> None:
    before = hostile.canary
    inner = CANARY * 3
    payload = post(b"Content-Length: %d\r\n" % len(inner), inner) + post(
        b"Content-Length: 2\r\nConnection: close\r\n", b"ok"
    )
    responses = parse_responses(send_and_collect(hostile.port, payload))
    assert [(r.status, r.body) for r in responses] == [(200, inner), (200, b"ok")]
    assert hostile.canary == before


def test_pipelined_burst_is_answered_in_order(hostile: Hostile) -> None:
    before = hostile.canary
    requests = []
    heads = []
    for i in range(30):
        if i % 3 == 0:
            body = b"body-%d" % i
            requests.append(post(b"Content-Length: %d\r\n" % len(body), body))
            heads.append(False)
        elif i % 3 == 1:
            requests.append(b"HEAD /canary HTTP/1.1\r\nHost: t\r\n\r\n")
            heads.append(True)
        else:
            requests.append(CANARY)
            heads.append(False)
    requests.append(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    heads.append(False)
    responses = parse_responses(send_and_collect(hostile.port, b"".join(requests)), heads)
    assert len(responses) == 31
    assert all(r.status == 200 for r in responses)
    assert [r.body for r in responses[0:9:3]] == [b"body-0", b"body-3", b"body-6"]
    assert responses[1].body == b"" and responses[1].header("content-length") == b"6"
    assert hostile.canary == before + 20  # 10 GET + 10 HEAD, nothing more


# -- sizes --------------------------------------------------------------------------
def test_oversized_head_gets_431(hostile: Hostile) -> None:
    payload = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert_single_error(hostile, payload, 431)


def test_request_line_over_the_head_limit_gets_414(hostile: Hostile) -> None:
    """RFC 9112 3: a target too long to parse is a 414, even as it arrives in pieces."""
    target = b"/" + b"a" * 100_000
    assert_single_error(hostile, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414)
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as sock:
        sock.sendall(b"GET " + target)  # no line end yet: h11 waits, then gives up
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), data[:200]


def test_many_headers_over_the_head_limit_get_431(hostile: Hostile) -> None:
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
    assert_single_error(hostile, b"GET / HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n", 431)


def test_declared_body_over_limit_gets_413_before_the_body_is_sent(hostile: Hostile) -> None:
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as sock:
        sock.sendall(post(b"Content-Length: 1000000000\r\nContent-Type: text/plain\r\n"))
        data = read_until_closed(sock)  # no body byte was sent, yet the answer comes
    responses = parse_responses(data)
    assert [r.status for r in responses] == [413]
    assert responses[0].closes
    # RFC 9110's reason phrase on every Python (before 3.13: "Request Entity Too Large",
    # while the body said "Content Too Large").
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n")


def test_chunked_body_over_limit_gets_413(hostile: Hostile) -> None:
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    body = chunk * 4 + b"0\r\n\r\n"  # 128 KiB > 64 KiB limit
    data = send_and_collect(hostile.port, post(b"Transfer-Encoding: chunked\r\n", body) + CANARY)
    assert [r.status for r in parse_responses(data)] == [413]


# -- hostile content in answers --------------------------------------------------------
def test_double_slash_path_is_answered(hostile: Hostile) -> None:
    started = time.monotonic()
    data = send_and_collect(hostile.port, get_closing(b"//x"))
    assert [r.status for r in parse_responses(data)] == [404]
    assert time.monotonic() - started < 5


def test_controller_exception_leaks_no_detail(hostile: Hostile) -> None:
    data = send_and_collect(hostile.port, get_closing(b"/boom"))
    responses = parse_responses(data)
    assert [r.status for r in responses] == [500]
    for secret in (b"Traceback", b"secret-detail", b"/etc/passwd", b"RuntimeError", b".py"):
        assert secret not in data


@pytest.mark.parametrize(
    "path", ["/error-crlf", "/redirect-crlf", "/header-crlf", "/error-unicode"]
)
def test_response_splitting_is_neutralized(hostile: Hostile, path: str) -> None:
    data = send_and_collect(hostile.port, get_closing(path.encode()))
    responses = parse_responses(data)  # strict: a split response would not parse
    assert len(responses) == 1
    names = [name.lower() for name, _ in responses[0].headers]
    assert b"set-cookie" not in names
    assert b"\r\n\r\nHTTP/1.1 200" not in data
    assert responses[0].status in (200, 302, 400)


# -- static files ----------------------------------------------------------------------
TRAVERSALS = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E%2Fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/....//secret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/..\\secret.txt",
    "/static/%00/../secret.txt",
    "/static//../../secret.txt",
]


def test_static_path_traversal_never_escapes_the_folder(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.txt").write_text("public")
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    live = serve(App(), resources={"/static/**": str(public)})
    for target in TRAVERSALS:
        data = send_and_collect(live.port, get_closing(target.encode()))
        responses = parse_responses(data)
        assert len(responses) == 1 and responses[0].status in (400, 404), (target, data)
        assert b"TOP-SECRET" not in data, target
    data = send_and_collect(live.port, get_closing(b"/static/index.txt"))
    assert parse_responses(data)[0].body == b"public"


# -- refusals of a HEAD: the head alone (RFC 9110 9.3.2) ------------------------------
def head(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"HEAD / HTTP/" + version + b"\r\nHost: t\r\n" + headers + b"\r\n" + body


HEAD_REFUSED: dict[str, tuple[bytes, int]] = {
    "malformed Content-Length": (head(b"Content-Length: abc\r\n"), 400),
    "no Host": (b"HEAD / HTTP/1.1\r\n\r\n", 400),
    "malformed header line": (head(b"Bad Header: x\r\n"), 400),
    "unknown transfer-coding": (head(b"Transfer-Encoding: gzip\r\n"), 501),
    "both framings": (head(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), 400),
    "invalid Host": (b"HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "bad chunk": (head(b"Transfer-Encoding: chunked\r\n", b"zz\r\n"), 400),
    "body over the limit": (head(b"Content-Length: 1000000000\r\n"), 413),
    "head over the limit": (head(b"X-Big: " + b"a" * 100_000 + b"\r\n"), 431),
    "request line over the limit": (
        b"HEAD /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        414,
    ),
    "HTTP/2.0": (head(b"", version=b"2.0"), 505),
}


def assert_head_only(data: bytes, status: int) -> None:
    """One answer of ``status``, its head and nothing after it: what a client that
    sent HEAD reads as the answer (a body would be taken for the next one)."""
    responses = parse_responses(data, [True])
    assert [r.status for r in responses] == [status], data
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1, data
    assert responses[0].closes


@pytest.mark.parametrize("name", list(HEAD_REFUSED))
def test_a_refused_head_request_gets_no_body(hostile: Hostile, name: str) -> None:
    payload, status = HEAD_REFUSED[name]
    assert_head_only(send_and_collect(hostile.port, payload), status)


def test_a_head_request_timed_out_in_its_head_gets_a_408_without_body(serve) -> None:
    live = serve(App(), head_timeout=0.3)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        assert_head_only(read_until_closed(sock), 408)
