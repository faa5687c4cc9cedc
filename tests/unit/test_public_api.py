"""Every public name of the original package (and naja-atra's additions) resolves."""

from __future__ import annotations

import importlib
import inspect

import pytest

import simple_http_server

ORIGINAL_NAMES = """
AppConf ControllerFunction WebsocketHandlerClass WebsocketHandlerProxy get_app_conf
set_session_factory controller request_map route request_filter filter_map websocket_handler
websocket_handshake websocket_open websocket_close websocket_message error_message get_logger
DEFAULT_ENCODING SESSION_COOKIE_NAME WEBSOCKET_OPCODE_CONTINUATION WEBSOCKET_OPCODE_TEXT
WEBSOCKET_OPCODE_BINARY WEBSOCKET_OPCODE_CLOSE WEBSOCKET_OPCODE_PING WEBSOCKET_OPCODE_PONG
WEBSOCKET_MESSAGE_TEXT WEBSOCKET_MESSAGE_BINARY WEBSOCKET_MESSAGE_BINARY_FRAME
WEBSOCKET_MESSAGE_PING WEBSOCKET_MESSAGE_PONG Session SessionFactory Cookies RequestBodyReader
Request MultipartFile ParamStringValue Parameter PathValue Parameters ModelDict Environment
RegGroups RegGroup Header JSONBody BytesBody StaticFile Response HttpError Redirect Headers
Cookie FilterContext WebsocketRequest WebsocketSession WebsocketCloseReason WebsocketHandler
""".split()
NAJA_NAMES = """
model_binding default_model_binding ModelBinding ModelBindingConf LocalSessionFactory
HttpSession HttpSessionFactory
""".split()
README_NAMES = ["request", "route", "App", "ClientGone"]


def test_every_name_resolves_and_is_exported() -> None:
    for name in ORIGINAL_NAMES + NAJA_NAMES + README_NAMES:
        assert getattr(simple_http_server, name) is not None, name
        assert name in simple_http_server.__all__, name


def test_star_import_resolves_every_exported_name() -> None:
    namespace: dict[str, object] = {}
    exec("from simple_http_server import *", namespace)
    missing = [n for n in simple_http_server.__all__ if n not in namespace]
    assert missing == []


def test_request_and_route_are_request_map() -> None:
    assert simple_http_server.request == simple_http_server.request_map
    assert simple_http_server.route == simple_http_server.request_map


# The public names of the original's modules that user code imports directly.
BASIC_MODELS_NAMES = """
BytesBody Cookie Cookies DEFAULT_ENCODING Environment FilterContext Header Headers HttpError
JSONBody ModelDict MultipartFile ParamStringValue Parameter Parameters PathValue Redirect
RegGroup RegGroups Request RequestBodyReader Response SESSION_COOKIE_NAME Session
SessionFactory StaticFile WEBSOCKET_MESSAGE_BINARY WEBSOCKET_MESSAGE_BINARY_FRAME
WEBSOCKET_MESSAGE_PING WEBSOCKET_MESSAGE_PONG WEBSOCKET_MESSAGE_TEXT WEBSOCKET_OPCODE_BINARY
WEBSOCKET_OPCODE_CLOSE WEBSOCKET_OPCODE_CONTINUATION WEBSOCKET_OPCODE_PING WEBSOCKET_OPCODE_PONG
WEBSOCKET_OPCODE_TEXT WebsocketCloseReason WebsocketHandler WebsocketRequest WebsocketSession
""".split()
APP_CONF_NAMES = """
AppConf ControllerFunction SessionFactory WEBSOCKET_MESSAGE_BINARY WEBSOCKET_MESSAGE_BINARY_FRAME
WEBSOCKET_MESSAGE_PING WEBSOCKET_MESSAGE_PONG WEBSOCKET_MESSAGE_TEXT WebsocketHandler
WebsocketHandlerClass WebsocketHandlerProxy controller error_message filter_map get_app_conf
get_logger request_filter request_map route set_session_factory websocket_close
websocket_handler websocket_handshake websocket_message websocket_open
""".split()


@pytest.mark.parametrize(
    ("module", "names"),
    [("basic_models", BASIC_MODELS_NAMES), ("app_conf", APP_CONF_NAMES)],
)
def test_the_originals_modules_import_the_same_objects(module: str, names: list[str]) -> None:
    """``from simple_http_server.basic_models import Parameter`` (0.22.x code) works and
    gives the object ``simple_http_server`` exports."""
    mod = importlib.import_module(f"simple_http_server.{module}")
    for name in names:
        assert getattr(mod, name) is getattr(simple_http_server, name), name
    assert sorted(mod.__all__) == sorted(names)


def test_every_exported_callable_has_a_docstring() -> None:
    undocumented = [
        name
        for name in simple_http_server.__all__
        if callable(obj := getattr(simple_http_server, name)) and not inspect.getdoc(obj)
    ]
    assert undocumented == []


# What ``help()`` on the main entry points must explain: their keyword options.
DOCUMENTED_OPTIONS = {
    "request_map": "url regexp method headers params match_all_headers_expressions "
    "match_all_params_expressions",
    "controller": "singleton args kwargs",
    "request_filter": "regexp ctx.do_chain()",
    "error_message": "code message explain 40x",
    "websocket_handler": "endpoint regexp",
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_OPTIONS))
def test_help_on_a_decorator_names_its_options(name: str) -> None:
    doc = inspect.getdoc(getattr(simple_http_server, name)) or ""
    missing = [word for word in DOCUMENTED_OPTIONS[name].split() if word not in doc]
    assert missing == []


def test_help_on_start_names_its_options() -> None:
    from simple_http_server import server

    doc = inspect.getdoc(server.start) or ""
    options = [*inspect.signature(server._build).parameters, "workers", "ServerConfig"]
    missing = [o for o in options if o != "options" and f"``{o}``" not in doc]
    assert missing == []
