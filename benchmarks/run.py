"""Side-by-side benchmark of this project against the original, uvicorn, waitress and h11.

One command runs everything (stdlib only; it builds the contenders' virtualenvs
under ``benchmarks/.venvs/`` on first use)::

    python benchmarks/run.py                 # full: 3 interleaved runs, 5 s per cell
    python benchmarks/run.py --quick         # smoke test: 1 run, 1 s per cell, 20 MB bodies
    python benchmarks/run.py --workloads get-ka-50,routes-1000 --contenders ours-asyncio

Every server runs on 127.0.0.1 pinned to one CPU, the load generator on another;
each cell starts a fresh server.  Results go to ``benchmarks/results/<time>/``
(``results.md``, ``results.json``, ``chart.png``); ``--update-readme`` also
writes the tables into ``benchmarks/README.md``.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import envs, report
from harness.contenders import BY_NAME as CONTENDERS
from harness.contenders import CONTENDERS as ALL_CONTENDERS
from harness.contenders import DOWNLOAD, UPLOAD, WORKERS, Contender
from harness.procs import ServerFailed, ServerProcess, ServerSkipped, cpu_count, free_port
from harness.workloads import BY_NAME as WORKLOADS
from harness.workloads import WORKLOADS as ALL_WORKLOADS
from harness.workloads import Settings, Workload, run_load, warm_up

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR / "README.md"
MARK_START = "<!-- results:start -->"
MARK_END = "<!-- results:end -->"
SERVER_START_COST = 2.0  # seconds per cell spent starting and stopping a server (estimate)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 run, 1 s cells, 20 MB bodies")
    parser.add_argument("--duration", type=float, help="seconds per cell (default 5, quick 1)")
    parser.add_argument("--runs", type=int, help="interleaved runs (default 3, quick 1)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each cell")
    parser.add_argument("--transfer-mb", type=float, help="upload/download size (default 200)")
    parser.add_argument("--workloads", default="", help="comma list (default: all)")
    parser.add_argument("--contenders", default="", help="comma list (default: all)")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--update-readme", action="store_true", help="write tables to README")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--rerender",
        type=Path,
        metavar="DIR",
        help="redo an earlier run's tables from DIR/results.json (no load is run)",
    )
    parser.add_argument("--list", action="store_true", help="list workloads and contenders")
    ns = parser.parse_args()
    ns.duration = ns.duration or (1.0 if ns.quick else 5.0)
    ns.runs = ns.runs or (1 if ns.quick else 3)
    ns.warmup = ns.warmup if ns.warmup is not None else (0.0 if ns.quick else 1.0)
    ns.transfer_mb = ns.transfer_mb or (20.0 if ns.quick else 200.0)
    return ns


def pick(names: str, known: dict[str, Any], what: str) -> list[str]:
    """The selected names, in the canonical order."""
    if not names:
        return list(known)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return [n for n in known if n in chosen]


def ensure_tools() -> None:
    """taskset and wrk must exist; wrk is installed from Debian when missing (as root)."""
    if shutil.which("taskset") is None:
        sys.exit("taskset is missing (Debian package util-linux)")
    if shutil.which("wrk") is not None:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("[tools] wrk missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=600)
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: install it (Debian: apt-get install -y wrk)")


def cpu_plan() -> tuple[str, str, str]:
    """CPU lists for (one-process server, multi-process server, load generator)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("at least 2 CPUs are needed (server and load generator on different CPUs)")
    loadgen = str(cpus[-1]) if len(cpus) >= 3 else str(cpus[1])
    multi = f"{cpus[0]},{cpus[1]}"  # on 2 CPUs the second is shared with the load generator
    return str(cpus[0]), multi, loadgen


