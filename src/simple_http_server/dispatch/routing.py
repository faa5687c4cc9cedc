"""Route tables compiled once at registration.

Static paths live in a dict; ``{name}``/wildcard paths are :class:`PathPattern`
(matched in linear time) and ``regexp=`` routes the user's compiled regexes.  A
lookup tells a full match, routes that serve the method on the path but whose
``params=``/``headers=`` all failed (404), a path that exists under other methods
(405 with ``Allow``) or no match (404, or a static resource).

The lookup follows the original's method tables: for each request method, the
routes that serve it form one table, built on first use and kept; in it, the
first url (exact, then patterns, then regexps; routes naming the method before
routes without ``method=``) that matches the path decides.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
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
_SHARED_ALIASES = 16  # methods no route names whose shared table is also kept under their name
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


#: ``{name}`` / ``**`` / ``*`` in a route url.
_TOKENS = re.compile(r"\{([^{}/]*)\}|\*\*|\*")
_SLASH = re.compile("/")
#: What a ``{name}`` or ``*`` reads as: one or more characters of one segment, as
#: many as the rest of the url lets it take.
ONE = "([^/]+)"
#: What a ``**`` reads as: one or more characters, slashes too, as few as possible.
MANY = "(.+?)"
Values = Sequence[str]


class PathPattern:
    """A compiled ``{name}`` / ``*`` / ``**`` path pattern.

    It matches as the regular expression it reads as (``{name}`` and ``*`` are
    ``[^/]+``, ``**`` is ``.+?``, the text around them literal), with the same
    values, in time about linear in the path's length whatever the url.  (The
    regex of two groups that can take the same characters, ``{name}.{ext}`` or two
    ``**``, backtracks ``len(path) ** groups`` steps on a path it does not match,
    holding the GIL: such urls are matched without it.)
    """

    __slots__ = (
        "_last",
        "_literals",
        "_many",
        "_quick",
        "_regex",
        "_segments",
        "names",
        "shape",
        "source",
        "test",
    )

    def __init__(self, url: str) -> None:
        self.source = url
        literals: list[str] = []
        kinds: list[str] = []
        #: The name each group binds, in order (``*`` and ``**`` bind the wildcard,
        #: to the value of the first of them).
        self.names: list[str] = []
        pos = 0
        for m in _TOKENS.finditer(url):
            literals.append(url[pos : m.start()])
            name = m.group(1)
            kinds.append(MANY if m.group(0) == "**" else ONE)
            self.names.append(WILDCARD_KEY if name is None else name)
            pos = m.end()
        literals.append(url[pos:])
        self._literals = tuple(literals)
        self._many = tuple(kind == MANY for kind in kinds)
        #: The regex without its names: patterns of one shape match the same paths
        #: (``/a/{x}``, ``/a/{y}``, ``/a/*``) and count as one url, as in the original.
        self.shape = _shape(literals, kinds)
        self._regex: re.Pattern[str] | None = None
        self._quick: re.Pattern[str] | None = None
        self._segments: tuple[tuple[str, ...], ...] = ()
        self._last: tuple[str | None, Values | None] = (None, None)
        #: ``test(path)`` is None when ``path`` does not match, else not None: the
        #: regex's own ``match`` when no path can make it backtrack (a request's path
        #: is tried on every pattern of its method's table until one matches).
        self.test: Callable[[str], object]
        if _linear(literals, kinds):
            self._regex = re.compile("^" + self.shape + r"\Z", re.DOTALL)
            self.test = self._regex.match
            return
        if MANY not in kinds:
            self._segments = segments(literals)
            self._quick = re.compile(_outline(self._segments), re.DOTALL)
        self.test = self._values

    def _values(self, path: str) -> Values | None:
        """The values of a url not matched by its regex.  A lookup tests a path,
        then asks its values: they are found once."""
        last = self._last
        if last[0] is path:
            return last[1]
        found: Values | None
        if not self._segments:
            found = searched_values(self._literals, self._many, path)
        elif self._quick is not None and self._quick.match(path) is None:
            found = None
        else:
            found = self._by_segment(path)
        self._last = (path, found)
        return found

    def _by_segment(self, path: str) -> Values | None:
        parts = path.split("/")
        if len(parts) != len(self._segments):
            return None
        values: list[str] = []
        for literals, part in zip(self._segments, parts, strict=True):
            if len(literals) == 1:
                if part != literals[0]:
                    return None
                continue
            found = segment_values(literals, part)
            if found is None:
                return None
            values += found
        return values

    def match(self, path: str) -> dict[str, str] | None:
        """The path values when ``path`` matches, else None."""
        if self._regex is not None:
            m = self._regex.match(path)
            found: Values | None = None if m is None else m.groups()
        else:
            found = self._values(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for name, value in zip(self.names, found, strict=True):
            if name != WILDCARD_KEY:
                values[name] = value  # a name used twice: its last value, as before
            elif WILDCARD_KEY not in values:
                values[WILDCARD_KEY] = value
        return values

    @staticmethod
    def is_pattern(url: str) -> bool:
        """True when ``url`` holds ``{name}`` or wildcards."""
        return "*" in url or ("{" in url and "}" in url)


def _shape(literals: Sequence[str], kinds: Sequence[str]) -> str:
    """The regular expression a url reads as (unanchored, without names)."""
    parts = [re.escape(literal) + kind for literal, kind in zip(literals[:-1], kinds, strict=True)]
    return "".join(parts) + re.escape(literals[-1])


def _linear(literals: Sequence[str], kinds: Sequence[str]) -> bool:
    """True when the url's regex cannot backtrack more than linearly on any path:
    no two of its groups can take the same characters.  A ``{name}``/``*`` group
    holds no ``/``: followed by a literal holding one, it can end at one place of
    its segment, and the next group starts in another segment.  A single ``**``
    is one linear scan; two nest, as do two groups with ``/``-free text between."""
    return kinds.count(MANY) <= 1 and all("/" in literal for literal in literals[1:-1])


def _outline(segments: Sequence[Sequence[str]]) -> str:
    """A regex that no path of the segments fails, that rejects most others fast
    and cannot backtrack: each segment with groups is its first and last texts
    around ``[^/]+``."""
    parts = [
        re.escape(texts[0])
        if len(texts) == 1
        else f"{re.escape(texts[0])}[^/]+{re.escape(texts[-1])}"
        for texts in segments
    ]
    return "^" + "/".join(parts) + r"\Z"


def segments(literals: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The ``/``-separated segments of a url without ``**``, each as the literal
    texts around its groups: ``/f/{n}.{e}`` is ``("",) ("f",) ("", ".", "")``."""
    out: list[tuple[str, ...]] = []
    current = [""]
    for index, literal in enumerate(literals):
        first, *rest = literal.split("/")
        current[-1] += first
        for part in rest:
            out.append(tuple(current))
            current = [part]
        if index < len(literals) - 1:
            current.append("")  # a group comes next, then the next literal
    out.append(tuple(current))
    return tuple(out)


