"""What every benchmark server agrees on: arguments, endpoints, payloads, route table.

Each server script runs in its own virtualenv (the original package, uvicorn and
ours cannot share one), so this module is stdlib-only and is imported by path:
the scripts live beside it.

Endpoints every contender serves (where it can):

- ``GET /json``: a small JSON dict, serialized per request.
- ``POST /echo``: the request body back, as ``application/octet-stream``.
- ``GET /s/rNNNN`` and ``GET /p/rNNNN/{name}``: the route table (``--routes N``).
- ``POST /upload``: a multipart file part ``file``, saved under ``--scratch-dir``.
- ``GET /files/<name>``: static files from ``--files-dir``.
- ``/ws``: a websocket that echoes every text and binary message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

JSON_PAYLOAD = {"message": "Hello, World!"}
JSON_BYTES = json.dumps(JSON_PAYLOAD).encode()
#: Printed on stdout (exit code 3) when a contender cannot serve a workload yet.
SKIP_PREFIX = "BENCH-SKIP:"
SKIP_EXIT_CODE = 3


@dataclass(frozen=True)
class ServerArgs:
    """Command line of every server script."""

    port: int
    mode: str
    routes: int
    workers: int
    files_dir: str
    scratch_dir: str
    #: Features the workload needs (``ws``, ``workers``): skip when missing.
    need: frozenset[str]


def parse_args(modes: tuple[str, ...]) -> ServerArgs:
    """Parse the arguments shared by all server scripts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=modes, default=modes[0])
    parser.add_argument("--routes", type=int, default=0, help="size of the route table")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--files-dir", default="", help="folder served under /files/")
    parser.add_argument("--scratch-dir", default="", help="folder for uploaded files")
    parser.add_argument("--need", default="", help="comma list of needed features")
    ns = parser.parse_args()
    return ServerArgs(
        port=ns.port,
        mode=ns.mode,
        routes=ns.routes,
        workers=ns.workers,
        files_dir=ns.files_dir,
        scratch_dir=ns.scratch_dir,
        need=frozenset(filter(None, ns.need.split(","))),
    )


def static_route_paths(count: int) -> list[str]:
    """The static half of a route table of ``count`` routes."""
    return [f"/s/r{i:04d}" for i in range(count // 2)]


def pattern_route_prefixes(count: int) -> list[str]:
    """The pattern half: route ``i`` is ``<prefix>/{name}`` (one path value)."""
    return [f"/p/r{i:04d}" for i in range(count - count // 2)]


def route_probe_paths(count: int) -> list[str]:
    """The paths the load generator asks for: the last static and last pattern route."""
    return [static_route_paths(count)[-1], pattern_route_prefixes(count)[-1] + "/bench"]


def scratch_file(scratch_dir: str, suffix: str) -> str:
    """A fresh path under the scratch folder for one upload."""
    return os.path.join(scratch_dir, f"upload-{os.getpid()}-{suffix}")


def skip(reason: str) -> None:
    """Tell the runner this contender cannot serve the requested workload, and exit."""
    print(f"{SKIP_PREFIX} {reason}", flush=True)
    sys.exit(SKIP_EXIT_CODE)
