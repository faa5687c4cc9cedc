"""Socket I/O that coroutines hand to the thread waiting for them.

An ``async def`` controller served from a thread (a threaded-transport worker, a
WSGI server's request thread) runs on the shared background loop while that
thread waits for it (:func:`~..dispatch.invoke.help_while_waiting`).  The loop
must never wait for a client, so the controller's I/O is posted to that thread:
``response.write_bytes`` queues its bytes in an :class:`Outbox` (write-behind,
written in order before anything written after them), and ``await
reader.read()`` awaits a read done there through an :class:`Inbox`.

The owner supplies the blocking calls (``send``, the read) and what cuts the
answer short (``cut``); both raise :class:`ClientGone` when the client is gone.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..dispatch.channel import DRAIN_LOW_WATER
from .common import ClientGone, backlog_exceeded

__all__ = ["DRAIN_LOW_WATER", "READ_SLICE", "Inbox", "Outbox", "Post", "Readable", "report"]

_COMPLETE = "this Response is complete: nothing more can be written"
_get_running_loop = asyncio._get_running_loop

#: Runs a job on the thread waiting for the loop (or a thread of its own).
Post = Callable[[Callable[[], None]], None]
#: Waits at most the given seconds for input; True when a read would not wait long.
Readable = Callable[[float], bool]
#: Seconds a handed-off read waits for input before the thread looks at its other jobs.
READ_SLICE = 0.05
_Waiters = list[tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def report(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Resolve a loop's future from another thread."""
    try:
        loop.call_soon_threadsafe(_resolve, future, result, error)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


class Outbox:
    """Output written by a coroutine (write-behind), not yet taken by the client.

    A thread that is not the loop's writes it with ``send``, in order, before
    anything written after it (every writer holds ``write_lock``).  A failed write
    is kept in ``error``: the answer is cut (``cut``), and every later writer gets
    ``ClientGone``.  Past ``limit`` bytes unsent (0: no bound) the client is taken
    for one that does not read.
    """

    __slots__ = (
        "chunks",
        "closed",
        "cut",
        "drainers",
        "error",
        "limit",
        "lock",
        "peer",
        "post",
        "posted",
        "send",
        "unsent",
        "write_lock",
    )

    def __init__(
        self,
        send: Callable[[bytes], None],
        cut: Callable[[], None],
        post: Post,
        limit: int,
        peer: Any,
    ) -> None:
        self.send = send
        self.cut = cut
        self.post = post
        self.limit = limit
        self.peer = peer
        self.lock = threading.Lock()  # the fields below; never held while writing
        self.write_lock = threading.Lock()  # held while writing; never taken on a loop
        self.chunks: deque[bytes] = deque()
        self.unsent = 0
        self.posted = False  # a flush job is on its way
        self.closed = False  # the answer is complete: nothing more goes out
        self.error: str | None = None
        self.drainers: _Waiters = []

    def put(self, data: bytes) -> None:
        """Queue ``data`` (on an event loop: it never waits for a client); past the
        limit unsent, the client is dropped."""
        with self.lock:
            if self.error is not None:
                raise ClientGone(self.error)
            if not data:
                return
            if self.closed:
                raise RuntimeError(_COMPLETE)
            self.chunks.append(data)
            self.unsent += len(data)
            unsent = self.unsent
            post = not self.posted
            self.posted = True
        limit = self.limit
        if limit and unsent > limit:
            raise self.fail(backlog_exceeded(self.peer, unsent, limit))
        if post:
            self.post(self._flush_job)

    def _flush_job(self) -> None:
        with self.write_lock:
            try:
                self.flush()
            except ClientGone:  # kept in self.error: the next writer hears it
                pass

    def flush(self) -> None:
        """Write the queued output in order (the caller holds ``write_lock``)."""
        while True:
            with self.lock:
                if self.error is not None:
                    raise ClientGone(self.error)
                if not self.chunks:
                    self.posted = False
                    return
                chunk = self.chunks.popleft()
            try:
                self.send(chunk)
            except ClientGone as exc:
                raise self.fail(str(exc)) from None
            with self.lock:
                self.unsent -= len(chunk)
                drainers = self.drainers if self.unsent <= DRAIN_LOW_WATER else []
                if drainers:
                    self.drainers = []
            for loop, future in drainers:
                report(loop, future)

    def write(self, data: bytes) -> None:
        """Write ``data`` now, after the queued output (never on an event loop)."""
        with self.write_lock:
            self.flush()
            if data:
                try:
                    self.send(data)
                except ClientGone as exc:
                    raise self.fail(str(exc)) from None

    def finish(self) -> None:
        """The answer is complete: the queued output goes out now, and nothing after it."""
        with self.write_lock:
            try:
                self.flush()
            finally:
                with self.lock:
                    self.closed = True

    def fail(self, reason: str) -> ClientGone:
        """The queued output cannot go out: cut the answer; every later writer hears it."""
        with self.lock:
            if self.error is None:
                self.error = reason
            self.chunks.clear()
            self.unsent = 0
            drainers, self.drainers = self.drainers, []
        for loop, future in drainers:
            report(loop, future, error=ClientGone(reason))
        self.cut()
        return ClientGone(reason)

    async def drain(self) -> None:
        """Wait until at most :data:`DRAIN_LOW_WATER` is unsent; ``ClientGone`` once
        the client is gone."""
        loop = _get_running_loop()
        with self.lock:
            if self.error is not None:
                raise ClientGone(self.error)
            if loop is None or self.unsent <= DRAIN_LOW_WATER:
                return
            future: asyncio.Future[None] = loop.create_future()
            self.drainers.append((loop, future))
        await future


