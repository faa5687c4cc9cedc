"""The websocket keepalive schedule (transport-independent) and the pongs it hides."""

from __future__ import annotations

import asyncio

from simple_http_server.dispatch.ws_handlers import Callbacks
from simple_http_server.dispatch.ws_session import (
    KEEPALIVE_REASON,
    Keepalive,
    LinkBase,
    close_message,
)
from simple_http_server.protocol import ws
from simple_http_server.protocol.ws import WebsocketProtocol
from simple_http_server.websocket import WebsocketRequest


def test_a_silent_peer_is_pinged_after_the_interval_then_failed_after_the_timeout() -> None:
    keepalive = Keepalive(20.0, 5.0, now=100.0)
    assert keepalive.due == 120.0
    assert keepalive.expire(119.9) is None
    assert keepalive.expire(120.0) == Keepalive.PING
    assert keepalive.due == 125.0
    assert keepalive.expire(124.0) is None
    assert keepalive.expire(125.5) == Keepalive.FAIL


def test_anything_from_the_peer_restarts_the_interval() -> None:
    keepalive = Keepalive(20.0, 5.0, now=0.0)
    assert keepalive.expire(20.0) == Keepalive.PING
    keepalive.seen(22.0)  # the pong (or any frame)
    assert keepalive.due == 42.0
    assert keepalive.expire(30.0) is None


def test_without_a_timeout_pings_repeat_and_nothing_fails() -> None:
    keepalive = Keepalive(1.0, 0.0, now=0.0)
    for second in range(1, 6):
        assert keepalive.expire(float(second)) == Keepalive.PING
        assert keepalive.due == second + 1.0


class _Link(LinkBase):
    def __init__(self, callbacks: Callbacks) -> None:
        super().__init__(WebsocketProtocol(), callbacks, WebsocketRequest())
        self.sent = b""

    def _write(self, data: bytes) -> None:
        self.sent += data


def test_keepalive_pongs_are_hidden_from_on_pong_message_others_are_not() -> None:
    pongs: list[bytes] = []
    link = _Link(Callbacks(on_pong_message=lambda session, message: pongs.append(message)))
    link.keepalive_ping()
    link.keepalive_ping()
    first, second = b"shs-keepalive-1", b"shs-keepalive-2"
    assert first in link.sent and second in link.sent
    events = [ws.PongReceived(second), ws.PongReceived(b"mine"), ws.PongReceived(first)]
    asyncio.run(link.handle(events))
    # the pong of the latest keepalive ping answers the older one too; a late pong of
    # that older ping is no longer recognised and goes to the handler like any pong
    assert pongs == [b"mine", first]


def test_a_failed_keepalive_closes_with_1011_and_says_why() -> None:
    closes: list[object] = []
    link = _Link(Callbacks(on_close=lambda session, reason: closes.append(reason)))
    link.keepalive_failed()
    assert link.finished and link.sent.startswith(b"\x88")  # a Close frame went out
    asyncio.run(link.finish())
    (reason,) = closes
    assert (reason.code, reason.reason) == (1011, KEEPALIVE_REASON)  # type: ignore[attr-defined]
    assert reason.message == close_message(ws.Closed(1011, KEEPALIVE_REASON, False))  # type: ignore[attr-defined]
    assert "keepalive ping" in reason.message  # type: ignore[attr-defined]
