"""Route tables compiled once at registration.

Static paths live in a dict; ``{name}``/wildcard paths and ``regexp=`` routes
are compiled regular expressions.  A lookup tells a full match, routes that
serve the method on the path but whose ``params=``/``headers=`` all failed
(404), a path that exists under other methods (405 with ``Allow``) or no
match (404, or a static resource).

The lookup follows the original's method tables: for each request method, the
routes that serve it form one table, built on first use and kept; in it, the
first url (exact, then patterns, then regexps; routes naming the method before
routes without ``method=``) that matches the path decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
_SHARED = ""  # the table key of every method no route names: any-method routes only
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

    __slots__ = ("names", "regex", "shape", "source")

    def __init__(self, url: str) -> None:
        self.source = url
        pieces: list[str] = []
        shape: list[str] = []
        self.names: list[str] = []
        pos = 0
        for m in re.finditer(r"\{([^{}/]*)\}|\*\*|\*", url):
            literal = re.escape(url[pos : m.start()])
            pieces.append(literal)
            shape.append(literal)
            token = m.group(0)
            if token == "**":
                pieces.append(
                    r"(?P<__wildcard>.+?)" if WILDCARD_KEY not in self.names else "(?:.+?)"
                )
                shape.append("(.+?)")
                self._add(WILDCARD_KEY)
            elif token == "*":
                pieces.append(
                    r"(?P<__wildcard>[^/]+)" if WILDCARD_KEY not in self.names else "(?:[^/]+)"
                )
                shape.append("([^/]+)")
                self._add(WILDCARD_KEY)
            else:
                name = m.group(1)
                group = f"g{len(self.names)}"
                pieces.append(f"(?P<{group}>[^/]+)")
                shape.append("([^/]+)")
                self.names.append(name)
            pos = m.end()
        pieces.append(re.escape(url[pos:]))
        shape.append(re.escape(url[pos:]))
        self.regex = re.compile("^" + "".join(pieces) + "$", re.DOTALL)
        #: The regex without its names: patterns of one shape match the same paths
        #: (``/a/{x}``, ``/a/{y}``, ``/a/*``) and count as one url, as in the original.
        self.shape = "".join(shape)

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
    #: Routes serve the method on the path, but none's ``params=``/``headers=`` matched:
    #: a 404 that no later route, static resource or 405 may answer.
    refused: bool = False


@dataclass(slots=True)
class _Group(Generic[T]):
    """The routes of one method table on one url (a pattern shape or a regexp)."""

    regex: re.Pattern[str]
    entries: list[Entry[T]]  # the last registered first


@dataclass(slots=True)
class _Table(Generic[T]):
    """The routes that serve one method, in lookup order."""

    exact: dict[str, list[Entry[T]]]
    patterns: list[_Group[T]]
    regexps: list[_Group[T]]


class Router(Generic[T]):
    """Maps (method, path) to a target."""

    def __init__(self) -> None:
        self._static: dict[str, list[Entry[T]]] = {}  # the last registered first
        self._patterns: list[Entry[T]] = []  # in registration order
        self._regexps: list[Entry[T]] = []  # in registration order
        self._tables: dict[str, _Table[T]] = {}
        self._named: set[str] = {"HEAD", "CONNECT"}  # the methods with a table of their own
        #: Some route has ``params=`` expressions (known at registration: a table
        #: without any never makes a request look further).
        self.narrows_by_params = False
        #: Some route names ``CONNECT`` (without one, CONNECT is not implemented).
        self.serves_connect = False

    def _register(self, entry: Entry[T]) -> None:
        self.narrows_by_params |= bool(entry.conditions.params)
        self.serves_connect |= "CONNECT" in entry.methods
        self._named |= entry.methods
        self._tables.clear()

    def add_url(self, url: str, target: T, methods: frozenset[str], conditions: Conditions) -> None:
        """Register a path route; on one url, later registrations are tried first."""
        key = url_key(url)
        if PathPattern.is_pattern(key):
            entry = Entry(target, methods, conditions, pattern=PathPattern(key))
            self._patterns.append(entry)
        else:
            entry = Entry(target, methods, conditions)
            self._static.setdefault(key, []).insert(0, entry)
        self._register(entry)

    def add_regexp(
        self, regexp: str, target: T, methods: frozenset[str], conditions: Conditions
    ) -> None:
        """Register a ``regexp=`` route (matched with and without the leading slash)."""
        entry = Entry(target, methods, conditions, regex=re.compile(regexp))
        self._regexps.append(entry)
        self._register(entry)

    def __len__(self) -> int:
        return sum(map(len, self._static.values())) + len(self._patterns) + len(self._regexps)

    def _table(self, method: str) -> _Table[T]:
        """The table of ``method``; every method no route names shares one."""
        key = method if method in self._named else _SHARED
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = self._build(key)
        return table

    def _build(self, method: str) -> _Table[T]:
        exact: dict[str, list[Entry[T]]] = {}
        for path, entries in self._static.items():
            named = [e for e in entries if e.methods and e.allows(method)]
            chosen = named or [e for e in entries if not e.methods and e.allows(method)]
            if chosen:
                exact[path] = chosen
        return _Table(exact, _groups(self._patterns, method), _groups(self._regexps, method))

    def candidates(self, method: str, path: str) -> list[Entry[T]]:
        """The routes that decide ``method`` on ``path`` (their expressions unchecked):
        the first url that has routes for the method."""
        table = self._tables.get(method) or self._table(method)
        entries = table.exact.get(path)
        if entries is not None:
            return entries
        for group in table.patterns:
            if group.regex.match(path) is not None:
                return group.entries
        bare = path[1:]
        for group in table.regexps:
            if group.regex.match(path) or group.regex.match(bare):
                return group.entries
        return []

    def lookup(self, method: str, path: str, parameters: ParamValues, headers: Any) -> Match[T]:
        """Find the target for a request; see :class:`Match`."""
        table = self._tables.get(method) or self._table(method)
        entries = table.exact.get(path)
        if entries is not None:
            for entry in entries:
                if entry.conditions.empty or entry.conditions.accepts(parameters, headers):
                    return Match(entry.target)
            return Match(refused=True)
        for group in table.patterns:
            if group.regex.match(path) is None:
                continue
            for entry in group.entries:
                if entry.conditions.empty or entry.conditions.accepts(parameters, headers):
                    assert entry.pattern is not None
                    return Match(entry.target, entry.pattern.match(path) or {})
            return Match(refused=True)
        if table.regexps:
            bare = path[1:]
            for group in table.regexps:
                m = group.regex.match(path) or group.regex.match(bare)
                if m is None:
                    continue
                for entry in group.entries:
                    if entry.conditions.empty or entry.conditions.accepts(parameters, headers):
                        groups = tuple(g if g is not None else "" for g in m.groups())
                        return Match(entry.target, reg_groups=groups)
                return Match(refused=True)
        return Match(allowed=self.methods_at(path) or None)

    def methods_at(self, path: str) -> set[str]:
        """The methods routes name on ``path`` (any-method routes name none)."""
        allowed: set[str] = set()
        for entry in self._static.get(path, ()):
            allowed |= entry.methods
        for entry in self._patterns:
            if entry.methods and entry.pattern is not None and entry.pattern.match(path):
                allowed |= entry.methods
        bare = path[1:]
        for entry in self._regexps:
            regex = entry.regex
            if entry.methods and regex is not None and (regex.match(path) or regex.match(bare)):
                allowed |= entry.methods
        return allowed


def _url_of(entry: Entry[T]) -> tuple[str, re.Pattern[str]]:
    """What makes two pattern or regexp routes one url, and the regex that matches it."""
    if entry.regex is not None:
        return entry.regex.pattern, entry.regex
    assert entry.pattern is not None
    return entry.pattern.shape, entry.pattern.regex


def _groups(entries: list[Entry[T]], method: str) -> list[_Group[T]]:
    """The groups of the routes serving ``method``: those naming it first, then the
    any-method ones; in each, urls in the order of their first route (the original's
    ordered method tables), and on one url the last registered route first."""
    ordered: list[_Group[T]] = []
    for naming in (True, False):
        groups: dict[str, _Group[T]] = {}
        for entry in entries:
            if bool(entry.methods) is not naming or not entry.allows(method):
                continue
            key, regex = _url_of(entry)
            group = groups.get(key)
            if group is None:
                groups[key] = _Group(regex, [entry])
            else:
                group.entries.insert(0, entry)
        ordered.extend(groups.values())
    return ordered
