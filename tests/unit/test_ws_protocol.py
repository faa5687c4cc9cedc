"""protocol/ws.py: handshake validation and the Sans-IO websocket protocol."""

from __future__ import annotations

import base64
import hashlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from simple_http_server.protocol import ws
from simple_http_server.protocol.http11 import PAUSED, EndOfRequest, HttpConnection, RequestHead

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def head(*extra: tuple[bytes, bytes], method: str = "GET", drop: bytes = b"") -> RequestHead:
    headers = [
        (b"Host", b"x"),
        (b"Upgrade", b"WebSocket"),
        (b"Connection", b"keep-alive, Upgrade"),
        (b"Sec-WebSocket-Key", KEY),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    headers = [h for h in headers if h[0].lower() != drop] + list(extra)
    return RequestHead(method, b"/ws", headers, b"1.1", False)


def test_upgrade_detection_is_case_insensitive() -> None:
    assert ws.is_websocket_upgrade(head())
    assert not ws.is_websocket_upgrade(head(drop=b"upgrade"))
    assert not ws.is_websocket_upgrade(
        RequestHead("GET", b"/", [(b"Upgrade", b"h2c")], b"1.1", False)
    )


def test_an_http_1_0_request_is_no_upgrade() -> None:
    """RFC 9110 7.8: a server ignores the Upgrade header of an HTTP/1.0 request."""
    request_head = head()
    assert not ws.is_websocket_upgrade(
        RequestHead("GET", b"/ws", request_head.headers, b"1.0", False)
    )


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (head(drop=b"sec-websocket-key"), 400),
        (head(drop=b"sec-websocket-version"), 426),
        (head((b"Sec-WebSocket-Version", b"8"), drop=b"sec-websocket-version"), 426),
        (head(drop=b"connection"), 400),
        (head(method="POST"), 405),
        (head((b"Sec-WebSocket-Key", b"short"), drop=b"sec-websocket-key"), 400),
    ],
)
def test_bad_handshakes(request_head: RequestHead, status: int) -> None:
    result = ws.check_handshake(request_head)
    assert isinstance(result, ws.HandshakeRejection)
    assert result.status == status
    if status == 426:
        assert (b"Sec-WebSocket-Version", b"13") in result.headers


def test_accept_token_and_deflate() -> None:
    checked = ws.check_handshake(head((b"Sec-WebSocket-Extensions", b"permessage-deflate")))
    assert isinstance(checked, ws.Handshake)
    headers, extensions = ws.accept_headers(checked)
    expected = base64.b64encode(
        hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )
    assert (b"Sec-WebSocket-Accept", expected) in headers
    assert any(k == b"Sec-WebSocket-Extensions" for k, _ in headers)
    assert len(extensions) == 1
    _, none = ws.accept_headers(checked, deflate=False)
    assert none == []


@pytest.mark.parametrize(
    ("params", "answer"),
    [
        ("", b""),
        ("; client_max_window_bits", b"; client_max_window_bits=15"),
        ('; server_max_window_bits = "9"', b"; server_max_window_bits=9"),
        ("; server_no_context_takeover; client_no_context_takeover",
         b"; client_no_context_takeover; server_no_context_takeover"),
        ("; foo=bar", None),
        ("; Server_No_Context_Takeover", None),
        ("; server_max_window_bits", None),
        ("; server_max_window_bits=16", None),
        ("; server_max_window_bits=9; server_max_window_bits=9", None),
        ("; client_no_context_takeover=1", None),
        (";", None),
    ],
)  # fmt: skip
def test_deflate_offers_follow_rfc_7692(params: str, answer: bytes | None) -> None:
    offer = b"permessage-deflate" + params.encode()
    checked = ws.check_handshake(head((b"Sec-WebSocket-Extensions", offer)))
    assert isinstance(checked, ws.Handshake)
    headers, extensions = ws.accept_headers(checked)
    agreed = [v for k, v in headers if k == b"Sec-WebSocket-Extensions"]
    assert agreed == ([b"permessage-deflate" + answer] if answer is not None else [])
    assert len(extensions) == (answer is not None)


