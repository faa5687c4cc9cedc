"""The benchmark app, written once against the original API.

``simple_http_server`` resolves to whichever package the running virtualenv has:
this project (``ours.py``) or the original 0.22.3 (``original.py``), so both serve
the very same controllers.
"""

from __future__ import annotations

import itertools
import os
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from _common import JSON_PAYLOAD, pattern_route_prefixes, scratch_file, static_route_paths

from simple_http_server import (  # type: ignore[import-not-found, unused-ignore]
    BytesBody,
    MultipartFile,
    PathValue,
    WebsocketHandler,
    route,
    websocket_handler,
)
from simple_http_server.logger import set_level  # type: ignore[import-not-found, unused-ignore]


def register(args: Namespace, coroutines: bool = False) -> None:
    """Register the benchmark controllers on the default app.

    With ``coroutines`` the JSON, route-table and websocket controllers are
    ``async def`` (as Starlette's endpoints are); otherwise plain ``def``.
    """
    set_level("ERROR")
    controllers = _coroutines if coroutines else _functions
    route("/json")(controllers()[0])
    for path in static_route_paths(args.routes):
        route(path)(controllers()[0])  # a function of its own for every route
    for prefix in pattern_route_prefixes(args.routes):
        route(prefix + "/{name}")(controllers()[1])
    websocket_handler(endpoint="/ws")(controllers()[2])
    _register_bodies(args)


def _functions() -> tuple[Callable[..., Any], Callable[..., Any], type]:
    """Plain ``def`` controllers: JSON payload, path value, websocket echo."""

    def json_payload() -> dict[str, str]:
        return JSON_PAYLOAD

    def pattern_route(name: Any = PathValue()) -> dict[str, str]:
        return {"name": str(name)}

    class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
        def on_text_message(self, session: Any, message: str = "") -> None:
            session.send(message)

    return json_payload, pattern_route, Echo


def _coroutines() -> tuple[Callable[..., Any], Callable[..., Any], type]:
    """The same controllers as ``async def``."""

    async def json_payload() -> dict[str, str]:
        return JSON_PAYLOAD

    async def pattern_route(name: Any = PathValue()) -> dict[str, str]:
        return {"name": str(name)}

    class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
        async def on_text_message(self, session: Any, message: str = "") -> None:
            session.send(message)

    return json_payload, pattern_route, Echo


def _register_bodies(args: Namespace) -> None:
    """The body workloads: the same plain ``def`` controllers in every variant."""
    uploads = itertools.count()

    @route("/echo", method="POST")
    def echo(body: Any = BytesBody()) -> bytes:
        return bytes(body)

    @route("/upload", method="POST")
    def upload(file: Any = MultipartFile("file")) -> dict[str, int]:
        path = scratch_file(args.scratch_dir, str(next(uploads)))
        file.save_to_file(path)
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size:
            os.remove(path)
        return {"size": size}
