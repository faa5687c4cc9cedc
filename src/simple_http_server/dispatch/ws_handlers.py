"""Websocket handlers: registration records, proxies, the route table, the handshake.

``@websocket_handler`` classes and the function-style decorators write records
into ``App.websocket_handlers``; :func:`compile_websockets` turns them into a
:class:`WebsocketRoutes` table of :class:`WebsocketHandlerProxy` objects (the
functions of one endpoint are combined in one proxy).  :func:`negotiate` runs
the opening handshake up to the decision: accept (with headers) or reject.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .. import logger as _logging
from ..models import HandshakeHeaders, Headers
from ..protocol.http11 import RequestHead, reason_phrase
from ..protocol.ws import HandshakeRejection, accept_headers, check_handshake
from .channel import encode_headers
from .dispatcher import make_request
from .invoke import call
from .routing import Router, compile_conditions

if TYPE_CHECKING:
    from wsproto.extensions import Extension

    from ..websocket import WebsocketRequest

__all__ = [
    "Accepted",
    "Callbacks",
    "Rejected",
    "WebsocketFunction",
    "WebsocketHandlerClass",
    "WebsocketHandlerProxy",
    "WebsocketRoutes",
    "compile_websockets",
    "negotiate",
    "register_class",
    "register_function",
]

_log = _logging.get_logger("simple_http_server.websocket")

#: Function-style events and the handler method each one stands for.
EVENT_METHODS = {
    "handshake": "on_handshake",
    "open": "on_open",
    "close": "on_close",
    "WEBSOCKET_MESSAGE_TEXT": "on_text_message",
    "WEBSOCKET_MESSAGE_BINARY": "on_binary_message",
    "WEBSOCKET_MESSAGE_BINARY_FRAME": "on_binary_frame",
    "WEBSOCKET_MESSAGE_PING": "on_ping_message",
    "WEBSOCKET_MESSAGE_PONG": "on_pong_message",
}


@dataclass(slots=True)
class WebsocketHandlerClass:
    """One ``@websocket_handler`` registration."""

    cls: type
    endpoint: str = ""
    regexp: str = ""
    singleton: bool = True


@dataclass(slots=True)
class WebsocketFunction:
    """One function-style registration (``@websocket_open``...)."""

    func: Callable[..., Any]
    event: str
    endpoint: str = ""
    regexp: str = ""


@dataclass(slots=True)
class Callbacks:
    """The callbacks of one session (None: not defined)."""

    on_handshake: Callable[..., Any] | None = None
    on_open: Callable[..., Any] | None = None
    on_close: Callable[..., Any] | None = None
    on_text_message: Callable[..., Any] | None = None
    on_binary_message: Callable[..., Any] | None = None
    on_binary_frame: Callable[..., Any] | None = None
    on_ping_message: Callable[..., Any] | None = None
    on_pong_message: Callable[..., Any] | None = None


_NAMES = tuple(EVENT_METHODS.values())


class WebsocketHandlerProxy:
    """Gives the callbacks of a session, from a handler class or from functions."""

    def __init__(self, cls: type | None = None, singleton: bool = True) -> None:
        self.cls = cls
        self.singleton = singleton
        self.functions: dict[str, Callable[..., Any]] = {}
        self._shared: Callbacks | None = None
        self._lock = threading.Lock()

    def add_function(self, event: str, func: Callable[..., Any]) -> None:
        """Add a function-style callback."""
        self.functions[EVENT_METHODS[event]] = func

    @property
    def shared(self) -> Callbacks | None:
        """The callbacks every session shares, once built (None: not yet, or none)."""
        return self._shared

    def callbacks(self) -> Callbacks:
        """The callbacks for a new session (a new handler object unless singleton).

        A singleton is built exactly once, however many sessions open at the same
        time: the others wait for it (only they: the lock is this proxy's).
        """
        shared = self._shared
        if shared is not None:
            return shared
        if self.cls is not None and not self.singleton:
            return self._build(self.cls)
        with self._lock:
            if self._shared is None:
                if self.cls is None:
                    self._shared = Callbacks(**self.functions)
                else:
                    self._shared = self._build(self.cls)
            return self._shared

    @staticmethod
    def _build(cls: type) -> Callbacks:
        handler = cls()
        return Callbacks(**{n: _defined(handler, n) for n in _NAMES})


def _defined(handler: object, name: str) -> Callable[..., Any] | None:
    """The handler's method ``name``; None when missing or the base class's mere default
    (``WebsocketHandler.on_binary_frame``: inheriting it must not turn streaming on)."""
    method = getattr(handler, name, None)
    if getattr(method, "inherited_default", False):
        return None
    return method


class WebsocketRoutes:
    """Endpoint -> proxy table of one app."""

    def __init__(self) -> None:
        self.router: Router[WebsocketHandlerProxy] = Router()

    def lookup(
        self, path: str
    ) -> tuple[WebsocketHandlerProxy, dict[str, str], tuple[str, ...]] | None:
        """The proxy, path values and regexp groups for ``path``."""
        match = self.router.lookup("GET", path, {}, Headers())
        if match.target is None:
            return None
        return match.target, match.path_values, match.reg_groups


def _check(endpoint: str, regexp: str, what: str) -> None:
    if not endpoint and not regexp:
        raise ValueError(f"{what}: a websocket handler needs an endpoint or a regexp")


def register_class(app: Any, endpoint: Any = "", regexp: str = "", singleton: bool = True) -> Any:
    """``@websocket_handler(endpoint=..., regexp=..., singleton=...)`` on ``app``."""
    if isinstance(endpoint, type):  # bare @websocket_handler
        raise ValueError(
            f"{endpoint.__qualname__}: @websocket_handler needs an endpoint or a regexp"
        )

    def decorator(cls: type) -> type:
        _check(endpoint, regexp, cls.__qualname__)
        app.websocket_handlers.append(WebsocketHandlerClass(cls, endpoint, regexp, singleton))
        app.changed()
        return cls

    return decorator


def register_function(app: Any, event: str, endpoint: str = "", regexp: str = "") -> Any:
    """A function-style websocket decorator for ``event`` on ``app``."""
    if event not in EVENT_METHODS:
        raise ValueError(f"unknown websocket message type: {event!r}")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        _check(endpoint, regexp, getattr(func, "__qualname__", repr(func)))
        app.websocket_handlers.append(WebsocketFunction(func, event, endpoint, regexp))
        app.changed()
        return func

    return decorator


def compile_websockets(app: Any) -> WebsocketRoutes:
    """Build the websocket route table of ``app``.

    One handler per ``(endpoint, regexp)``, as 0.22.x and naja-atra chose it: a
    ``@websocket_handler`` class, the last one registered, whatever the order; the
    function-style callbacks only where no class is registered (they are ignored
    there, with a warning).
    """
    routes = WebsocketRoutes()
    no_conditions = compile_conditions(None, None)
    for (endpoint, regexp), proxy in _proxies(app.websocket_handlers).items():
        if regexp:
            routes.router.add_regexp(regexp, proxy, frozenset(), no_conditions)
        else:
            routes.router.add_url(endpoint, proxy, frozenset(), no_conditions)
    return routes


def _proxies(registrations: list[Any]) -> dict[tuple[str, str], WebsocketHandlerProxy]:
    """The proxy of each ``(endpoint, regexp)``, in the order they first appear."""
    classes: dict[tuple[str, str], WebsocketHandlerClass] = {}
    functions: dict[tuple[str, str], list[WebsocketFunction]] = {}
    order: dict[tuple[str, str], None] = {}
    for reg in registrations:
        key = (reg.endpoint, reg.regexp)
        order.setdefault(key)
        if isinstance(reg, WebsocketHandlerClass):
            previous = classes.get(key)
            if previous is not None and previous.cls is not reg.cls:
                _warn_unused(key, f"the class {previous.cls.__qualname__}", reg.cls)
            classes[key] = reg
        else:
            functions.setdefault(key, []).append(reg)
    proxies: dict[tuple[str, str], WebsocketHandlerProxy] = {}
    for key in order:
        cls_reg = classes.get(key)
        if cls_reg is not None:
            if key in functions:
                names = ", ".join(_name(f.func) for f in functions[key])
                _warn_unused(key, f"the function-style handlers {names}", cls_reg.cls)
            proxies[key] = WebsocketHandlerProxy(cls_reg.cls, cls_reg.singleton)
            continue
        proxy = proxies[key] = WebsocketHandlerProxy()
        for reg in functions[key]:
            proxy.add_function(reg.event, reg.func)
    return proxies


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", repr(func)))


def _warn_unused(key: tuple[str, str], unused: str, cls: type) -> None:
    endpoint, regexp = key
    where = f"regexp {regexp!r}" if regexp else f"endpoint {endpoint!r}"
    _log.warning(
        "Websocket %s is served by the @websocket_handler class %s; ignored: %s",
        where,
        cls.__qualname__,
        unused,
    )


# -- the opening handshake ---------------------------------------------------
@dataclass(slots=True)
class Accepted:
    """Switch protocols: the ``101`` headers and what the session needs."""

    headers: list[tuple[bytes, bytes]]
    extensions: list[Extension]
    callbacks: Callbacks
    request: WebsocketRequest


@dataclass(slots=True)
class Rejected:
    """Answer the upgrade request with a plain HTTP response."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    message: str = ""

    def body(self) -> bytes:
        """A small JSON error body."""
        return json.dumps(
            {
                "code": self.status,
                "message": reason_phrase(self.status).decode(),
                "explain": self.message,
            }
        ).encode()


def _encode_headers(headers: dict[Any, Any]) -> list[tuple[bytes, bytes]]:
    """The headers ``on_handshake`` returned, encoded as an HTTP answer's are."""
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(str(name), str(item)) for item in values if item is not None]
    return encode_headers(pairs)


