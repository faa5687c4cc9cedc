"""The per-request shortcuts keep the protocol's guarantees (issue 10).

Header lines validated once are not validated again (``_parsed`` path of h11),
a bodyless request is complete as soon as its head is read, and ``wants`` of the
websocket upgrade skips requests without an ``Upgrade`` header.
"""

from __future__ import annotations

import json

import h11
import pytest

from simple_http_server.dispatch.channel import encode_headers
from simple_http_server.dispatch.dispatcher import make_request
from simple_http_server.dispatch.routing import Conditions, Router
from simple_http_server.protocol.http11 import (
    DRAIN_LIMIT,
    EndOfRequest,
    HttpConnection,
    RequestHead,
)
from simple_http_server.responses import Response, normalize

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _ready(data: bytes = GET) -> tuple[HttpConnection, RequestHead]:
    conn = HttpConnection()
    conn.receive_data(data)
    head = conn.next_event()
    assert isinstance(head, RequestHead)
    return conn, head


def _answer(conn: HttpConnection, headers: list[tuple[bytes, bytes]]) -> bytes:
    return conn.send_response(200, headers, b"ok")


@pytest.mark.parametrize(
    "bad",
    [
        (b"Bad Name", b"v"),
        (b"Bad:Name", b"v"),
        (b"X-Split\r\nSet-Cookie", b"v"),
        (b"X-Value", b"a\r\nSet-Cookie: x=1"),
        (b"", b"v"),
    ],
)
def test_a_bad_header_line_is_refused_even_next_to_validated_ones(
    bad: tuple[bytes, bytes],
) -> None:
    good = [(b"Content-Type", b"text/plain"), (b"X-Good", b"1")]
    for _ in range(2):  # the second response takes the validated-lines path
        conn, _head = _ready()
        assert _answer(conn, list(good)).startswith(b"HTTP/1.1 200 OK\r\n")
    conn, _head = _ready()
    with pytest.raises(h11.LocalProtocolError):
        _answer(conn, [*good, bad])
    # The failed head left the connection able to answer a clean 500.
    error = conn.send_error(500)
    assert error.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Set-Cookie" not in error and b"Bad" not in error
    # ...and the bad line was not remembered: refused again.
    conn, _head = _ready()
    with pytest.raises(h11.LocalProtocolError):
        _answer(conn, [*good, bad])


def test_conflicting_content_lengths_are_refused_on_the_fast_path() -> None:
    lines = [(b"Content-Length", b"2"), (b"Content-Length", b"3")]
    for line in lines:  # each line alone is fine, and gets remembered
        conn, _head = _ready()
        conn.send_head(200, [line])
    conn, _head = _ready()
    with pytest.raises(h11.LocalProtocolError):
        conn.send_head(200, list(lines))


def test_encoded_user_headers_never_split_the_response() -> None:
    lines = encode_headers([("X-A", "1\r\nSet-Cookie: evil=1"), ("X-B", "v\0w")])
    conn, _head = _ready()
    data = _answer(conn, lines)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nSet-Cookie" not in head
    # status line, X-A, X-B, Content-Length, Date, Server: no line was added
    assert head.count(b"\r\n") == 5
    # A name with CR/LF is neutralized into an invalid name: refused, never sent.
    conn, _head = _ready()
    with pytest.raises(h11.LocalProtocolError):
        _answer(conn, encode_headers([("X-C\r\nSet-Cookie", "v")]))


def test_a_bodyless_request_is_complete_with_its_head_and_still_reports_its_end() -> None:
    conn, head = _ready(GET + GET)
    assert head.upgrade is False
    assert conn.request_complete
    assert isinstance(conn.next_event(), EndOfRequest)
    conn.send_response(200, [], b"")
    assert conn.start_next_cycle()
    second = conn.next_event()
    assert isinstance(second, RequestHead) and conn.request_complete


