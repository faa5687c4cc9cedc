"""The servers compared side by side, and what each of them can be asked to do."""

from __future__ import annotations

from dataclasses import dataclass

#: Workload families (see ``workloads.py``).
HTTP = "http"
WS = "ws"
UPLOAD = "upload"
DOWNLOAD = "download"
WORKERS = "workers"


@dataclass(frozen=True)
class Contender:
    """One server configuration.

    Attributes:
        name: short id used on the command line and in results.
        label: what the tables show.
        env: virtualenv name (see ``envs.py``).
        script: file under ``benchmarks/servers/``.
        mode: the script's ``--mode``.
        kind: ``threaded`` or ``asyncio``: which ceiling and which original it is
            compared with.
        role: ``ours``, ``original``, ``uvicorn``, ``waitress`` or ``ceiling``.
        families: workload families it takes part in.
    """

    name: str
    label: str
    env: str
    script: str
    mode: str
    kind: str
    role: str
    families: frozenset[str]


_ALL = frozenset({HTTP, WS, UPLOAD, DOWNLOAD})

CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "ours-threaded",
        "ours (threaded)",
        "ours",
        "ours.py",
        "threaded",
        "threaded",
        "ours",
        _ALL | {WORKERS},
    ),
    Contender(
        "ours-asyncio",
        "ours (asyncio)",
        "ours",
        "ours.py",
        "asyncio",
        "asyncio",
        "ours",
        _ALL | {WORKERS},
    ),
    Contender(
        "ours-asyncio-async",
        "ours (asyncio, async def)",
        "ours",
        "ours.py",
        "asyncio-async",
        "asyncio",
        "ours",
        frozenset({HTTP, WS}),
    ),
    Contender(
        "original-threaded",
        "simple-http-server 0.22.3 (threaded)",
        "original",
        "original.py",
        "threaded",
        "threaded",
        "original",
        _ALL,
    ),
    Contender(
        "original-coroutine",
        "simple-http-server 0.22.3 (coroutine)",
        "original",
        "original.py",
        "coroutine",
        "asyncio",
        "original",
        _ALL,
    ),
    Contender(
        "uvicorn-h11",
        "uvicorn + starlette (h11)",
        "uvicorn",
        "uvicorn_starlette.py",
        "h11",
        "asyncio",
        "uvicorn",
        _ALL,
    ),
    Contender(
        "waitress",
        "waitress (bare WSGI)",
        "ours",
        "waitress_wsgi.py",
        "threads",
        "threaded",
        "waitress",
        frozenset({HTTP, UPLOAD, DOWNLOAD}),
    ),
    Contender(
        "ceiling-asyncio",
        "h11 ceiling (asyncio)",
        "ours",
        "ceiling_asyncio.py",
        "asyncio",
        "asyncio",
        "ceiling",
        frozenset({HTTP, WS}),
    ),
    Contender(
        "ceiling-threaded",
        "h11 ceiling (threaded)",
        "ours",
        "ceiling_threaded.py",
        "threads",
        "threaded",
        "ceiling",
        frozenset({HTTP, WS}),
    ),
)

BY_NAME = {c.name: c for c in CONTENDERS}


def reference(kind: str, role: str) -> Contender | None:
    """The contender of ``role`` to compare a ``kind`` server with (uvicorn has one kind)."""
    if role == "uvicorn":
        return BY_NAME["uvicorn-h11"]
    for contender in CONTENDERS:
        if contender.role == role and contender.kind == kind:
            return contender
    return None
