"""The Sans-IO HTTP/1.1 wrapper: bytes in, events out; responses out as bytes."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from simple_http_server.protocol import http11
from simple_http_server.protocol.http11 import (
    BodyChunk,
    ConnectionLost,
    EndOfRequest,
    HttpConnection,
    ProtocolFailure,
    RequestHead,
)


def events(conn: HttpConnection) -> list[Any]:
    """Every event available now, up to NEED_DATA/PAUSED (not included)."""
    out: list[Any] = []
    while True:
        event = conn.next_event()
        if event is http11.NEED_DATA or event is http11.PAUSED:
            return out
        out.append(event)
        if isinstance(event, (ConnectionLost, ProtocolFailure)):
            return out


def parse_response(data: bytes, method: str = "GET") -> list[Any]:
    """Parse server output with an h11 client; returns the h11 events."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    out: list[Any] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return out
        out.append(event)
        if isinstance(event, h11.EndOfMessage):
            return out


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def test_request_head_and_end() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET /path?q=1 HTTP/1.1\r\nHost: example\r\nX-A: b\r\n\r\n")
    head, end = events(conn)
    assert isinstance(head, RequestHead)
    assert head.method == "GET"
    assert head.target == b"/path?q=1"
    assert head.http_version == b"1.1"
    assert (b"X-A", b"b") in head.headers
    assert not head.expects_continue
    assert isinstance(end, EndOfRequest)
    assert conn.request_complete


def test_partial_head_needs_data_and_is_buffered() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert conn.next_event() is http11.NEED_DATA
    assert conn.has_buffered_data
    assert conn.buffered_size == len(b"GET / HTTP/1.1\r\nHo")
    conn.receive_data(b"st: x\r\n\r\n")
    assert isinstance(conn.next_event(), RequestHead)


def test_keep_alive_two_cycles() -> None:
    conn = HttpConnection()
    for _ in range(2):
        conn.receive_data(GET)
        assert [type(e) for e in events(conn)] == [RequestHead, EndOfRequest]
        out = conn.send_response(200, [(b"Content-Type", b"text/plain")], b"hi")
        (resp, data, _end) = parse_response(out)
        assert resp.status_code == 200
        assert header(resp.headers.raw_items(), b"connection") is None
        assert data.data == b"hi"
        assert conn.start_next_cycle()


def test_http10_closes_after_response() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    events(conn)
    out = conn.send_response(200, [], b"x")
    assert b"connection: close" in out.lower()
    assert not conn.start_next_cycle()


def test_client_connection_close_is_honoured() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    events(conn)
    conn.send_response(200, [], b"x")
    assert not conn.start_next_cycle()


def test_pipelined_requests_come_out_in_order() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    seen: list[bytes] = []
    bodies: list[bytes] = []
    for index in range(3):
        got = events(conn)
        assert isinstance(got[0], RequestHead)
        seen.append(got[0].target)
        bodies.append(b"".join(e.data for e in got if isinstance(e, BodyChunk)))
        assert isinstance(got[-1], EndOfRequest)
        # The next request is not parsed before the response is complete.
        assert conn.next_event() is (http11.PAUSED if index < 2 else http11.NEED_DATA)
        conn.send_response(200, [], got[0].target)
        assert conn.start_next_cycle()
    assert seen == [b"/first", b"/second", b"/third"]
    assert bodies == [b"", b"abc", b""]
    assert conn.next_event() is http11.NEED_DATA


def test_expect_100_continue() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    head = conn.next_event()
    assert isinstance(head, RequestHead) and head.expects_continue
    assert conn.waiting_for_continue
    assert conn.next_event() is http11.NEED_DATA
    out = conn.send_continue()
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert conn.send_continue() == b""  # only once
    conn.receive_data(b"hello")
    got = events(conn)
    assert [type(e) for e in got] == [BodyChunk, EndOfRequest]
    assert got[0].data == b"hello"


def test_no_continue_once_the_response_started() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    conn.next_event()
    out = conn.send_head(413, [(b"Content-Length", b"0")])
    assert not conn.waiting_for_continue
    assert conn.send_continue() == b""
    # The client may or may not send the body now: the connection closes.
    assert b"connection: close" in out.lower()
    assert conn.closing


