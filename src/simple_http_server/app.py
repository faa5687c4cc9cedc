"""``App``: the registry every decorator writes into.

Module-level decorators (``route``, ``request_map``, ``request_filter``...)
register on one default app; ``get_app_conf(tag)`` returns other named apps.
Registrations are compiled into route tables and binding plans once, the first
time the app serves after a change.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .dispatch.binding import ModelBinder, ModelBindingConf
from .dispatch.error_pages import ErrorPages
from .dispatch.filters import FilterEntry
from .dispatch.routing import parse_methods
from .models import SESSION_COOKIE_NAME, SessionFactory

__all__ = [
    "App",
    "AppConf",
    "ControllerFunction",
    "get_app_conf",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
Methods = str | Sequence[str] | None
Exprs = str | Sequence[str] | None

_CLASS_MAPPING = "__shs_request_map__"
_CLASS_CONTROLLER = "__shs_controller__"


@dataclass(slots=True)
class ControllerFunction:
    """One ``@request_map`` registration, as written by the user."""

    func: Callable[..., Any]
    url: str = ""
    regexp: str = ""
    method: Methods = None
    headers: Exprs = None
    match_all_headers_expressions: bool | None = None
    params: Exprs = None
    match_all_params_expressions: bool | None = None
    owner: type | None = None  # the class, for controller methods
    #: Called without an instance of ``owner``: a ``staticmethod``, or a ``classmethod``
    #: (``func`` bound to its class once the class exists).
    static: bool = False

    @property
    def methods(self) -> frozenset[str]:
        """The methods this registration names (empty: any)."""
        return parse_methods(self.method)


@dataclass(slots=True)
class ControllerClassInfo:
    """``@controller`` options of a class."""

    singleton: bool = True
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class _MethodMarker:
    """Stands in for a decorated method until its class exists (``__set_name__``).

    ``attribute`` is what the class gets back: the function, or the ``staticmethod``
    / ``classmethod`` that was decorated (then ``func`` is the function it wraps)."""

    def __init__(self, func: Callable[..., Any], attribute: Any = None) -> None:
        self.func = func
        self.attribute = func if attribute is None else attribute
        self.static = isinstance(attribute, staticmethod | classmethod)
        self.owner: type | None = None  # set once the class exists
        self.registrations: list[ControllerFunction] = []

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        for reg in self.registrations:
            reg.owner = owner
            reg.static = self.static
            if self.static:  # the function itself, or the one bound to the class
                reg.func = self.attribute.__get__(None, owner)
        setattr(owner, name, self.attribute)

    def wrapped_by(self, wrapper: Any) -> None:
        """``@staticmethod`` or ``@classmethod`` was written above ``@route``: the
        class holds ``wrapper`` around this marker (Python does not call its
        ``__set_name__``); it gets the same wrapper around the function instead."""
        self.attribute = type(wrapper)(self.func)
        self.static = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def _check_mapping(url: str, regexp: str, method: Methods) -> None:
    """Fail at import, not per request, on a mapping that can never work."""
    if url and regexp:
        raise ValueError(f"request_map: give a url or a regexp, not both ({url!r}, {regexp!r})")
    if regexp:
        re.compile(regexp)
    parse_methods(method)


def _arguments(args: Any) -> tuple[Any, ...]:
    """``@controller(args=...)``: a list or tuple of arguments, or one ``str``
    (one argument, not its characters)."""
    if args is None:
        return ()
    if isinstance(args, str | bytes):
        return (args,)
    return tuple(args)


def _mappable(target: Any) -> bool:
    """What a bare ``@request_map`` decorates (a ``classmethod`` is not callable)."""
    return callable(target) or isinstance(target, classmethod)


def _is_method(func: Callable[..., Any]) -> bool:
    parts = getattr(func, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


def _wrapped_marker(value: Any) -> _MethodMarker | None:
    """The marker inside a ``staticmethod`` / ``classmethod`` written above ``@route``."""
    if isinstance(value, staticmethod | classmethod):
        inner = value.__func__
        if isinstance(inner, _MethodMarker):
            inner.wrapped_by(value)
            return inner
    return None


def _adopt_wrapped_methods(cls: type) -> None:
    """Give ``cls`` the routes of its methods that are wrapped in ``@staticmethod`` or
    ``@classmethod`` written above ``@route`` (their ``__set_name__`` is never called)."""
    for name, value in list(vars(cls).items()):
        marker = _wrapped_marker(value)
        if marker is not None:
            marker.__set_name__(cls, name)


def _class_of(func: Callable[..., Any]) -> type | None:
    """The module-level class whose method ``func`` is, found by its qualified name."""
    found: Any = sys.modules.get(getattr(func, "__module__", ""), None)
    for part in func.__qualname__.split(".")[:-1]:
        found = getattr(found, part, None)
    return found if isinstance(found, type) else None


class App:
    """A set of controllers, filters, websocket handlers and error pages."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.controllers: list[ControllerFunction] = []
        self.filters: list[FilterEntry] = []
        self.error_pages = ErrorPages()
        self.websocket_handlers: list[Any] = []
        self.model_binding_conf = ModelBindingConf()
        self.session_factory: SessionFactory | None = None
        self.session_cookie_name: str = SESSION_COOKIE_NAME
        self.session_timeout: int = 30 * 60
        self._version = 0
        self._compiled: Any = None
        self._markers: list[_MethodMarker] = []  # methods whose class may not exist yet
        self._lock = threading.Lock()

    def changed(self) -> None:
        """Mark the app as changed; it is compiled again before the next request."""
        self._version += 1

    # -- controllers ---------------------------------------------------------
    def _register(self, target: Any, reg: ControllerFunction) -> Any:
        if isinstance(target, type):
            setattr(target, _CLASS_MAPPING, reg)
            _adopt_wrapped_methods(target)
            self.changed()
            return target
        if isinstance(target, staticmethod | classmethod):  # ``@route`` above it
            target = _wrapped_marker(target) or _MethodMarker(target.__func__, target)
        if isinstance(target, _MethodMarker):
            reg.func = target.func
            reg.static = target.static
            target.registrations.append(reg)
            self._markers.append(target)
            self.controllers.append(reg)
            self.changed()
            return target
        reg.func = target
        self.controllers.append(reg)
        self.changed()
        if _is_method(target):
            marker = _MethodMarker(target)
            marker.registrations.append(reg)
            self._markers.append(marker)
            return marker
        return target

    @overload
    def request_map(self, __func: F) -> F: ...

    @overload
    def request_map(
        self,
        url: str = "",
        *,
        regexp: str = "",
        method: Methods = None,
        headers: Exprs = None,
        match_all_headers_expressions: bool | None = None,
        params: Exprs = None,
        match_all_params_expressions: bool | None = None,
    ) -> Callable[[F], F]: ...

    def request_map(self, *anno_args: Any, **options: Any) -> Any:
        """Map a function, method or class to a url or ``regexp``.

        Usable bare (``@request_map``) or with arguments
        (``@request_map("/path", method="GET")``).

        Args:
            url: the path; ``{name}`` path values, ``*`` and ``**`` wildcards.
            regexp: a regular expression matched against the path instead.
            method: one method or several (``["GET", "POST"]``); every method when empty.
            headers: header expressions the request must match (``"X-A=b"``...).
            match_all_headers_expressions: all of them (default) or any one.
            params: parameter expressions (``"a=b"``, ``"a!=b"``, ``"a^=b"``, ``"!a"``).
            match_all_params_expressions: all of them (default) or any one.
        """
        if len(anno_args) == 1 and _mappable(anno_args[0]) and not options:
            return self._register(anno_args[0], ControllerFunction(func=anno_args[0]))
        url = options.pop("url", anno_args[0] if anno_args else "") or ""
        _check_mapping(url, options.get("regexp") or "", options.get("method"))

        def decorator(target: Any) -> Any:
            return self._register(target, ControllerFunction(func=target, url=url, **options))

        return decorator

    route = request_map
    request = request_map

    @overload
    def controller(self, __cls: C) -> C: ...

    @overload
    def controller(
        self,
        *,
        singleton: bool = True,
        args: Sequence[Any] | str | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Callable[[C], C]: ...

    def controller(self, *anno_args: Any, **options: Any) -> Any:
        """Make a controller class a singleton, or pass its ``__init__`` arguments.

        Usable bare (``@controller``) or with arguments.

        Args:
            singleton: one instance for every request (default), or one per request.
            args: positional arguments of the class (a single ``str`` is one argument).
            kwargs: keyword arguments of the class.
        """

        def decorate(cls: C) -> C:
            info = ControllerClassInfo(
                singleton=options.get("singleton", True),
                args=_arguments(options.get("args")),
                kwargs=dict(options.get("kwargs") or {}),
            )
            setattr(cls, _CLASS_CONTROLLER, info)
            _adopt_wrapped_methods(cls)
            self.changed()
            return cls

        if len(anno_args) == 1 and isinstance(anno_args[0], type) and not options:
            return decorate(anno_args[0])
        return decorate

    # -- filters and error pages ---------------------------------------------
    def _add_filter(
        self, func: F, path: str = "", regexp: str = "", before_body: bool = False
    ) -> F:
        self.filters.append(FilterEntry.create(func, path, regexp, before_body))
        self.changed()
        return func

    @overload
    def request_filter(self, __func: F) -> F: ...

    @overload
    def request_filter(
        self, path: str = "", regexp: str = "", *, before_body: bool = False
    ) -> Callable[[F], F]: ...

    def request_filter(self, path: Any = "", regexp: str = "", *, before_body: bool = False) -> Any:
        """Register a filter ``f(ctx)`` for a path pattern or a ``regexp``.

        Usable bare (``@request_filter``: every path) or with arguments
        (``@request_filter("/api/**")``, ``@request_filter(regexp="^/api")``). The filter
        gets a ``FilterContext``: ``ctx.request``, ``ctx.response`` and ``ctx.do_chain()``.
        ``before_body=True`` runs it before the request body is read (and before the
        other filters): it can refuse an upload that was never received.
        """
        if callable(path):  # bare ``@request_filter``: every path
            return self._add_filter(path)

        def decorator(func: F) -> F:
            return self._add_filter(func, path, regexp, before_body)

        return decorator

    @overload
    def filter_map(self, regexp: str, filter_function: F) -> F: ...

    @overload
    def filter_map(self, regexp: str = "", filter_function: None = None) -> Callable[[F], F]: ...

    def filter_map(
        self, regexp: str = "", filter_function: Callable[..., Any] | None = None
    ) -> Any:
        """Deprecated spelling of ``request_filter(regexp=...)``."""
        if filter_function is not None:
            return self._add_filter(filter_function, regexp=regexp)
        return self.request_filter(regexp=regexp)

    @overload
    def error_message(self, __func: F) -> F: ...

    @overload
    def error_message(self, *codes: str | int | None) -> Callable[[F], F]: ...

    def error_message(self, *codes: Any) -> Any:
        """Register an error page for codes, ranges (``"40x"``) or everything.

        ``@error_message("404")``, ``@error_message("40x", "50x")``, or bare
        ``@error_message`` for every code. The page gets ``code``, ``message`` and
        ``explain`` by argument name and returns any result type.
        """
        if len(codes) == 1 and callable(codes[0]):
            self.error_pages.add((), codes[0])
            return codes[0]

        def decorator(func: F) -> F:
            self.error_pages.add(tuple(codes), func)
            return func

        return decorator

    # -- websocket handlers (see websocket.py) -------------------------------
    def websocket_handler(
        self, endpoint: str = "", regexp: str = "", singleton: bool = True
    ) -> Callable[[C], C]:
        """Register a websocket handler class for an endpoint or a ``regexp``."""
        from .dispatch.ws_handlers import register_class

        return register_class(self, endpoint, regexp, singleton)  # type: ignore[no-any-return]

    def websocket_handshake(self, endpoint: str = "", regexp: str = "") -> Callable[[F], F]:
        """Register a function-style ``on_handshake(request)``."""
        from .dispatch.ws_handlers import register_function

        return register_function(self, "handshake", endpoint, regexp)  # type: ignore[no-any-return]

    def websocket_open(self, endpoint: str = "", regexp: str = "") -> Callable[[F], F]:
        """Register a function-style ``on_open(session)``."""
        from .dispatch.ws_handlers import register_function

        return register_function(self, "open", endpoint, regexp)  # type: ignore[no-any-return]

    def websocket_close(self, endpoint: str = "", regexp: str = "") -> Callable[[F], F]:
        """Register a function-style ``on_close(session, reason)``."""
        from .dispatch.ws_handlers import register_function

        return register_function(self, "close", endpoint, regexp)  # type: ignore[no-any-return]

    def websocket_message(
        self, endpoint: str = "", regexp: str = "", message_type: str = "WEBSOCKET_MESSAGE_TEXT"
    ) -> Callable[[F], F]:
        """Register a function-style message callback for ``message_type``."""
        from .dispatch.ws_handlers import register_function

        return register_function(self, message_type, endpoint, regexp)  # type: ignore[no-any-return]

    # -- model bindings (naja-atra) ------------------------------------------
    def model_binding(self, *types: Any, **named: Any) -> Callable[[C], C]:
        """Register a binder class for arguments annotated with ``types`` (naja-atra
        names its one type ``arg_type=``)."""
        if "arg_type" in named:
            types = (*types, named.pop("arg_type"))
        if named:
            raise TypeError(f"model_binding() got unexpected keyword arguments {sorted(named)}")

        def decorator(cls: C) -> C:
            for t in types:
                self.model_binding_conf.model_binding_types[t] = cls
            self.changed()
            return cls

        return decorator

    @overload
    def default_model_binding(self, cls: C) -> C: ...

    @overload
    def default_model_binding(self, cls: None = None) -> Callable[[C], C]: ...

    def default_model_binding(self, cls: type | None = None) -> Any:
        """Register the binder class used for otherwise unknown annotations
        (``@default_model_binding`` or, as naja-atra allows, ``@default_model_binding()``)."""
        if cls is None:
            return self.default_model_binding
        self.model_binding_conf.default_model_binding_type = cls
        self.changed()
        return cls

    @property
    def model_bindings(self) -> dict[Any, ModelBinder]:
        """The ``model_binding`` classes by type."""
        return self.model_binding_conf.model_binding_types

    @property
    def fallback_binder(self) -> ModelBinder | None:
        """The ``default_model_binding`` class, if any."""
        return self.model_binding_conf.default_model_binding_type

    # -- compiled state ------------------------------------------------------
    def compiled(self) -> Any:
        """Route tables and plans, compiled again after any change."""
        compiled = self._compiled
        if compiled is not None and compiled.version == self._version:
            return compiled
        from .dispatch.compile import compile_app

        with self._lock:
            if self._compiled is None or self._compiled.version != self._version:
                self._compiled = compile_app(self, self._version)
            return self._compiled

    def iter_controllers(self) -> Iterable[ControllerFunction]:
        """Every registration."""
        for marker in self._markers:
            cls = _class_of(marker.func) if marker.owner is None else None
            if cls is not None:
                _adopt_wrapped_methods(cls)
        self._markers = [marker for marker in self._markers if marker.owner is None]
        return iter(self.controllers)


AppConf = App

_apps: dict[str, App] = {"": App()}
_apps_lock = threading.Lock()


def get_app_conf(tag: str = "") -> App:
    """The app named ``tag`` (the default app for ``""``), created on first use."""
    with _apps_lock:
        app = _apps.get(tag)
        if app is None:
            app = _apps[tag] = App(tag)
        return app


def default_app() -> App:
    """The app behind the module-level decorators."""
    return _apps[""]


def class_mapping(cls: type) -> ControllerFunction | None:
    """The class-level ``@request_map`` of ``cls``."""
    value = cls.__dict__.get(_CLASS_MAPPING)
    return value if isinstance(value, ControllerFunction) else None


def class_controller(cls: type) -> ControllerClassInfo | None:
    """The ``@controller`` options of ``cls``."""
    value = cls.__dict__.get(_CLASS_CONTROLLER)
    return value if isinstance(value, ControllerClassInfo) else None
