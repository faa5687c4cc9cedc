"""Benchmark server: Starlette under uvicorn with ``--http h11`` and wsproto websockets.

Runs in its own virtualenv (uvicorn, starlette, python-multipart, wsproto; the
``multipart`` package ours uses clashes with python-multipart's module name).
Plain asyncio loop, no uvloop, no httptools: the pure-Python h11 stack.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import uvicorn  # type: ignore[import-not-found, unused-ignore]
from _common import (
    JSON_PAYLOAD,
    parse_args,
    pattern_route_prefixes,
    scratch_file,
    skip,
    static_route_paths,
)
from starlette.applications import Starlette  # type: ignore[import-not-found, unused-ignore]
from starlette.requests import Request  # type: ignore[import-not-found, unused-ignore]
from starlette.responses import JSONResponse, Response  # type: ignore[import-not-found, unused-ignore]
from starlette.routing import Mount, Route, WebSocketRoute  # type: ignore[import-not-found, unused-ignore]
from starlette.staticfiles import StaticFiles  # type: ignore[import-not-found, unused-ignore]
from starlette.websockets import WebSocket, WebSocketDisconnect  # type: ignore[import-not-found, unused-ignore]

args = parse_args(("h11",))
if "workers" in args.need:
    skip("workers are measured for our server only")
_uploads = itertools.count()
CHUNK = 1024 * 1024


async def json_payload(request: Request) -> Response:
    return JSONResponse(JSON_PAYLOAD)


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def upload(request: Request) -> Response:
    path = scratch_file(args.scratch_dir, str(next(_uploads)))
    async with request.form() as form:
        part: Any = form["file"]
        with open(path, "wb") as out:
            while chunk := await part.read(CHUNK):
                out.write(chunk)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size:
        os.remove(path)
    return JSONResponse({"size": size})


async def static_route(request: Request) -> Response:
    return JSONResponse(JSON_PAYLOAD)


async def pattern_route(request: Request) -> Response:
    return JSONResponse({"name": request.path_params["name"]})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


routes: list[Any] = [
    Route("/json", json_payload),
    Route("/echo", echo, methods=["POST"]),
    Route("/upload", upload, methods=["POST"]),
    WebSocketRoute("/ws", ws_echo),
]
routes += [Route(path, static_route) for path in static_route_paths(args.routes)]
routes += [Route(p + "/{name}", pattern_route) for p in pattern_route_prefixes(args.routes)]
if args.files_dir:
    routes.append(Mount("/files", StaticFiles(directory=args.files_dir)))

uvicorn.run(
    Starlette(routes=routes),
    host="127.0.0.1",
    port=args.port,
    http="h11",
    ws="wsproto",
    loop="asyncio",
    lifespan="off",
    access_log=False,
    log_level="error",
)
