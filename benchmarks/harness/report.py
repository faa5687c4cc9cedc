"""Results to markdown: one table per workload, the routing and workers comparisons,
and the issue's targets checked against the measured ratios.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .contenders import BY_NAME as CONTENDERS
from .contenders import DOWNLOAD, UPLOAD, WS, reference
from .workloads import BY_NAME as WORKLOADS

Cell = dict[str, Any]


@dataclass
class Summary:
    """The runs of one contender on one workload, aggregated."""

    contender: str
    status: str  # ok | skip | error
    reason: str = ""
    value: float = 0.0  # median req/s, msg/s or MB/s
    low: float = 0.0
    high: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    #: The server's CPU time per request or message, in microseconds (median).
    cpu_us: float | None = None
    growth_mb: float | None = None
    seconds: float | None = None
    errors: int = 0
    runs: int = 0


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(cells: list[Cell]) -> dict[str, dict[str, Summary]]:
    """``{workload: {contender: Summary}}`` over every run."""
    grouped: dict[str, dict[str, list[Cell]]] = {}
    for cell in cells:
        grouped.setdefault(cell["workload"], {}).setdefault(cell["contender"], []).append(cell)
    out: dict[str, dict[str, Summary]] = {}
    for workload, by_contender in grouped.items():
        transfer = WORKLOADS[workload].family in (UPLOAD, DOWNLOAD)
        key = "mb_per_s" if transfer else "rps"
        for contender, runs in by_contender.items():
            ok = [c for c in runs if c["status"] == "ok"]
            if not ok:
                first = runs[0]
                out.setdefault(workload, {})[contender] = Summary(
                    contender, first["status"], first.get("reason", "")
                )
                continue
            values = [float(c[key]) for c in ok]
            out.setdefault(workload, {})[contender] = Summary(
                contender,
                "ok",
                value=statistics.median(values),
                low=min(values),
                high=max(values),
                p50_ms=_median([c.get("p50_ms") for c in ok]),
                p99_ms=_median([c.get("p99_ms") for c in ok]),
                rss_mb=_median([c.get("rss_mb") for c in ok]),
                cpu_us=_median([c.get("cpu_us") for c in ok]),
                growth_mb=max((c.get("rss_growth_mb") or 0.0) for c in ok) if transfer else None,
                seconds=_median([c.get("seconds") for c in ok]),
                errors=sum(int(c.get("errors") or 0) for c in ok),
                runs=len(ok),
            )
    return out


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(summary: Summary, ref: Summary | None) -> str:
    if ref is None or ref.status != "ok" or not ref.value or summary.status != "ok":
        return "-"
    if ref.contender == summary.contender:
        return "1.00x"
    return f"{summary.value / ref.value:.2f}x"


def _cpu_ratio(summary: Summary, ref: Summary | None) -> str:
    """How much less CPU per request than ``ref`` (``ref``'s CPU over ours: >1 is cheaper)."""
    if ref is None or ref.status != "ok" or not ref.cpu_us or not summary.cpu_us:
        return "-"
    return f"{ref.cpu_us / summary.cpu_us:.2f}x"


def _ref(table: dict[str, Summary], contender: str, role: str) -> Summary | None:
    found = reference(CONTENDERS[contender].kind, role)
    return table.get(found.name) if found else None


def workload_table(workload: str, table: dict[str, Summary], order: list[str]) -> str:
    """The markdown table of one workload."""
    spec = WORKLOADS[workload]
    transfer = spec.family in (UPLOAD, DOWNLOAD)
    unit = "MB/s" if transfer else ("msg/s" if spec.family == WS else "req/s")
    lines = [f"#### {spec.title} (`{workload}`)", ""]
    if transfer:
        lines += [
            f"| server | {unit} (median) | min..max | seconds | peak RSS growth MB "
            "| x uvicorn | x original |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            f"| server | {unit} (median) | min..max | p50 ms | p99 ms | RSS MB | errors "
            "| x uvicorn | x ceiling | x original | CPU us/op | x ceiling (CPU) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for name in order:
        if name not in table:
            continue
        s = table[name]
        label = CONTENDERS[name].label
        if s.status != "ok":
            cols = 6 if transfer else 11
            lines.append(f"| {label} | {s.status}: {s.reason} |" + " |" * (cols - 1))
            continue
        vs_uvicorn = _ratio(s, _ref(table, name, "uvicorn"))
        vs_original = _ratio(s, _ref(table, name, "original"))
        spread = f"{_num(s.low, 1 if transfer else 0)}..{_num(s.high, 1 if transfer else 0)}"
        if transfer:
            lines.append(
                f"| {label} | {_num(s.value, 1)} | {spread} | {_num(s.seconds, 2)} "
                f"| {_num(s.growth_mb, 1)} | {vs_uvicorn} | {vs_original} |"
            )
        else:
            ceiling = _ref(table, name, "ceiling")
            lines.append(
                f"| {label} | {_num(s.value)} | {spread} | {_num(s.p50_ms, 3)} "
                f"| {_num(s.p99_ms, 3)} | {_num(s.rss_mb, 1)} | {s.errors} "
                f"| {vs_uvicorn} | {_ratio(s, ceiling)} | {vs_original} "
                f"| {_num(s.cpu_us, 1)} | {_cpu_ratio(s, ceiling)} |"
            )
    return "\n".join(lines) + "\n"


def pair_table(
    title: str, first: str, second: str, data: dict[str, dict[str, Summary]], order: list[str]
) -> str:
    """Two workloads side by side per contender (routing 10 vs 1,000, workers 1 vs 2)."""
    a, b = data.get(first, {}), data.get(second, {})
    lines = [
        f"#### {title}",
        "",
        f"| server | `{first}` req/s | `{second}` req/s | {second} / {first} |",
        "|---|---:|---:|---:|",
    ]
    for name in order:
        if name not in a and name not in b:
            continue
        sa, sb = a.get(name), b.get(name)
        va = _num(sa.value) if sa and sa.status == "ok" else (sa.status if sa else "-")
        vb = _num(sb.value) if sb and sb.status == "ok" else (sb.status if sb else "-")
        ratio = "-"
        if sa and sb and sa.status == sb.status == "ok" and sa.value:
            ratio = f"{sb.value / sa.value:.2f}x"
        lines.append(f"| {CONTENDERS[name].label} | {va} | {vb} | {ratio} |")
    return "\n".join(lines) + "\n"


def _check(data: dict[str, dict[str, Summary]], workload: str, name: str) -> Summary | None:
    s = data.get(workload, {}).get(name)
    return s if s is not None and s.status == "ok" else None


def targets_table(data: dict[str, dict[str, Summary]]) -> str:
    """The issue's performance targets, each with the measured value and a verdict.

    The "h11 ceiling" column measures the matching ceiling server against the same
    target: where the ceiling itself misses one, no h11-based design of that kind
    reaches it on this machine.
    """
    rows: list[tuple[str, str, str, bool | None]] = []

    def ratio(workload: str, ours: str, ref: str) -> float | None:
        a, b = _check(data, workload, ours), _check(data, workload, ref)
        return a.value / b.value if a is not None and b is not None and b.value else None

    def ratio_row(
        text: str, workload: str, ours: str, ref: str, goal: float, ceiling: str | None
    ) -> None:
        a, b = _check(data, workload, ours), _check(data, workload, ref)
        if a is None or b is None or not b.value:
            rows.append((text, "not measured", "-", None))
            return
        value = a.value / b.value
        measured = f"{value:.2f}x"
        if a.cpu_us and b.cpu_us:  # the same ratio by CPU per request (host-noise proof)
            measured += f" (CPU {b.cpu_us / a.cpu_us:.2f}x)"
        own = ratio(workload, ceiling, ref) if ceiling else None
        rows.append((text, measured, "-" if own is None else f"{own:.2f}x", value >= goal))

    def worst_against(ours: str, original: str) -> tuple[float, str] | None:
        worst: tuple[float, str] | None = None
        for workload, spec in WORKLOADS.items():
            value = ratio(workload, ours, original) if spec.family == "http" else None
            if value is not None:
                worst = min(worst, (value, workload)) if worst else (value, workload)
        return worst

    ours_names = ("ours-threaded", "ours-asyncio", "ours-asyncio-async")
    ceilings = {name: "ceiling-threaded" if name == "ours-threaded" else "ceiling-asyncio"
                for name in ours_names}  # fmt: skip
    for ours in ours_names:
        text = f"{ours} >= 1.3x uvicorn, get-ka-50"
        ratio_row(text, "get-ka-50", ours, "uvicorn-h11", 1.3, ceilings[ours])
    for ours in ours_names:
        ceiling = ceilings[ours]
        goal = 0.9 if ours == "ours-threaded" else 0.8
        text = f"{ours} >= {goal}x {ceiling}, get-ka-50"
        ratio_row(text, "get-ka-50", ours, ceiling, goal, None)
    for ours in ours_names:
        ceiling = ceilings[ours]
        text = f"{ours} p50 <= 0.15 ms at 1 connection"
        s, c = _check(data, "get-ka-1", ours), _check(data, "get-ka-1", ceiling)
        own = "-" if c is None or c.p50_ms is None else f"{c.p50_ms:.3f} ms"
        if s is None or s.p50_ms is None:
            rows.append((text, "not measured", own, None))
        else:
            rows.append((text, f"{s.p50_ms:.3f} ms", own, s.p50_ms <= 0.15))
        for ws in ("ws-echo-1", "ws-echo-50"):
            ratio_row(f"{ours} >= 0.8x bare wsproto echo, {ws}", ws, ours, ceiling, 0.8, None)
        for transfer in ("upload", "download"):
            if transfer not in CONTENDERS[ours].families:
                continue  # the async variant serves the body workloads with the same code
            s = _check(data, transfer, ours)
            text = f"{ours} {transfer}: peak RSS growth < 10 MB"
            if s is None or s.growth_mb is None:
                rows.append((text, "not measured", "-", None))
            else:
                rows.append((text, f"{s.growth_mb:.1f} MB", "-", s.growth_mb < 10))
            text = f"{ours} {transfer} MB/s >= uvicorn"
            ratio_row(text, transfer, ours, "uvicorn-h11", 1.0, None)
        original = "original-threaded" if ours == "ours-threaded" else "original-coroutine"
        text = f"{ours} >= 10x {original} on every HTTP workload"
        worst, own_worst = worst_against(ours, original), worst_against(ceiling, original)
        own = "-" if own_worst is None else f"worst {own_worst[0]:.1f}x ({own_worst[1]})"
        if worst is None:
            rows.append((text, "not measured", own, None))
        else:
            rows.append((text, f"worst {worst[0]:.1f}x ({worst[1]})", own, worst[0] >= 10))
    lines = [
        "#### Targets (issue 10)",
        "",
        "| target | measured | h11 ceiling | met |",
        "|---|---:|---:|:---:|",
    ]
    for text, measured, own, met in rows:
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {text} | {measured} | {own} | {verdict} |")
    return "\n".join(lines) + "\n"


def render(cells: list[Cell], order: list[str], header: str) -> str:
    """The whole markdown report."""
    data = summarize(cells)
    parts = [header]
    parts.append(targets_table(data))
    for workload in WORKLOADS:
        if workload in data:
            parts.append(workload_table(workload, data[workload], order))
    if "routes-10" in data or "routes-1000" in data:
        title = "Routing cost: 1,000 routes vs 10 (issue 3: ours within 10%)"
        parts.append(pair_table(title, "routes-10", "routes-1000", data, order))
    if "workers-1" in data or "workers-2" in data:
        parts.append(pair_table("workers=1 vs workers=2", "workers-1", "workers-2", data, order))
    return "\n".join(parts)
