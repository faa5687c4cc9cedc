"""A server process for the memory tests: ``memory_server.py TRANSPORT STATIC_DIR PORT_FILE``.

It serves ``/upload`` (a multipart file, answered with its size and SHA-256,
computed by streaming the spooled file), ``STATIC_DIR`` under ``/files/*`` and
a websocket at ``/ws/file`` that sends the file named by each text message,
writes its port to ``PORT_FILE`` once it listens, and stops when stdin closes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

from simple_http_server import App, MultipartFile, WebsocketHandler, WebsocketSession
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server


def build_app(static_dir: str) -> App:
    app = App()

    @app.websocket_handler(endpoint="/ws/file")
    class FileSender(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            # A coroutine on the asyncio loop: the file must still stream.
            session.send_file(os.path.join(static_dir, message), chunk_size=1 << 20)
            session.send("sent")

    @app.route("/upload", method="POST")
    def upload(doc: MultipartFile) -> dict[str, object]:
        digest = hashlib.sha256()
        handle = doc.open()
        while block := handle.read(1 << 20):
            digest.update(block)
        return {"size": doc.size, "sha256": digest.hexdigest(), "filename": doc.filename}

    return app


def main() -> None:
    transport, static_dir, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
    config = ServerConfig(host="127.0.0.1", port=0).with_changes(max_upload_size=1 << 30)
    server = Server(
        build_app(static_dir),
        config,
        {"/files/*": static_dir},
        prefer_coroutine=transport == "asyncio",
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.is_ready():
            break
        threading.Event().wait(0.01)
    with open(port_file + ".tmp", "w") as out:
        out.write(str(server.port))
    os.replace(port_file + ".tmp", port_file)
    sys.stdin.read()  # until the test closes our stdin
    server.stop()
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
