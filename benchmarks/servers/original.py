"""Benchmark server: the original ``simple-http-server==0.22.3`` from PyPI.

Runs in its own virtualenv (``--mode threaded|coroutine``).  The same controllers
as ``ours.py``, written against the original API.  ``keep_alive_max_request`` is
raised from its default of 10 so keep-alive workloads measure keep-alive.
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

from simple_http_server import (  # type: ignore[import-not-found, unused-ignore]
    BytesBody,
    MultipartFile,
    PathValue,
    WebsocketHandler,
    route,
    server,
    websocket_handler,
)
from simple_http_server.logger import set_level  # type: ignore[import-not-found, unused-ignore]

args = parse_args(("threaded", "coroutine"))
if "workers" in args.need:
    skip("the original has no worker processes")
set_level("ERROR")
_uploads = itertools.count()


@route("/json")
def json_payload() -> dict[str, str]:
    return JSON_PAYLOAD


@route("/echo", method="POST")
def echo(body: Any = BytesBody()) -> bytes:
    return bytes(body)


@route("/upload", method="POST")
def upload(file: Any = MultipartFile("file")) -> dict[str, int]:
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
    def handler(name: Any = PathValue()) -> dict[str, str]:
        return {"name": str(name)}

    return handler


for _path in static_route_paths(args.routes):
    route(_path)(_static_handler())
for _prefix in pattern_route_prefixes(args.routes):
    route(_prefix + "/{name}")(_pattern_handler())


@websocket_handler(endpoint="/ws")
class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
    def on_text_message(self, session: Any, message: str = "") -> None:
        session.send(message)


server.start(
    host="127.0.0.1",
    port=args.port,
    resources={"/files/*": args.files_dir} if args.files_dir else {},
    keep_alive_max_request=1_000_000_000,
    prefer_coroutine=args.mode == "coroutine",
)
