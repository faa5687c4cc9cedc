"""Value objects of the public API: request data, headers, cookies, injection markers.

Nothing here knows about sockets, h11 or how a request is dispatched.
"""

from __future__ import annotations

import http.cookies
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .dispatch.bodies import MultipartFile, RequestBodyReader
    from .dispatch.sessions import RequestSessions

__all__ = [
    "DEFAULT_ENCODING",
    "SESSION_COOKIE_NAME",
    "BytesBody",
    "Cookie",
    "Cookies",
    "Environment",
    "HandshakeHeaders",
    "Header",
    "Headers",
    "JSONBody",
    "ModelDict",
    "ParamStringValue",
    "Parameter",
    "Parameters",
    "PathValue",
    "RegGroup",
    "RegGroups",
    "Request",
    "Session",
    "SessionFactory",
]

DEFAULT_ENCODING: str = "UTF-8"
SESSION_COOKIE_NAME: str = "PY_SIM_HTTP_SER_SESSION_ID"


class Headers(dict[str, Any]):
    """A header dict whose lookups ignore case; iteration keeps the names as given.

    Used both for request headers and as a result value that adds response headers.
    """

    __slots__ = ("_names",)

    def __init__(self, headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None):
        super().__init__()
        self._names: dict[str, str] = {}
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for key, value in items:
                self[key] = value

    @classmethod
    def from_lines(
        cls, lines: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]
    ) -> Headers:
        """Request headers from header lines (bytes are latin-1); repeated names
        are joined with ``", "`` (``"; "`` for ``Cookie``)."""
        headers = cls()
        names = headers._names
        store = dict.__setitem__
        for raw_name, raw_value in lines:
            name = raw_name.decode("latin-1") if type(raw_name) is bytes else str(raw_name)
            value = raw_value.decode("latin-1") if type(raw_value) is bytes else str(raw_value)
            lower = name.lower()
            known = names.get(lower)
            if known is None:
                names[lower] = name
                store(headers, name, value)
            else:
                sep = "; " if lower == "cookie" else ", "
                store(headers, known, f"{dict.__getitem__(headers, known)}{sep}{value}")
        return headers

    def __setitem__(self, key: str, value: Any) -> None:
        lower = key.lower()
        old = self._names.get(lower)
        if old is not None and old != key:
            super().__delitem__(old)
        self._names[lower] = key
        super().__setitem__(key, value)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(self._names.get(key.lower(), key))

    def __delitem__(self, key: str) -> None:
        name = self._names.pop(key.lower(), key)
        super().__delitem__(name)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._names

    def _has_any(self, lowered: frozenset[str]) -> bool:
        """True when one of the (lowercased) names is here: one check for several."""
        return not lowered.isdisjoint(self._names)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override,unused-ignore]
        name = self._names.get(key.lower())
        return default if name is None else super().__getitem__(name)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override,unused-ignore]
        name = self._names.pop(key.lower(), None)
        if name is None:
            if default:
                return default[0]
            raise KeyError(key)
        return super().pop(name)

    def popitem(self) -> tuple[str, Any]:
        key, value = super().popitem()
        self._names.pop(key.lower(), None)
        return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override,unused-ignore]
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override,unused-ignore]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> Headers:  # type: ignore[override,misc]
        self.update(other)  # dict's would bypass the case-insensitive names
        return self

    def copy(self) -> Headers:
        return Headers(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # copy.copy, deepcopy and pickle rebuild it from its items: dict's way shared
        # (copy) or lost (pickle) the names that lookups go through.
        return type(self), (list(self.items()),)

    def clear(self) -> None:
        super().clear()
        self._names.clear()


class HandshakeHeaders(Headers):
    """The headers of a websocket upgrade request, read as 0.22.x's
    ``http.client.HTTPMessage`` read them: ``headers[name]`` is the first value sent
    and None when the header is absent (no ``KeyError``), ``get_all(name)`` every
    value.  Otherwise a case-insensitive :class:`Headers` of first values: a header
    sent twice is listed once by ``keys()``/``items()``.
    """

    __slots__ = ("_lines",)

    def __init__(self, headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None):
        self._lines: list[tuple[str, str]] = []
        super().__init__(headers)

    @classmethod
    def from_lines(
        cls, lines: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]
    ) -> HandshakeHeaders:
        """The headers of header lines (bytes are latin-1), each name's first value."""
        headers = cls()
        for raw_name, raw_value in lines:
            name = raw_name.decode("latin-1") if type(raw_name) is bytes else str(raw_name)
            value = raw_value.decode("latin-1") if type(raw_value) is bytes else str(raw_value)
            headers._lines.append((name, value))
            lower = name.lower()
            if lower not in headers._names:
                headers._names[lower] = name
                dict.__setitem__(headers, name, value)
        return headers

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def get_all(self, name: str, failobj: Any = None) -> list[str] | Any:
        """Every value sent for ``name``, in order; ``failobj`` when none was."""
        lower = name.lower()
        values = [value for key, value in self._lines if key.lower() == lower]
        return values or failobj

    def __setitem__(self, key: str, value: Any) -> None:
        self._forget(key)
        self._lines.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._forget(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override,unused-ignore]
        self._forget(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        key, value = super().popitem()
        self._forget(key)
        return key, value

    def clear(self) -> None:
        super().clear()
        self._lines.clear()

    def copy(self) -> HandshakeHeaders:
        headers = HandshakeHeaders(self)
        headers._lines = list(self._lines)
        return headers

    def __reduce__(self) -> tuple[Any, ...]:
        return _handshake_headers, (list(self.items()), list(self._lines))

    def _forget(self, key: str) -> None:
        lower = key.lower()
        self._lines = [line for line in self._lines if line[0].lower() != lower]


def _handshake_headers(
    items: list[tuple[str, Any]], lines: list[tuple[str, str]]
) -> HandshakeHeaders:
    """A copied or unpickled :class:`HandshakeHeaders`."""
    headers = HandshakeHeaders(items)
    headers._lines = lines
    return headers


class Cookies(http.cookies.SimpleCookie):
    """Request or response cookies (a ``SimpleCookie``)."""

    EXPIRE_DATE_FORMAT = "%a, %d %b %Y %H:%M:%S GMT"

    @classmethod
    def of_header(cls, raw: str | None) -> Cookies:
        """The cookies of a ``Cookie`` request header.

        Read one ``;``-separated ``name=value`` pair at a time (RFC 6265 5.4), as
        browsers send them: a pair ``SimpleCookie.load`` refuses (a JSON value, a
        space, a non-ASCII value) must not cost the others, the session cookie
        among them.  A pair without ``=`` is skipped, and so is a ``$`` name: an RFC 2109
        attribute (``$Version``, ``$Path``), not a cookie, as ``SimpleCookie`` reads it;
        a quoted value is unquoted; UTF-8 bytes (read as latin-1, like every header)
        become the text they encode.
        """
        cookies = cls()
        if raw:
            for pair in raw.split(";"):
                name, eq, value = pair.partition("=")
                name = name.strip()
                if eq and name and not name.startswith("$"):
                    cookies._add_sent(_utf8(name), value.strip())
        return cookies

    def value_decode(self, val: str) -> tuple[str, str]:
        """The value of a sent ``coded`` value, and ``coded``: ``SimpleCookie``'s,
        unquoted in linear time (see :func:`unquote_cookie`)."""
        return unquote_cookie(val), val

    def _add_sent(self, name: str, coded: str) -> None:
        """Store a cookie the client sent, whatever its name (``Morsel.set`` refuses
        names such as ``a[b]`` or ``path`` that browsers do send)."""
        real, coded = self.value_decode(coded)
        morsel: http.cookies.Morsel[str] = http.cookies.Morsel()
        state = {"key": name, "value": _utf8(real), "coded_value": coded}
        morsel.__setstate__(state)  # type: ignore[attr-defined]
        dict.__setitem__(self, name, morsel)


#: The escapes of a quoted cookie value: ``\`` and three octal digits (a byte up to
#: ``\377``), or ``\`` and any other character but a newline.
_COOKIE_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")


def _unescaped(m: re.Match[str]) -> str:
    return chr(int(m[1], 8)) if m[1] else m[2]


def unquote_cookie(value: str) -> str:
    """A cookie value as ``http.cookies`` unquotes it (``"a\\073b"`` is ``a;b``; a value
    not in double quotes is itself), in linear time: the stdlib's ``_unquote`` is
    quadratic before Python 3.11.10 / 3.12.6 (CVE-2024-7592), seconds of CPU for one
    ``Cookie`` header of ``\\0`` repeated."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _COOKIE_ESCAPE.sub(_unescaped, value[1:-1])


def _utf8(text: str) -> str:
    """``text`` whose characters are UTF-8 bytes read as latin-1, as the text they
    encode; any other text unchanged."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


class ParamStringValue(str):
    """A ``str`` default-value marker carrying a name, a default and ``required``."""

    def __new__(
        cls, name: str | Mapping[str, Any] = "", default: str = "", required: bool = False
    ) -> ParamStringValue:
        obj = super().__new__(cls, default if default is not None else "")
        return obj

    def __init__(
        self, name: str | Mapping[str, Any] = "", default: str = "", required: bool = False
    ) -> None:
        self._name = name
        self._default = default
        self._required = required

    @property
    def name(self) -> Any:
        """The request name this marker reads (defaults to the argument name).

        ``Header({"X-Name": "value"})`` returned in a result tuple holds a dict here.
        """
        return self._name

    def __getnewargs__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild the object from these (the text is the 2nd argument)
        return (self._name, str(self), self._required)


class Parameter(ParamStringValue):
    """A query/form parameter: ``Parameter(name="", default="", required=False)``."""


class Header(ParamStringValue):
    """A request header: ``Header(name="", default="", required=False)``."""


class PathValue(str):
    """A ``{name}`` path value, or the part matched by a ``*``/``**`` wildcard."""

    def __new__(cls, name: str = "", _value: str = "", **kwargs: Any) -> PathValue:
        return super().__new__(cls, _value)

    def __init__(self, name: str = "", _value: str = "", **kwargs: Any) -> None:
        self._name = name

    @property
    def name(self) -> str:
        """The path variable name."""
        return self._name

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self._name, str(self))


