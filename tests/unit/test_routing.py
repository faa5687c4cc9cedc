"""Router, path normalization, patterns and narrowing expressions (no sockets)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import simple_http_server
from simple_http_server.dispatch.routing import (
    WILDCARD_KEY,
    PathPattern,
    Router,
    compile_conditions,
    normalize_path,
    parse_methods,
)

NONE = compile_conditions(None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/%2e%2e/%2E%2E/x", "/x"),
        ("//a//b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/%E4%B8%AD%E6%96%87/coroutine", "/中文/coroutine"),
        ("/a%20b", "/a b"),
        ("/%2541", "/%41"),  # decoded once only (defect 18)
        ("", "/"),
        ("/..", "/"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_normalize_path_of_many_slashes_is_fast_and_bounded() -> None:
    # The original looped forever on "//..." (defect 3).
    assert normalize_path("/" * 10_000 + "x") == "/x"


@pytest.mark.parametrize(
    ("url", "path", "values"),
    [
        ("/a/b/{path_val}/x", "/a/b/xyz/x", {"path_val": "xyz"}),
        ("/a/{v}", "/a/with space~+:", {"v": "with space~+:"}),
        ("/star/*", "/star/c", {WILDCARD_KEY: "c"}),
        ("/star/*", "/star/c/d", None),
        ("/*/star", "/c/star", {WILDCARD_KEY: "c"}),
        ("/*/star", "/c/d/star", None),
        ("/star/**", "/star/c/d", {WILDCARD_KEY: "c/d"}),
        ("/star/**", "/star", None),
        ("/**/star", "/c/d/star", {WILDCARD_KEY: "c/d"}),
        ("/{a}/{b}", "/1/2", {"a": "1", "b": "2"}),
        ("/{a}/{b}", "/1", None),
    ],
)
def test_path_patterns(url: str, path: str, values: dict[str, str] | None) -> None:
    assert PathPattern(url).match(path) == values


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("GET", {"GET"}),
        ("get, post", {"GET", "POST"}),
        (["GET", "PATCH"], {"GET", "PATCH"}),
        (("PUT",), {"PUT"}),
        ("PROPFIND", {"PROPFIND"}),
        ("", set()),
        (None, set()),
    ],
)
def test_parse_methods(method: object, expected: set[str]) -> None:
    assert parse_methods(method) == expected  # type: ignore[arg-type]


def test_parse_methods_rejects_non_tokens() -> None:
    with pytest.raises(ValueError):
        parse_methods("GET POST")


@pytest.mark.parametrize(
    ("expr", "params", "ok"),
    [
        ("a=b", {"a": ["b"]}, True),
        ("a=b", {"a": ["x", "b"]}, True),
        ("a=b", {"a": ["c"]}, False),
        ("a!=b", {"a": ["c"]}, True),
        ("a!=b", {"a": ["b"]}, False),
        ("a!=b", {}, False),  # missing key: no match, as in the original
        ("a^=b", {"a": ["bcd"]}, True),
        ("a^=b", {"a": ["cb"]}, False),
        ("a", {"a": [""]}, True),
        ("a", {}, False),
        ("!a", {}, True),
        ("!a", {"a": ["1"]}, False),
        ("x=a=b", {"x": ["a=b"]}, True),
    ],
)
def test_param_expressions(expr: str, params: dict[str, list[str]], ok: bool) -> None:
    assert compile_conditions(expr, None).accepts(params, {}) is ok


def test_all_versus_any_expressions() -> None:
    all_of = compile_conditions(["a=b", "c!=d"], None)
    any_of = compile_conditions(["a=b", "c!=d"], None, match_all_params=False)
    assert all_of.accepts({"a": ["b"], "c": ["x"]}, {})
    assert not all_of.accepts({"a": ["b"]}, {})
    assert any_of.accepts({"a": ["b"]}, {})
    assert not any_of.accepts({"a": ["x"], "c": ["d"]}, {})


def test_header_expressions_ignore_name_case() -> None:
    from simple_http_server import Headers

    cond = compile_conditions(None, ["X-Kind=a"])
    assert cond.accepts({}, Headers({"x-kind": "a"}))
    assert not cond.accepts({}, Headers({"x-kind": "b"}))


def _router() -> Router[str]:
    router: Router[str] = Router()
    router.add_url("/static", "static-get", frozenset({"GET"}), NONE)
    router.add_url("static", "static-any", frozenset(), NONE)
    router.add_url("/items/{id}", "item", frozenset({"GET"}), NONE)
    router.add_url("/post-only", "post", frozenset({"POST"}), NONE)
    router.add_regexp("^(reg/(.+))$", "reg", frozenset(), NONE)
    router.add_url("/narrow", "a", frozenset({"GET"}), compile_conditions("a=1", None))
    router.add_url("/narrow", "b", frozenset({"GET"}), compile_conditions("b", None))
    return router


def test_static_route_prefers_the_method_table() -> None:
    router = _router()
    assert router.lookup("GET", "/static", {}, {}).target == "static-get"
    assert router.lookup("DELETE", "/static", {}, {}).target == "static-any"


def test_head_is_served_by_get_routes() -> None:
    assert _router().lookup("HEAD", "/items/7", {}, {}).target == "item"


def test_pattern_route_values() -> None:
    match = _router().lookup("GET", "/items/7", {}, {})
    assert (match.target, match.path_values) == ("item", {"id": "7"})


def test_regexp_route_matches_the_path_without_its_slash() -> None:
    match = _router().lookup("GET", "/reg/abcef/aref/xxx", {}, {})
    assert match.target == "reg"
    assert match.reg_groups == ("reg/abcef/aref/xxx", "abcef/aref/xxx")


def test_wrong_method_reports_the_allowed_ones() -> None:
    match = _router().lookup("GET", "/post-only", {}, {})
    assert match.target is None and match.allowed == {"POST"}


def test_unknown_path_is_a_plain_miss() -> None:
    match = _router().lookup("GET", "/nothing", {}, {})
    assert match.target is None and match.allowed is None


def test_narrowing_last_registered_first() -> None:
    router = _router()
    assert router.lookup("GET", "/narrow", {"a": ["1"], "b": [""]}, {}).target == "b"
    assert router.lookup("GET", "/narrow", {"a": ["1"]}, {}).target == "a"
    miss = router.lookup("GET", "/narrow", {}, {})
    assert miss.target is None and miss.allowed is None and miss.refused  # 404, not 405


def test_router_size() -> None:
    assert len(_router()) == 7


def test_narrows_by_params_is_known_at_registration() -> None:
    router: Router[str] = Router()
    router.add_url("/a", "a", frozenset(), compile_conditions(None, "X-A"))
    assert not router.narrows_by_params
    router.add_regexp("^/r$", "r", frozenset(), compile_conditions("q", None))
    assert router.narrows_by_params
    assert _router().narrows_by_params


def test_candidates_are_the_routes_that_decide_the_method_on_the_path() -> None:
    router = _router()
    assert [e.target for e in router.candidates("GET", "/narrow")] == ["b", "a"]
    assert [e.target for e in router.candidates("POST", "/narrow")] == []
    assert [e.target for e in router.candidates("HEAD", "/items/7")] == ["item"]
    assert [e.target for e in router.candidates("PUT", "/static")] == ["static-any"]
    assert [e.target for e in router.candidates("GET", "/reg/x")] == ["reg"]


def test_connect_is_served_only_by_routes_that_name_it() -> None:
    router = _router()
    assert not router.serves_connect
    assert router.lookup("CONNECT", "/static", {}, {}).target is None  # "static-any" refuses
    assert router.lookup("CONNECT", "/reg/x", {}, {}).target is None
    assert [e.target for e in router.candidates("CONNECT", "/static")] == []
    router.add_url("/static", "tunnel", frozenset({"CONNECT"}), NONE)
    assert router.serves_connect
    assert router.lookup("CONNECT", "/static", {}, {}).target == "tunnel"
    assert router.lookup("DELETE", "/static", {}, {}).target == "static-any"


def test_the_first_url_with_routes_for_the_method_decides() -> None:
    router: Router[str] = Router()
    router.add_url("/x", "x-get-a", frozenset({"GET"}), compile_conditions("a", None))
    router.add_url("/x", "x-any", frozenset(), NONE)
    router.add_url("/{p}", "pattern", frozenset({"GET"}), NONE)
    router.add_regexp("^/x$", "regexp", frozenset({"GET"}), NONE)
    assert router.lookup("GET", "/x", {"a": ["1"]}, {}).target == "x-get-a"
    refused = router.lookup("GET", "/x", {}, {})
    assert (refused.target, refused.refused, refused.allowed) == (None, True, None)
    assert [e.target for e in router.candidates("GET", "/x")] == ["x-get-a"]
    assert router.lookup("POST", "/x", {}, {}).target == "x-any"
    assert router.lookup("GET", "/y", {}, {}).target == "pattern"


def test_patterns_group_by_shape_in_first_registration_order() -> None:
    router: Router[str] = Router()
    router.add_url("/a/{x}", "named", frozenset({"GET"}), compile_conditions("q", None))
    router.add_url("/a/**", "deep", frozenset({"GET"}), NONE)
    router.add_url("/a/*", "star", frozenset({"GET"}), compile_conditions("s", None))
    assert PathPattern("/a/{x}").shape == PathPattern("/a/*").shape
    assert PathPattern("/a/{x}").shape != PathPattern("/a/**").shape
    assert [e.target for e in router.candidates("GET", "/a/b")] == ["star", "named"]
    match = router.lookup("GET", "/a/b", {"q": [""]}, {})
    assert (match.target, match.path_values) == ("named", {"x": "b"})
    assert router.lookup("GET", "/a/b", {}, {}).refused
    assert router.lookup("GET", "/a/b/c", {}, {}).target == "deep"


def test_patterns_of_several_folders_keep_registration_order() -> None:
    """Patterns are looked up by their literal folder (``/p/r7/`` of ``/p/r7/{n}``),
    yet a path lying in several folders still meets them in registration order."""
    router: Router[str] = Router()
    router.add_url("/{y}/b", "any-first", frozenset({"GET"}), NONE)
    router.add_url("/a/{x}", "a-folder", frozenset({"GET"}), NONE)
    router.add_url("/a/c/{z}", "deeper", frozenset({"GET"}), NONE)
    router.add_url("/**", "everything", frozenset({"GET"}), NONE)
    assert router.lookup("GET", "/a/b", {}, {}).target == "any-first"
    assert router.lookup("GET", "/a/x", {}, {}).target == "a-folder"
    assert router.lookup("GET", "/a/c/d", {}, {}).target == "deeper"
    assert router.lookup("GET", "/q/r/s", {}, {}).target == "everything"
    assert [e.target for e in router.candidates("GET", "/a/b")] == ["any-first"]


def test_a_path_is_tested_only_against_the_patterns_of_its_folders() -> None:
    """With 500 pattern routes, the last one is found without testing the 499 others
    (a linear scan made 1,000 routes cost 0.7x of 10 in the harness)."""
    router: Router[str] = Router()
    for i in range(500):
        router.add_url(f"/p/r{i:04d}/{{name}}", f"r{i}", frozenset({"GET"}), NONE)
    router.add_url("/{any}/x/{y}", "late", frozenset({"GET"}), NONE)
    table = router._table("GET")
    # its own folder's pattern, and /{any}/x/{y} (folder "/": any path may match it)
    assert len(table.pattern_groups("/p/r0499/n")) == 2
    assert len(table.pattern_groups("/p/x/n")) == 1
    match = router.lookup("GET", "/p/r0499/n", {}, {})
    assert (match.target, match.path_values) == ("r499", {"name": "n"})
    assert router.lookup("GET", "/p/x/n", {}, {}).target == "late"


def test_a_miss_reports_every_method_named_on_the_path() -> None:
    router: Router[str] = Router()
    router.add_url("/m", "put", frozenset({"PUT"}), NONE)
    router.add_url("/{p}", "post", frozenset({"POST"}), NONE)
    router.add_regexp("^m$", "patch", frozenset({"PATCH"}), NONE)
    router.add_url("/other", "get", frozenset({"GET"}), NONE)
    match = router.lookup("GET", "/m", {}, {})
    assert (match.target, match.refused, match.allowed) == (None, False, {"PUT", "POST", "PATCH"})
    assert router.lookup("DELETE", "/nothing/here", {}, {}).allowed is None


def test_tables_are_rebuilt_after_a_registration() -> None:
    router: Router[str] = Router()
    router.add_url("/t", "any", frozenset(), NONE)
    assert router.lookup("PATCH", "/t", {}, {}).target == "any"
    router.add_url("/t", "patch", frozenset({"PATCH"}), NONE)
    assert router.lookup("PATCH", "/t", {}, {}).target == "patch"
    assert router.lookup("PROPFIND", "/t", {}, {}).target == "any"


@pytest.mark.parametrize(
    ("url", "path", "values"),
    [
        ("/files/{name}.{ext}", "/files/a.b", {"name": "a", "ext": "b"}),
        ("/files/{name}.{ext}", "/files/a.tar.gz", {"name": "a.tar", "ext": "gz"}),
        ("/files/{name}.{ext}", "/files/.b", None),
        ("/files/{name}.{ext}", "/files/a./", None),
        ("/archive/{y}-{m}-{d}", "/archive/2024-01-02", {"y": "2024", "m": "01", "d": "02"}),
        ("/archive/{y}-{m}-{d}", "/archive/a-b-c-d-e", {"y": "a-b-c", "m": "d", "d": "e"}),
        ("/archive/{y}-{m}-{d}", "/archive/2024-01", None),
        ("/v{major}.{minor}/x", "/v1.2/x", {"major": "1", "minor": "2"}),
        ("/{a}{b}", "/xyz", {"a": "xy", "b": "z"}),
        ("/s/*.{ext}", "/s/a.b.c", {WILDCARD_KEY: "a.b", "ext": "c"}),
        ("/s/**.{ext}", "/s/a.b/c.d", {WILDCARD_KEY: "a.b/c", "ext": "d"}),
        ("/d/**/{name}.{ext}", "/d/x/y/n.e", {WILDCARD_KEY: "x/y", "name": "n", "ext": "e"}),
        ("/a/**/x/**", "/a/1/x/2/x/3", {WILDCARD_KEY: "1"}),
        ("/{a}/{a}", "/1/2", {"a": "2"}),  # a name used twice: its last value
        ("/files/{name}.{ext}", "/files/a.b\n", {"name": "a", "ext": "b\n"}),
        ("/a/{v}/b", "/a/x/b\n", None),  # the path's end is its end (a %0A is a character)
    ],
)
def test_patterns_with_several_groups_in_a_segment(
    url: str, path: str, values: dict[str, str] | None
) -> None:
    pattern = PathPattern(url)
    assert pattern.match(path) == values
    assert (pattern.test(path) is not None) is (values is not None)


def _as_regex(url: str) -> re.Pattern[str]:
    """The regular expression the README says a url reads as."""
    parts = re.split(r"(\{[^{}/]*\}|\*\*|\*)", url)
    kinds = {"**": "(.+?)", "*": "([^/]+)"}
    regex = "".join(
        re.escape(part) if i % 2 == 0 else kinds.get(part, "([^/]+)")
        for i, part in enumerate(parts)
    )
    return re.compile("^" + regex + r"\Z", re.DOTALL)


def test_patterns_match_as_the_regex_they_read_as() -> None:
    """Whatever the url, a pattern matches the paths its regex (``{x}``, ``*``:
    ``[^/]+``; ``**``: ``.+?``) matches, with the values a backtracking regex gives."""
    rng = random.Random(7)
    pieces = ["{a}", "{b}", "*", "**", "/", ".", "-", "x", "/x", "x.", "xx", ".x."]
    for _ in range(600):
        url = "/" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        if not PathPattern.is_pattern(url):
            continue
        pattern, regex = PathPattern(url), _as_regex(url)
        for _ in range(40):
            path = "/" + "".join(rng.choice("/.-xy") for _ in range(rng.randint(0, 12)))
            m = regex.match(path)
            expected: dict[str, str] | None = None
            if m is not None:
                expected = {}
                for name, value in zip(pattern.names, m.groups(), strict=True):
                    if name != WILDCARD_KEY or name not in expected:
                        expected[name] = value
            assert pattern.match(path) == expected, (url, path)


#: Urls whose regex backtracks for seconds (``len(path) ** groups`` steps) on the path
#: ``prefix + unit * count + suffix``, which they do not match.
HOSTILE = [
    ("/files/{name}.{ext}", "/files/", ".", 40_000, "/"),
    ("/archive/{y}-{m}-{d}", "/archive/", "-", 1_500, "/"),
    ("/d/**/{name}.{ext}", "/d/x/", ".", 40_000, "/"),
    ("/s/**.{ext}", "/s/", ".", 40_000, "/"),
    ("/a/**/x/**/y", "/a", "/x", 20_000, "/"),
]


def test_a_path_never_makes_a_pattern_backtrack() -> None:
    """Every hostile path above is refused in well under 2 s in all (the regexes
    took 3 to 6 s each); in a subprocess, so that a regression fails, not hangs."""
    src = str(Path(simple_http_server.__file__).resolve().parents[1])
    code = (
        "import time\n"
        "from simple_http_server.dispatch.routing import PathPattern\n"
        f"cases = {HOSTILE!r}\n"
        "start = time.monotonic()\n"
        "for url, prefix, unit, count, suffix in cases:\n"
        "    assert PathPattern(url).match(prefix + unit * count + suffix) is None, url\n"
        "print(time.monotonic() - start)\n"
    )
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 2.0
