"""A server process sharing sessions through Redis, for the multi-process tests.

Run: ``python session_app.py --redis-url redis://... [--port N] [--transport asyncio]``.
It prints ``PORT <n>`` once it accepts connections and serves until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from simple_http_server import App, Session
from simple_http_server.config import ServerConfig
from simple_http_server.server import Server
from simple_http_server.sessions_redis import RedisSessionFactory


def build_app(redis_url: str, prefix: str) -> App:
    app = App()
    app.session_factory = RedisSessionFactory(redis_url, prefix=prefix, max_inactive_interval=60)

    @app.route("/set")
    def set_value(session: Session, name: str, value: str) -> dict[str, object]:
        session.set_attribute(name, value)
        return {"id": session.id, "pid": os.getpid()}

    @app.route("/get")
    def get_value(session: Session, name: str) -> dict[str, object]:
        return {"id": session.id, "value": session.get_attribute(name), "pid": os.getpid()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="shs-test:")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transport", choices=["threaded", "asyncio"], default="threaded")
    options = parser.parse_args()
    config = ServerConfig(host="127.0.0.1", port=options.port, worker_threads=4)
    server = Server(
        build_app(options.redis_url, options.prefix),
        config,
        prefer_coroutine=options.transport == "asyncio",
    )

    def announce() -> None:
        for _ in range(1000):
            if server.is_ready():
                sys.stdout.write(f"PORT {server.port}\n")  # one write: log lines may interleave
                sys.stdout.flush()
                return
            threading.Event().wait(0.01)
        print("NOT READY", flush=True)
        os._exit(1)

    threading.Thread(target=announce, daemon=True).start()
    server.start()
    sys.exit(0)


if __name__ == "__main__":
    main()