class Parameters(list[str]):
    """All values of a parameter: ``Parameters(name="", default=[], required=False)``."""

    def __init__(
        self, name: str = "", default: list[str] | str | None = None, required: bool = False
    ) -> None:
        # A str default is one value, not its characters.
        super().__init__([default] if default and isinstance(default, str) else default or [])
        self._name = name
        self._required = required

    @property
    def name(self) -> str:
        """The parameter name."""
        return self._name


class ModelDict(dict[str, Any]):
    """All parameters as ``{name: value}`` (a list when repeated); an uploaded
    file's value is its :class:`MultipartFile`."""


class Environment(dict[str, Any]):
    """The WSGI environ or ASGI scope when served through an adapter, else empty."""


class RegGroups(tuple[str, ...]):
    """The groups of a ``regexp=`` route match."""


class RegGroup(str):
    """One group of a ``regexp=`` route match: ``RegGroup(group=0)``."""

    def __new__(cls, group: int = 0, **kwargs: Any) -> RegGroup:
        return super().__new__(cls, kwargs.get("_value", ""))

    def __init__(self, group: int = 0, **kwargs: Any) -> None:
        self._group = group

    @property
    def group(self) -> int:
        """The group index."""
        return self._group

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self._group,), {"_value": str(self)}


class JSONBody(dict[str, Any]):
    """The request body parsed as JSON (the request must be ``application/json``)."""