def _read_result(result: Any, path: str) -> tuple[int | None, dict[Any, Any]]:
    """(status, headers) of what ``on_handshake`` returned, by 0.22.x's rule: anything
    false accepts; an ``int`` is the status; a ``dict``/``Headers`` the headers; in a
    tuple, the first non-zero ``int`` is the status and every ``dict`` is merged, the
    rest ignored; any other value is accepted with a warning."""
    if not result:
        return None, {}
    if isinstance(result, int):
        return result, {}
    if isinstance(result, dict):
        return None, result
    if isinstance(result, tuple):
        status: int | None = None
        headers: dict[Any, Any] = {}
        for item in result:
            if isinstance(item, int) and not status:
                status = item
            elif isinstance(item, dict):
                headers.update(item)
        return status, headers
    _log.warning(
        "on_handshake of %s returned %s, neither a status nor headers: accepted",
        _logging.escape(path),
        _logging.escape(repr(result)[:100]),
    )
    return None, {}


def _decide(result: Any, path: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    """(status, headers) of what ``on_handshake`` returned; status 101 accepts.

    A status that no answer may carry (not 101, nor 200 to 599) raises ``ValueError``.
    """
    status, headers = _read_result(result, path)
    if not status or status == 101:
        return 101, _encode_headers(headers)
    status = int(status)  # a bool, an IntEnum (HTTPStatus)
    if not 200 <= status <= 599:
        raise ValueError(f"on_handshake returned the invalid status {status}")
    return status, _encode_headers(headers)


async def negotiate(
    routes: WebsocketRoutes | None,
    head: RequestHead,
    *,
    deflate: bool = True,
    max_message_size: int = 0,
) -> Accepted | Rejected:
    """Validate the upgrade, find the handler, ask ``on_handshake``."""
    from ..websocket import WebsocketRequest

    checked = check_handshake(head)
    if isinstance(checked, HandshakeRejection):
        return Rejected(checked.status, list(checked.headers), checked.message)
    if head.target == b"*":  # RFC 9112 3.2.4: for OPTIONS only
        return Rejected(400, [], "The request target * is only valid for OPTIONS.")
    # The target and headers are read as for HTTP requests (one place for both).
    http = make_request("GET", head.target.decode("latin-1"), head.headers)
    path = http.path
    found = routes.lookup(path) if routes is not None else None
    if found is None:
        return Rejected(404, [], "No websocket handler for this path.")
    proxy, path_values, reg_groups = found
    # A handshake has no body: its parameters are the query's, all text.
    parameters = cast("dict[str, list[str]]", http.parameters)
    # headers["X"] is the first value, None when absent, as 0.22.x's HTTPMessage gave.
    headers = HandshakeHeaders.from_lines(head.headers)
    host = http.headers.get("Host")
    if host is not None and host != headers.get("Host"):
        headers["Host"] = host  # an absolute-form target's host (RFC 9112 3.2.2)
    request = WebsocketRequest(
        path, http.query_string, headers, parameters, path_values, reg_groups
    )
    request._cookies = http.cookies  # every Cookie line, as HTTP requests read them
    try:
        # A handler class' constructor may block: not on an event loop (see call()).
        callbacks = proxy.shared
        if callbacks is None:
            callbacks = await call(proxy.callbacks)
        status: int = 101
        extra: list[tuple[bytes, bytes]] = []
        if callbacks.on_handshake is not None:
            status, extra = _decide(await call(callbacks.on_handshake, request), path)
    except Exception:
        _log.exception("Websocket handshake of %s failed", _logging.escape(path))
        return Rejected(500, [], "The handshake handler failed.")
    if status != 101:
        return Rejected(status, extra, "Rejected by the handshake handler.")
    extra = _offered_subprotocol(extra, checked.subprotocols, path)
    accept, extensions = accept_headers(checked, deflate=deflate, max_message_size=max_message_size)
    return Accepted(accept + extra, extensions, callbacks, request)


def _offered_subprotocol(
    headers: list[tuple[bytes, bytes]], offered: tuple[str, ...], path: str
) -> list[tuple[bytes, bytes]]:
    """``headers`` without a ``Sec-WebSocket-Protocol`` the client did not offer.

    RFC 6455 4.2.2: the server answers one of the subprotocols the client sent,
    or none; a client fails the connection on any other (4.1), and an ASGI
    server refuses to send it.  Only the first offered one is kept.
    """
    kept: list[tuple[bytes, bytes]] = []
    chosen = False
    for name, value in headers:
        if name.lower() != b"sec-websocket-protocol":
            kept.append((name, value))
        elif not chosen and value.decode("latin-1").strip() in offered:
            kept.append((name, value))
            chosen = True
        else:
            _log.warning(
                "on_handshake of %s answered the subprotocol %s, which the client did not "
                "offer (%s): left out",
                _logging.escape(path),
                _logging.escape(repr(value.decode("latin-1"))[:100]),
                _logging.escape(", ".join(offered)[:100] or "none"),
            )
    return kept
