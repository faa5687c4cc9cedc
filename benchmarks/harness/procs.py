"""Server processes: start pinned to a CPU set, wait until ready, measure memory, stop.

Each server runs in its own session (process group) so stopping it also stops
the worker processes it may have forked; only processes this module started
are ever signalled.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SKIP_PREFIX = "BENCH-SKIP:"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: Clock ticks per second of ``/proc/<pid>/stat`` times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerSkipped(Exception):
    """The server said it cannot serve this workload (yet)."""


class ServerFailed(Exception):
    """The server did not come up."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class ServerProcess:
    """A running server."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(
        cls,
        command: list[str],
        cpus: str,
        env: dict[str, str],
        log_path: Path,
        port: int,
    ) -> ServerProcess:
        """Start ``command`` pinned to ``cpus`` with output going to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", cpus, *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return cls(proc, port, log_path)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until ``GET /json`` answers 200; raise ServerSkipped/ServerFailed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                for line in tail.splitlines():
                    if line.startswith(SKIP_PREFIX):
                        raise ServerSkipped(line[len(SKIP_PREFIX) :].strip())
                raise ServerFailed(f"exited with {self.proc.returncode}:\n{tail}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/json")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerFailed(f"not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def memory_kib(self, field: str = "VmRSS") -> int:
        """Sum of ``field`` (``VmRSS`` or ``VmHWM``) over the process tree, in KiB."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as status:
                    for line in status:
                        if line.startswith(field + ":"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the process tree (live processes)."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / CLOCK_TICKS

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it when it does not go in time."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:  # leftovers of the group (forked workers) go too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
