"""Benchmark server: the original ``simple-http-server==0.22.3`` from PyPI.

Runs in its own virtualenv (``--mode threaded|coroutine``) with the controllers of
``_app.py``.  ``keep_alive_max_request`` is raised from its default of 10 so
keep-alive workloads measure keep-alive.
"""

from __future__ import annotations

from _app import register
from _common import parse_args, skip

from simple_http_server import server  # type: ignore[import-not-found, unused-ignore]

args = parse_args(("threaded", "coroutine"))
if "workers" in args.need:
    skip("the original has no worker processes")
register(args)
server.start(
    host="127.0.0.1",
    port=args.port,
    resources={"/files/*": args.files_dir} if args.files_dir else {},
    keep_alive_max_request=1_000_000_000,
    prefer_coroutine=args.mode == "coroutine",
)
