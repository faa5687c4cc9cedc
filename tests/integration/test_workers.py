"""Multi-process workers and graceful shutdown on SIGTERM, with real subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from .apps import harness


def demo(port: int, transport: str, workers: int, *options: str) -> list[str]:
    return harness.python(
        "-m", "tests.integration.apps.demo_app", str(port), transport, str(workers), *options
    )


def pids_seen(proc: harness.Proc, want: int, seconds: float = 20.0) -> set[int]:
    """PIDs answering ``/pid`` on fresh connections, until ``want`` distinct ones (bounded).

    The kernel hands a shared listening socket's connections to whichever worker
    wakes first, so a busy machine can favour one worker for a while: keep asking,
    with short pauses, for up to ``seconds``.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    attempt = 0
    while time.monotonic() < deadline:
        status, _, body = proc.get("/pid")
        assert status == 200
        seen.add(int(body))
        if len(seen) >= want:
            break
        attempt += 1
        if attempt % 10 == 0:
            time.sleep(0.05)
    return seen


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def slow_request(proc: harness.Proc, seconds: float, out: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(proc.get(f"/slow?seconds={seconds}", timeout=20))
        except Exception as exc:  # reported by the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_two_workers_answer_and_a_killed_one_is_replaced(transport: str) -> None:
    port = harness.free_port()
    with harness.running(demo(port, transport, 2), port) as proc:
        pids = pids_seen(proc, 2)
        assert len(pids) == 2, pids
        assert proc.popen.pid not in pids  # the supervisor itself serves nothing
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):  # the service goes on while the worker is replaced
            assert proc.get("/hello")[0] == 200
        assert wait_until(lambda: len(pids_seen(proc, 2, 5.0) - {victim}) == 2, 15), proc.output()
        assert victim not in pids_seen(proc, 2, 5.0)
        assert proc.popen.poll() is None


@pytest.mark.parametrize(("transport", "workers"), [
    ("threaded", 1), ("asyncio", 1), ("threaded", 2), ("asyncio", 2),
])  # fmt: skip
def test_sigterm_lets_a_slow_request_finish_and_refuses_new_ones(
    transport: str, workers: int
) -> None:
    port = harness.free_port()
    with harness.running(demo(port, transport, workers, "drain_timeout=8.0"), port) as proc:
        if workers > 1:
            assert len(pids_seen(proc, 2)) == 2
        results: list[object] = []
        thread = slow_request(proc, 3.0, results)
        time.sleep(0.8)  # the slow request is being served
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert wait_until(lambda: refused(port), 5), "new connections are still accepted"
        thread.join(20)
        assert results and not isinstance(results[0], Exception), results
        status, _, body = results[0]  # type: ignore[misc]
        assert (status, body) == (200, b"slow done")
        assert proc.popen.wait(15) == 0, proc.output()
        assert time.monotonic() - started < 12


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_sigterm_stops_an_idle_server_promptly(transport: str) -> None:
    """No connection wakes the server: the signal itself must (asyncio: the loop's selector)."""
    port = harness.free_port()
    with harness.running(demo(port, transport, 1), port) as proc:
        time.sleep(0.3)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(8) == 0, proc.output()
        assert refused(port)


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_a_signal_landing_in_a_log_call_stops_the_server(transport: str) -> None:
    """With asyncio, async controllers run on the main thread, where signal handlers
    run: a handler that logged itself deadlocked on the log queue's lock when the
    signal landed inside a log call (the server never answered again)."""
    port = harness.free_port()
    with harness.running(demo(port, transport, 1), port) as proc:
        status, _, body = proc.get("/signal-while-logging", timeout=15)
        assert (status, body) == (200, b"signalled")
        assert proc.popen.wait(15) == 0
        assert refused(port)
        assert "stopping gracefully" in proc.output()


