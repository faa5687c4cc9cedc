"""Benchmark server: this project, from the repository's src/.

``--mode threaded`` and ``--mode asyncio`` serve plain ``def`` controllers;
``--mode asyncio-async`` serves the ``async def`` variant of the same app on
the asyncio transport (like-for-like with Starlette's ``async def`` endpoints).

The runner puts ``<repo>/src`` on ``PYTHONPATH`` and runs this under the "ours"
virtualenv (h11, wsproto, multipart), with the controllers of ``_app.py``.
"""

from __future__ import annotations

from typing import Any

from _app import register
from _common import parse_args

from simple_http_server import server

args = parse_args(("threaded", "asyncio", "asyncio-async"))
register(args, coroutines=args.mode == "asyncio-async")
options: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": args.port,
    "prefer_coroutine": args.mode.startswith("asyncio"),
}
if args.files_dir:
    options["resources"] = {"/files/*": args.files_dir}
if "workers" in args.need:
    options["workers"] = args.workers
server.start(**options)
