"""The original's ``simple_http_server.app_conf``: its names, from where they live now.

Code written for 0.22.x imports ``AppConf`` and ``get_app_conf`` from here; new code
imports them (and ``App``) from ``simple_http_server``.
"""

from __future__ import annotations

from . import (
    WEBSOCKET_MESSAGE_BINARY,
    WEBSOCKET_MESSAGE_BINARY_FRAME,
    WEBSOCKET_MESSAGE_PING,
    WEBSOCKET_MESSAGE_PONG,
    WEBSOCKET_MESSAGE_TEXT,
    AppConf,
    ControllerFunction,
    SessionFactory,
    WebsocketHandler,
    WebsocketHandlerClass,
    WebsocketHandlerProxy,
    controller,
    error_message,
    filter_map,
    get_app_conf,
    get_logger,
    request_filter,
    request_map,
    route,
    set_session_factory,
    websocket_close,
    websocket_handler,
    websocket_handshake,
    websocket_message,
    websocket_open,
)

__all__ = [
    "WEBSOCKET_MESSAGE_BINARY",
    "WEBSOCKET_MESSAGE_BINARY_FRAME",
    "WEBSOCKET_MESSAGE_PING",
    "WEBSOCKET_MESSAGE_PONG",
    "WEBSOCKET_MESSAGE_TEXT",
    "AppConf",
    "ControllerFunction",
    "SessionFactory",
    "WebsocketHandler",
    "WebsocketHandlerClass",
    "WebsocketHandlerProxy",
    "controller",
    "error_message",
    "filter_map",
    "get_app_conf",
    "get_logger",
    "request_filter",
    "request_map",
    "route",
    "set_session_factory",
    "websocket_close",
    "websocket_handler",
    "websocket_handshake",
    "websocket_message",
    "websocket_open",
]
