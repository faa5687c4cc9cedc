"""``LoopHelper``: a thread that waits for the background loop runs the blocking jobs
the coroutines it waits for post (in order, all of them before its wait returns);
with no thread waiting, a job runs on a thread of its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simple_http_server.dispatch.invoke import (
    LoopHelper,
    call_async,
    call_sync,
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


class _SlowHandOffLoop(asyncio.SelectorEventLoop):
    """A loop whose hand-over from another thread returns late: the loop has run the
    coroutine's first step by then (as when the handing thread is preempted)."""

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        if threading.get_ident() != self._thread_id:  # type: ignore[attr-defined]
            time.sleep(0.3)
        return handle


def test_a_job_the_work_posts_at_once_runs_on_the_waiting_thread(helper: LoopHelper) -> None:
    """The thread counts as waiting from before the hand-over, not from after it."""
    ran: list[tuple[int, int]] = []

    async def post_at_once() -> None:
        helper.post(recorder(ran, 0))

    loop = _SlowHandOffLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        wait_on(loop, post_at_once())
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


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_nested_wait_leaves_the_thread_helping_the_outer_one(
    helper: LoopHelper, loop: asyncio.AbstractEventLoop
) -> None:
    """A job that waits for the loop again (a ``def`` filter's ``do_chain()``): once
    that inner wait ends, what the outer work posts still runs on this thread."""
    ran: list[tuple[int, int]] = []

    async def inner() -> None:
        helper.post(recorder(ran, 1))

    async def outer() -> None:
        done = asyncio.get_running_loop().create_future()

        def waits_again() -> None:
            wait_on(loop, inner())
            loop.call_soon_threadsafe(done.set_result, None)

        helper.post(waits_again)
        await done
        helper.post(recorder(ran, 2))
        await asyncio.sleep(0.01)

    wait_on(loop, outer())
    me = threading.get_ident()
    assert ran == [(1, me), (2, me)]


def test_sync_code_called_by_the_awaited_work_runs_on_the_waiting_thread(
    helper: LoopHelper, loop: asyncio.AbstractEventLoop
) -> None:
    """``call_sync`` from the work a thread waits for (and from the tasks it starts)
    needs no pool thread: the waiting thread runs it."""

    async def work() -> list[int]:
        first = await call_sync(threading.get_ident)
        second = await asyncio.ensure_future(call_sync(threading.get_ident))
        return [first, second]

    assert wait_on(loop, work()) == [threading.get_ident()] * 2


def test_try_post_refuses_a_job_while_no_thread_waits() -> None:
    helper = LoopHelper()
    assert not helper.try_post(lambda: None)


def test_cancel_waits_cancels_the_work_waited_for_and_the_waits_raise_its_error(
    helper: LoopHelper, loop: asyncio.AbstractEventLoop
) -> None:
    """What a server that stops uses: every wait of the thread (nested ones too) ends
    with the given error, the coroutines get ``CancelledError`` (their finally runs);
    a wait that starts afterwards is not cancelled."""
    log: list[str] = []
    entered = threading.Event()

    async def inner() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("inner cancelled")
            raise

    async def outer() -> None:
        done = asyncio.get_running_loop().create_future()

        def waits_again() -> None:  # a job that waits again (a def filter's do_chain())
            try:
                wait_on(loop, inner())
            except RuntimeError as exc:
                log.append(f"inner wait: {exc}")

        helper.post(waits_again)
        try:
            await done
        except asyncio.CancelledError:
            log.append("outer cancelled")
            raise

    canceller = threading.Thread(
        target=lambda: (entered.wait(5), helper.cancel_waits(lambda: RuntimeError("cut")))
    )
    canceller.start()
    # Without cancel_waits() nothing would end the wait: cancel it otherwise, to fail fast.
    safety = threading.Timer(5, loop.call_soon_threadsafe, (cancel_all_tasks, loop))
    safety.start()
    try:
        with pytest.raises(RuntimeError, match="cut"):
            wait_on(loop, outer())
    finally:
        safety.cancel()
    canceller.join(5)
    deadline = time.monotonic() + 2
    while len(log) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(log) == ["inner cancelled", "inner wait: cut", "outer cancelled"]

    async def later() -> str:
        return "not cancelled"

    assert wait_on(loop, later()) == "not cancelled"


def cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
