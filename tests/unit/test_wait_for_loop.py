"""``wait_for_loop``: how a worker thread waits for work it handed to an event loop.

The wait polls once a second so that a loop closed meanwhile never strands the
thread.  A poll that times out just as the work completes must not be taken for
the work's failure (a websocket turn was then never taken, and every later
message of the session queued forever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from simple_http_server.dispatch.invoke import wait_for_loop


class CompletesAsThePollTimesOut(concurrent.futures.Future[Any]):
    """The race, made deterministic: the work completes with ``outcome`` exactly
    when the first poll gives up."""

    def __init__(self, outcome: BaseException | None = None) -> None:
        super().__init__()
        self.outcome = outcome
        self.polls = 0

    def result(self, timeout: float | None = None) -> Any:
        self.polls += 1
        if not self.done():
            if self.outcome is None:
                self.set_result("sent")
            else:
                self.set_exception(self.outcome)
            raise concurrent.futures.TimeoutError()  # the poll's own timeout
        return super().result(timeout)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_work_completing_as_the_poll_times_out_is_done(loop: asyncio.AbstractEventLoop) -> None:
    assert wait_for_loop(CompletesAsThePollTimesOut(), loop) is True


def test_the_works_own_error_is_raised_not_the_polls_timeout(
    loop: asyncio.AbstractEventLoop,
) -> None:
    with pytest.raises(ConnectionResetError):
        wait_for_loop(CompletesAsThePollTimesOut(ConnectionResetError()), loop)


def test_the_works_own_timeout_error_is_raised(loop: asyncio.AbstractEventLoop) -> None:
    """A TimeoutError the loop's work raised (e.g. a send that took too long) is the
    work's outcome, whatever the poll saw."""
    with pytest.raises(TimeoutError):
        wait_for_loop(CompletesAsThePollTimesOut(TimeoutError("send took too long")), loop)


def test_cancelled_work_raises_cancelled(loop: asyncio.AbstractEventLoop) -> None:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        wait_for_loop(future, loop)


def test_a_closed_loop_ends_the_wait() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    assert wait_for_loop(future, closed) is False  # after one poll, not forever
