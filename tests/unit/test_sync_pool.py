"""The thread pool that runs sync user code for event loops: idle threads end."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from simple_http_server.dispatch import invoke


def thread_of_a_job(pool: invoke.SyncPool) -> threading.Thread:
    async def submit() -> threading.Thread:
        thread: threading.Thread = await pool.submit(
            asyncio.get_running_loop(), threading.current_thread, (), {}
        )
        return thread

    return asyncio.run(submit())


def test_an_idle_pool_thread_ends_and_the_pool_starts_another_on_demand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pools of apps that are never stopped (an ASGI app without lifespan) kept their
    idle threads for as long as the process lived."""
    monkeypatch.setattr(invoke, "POOL_IDLE_TIMEOUT", 0.2)
    pool = invoke.SyncPool(4)
    first = thread_of_a_job(pool)
    deadline = time.monotonic() + 5
    while first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not first.is_alive()
    second = thread_of_a_job(pool)  # a new thread, up to the bound again
    assert second is not first and second.is_alive()
    pool.shutdown()
    second.join(5)
    assert not second.is_alive()


def test_a_busy_pool_keeps_its_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoke, "POOL_IDLE_TIMEOUT", 0.5)
    pool = invoke.SyncPool(1)
    threads = set()
    for _ in range(10):  # a job every 0.1 s: never idle for 0.5 s
        threads.add(thread_of_a_job(pool))
        time.sleep(0.1)
    assert len(threads) == 1
    pool.shutdown()
