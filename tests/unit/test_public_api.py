"""Every public name of the original package (and naja-atra's additions) resolves."""

from __future__ import annotations

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