def test_head_response_has_no_body_but_keeps_length() -> None:
    conn = HttpConnection()
    conn.receive_data(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
    events(conn)
    out = conn.send_response(200, [(b"Content-Type", b"text/plain")], b"hello world")
    head_bytes, _, rest = out.partition(b"\r\n\r\n")
    assert rest == b""
    assert b"content-length: 11" in head_bytes.lower()
    assert conn.start_next_cycle()


def test_head_streamed_body_is_dropped() -> None:
    conn = HttpConnection()
    conn.receive_data(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
    events(conn)
    conn.send_head(200, [])
    assert conn.send_body(b"data") == b""
    assert conn.send_body_passthrough(b"data") == []
    conn.send_end()
    assert conn.start_next_cycle()


def test_chunked_request_body() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    got = events(conn)
    assert isinstance(got[0], RequestHead)
    assert not conn.request_complete
    conn.receive_data(b"6\r\n world\r\n0\r\n\r\n")
    got += events(conn)
    body = b"".join(e.data for e in got if isinstance(e, BodyChunk))
    assert body == b"hello world"
    assert isinstance(got[-1], EndOfRequest)


CHUNKED_HEAD = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunks_received_together_come_out_as_one_piece() -> None:
    """h11 gives one event per chunk: 1-byte chunks were one body piece per byte."""
    conn = HttpConnection()
    conn.receive_data(CHUNKED_HEAD + b"1\r\na\r\n" * 1000 + b"2\r\nbc\r\n0\r\n\r\n")
    got = events(conn)
    assert isinstance(got[0], RequestHead)
    assert got[1:] == [BodyChunk(b"a" * 1000 + b"bc"), EndOfRequest()]
    assert conn.request_complete


def test_chunks_are_gathered_up_to_a_bound_and_what_is_received() -> None:
    conn = HttpConnection()
    conn.receive_data(CHUNKED_HEAD + b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
    conn.receive_data(b"1\r\ny\r\n" * (80 * 1024) + b"1\r")  # a chunk split in two
    got = events(conn)
    sizes = [len(e.data) for e in got if isinstance(e, BodyChunk)]
    assert sum(sizes) == 0x4000 + 80 * 1024
    assert 2 <= len(sizes) <= 4 and max(sizes) <= 64 * 1024 + 0x4000
    assert not conn.request_complete
    conn.receive_data(b"\nz\r\n0\r\n\r\n")
    assert events(conn) == [BodyChunk(b"z"), EndOfRequest()]


def test_bad_input_after_gathered_chunks_comes_after_them() -> None:
    conn = HttpConnection()
    conn.receive_data(CHUNKED_HEAD + b"1\r\na\r\n" * 3 + b"zz\r\n")
    got = events(conn)
    assert got[1] == BodyChunk(b"aaa")
    assert isinstance(got[2], ProtocolFailure) and got[2].status == 400
    assert conn.closing


def test_chunked_response_body_for_http11() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    out = conn.send_head(200, [(b"Content-Type", b"text/plain")])
    out += conn.send_body(b"abc") + conn.send_body(b"") + conn.send_body(b"defg")
    out += conn.send_end()
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    got = parse_response(out)
    assert b"".join(e.data for e in got if isinstance(e, h11.Data)) == b"abcdefg"
    assert conn.start_next_cycle()


def test_passthrough_frames_the_opaque_piece() -> None:
    class Slice:
        def __len__(self) -> int:
            return 4

    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    conn.send_head(200, [])
    piece = Slice()
    pieces = conn.send_body_passthrough(piece)
    assert piece in pieces
    assert bytes(pieces[0]) == b"4\r\n"


def test_date_and_server_headers() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    (resp, *_rest) = parse_response(conn.send_response(204, [], b""))
    names = {k.lower() for k, _ in resp.headers.raw_items()}
    assert {b"date", b"server"} <= names


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
    ],
)
def test_malformed_request_gets_400_and_close(raw: bytes) -> None:
    conn = HttpConnection()
    conn.receive_data(raw)
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 400
    assert conn.closing
    out = conn.send_error(400)
    (resp, data, _end) = parse_response(out)
    assert resp.status_code == 400
    assert header(resp.headers.raw_items(), b"connection") == b"close"
    assert b'"code": 400' in data.data
    assert not conn.start_next_cycle()


def test_oversized_head_gets_431() -> None:
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2048)
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 431
    (resp, *_rest) = parse_response(conn.send_error(failure.status))
    assert resp.status_code == 431
    assert header(resp.headers.raw_items(), b"connection") == b"close"


