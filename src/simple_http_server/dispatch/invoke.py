"""The only sync/async bridge of the package.

One dispatch coroutine serves both transports:

* the asyncio transport awaits it on its loop; sync user functions run in a
  bounded thread pool of the server's (:class:`SyncPool`) so they never block
  the loop, async ones are awaited;
* the threaded transport drives it with :func:`run_sync` in a worker thread;
  sync user functions are called directly and async ones run on one shared
  background loop, while the worker thread waits for them and meanwhile runs
  the blocking I/O they hand it (:class:`LoopHelper`).

A thread that waits for a loop (:func:`wait_on`) is idle, so the sync user code
that the awaited work reaches runs on that thread too, not in a pool: a plain
``def`` filter blocked in ``ctx.do_chain()`` runs the ``def`` controller behind
it.  A request therefore never holds more than one thread of a pool, whatever
its chain, and a pool cannot starve itself.

``sys.exit()`` in user code is an ordinary error of the request or session it
serves, and so is any other ``BaseException`` that is not an ``Exception``, except
``KeyboardInterrupt`` and a cancellation of the running task: whatever calls or
awaits user code here raises a :class:`UserError` for it (:class:`UserExit` for
``SystemExit``).  Let out of a task, ``SystemExit`` would stop the task's event
loop (the server's, or the background loop every threaded request shares); a
``CancelledError`` from a future that something else cancelled would pass for a
cancellation of the request, which nothing answers.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import inspect
import math
import os
import queue
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sized
from typing import Any, TypeVar

from .. import logger as _logging
from ..errors import HttpError

__all__ = [
    "LoopHelper",
    "SyncPool",
    "TaskCancelled",
    "ThreadStarts",
    "UserError",
    "UserExit",
    "after_task",
    "await_user",
    "background_loop",
    "call",
    "call_async",
    "call_soon_batched",
    "call_sync",
    "cancellation",
    "cancelling_me",
    "current_loop",
    "help_while_waiting",
    "in_event_loop",
    "is_async_callable",
    "join",
    "release_streams",
    "reset_pool",
    "run_in_task",
    "run_sync",
    "running_task",
    "spawn",
    "stream_runner",
    "track_streams",
    "until_none",
    "use_pool",
    "user_error",
    "wait_for_loop",
    "wait_on",
]

T = TypeVar("T")
_log = _logging.get_logger("simple_http_server.invoke")

_get_running_loop = asyncio._get_running_loop
_default_pool: SyncPool | None = None
_default_pool_lock = threading.Lock()
#: The pool of the server (or ASGI app) whose work runs in this context.
_POOL: contextvars.ContextVar[SyncPool | None] = contextvars.ContextVar(
    "simple_http_server_pool", default=None
)
#: The thread waiting (:func:`wait_on`) for the work that runs in this context.
_HELPER: contextvars.ContextVar[LoopHelper | None] = contextvars.ContextVar(
    "simple_http_server_helper", default=None
)
#: The threads kept for the sync streams the ``def`` code of one request returned.
_STREAMS: contextvars.ContextVar[list[_Pinned] | None] = contextvars.ContextVar(
    "simple_http_server_streams", default=None
)
_bg_loop: asyncio.AbstractEventLoop | None = None
_bg_lock = threading.Lock()


class UserError(Exception):
    """A ``BaseException`` that is not an ``Exception`` let out of user code (it is the
    ``__cause__``): a ``CancelledError`` that is no cancellation of the running task
    (awaiting a future that something else cancelled), ``GeneratorExit``, a
    ``BaseException`` subclass of the user's.  Handled as any other exception there,
    it ends the request or websocket session only."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"user code raised {error!r}")


class UserExit(UserError):
    """``sys.exit()`` in user code (its ``SystemExit`` is the ``__cause__``): handled as
    any other exception there, it ends the request or websocket session only."""

    def __init__(self, code: Any) -> None:
        Exception.__init__(self, f"user code called sys.exit({code!r})")
        self.code = code


def user_error(exc: BaseException) -> BaseException:
    """What to raise (``from exc``) for ``exc``, let out of user code: ``exc`` itself
    for an ``Exception``, ``KeyboardInterrupt`` (the operator's Ctrl-C, left to stop
    things) and a cancellation of the running task; a :class:`UserError` for the rest."""
    if isinstance(exc, Exception | KeyboardInterrupt):
        return exc
    if isinstance(exc, SystemExit):
        return UserExit(exc.code)
    if isinstance(exc, asyncio.CancelledError) and _task_cancelling():
        return exc
    return UserError(exc)


