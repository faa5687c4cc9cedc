"""The only sync/async bridge of the package.

One dispatch coroutine serves both transports:

* the asyncio transport awaits it on its loop; sync user functions run in a
  bounded thread pool so they never block the loop, async ones are awaited;
* the threaded transport drives it with :func:`run_sync` in a worker thread;
  sync user functions are called directly and async ones run on one shared
  background loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = [
    "background_loop",
    "call",
    "current_loop",
    "in_event_loop",
    "is_async_callable",
    "run_sync",
    "set_executor",
    "spawn",
    "wait_on",
]

T = TypeVar("T")

_get_running_loop = asyncio._get_running_loop
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_bg_loop: asyncio.AbstractEventLoop | None = None
_bg_lock = threading.Lock()


def is_async_callable(func: Any) -> bool:
    """True for ``async def`` functions (also behind ``functools.partial``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )


def in_event_loop() -> bool:
    """True when the current thread runs an asyncio event loop."""
    return _get_running_loop() is not None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, in the calling thread.

    The dispatch coroutine never suspends in the threaded transport, because
    every await inside it resolves synchronously there.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a coroutine suspended outside an event loop")


def set_executor(workers: int) -> None:
    """Size the pool that runs sync user code for the asyncio transport."""
    global _executor
    with _executor_lock:
        old, _executor = _executor, ThreadPoolExecutor(workers, thread_name_prefix="shs-sync")
    if old is not None:
        old.shutdown(wait=False)


def _get_executor() -> ThreadPoolExecutor:
    if _executor is None:
        set_executor(64)
    assert _executor is not None
    return _executor


def background_loop() -> asyncio.AbstractEventLoop:
    """The one shared loop that runs async user code for threaded callers."""
    global _bg_loop
    if _bg_loop is None:
        with _bg_lock:
            if _bg_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="shs-async", daemon=True)
                thread.start()
                _bg_loop = loop
    return _bg_loop


def _stop_background_loop() -> None:
    if _bg_loop is not None and _bg_loop.is_running():
        _bg_loop.call_soon_threadsafe(_bg_loop.stop)


atexit.register(_stop_background_loop)


def _after_fork_in_child() -> None:
    """A forked worker process has none of the parent's threads: recreate lazily."""
    global _executor, _bg_loop, _executor_lock, _bg_lock
    _executor, _bg_loop = None, None
    _executor_lock, _bg_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call user code the right way for the current context.

    Async functions are awaited on the running loop, or run on the background
    loop when there is none; sync functions are called directly when there is
    no loop, or in the thread pool when there is one.
    """
    loop = _get_running_loop()
    if is_async_callable(func):
        coro = func(*args, **kwargs)
        if loop is not None:
            return await coro
        return asyncio.run_coroutine_threadsafe(coro, background_loop()).result()
    if loop is None:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            return asyncio.run_coroutine_threadsafe(_await(result), background_loop()).result()
        return result
    ctx = contextvars.copy_context()
    result = await loop.run_in_executor(
        _get_executor(), functools.partial(ctx.run, func, *args, **kwargs)
    )
    if inspect.isawaitable(result):
        return await result
    return result


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    return _get_running_loop()


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Start ``coro`` as a task of the running loop."""
    return asyncio.ensure_future(coro)


def wait_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
