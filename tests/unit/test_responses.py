"""``responses.normalize``: every result type a controller may return (no sockets)."""

from __future__ import annotations

import asyncio
import copy
import datetime
import pickle
import threading
import time
from typing import Any

import pytest

from simple_http_server import Cookies, Header, Headers, Redirect, Response, StaticFile
from simple_http_server.dispatch.channel import Channel
from simple_http_server.responses import (
    HTML_TYPE,
    JSON_TYPE,
    OCTET_TYPE,
    TEXT_TYPE,
    XML_TYPE,
    normalize,
    sniff_text_type,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<?xml version='1.0'?><a/>", XML_TYPE),
        ("<!DOCTYPE html><html></html>", HTML_TYPE),
        ("  <HTML><body>x</body></HTML>\n", HTML_TYPE),
        ("<html> not closed", TEXT_TYPE),
        ("plain", TEXT_TYPE),
        ("", TEXT_TYPE),
    ],
)
def test_sniff_text_type(text: str, expected: str) -> None:
    assert sniff_text_type(text) == expected


def test_str_is_not_stripped() -> None:
    outcome = normalize("  padded \n")
    assert outcome.body == b"  padded \n"
    assert outcome.content_type == TEXT_TYPE


def test_dict_and_list_are_json() -> None:
    assert normalize({"a": "中"}).body == '{"a": "中"}'.encode()
    assert normalize([1, 2]).body == b"[1, 2]"
    assert normalize([1]).content_type == JSON_TYPE


@pytest.mark.parametrize("value", [b"\x00\x01", bytearray(b"\x00\x01")])
def test_bytes_are_octet_stream(value: bytes) -> None:
    outcome = normalize(value)
    assert (outcome.body, outcome.content_type) == (b"\x00\x01", OCTET_TYPE)


def test_none_is_an_empty_200() -> None:
    outcome = normalize(None)
    assert (outcome.status, outcome.body, outcome.content_type) == (200, b"", TEXT_TYPE)


def test_response_object() -> None:
    res = Response(status_code=201, headers={"X-A": "1"}, body={"ok": True})
    res.add_header("X-A", "2")
    res.add_cookie("c", "v", path="/")
    outcome = normalize(res)
    assert outcome.status == 201
    assert ("X-A", "1") in outcome.headers and ("X-A", "2") in outcome.headers
    assert ("Set-Cookie", "c=v; Path=/") in outcome.headers
    assert outcome.body == b'{"ok": true}'


def test_redirect_defaults_to_302() -> None:
    outcome = normalize(Redirect("/index"))
    assert outcome.status == 302 and ("Location", "/index") in outcome.headers
    assert normalize(Redirect("/x", 301)).status == 301


def test_static_file_passes_through() -> None:
    static = StaticFile("/tmp/x.html", "text/html")
    assert normalize(static).body is static


def test_tuple_any_order() -> None:
    cookies = Cookies()
    cookies["ck1"] = "keijack"
    cookies["ck1"]["path"] = "/"
    cookies["ck1"]["expires"] = datetime.datetime(2018, 12, 31).strftime(Cookies.EXPIRE_DATE_FORMAT)
    outcome = normalize(
        (Header({"xx": "yyy"}), cookies, "<html><body>OK</body></html>", 404, Headers({"a": "b"}))
    )
    assert outcome.status == 404
    assert ("xx", "yyy") in outcome.headers
    assert ("a", "b") in outcome.headers
    assert ("Set-Cookie", "ck1=keijack; expires=Mon, 31 Dec 2018 00:00:00 GMT; Path=/") in (
        outcome.headers
    )
    assert outcome.body == b"<html><body>OK</body></html>"
    assert outcome.content_type == HTML_TYPE


def test_tuple_first_int_and_first_body_win() -> None:
    outcome = normalize((201, {"a": 1}, 500, "second"))
    assert outcome.status == 201 and outcome.body == b'{"a": 1}'


