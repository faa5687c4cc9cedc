"""``Cookies.of_header``: one ``;``-separated pair at a time (RFC 6265 5.4)."""

from __future__ import annotations

import http.cookies
import random
import time

import pytest

from simple_http_server.models import Cookies, unquote_cookie


def values(raw: str | None) -> dict[str, str]:
    return {name: morsel.value for name, morsel in Cookies.of_header(raw).items()}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("", {}),
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;", {"a": "1", "b": "2"}),  # no space, a trailing separator
        ('pref={"lang":"en"}; sid=x', {"pref": '{"lang":"en"}', "sid": "x"}),
        ("msg=hello world; sid=x", {"msg": "hello world", "sid": "x"}),
        ("flag; =v; sid=x", {"sid": "x"}),  # no name=value: skipped alone
        ("x=1=2; e=", {"x": "1=2", "e": ""}),
        ('q="a\\073b\\"c"; sid=x', {"q": 'a;b"c', "sid": "x"}),  # SimpleCookie's quoting
        ("a[b]=1; path=/p; sid=x", {"a[b]": "1", "path": "/p", "sid": "x"}),  # Morsel.set refuses
        ("a=1; a=2", {"a": "2"}),  # as SimpleCookie.load did: the last one
        ("name=Jos\u00c3\u00a9", {"name": "Jos\u00e9"}),  # UTF-8 bytes read as latin-1
        ("name=Jos\u00e9", {"name": "Jos\u00e9"}),  # not UTF-8: kept as read
        ("name=\u4e2d", {"name": "\u4e2d"}),  # already text (a TestClient header)
    ],
)
def test_of_header(raw: str | None, expected: dict[str, str]) -> None:
    assert values(raw) == expected


def test_a_parsed_cookie_is_a_morsel_with_its_coded_value() -> None:
    morsel = Cookies.of_header('q="a\\073b"; s=v')["q"]
    assert (morsel.key, morsel.value, morsel.coded_value) == ("q", "a;b", '"a\\073b"')
    assert morsel.OutputString() == 'q="a\\073b"'


def _samples() -> list[str]:
    rng = random.Random(3)
    alphabet = ["\\", '"', "0", "1", "3", "4", "7", "8", "a", "\n", "\x00", "\u00e9", ";"]
    out = ['"', '""', '"\\"', '"\\0"', '"\\400"', '"\\3777"', '"a\\\n"', 'a"b', '"\\\\073"']
    for _ in range(3000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        out += [body, f'"{body}"']
    return out


def test_unquoting_is_the_stdlibs() -> None:
    """Every value unquotes as ``http.cookies`` does (its ``_unquote`` is
    quadratic before Python 3.11.10 / 3.12.6, CVE-2024-7592: not called)."""
    for coded in _samples():
        assert unquote_cookie(coded) == http.cookies._unquote(coded), coded  # type: ignore[attr-defined]
        assert Cookies().value_decode(coded) == (unquote_cookie(coded), coded)


def test_load_unquotes_in_linear_time_too() -> None:
    """``Cookies.load`` (``SimpleCookie``'s) uses the same unquoting: 58 KB of
    ``\\0`` took 6 s with the stdlib's."""
    jar = Cookies()
    start = time.monotonic()
    jar.load('a="' + "\\0" * 29_000 + '"')
    assert time.monotonic() - start < 2.0
    assert jar["a"].value == "0" * 29_000
