"""``benchmarks/in_process.py`` keeps working as the internals it drives change.

It builds a ``ThreadedConn`` and a ``ThreadedLink`` on fake sockets; a renamed
argument or attribute would otherwise only show up the next time someone
measures.  Its own assertions check that every request got an answer and
every websocket message an echo.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "in_process.py"


def run_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_times_both_exchanges() -> None:
    out = run_script("--count", "50", "--repeat", "1")
    rows = [line for line in out.splitlines() if line.startswith(("| http ", "| ws "))]
    assert len(rows) == 2, out


def test_counts_bytecodes_per_layer() -> None:
    out = run_script("--opcodes", "--count", "20", "--top", "3")
    assert "## http:" in out and "## ws:" in out, out
    first = out.splitlines()[0]
    assert "h11 " in first and "ours " in first, out