def test_tuple_without_body_is_empty() -> None:
    outcome = normalize((204, Headers({"X": "1"})))
    assert outcome.status == 204 and outcome.body == b""


def test_bare_int_is_a_status() -> None:
    assert normalize(201).status == 201


def test_unsupported_result_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        normalize(object())


def test_headers_copies_and_merges_keep_case_insensitive_names() -> None:
    """``|=`` bypassed the name index; a copy shared it; a pickle lost it."""
    from simple_http_server.models import HandshakeHeaders

    merged = Headers({"X-A": "1"})
    merged |= {"X-B": "2"}
    assert "x-b" in merged and merged.get("X-B") == "2" and merged["x-b"] == "2"
    for clone in (copy.copy, copy.deepcopy, lambda h: pickle.loads(pickle.dumps(h))):
        original = Headers({"X-A": "1"})
        twin = clone(original)
        twin["X-New"] = "n"
        assert type(twin) is Headers and twin.get("x-a") == "1" and twin.get("x-new") == "n"
        assert "x-new" not in original and original.get("x-new") is None
        sent = HandshakeHeaders.from_lines([(b"X-A", b"1"), (b"x-a", b"2")])
        other = clone(sent)
        other["X-B"] = "b"
        assert type(other) is HandshakeHeaders and other.get_all("X-A") == ["1", "2"]
        assert other["x-a"] == "1" and sent["x-b"] is None and sent.get_all("x-b") is None


def test_headers_popitem_forgets_the_name() -> None:
    """``popitem()`` left the name indexed: ``"X-A" in h`` stayed True, ``h["x-a"]``
    raised ``KeyError``, and a handshake's ``get_all`` still listed it."""
    from simple_http_server.models import HandshakeHeaders

    plain = Headers({"X-A": "1"})
    assert plain.popitem() == ("X-A", "1")
    assert "x-a" not in plain and plain.get("X-A") is None and not plain
    sent = HandshakeHeaders.from_lines([(b"X-A", b"1"), (b"x-a", b"2")])
    assert sent.popitem() == ("X-A", "1")
    assert "x-a" not in sent and sent["X-A"] is None and sent.get_all("x-a") is None


class _SlowThreadChannel(Channel):
    """An in-memory channel whose blocking writes from threads take ``delay`` (a
    client reading slowly); it holds nothing unsent, so its own drain never waits."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[bytes] = []

    async def receive(self) -> bytes:
        return b""

    async def send_head(self, status: int, headers: Any) -> None:
        return None

    async def send_data(self, data: bytes) -> None:
        return None

    async def send_end(self) -> None:
        return None

    def start_blocking(self, status: int, headers: Any) -> None:
        return None

    def write_blocking(self, data: bytes) -> None:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(self.delay)
        self.sent.append(bytes(data))

    def end_blocking(self) -> None:
        return None

    async def drain(self) -> None:
        return None


def test_drain_waits_for_the_writes_queued_behind_a_threads_turn() -> None:
    """A coroutine's writes made while a thread's write holds the turn are queued for
    that thread; drain() did not count them, so a coroutine pacing itself with it
    queued without bound (284,206 writes in half a second)."""

    async def main() -> tuple[int, list[bytes]]:
        channel = _SlowThreadChannel(0.3)
        response = Response()
        response._channel = channel
        response.write_bytes(b"head;")  # starts the answer, from the loop
        thread = threading.Thread(target=response.write_bytes, args=(b"thread;",))
        thread.start()
        while not response._turns or not response._writers:  # the thread has the turn
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        writes = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.2:
            response.write_bytes(b"loop;")
            writes += 1
            await response.drain()
        await asyncio.to_thread(thread.join, 10)
        return writes, channel.sent

    writes, sent = asyncio.run(main())
    assert writes <= 2  # drain() waited for the thread to send the queued write
    assert sent[:3] == [b"head;", b"thread;", b"loop;"]
