"""The benchmark app, written once against the original API.

``simple_http_server`` resolves to whichever package the running virtualenv has:
this project (``ours.py``) or the original 0.22.3 (``original.py``), so both serve
the very same controllers.
"""

from __future__ import annotations

import itertools
import os
from argparse import Namespace
from collections.abc import Callable, Coroutine
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
    if coroutines:
        _register_coroutines(args)
    else:
        _register_functions(args)
    _register_bodies(args)


def _register_functions(args: Namespace) -> None:
    @route("/json")
    def json_payload() -> dict[str, str]:
        return JSON_PAYLOAD

    def static_handler() -> Callable[[], dict[str, str]]:
        def handler() -> dict[str, str]:
            return JSON_PAYLOAD

        return handler

    def pattern_handler() -> Callable[..., dict[str, str]]:
        def handler(name: Any = PathValue()) -> dict[str, str]:
            return {"name": str(name)}

        return handler

    for path in static_route_paths(args.routes):
        route(path)(static_handler())
    for prefix in pattern_route_prefixes(args.routes):
        route(prefix + "/{name}")(pattern_handler())

    @websocket_handler(endpoint="/ws")
    class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
        def on_text_message(self, session: Any, message: str = "") -> None:
            session.send(message)

    del Echo


def _register_coroutines(args: Namespace) -> None:
    @route("/json")
    async def json_payload() -> dict[str, str]:
        return JSON_PAYLOAD

    def static_handler() -> Callable[[], Coroutine[Any, Any, dict[str, str]]]:
        async def handler() -> dict[str, str]:
            return JSON_PAYLOAD

        return handler

    def pattern_handler() -> Callable[..., Coroutine[Any, Any, dict[str, str]]]:
        async def handler(name: Any = PathValue()) -> dict[str, str]:
            return {"name": str(name)}

        return handler

    for path in static_route_paths(args.routes):
        route(path)(static_handler())
    for prefix in pattern_route_prefixes(args.routes):
        route(prefix + "/{name}")(pattern_handler())

    @websocket_handler(endpoint="/ws")
    class Echo(WebsocketHandler):  # type: ignore[misc, unused-ignore]
        async def on_text_message(self, session: Any, message: str = "") -> None:
            session.send(message)

    del Echo


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