def segment_values(literals: Sequence[str], text: str) -> list[str] | None:
    """The values of ``literals[0] (.+) literals[1] ... (.+) literals[-1]`` in
    ``text`` (one segment: no ``/``) as a backtracking regex finds them, each group
    taking all that the groups after it leave, in linear time.

    The groups after one still match if they start earlier (their first group just
    takes more), so each group ends at the last occurrence of the literal after it
    that leaves the next group room: found from the last group back, each once.
    """
    head, tail = literals[0], literals[-1]
    if not text.startswith(head) or not text.endswith(tail):
        return None
    start = len(head) + 1  # no group ends before: each holds a character or more
    ends = [len(text) - len(tail)]  # from the last group back
    for literal in reversed(literals[1:-1]):
        room = ends[-1] - 1  # the next group holds a character at least
        found = text.rfind(literal, start, room) if room >= start else -1
        if found < 0:
            return None
        ends.append(found)
    if ends[-1] < start:
        return None
    ends.reverse()
    values = [text[len(head) : ends[0]]]
    for literal, begin, end in zip(literals[1:-1], ends[:-1], ends[1:], strict=True):
        values.append(text[begin + len(literal) : end])
    return values


def searched_values(literals: Sequence[str], many: Sequence[bool], path: str) -> list[str] | None:
    """The values of a url holding ``**`` (``many[i]``: group ``i`` is one) among
    groups that can take the same characters, as a backtracking regex finds them
    (a ``**`` as little as it can, a ``{name}``/``*`` as much), in ``O(n log n)``.

    From the last group back: the places each group can end so that the rest of
    the url matches after it.  Then from the first group on, each picks its end
    among them.
    """
    head = literals[0]
    if not path.startswith(head) or not path.endswith(literals[-1]):
        return None
    size = len(path)
    slashes = [m.start() for m in _SLASH.finditer(path)]
    ends: list[list[int]] = [[] for _ in many]
    ends[-1] = [size - len(literals[-1])]
    for group in range(len(many) - 2, -1, -1):
        literal = literals[group + 1]
        later = ends[group + 1]
        # The next group must reach its last end: a "**" reaches it from any place before.
        found = _occurrences(path, literal, len(head) + 1, later[-1] - len(literal) - 1)
        if not many[group + 1]:
            found = [
                end
                for end in found
                if _first_end(later, False, slashes, end + len(literal), size) is not None
            ]
        ends[group] = list(found)
        if not ends[group]:
            return None
    values: list[str] = []
    begin = len(head)
    for group, group_ends in enumerate(ends):
        if many[group]:
            end = _first_end(group_ends, True, slashes, begin, size)
        else:
            end = _last_end(group_ends, slashes, begin, size)
        if end is None:
            return None
        values.append(path[begin:end])
        begin = end + len(literals[group + 1])
    return values