def test_oversized_head_arriving_whole_gets_431() -> None:
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2048 + b"\r\n\r\n")
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 431
    assert conn.closing
    (resp, *_rest) = parse_response(conn.send_error(failure.status))
    assert resp.status_code == 431


def test_request_line_over_the_limit_gets_414_whole_or_in_pieces() -> None:
    """RFC 9112 3 / RFC 9110 15.5.15: a target too long to parse is a 414, not a 431."""
    for data in (b"GET /" + b"a" * 2048, b"GET /" + b"a" * 2048 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        conn = HttpConnection(max_head_size=1024)
        conn.receive_data(data)
        (failure,) = events(conn)
        assert isinstance(failure, ProtocolFailure) and failure.status == 414, data[-30:]
        assert conn.closing
        out = conn.send_error(failure.status)
        assert out.startswith(b"HTTP/1.1 414 URI Too Long\r\n")


def test_a_head_line_after_the_request_line_over_the_limit_is_still_431() -> None:
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(b"GET /" + b"a" * 900 + b" HTTP/1.1\r\nHost: x\r\nX-B: " + b"b" * 200)
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 431


def _chunked_post(trailers: bytes) -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"


def test_a_trailer_section_over_the_limit_received_whole_is_a_400() -> None:
    """h11 bounds only a trailer section that arrives in pieces."""
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(20))
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(_chunked_post(trailers))
    head, *rest = events(conn)
    assert isinstance(head, RequestHead)
    assert [type(e) for e in rest] == [BodyChunk, ProtocolFailure], rest
    assert rest[1].status == 400 and conn.closing


def test_a_trailer_section_within_the_limit_ends_the_body() -> None:
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(5))
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(_chunked_post(trailers))
    _head, *rest = events(conn)
    assert [type(e) for e in rest] == [BodyChunk, EndOfRequest], rest
    assert conn.request_complete and not conn.closing


def test_many_headers_over_the_limit_get_431() -> None:
    conn = HttpConnection(max_head_size=1024)
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 20) for i in range(60))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 431


def test_head_within_limit_is_accepted() -> None:
    conn = HttpConnection(max_head_size=1024)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 900 + b"\r\n\r\n")
    assert isinstance(conn.next_event(), RequestHead)


def test_malformed_chunked_body_is_a_failure() -> None:
    conn = HttpConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    got = events(conn)
    assert isinstance(got[0], RequestHead)
    assert isinstance(got[-1], ProtocolFailure) and got[-1].status == 400


def test_error_after_response_started_sends_nothing() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    conn.send_head(200, [])
    assert conn.send_error(500) == b""
    assert not conn.start_next_cycle()


def test_send_failed_closes() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    conn.send_head(200, [])
    conn.send_failed()
    conn.send_failed()  # idempotent
    assert not conn.start_next_cycle()


def test_keep_alive_max_requests_closes_the_last_one() -> None:
    conn = HttpConnection(max_requests=2)
    conn.receive_data(GET)
    events(conn)
    first = conn.send_response(200, [], b"1")
    assert b"connection: close" not in first.lower()
    assert conn.start_next_cycle()
    conn.receive_data(GET)
    events(conn)
    second = conn.send_response(200, [], b"2")
    assert b"connection: close" in second.lower()
    assert not conn.start_next_cycle()


def test_max_requests_one_means_no_keep_alive() -> None:
    conn = HttpConnection(max_requests=1)
    conn.receive_data(GET)
    events(conn)
    assert b"connection: close" in conn.send_response(200, [], b"").lower()
    assert not conn.start_next_cycle()


def test_close_after_response() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    conn.close_after_response()
    assert b"connection: close" in conn.send_response(200, [], b"").lower()
    assert not conn.start_next_cycle()


def test_next_cycle_refused_before_the_request_is_read() -> None:
    conn = HttpConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    conn.next_event()
    conn.send_response(200, [], b"")
    assert not conn.request_complete
    assert not conn.start_next_cycle()


def test_peer_close_is_connection_lost() -> None:
    conn = HttpConnection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionLost)


def test_peer_close_mid_head_is_a_failure() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET / HT")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ProtocolFailure)


def test_response_started_flag() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    assert not conn.response_started
    conn.send_head(200, [(b"Content-Length", b"0")])
    assert conn.response_started


