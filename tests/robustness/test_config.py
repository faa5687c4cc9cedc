"""Every limit is settable from ``server.start(...)`` and the command line, and the
README's limits table states the real defaults."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simple_http_server import App, server
from simple_http_server.__main__ import _CONFIG_OPTIONS, build_parser
from simple_http_server.config import KIB, MIB, Limits, ServerConfig
from simple_http_server.testing import TestClient

from ..conftest import live_server

README = Path(__file__).resolve().parents[2] / "README.md"
LIMITS_HEADING = "## Limits, timeouts and hostile clients"

#: Every limit and timeout the hardening issue names, with a non-default value.
LIMITS = {
    "max_head_size": 8 * KIB,
    "max_body_size": 2 * MIB,
    "max_upload_size": 3 * MIB,
    "max_websocket_message_size": 4 * MIB,
    "max_send_backlog": 5 * MIB,
    "max_form_fields": 17,
    "max_parts": 19,
    "max_files": 7,
    "max_part_header_size": 2 * KIB,
    "head_timeout": 3.0,
    "idle_timeout": 7.0,
    "body_timeout": 9.0,
    "keep_alive_max_requests": 11,
    "max_connections": 123,
    "worker_threads": 5,
    "websocket_ping_interval": 13.0,
    "websocket_ping_timeout": 0.0,
    "min_send_rate": 8192.0,
    "min_send_rate_grace": 4.0,
}


def setting(config: ServerConfig, name: str) -> object:
    return getattr(config.limits if hasattr(config.limits, name) else config, name)


@pytest.fixture
def restore_module_server() -> Iterator[None]:
    saved = server._server
    try:
        yield
    finally:
        server._server = saved


def test_every_limit_is_settable_from_start_options(restore_module_server: None) -> None:
    built = server._build(**LIMITS)  # what server.start(**LIMITS) serves with
    for name, value in LIMITS.items():
        assert setting(built.config, name) == value, name


def test_original_option_names_still_work(restore_module_server: None) -> None:
    built = server._build(connection_idle_time=4, keep_alive_max_request=6)
    assert built.config.idle_timeout == 4.0
    assert built.config.keep_alive_max_requests == 6
    assert server._build(prefer_corountine=True).prefer_coroutine is True  # its misspelling
    assert server._build(prefer_coroutine=True).prefer_coroutine is True
    assert server._build().prefer_coroutine is False


#: start()'s positional arguments up to keep_alive_max_request, the same in both orders.
COMMON_POSITIONAL = ["127.0.0.1", 0, False, ssl.PROTOCOL_TLS_SERVER, False, "", "", "", None, {}]
COMMON_POSITIONAL += [None, True, None]


@pytest.mark.parametrize(
    "tail",
    [[{"text/html"}], [["text/html"], 6], [("text/html",)], [set(), 9]],
    ids=["types", "types-level", "types-tuple", "empty-types"],
)
def test_naja_atras_positional_order_is_refused(restore_module_server: None, tail: list) -> None:
    """naja-atra's start() has gzip_content_types and gzip_compress_level where 0.22.x
    has prefer_coroutine and app_conf: a set of types silently chose the asyncio
    transport (gzip off), a level was an AttributeError."""
    with pytest.raises(TypeError, match="naja-atra's gzip_content_types"):
        server._build(*COMMON_POSITIONAL, *tail)


def test_too_many_positional_arguments_name_the_order() -> None:
    for start in (server.start, lambda *a: asyncio.run(server.start_async(*a))):
        with pytest.raises(TypeError, match=r"at most 15 positional arguments \(16 given\): start"):
            start(*COMMON_POSITIONAL, {"text/html"}, 6, True)


def test_the_original_positional_order_still_works(restore_module_server: None) -> None:
    app = App()
    built = server._build(*COMMON_POSITIONAL, True, app)
    assert built.prefer_coroutine is True and built.app is app
    assert server._build(*COMMON_POSITIONAL, 0).prefer_coroutine == 0  # falsy, as before
    assert server._build(prefer_coroutine="yes").prefer_coroutine == "yes"  # truthy, as before


def test_every_limit_is_settable_from_the_command_line() -> None:
    assert set(Limits.__dataclass_fields__) <= set(LIMITS)  # a new limit gets a flag too
    argv = []
    for name, value in LIMITS.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    args = build_parser().parse_args(argv)
    options = {
        name: getattr(args, name) for name in _CONFIG_OPTIONS if getattr(args, name) is not None
    }
    config = ServerConfig().with_changes(**options)
    for name, value in LIMITS.items():
        assert setting(config, name) == value, name


def test_cli_sizes_accept_units() -> None:
    args = build_parser().parse_args(["--max-body-size", "4M", "--max-head-size", "16K"])
    assert (args.max_body_size, args.max_head_size) == (4 * MIB, 16 * KIB)


@pytest.mark.parametrize(
    "bad",
    [{"head_timeout": 0}, {"worker_threads": 0}, {"max_connections": 0},
     {"max_body_size": -1}, {"keep_alive_max_requests": -1},
     {"websocket_ping_interval": -1}, {"websocket_ping_timeout": -0.5},
     {"min_send_rate": -1}, {"min_send_rate_grace": -0.5}, {"min_body_rate": -1}],
)  # fmt: skip
def test_unsafe_values_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServerConfig().with_changes(**bad)


TIMES = ["idle_timeout", "head_timeout", "body_timeout", "drain_timeout",
         "websocket_ping_interval", "websocket_ping_timeout", "min_body_rate_grace",
         "min_send_rate_grace"]  # fmt: skip


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e19])
@pytest.mark.parametrize("name", TIMES)
def test_a_time_must_be_a_finite_number_of_seconds(name: str, value: float) -> None:
    """``nan`` passed every comparison (and silently turned keepalive off), ``inf`` or
    1e19 made each threaded websocket fail at its start (``OverflowError`` packing the
    kernel timeout): refused up front, from ``server.start`` and from the command line."""
    with pytest.raises(ValueError, match=name):
        ServerConfig().with_changes(**{name: value})
    option = "--" + name.replace("_", "-")
    if option in build_parser().format_help():
        with pytest.raises(SystemExit):
            build_parser().parse_args([option, str(value)])


def _doc_value(text: str) -> float | int | bool:
    text = text.strip()
    units = {"KiB": KIB, "MiB": MIB, "GiB": 1024 * MIB, "s": 1, "bytes/s": 1}
    match = re.fullmatch(r"([0-9.]+) ?(KiB|MiB|GiB|s|bytes/s)?(?: \(no limit\))?", text)
    if text == "on":
        return True
    assert match, text
    number = float(match.group(1)) * units.get(match.group(2) or "", 1)
    return int(number) if number.is_integer() else number


def test_the_readme_table_states_the_real_defaults() -> None:
    section = README.read_text(encoding="utf-8").split(LIMITS_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)`[^|]*\| ([^|]+) \|", section, re.MULTILINE)
    documented = dict(rows)
    defaults = ServerConfig()
    limit_names = {f for f in Limits.__dataclass_fields__}
    for name in (*limit_names, *LIMITS, "drain_timeout", "keep_alive", "min_body_rate"):
        assert name in documented, f"{name} is missing from the limits table"
        assert _doc_value(documented[name]) == setting(defaults, name), name
    # min_body_rate_grace has no row: its default is stated in min_body_rate's.
    grace = re.search(
        r"`min_body_rate_grace` \(`--min-body-rate-grace`, default ([0-9.]+) s\)", section
    )
    assert grace and float(grace.group(1)) == defaults.min_body_rate_grace


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("text/plain", {"text/plain"}),  # one type, not its letters
        ("text/html, text/css,", {"text/html", "text/css"}),
        (["text/html", "application/json"], {"text/html", "application/json"}),
        ({"text/"}, {"text/"}),
        (None, set()),
    ],
)
def test_gzip_content_types_take_a_str_a_list_or_a_set(given: object, expected: set[str]) -> None:
    assert ServerConfig(gzip_content_types=given).gzip_content_types == frozenset(expected)  # type: ignore[arg-type]
    assert ServerConfig().with_changes(gzip_content_types=given).gzip_content_types == expected
    proxy = server.init_wsgi_proxy(gzip_content_types=given)
    assert proxy.dispatcher.config.gzip_content_types == expected


def test_start_takes_one_gzip_type_as_a_str(restore_module_server: None) -> None:
    built = server._build(gzip_content_types="text/plain")  # what server.start(...) serves with
    assert built.config.gzip_content_types == frozenset({"text/plain"})
    gzip = built.dispatcher.gzip
    assert gzip is not None and gzip.content_types == ("text/plain",)


def test_gzip_content_types_must_be_strings() -> None:
    with pytest.raises(TypeError):
        ServerConfig(gzip_content_types=[b"text/plain"])  # type: ignore[list-item]


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value", [NAN, INF, -INF, 2.5, True, "16M", None])
@pytest.mark.parametrize("name", sorted(Limits.__dataclass_fields__))
def test_a_limit_must_be_a_whole_number(name: str, value: object) -> None:
    """``max_body_size=nan`` passed ``< 0`` and turned the limit off; a bool or a
    string was taken for a number or failed at the first request."""
    with pytest.raises(ValueError, match=name):
        ServerConfig().with_changes(**{name: value})


def test_an_integral_float_limit_is_taken_as_an_int() -> None:
    limits = ServerConfig().with_changes(max_body_size=16e6, max_parts=10.0).limits
    assert (limits.max_body_size, limits.max_parts) == (16_000_000, 10)
    assert type(limits.max_body_size) is int


def test_the_head_size_always_has_a_bound() -> None:
    """0 means "no limit" for other limits, but made every request a 431 here."""
    with pytest.raises(ValueError, match="max_head_size"):
        ServerConfig().with_changes(max_head_size=0)


COUNTS = ["port", "worker_threads", "max_connections", "keep_alive_max_requests",
          "gzip_min_size", "gzip_compress_level"]  # fmt: skip


@pytest.mark.parametrize("value", [NAN, INF, 2.5, True, "8"])
@pytest.mark.parametrize("name", COUNTS)
def test_a_count_must_be_a_whole_number(name: str, value: object) -> None:
    """``worker_threads=nan`` passed ``< 1``: the threaded server started and never
    answered."""
    with pytest.raises(ValueError, match=name):
        ServerConfig().with_changes(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("gzip_compress_level", 0), ("gzip_compress_level", 10), ("gzip_compress_level", 100),
     ("gzip_compress_level", -5), ("gzip_min_size", -1), ("gzip_min_size", -5)],
)  # fmt: skip
def test_gzip_settings_out_of_range_are_refused(
    restore_module_server: None, name: str, value: int
) -> None:
    """``gzip_compress_level=100`` or ``-5`` and ``gzip_min_size=-5`` were accepted (and
    quietly clamped), though the README gives the level as 1 (fast) .. 9 (small)."""
    with pytest.raises(ValueError, match=name):
        ServerConfig(**{name: value})
    with pytest.raises(ValueError, match=name):
        server._build(gzip_content_types="text/plain", **{name: value})  # server.start
    with pytest.raises(ValueError, match=name):
        server.init_asgi_proxy(**{name: value})


def test_gzip_settings_at_their_bounds_are_taken() -> None:
    for level in (1, 9):
        assert ServerConfig(gzip_compress_level=level).gzip_compress_level == level
    assert ServerConfig(gzip_min_size=0).gzip_min_size == 0


@pytest.mark.parametrize("value", [True, "5", None])
@pytest.mark.parametrize("name", [*TIMES, "min_body_rate", "min_send_rate"])
def test_a_time_or_rate_must_be_a_number(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        ServerConfig().with_changes(**{name: value})


@pytest.mark.parametrize(
    "bad", [{"worker_threads": NAN}, {"max_body_size": NAN}, {"max_head_size": 0}]
)
def test_bad_values_are_refused_before_serving(transport: str, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError), live_server(App(), transport, **bad):
        pass  # pragma: no cover - never reached


BAD_SESSION_SETTINGS = [
    ("session_timeout", 0),
    ("session_timeout", -5),
    ("session_timeout", NAN),
    ("session_timeout", INF),
    ("session_timeout", True),
    ("session_timeout", "60"),
    ("session_cookie_name", "a b;c"),
    ("session_cookie_name", ""),
    ("session_cookie_name", None),
    ("session_cookie_name", "$sid"),  # never read back: a $ name is an attribute
]


def _builders(app: App) -> list[Callable[[], object]]:
    return [
        lambda: server.Server(app),
        lambda: server._build(app_conf=app),
        lambda: server.init_wsgi_proxy(app_conf=app),
        lambda: server.init_asgi_proxy(app_conf=app),
        lambda: TestClient(app),
    ]


@pytest.mark.parametrize(("name", "value"), BAD_SESSION_SETTINGS)
def test_bad_session_settings_of_the_app_are_refused_when_built(
    restore_module_server: None, name: str, value: object
) -> None:
    """``app.session_timeout = 0`` started, then every request with a session was a
    500 (``nan``: sessions never expired): refused by every front end as it is built."""
    app = App()
    setattr(app, name, value)
    for build in _builders(app):
        with pytest.raises(ValueError, match=r"session_timeout|session cookie name"):
            build()
    fixed = {name: 60 if name == "session_timeout" else "SID"}
    assert server._build(app_conf=app, **fixed).app is app  # start's option wins


@pytest.mark.parametrize(("name", "value"), BAD_SESSION_SETTINGS[:4])
def test_bad_session_settings_are_refused_on_a_real_start(
    transport: str, name: str, value: object
) -> None:
    app = App()
    setattr(app, name, value)
    with pytest.raises(ValueError), live_server(app, transport):
        pass  # pragma: no cover - never reached
