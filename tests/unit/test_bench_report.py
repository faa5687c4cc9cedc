"""``benchmarks/harness/report.py``: the tables show the servers' CPU per request.

Requests per second move with whatever else runs on the machine; the server's
CPU time per request hardly does, so the tables and the targets carry both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def report() -> Any:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        from harness import report as module
    finally:
        sys.path.remove(str(BENCH_DIR))
    return module


def cell(contender: str, rps: float, cpu_us: float | None) -> dict[str, Any]:
    found: dict[str, Any] = {"workload": "get-ka-50", "contender": contender, "status": "ok"}
    found.update(rps=rps, p50_ms=1.0, p99_ms=2.0, rss_mb=30.0, errors=0)
    if cpu_us is not None:
        found["cpu_us"] = cpu_us
    return found


def row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [part.strip() for part in line.strip("|").split("|")]


def test_workload_table_has_cpu_per_request_and_its_ceiling_ratio(report: Any) -> None:
    cells = [
        cell("ours-threaded", 6000, 120.0),
        cell("ceiling-threaded", 10000, 84.0),
        cell("uvicorn-h11", 5000, None),  # an older run's cell: no CPU figure
    ]
    data = report.summarize(cells)
    order = ["ours-threaded", "ceiling-threaded", "uvicorn-h11"]
    text = report.workload_table("get-ka-50", data["get-ka-50"], order)
    header = text.splitlines()[2]
    assert header.count("|") == text.splitlines()[3].count("|")  # every column aligned
    ours = row(text, report.CONTENDERS["ours-threaded"].label)
    assert ours[-2:] == ["120.0", "0.70x"]  # 84 / 120: the ceiling does it in 70% of the CPU
    assert ours[8] == "0.60x"  # req/s against the ceiling, as before
    uvicorn = row(text, report.CONTENDERS["uvicorn-h11"].label)
    assert uvicorn[-2:] == ["-", "-"]


def test_targets_show_the_cpu_ratio_next_to_the_throughput_one(report: Any) -> None:
    cells = [cell("ours-threaded", 6000, 120.0), cell("ceiling-threaded", 10000, 84.0)]
    text = report.targets_table(report.summarize(cells))
    line = next(line for line in text.splitlines() if "ours-threaded >= 0.9x" in line)
    assert "| 0.60x (CPU 0.70x) | - | **no** |" in line


def test_targets_show_what_the_matching_ceiling_measures_for_the_same_goal(report: Any) -> None:
    cells = [
        cell("ours-threaded", 6000, 120.0),
        cell("ceiling-threaded", 10000, 84.0),
        cell("uvicorn-h11", 5000, 130.0),
        {**cell("ours-threaded", 900, None), "workload": "get-ka-1", "p50_ms": 0.2},
        {**cell("ceiling-threaded", 950, None), "workload": "get-ka-1", "p50_ms": 0.18},
        cell("original-threaded", 2000, None),
    ]
    lines = report.targets_table(report.summarize(cells)).splitlines()
    assert "| target | measured | h11 ceiling | met |" in lines

    def line(start: str) -> list[str]:
        found = next(text for text in lines if text.startswith(f"| {start}"))
        return [part.strip() for part in found.strip("|").split("|")]

    # 10,000 / 5,000: the ceiling itself is 2x uvicorn; ours 1.2x
    assert line("ours-threaded >= 1.3x uvicorn")[1:] == ["1.20x (CPU 1.08x)", "2.00x", "**no**"]
    assert line("ours-threaded >= 0.9x ceiling")[2] == "-"  # the ceiling against itself
    assert line("ours-threaded p50")[1:] == ["0.200 ms", "0.180 ms", "**no**"]
    # the ceiling's worst ratio to the original, over the same HTTP workloads
    assert line("ours-threaded >= 10x")[1:] == [
        "worst 3.0x (get-ka-50)",
        "worst 5.0x (get-ka-50)",
        "**no**",
    ]
    assert line("ours-asyncio >= 1.3x uvicorn")[1:] == ["not measured", "-", "-"]
