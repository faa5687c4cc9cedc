"""Route tables compiled once at registration.

Static paths live in a dict; ``{name}``/wildcard paths and ``regexp=`` routes
are compiled regular expressions.  A lookup tells a full match, a path that
exists under other methods (405 with ``Allow``) or no match (404).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

__all__ = [
    "PATH_SAFE",
    "WILDCARD_KEY",
    "Conditions",
    "Match",
    "PathPattern",
    "Router",
    "compile_conditions",
    "normalize_path",
]

T = TypeVar("T")
WILDCARD_KEY = "__path_wildcard"
_SEEN = ""  # marks, in a lookup's ``allowed`` set, that some route served the method
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


#: Characters left as they are when a decoded path is percent-encoded again
#: (RFC 3986 ``pchar`` plus ``/``): the adapters rebuild raw targets with it.
PATH_SAFE = "/:@!$&'()*+,;=-._~"


def normalize_path(raw: str) -> str:
    """Percent-decode a request path once and resolve ``.``, ``..`` and ``//``.

    The result always starts with ``/`` and never climbs above it; a trailing
    slash is kept.
    """
    decoded = unquote(raw, errors="surrogateescape") if "%" in raw else raw
    if "/." not in decoded and "//" not in decoded and decoded.startswith("/"):
        return decoded
    parts: list[str] = []
    for part in decoded.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    path = "/" + "/".join(parts)
    if parts and (decoded.endswith("/") or decoded.endswith("/.") or decoded.endswith("/..")):
        path += "/"
    return path


def url_key(url: str) -> str:
    """A route url with exactly one leading slash."""
    return "/" + url.lstrip("/")


class PathPattern:
    """A compiled ``{name}`` / ``*`` / ``**`` path pattern."""

    __slots__ = ("names", "regex", "source")

    def __init__(self, url: str) -> None:
        self.source = url
        pieces: list[str] = []
        self.names: list[str] = []
        pos = 0
        for m in re.finditer(r"\{([^{}/]*)\}|\*\*|\*", url):
            pieces.append(re.escape(url[pos : m.start()]))
            token = m.group(0)
            if token == "**":
                pieces.append(
                    r"(?P<__wildcard>.+?)" if WILDCARD_KEY not in self.names else "(?:.+?)"
                )
                self._add(WILDCARD_KEY)
            elif token == "*":
                pieces.append(
                    r"(?P<__wildcard>[^/]+)" if WILDCARD_KEY not in self.names else "(?:[^/]+)"
                )
                self._add(WILDCARD_KEY)
            else:
                name = m.group(1)
                group = f"g{len(self.names)}"
                pieces.append(f"(?P<{group}>[^/]+)")
                self.names.append(name)
            pos = m.end()
        pieces.append(re.escape(url[pos:]))
        self.regex = re.compile("^" + "".join(pieces) + "$", re.DOTALL)

    def _add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def match(self, path: str) -> dict[str, str] | None:
        """The path values when ``path`` matches, else None."""
        m = self.regex.match(path)
        if m is None:
            return None
        values: dict[str, str] = {}
        for index, name in enumerate(self.names):
            if name == WILDCARD_KEY:
                values[WILDCARD_KEY] = m.group("__wildcard")
            else:
                values[name] = m.group(f"g{index}")
        return values

    @staticmethod
    def is_pattern(url: str) -> bool:
        """True when ``url`` holds ``{name}`` or wildcards."""
        return "*" in url or ("{" in url and "}" in url)


Predicate = Callable[[Any], bool]
#: A request's parameters as routing reads them: text values, and uploads when the
#: form was read before routing.
ParamValues = Mapping[str, Sequence[object]]


@dataclass(frozen=True, slots=True)
class Conditions:
    """Compiled ``params=``/``headers=`` narrowing expressions."""

    params: tuple[Callable[[Any], bool], ...] = ()
    headers: tuple[Callable[[Any], bool], ...] = ()
    all_params: bool = True
    all_headers: bool = True

    def accepts(self, parameters: ParamValues, headers: Any) -> bool:
        """True when the request satisfies the expressions."""
        if self.params:
            check = all if self.all_params else any
            if not check(p(parameters) for p in self.params):
                return False
        if self.headers:
            check = all if self.all_headers else any
            if not check(h(headers) for h in self.headers):
                return False
        return True

    @property
    def empty(self) -> bool:
        """True when there is nothing to check."""
        return not self.params and not self.headers


def _values(source: Any, key: str) -> list[Any] | None:
    value = source.get(key)
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


def _compile_expression(expr: str) -> Callable[[Any], bool]:
    expr = expr.strip()
    eq = expr.find("=")
    if eq < 0:
        if expr.startswith("!"):
            name = expr[1:].strip()
            return lambda src: _values(src, name) is None
        name = expr
        return lambda src: _values(src, name) is not None
    op = expr[eq - 1] if eq > 0 else ""
    if op in ("!", "^"):
        name, value = expr[: eq - 1].strip(), expr[eq + 1 :].strip()
    else:
        name, value = expr[:eq].strip(), expr[eq + 1 :].strip()
    if op == "!":

        def not_equal(src: Any) -> bool:
            vals = _values(src, name)
            return vals is not None and value not in vals

        return not_equal
    if op == "^":
        return lambda src: any(
            isinstance(v, str) and v.startswith(value)  # an upload starts with no text
            for v in _values(src, name) or ()
        )
    return lambda src: value in (_values(src, name) or ())


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if v]


def compile_conditions(
    params: str | Sequence[str] | None,
    headers: str | Sequence[str] | None,
    match_all_params: bool | None = None,
    match_all_headers: bool | None = None,
) -> Conditions:
    """Compile the narrowing expressions of a route."""
    return Conditions(
        params=tuple(_compile_expression(e) for e in _as_list(params)),
        headers=tuple(_compile_expression(e) for e in _as_list(headers)),
        all_params=match_all_params is not False,
        all_headers=match_all_headers is not False,
    )


def parse_methods(method: str | Iterable[str] | None) -> frozenset[str]:
    """Upper-cased methods from a string, comma list, list or tuple (empty: any)."""
    if not method:
        return frozenset()
    items = method.split(",") if isinstance(method, str) else list(method)
    methods = {m.strip().upper() for m in items if m and m.strip()}
    for m in methods:
        if not _TOKEN.match(m):
            raise ValueError(f"invalid HTTP method: {m!r}")
    return frozenset(methods)


@dataclass(slots=True)
class Entry(Generic[T]):
    """One route: the target plus what narrows it."""

    target: T
    methods: frozenset[str]
    conditions: Conditions
    pattern: PathPattern | None = None
    regex: re.Pattern[str] | None = None

    def allows(self, method: str) -> bool:
        """True when the route serves ``method`` (HEAD is served by GET routes;
        CONNECT only by routes that name it)."""
        m = self.methods
        if not m:
            return method != "CONNECT"
        return method in m or (method == "HEAD" and "GET" in m)


@dataclass(slots=True)
class Match(Generic[T]):
    """The result of a lookup."""

    target: T | None = None
    path_values: dict[str, str] = field(default_factory=dict)
    reg_groups: tuple[str, ...] = ()
    allowed: set[str] | None = None  # methods that exist for the path (405) when no target


class Router(Generic[T]):
    """Maps (method, path) to a target."""

    def __init__(self) -> None:
        self._static: dict[str, list[Entry[T]]] = {}
        self._patterns: list[Entry[T]] = []
        self._regexps: list[Entry[T]] = []
        #: Some route has ``params=`` expressions (known at registration: a table
        #: without any never makes a request look further).
        self.narrows_by_params = False
        #: Some route names ``CONNECT`` (without one, CONNECT is not implemented).
        self.serves_connect = False

    def add_url(self, url: str, target: T, methods: frozenset[str], conditions: Conditions) -> None:
        """Register a path route; later registrations are tried first."""
        self.narrows_by_params |= bool(conditions.params)
        self.serves_connect |= "CONNECT" in methods
        key = url_key(url)
        if PathPattern.is_pattern(key):
            self._patterns.insert(0, Entry(target, methods, conditions, pattern=PathPattern(key)))
        else:
            self._static.setdefault(key, []).insert(0, Entry(target, methods, conditions))

    def add_regexp(
        self, regexp: str, target: T, methods: frozenset[str], conditions: Conditions
    ) -> None:
        """Register a ``regexp=`` route (matched with and without the leading slash)."""
        self.narrows_by_params |= bool(conditions.params)
        self.serves_connect |= "CONNECT" in methods
        self._regexps.insert(0, Entry(target, methods, conditions, regex=re.compile(regexp)))

    def __len__(self) -> int:
        return sum(map(len, self._static.values())) + len(self._patterns) + len(self._regexps)

    def candidates(self, method: str, path: str) -> Iterator[Entry[T]]:
        """Every route that serves ``method`` on ``path``, its expressions unchecked."""
        for entry in self._static.get(path, ()):
            if entry.allows(method):
                yield entry
        for entry in self._patterns:
            assert entry.pattern is not None
            if entry.allows(method) and entry.pattern.match(path) is not None:
                yield entry
        bare = path[1:]
        for entry in self._regexps:
            assert entry.regex is not None
            if entry.allows(method) and (entry.regex.match(path) or entry.regex.match(bare)):
                yield entry

    def lookup(self, method: str, path: str, parameters: ParamValues, headers: Any) -> Match[T]:
        """Find the target for a request; see :class:`Match`."""
        allowed: set[str] = set()
        entries = self._static.get(path)
        if entries:
            found = _pick(entries, method, parameters, headers, allowed)
            if found is not None:
                return Match(found.target)
        for entry in self._patterns:
            assert entry.pattern is not None
            values = entry.pattern.match(path)
            if values is None:
                continue
            if _usable(entry, method, parameters, headers, allowed):
                return Match(entry.target, values)
        if self._regexps:
            bare = path[1:]
            for entry in self._regexps:
                assert entry.regex is not None
                m = entry.regex.match(path) or entry.regex.match(bare)
                if m is None:
                    continue
                if _usable(entry, method, parameters, headers, allowed):
                    groups = tuple(g if g is not None else "" for g in m.groups())
                    return Match(entry.target, reg_groups=groups)
        if _SEEN in allowed:  # the method exists there, its conditions failed: 404
            return Match()
        return Match(allowed=allowed or None)


def _usable(
    entry: Entry[T], method: str, parameters: ParamValues, headers: Any, allowed: set[str]
) -> bool:
    if not entry.allows(method):
        allowed.update(entry.methods)
        return False
    allowed.add(_SEEN)
    return entry.conditions.empty or entry.conditions.accepts(parameters, headers)


def _pick(
    entries: list[Entry[T]],
    method: str,
    parameters: ParamValues,
    headers: Any,
    allowed: set[str],
) -> Entry[T] | None:
    # Routes naming the method are preferred over any-method routes.
    fallback: list[Entry[T]] = []
    for entry in entries:
        if not entry.methods:
            fallback.append(entry)
        elif _usable(entry, method, parameters, headers, allowed):
            return entry
    for entry in fallback:
        if _usable(entry, method, parameters, headers, allowed):
            return entry
    return None
