"""Request filters: ``FilterContext`` and the chain that runs filters then the controller."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import logger as _logging
from ..models import Request
from ..responses import Response
from .invoke import call, current_loop, in_event_loop, join, run_sync, spawn, wait_on
from .routing import PathPattern, url_key

__all__ = ["ChainStep", "FilterContext", "FilterEntry", "run_chain"]

_log = _logging.get_logger("simple_http_server.dispatch")


@dataclass(frozen=True, slots=True)
class FilterEntry:
    """A registered filter and the paths it applies to."""

    func: Callable[..., Any]
    pattern: PathPattern | None = None
    regex: re.Pattern[str] | None = None
    #: Runs before the request body is read (ahead of the other filters).
    before_body: bool = False

    @classmethod
    def create(
        cls, func: Callable[..., Any], path: str = "", regexp: str = "", before_body: bool = False
    ) -> FilterEntry:
        """Compile a filter for a ``path`` pattern or a ``regexp``; with neither, for
        every path (``/`` included, as 0.22.x's ``filter_map()`` with its empty regexp)."""
        if regexp or not path:
            return cls(func, regex=re.compile(regexp), before_body=before_body)
        return cls(func, pattern=PathPattern(url_key(path)), before_body=before_body)

    def matches(self, path: str) -> bool:
        """True when the filter applies to ``path`` (run once even if both forms match)."""
        if self.regex is not None:
            return bool(self.regex.match(path) or self.regex.match(path[1:]))
        assert self.pattern is not None
        return self.pattern.match(path) is not None


class FilterContext:
    """What a filter sees: ``request``, ``response`` and ``do_chain()``.

    Filter ``i`` runs with the chain positioned after it, so its ``do_chain()``
    starts filter ``i + 1`` (or the controller).  A chain step waits for the step
    its filter started and did not await, so an ``async def`` filter may await
    ``do_chain()`` or not; what an awaited step raised is the filter's to handle.
    """

    def __init__(
        self,
        request: Request,
        response: Response,
        filters: Sequence[Callable[..., Any]],
        endpoint: Callable[[], Awaitable[None]],
    ) -> None:
        self._request = request
        self._response = response
        self._filters = filters
        self._next_index = 0
        self._endpoint = endpoint
        self._loop = current_loop()
        self._started: dict[int, _Started | None] = {}

    @property
    def request(self) -> Request:
        """The request; its headers may be changed for the controller."""
        return self._request

    @property
    def response(self) -> Response:
        """The live response."""
        return self._response

    def do_chain(self) -> Awaitable[None]:
        """Go on to the next filter, or to the controller.

        From a plain function it returns when the rest of the chain is done (the
        calling thread meanwhile runs the chain's sync code: a request holds one
        thread of a pool at most); from an ``async def`` filter it returns an
        awaitable (awaiting it is optional).
        Calling it twice, or after the response was answered, does nothing (an
        ``async def`` filter still gets an awaitable, done at once).
        """
        # A plain function gets an awaitable that is done too, so that one
        # return type serves both (``await ctx.do_chain()`` type-checks).
        index = self._next_index
        if self._response.is_sent or index in self._started:
            return _NOTHING
        if in_event_loop():
            started = self._started[index] = _Started(spawn(self._step(index)))
            return started
        self._started[index] = None
        if self._loop is None:
            run_sync(self._step(index))
        else:
            wait_on(self._loop, self._step(index))
        return _NOTHING

    async def _step(self, index: int) -> None:
        if index >= len(self._filters):
            await self._endpoint()
            return
        self._next_index = index + 1
        func = self._filters[index]
        try:
            if isinstance(func, ChainStep):
                await func(self)  # the framework's own: where the chain runs
            else:
                await call(func, self)
        except Exception:
            # The filter's error answers the request, once the chain it started
            # and left running is over: nothing of the request outlives it.
            await self._settle(index + 1)
            raise
        started = self._started.get(index + 1)
        if started is not None and not started.awaited:
            await started.join()

    async def _settle(self, index: int) -> None:
        started = self._started.get(index)
        if started is not None and not started.awaited:
            try:
                await started.join()
            except Exception:  # the filter's own error is the one that answers
                _log.debug("The chain under a failed filter failed too", exc_info=True)


class _Nothing:
    """What ``do_chain()`` gives a plain filter, or an ``async def`` one when it has
    nothing to start: awaiting it returns at once."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that ends at once


_NOTHING = _Nothing()


class _Started:
    """The rest of the chain, started by an ``async def`` filter's ``do_chain()``:
    a task of the loop the filter runs on.  Awaited by the filter, its outcome
    (an error the filter may catch) is the filter's; else the chain waits for it."""

    __slots__ = ("awaited", "task")

    def __init__(self, task: Awaitable[None]) -> None:
        self.task = task
        self.awaited = False

    def __await__(self) -> Generator[Any, None, None]:
        self.awaited = True
        return self.task.__await__()

    async def join(self) -> None:
        """Wait for the task (from a thread without a loop too)."""
        await join(self.task)


class ChainStep:
    """A step of the chain that is the framework's, not user code: awaited where the
    chain runs (no thread or loop of its own)."""

    __slots__ = ()

    async def __call__(self, ctx: FilterContext) -> None:
        await ctx.do_chain()


async def run_chain(ctx: FilterContext) -> None:
    """Run the filters and the controller."""
    await ctx._step(0)