def _task_cancelling() -> bool:
    """True when the running task was asked to cancel: a ``CancelledError`` is then
    that cancellation (the server's, its loop owner's), not an error of user code.
    Python 3.10 cannot tell them apart (no ``Task.cancelling()``): on a loop, every
    ``CancelledError`` counts as the task's cancellation there."""
    if _get_running_loop() is None:
        return False
    task = asyncio.current_task()
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


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


#: Seconds a waiting thread watches a connection (:meth:`LoopHelper.watch`) before
#: it looks at its wait again (posts and the work's end wake it sooner).
WATCH_SLICE = 1.0


class LoopHelper:
    """Blocking work that coroutines hand to the thread waiting for them.

    A thread that waits for an event loop (a threaded-transport worker running an
    ``async def`` controller, a pool thread in ``ctx.do_chain()``) is idle: the
    coroutines it waits for post their socket I/O and the sync user code they
    call here, and that thread runs them (see :func:`help_while_waiting`), so
    the loop never blocks on a client and no other thread is needed.  Waits may
    nest (a job that waits again).  Work posted while no thread waits (a task
    that outlived its request) runs on a thread of its own.  Jobs take no
    arguments, raise nothing and report back to the loop themselves.
    """

    __slots__ = ("_cond", "_depth", "_jobs", "_polling", "_waits", "_wake_w", "_watch")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._jobs: deque[Callable[[], None]] = deque()
        self._depth = 0  # waits in progress (nested ones included)
        self._polling = False  # a job waits in wait_readable(): a post wakes it
        self._wake_w = -1  # the pipe that wakes it
        self._waits: list[_Wait] = []  # the work waited for now
        self._watch: tuple[int, Callable[[], None]] | None = None

    def watch(self, fd: int, on_input: Callable[[], None]) -> None:
        """While this thread waits with nothing to run, it also waits for input on
        ``fd`` and calls ``on_input()`` (on this thread) when some comes: a streamed
        answer's connection, whose client may leave while its stream is quiet.
        ``on_input`` unwatches (:meth:`unwatch`) unless it wants to be called again."""
        with self._cond:
            self._watch = (fd, on_input)
            self._cond.notify()

    def unwatch(self) -> None:
        """Stop :meth:`watch`."""
        with self._cond:
            self._watch = None

    def post(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the waiting thread, or on a new one when none waits."""
        if not self.try_post(job):
            _run_apart(job)

    def try_post(self, job: Callable[[], None]) -> bool:
        """Queue ``job`` for the waiting thread; False (not queued) when none waits."""
        with self._cond:
            if not self._depth:
                return False
            self._jobs.append(job)
            self._cond.notify()
            self._nudge()
            return True

    def wait_readable(
        self, fd: int, timeout: float, done: Callable[[], bool] | None = None
    ) -> bool:
        """For a job of this thread: wait up to ``timeout`` seconds for input on ``fd``
        (True), returning False at once when another job is posted or the awaited work
        ends meanwhile, so a job that waits for a client never holds up the others
        (a coroutine writing while it reads).  ``done``: the awaited work's end, when
        the caller is no job of it (nothing nudges then if it ended already)."""
        # A pipe per wait (not per helper: a helper has no end at which to close it).
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        with self._cond:
            if self._jobs or (done is not None and done()):
                os.close(wake_r)
                os.close(wake_w)
                return False
            self._wake_w = wake_w
            self._polling = True
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(wake_r, select.POLLIN)
            events = poller.poll(max(0, math.ceil(timeout * 1000)))
        finally:
            with self._cond:  # no nudge writes to the pipe after this
                self._polling = False
                self._wake_w = -1
            os.close(wake_r)
            os.close(wake_w)
        return any(ready == fd for ready, _ in events)

    def _nudge(self) -> None:
        """Wake a job waiting in :meth:`wait_readable` (``_cond`` held)."""
        if self._polling:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full: it is woken already
                pass

    def wait(self, submit: Callable[[], concurrent.futures.Future[T]]) -> T:
        """``submit()`` (hand work to a loop) and its future's result, running the
        posted jobs until it is done.  The thread counts as waiting from before the
        hand-over: a job the work posts at once runs here too."""
        cond = self._cond
        # Registered before the hand-over: the work may start (and a stop cancel it)
        # before submit() returns.
        slot = _Wait()
        with cond:
            self._depth += 1
            self._waits.append(slot)
        waiting = True
        future: concurrent.futures.Future[T] | None = None
        try:
            future = submit()
            with cond:
                slot.future = future
                cancel_now = slot.error is not None
            if cancel_now:
                future.cancel()
            future.add_done_callback(self._wake)
            while True:
                watch = None
                with cond:
                    while not self._jobs and not future.done() and self._watch is None:
                        cond.wait()
                    if self._jobs:
                        job = self._jobs.popleft()
                    elif future.done():  # and nothing left that needs this thread
                        self._depth -= 1
                        waiting = False
                        self._waits.remove(slot)
                        break
                    else:
                        watch = self._watch
                if watch is None:
                    _run_posted(job)
                elif self.wait_readable(watch[0], WATCH_SLICE, future.done):
                    _run_posted(watch[1])
        finally:
            if waiting:  # interrupted: with no wait left, later jobs get threads of their own
                with cond:
                    self._depth -= 1
                    if slot in self._waits:
                        self._waits.remove(slot)
                    left = [] if self._depth else list(self._jobs)
                    if left:
                        self._jobs.clear()
                for job in left:
                    _run_apart(job)
        if slot.error is not None and future.cancelled():
            raise slot.error()
        return future.result()

    def cancel_waits(self, error: Callable[[], BaseException]) -> None:
        """Cancel the work this thread waits for now (a server that stops cuts its
        request): each such wait raises ``error()`` instead of its outcome.  The
        coroutines get ``CancelledError``, so their ``finally`` runs."""
        with self._cond:
            for slot in self._waits:
                slot.error = error
            futures = [slot.future for slot in self._waits if slot.future is not None]
        for future in futures:
            future.cancel()

    def _wake(self, _future: Any) -> None:
        with self._cond:
            self._cond.notify()
            self._nudge()


class _Wait:
    """One wait of a :class:`LoopHelper`: the work's future (once handed over) and
    what :meth:`LoopHelper.cancel_waits` makes the wait raise."""

    __slots__ = ("error", "future")

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Any] | None = None
        self.error: Callable[[], BaseException] | None = None


def _run_apart(job: Callable[[], None]) -> None:
    threading.Thread(target=_run_posted, args=(job,), name="shs-io", daemon=True).start()


def _run_posted(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # a job reports its own errors: this is a bug
        _log.exception("A job posted by a coroutine failed")


_local = threading.local()


def help_while_waiting(helper: LoopHelper | None) -> LoopHelper | None:
    """Make the calling thread run ``helper``'s jobs whenever it waits for an event
    loop (:func:`call_async`, :func:`wait_on`...); None stops it.  Returns the
    helper it replaces."""
    previous: LoopHelper | None = getattr(_local, "helper", None)
    _local.helper = helper
    return previous


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


class _Inbox:
    """Results of pool jobs on their way back to one event loop.

    Workers append and wake the loop only when no drain is already scheduled,
    so a busy loop gets one wake-up for many results.
    """

    __slots__ = ("__weakref__", "items", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[tuple[asyncio.Future[Any] | None, bool, Any]] = deque()
        self.scheduled = False

    def post(self, future: asyncio.Future[Any] | None, ok: bool, value: Any) -> None:
        """Hand a result to the loop (from a worker thread); no future: call ``value``."""
        self.items.append((future, ok, value))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: nobody waits any more
                self.items.clear()

    def drain(self) -> None:
        """Resolve the waiting futures (on the loop)."""
        self.scheduled = False
        items = self.items
        while items:
            future, ok, value = items.popleft()
            if future is None:
                try:
                    value()
                except Exception:
                    _log.exception("A callback posted to the event loop failed")
                continue
            if future.done():  # cancelled meanwhile
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()


def call_soon_batched(loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
    """``loop.call_soon_threadsafe(callback)`` sharing one wake-up with pool results.

    A sync handler that sends and then returns costs the loop one wake-up, not two.
    """
    _inbox_of(loop).post(None, True, callback)


def _inbox_of(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = _Inbox(loop)
    return inbox


_Job = tuple[_Inbox, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], Any, Any]


#: Seconds an idle pool thread waits for a job before it ends (started again on demand).
POOL_IDLE_TIMEOUT = 60.0


class ThreadStarts:
    """Starts the threads of a pool.  A thread the system refuses (a process or
    thread limit such as a container's ``pids.max``) leaves the pool's list, with a
    warning one a second at most; the pool goes on with the threads it has."""

    def __init__(self, warning: str) -> None:
        #: The warning's text: ``%s`` the error, then ``%d`` the threads still running.
        self.warning = warning
        self._warning_due = 0.0  # when a refused thread may be logged again

    def start(
        self, thread: threading.Thread, threads: list[threading.Thread], lock: threading.Lock
    ) -> int | None:
        """Start ``thread`` (already in ``threads``): None, or when the system refused
        it, how many threads of the pool still run."""
        try:
            thread.start()
        except RuntimeError as exc:
            with lock:
                threads.remove(thread)
                running = len(threads)
            now = time.monotonic()
            if now >= self._warning_due:
                self._warning_due = now + 1.0
                _log.warning(self.warning, exc, running)
            return running
        return None


class SyncPool:
    """A bounded pool of threads running sync user code for event loops.

    Each server (and each ASGI app) has its own, of ``worker_threads`` threads.
    Lighter than ``run_in_executor``: a job is one queue entry and its result
    goes straight back to the waiting asyncio future, with no
    ``concurrent.futures.Future`` in between.  Threads start on demand, up to
    ``workers``; a job never waits while fewer than ``workers`` jobs run.  Each
    thread runs, while it waits for a loop, the sync code that loop's work calls
    (:class:`LoopHelper`), so a job never needs a second thread of the pool.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._starts = ThreadStarts(
            "A thread for sync code could not be started (%s): %d thread(s) run the jobs in turn"
        )

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        func: Callable[..., Any],
        args: Any,
        kwargs: Any,
        ctx: contextvars.Context | None = None,
    ) -> asyncio.Future[Any]:
        """Run ``func(*args, **kwargs)`` in a pool thread, in ``ctx`` (default: a
        copy of the current context)."""
        if self._closed:  # a task that outlived its server
            return _get_default_pool().submit(loop, func, args, kwargs, ctx)
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                spawn = len(self._threads) < self.workers
                if spawn:
                    thread = threading.Thread(
                        target=self._work, name=f"shs-sync-{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
        # A thread refused by the system: the job waits for the running ones, if any.
        if spawn and self._starts.start(thread, self._threads, self._lock) == 0:
            raise HttpError(503, "Service Unavailable", "The server cannot start a thread now.")
        if ctx is None:
            ctx = contextvars.copy_context()
        self._jobs.put((_inbox_of(loop), future, ctx, func, args, kwargs))
        return future

    def _work(self) -> None:
        help_while_waiting(LoopHelper())
        _local.kept = []
        jobs = self._jobs
        while True:
            try:
                job = jobs.get(timeout=POOL_IDLE_TIMEOUT)
            except queue.Empty:
                if self._retire():
                    return
                continue
            if job is None:
                return
            pinned = _take_kept(_run_job(*job, pin=True))
            job = None  # hold no reference to the last job while idle
            if pinned is not None:  # this thread now serves the stream the job returned
                with self._lock:
                    self._threads.remove(threading.current_thread())
                pinned.serve()
                if not self._rejoin():
                    return
                _local.kept = []
                continue
            with self._lock:
                self._idle += 1

    def _rejoin(self) -> bool:
        """A thread whose stream ended comes back (True), unless the pool is full or
        closed meanwhile."""
        with self._lock:
            if self._closed or len(self._threads) >= self.workers:
                return False
            self._threads.append(threading.current_thread())
            self._idle += 1
            return True

    def _retire(self) -> bool:
        """An idle thread waited ``POOL_IDLE_TIMEOUT`` for nothing: it ends (True),
        unless every idle thread is promised to a job queued meanwhile."""
        with self._lock:
            if not self._idle:
                return False
            self._idle -= 1
            self._threads.remove(threading.current_thread())
            return True

    def shutdown(self) -> None:
        """Let every thread finish its current job and exit; later jobs go to the
        default pool."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._jobs.put(None)

    async def wait_closed(self, timeout: float) -> None:
        """After :meth:`shutdown`: wait (on a loop) until every thread has exited,
        ``timeout`` seconds at most (a thread still in user code is left behind)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)


def _run_job(
    inbox: _Inbox,
    future: asyncio.Future[Any],
    ctx: contextvars.Context,
    func: Callable[..., Any],
    args: Any,
    kwargs: Any,
    pin: bool = False,
) -> _Pinned | None:
    """Run a pool job; the :class:`_Pinned` that now owns this thread when the job
    returned a sync stream (see :func:`stream_runner`)."""
    pinned = None
    try:
        result = ctx.run(func, *args, **kwargs)
    except BaseException as exc:  # handed to the awaiting task
        if isinstance(exc, StopIteration):  # refused by futures
            error: BaseException = RuntimeError("a sync function raised StopIteration")
        else:  # SystemExit would stop the loop, CancelledError cancel the task
            error = user_error(exc)
        if error is not exc:
            error.__cause__ = exc
        inbox.post(future, False, error)
    else:
        if pin:
            pinned = _Pinned.for_result(result, ctx)
        elif getattr(_local, "kept", None) is not None:
            # A pool thread running a job posted by the work its own job waits for (a
            # def controller behind a def filter): it keeps the stream once that job ends.
            kept = _Pinned.for_result(result, ctx)
            if kept is not None:
                _local.kept.append(kept)
        inbox.post(future, True, result)
    return pinned


_PINNED_POLL = 1.0
#: The threads kept by the sync streams their jobs returned, not claimed yet (by ``id``).
_unclaimed: dict[int, tuple[weakref.ref[Any], _Pinned]] = {}
_unclaimed_lock = threading.Lock()


class _Pinned:
    """One thread running every step of one sync stream, and its close.

    A pool job that returns a sync stream (a ``def`` controller's generator, also
    inside a tuple) keeps its thread for it, out of the pool (which may start
    another): the stream's steps then run where the controller ran, as in the
    threaded transport, so objects bound to a thread (a ``sqlite3`` connection, a
    ``threading.local``) stay usable.  The thread waits, parked, while the client
    reads, and ends with the stream (or once the stream is gone unclaimed)."""

    __slots__ = ("_jobs", "_lock", "_thread", "claimed", "stream")

    def __init__(
        self, stream: weakref.ref[Any] | None, thread: threading.Thread | None = None
    ) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = thread
        self._lock = threading.Lock()
        self.claimed = False
        self.stream = stream

    @classmethod
    def for_result(cls, result: Any, ctx: contextvars.Context) -> _Pinned | None:
        """A pinned runner for the sync stream in ``result``, registered for the
        dispatcher to claim (and in ``ctx``'s request, see :func:`track_streams`);
        None when there is none (or it cannot be tracked)."""
        stream = _sync_stream(result)
        if stream is None:
            return None
        try:
            ref = weakref.ref(stream)
        except TypeError:  # a built-in iterator: no thread-bound state to keep
            return None
        pinned = cls(ref, threading.current_thread())
        with _unclaimed_lock:
            _unclaimed[id(stream)] = (ref, pinned)
        streams = ctx.get(_STREAMS)
        if streams is not None:
            streams.append(pinned)
        return pinned

    def submit(
        self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any], args: Any
    ) -> asyncio.Future[Any]:
        """Run ``func(*args)`` on this runner's thread (started on first use)."""
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((_inbox_of(loop), future, contextvars.copy_context(), func, args, {}))
        with self._lock:
            if self._thread is None:
                self._start()
        return future

    def _start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="shs-stream", daemon=True)
        self._thread.start()

    def unbind(self) -> None:
        """The thread that ran the stream's maker serves something else: the stream
        gets a thread of its own (none yet: :meth:`submit` starts it)."""
        with self._lock:
            if self._jobs.empty():
                self._thread = None
            else:  # already used: serve it at once
                self._start()

    def release(self) -> None:
        """The stream is sent or closed: the thread ends after its current step."""
        self._jobs.put(None)

    def abandon(self) -> None:
        """Nobody will claim the stream: forget it and end the thread."""
        self._unregister()
        self.release()

    def _unregister(self) -> None:
        with _unclaimed_lock:
            for key, (_ref, pinned) in list(_unclaimed.items()):
                if pinned is self:
                    del _unclaimed[key]

    def serve(self) -> None:
        """Run the stream's steps until :meth:`release`, or until the stream was
        dropped without being claimed."""
        help_while_waiting(LoopHelper())
        _local.kept = None  # its steps make no stream to keep
        jobs = self._jobs
        while True:
            try:
                job = jobs.get(timeout=_PINNED_POLL)
            except queue.Empty:
                if not self.claimed and self._forgotten():
                    return
                continue
            if job is None:
                return
            _run_job(*job)
            job = None  # no reference to the stream between steps

    def _forgotten(self) -> bool:
        ref = self.stream
        if ref is None or ref() is not None:
            return False
        self._unregister()
        return True