class BytesBody(bytes):
    """The raw request body."""


class Cookie(http.cookies.Morsel):  # type: ignore[type-arg]
    """A request cookie: ``Cookie(name="", default="", default_options={}, required=False)``."""

    def __init__(
        self,
        name: str = "",
        default: str = "",
        default_options: Mapping[str, str] | None = None,
        required: bool = False,
    ) -> None:
        super().__init__()
        self._cookie_name = name
        self._required = required
        if name:
            self.set(name, default, default)
        if default_options:
            self.update(default_options)

    @property
    def name(self) -> str:
        """The cookie name."""
        return self._cookie_name

    @classmethod
    def _named(cls, name: str, source: http.cookies.Morsel[str]) -> Cookie:
        """A copy of ``source`` (key, value and attributes) whose :attr:`name` is ``name``.

        The key is copied as is: ``Morsel.set`` would refuse names browsers do send.
        """
        cookie = cls()
        cookie._cookie_name = name
        cookie._required = getattr(source, "_required", False)
        dict.update(cookie, source)
        state = {"key": source.key, "value": source.value, "coded_value": source.coded_value}
        cookie.__setstate__(state)  # type: ignore[attr-defined]
        return cookie


class Session:
    """A user session; subclass it (with :class:`SessionFactory`) for your own store."""

    def __init__(self) -> None:
        self.max_inactive_interval: int = 30 * 60

    @property
    def id(self) -> str:
        """The session id sent in the session cookie."""
        return ""

    @property
    def creation_time(self) -> float:
        """When the session was created (``time.time()``)."""
        return 0

    @property
    def last_accessed_time(self) -> float:
        """When the session was last used (``time.time()``)."""
        return 0

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The names of the stored attributes."""
        return ()

    @property
    def is_new(self) -> bool:
        """True for a session created by the current request."""
        return False

    @property
    def is_valid(self) -> bool:
        """False once invalidated or idle for longer than ``max_inactive_interval``."""
        return time.time() - self.last_accessed_time < self.max_inactive_interval

    # Not abstract: ``session=Session()`` is the documented injection marker, which a
    # type checker refuses for a class with abstract methods.  Stores override these.
    def get_attribute(self, name: str) -> Any:
        """The attribute stored under ``name`` (None when absent)."""

    def set_attribute(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name``."""

    def invalidate(self) -> None:
        """End the session."""


