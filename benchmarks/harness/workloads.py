"""The workloads, and how one cell (one workload against one contender, once) runs.

HTTP workloads are driven by ``wrk``; websocket echo and large transfers by the
small stdlib clients in ``benchmarks/loadgen/``.  Every load generator runs
pinned to its own CPU and is bounded in time (its own duration plus a margin,
after which it is killed).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .contenders import DOWNLOAD, HTTP, UPLOAD, WORKERS, WS

BENCH_DIR = Path(__file__).resolve().parent.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
MARGIN = 20.0  # seconds a load generator may overrun its duration before it is killed


@dataclass(frozen=True)
class Workload:
    """One row group of the report.

    Attributes:
        name: id used on the command line and in results.
        title: the table heading.
        family: which contenders take part (``contenders.HTTP`` ...).
        connections: concurrent connections (websocket clients).
        close: send ``Connection: close`` on every request.
        post_echo: POST 128 bytes to ``/echo`` instead of GET.
        routes: size of the route table the server registers (0: none).
        workers: server processes (``server.start(workers=N)``), 0 for the default.
    """

    name: str
    title: str
    family: str
    connections: int = 1
    close: bool = False
    post_echo: bool = False
    routes: int = 0
    workers: int = 0
    need: frozenset[str] = field(default_factory=frozenset)


def _conns(count: int) -> str:
    return f"{count} connection" + ("s" if count > 1 else "")


WORKLOADS: tuple[Workload, ...] = (
    *(
        Workload(f"get-ka-{c}", f"GET /json, keep-alive, {_conns(c)}", HTTP, c)
        for c in (1, 50, 256)
    ),
    *(
        Workload(
            f"get-close-{c}", f"GET /json, Connection: close, {_conns(c)}", HTTP, c, True
        )
        for c in (1, 50, 256)
    ),
    Workload("post-echo-50", "POST /echo 128 bytes, keep-alive, 50 connections", HTTP, 50,
             post_echo=True),
    Workload("routes-10", "10 routes: GET last static + last pattern route, 50 conns", HTTP, 50,
             routes=10),
    Workload("routes-1000", "1,000 routes: GET last static + last pattern route, 50 conns",
             HTTP, 50, routes=1000),
    Workload("ws-echo-1", "websocket echo, 1 client", WS, 1, need=frozenset({"ws"})),
    Workload("ws-echo-50", "websocket echo, 50 clients", WS, 50, need=frozenset({"ws"})),
    Workload("upload", "multipart upload (one large file part)", UPLOAD),
    Workload("download", "static file download", DOWNLOAD),
    Workload("workers-1", "GET /json keep-alive 50 conns, workers=1", WORKERS, 50, workers=1,
             need=frozenset({"workers"})),
    Workload("workers-2", "GET /json keep-alive 50 conns, workers=2", WORKERS, 50, workers=2,
             need=frozenset({"workers"})),
)  # fmt: skip

BY_NAME = {w.name: w for w in WORKLOADS}


@dataclass
class Settings:
    """How hard and how long each cell runs."""

    duration: float
    transfer_mb: float
    loadgen_cpus: str
    transfer_timeout: float = 300.0
    wrk_timeout: str = "5s"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (ms), request count and errors from ``wrk --latency``."""
    result: dict[str, Any] = {"errors": 0}
    if m := re.search(r"Requests/sec:\s*([\d.]+)", output):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        result["requests"] = int(m.group(1))
        result["seconds"] = _ms(m.group(2)) / 1000.0
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        if m := re.search(rf"^\s*{label}\s+([\d.]+\w+)", output, re.M):
            result[key] = _ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output):  # fmt: skip
        # read errors are how wrk counts servers closing "Connection: close" sockets
        result["errors"] += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
        result["read_errors"] = int(m.group(2))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result["errors"] += int(m.group(1))
    if "rps" not in result:
        raise ValueError("wrk printed no result:\n" + output[-600:])
    return result


def _server_common() -> ModuleType:
    """``servers/_common.py`` (shared with the server scripts, which import it by path)."""
    name = "bench_servers_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "servers" / "_common.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _pinned(settings: Settings, command: list[str]) -> list[str]:
    return ["taskset", "-c", settings.loadgen_cpus, *command]


def _run(command: list[str], timeout: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[3]} exited {done.returncode}: {done.stderr[-600:]}")
    return done.stdout


def wrk_command(workload: Workload, port: int, settings: Settings, duration: float) -> list[str]:
    """The wrk command line of an HTTP workload."""
    command = [
        "wrk",
        "-t1",
        f"-c{workload.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        f"--timeout={settings.wrk_timeout}",
    ]
    if workload.close:
        command += ["-H", "Connection: close"]
    url = f"http://127.0.0.1:{port}/json"
    if workload.post_echo:
        command += ["-s", str(LOADGEN_DIR / "post_echo.lua"), url]
    elif workload.routes:
        command += ["-s", str(LOADGEN_DIR / "paths.lua"), url, "--"]
        command += _server_common().route_probe_paths(workload.routes)
    else:
        command.append(url)
    return command


def run_load(workload: Workload, port: int, settings: Settings) -> dict[str, Any]:
    """Drive a ready server with the workload's load generator; return its numbers."""
    duration = settings.duration
    if workload.family in (HTTP, WORKERS):
        command = _pinned(settings, wrk_command(workload, port, settings, duration))
        return parse_wrk(_run(command, duration + MARGIN))
    if workload.family == WS:
        script = str(LOADGEN_DIR / "ws_echo.py")
        command = [sys.executable, script, "--port", str(port)]
        command += ["--clients", str(workload.connections), "--duration", str(duration)]
        result: dict[str, Any] = json.loads(_run(_pinned(settings, command), duration + MARGIN))
        return result
    mode = "upload" if workload.family == UPLOAD else "download"
    command = [sys.executable, str(LOADGEN_DIR / "transfer.py"), mode, "--port", str(port)]
    command += ["--size-mb", str(settings.transfer_mb)]
    command += ["--timeout", str(settings.transfer_timeout)]
    result = json.loads(_run(_pinned(settings, command), settings.transfer_timeout + MARGIN))
    return result


def warm_up(workload: Workload, port: int, settings: Settings, seconds: float) -> None:
    """A short unmeasured run of the same load (HTTP and websocket only)."""
    if seconds <= 0 or workload.family in (UPLOAD, DOWNLOAD):
        return
    short = Settings(seconds, settings.transfer_mb, settings.loadgen_cpus)
    try:
        run_load(workload, port, short)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, json.JSONDecodeError):
        pass  # the measured run reports the problem
