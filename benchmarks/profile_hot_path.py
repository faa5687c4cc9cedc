"""Where the time goes: sample our server with py-spy while wrk drives ``GET /json``.

    python benchmarks/profile_hot_path.py --mode threaded --duration 10
    python benchmarks/profile_hot_path.py --mode asyncio --path /s/r0004 --routes 10

py-spy runs with ``--gil`` (only the thread holding the GIL is sampled, so idle
workers and blocking waits drop out: what is left is the Python work that
bounds a GIL-bound server).  Prints the functions with the most samples on top
of the stack ("self") and anywhere on it ("inclusive"), as markdown, and keeps
the raw collapsed stacks (flamegraph input) in the results folder.  py-spy comes
from PyPI into the "ours" benchmark virtualenv.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from harness import envs
from harness.procs import ServerProcess, free_port
from harness.workloads import parse_wrk
from run import cpu_plan, ensure_tools

BENCH_DIR = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func`` (package-relative when ours)."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    if "simple_http_server/" in path:
        path = path[path.index("simple_http_server/") :]
    else:
        path = path.rsplit("/", 1)[-1]
    return f"{path}:{match.group('func')}"


def layer(frame: str) -> str:
    """The package (or our module) a frame belongs to."""
    match = FRAME.match(frame.strip())
    path = match.group("file") if match else frame
    for package in ("h11", "wsproto", "multipart", "json", "asyncio", "concurrent"):
        if f"/{package}/" in "/" + path:
            return package
    if "simple_http_server/" in path:
        return "ours: " + path[path.index("simple_http_server/") + len("simple_http_server/") :]
    return "other: " + path.rsplit("/", 1)[-1]


def summarize(raw: Path, top: int) -> str:
    """Markdown tables of self and inclusive samples per function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")
        frames = [frame_name(f) for f in raw_frames]
        layers[layer(raw_frames[-1])] += count
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples (GIL holder only)", ""]
    for title, counter in (("self by layer", layers), ("self", own), ("inclusive", inclusive)):
        out += [f"| {title} % | function |", "|---:|---|"]
        out += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("threaded", "asyncio"), default="threaded")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/json")
    parser.add_argument("--routes", type=int, default=0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    ns = parser.parse_args()
    ensure_tools()
    python = envs.ensure("ours")
    spy = python.parent / "py-spy"
    server_cpu, _multi, loadgen_cpu = cpu_plan()
    out = ns.out or BENCH_DIR / "results" / time.strftime("profile-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"pyspy-{ns.mode}.txt"
    port = free_port()
    warm = 1.0
    command = [str(spy), "record", "--gil", "--nonblocking", "--rate", str(ns.rate)]
    command += ["--format", "raw", "--duration", str(int(ns.duration + warm + 3))]
    command += ["-o", str(raw), "--", str(python), str(BENCH_DIR / "servers" / "ours.py")]
    command += ["--port", str(port), "--mode", ns.mode, "--routes", str(ns.routes)]
    server = ServerProcess.start(
        command, server_cpu, envs.server_env("ours"), out / f"server-{ns.mode}.log", port
    )
    try:
        server.wait_ready()
        url = f"http://127.0.0.1:{port}{ns.path}"
        wrk = ["taskset", "-c", loadgen_cpu, "wrk", "-t1", f"-c{ns.connections}"]
        wrk += [f"-d{max(1, round(ns.duration))}s", "--latency", url]
        done = subprocess.run(
            wrk, capture_output=True, text=True, timeout=ns.duration + 30, check=True
        )
        print(f"under py-spy: {parse_wrk(done.stdout)['rps']:,.0f} req/s", flush=True)
        server.proc.wait(timeout=warm + 30)  # py-spy stops after --duration
    finally:
        server.stop()
    if not raw.exists():
        sys.exit(f"py-spy wrote nothing:\n{server.log_tail()}")
    report = summarize(raw, ns.top)
    (out / f"profile-{ns.mode}.md").write_text(report)
    print(report)
    print(f"raw stacks: {raw}")


if __name__ == "__main__":
    main()
