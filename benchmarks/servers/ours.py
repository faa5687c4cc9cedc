"""Benchmark server: this project (``--mode threaded|asyncio``), from the repository's src/.

The runner puts ``<repo>/src`` on ``PYTHONPATH`` and runs this under the "ours"
virtualenv (h11, wsproto, multipart).  Websocket and ``workers=N`` support are
probed at start: when the running code does not have them yet, the script exits
with a skip line instead of failing the whole run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from _common import (
    JSON_PAYLOAD,
    parse_args,
    pattern_route_prefixes,
    scratch_file,
    skip,
    static_route_paths,
)

from simple_http_server import BytesBody, MultipartFile, PathValue, route, server
from simple_http_server.logger import set_level

args = parse_args(("threaded", "asyncio"))
set_level("ERROR")
_uploads = itertools.count()


@route("/json")
def json_payload() -> dict[str, str]:
    return JSON_PAYLOAD


@route("/echo", method="POST")
def echo(body: BytesBody = BytesBody()) -> bytes:
    return bytes(body)


@route("/upload", method="POST")
def upload(file: MultipartFile = MultipartFile("file")) -> dict[str, int]:
    path = scratch_file(args.scratch_dir, str(next(_uploads)))
    file.save_to_file(path)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size:
        os.remove(path)
    return {"size": size}


def _static_handler() -> Callable[[], dict[str, str]]:
    def handler() -> dict[str, str]:
        return JSON_PAYLOAD

    return handler


def _pattern_handler() -> Callable[..., dict[str, str]]:
    def handler(name: PathValue = PathValue()) -> dict[str, str]:
        return {"name": str(name)}

    return handler


for _path in static_route_paths(args.routes):
    route(_path)(_static_handler())
for _prefix in pattern_route_prefixes(args.routes):
    route(_prefix + "/{name}")(_pattern_handler())

try:
    from simple_http_server import WebsocketHandler, websocket_handler

    @websocket_handler(endpoint="/ws")
    class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
        def on_text_message(self, session: Any, message: str = "") -> None:
            session.send(message)

        def on_binary_message(self, session: Any, message: bytes = b"") -> None:
            session.send_binary(message)

except Exception as exc:  # websocket support is written by another issue
    if "ws" in args.need:
        skip(f"websocket support not importable yet ({type(exc).__name__}: {exc})")

options: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": args.port,
    "prefer_coroutine": args.mode == "asyncio",
}
if args.files_dir:
    options["resources"] = {"/files/*": args.files_dir}
if "workers" in args.need:
    options["workers"] = args.workers
try:
    server.start(**options)
except TypeError as exc:
    if "workers" in str(exc):
        skip(f"server.start(workers=N) not supported yet ({exc})")
    raise