def _occurrences(text: str, literal: str, low: int, high: int) -> Sequence[int]:
    """Where ``literal`` starts in ``text`` from ``low`` to ``high``, ascending."""
    if not literal:
        return range(low, high + 1)
    out: list[int] = []
    found = text.find(literal, low)
    while 0 <= found <= high:
        out.append(found)
        found = text.find(literal, found + 1)
    return out


def _segment_end(slashes: list[int], begin: int, size: int) -> int:
    """Where the segment holding ``begin`` ends: its ``/``, or the path's end."""
    index = bisect_left(slashes, begin)
    return slashes[index] if index < len(slashes) else size


def _first_end(
    ends: list[int], many: bool, slashes: list[int], begin: int, size: int
) -> int | None:
    """The first of ``ends`` a group starting at ``begin`` reaches, or None."""
    index = bisect_right(ends, begin)
    if index == len(ends):
        return None
    end = ends[index]
    return end if many or end <= _segment_end(slashes, begin, size) else None


def _last_end(ends: list[int], slashes: list[int], begin: int, size: int) -> int | None:
    """The last of ``ends`` a ``{name}``/``*`` group starting at ``begin`` reaches."""
    index = bisect_right(ends, _segment_end(slashes, begin, size)) - 1
    return ends[index] if index >= 0 and ends[index] > begin else None


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

    #: True when there is nothing to check (set from the expressions).
    empty: bool = field(init=False, default=True, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", not self.params and not self.headers)


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

    #: None when the path is not the url's, else its match: a regexp's ``match``,
    #: a pattern's ``test``.
    test: Callable[[str], Any]
    entries: list[Entry[T]]  # the last registered first
    #: A pattern's literal start up to its last ``/`` ("/p/r7/" for "/p/r7/{name}"):
    #: only paths starting so can match.  "" when unknown (a regexp).
    folder: str = ""


@dataclass(slots=True)
class _Table(Generic[T]):
    """The routes that serve one method, in lookup order."""

    exact: dict[str, list[Entry[T]]]
    patterns: list[_Group[T]]
    regexps: list[_Group[T]]
    #: The pattern groups by their folder, each list in lookup order: a path is
    #: tested only against the groups of the folders it lies in, not against every
    #: pattern of the table (1,000 routes cost no more than 10).
    folders: dict[str, list[_Group[T]]] = field(default_factory=dict)
    #: Whether ``folders`` holds every pattern group (none without a folder).
    indexed: bool = False
    #: Each pattern group's place in ``patterns`` (by ``id``), to merge folders' lists.
    order: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if all(group.folder for group in self.patterns):
            self.indexed = True
            for i, group in enumerate(self.patterns):
                self.folders.setdefault(group.folder, []).append(group)
                self.order[id(group)] = i

    def pattern_groups(self, path: str) -> list[_Group[T]]:
        """The pattern groups that may match ``path``, in lookup order."""
        if not self.indexed:
            return self.patterns
        folders = self.folders
        found: list[_Group[T]] | None = None
        more = False
        end = path.find("/")
        while end >= 0:
            groups = folders.get(path[: end + 1])
            if groups is not None:
                if found is None:
                    found = groups
                else:
                    found = [*found, *groups]
                    more = True
            end = path.find("/", end + 1)
        if found is None:
            return []
        if more:  # groups of several folders: back into the table's order
            order = self.order
            found.sort(key=lambda group: order[id(group)])
        return found


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
        """The table of ``method``; every method no route names shares one (also
        kept under the first few such methods' names: found at once next time)."""
        tables = self._tables
        key = method if method in self._named else _SHARED
        table = tables.get(key)
        if table is None:
            table = tables[key] = self._build(key)
        if key is _SHARED and len(tables) < _SHARED_ALIASES:  # methods are client input
            tables[method] = table
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
        for group in table.pattern_groups(path):
            if group.test(path) is not None:
                return group.entries
        bare = path[1:]
        for group in table.regexps:
            if group.test(path) or group.test(bare):
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
        for group in table.pattern_groups(path):
            if group.test(path) is None:
                continue
            for entry in group.entries:
                if entry.conditions.empty or entry.conditions.accepts(parameters, headers):
                    assert entry.pattern is not None
                    return Match(entry.target, entry.pattern.match(path) or {})
            return Match(refused=True)
        if table.regexps:
            bare = path[1:]
            for group in table.regexps:
                m = group.test(path) or group.test(bare)
                if m is None:
                    continue
                for entry in group.entries:
                    if entry.conditions.empty or entry.conditions.accepts(parameters, headers):
                        groups = tuple(g if g is not None else "" for g in m.groups())
                        return Match(entry.target, reg_groups=groups)
                return Match(refused=True)
        return Match(allowed=self.methods_at(path) or None)

    def named_methods(self) -> set[str]:
        """Every method some route names (any-method routes name none)."""
        entries = [*self._patterns, *self._regexps]
        for at_path in self._static.values():
            entries.extend(at_path)
        return {method for entry in entries for method in entry.methods}

    def methods_at(self, path: str) -> set[str]:
        """The methods routes name on ``path`` (any-method routes name none)."""
        allowed: set[str] = set()
        for entry in self._static.get(path, ()):
            allowed |= entry.methods
        for entry in self._patterns:
            if entry.methods and entry.pattern is not None and entry.pattern.test(path) is not None:
                allowed |= entry.methods
        bare = path[1:]
        for entry in self._regexps:
            regex = entry.regex
            if entry.methods and regex is not None and (regex.match(path) or regex.match(bare)):
                allowed |= entry.methods
        return allowed


def _url_of(entry: Entry[T]) -> tuple[str, Callable[[str], Any]]:
    """What makes two pattern or regexp routes one url, and what matches it."""
    if entry.regex is not None:
        return entry.regex.pattern, entry.regex.match
    assert entry.pattern is not None
    return entry.pattern.shape, entry.pattern.test


def _folder(entry: Entry[T]) -> str:
    """A pattern route's literal start up to its last ``/`` ("" for a regexp, or a
    pattern that does not start with ``/``)."""
    if entry.pattern is None:
        return ""
    start = entry.pattern._literals[0]
    return start[: start.rfind("/") + 1] if start.startswith("/") else ""


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
            key, test = _url_of(entry)
            group = groups.get(key)
            if group is None:
                groups[key] = _Group(test, [entry], _folder(entry))
            else:
                group.entries.insert(0, entry)
        ordered.extend(groups.values())
    return ordered