def machine_header(ns: argparse.Namespace, cpus: tuple[str, str, str]) -> str:
    """The machine description and settings above the tables."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "simple-http-server": envs.package_version("original", "simple-http-server"),
        "uvicorn": envs.package_version("uvicorn", "uvicorn"),
        "starlette": envs.package_version("uvicorn", "starlette"),
        "waitress": envs.package_version("ours", "waitress"),
        "h11": envs.package_version("ours", "h11"),
        "wsproto": envs.package_version("ours", "wsproto"),
    }
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?"
    load = os.getloadavg()
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {model}, {cpu_count()} CPUs, "
            f"Linux {platform.release()}, Python {platform.python_version()}; "
            f"load average at start {load[0]:.2f}.",
            f"Server on CPU {cpus[0]} (workers=N: CPUs {cpus[1]}), load generator on CPU "
            f"{cpus[2]}; {ns.runs} interleaved run(s) of {ns.duration:g} s per cell "
            f"(+{ns.warmup:g} s warm-up), {ns.transfer_mb:g} MB bodies; fresh server per cell.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; {wrk_version}.",
            "",
        ]
    )


def server_command(
    contender: Contender, workload: Workload, port: int, data_dir: Path
) -> list[str]:
    """The command line of one server for one workload."""
    command = [str(envs.python_of(contender.env)), str(BENCH_DIR / "servers" / contender.script)]
    command += ["--port", str(port), "--mode", contender.mode]
    if workload.routes:
        command += ["--routes", str(workload.routes)]
    if workload.workers:
        command += ["--workers", str(workload.workers)]
    if workload.need:
        command += ["--need", ",".join(sorted(workload.need))]
    if workload.family == DOWNLOAD:
        command += ["--files-dir", str(data_dir / "files")]
    if workload.family == UPLOAD:
        command += ["--scratch-dir", str(data_dir / "scratch")]
    return command


def run_cell(
    contender: Contender,
    workload: Workload,
    settings: Settings,
    ns: argparse.Namespace,
    cpus: tuple[str, str, str],
    data_dir: Path,
    log_dir: Path,
) -> dict[str, Any]:
    """Start a server, load it, measure it, stop it."""
    port = free_port()
    server_cpus = cpus[1] if workload.family == WORKERS else cpus[0]
    log_path = log_dir / f"{workload.name}--{contender.name}.log"
    server = ServerProcess.start(
        server_command(contender, workload, port, data_dir),
        server_cpus,
        envs.server_env(contender.env),
        log_path,
        port,
    )
    cell: dict[str, Any] = {"workload": workload.name, "contender": contender.name}
    try:
        server.wait_ready()
        warm_up(workload, port, settings, ns.warmup)
        rss_before = server.memory_kib("VmRSS")
        cpu_before = server.cpu_seconds()
        result = run_load(workload, port, settings)
        cpu_used = server.cpu_seconds() - cpu_before
        cell.update(result)
        if workload.family not in (UPLOAD, DOWNLOAD) and result.get("requests"):
            # The server's CPU per request or message: unlike req/s, it hardly moves
            # when other processes share the machine (they take time, not work).
            cell["cpu_us"] = cpu_used / result["requests"] * 1e6
        cell["rss_mb"] = server.memory_kib("VmRSS") / 1024
        if workload.family in (UPLOAD, DOWNLOAD):
            cell["rss_growth_mb"] = (server.memory_kib("VmHWM") - rss_before) / 1024
        if server.proc.poll() is not None:
            cell.update(status="error", reason=f"server died: {server.log_tail(3)}")
        elif result.get("error"):
            cell.update(status="error", reason=str(result["error"])[:160])
        else:
            cell["status"] = "ok"
    except ServerSkipped as exc:
        cell.update(status="skip", reason=str(exc))
    except (ServerFailed, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        cell.update(status="error", reason=" ".join(str(exc).split())[:160])
    finally:
        server.stop()
    return cell


def describe(cell: dict[str, Any]) -> str:
    """One progress line."""
    if cell["status"] != "ok":
        return f"{cell['status']}: {cell.get('reason', '')}"
    if "mb_per_s" in cell:
        return f"{cell['mb_per_s']:.1f} MB/s, peak RSS +{cell.get('rss_growth_mb', 0):.1f} MB"
    p50 = cell.get("p50_ms")
    cpu = cell.get("cpu_us")
    return (
        f"{cell['rps']:,.0f}/s p50 {p50 if p50 is None else round(p50, 3)} ms "
        f"cpu {cpu if cpu is None else round(cpu, 1)} us/op "
        f"rss {cell['rss_mb']:.1f} MB errors {cell.get('errors', 0)}"
    )


def estimate(pairs: list[tuple[Workload, Contender]], ns: argparse.Namespace) -> float:
    """Rough wall time of the whole run in seconds."""
    total = 0.0
    for workload, _contender in pairs:
        if workload.family in (UPLOAD, DOWNLOAD):
            total += SERVER_START_COST + max(2.0, float(ns.transfer_mb) / 50)
        else:
            total += SERVER_START_COST + float(ns.duration) + float(ns.warmup)
    return total * int(ns.runs)


def update_readme(markdown: str) -> None:
    """Replace the results section of benchmarks/README.md."""
    text = README.read_text(encoding="utf-8")
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        sys.exit(f"{README} has no {MARK_START} ... {MARK_END} section")
    text = text[: start + len(MARK_START)] + "\n" + markdown + "\n" + text[end:]
    README.write_text(text, encoding="utf-8")


def rerender(ns: argparse.Namespace) -> None:
    """Write an earlier run's tables again with this report code (same cells, same header)."""
    folder: Path = ns.rerender
    cells = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    before = (folder / "results.md").read_text(encoding="utf-8")
    header = before[: before.index("#### ")].rstrip("\n") + "\n"
    order = [c for c in CONTENDERS if any(cell["contender"] == c for cell in cells)]
    markdown = report.render(cells, order, header)
    (folder / "results.md").write_text(markdown, encoding="utf-8")
    print(f"[run] tables: {folder / 'results.md'}", flush=True)
    if ns.update_readme:
        update_readme(markdown)
        print(f"[run] updated {README}", flush=True)


