"""A broadcast chat over websockets, with its page served as a static file.

python examples/websocket_chat.py   # then open http://127.0.0.1:9090/public/chat.html
"""

from __future__ import annotations

import os
import threading

from simple_http_server import (
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketSession,
    server,
    websocket_handler,
)

HERE = os.path.dirname(os.path.abspath(__file__))


@websocket_handler(endpoint="/chat/{room}")
class ChatRoom(WebsocketHandler):
    """Every text message is sent to everybody in the same room."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[WebsocketSession]] = {}
        self.lock = threading.Lock()

    def on_open(self, session: WebsocketSession) -> None:
        with self.lock:
            self.rooms.setdefault(session.request.path_values["room"], set()).add(session)

    def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
        with self.lock:
            self.rooms.get(session.request.path_values["room"], set()).discard(session)

    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        with self.lock:
            members = list(self.rooms.get(session.request.path_values["room"], ()))
        for member in members:
            if not member.is_closed:
                member.send(message)


if __name__ == "__main__":
    server.start(host="127.0.0.1", port=9090, resources={"/public/*": os.path.join(HERE, "static")})