@pytest.mark.parametrize(("transport", "workers", "group"), [
    ("threaded", 1, False), ("asyncio", 1, False),
    ("threaded", 2, False), ("asyncio", 2, False),  # the supervisor forwards the second
    ("threaded", 2, True), ("asyncio", 2, True),  # ^C in a terminal: the whole group
])  # fmt: skip
def test_a_second_sigint_stops_waiting_for_the_requests_in_flight(
    transport: str, workers: int, group: bool
) -> None:
    """A second ^C while the first one's graceful stop waits for a request (up to
    drain_timeout, here 60 s) ends the wait, as in uvicorn and hypercorn: the
    request is cut, the process exits.  Before, it was ignored: the stop waited
    for the request to end (a 10 s one here: it was answered, 200)."""
    port = harness.free_port()
    with harness.running(demo(port, transport, workers, "drain_timeout=60.0"), port) as proc:
        if workers > 1:
            assert len(pids_seen(proc, 2)) == 2
        results: list[object] = []
        thread = slow_request(proc, 10.0, results)
        time.sleep(0.8)  # the slow request is being served

        def interrupt() -> None:
            if group:
                os.killpg(proc.popen.pid, signal.SIGINT)
            else:
                os.kill(proc.popen.pid, signal.SIGINT)

        interrupt()
        assert wait_until(lambda: refused(port), 5), "new connections are still accepted"
        time.sleep(0.5)
        assert proc.popen.poll() is None, proc.output()  # the first one waits for the request
        interrupt()
        assert proc.popen.wait(8) == 0, proc.output()  # well before the request's end
        thread.join(20)
        assert results and (isinstance(results[0], Exception) or results[0][0] != 200), results
        assert "not waiting for the requests in flight" in proc.output()
        assert "did not stop in time" not in proc.output()


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_ctrl_c_on_workers_stops_every_process_gracefully(transport: str) -> None:
    """^C in a terminal signals the whole process group: each worker gets SIGINT and,
    at once, its supervisor's SIGTERM.  That second signal landed in the worker's
    handler while it logged the first one, which deadlocked the worker: it was
    killed drain_timeout + 3 s later ("did not stop in time")."""
    port = harness.free_port()
    with harness.running(demo(port, transport, 2, "drain_timeout=8.0"), port) as proc:
        assert len(pids_seen(proc, 2)) == 2
        results: list[object] = []
        thread = slow_request(proc, 1.5, results)
        time.sleep(0.5)  # the slow request is being served
        started = time.monotonic()
        os.killpg(proc.popen.pid, signal.SIGINT)
        thread.join(20)
        assert results and not isinstance(results[0], Exception), results
        assert results[0][0] == 200  # type: ignore[index]
        assert proc.popen.wait(15) == 0, proc.output()
        assert time.monotonic() - started < 8  # not killed after drain_timeout
        assert "did not stop in time" not in proc.output()


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_a_stop_right_after_the_workers_forked_stops_them(transport: str) -> None:
    """A SIGTERM that reached a worker before it had its own handlers (here during a
    slow after-fork hook) ran the supervisor's copy there and was forgotten: the worker
    served on until the supervisor killed it, drain_timeout + 3 s later."""
    port = harness.free_port()
    args = demo(port, transport, 2, "drain_timeout=8.0")
    with harness.running(args, port, env={"DEMO_SLOW_FORK": "1.5"}) as proc:
        assert wait_until(lambda: proc.output().count("Started worker") == 2, 10), proc.output()
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0, proc.output()
        assert time.monotonic() - started < 8  # not killed after drain_timeout
        assert "did not stop in time" not in proc.output()
        assert refused(port)


@pytest.mark.parametrize("transport", ["threaded", "asyncio"])
def test_stop_in_a_controller_stops_every_worker_and_the_supervisor(transport: str) -> None:
    """server.stop() in a worker stopped that worker only: the supervisor replaced it
    ("Worker ... exited; starting another") and the server served on."""
    port = harness.free_port()
    with harness.running(demo(port, transport, 2, "drain_timeout=8.0"), port) as proc:
        assert len(pids_seen(proc, 2)) == 2
        results: list[object] = []
        thread = slow_request(proc, 1.5, results)
        time.sleep(0.5)  # the slow request is being served
        status, _, body = proc.get("/stop-server")
        assert status == 200 and body.startswith(b"stopping "), body
        assert proc.popen.wait(15) == 0, proc.output()
        thread.join(20)
        assert results and results[0][:3:2] == (200, b"slow done"), results  # type: ignore[index]
        assert refused(port)
        output = proc.output()
        assert "starting another" not in output and "did not stop in time" not in output, output
        assert "A worker called stop()" in output