def main() -> None:
    ns = parse_args()
    if ns.rerender:
        rerender(ns)
        return
    workloads = pick(ns.workloads, WORKLOADS, "workloads")
    contenders = pick(ns.contenders, CONTENDERS, "contenders")
    if ns.list:
        for w in ALL_WORKLOADS:
            print(f"workload   {w.name:18} {w.title}")
        for c in ALL_CONTENDERS:
            print(f"contender  {c.name:18} {c.label}")
        return
    pairs = [
        (WORKLOADS[w], CONTENDERS[c])
        for w in workloads
        for c in contenders
        if WORKLOADS[w].family in CONTENDERS[c].families
    ]
    ensure_tools()
    cpus = cpu_plan()
    for env in envs.PINNED:  # all three: the header reports every contender's version
        envs.ensure(env)
    out = ns.out or BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(ns.duration, ns.transfer_mb, cpus[2])
    print(
        f"[run] {len(pairs)} cells x {ns.runs} run(s), about {estimate(pairs, ns) / 60:.0f} min;"
        f" results in {out}",
        flush=True,
    )
    header = machine_header(ns, cpus)
    cells: list[dict[str, Any]] = []
    skipped: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="shs-bench-") as tmp:
        data_dir = Path(tmp)
        (data_dir / "scratch").mkdir()
        (data_dir / "files").mkdir()
        if any(w.family == DOWNLOAD for w, _c in pairs):
            block = os.urandom(1024 * 1024)
            with open(data_dir / "files" / "big.bin", "wb") as big:
                for _ in range(int(ns.transfer_mb)):
                    big.write(block)
                big.write(block[: int((ns.transfer_mb % 1) * len(block))])
        for run in range(ns.runs):
            for workload_name in workloads:
                workload = WORKLOADS[workload_name]
                here = [c for w, c in pairs if w is workload]
                shift = run % len(here) if here else 0
                for contender in here[shift:] + here[:shift]:  # interleaved, rotated per run
                    key = (workload.name, contender.name)
                    if key in skipped:
                        cell = dict(skipped[key])
                    else:
                        cell = run_cell(
                            contender, workload, settings, ns, cpus, data_dir, out / "logs"
                        )
                        if cell["status"] == "skip":
                            skipped[key] = cell
                    cell["run"] = run + 1
                    cells.append(cell)
                    print(
                        f"[run {run + 1}/{ns.runs}] {workload.name:12} {contender.name:19}"
                        f" {describe(cell)}",
                        flush=True,
                    )
                    (out / "results.json").write_text(json.dumps(cells, indent=1))
    order = [c for c in CONTENDERS if c in contenders]
    markdown = report.render(cells, order, header)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    print(f"[run] tables: {out / 'results.md'}", flush=True)
    if not ns.no_chart:
        chart = subprocess.run(
            [str(envs.python_of("ours")), str(BENCH_DIR / "chart.py"), str(out)],
            timeout=300,
            check=False,
        )
        if chart.returncode != 0:
            print("[run] chart failed (see above)", flush=True)
    if ns.update_readme:
        update_readme(markdown)
        if (out / "chart.png").exists():
            shutil.copyfile(out / "chart.png", BENCH_DIR / "chart.png")
        print(f"[run] updated {README} and {BENCH_DIR / 'chart.png'}", flush=True)


if __name__ == "__main__":
    main()
