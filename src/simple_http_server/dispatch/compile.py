"""Compile an :class:`~simple_http_server.app.App` into what serves requests.

Runs once per change of the app: builds the route table, the binding plan of
every controller and the controller-instance providers of class controllers.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import logger as _logging
from .binders import session as session_binder
from .binding import BindContext, BindingPlan, plan_binding
from .filters import FilterEntry
from .invoke import call_async, call_sync, is_async_callable, user_error
from .routing import Router, compile_conditions

if TYPE_CHECKING:
    from ..app import App, ControllerFunction

__all__ = ["CompiledApp", "Endpoint", "compile_app"]

_FILTER_CACHE_SIZE = 2048
#: Longest path whose filters are remembered: paths are the client's (up to
#: ``max_head_size``), so longer ones would let 2048 requests pin 128 MiB.
_FILTER_CACHE_MAX_PATH = 512
_log = _logging.get_logger("simple_http_server.compile")


@dataclass(slots=True)
class Endpoint:
    """A controller ready to serve: function, binding plan, instance provider."""

    func: Callable[..., Any]
    plan: BindingPlan
    instance: Callable[[], Any] | None = None
    is_async: bool = False
    #: The controller takes a ``Session`` argument (resolved before it runs).
    binds_session: bool = False
    #: ``run(ctx)``: bind, build the instance and call (a plain controller, one job).
    run: Callable[[BindContext], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.run = _sync_runner(self.func, self.plan, self.instance)

    def invoke(self, ctx: BindContext) -> Coroutine[Any, Any, Any]:
        """The coroutine that binds the arguments and calls the controller.

        A plain controller is bound and called in one go off the event loop (in
        the pool on a loop): user binders and a per-request instance's constructor
        are sync code on its way.  An async one is bound at once when no binder
        needs to await or block (most controllers): the caller awaits the call
        itself, with no coroutine of this method between.
        """
        plan = self.plan
        if not self.is_async:
            if plan.awaiting:
                return self._run_sync_awaiting(ctx)
            return call_sync(self.run, ctx)
        if plan.runs_sync_user_code:
            return self._bind_off_loop_and_call(ctx)
        if plan.awaiting:
            return self._bind_and_call(ctx)
        return self._call(plan.bind_now(ctx))

    def _run_with(self, kwargs: dict[str, Any]) -> Any:
        if self.instance is not None:
            return self.func(self.instance(), **kwargs)
        return self.func(**kwargs)

    def _run_or_defer(self, ctx: BindContext) -> Any:
        """:meth:`_run`, unless an async binder's value is still to await."""
        kwargs = self.plan.bind_now(ctx)
        if self.plan.pending(kwargs):
            return _Unresolved(kwargs)
        return self._run_with(kwargs)

    async def _run_sync_awaiting(self, ctx: BindContext) -> Any:
        """A plain controller with user binders: their async values are awaited
        where async code runs, then the controller is called off the loop."""
        result = await call_sync(self._run_or_defer, ctx)
        if type(result) is _Unresolved:
            kwargs = await self.plan.resolve(result.kwargs)
            return await call_sync(self._run_with, kwargs)
        return result

    async def _bind_and_call(self, ctx: BindContext) -> Any:
        try:
            kwargs = await self.plan.bind(ctx)  # an async binder's constructor runs here
        except BaseException as exc:
            if (error := user_error(exc)) is exc:
                raise
            raise error from exc
        return await self._call(kwargs)

    async def _bind_off_loop_and_call(self, ctx: BindContext) -> Any:
        """An async controller after a sync user binder: binding runs off the loop."""
        kwargs = await call_sync(self.plan.bind_now, ctx)
        return await self._call(await self.plan.resolve(kwargs))

    def _call(self, kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        if self.instance is not None:  # the constructor is user code too: call_async calls it
            return call_async(self._call_on_instance, **kwargs)
        return call_async(self.func, **kwargs)

    def _call_on_instance(self, **kwargs: Any) -> Any:
        return self.func(self.instance(), **kwargs)  # type: ignore[misc]


def _sync_runner(
    func: Callable[..., Any], plan: BindingPlan, instance: Callable[[], Any] | None
) -> Callable[[BindContext], Any]:
    """``Endpoint.run`` of a plain controller, with no step its arguments do not need."""
    bind_now = plan.bind_now
    if instance is None:
        if not plan.names:
            return lambda ctx: func()
        return lambda ctx: func(**bind_now(ctx))
    if not plan.names:
        return lambda ctx: func(instance())
    return lambda ctx: func(instance(), **bind_now(ctx))


class _Unresolved:
    """Arguments bound off the loop, some still to await (an async ``bind()``)."""

    __slots__ = ("kwargs",)

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs


@dataclass(slots=True)
class CompiledApp:
    """Everything the dispatcher reads per request."""

    version: int
    router: Router[Endpoint]
    filters: list[FilterEntry]
    websockets: Any = None
    _filter_cache: dict[str, FilterChain] = field(default_factory=dict)

    def filters_for(self, path: str) -> FilterChain:
        """The filters that apply to ``path``: the ``before_body`` ones first, then the
        others, each in registration order."""
        cached = self._filter_cache.get(path)
        if cached is None:
            matching = [f for f in self.filters if f.matches(path)]
            early = [f.func for f in matching if f.before_body]
            # A function registered for several patterns (README: "/tuple/**" and
            # regexp "^/tuple") runs once per request, where it first comes.
            funcs = tuple(dict.fromkeys(early + [f.func for f in matching]))
            cached = FilterChain(funcs, len(dict.fromkeys(early)))
            if len(path) > _FILTER_CACHE_MAX_PATH:
                return cached
            if len(self._filter_cache) >= _FILTER_CACHE_SIZE:
                self._filter_cache.clear()
            self._filter_cache[path] = cached
        return cached


class FilterChain(NamedTuple):
    """The filters of one path, and how many of them (the first) run before the body
    is read."""

    funcs: tuple[Callable[..., Any], ...]
    before_body: int


def _join(prefix: str, url: str) -> str:
    if not url:
        return prefix
    if not prefix:
        return url
    return prefix.rstrip("/") + "/" + url.lstrip("/")


def _by_keyword(func: Callable[..., Any], skip_first: bool) -> Callable[..., Any]:
    """``func``, also callable with its positional-only arguments given by keyword, as
    the binding plan gives every argument (0.22.x passed them by position)."""
    params = list(inspect.signature(func).parameters.values())[1 if skip_first else 0 :]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
    if not positional:
        return func

    def by_keyword(*head: Any, **kwargs: Any) -> Any:
        return func(*head, *[kwargs.pop(name) for name in positional], **kwargs)

    return by_keyword


def _instance_provider(cls: type) -> Callable[[], Any]:
    from ..app import class_controller

    info = class_controller(cls)
    if info is None:
        return cls
    args, kwargs = info.args, info.kwargs
    if not info.singleton:
        return lambda: cls(*args, **kwargs)
    holder: list[Any] = []
    lock = threading.Lock()  # concurrent first requests: one instance, built once

    def singleton() -> Any:
        if not holder:
            with lock:
                if not holder:
                    holder.append(cls(*args, **kwargs))
        return holder[0]

    return singleton


def _effective(reg: ControllerFunction) -> tuple[str, str, frozenset[str], Any]:
    """url, regexp, methods and conditions after applying the class mapping."""
    from ..app import class_mapping

    url, regexp, methods = reg.url, reg.regexp, reg.methods
    headers, params = reg.headers, reg.params
    all_headers, all_params = reg.match_all_headers_expressions, reg.match_all_params_expressions
    cls_map = class_mapping(reg.owner) if reg.owner is not None else None
    if cls_map is not None:
        if not regexp:
            url = _join(cls_map.url, url)
        if not methods:
            methods = cls_map.methods
        headers = _concat(cls_map.headers, headers)
        params = _concat(cls_map.params, params)
        if all_headers is None:
            all_headers = cls_map.match_all_headers_expressions
        if all_params is None:
            all_params = cls_map.match_all_params_expressions
    conditions = compile_conditions(params, headers, all_params, all_headers)
    return url, regexp, methods, conditions


def _concat(a: Any, b: Any) -> list[str]:
    out: list[str] = []
    for item in (a, b):
        if item:
            out.extend([item] if isinstance(item, str) else item)
    return out


def compile_app(app: App, version: int) -> CompiledApp:
    """Build the route table and binding plans of ``app``."""
    router: Router[Endpoint] = Router()
    plans: dict[Any, BindingPlan] = {}
    providers: dict[type, Callable[[], Any]] = {}
    for reg in app.iter_controllers():
        if not reg.url and not reg.regexp and reg.owner is None:
            # 0.22.x warned but still served such a function at "/"; so do we
            name = reg.func.__qualname__
            _log.warning("%s: request_map without a url or a regexp serves /", name)
        owner = None if reg.static else reg.owner  # whose instance the method takes
        plan = plans.get(reg.func)
        if plan is None:
            plan = plan_binding(
                reg.func, owner is not None, app.model_bindings, app.fallback_binder
            )
            plans[reg.func] = plan
        instance = None
        if owner is not None:
            instance = providers.get(owner)
            if instance is None:
                instance = providers[owner] = _instance_provider(owner)
        endpoint = Endpoint(
            _by_keyword(reg.func, owner is not None),
            plan,
            instance,
            is_async_callable(reg.func),
            session_binder in plan.binders,
        )
        url, regexp, methods, conditions = _effective(reg)
        if regexp:
            router.add_regexp(regexp, endpoint, methods, conditions)
        else:
            router.add_url(url, endpoint, methods, conditions)
    websockets = None
    if app.websocket_handlers:
        from ..websocket import compile_websockets

        websockets = compile_websockets(app)
    return CompiledApp(version, router, list(app.filters), websockets)
