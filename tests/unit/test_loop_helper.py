"""``LoopHelper``: a thread that waits for the background loop runs the blocking jobs
the coroutines it waits for post (in order, all of them before its wait returns);
with no thread waiting, a job runs on a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from simple_http_server.dispatch.invoke import (
    LoopHelper,
    call_async,
    help_while_waiting,
    run_sync,
    wait_on,
)


@pytest.fixture
def helper() -> Iterator[LoopHelper]:
    helper = LoopHelper()
    help_while_waiting(helper)
    try:
        yield helper
    finally:
        help_while_waiting(None)


def recorder(ran: list[tuple[int, int]], index: int) -> Callable[[], None]:
    return lambda: ran.append((index, threading.get_ident()))


def test_jobs_run_on_the_waiting_thread_in_order_before_its_wait_returns(
    helper: LoopHelper,
) -> None:
    ran: list[tuple[int, int]] = []

    async def controller() -> str:
        for i in range(3):
            helper.post(recorder(ran, i))
            if i < 2:
                await asyncio.sleep(0.01)
        return "done"  # the last job is still queued here

    assert run_sync(call_async(controller)) == "done"
    assert ran == [(i, threading.get_ident()) for i in range(3)]


def test_every_wait_for_a_loop_helps(helper: LoopHelper) -> None:
    ran: list[tuple[int, int]] = []

    async def post_one() -> None:
        helper.post(recorder(ran, 0))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        wait_on(loop, post_one())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert ran == [(0, threading.get_ident())]


def test_a_job_posted_while_no_thread_waits_runs_on_a_thread_of_its_own() -> None:
    helper = LoopHelper()
    ran: list[tuple[int, int]] = []
    done = threading.Event()

    def job() -> None:
        recorder(ran, 0)()
        done.set()

    helper.post(job)
    assert done.wait(5)
    assert ran[0][1] != threading.get_ident()
