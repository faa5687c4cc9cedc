"""Benchmark server: waitress serving a bare WSGI callable (no framework).

The fastest pure-Python threaded server here; the app does only what each
workload needs: a dict of static routes, a list of compiled patterns, the
``multipart`` package for uploads and ``wsgi.file_wrapper`` for downloads.
Waitress has no websocket support.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import multipart  # type: ignore[import-not-found, unused-ignore]
import waitress  # type: ignore[import-not-found, unused-ignore]
from _common import (
    JSON_PAYLOAD,
    parse_args,
    pattern_route_prefixes,
    scratch_file,
    skip,
    static_route_paths,
)

args = parse_args(("threads",))
if "ws" in args.need:
    skip("waitress has no websocket support")
if "workers" in args.need:
    skip("workers are measured for our server only")

StartResponse = Callable[..., Any]
_uploads = itertools.count()
STATIC_ROUTES = {"/json", *static_route_paths(args.routes)}
PATTERN_ROUTES = [
    re.compile("^" + re.escape(prefix) + "/(?P<name>[^/]+)$")
    for prefix in pattern_route_prefixes(args.routes)
]


def _json(start_response: StartResponse, payload: object) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _not_found(start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def _echo(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _upload(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    _forms, files = multipart.parse_form_data(environ, strict=True)
    path = scratch_file(args.scratch_dir, str(next(_uploads)))
    files["file"].save_as(path)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size:
        os.remove(path)
    return _json(start_response, {"size": size})


def _download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    name = environ["PATH_INFO"][len("/files/") :]
    path = os.path.join(args.files_dir, name)
    if not args.files_dir or "/" in name or name.startswith(".") or not os.path.isfile(path):
        return _not_found(start_response)
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(os.path.getsize(path))),
        ],
    )
    wrapper: Callable[[Any, int], Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(open(path, "rb"), 1024 * 1024)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The whole WSGI application."""
    path: str = environ["PATH_INFO"]
    method: str = environ["REQUEST_METHOD"]
    if method == "GET":
        if path in STATIC_ROUTES:
            return _json(start_response, JSON_PAYLOAD)
        if path.startswith("/files/"):
            return _download(environ, start_response)
        for pattern in PATTERN_ROUTES:
            match = pattern.match(path)
            if match:
                return _json(start_response, {"name": match.group("name")})
    elif method == "POST" and path == "/echo":
        return _echo(environ, start_response)
    elif method == "POST" and path == "/upload":
        return _upload(environ, start_response)
    return _not_found(start_response)


waitress.serve(
    app,
    host="127.0.0.1",
    port=args.port,
    connection_limit=4096,
    ident=None,
    _quiet=True,
)
