"""Bar charts of a results folder: ``python chart.py benchmarks/results/<time>``.

Runs in the "ours" benchmark virtualenv (matplotlib is a benchmark-only
dependency).  One panel per workload: median req/s (msg/s, MB/s) per server,
with min..max whiskers; writes ``chart.png`` beside ``results.json``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib  # type: ignore[import-not-found, unused-ignore]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

ROLE_COLORS = {
    "ours": "#1f77b4",
    "original": "#d62728",
    "uvicorn": "#2ca02c",
    "waitress": "#9467bd",
    "ceiling": "#7f7f7f",
}


def role(contender: str) -> str:
    """The contender's family, from its name."""
    for prefix in ROLE_COLORS:
        if contender.startswith(prefix):
            return prefix
    return "ceiling" if contender.startswith("ceiling") else "uvicorn"


def main(folder: Path) -> None:
    cells: list[dict[str, Any]] = json.loads((folder / "results.json").read_text())
    panels: dict[str, dict[str, list[float]]] = {}
    units: dict[str, str] = {}
    for cell in cells:
        if cell.get("status") != "ok":
            continue
        key = "mb_per_s" if "mb_per_s" in cell else "rps"
        units[cell["workload"]] = "MB/s" if key == "mb_per_s" else "per second"
        panel = panels.setdefault(cell["workload"], {})
        panel.setdefault(cell["contender"], []).append(float(cell[key]))
    if not panels:
        print("chart: no successful cells")
        return
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (workload, values) in zip(flat, panels.items(), strict=False):
        names = list(values)
        medians = [statistics.median(values[n]) for n in names]
        lows = [m - min(values[n]) for m, n in zip(medians, names, strict=True)]
        highs = [max(values[n]) - m for m, n in zip(medians, names, strict=True)]
        ax.barh(
            names,
            medians,
            xerr=[lows, highs],
            color=[ROLE_COLORS[role(n)] for n in names],
        )
        ax.invert_yaxis()
        ax.set_title(workload, fontsize=10)
        ax.set_xlabel(units[workload], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in flat[len(panels) :]:
        ax.axis("off")
    figure.tight_layout()
    target = folder / "chart.png"
    figure.savefig(target, dpi=90)
    print(f"chart: {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