def _take_kept(pinned: _Pinned | None) -> _Pinned | None:
    """After a pool job: the stream runner this thread now serves (the job's, or that
    of a stream returned meanwhile by a job posted to it); any other gets a thread of
    its own when it is first used."""
    kept: list[_Pinned] = _local.kept
    if not kept:
        return pinned
    for other in kept:
        if pinned is None and other.stream is not None and other.stream() is not None:
            pinned = other
        elif other is not pinned:
            other.unbind()
    kept.clear()
    return pinned


def _sync_stream(result: Any, depth: int = 0) -> Any:
    """The sync stream a controller's result sends (itself, the first body-like value
    of a tuple, a returned ``Response``'s body), or None."""
    if depth > 1:
        return None
    if isinstance(result, tuple):
        for item in result:
            found = _sync_stream(item, depth + 1)
            if found is not None:
                return found
        return None
    if type(result) in _PLAIN_RESULTS:
        return None
    if hasattr(result, "status_code") and hasattr(result, "body"):  # a Response
        return _sync_stream(result.body, depth + 1)
    if inspect.isgenerator(result) or (
        callable(getattr(result, "__next__", None)) and not inspect.isawaitable(result)
    ):
        return result
    if callable(getattr(result, "read", None)) and callable(getattr(result, "close", None)):
        return result
    return None