class SessionFactory:
    """Finds or creates sessions; set your own with ``set_session_factory``."""

    @abstractmethod
    def get_session(self, session_id: str, create: bool = False) -> Session | None:
        """The live session with ``session_id``, or a new one when ``create``."""


class FirstValues(dict[str, "str | MultipartFile"]):
    """``request.parameter``: the first value of each parameter.

    A dict built from ``request.parameters`` on each access, whose changes go
    through to them: a filter's ``request.parameter["user"] = "x"`` is what a
    controller's ``user`` argument gets.
    """

    __slots__ = ("_all",)

    def __init__(self, all_values: dict[str, list[str | MultipartFile]]) -> None:
        super().__init__((k, v[0]) for k, v in all_values.items() if v)
        self._all = all_values

    def __setitem__(self, key: str, value: str | MultipartFile) -> None:
        super().__setitem__(key, value)
        self._all[key] = [value]

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._all.pop(key, None)

    def __ior__(self, other: Any) -> FirstValues:  # type: ignore[override,misc]
        self.update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set every given item (through to ``request.parameters``)."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]``, set to ``default`` first when missing."""
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` (from ``request.parameters`` too) and give its value."""
        value = super().pop(key, *default)
        self._all.pop(key, None)
        return value

    def popitem(self) -> tuple[str, str | MultipartFile]:
        """Remove and give the last item (from ``request.parameters`` too)."""
        key, value = super().popitem()
        self._all.pop(key, None)
        return key, value

    def clear(self) -> None:
        """Remove every parameter."""
        super().clear()
        self._all.clear()


class Request:
    """An HTTP request as controllers and filters see it."""

    #: Makes the reader of a body already in memory; installed by the dispatch
    #: layer (:mod:`.dispatch.bodies`), which this module does not import.
    _memory_reader: ClassVar[Callable[[bytes], RequestBodyReader]]
    #: The path as sent, still percent-encoded (set by the dispatch layer): static
    #: resources refuse what decoding hides (encoded slashes, dot segments).
    _raw_path: str = ""

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        query_string: str = "",
        headers: Headers | None = None,
        parameters: dict[str, list[str | MultipartFile]] | None = None,
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers: Headers = headers if headers is not None else Headers()
        self.scheme = scheme
        self.path_values: dict[str, str] = {}
        self.reg_groups: tuple[str, ...] = ()
        self.environment: dict[str, Any] = {}
        self.json: Any = None
        self.files: dict[str, list[MultipartFile]] = {}
        self._reader: RequestBodyReader | None = None
        self.client_address: tuple[str, int] | None = None
        self._body: bytes | None = None
        self._cookies: Cookies | None = None
        self._parameters: dict[str, list[str | MultipartFile]] = (
            parameters if parameters is not None else {}
        )
        self._session_getter: Any = None
        #: Set by the dispatcher once the request's session state exists.
        self._session_state: RequestSessions | None = None

    @property
    def cookies(self) -> Cookies:
        """The request cookies."""
        if self._cookies is None:
            self._cookies = Cookies.of_header(self.headers.get("Cookie"))
        return self._cookies

    @property
    def parameters(self) -> dict[str, list[str | MultipartFile]]:
        """Query and form parameters, every value of each name: text, or a
        :class:`MultipartFile` for an uploaded file (form values come first)."""
        return self._parameters

    @parameters.setter
    def parameters(self, value: dict[str, list[str | MultipartFile]]) -> None:
        self._parameters = value

    @property
    def parameter(self) -> FirstValues:
        """Query and form parameters, the first value of each name (text or an upload).

        Built on each access from :attr:`parameters`; setting or deleting an item
        changes :attr:`parameters` too (a filter may add a parameter this way).
        """
        return FirstValues(self._parameters)

    def get_parameter(
        self, key: str, default: str | MultipartFile | None = None
    ) -> str | MultipartFile | None:
        """The first value of parameter ``key`` (text or an upload), or ``default``."""
        values = self._parameters.get(key)
        return values[0] if values else default

    @property
    def host(self) -> str:
        """The ``Host`` header ("" when absent)."""
        return str(self.headers.get("Host", ""))

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header ("" when absent)."""
        return str(self.headers.get("Content-Type", ""))

    @property
    def content_length(self) -> int | None:
        """The declared ``Content-Length`` as an int, or None."""
        value = self.headers.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def reader(self) -> RequestBodyReader:
        """The body as a :class:`RequestBodyReader`.

        It streams the body when the controller takes a ``RequestBodyReader``
        (the same reader); otherwise the body was read before the filters ran
        and the reader reads :attr:`body` (nothing after a multipart form, whose
        body is not kept).
        """
        reader = self._reader
        if reader is None:  # built on first use: most requests never ask
            reader = self._reader = Request._memory_reader(self.body)
        return reader

    @reader.setter
    def reader(self, value: RequestBodyReader) -> None:
        self._reader = value

    @property
    def body(self) -> bytes:
        """The raw body when it was read (forms, JSON, ``BytesBody``), else ``b""``."""
        return self._body or b""

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value

    def get_session(self, create: bool = False) -> Session | None:
        """The request's session; a new one is created when ``create`` is True."""
        if self._session_getter is None:
            return None
        session: Session | None = self._session_getter(create)
        return session