def test_trailing_data_after_upgrade_request() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nFRAME"
    )
    assert isinstance(conn.next_event(), RequestHead)
    assert isinstance(conn.next_event(), EndOfRequest)
    assert conn.next_event() is http11.PAUSED
    assert conn.trailing_data == b"FRAME"


def test_reason_phrase() -> None:
    assert http11.reason_phrase(404) == b"Not Found"
    assert http11.reason_phrase(799) == b""


def test_unsupported_http_version_gets_505_and_closes() -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    (failure,) = events(conn)
    assert isinstance(failure, ProtocolFailure) and failure.status == 505
    assert conn.closing
    (resp, *_rest) = parse_response(conn.send_error(failure.status))
    assert resp.status_code == 505
    assert header(resp.headers.raw_items(), b"connection") == b"close"


@pytest.mark.parametrize(
    "pieces",
    [[b"\r\n" + GET], [b"\n\r\n\n" + GET], [b"\r", b"\n" + GET], [b"\r\n", b"\r", b"\n", GET]],
)
def test_empty_lines_before_a_request_line_are_skipped(pieces: list[bytes]) -> None:
    conn = HttpConnection()
    for piece in pieces[:-1]:
        conn.receive_data(piece)
        assert conn.next_event() is http11.NEED_DATA
        assert not conn.has_buffered_data or conn.buffered_size == 1  # at most a CR waits
    conn.receive_data(pieces[-1])
    assert [type(e) for e in events(conn)] == [RequestHead, EndOfRequest]


def test_empty_lines_are_skipped_after_a_body_too() -> None:
    conn = HttpConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n" + GET)
    assert [type(e) for e in events(conn)] == [RequestHead, BodyChunk, EndOfRequest]
    conn.send_response(200, [])
    assert conn.start_next_cycle()
    assert [type(e) for e in events(conn)] == [RequestHead, EndOfRequest]


def test_empty_lines_count_toward_the_head_limit() -> None:
    conn = HttpConnection(max_head_size=100)
    conn.receive_data(b"\r\n" * 40)
    assert conn.next_event() is http11.NEED_DATA
    conn.receive_data(b"\r\n" * 20)
    failure = conn.next_event()
    assert isinstance(failure, ProtocolFailure) and failure.status == 400
    assert conn.closing


def test_a_cr_not_followed_by_lf_is_still_a_bad_request_line() -> None:
    conn = HttpConnection()
    conn.receive_data(b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    failure = conn.next_event()
    assert isinstance(failure, ProtocolFailure) and failure.status == 400


def test_empty_lines_then_the_peer_closes() -> None:
    conn = HttpConnection()
    conn.receive_data(b"\r\n\r")
    assert conn.next_event() is http11.NEED_DATA
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, ConnectionLost | ProtocolFailure)  # never NEED_DATA forever


def test_expect_continue_with_content_length_0_is_settled_at_once() -> None:
    conn = HttpConnection()
    conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
    )
    head, end = events(conn)
    assert isinstance(head, RequestHead) and not head.expects_continue
    assert isinstance(end, EndOfRequest)
    assert not conn.waiting_for_continue and conn.send_continue() == b""
    out = conn.send_response(200, [], b"ok")
    assert b"connection: close" not in out.lower()
    assert conn.start_next_cycle()


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_carry_no_body_nor_framing(status: int) -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    head = conn.send_head(status, [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"x")])
    body = conn.send_body(b"hello") + conn.send_end()
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
    assert body == b""
    assert conn.start_next_cycle()


def test_a_2xx_to_connect_is_a_head_then_the_connection_closes() -> None:
    conn = HttpConnection()
    conn.receive_data(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert isinstance(conn.next_event(), RequestHead)
    head = conn.send_head(200, [(b"Content-Length", b"2")])
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length" not in head.lower()
    assert conn.send_body(b"hi") == b"" and conn.send_end() == b""
    assert conn.closing and not conn.start_next_cycle()


def test_date_and_server_are_added_unless_given() -> None:
    conn = HttpConnection()
    conn.receive_data(GET)
    events(conn)
    head = conn.send_head(200, [(b"server", b"mine"), (b"Content-Length", b"0")]).lower()
    assert head.count(b"server:") == 1 and b"server: mine" in head
    assert head.count(b"date:") == 1