def test_switch_through_h11_keeps_trailing_bytes() -> None:
    client = Connection(ConnectionType.CLIENT)
    frame = bytes(client.send(TextMessage(data="early")))
    http = HttpConnection()
    http.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame
    )
    request_head = http.next_event()
    assert isinstance(request_head, RequestHead)
    assert ws.is_websocket_upgrade(request_head)
    assert isinstance(http.next_event(), EndOfRequest)
    assert http.next_event() is PAUSED
    data = http.send_switch([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
    assert data.startswith(b"HTTP/1.1 101 ")
    proto = ws.WebsocketProtocol(trailing_data=http.trailing_data)
    assert proto.events() == [ws.TextReceived("early")]


def switched(wire: bytes, end: bool) -> HttpConnection:
    """An HTTP connection that received an upgrade request, then ``wire`` (and its end
    of input, when ``end``), and switched protocols."""
    http = HttpConnection()
    http.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + wire
    )
    if end:
        http.receive_data(b"")
    assert isinstance(http.next_event(), RequestHead)
    assert isinstance(http.next_event(), EndOfRequest)
    assert http.next_event() is PAUSED
    http.send_switch([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
    return http


def test_an_end_of_input_before_the_switch_is_reported_after_the_trailing_frames() -> None:
    """wsproto alone would report the loss (1006) ahead of the frames still buffered."""
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(TextMessage(data="one")) + client.send(Ping(payload=b"p"))
    wire += client.send(TextMessage(data="two"))[:4]  # and the start of a frame
    http = switched(wire, end=True)
    assert http.input_ended
    proto = ws.WebsocketProtocol(trailing_data=http.trailing_data, input_ended=http.input_ended)
    assert proto.is_open
    assert proto.events() == [
        ws.TextReceived("one"),
        ws.PingReceived(b"p"),
        ws.Closed(1006, "connection lost", False),
    ]
    assert proto.finished and not proto.is_open and proto.events() == []
    assert not switched(wire, end=False).input_ended


def test_an_end_of_input_after_the_peers_close_leaves_the_close_to_answer() -> None:
    client = Connection(ConnectionType.CLIENT)
    http = switched(client.send(CloseConnection(code=1000, reason="bye")), end=True)
    proto = ws.WebsocketProtocol(trailing_data=http.trailing_data, input_ended=True)
    assert proto.events() == [ws.Closed(1000, "bye", True)]
    assert proto.answer_due and proto.answer_close()
    assert proto.finished and proto.events() == []


def test_an_end_of_input_comes_after_a_streamed_compressed_message() -> None:
    """Streamed pieces come one per events() call: the loss only after the last."""
    checked = ws.check_handshake(head((b"Sec-WebSocket-Extensions", b"permessage-deflate")))
    assert isinstance(checked, ws.Handshake)
    _, extensions = ws.accept_headers(checked, max_message_size=1000)
    client_ext = PerMessageDeflate()
    client_ext.finalize("permessage-deflate")
    client = Connection(ConnectionType.CLIENT, [client_ext])
    data = bytes(5000)
    proto = ws.WebsocketProtocol(
        extensions=extensions,
        trailing_data=client.send(BytesMessage(data=data)),
        input_ended=True,
        max_message_size=1000,
        stream_binary=True,
    )
    events: list[object] = []
    for _ in range(50):
        events += proto.events()
        if not proto.more_events:
            break
    pieces = [e for e in events if isinstance(e, ws.BinaryFrameReceived)]
    assert b"".join(p.data for p in pieces) == data and len(pieces) >= 5
    assert events == [*pieces, ws.Closed(1006, "connection lost", False)]


def pair(**kwargs: object) -> tuple[Connection, ws.WebsocketProtocol]:
    return Connection(ConnectionType.CLIENT), ws.WebsocketProtocol(**kwargs)  # type: ignore[arg-type]


def deliver(client: Connection, data: bytes) -> list[object]:
    client.receive_data(data)
    return list(client.events())


def test_messages_fragments_and_control_frames() -> None:
    client, proto = pair()
    proto.receive_data(client.send(TextMessage(data="he", message_finished=False)))
    proto.receive_data(client.send(Ping(payload=b"p")))
    proto.receive_data(client.send(TextMessage(data="llo", message_finished=True)))
    proto.receive_data(client.send(BytesMessage(data=b"\x00\x01")))
    assert proto.events() == [
        ws.PingReceived(b"p"),
        ws.TextReceived("hello"),
        ws.BinaryReceived(b"\x00\x01"),
    ]
    assert proto.send_data("abc", fin=False) and proto.send_data("def", fin=True)
    assert proto.send_pong(b"p")
    events = deliver(client, proto.data_to_send())
    texts = [e for e in events if isinstance(e, Message)]
    assert "".join(str(e.data) for e in texts) == "abcdef"
    assert texts[-1].message_finished


def test_peer_close_is_echoed_once_answered() -> None:
    """The echo waits for answer_close(): a reply to a message received before the
    Close still goes out first (RFC 6455 5.5.1); nothing after the Close is read."""
    client, proto = pair()
    data = client.send(TextMessage(data="query")) + client.send(CloseConnection(4001, "bye"))
    proto.receive_data(data)
    assert proto.events() == [ws.TextReceived("query"), ws.Closed(4001, "bye", True)]
    assert proto.data_to_send() == b""
    assert proto.answer_due and proto.is_open and not proto.finished
    assert proto.send_data("answer")
    assert not proto.send_ping(b"p")  # no control frames once the Close was received
    assert proto.answer_close() and not proto.answer_close()
    assert proto.finished and not proto.is_open and not proto.answer_due
    events = deliver(client, proto.data_to_send())
    assert isinstance(events[0], TextMessage) and events[0].data == "answer"
    assert isinstance(events[1], CloseConnection) and events[1].code == 4001
    assert not proto.send_data("late")
    proto.receive_data(b"")
    assert proto.events() == [] and proto.close_event() == ws.Closed(4001, "bye", True)


def test_a_ping_before_the_peers_close_gets_its_pong() -> None:
    """RFC 6455 5.5.2: no Pong only for a Ping received after a Close; one that came
    before it is answered until the Close is (wsproto refuses pongs once it read one)."""
    client, proto = pair()
    proto.receive_data(client.send(Ping(payload=b"pp")) + client.send(CloseConnection(1000)))
    assert proto.events() == [ws.PingReceived(b"pp"), ws.Closed(1000, "", True)]
    assert proto.send_pong(b"pp")
    assert not proto.send_ping(b"p")
    assert proto.answer_close()
    assert not proto.send_pong(b"late")
    events = deliver(client, proto.data_to_send())
    assert isinstance(events[0], Pong) and events[0].payload == b"pp"
    assert isinstance(events[1], CloseConnection) and len(events) == 2


def test_connection_lost_while_the_close_waits_for_its_answer() -> None:
    client, proto = pair()
    proto.receive_data(client.send(CloseConnection(code=1000, reason="bye")))
    assert proto.events() == [ws.Closed(1000, "bye", True)]
    proto.receive_data(b"")
    assert proto.events() == []
    assert proto.finished and not proto.answer_due and not proto.answer_close()
    assert proto.data_to_send() == b""


def test_an_unanswered_close_reports_our_code_and_reason() -> None:
    """Our Close got no answer before the connection ended: on_close gets the code
    and reason we sent, as when the answer came (not 'connection lost')."""
    _, proto = pair()
    assert proto.send_close(4000, "srvbye")
    proto.receive_data(b"")
    assert proto.events() == [ws.Closed(4000, "srvbye", False)]
    _, other = pair()
    assert other.send_close(4000, "srvbye")
    assert other.close_event() == ws.Closed(4000, "srvbye", False)


def test_local_close_reports_own_code() -> None:
    client, proto = pair()
    assert proto.send_close(1000, "done")
    assert not proto.send_close(1000)
    event = deliver(client, proto.data_to_send())[0]
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (1000, "done")
    proto.receive_data(client.send(event.response()))
    assert proto.events() == [ws.Closed(1000, "done", False)]
    assert proto.finished


def test_connection_lost() -> None:
    _, proto = pair()
    proto.receive_data(b"")
    assert proto.events() == [ws.Closed(1006, "connection lost", False)]
    assert proto.close_event().code == 1006


def close_code_of(proto: ws.WebsocketProtocol) -> int:
    """The code of the Close failing the connection: due until answer_close()
    (the events before the bad input are handled first), then sent."""
    assert proto.answer_due and not proto.finished and not proto.failed
    assert proto.data_to_send() == b""
    assert proto.answer_close() and not proto.answer_due
    assert proto.finished and proto.failed
    client = Connection(ConnectionType.CLIENT)
    event = deliver(client, proto.data_to_send())[-1]
    assert isinstance(event, CloseConnection)
    return int(event.code)


def test_too_big_message_fails_1009() -> None:
    client, proto = pair(max_message_size=10)
    proto.receive_data(client.send(TextMessage(data="0123456789")))
    proto.receive_data(client.send(BytesMessage(data=b"x" * 6, message_finished=False)))
    proto.receive_data(client.send(BytesMessage(data=b"x" * 6)))
    events = proto.events()
    assert events[0] == ws.TextReceived("0123456789")
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1009
    assert close_code_of(proto) == 1009


def test_invalid_utf8_fails_1007() -> None:
    _, proto = pair()
    proto.receive_data(b"\x81\x82abcd" + bytes([0xFF ^ ord("a"), 0xFE ^ ord("b")]))
    events = proto.events()
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1007
    assert close_code_of(proto) == 1007


def test_unmasked_frame_fails_1002() -> None:
    _, proto = pair()
    proto.receive_data(b"\x81\x02hi")
    events = proto.events()
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1002
    assert close_code_of(proto) == 1002
    proto.receive_data(b"more")  # ignored after the failure
    assert proto.events() == []


def test_what_came_before_bad_input_is_answered_before_the_failure() -> None:
    """Bad input fails the connection once the events before it were handled (the
    transport calls answer_close()): their replies go out first; nothing after the bad
    input is read, in this read or a later one."""
    client, proto = pair()
    query = client.send(TextMessage(data="query"))
    after = client.send(TextMessage(data="after"))
    proto.receive_data(query + b"\xa1\x80\x00\x00\x00\x00" + after)  # RSV2 set
    events = proto.events()
    assert events[0] == ws.TextReceived("query") and len(events) == 2
    assert isinstance(events[1], ws.Closed) and events[1].code == 1002
    assert not events[1].by_peer and proto.is_open and proto.answer_due
    proto.receive_data(after)
    assert proto.events() == [] and not proto.more_events
    assert proto.send_data("answer") and proto.send_pong(b"p")
    assert proto.answer_close() and proto.finished and not proto.is_open
    assert proto.close_event() == events[1]
    sent = deliver(client, proto.data_to_send())
    assert [type(e).__name__ for e in sent] == ["TextMessage", "Pong", "CloseConnection"]
    assert isinstance(sent[2], CloseConnection) and sent[2].code == 1002


def test_a_failure_meanwhile_replaces_the_one_due_for_bad_input() -> None:
    """A callback raised (1011) before the failure for bad input went out: the 1011
    Close is the one sent, and the one reported."""
    client, proto = pair()
    proto.receive_data(b"\x81\x02hi")  # unmasked: 1002 due
    assert proto.events()[-1].code == 1002  # type: ignore[union-attr]
    proto.fail(1011, "Handler error")
    assert not proto.answer_due and not proto.answer_close() and proto.finished
    assert proto.close_event() == ws.Closed(1011, "Handler error", False)
    sent = deliver(client, proto.data_to_send())
    assert len(sent) == 1 and isinstance(sent[0], CloseConnection) and sent[0].code == 1011


def test_bad_input_after_our_close_fails_without_a_second_close() -> None:
    client, proto = pair()
    assert proto.send_close(1000, "bye")
    deliver(client, proto.data_to_send())
    proto.receive_data(b"\x81\x02hi")
    assert proto.events() == [ws.Closed(1002, proto.close_event().reason, False)]
    assert proto.answer_due and proto.answer_close() and proto.finished
    assert proto.data_to_send() == b""


def test_streaming_binary_and_keep_limit() -> None:
    client, proto = pair(stream_binary=True, max_message_size=8)
    proto.receive_data(client.send(BytesMessage(data=b"abcd", message_finished=False)))
    proto.receive_data(client.send(BytesMessage(data=b"efghijkl", message_finished=True)))
    events = proto.events()
    assert events == [
        ws.BinaryFrameReceived(b"abcd", False),
        ws.BinaryFrameReceived(b"efghijkl", True),
    ]
    assert proto.keep(b"abcd") is None
    assert proto.take_kept() == b"abcd"
    assert proto.take_kept() is None
    assert proto.keep(b"123456") is None
    failed = proto.keep(b"789")
    assert failed is not None and failed.code == 1009


@pytest.mark.parametrize("text", [True, False])
def test_many_small_fragments_gather_into_the_exact_message(text: bool) -> None:
    """Small pieces are joined by the batch (memory): order and content stay exact,
    across batch ends, with long and empty pieces between them."""
    sizes = [1, 2, 0, 3, 1500, *[1] * 1100, 70_000, *[5] * 20_000, 0, 7]
    pieces = [str(i % 10) * size for i, size in enumerate(sizes)]
    client, proto = pair(max_message_size=0)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        message = (
            TextMessage(data=piece, message_finished=last)
            if text
            else BytesMessage(data=piece.encode(), message_finished=last)
        )
        proto.receive_data(client.send(message))
    whole = "".join(pieces)
    expected = ws.TextReceived(whole) if text else ws.BinaryReceived(whole.encode())
    assert proto.events() == [expected]


def test_kept_pieces_gather_into_the_exact_message() -> None:
    _, proto = pair(stream_binary=True, max_message_size=0)
    pieces = [b"%d" % (i % 10) * (i % 7) for i in range(3000)] + [b"x" * 5000, b"", b"y"]
    for piece in pieces:
        assert proto.keep(piece) is None
    assert proto.take_kept() == b"".join(pieces)
    assert proto.keep(b"") is None
    assert proto.take_kept() == b""  # an empty kept message is a message all the same
    assert proto.take_kept() is None


def test_permessage_deflate_roundtrip() -> None:
    server_ext = PerMessageDeflate()
    assert server_ext.accept("permessage-deflate") is not None
    assert server_ext.enabled()
    client_ext = PerMessageDeflate()
    client_ext.finalize("permessage-deflate")
    client = Connection(ConnectionType.CLIENT, [client_ext])
    proto = ws.WebsocketProtocol(extensions=[server_ext])
    text = "squeeze " * 500
    wire = client.send(TextMessage(data=text))
    assert len(wire) < len(text) // 4
    proto.receive_data(wire)
    assert proto.events() == [ws.TextReceived(text)]
    proto.send_data(text)
    out = proto.data_to_send()
    assert len(out) < len(text) // 4
    event = deliver(client, out)[0]
    assert isinstance(event, TextMessage) and event.data == text


def deflate_pair(limit: int, stream_binary: bool) -> tuple[Connection, ws.WebsocketProtocol]:
    checked = ws.check_handshake(head((b"Sec-WebSocket-Extensions", b"permessage-deflate")))
    assert isinstance(checked, ws.Handshake)
    _, extensions = ws.accept_headers(checked, max_message_size=limit)
    client_ext = PerMessageDeflate()
    client_ext.finalize("permessage-deflate")
    proto = ws.WebsocketProtocol(
        extensions=extensions, max_message_size=limit, stream_binary=stream_binary
    )
    return Connection(ConnectionType.CLIENT, [client_ext]), proto


def test_a_streamed_compressed_message_inflates_a_step_at_a_time() -> None:
    """Streaming binary messages: a frame that inflates past the limit is handed on in
    pieces of at most the limit, one per events() call; the message is not bounded."""
    client, proto = deflate_pair(1000, stream_binary=True)
    data = bytes(5000) + b"end" + bytes(2500)
    wire = client.send(BytesMessage(data=data[:10], message_finished=False))
    wire += client.send(BytesMessage(data=data[10:], message_finished=True))
    wire += client.send(TextMessage(data="after"))
    assert len(wire) < 200
    proto.receive_data(wire)
    events: list[object] = []
    for _ in range(50):
        events += proto.events()
        if not proto.more_events:
            break
    pieces = [e for e in events if isinstance(e, ws.BinaryFrameReceived)]
    assert b"".join(p.data for p in pieces) == data
    assert max(len(p.data) for p in pieces) <= 1000 and len(pieces) >= 8
    assert [p.fin for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert events[-1] == ws.TextReceived("after")


def test_a_gathered_compressed_message_is_still_cut_at_the_limit() -> None:
    client, proto = deflate_pair(1000, stream_binary=True)
    proto.receive_data(client.send(TextMessage(data="x" * 1001)))  # text is gathered
    events = proto.events()
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1009
    client, proto = deflate_pair(1000, stream_binary=False)
    proto.receive_data(client.send(BytesMessage(data=bytes(100_000))))
    events = proto.events()
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1009


def test_a_limit_of_0_is_no_bound() -> None:
    client, proto = pair(max_message_size=0)
    proto.receive_data(client.send(TextMessage(data="x" * 100_000)))
    proto.receive_data(client.send(BytesMessage(data=b"y" * 100_000)))
    assert proto.events() == [ws.TextReceived("x" * 100_000), ws.BinaryReceived(b"y" * 100_000)]
    client, proto = pair(max_message_size=0, stream_binary=True)
    assert proto.keep(b"z" * 100_000) is None


class _CollectingLink:
    """A session link whose output is parsed by a real wsproto client."""

    @staticmethod
    def make() -> Any:
        from simple_http_server.dispatch.ws_handlers import Callbacks
        from simple_http_server.dispatch.ws_session import LinkBase
        from simple_http_server.websocket import WebsocketRequest

        class Link(LinkBase):
            def __init__(self) -> None:
                super().__init__(ws.WebsocketProtocol(), Callbacks(), WebsocketRequest())
                self.out = bytearray()

            def _write(self, data: bytes) -> None:
                self.out += data

        return Link()


def _source(fail_after: int) -> Iterator[bytes]:
    for index in range(fail_after):
        yield b"piece %d" % index
    raise OSError("the disk went away")


def test_a_message_whose_source_fails_half_way_closes_with_1011() -> None:
    link = _CollectingLink.make()
    with pytest.raises(OSError):
        link.send_message(_source(2))
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(bytes(link.out))
    events = list(client.events())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1011
    assert link.is_closed


def test_a_message_whose_source_fails_at_once_leaves_the_session_open() -> None:
    link = _CollectingLink.make()
    with pytest.raises(OSError):
        link.send_message(_source(0))
    assert link.out == b"" and not link.is_closed
    link.send_message(("still here",))
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(bytes(link.out))
    assert [e.data for e in client.events() if isinstance(e, TextMessage)] == ["still here"]


@pytest.mark.parametrize(
    ("text", "fits"),
    [("\u00e9\u00e9", True), ("\u00e9\u00e9\u00e9", False), ("abcd", True), ("abcde", False)],
)
def test_a_one_frame_message_is_measured_in_utf8_bytes(text: str, fits: bool) -> None:
    client, proto = pair(max_message_size=4)  # "éé" is 2 characters but 4 bytes
    proto.receive_data(client.send(TextMessage(data=text)))
    events = proto.events()
    if fits:
        assert events == [ws.TextReceived(text)]
        assert type(events[0].data) is str  # type: ignore[union-attr]
    else:
        assert isinstance(events[-1], ws.Closed) and events[-1].code == 1009


def test_one_frame_messages_after_a_fragmented_one_start_from_zero() -> None:
    client, proto = pair(max_message_size=6)
    proto.receive_data(client.send(BytesMessage(data=b"abc", message_finished=False)))
    proto.receive_data(client.send(BytesMessage(data=b"def")))
    for _ in range(3):  # each whole message counts alone
        proto.receive_data(client.send(BytesMessage(data=b"123456")))
    proto.receive_data(client.send(TextMessage(data="")))
    events = proto.events()
    assert events == [ws.BinaryReceived(b"abcdef")] + [ws.BinaryReceived(b"123456")] * 3 + [
        ws.TextReceived("")
    ]
    assert all(type(e.data) is bytes for e in events[:-1])  # type: ignore[union-attr]


def test_endless_empty_continuation_frames_cost_no_memory() -> None:
    """Empty continuation frames add nothing to the message being gathered: 40 000 of
    them (240 KB on the wire, fed in pieces) leave the memory where it was (a list
    entry each would be 320 KB), and the message is still whole."""
    client, proto = pair(max_message_size=1024)
    proto.receive_data(client.send(TextMessage(data="a", message_finished=False)))
    assert proto.events() == []
    empty = client.send(TextMessage(data="", message_finished=False)) * 1000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(40):
            proto.receive_data(empty)
            assert proto.events() == []
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown
    proto.receive_data(client.send(TextMessage(data="b", message_finished=True)))
    assert proto.events() == [ws.TextReceived("ab")]