def test_a_request_with_a_body_is_not_complete_before_its_body() -> None:
    conn, _head = _ready(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n")
    assert not conn.request_complete
    conn.receive_data(b"ab")
    assert conn.next_event().data == b"ab"  # type: ignore[union-attr]
    assert isinstance(conn.next_event(), EndOfRequest)


def test_an_upgrade_request_is_left_for_the_upgrade_handler() -> None:
    conn, head = _ready(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert head.upgrade is True
    assert not conn.request_complete  # the handshake code reads the end itself
    assert isinstance(conn.next_event(), EndOfRequest)


def test_an_idle_connection_skips_the_parse_round_but_still_sees_the_close() -> None:
    conn, _head = _ready()
    assert isinstance(conn.next_event(), EndOfRequest)
    conn.send_response(200, [], b"ok")
    assert conn.start_next_cycle()
    assert conn.next_event() is h11.NEED_DATA  # nothing received: no h11 round
    conn.receive_data(b"")  # the peer closed: h11 must be asked again
    assert type(conn.next_event()).__name__ == "ConnectionLost"


def test_a_pipelined_request_after_the_first_is_parsed() -> None:
    conn, _head = _ready(GET + b"GET /two HTTP/1.1\r\nHost: t\r\n\r\n")
    assert isinstance(conn.next_event(), EndOfRequest)
    conn.send_response(200, [], b"ok")
    assert conn.start_next_cycle()
    second = conn.next_event()
    assert isinstance(second, RequestHead) and second.target == b"/two"


def test_request_headers_keep_their_spelling_and_join_repeats() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Twice: a\r\nx-twice: b\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nContent-Length: 0\r\n\r\n"
    )
    _conn, head = _ready(raw)
    assert head.headers[:2] == [(b"Host", b"t"), (b"X-Twice", b"a")]
    request = make_request(head.method, head.target.decode(), head.headers)
    assert request.headers["x-twice"] == "a, b"
    assert request.headers["COOKIE"] == "a=1; b=2"
    assert list(request.headers) == ["Host", "X-Twice", "Cookie", "Content-Length"]
    assert request.cookies["b"].value == "2"


def test_str_header_lines_are_kept_as_given() -> None:
    request = make_request("GET", "/p?q=1", [("X-Name", "caf\u00e9 \u2603")])
    assert request.headers["x-name"] == "caf\u00e9 \u2603"
    assert request.path == "/p" and request.parameter == {"q": "1"}


def test_response_headers_and_cookies_are_built_on_first_use() -> None:
    response = Response()
    assert not response.has_headers_or_cookies
    response.headers["X-A"] = "1"
    response.add_header("x-a", "2")
    response.add_cookie("c", "v", path="/")
    assert response.headers["X-A"] == ["1", "2"] and response.cookies["c"]["path"] == "/"
    assert response.has_headers_or_cookies
    assert Response(headers={"X-B": "3"}).headers == {"X-B": "3"}


def test_a_dict_result_is_json_and_keeps_non_ascii() -> None:
    outcome = normalize({"name": "caf\u00e9", "n": [1, 2]})
    assert outcome.body == '{"name": "café", "n": [1, 2]}'.encode()
    assert outcome.content_type == "application/json; charset=utf-8" and outcome.status == 200
    assert normalize({"a": 1}, 404).status == 404


def _h11_complete(conn: HttpConnection) -> bool:
    return conn._conn.their_state in (h11.DONE, h11.MUST_CLOSE)


@pytest.mark.parametrize(
    "data",
    [
        GET,
        GET + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ],
)
@pytest.mark.parametrize("eof", [False, True])
def test_request_complete_is_what_h11_says_at_every_step(data: bytes, eof: bool) -> None:
    """``request_complete`` and the answer's ``Connection: close`` decision are known
    without asking h11 once the request ended; they must stay what h11's states say."""
    conn = HttpConnection()
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    for _ in range(8):
        event = conn.next_event()
        assert conn.request_complete == _h11_complete(conn), event
        if event is h11.NEED_DATA or event is h11.PAUSED:
            break
        assert conn.waiting_for_continue == conn._conn.they_are_waiting_for_100_continue
    if conn._conn.our_state is h11.SEND_RESPONSE:
        waiting = conn._conn.they_are_waiting_for_100_continue
        left = conn._body_left
        unread = conn._conn.their_state is h11.SEND_BODY and (left is None or left > DRAIN_LIMIT)
        closing = conn.closing
        conn.send_response(200, [], b"ok")
        assert conn.closing == (closing or waiting or unread)
        assert conn.request_complete == _h11_complete(conn)
    if conn.start_next_cycle():
        assert not conn.request_complete and not _h11_complete(conn)


def test_idle_is_what_next_event_would_say() -> None:
    for data, eof, idle in [
        (GET, False, True),
        (GET + GET, False, False),  # a pipelined request waits
        (GET + b"G", False, False),  # part of the next head
        (GET, True, False),  # the peer closed: next_event() reports it
    ]:
        conn, _head = _ready(data)
        if eof:
            conn.receive_data(b"")
        assert isinstance(conn.next_event(), EndOfRequest)
        conn.send_response(200, [], b"ok")
        assert conn.start_next_cycle()
        assert conn.idle is idle
        assert (conn.next_event() is h11.NEED_DATA and not conn.has_buffered_data) is idle


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"name": "caf\u00e9", "n": [1, 2.5, None, True], "s": "\u2028\udcff"},
        {1: 2, 2.5: "x", None: float("nan"), "k": {"inf": float("-inf")}},
    ],
)
def test_a_dict_is_encoded_as_the_json_encoder_does(value: dict[object, object]) -> None:
    expected = json.JSONEncoder(ensure_ascii=False).encode(value)
    assert normalize(value).body == expected.encode("utf-8", "surrogateescape")


def test_a_dict_json_fails_as_the_json_encoder_does() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular reference detected"):
        normalize(loop)
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        normalize({"x": object()})
    assert normalize({"again": 1}).body == b'{"again": 1}'  # nothing left behind


def test_methods_no_route_names_share_one_table_found_by_name() -> None:
    router: Router[str] = Router()
    router.add_url("/any", "any", frozenset(), Conditions())
    router.add_url("/get", "get", frozenset({"GET"}), Conditions())
    methods = [f"M{n}" for n in range(40)]  # methods are client input: the cache is bounded
    for _ in range(2):
        for method in methods:
            assert router.lookup(method, "/any", {}, {}).target == "any"
            assert router.lookup(method, "/get", {}, {}).target is None
        assert router.lookup("GET", "/get", {}, {}).target == "get"
        assert router.lookup("GET", "/any", {}, {}).target == "any"
    assert len(router._tables) <= 16 + 3  # the aliases, and the named methods' own
    router.add_url("/late", "late", frozenset(), Conditions())  # a new route: tables again
    assert router.lookup("M1", "/late", {}, {}).target == "late"


def test_conditions_know_whether_they_check_anything() -> None:
    assert Conditions().empty
    assert not Conditions(params=(lambda p: True,)).empty
    assert not Conditions(headers=(lambda h: True,)).empty