class StreamRunner:
    """Where the steps of one sync stream run (:func:`stream_runner`)."""

    __slots__ = ("_pinned",)

    def __init__(self, pinned: _Pinned | None) -> None:
        self._pinned = pinned

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` (sync, user code) on the stream's thread."""
        loop = _get_running_loop()
        if loop is None or _HELPER.get() is not None:
            # No loop: the caller's thread; a thread waiting for this work: that one.
            return await call_sync(func, *args)
        if self._pinned is None:
            self._pinned = _Pinned(None)
        self._pinned.claimed = True
        return await self._pinned.submit(loop, func, args)

    def release(self) -> None:
        """The stream is done with: its thread ends."""
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned.release()


def stream_runner(stream: Any) -> StreamRunner:
    """The runner of every step of the sync ``stream`` (and its close), on one thread:
    the pool thread of the ``def`` controller that returned it (kept for it), or a
    thread of its own; off a loop, the calling thread.  :meth:`StreamRunner.release`
    it once the stream is closed."""
    pinned = None
    with _unclaimed_lock:
        entry = _unclaimed.pop(id(stream), None)
    if entry is not None:
        ref, pinned = entry
        if ref() is not stream:  # another object at a recycled id
            pinned.release()
            pinned = None
    if pinned is not None:
        pinned.claimed = True
    return StreamRunner(pinned)


def track_streams() -> list[_Pinned] | None:
    """Note the threads kept for the sync streams that the ``def`` code run from this
    context returns, until :func:`release_streams` (a request's start and end).
    None off an event loop (the threaded transport, WSGI, the TestClient): ``def``
    code then runs on the request's own thread, which keeps no stream."""
    if _get_running_loop() is None:
        return None
    streams: list[_Pinned] = []
    _STREAMS.set(streams)
    return streams


def release_streams(streams: list[_Pinned]) -> None:
    """The request is over: the threads kept for its streams that were never claimed
    (a filter raised after the controller returned one) end now.  Waiting for the
    stream to be garbage was not enough: an exception's traceback often holds it in a
    cycle, which only a full collection frees (a parked thread per request until then)."""
    _STREAMS.set(None)
    for pinned in streams:
        if not pinned.claimed:
            pinned.abandon()
    streams.clear()


def _run_helper_job(*job: Any) -> None:
    """:func:`_run_job` for a job posted to a waiting thread (it keeps no stream)."""
    _run_job(*job)


def use_pool(pool: SyncPool | None) -> contextvars.Token[SyncPool | None]:
    """Run the sync user code called in this context (and the tasks it starts) in
    ``pool``; returns the token that :func:`reset_pool` takes."""
    return _POOL.set(pool)


def reset_pool(token: contextvars.Token[SyncPool | None]) -> None:
    """Undo :func:`use_pool`."""
    _POOL.reset(token)


def _get_default_pool() -> SyncPool:
    """The pool of loops that belong to no server (the background loop)."""
    global _default_pool
    pool = _default_pool
    if pool is None:
        with _default_pool_lock:
            pool = _default_pool
            if pool is None:
                pool = _default_pool = SyncPool(64)
    return pool


def _submit(
    loop: asyncio.AbstractEventLoop, func: Callable[..., Any], args: Any, kwargs: Any
) -> asyncio.Future[Any]:
    """Run sync ``func`` off ``loop``: on the thread waiting for this work when
    there is one, else in the pool of this context."""
    helper = _HELPER.get()
    if helper is not None:
        # The job must not hand its own loop work back to this thread: the thread
        # is busy with the job (a plain blocking wait in it would never end).
        ctx = contextvars.copy_context()
        ctx.run(_HELPER.set, None)
        future: asyncio.Future[Any] = loop.create_future()
        job = functools.partial(_run_helper_job, _inbox_of(loop), future, ctx, func, args, kwargs)
        if helper.try_post(job):
            return future
        future.cancel()
        return (_POOL.get() or _get_default_pool()).submit(loop, func, args, kwargs, ctx)
    return (_POOL.get() or _get_default_pool()).submit(loop, func, args, kwargs)


def background_loop() -> asyncio.AbstractEventLoop:
    """The one shared loop that runs async user code for threaded callers."""
    global _bg_loop
    if _bg_loop is None:
        with _bg_lock:
            if _bg_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_background, args=(loop,), name="shs-async", daemon=True
                )
                thread.start()
                _bg_loop = loop
    return _bg_loop


def _run_background(loop: asyncio.AbstractEventLoop) -> None:
    """Run the background loop until it is stopped.  A task that lets out a
    ``KeyboardInterrupt`` or ``SystemExit`` (one that user code started itself)
    stops ``run_forever()``; the loop goes on, or every later ``async def``
    request would wait for it forever.  The task's waiter gets its exception."""
    while True:
        try:
            loop.run_forever()
            return
        except (KeyboardInterrupt, SystemExit):
            _log.exception("A task stopped the background event loop; it goes on")


def _stop_background_loop() -> None:
    if _bg_loop is not None and _bg_loop.is_running():
        _bg_loop.call_soon_threadsafe(_bg_loop.stop)


atexit.register(_stop_background_loop)


def _after_fork_in_child() -> None:
    """A forked worker process has none of the parent's threads: recreate lazily."""
    global _default_pool, _bg_loop, _default_pool_lock, _bg_lock
    _default_pool, _bg_loop = None, None
    _default_pool_lock, _bg_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_PLAIN_RESULTS: frozenset[type] = frozenset(
    {dict, list, tuple, str, bytes, int, float, bool, type(None)}
)


async def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call user code the right way for the current context.

    Async functions are awaited on the running loop, or run on the background
    loop when there is none; sync functions are called directly when there is
    no loop, or in the thread pool when there is one.
    """
    if is_async_callable(func):
        return await call_async(func, *args, **kwargs)
    return await call_sync(func, *args, **kwargs)


async def call_async(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`call` for a function known to be ``async`` (decided at registration)."""
    try:
        coro = func(*args, **kwargs)
        if _get_running_loop() is not None:
            return await coro
    except BaseException as exc:
        if (error := user_error(exc)) is exc:
            raise
        raise error from exc
    return wait_on(background_loop(), _await(coro))


async def call_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`call` for a plain function (decided at registration).

    On an event loop it runs with the caller's context variables, off the loop
    (a sleeping controller never holds up the loop): on the thread that waits
    for this work when there is one (:func:`wait_on`), else in the server's
    bounded pool.
    """
    loop = _get_running_loop()
    if loop is None:
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            if (error := user_error(exc)) is exc:
                raise
            raise error from exc
        if type(result) in _PLAIN_RESULTS or not inspect.isawaitable(result):
            return result
        return wait_on(background_loop(), _await(result))
    result = await _submit(loop, func, args, kwargs)
    if type(result) in _PLAIN_RESULTS or not inspect.isawaitable(result):
        return result
    return await _await(result)


async def _await(awaitable: Awaitable[T]) -> T:
    """Await what user code gave, what it lets out as :func:`user_error` says (the
    coroutine of a task on a loop: ``SystemExit`` must not leave it, nor a
    ``CancelledError`` that would pass for the task's cancellation)."""
    try:
        return await awaitable
    except BaseException as exc:
        if (error := user_error(exc)) is exc:
            raise
        raise error from exc


async def await_user(awaitable: Awaitable[T]) -> T:
    """Await what user code returned: on the running loop, or on the background
    loop when there is none (it may suspend, which the dispatch coroutine cannot
    do outside a loop)."""
    if _get_running_loop() is not None:
        return await _await(awaitable)
    return wait_on(background_loop(), _await(awaitable))


def share_helper(context: contextvars.Context) -> None:
    """Give ``context`` the helper thread of the running task (:func:`_hand_over`): the
    sync calls of code run in it go to the thread waiting for that task, as the
    task's own do."""
    context.run(_HELPER.set, _HELPER.get())


class TaskCancelled(Exception):
    """The task of :func:`run_in_task` was cancelled, and not as its caller was."""


async def run_in_task(
    coro: Coroutine[Any, Any, T], on_start: Callable[[Callable[[], object]], None]
) -> T:
    """Await ``coro`` run in a task of its own on the running loop; ``on_start`` gets
    the task's ``cancel`` first.  :class:`TaskCancelled` when that task alone was
    cancelled (the caller's own cancellation goes on as such)."""
    task = asyncio.ensure_future(coro)
    on_start(task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and not cancelling_me():
            raise TaskCancelled() from None
        raise


def running_task() -> asyncio.Future[Any] | None:
    """The task running now, if any."""
    return asyncio.current_task() if _get_running_loop() is not None else None


#: The tasks of :func:`after_task` (the loop keeps only weak references to tasks).
_AFTER: set[asyncio.Future[Any]] = set()


async def after_task(
    task: asyncio.Future[Any] | None, then: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """On the loop of ``task``: ``await then()`` when ``task`` is None or done; else
    ``then()`` runs as soon as ``task`` ended, in a task of its own that nobody waits
    for (``task`` may end late, or ignore its cancellation).  ``task`` is not
    cancelled here: whoever stopped waiting for it did, and a second cancellation
    would cut short the ``finally`` that the first one started."""
    if task is None or task.done():
        await then()
        return

    def start(_task: object) -> None:
        # In a context of its own: the caller's helper thread no longer waits for it.
        after = contextvars.Context().run(asyncio.ensure_future, then())
        _AFTER.add(after)
        after.add_done_callback(_AFTER.discard)

    task.add_done_callback(start)


def cancelling_me(error: BaseException | None = None) -> bool:
    """True when the running task itself is being cancelled.  Python 3.10 cannot tell:
    there, True when ``error`` was raised as a cancellation was handled (a ``finally``
    that failed as the task was cancelled), else False."""
    task = asyncio.current_task() if _get_running_loop() is not None else None
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None:
        return bool(cancelling() > 0)
    return error is not None and isinstance(error.__context__, asyncio.CancelledError)


def cancellation() -> BaseException:
    """The exception that cancels the running task (``CancelledError``)."""
    return asyncio.CancelledError()


#: Seconds between looks at the work of other threads :func:`until_none` waits for.
_UNDER_WAY_POLL = 0.001


async def until_none(under_way: Sized) -> None:
    """Wait until ``under_way`` is empty: the writes (or body reads) other threads
    still have under way as their request ends (their own timeouts bound them). On an
    event loop it yields (a thread's write may wait for that very loop to send its
    bytes); elsewhere it sleeps."""
    on_loop = _get_running_loop() is not None
    while len(under_way):
        if on_loop:
            await asyncio.sleep(_UNDER_WAY_POLL)
        else:
            time.sleep(_UNDER_WAY_POLL)


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    return _get_running_loop()


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Start ``coro`` as a task of the running loop."""
    return asyncio.ensure_future(coro)


async def join(task: Awaitable[T]) -> T:
    """Await a task of :func:`spawn`'s, also from a thread that runs no loop (the
    threaded transport, WSGI and the TestClient drive a request so): there it is
    awaited on its own loop, while the thread waits (:func:`wait_on`)."""
    if isinstance(task, asyncio.Future) and not task.done() and _get_running_loop() is None:
        future: asyncio.Future[T] = task
        return wait_on(future.get_loop(), _join_on_loop(future))
    return await task  # on a loop, or done: then it returns (or raises) without suspending


async def _join_on_loop(task: asyncio.Future[T]) -> T:
    return await task


def wait_for_loop(future: concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop) -> bool:
    """Wait (a worker thread) for work handed to ``loop``: True once it is done,
    False if the loop closed first (a loop gone for good never strands the thread).

    Once the future is done, its own outcome counts (its exception is raised;
    ``CancelledError`` when it was cancelled), never the wait's: a timeout of the
    wait that races the completion is not taken for the work's failure.
    """
    while True:
        try:
            future.result(timeout=1.0)
            return True
        except Exception:
            if future.done():
                break
            if loop.is_closed():
                return False
    if future.cancelled():
        raise concurrent.futures.CancelledError()
    error = future.exception()
    if error is not None:
        raise error
    return True


def wait_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result.

    When the thread helps (:func:`help_while_waiting`) it meanwhile runs the jobs
    that ``coro`` and the tasks it starts post: their I/O, and the sync user code
    they call (:func:`call_sync`), which thus needs no other thread.
    """
    helper: LoopHelper | None = getattr(_local, "helper", None)
    if helper is None:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
    return helper.wait(lambda: _hand_over(helper, coro, loop))


def _hand_over(
    helper: LoopHelper, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop
) -> concurrent.futures.Future[T]:
    # The task is made in a copy of this context: set here, the helper is the task's.
    token = _HELPER.set(helper)
    try:
        return asyncio.run_coroutine_threadsafe(coro, loop)
    finally:
        _HELPER.reset(token)
