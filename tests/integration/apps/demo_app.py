"""One demo app served every way: our threaded and asyncio transports, WSGI, ASGI.

python -m tests.integration.apps.demo_app PORT [threaded|asyncio] [WORKERS]
gunicorn tests.integration.apps.demo_app:wsgi
uvicorn tests.integration.apps.demo_app:asgi
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from simple_http_server import (
    App,
    BytesBody,
    Headers,
    HttpError,
    JSONBody,
    PathValue,
    Redirect,
    Request,
    Response,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
    logger,
    server,
)
from simple_http_server.dispatch.bodies import RequestBodyReader

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RESOURCES = {"/static/**": STATIC}


def build_app() -> App:
    """The demo app: JSON, text, bodies, streaming, errors, sessions, static files."""
    app = App()

    @app.route("/hello")
    def hello(name: str = "world") -> dict[str, str]:
        return {"hello": name}

    @app.route("/path/{word}")
    def path(word: PathValue) -> str:
        return f"word={word}"

    @app.route("/json", method="POST")
    def json_echo(data: JSONBody) -> dict[str, Any]:
        return {"got": dict(data)}

    @app.route("/form", method="POST")
    def form(name: str, age: int = 0) -> dict[str, Any]:
        return {"name": name, "age": age}

    @app.route("/nothing")
    def nothing() -> tuple[int, str]:
        return 204, ""

    @app.route("/bytes", method="POST")
    def raw(body: BytesBody) -> tuple[int, Headers, bytes]:
        return 201, Headers({"X-Length": str(len(body))}), bytes(body)

    @app.route("/upload", method="POST")
    async def upload(reader: RequestBodyReader) -> dict[str, int]:
        total = 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return {"received": total}
            total += len(chunk)

    @app.route("/stream")
    def stream(count: int = 5, pause: float = 0.0) -> Iterator[bytes]:
        for i in range(count):
            if pause:
                time.sleep(pause)
            yield f"part-{i}\n".encode()

    @app.route("/astream")
    def astream(count: int = 5, pause: float = 0.0) -> AsyncIterator[bytes]:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(count):
                await asyncio.sleep(pause)
                yield f"part-{i}\n".encode()

        return parts()

    @app.route("/write")
    def write(response: Response) -> None:
        response.set_header("Content-Type", "text/plain; charset=utf-8")
        for i in range(3):
            response.write_bytes(f"line-{i}\n".encode())
        response.close()

    @app.route("/write-async")
    async def write_async(response: Response) -> None:
        for i in range(3):
            response.write_bytes(f"async-{i}\n".encode())
        response.close()

    @app.route("/async")
    async def async_route() -> dict[str, bool]:
        return {"async": True}

    @app.route("/teapot")
    def teapot() -> None:
        raise HttpError(418, "I'm a teapot")

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    @app.route("/fails-at-once")
    def fails_at_once() -> Iterator[bytes]:
        def parts() -> Iterator[bytes]:
            raise RuntimeError("secret detail")
            yield b"never"  # pragma: no cover

        return parts()

    @app.route("/go")
    def go() -> None:
        raise Redirect("/hello")

    @app.route("/only-post", method="POST")
    def only_post() -> str:
        return "posted"

    @app.route("/pid")
    def pid() -> str:
        return str(os.getpid())

    @app.route("/slow")
    def slow(seconds: float = 1.0) -> str:
        time.sleep(min(seconds, 10.0))
        return "slow done"

    @app.route("/stop-server")
    def stop_server() -> str:
        server.stop()  # in a worker of workers=N: the whole server
        return f"stopping {os.getpid()}"

    @app.route("/signal-while-logging")
    async def signal_while_logging() -> str:
        """SIGTERM to this process while the loop's thread (with asyncio, the main
        thread, where signal handlers run) is inside a log call: pinned there by
        holding the log queue's lock, as a log call does for a moment."""
        log_queue = logger.get_logger_factory("")._queue
        with log_queue.mutex:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, in this thread
        return "signalled"

    @app.route("/host")
    def host(request: Request) -> dict[str, str]:
        return {"host": request.host, "path": request.path}

    @app.route("/counter")
    def counter(request: Request) -> dict[str, int]:
        session = request.get_session(True)
        value = int(session.get_attribute("n") or 0) + 1
        session.set_attribute("n", value)
        return {"n": value}

    @app.websocket_handler(endpoint="/ws/echo/{room}")
    class Echo(WebsocketHandler):
        def on_handshake(self, request: WebsocketRequest) -> Any:
            if request.get_parameter("deny"):
                return 403
            return None

        def on_open(self, session: WebsocketSession) -> None:
            session.send(f"open {session.request.path_values['room']}")

        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            if message == "bye":
                session.close("done", 4000)
            else:
                session.send(f"echo: {message}")

        async def on_binary_message(self, session: WebsocketSession, message: bytes = b"") -> None:
            session.send_binary(message[::-1])

    return app


app = build_app()
wsgi = server.init_wsgi_proxy(resources=RESOURCES, app_conf=app)
asgi: Any = (
    server.init_asgi_proxy(resources=RESOURCES, app_conf=app)
    if hasattr(server, "init_asgi_proxy")
    else None
)


def main(argv: list[str]) -> None:
    """Serve the demo app with our own server (port, transport, workers, extra key=value)."""
    port = int(argv[0])
    transport = argv[1] if len(argv) > 1 else "threaded"
    workers = int(argv[2]) if len(argv) > 2 else 1
    options: dict[str, Any] = {}
    for item in argv[3:]:
        key, _, value = item.partition("=")
        options[key] = float(value) if "." in value else int(value) if value.isdigit() else value
    slow_fork = float(os.environ.get("DEMO_SLOW_FORK", "0"))
    if slow_fork:  # after-fork work in each worker (a library re-initializing, say)
        os.register_at_fork(after_in_child=lambda: time.sleep(slow_fork))
    server.start(
        host="127.0.0.1",
        port=port,
        resources=RESOURCES,
        app_conf=app,
        prefer_coroutine=transport == "asyncio",
        workers=workers,
        **options,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
