"""Multi-process serving: ``server.start(workers=N)``.

The supervisor (the parent process) binds the listening socket once, then
forks N workers that all accept on it; each worker runs an ordinary
:class:`~simple_http_server.server.Server` in either transport.  A worker that
dies is replaced.  SIGTERM or SIGINT to the supervisor closes its copy of the
socket and forwards SIGTERM to every worker: each stops accepting, lets its
in-flight requests finish (up to ``drain_timeout``) and exits; a worker still
alive after that is killed.  A SIGINT meanwhile (a second ^C) is forwarded: the
workers then stop waiting for their requests.  Once every copy of the socket is closed, new
connections are refused by the kernel.  ``server.stop()`` in a worker (a
controller's, say) stops the whole server the same way: the worker writes to a
pipe the supervisor watches, then stops itself.

POSIX only (``os.fork``).  The app is imported and compiled in the supervisor
before forking, so workers start fast and share its memory copy-on-write.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import logger as _logging
from .server import host_port

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Supervisor", "run_workers"]

_log = _logging.get_logger("simple_http_server.workers")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: A worker that dies sooner than this after its start is restarted only after this delay.
RESTART_BACKOFF = 1.0
_POLL = 0.1
#: Seconds between the SIGTERM to the workers and the SIGINT that hurries them: a
#: worker that took both at once could run its SIGINT handler first (Python runs
#: pending handlers in signal number order), as a graceful stop, not a second one.
_HURRY_AFTER = 0.3


class Supervisor:
    """Forks, watches and stops the worker processes of one server.

    Args:
        server: the server each worker runs (its config gives host, port, drain timeout).
        workers: how many worker processes to keep running.
    """

    def __init__(self, server: Server, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if not hasattr(os, "fork"):
            raise RuntimeError("workers > 1 needs os.fork (POSIX)")
        self.server = server
        self.workers = workers
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        #: The signal that stopped the supervisor (logged by its main loop, not the handler).
        self.stop_signal = 0
        #: A worker's server.stop() asked to stop the whole server.
        self.stop_requested = False
        #: A SIGINT came while stopping (a second ^C): the workers stop waiting for
        #: their requests in flight.
        self.hurried = False
        self.owner_thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._pending_starts: list[float] = []  # when a replacement may start
        #: The pipe a worker's stop() writes to (read end, write end), while running.
        self._requests: tuple[int, int] | None = None

    # -- life cycle ----------------------------------------------------------
    def run(self) -> None:
        """Serve with the workers until SIGTERM/SIGINT or :meth:`stop` (blocking)."""
        server = self.server
        if not server._begin():  # stop() came first
            return
        try:
            server.app.compiled()
            listener = server._listener()
        except BaseException:
            server._end()
            raise
        server.sock = listener
        self.owner_thread = threading.current_thread()
        server._attach(self)
        previous = self._install_signals()
        try:
            self._requests = _open_pipe()
            _logging.flush()
            for _ in range(self.workers):
                if not self.stopping:
                    self._spawn()
            if server._set_ready():
                _log.info(
                    "Supervisor %d serving on %s with %d workers",
                    os.getpid(),
                    host_port(server.config.host or "0.0.0.0", server.port),
                    self.workers,
                )
            while not self.stopping:
                self._take_requests()
                self._reap()
                self._start_replacements()
                self._wake.wait(_POLL)
                self._wake.clear()
            if self.stop_signal:
                count = len(self.children)
                _log.info("Signal %d: stopping %d workers gracefully", self.stop_signal, count)
            elif self.stop_requested:
                _log.info("A worker called stop(): stopping the workers gracefully")
        finally:
            server._ready.clear()
            listener.close()
            self._stop_children()
            requests, self._requests = self._requests, None
            for fd in requests or ():
                os.close(fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.sock = None
            server._end()

    def stop(self, wait: bool = True) -> None:
        """Stop every worker gracefully (from a signal handler or any thread)."""
        self.stopping = True
        self._wake.set()
        if wait and threading.current_thread() is not self.owner_thread:
            self.server._stopped.wait(self.server.config.drain_timeout + 10)

    def _take_requests(self) -> bool:
        """True (and stopping) once a worker's stop() wrote to the pipe."""
        if self._requests is not None and not self.stopping:
            try:
                asked = bool(os.read(self._requests[0], 256))
            except BlockingIOError:
                asked = False
            if asked:
                self.stop_requested = self.stopping = True
        return self.stopping

    # -- signals -------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for sig in _STOP_SIGNALS:
            previous[sig] = signal.signal(sig, self._on_stop_signal)
        return previous

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only plain assignments: the handler runs in the main thread, maybe inside a
        # lock it holds (the log queue's, the wake event's); taking it again would
        # deadlock.  The main loop sees the flag within _POLL, and logs.
        if self.stopping and signum == signal.SIGINT:
            self.hurried = True
            return
        self.stop_signal = signum
        self.stopping = True

    # -- workers -------------------------------------------------------------
    def _spawn(self) -> None:
        parent = os.getpid()
        # Until the child has its own handlers, the supervisor's would catch a stop
        # signal there and forget it (the worker then served on until killed): the
        # signals wait, blocked, through the fork and the after-fork hooks.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, measured by the tests' results
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one that came: exit
                os._exit(self._run_worker(parent))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = time.monotonic()
        _log.info("Started worker %d", pid)

    def _run_worker(self, parent: int) -> int:
        server = self.server
        server._forked()
        if self._requests is not None:
            os.close(self._requests[0])
            server._stop_supervisor = functools.partial(_ask_stop, self._requests[1])
        threading.Thread(
            target=_watch_parent, args=(server, parent), name="shs-parent-watch", daemon=True
        ).start()
        code = 0
        try:
            server.start()
        except BaseException:
            _log.exception("Worker %d failed", os.getpid())
            code = 1
        finally:
            _logging.flush()
        return code

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            started = self.children.pop(pid, None)
            if started is None:
                continue
            if self._take_requests():  # it exited on a stop() of its own: no replacement
                continue
            _log.warning("Worker %d exited (%s); starting another", pid, _describe(status))
            early = time.monotonic() - started < RESTART_BACKOFF
            self._pending_starts.append(time.monotonic() + (RESTART_BACKOFF if early else 0))

    def _start_replacements(self) -> None:
        now = time.monotonic()
        due = [t for t in self._pending_starts if t <= now]
        self._pending_starts = [t for t in self._pending_starts if t > now]
        for _ in due:
            if len(self.children) < self.workers:
                self._spawn()

    def _stop_children(self) -> None:
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)
        asked = time.monotonic()
        deadline = asked + self.server.config.drain_timeout + 3
        hurried = False
        while self.children and time.monotonic() < deadline:
            if self.hurried and not hurried and time.monotonic() >= asked + _HURRY_AFTER:
                hurried = True
                _log.warning("Signal %d again: the workers stop waiting for their requests",
                             signal.SIGINT)  # fmt: skip
                for pid in list(self.children):  # a SIGINT while stopping: the same in each
                    _signal(pid, signal.SIGINT)
            self._reap_stopping()
            time.sleep(0.05)
        for pid in list(self.children):
            _log.warning("Worker %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while self.children and time.monotonic() < end:
            self._reap_stopping()
            time.sleep(0.02)

    def _reap_stopping(self) -> None:
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.pop(pid, None)


def _open_pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)  # a worker's stop() never blocks on it
    return read, write


def _ask_stop(fd: int) -> None:
    try:
        os.write(fd, b"s")
    except OSError:  # full: a stop is on its way; closed: the supervisor is gone
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _watch_parent(server: Server, parent: int) -> None:
    """Stop a worker whose supervisor died (it would otherwise serve on, unsupervised)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    _log.warning("Supervisor %d is gone; worker %d stops", parent, os.getpid())
    server._stop(wait=False)


def run_workers(server: Server, workers: int) -> None:
    """Serve ``server`` with ``workers`` processes; one process serves in place."""
    if workers <= 1:
        server.start()
        return
    Supervisor(server, workers).run()