class Inbox:
    """A body read that the waiting thread does for a coroutine.

    Its outcome (bytes, None for a timeout, or the exception the read raised) is
    kept until a read takes it: one read at a time, and a coroutine that stops
    waiting (cancelled) leaves its read to the next one, so no byte is lost and no
    second read waits behind the first.
    """

    __slots__ = ("lock", "outcome", "reading", "ready", "wakers")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reading = False  # a read job is on its way
        self.ready = False  # ``outcome`` is one not taken yet
        self.outcome: bytes | Exception | None = None
        self.wakers: _Waiters = []

    def take(self) -> bytes | None:
        """The outcome (raised when it is an error); the next read does its own."""
        with self.lock:
            outcome, self.outcome, self.ready = self.outcome, None, False
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def read(
        self,
        read: Callable[[], bytes | None],
        post: Post,
        readable: Readable | None = None,
        wait: float = 0.0,
    ) -> bytes | None:
        """``read()`` run by ``post`` (the waiting thread), awaited on the loop.

        With ``readable``, the thread waits for input in slices of ``READ_SLICE``
        seconds (``wait`` in all: then the outcome is None, a timeout) and posts
        itself again between them, so the writes queued meanwhile go out (a
        coroutine may read and write at once), and a read nobody waits for any more
        ends at the next slice instead of holding the thread.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if self.ready:
                    break
                start = not self.reading
                self.reading = True
                woken: asyncio.Future[None] = loop.create_future()
                self.wakers.append((loop, woken))
            if start:
                if readable is None:
                    post(lambda: self._read_job(read))
                else:
                    deadline = time.monotonic() + wait
                    post(functools.partial(self._slice_job, read, post, readable, deadline))
            await woken
        return self.take()

    def _slice_job(
        self, read: Callable[[], bytes | None], post: Post, readable: Readable, deadline: float
    ) -> None:
        left = deadline - time.monotonic()
        try:
            ready = left > 0 and readable(min(READ_SLICE, left))
        except Exception as exc:  # the coroutine that takes the outcome gets it
            self._finish(exc)
            return
        if ready:
            self._read_job(read)
        elif time.monotonic() >= deadline:  # (a slice may end early: other jobs came)
            self._finish(None)  # timed out
        elif self._abandoned():
            return  # the bytes stay in the kernel for the next read
        else:
            post(functools.partial(self._slice_job, read, post, readable, deadline))

    def _abandoned(self) -> bool:
        """True (and no read under way any more) when no coroutine waits for this one."""
        with self.lock:
            if any(not woken.done() for _, woken in self.wakers):
                return False
            self.reading = False
            self.wakers = []
            return True

    def _read_job(self, read: Callable[[], bytes | None]) -> None:
        try:
            outcome: bytes | Exception | None = read()
        except Exception as exc:  # the coroutine that takes the outcome gets it
            outcome = exc
        self._finish(outcome)

    def _finish(self, outcome: bytes | Exception | None) -> None:
        with self.lock:
            self.outcome, self.ready = outcome, True
            self.reading = False
            wakers, self.wakers = self.wakers, []
        for loop, woken in wakers:
            report(loop, woken)
