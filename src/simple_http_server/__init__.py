"""simple_http_server: the simple_http_server API, rebuilt Sans-IO on h11, wsproto and multipart.

Decorate plain functions with ``@route`` and call ``server.start()``::

    from simple_http_server import route, server

    @route("/")
    def index():
        return {"hello": "world"}

    server.start(port=9090)
"""

from __future__ import annotations

name = "simple_http_server"
version = "1.0.0.dev0"
__version__ = version

# ruff: noqa: E402  (the version must exist before submodules import it)
from .app import App, AppConf, ControllerFunction, default_app, get_app_conf
from .dispatch.binding import ModelBinding, ModelBindingConf
from .dispatch.bodies import MultipartFile, RequestBodyReader
from .dispatch.channel import ClientGone
from .dispatch.filters import FilterContext
from .dispatch.sessions import LocalSessionFactory
from .errors import HttpError
from .logger import get_logger
from .models import (
    DEFAULT_ENCODING,
    SESSION_COOKIE_NAME,
    BytesBody,
    Cookie,
    Cookies,
    Environment,
    Header,
    Headers,
    JSONBody,
    ModelDict,
    Parameter,
    Parameters,
    ParamStringValue,
    PathValue,
    RegGroup,
    RegGroups,
    Request,
    Session,
    SessionFactory,
)
from .responses import Redirect, Response, StaticFile
from .server import set_session_factory
from .websocket import (
    WEBSOCKET_MESSAGE_BINARY,
    WEBSOCKET_MESSAGE_BINARY_FRAME,
    WEBSOCKET_MESSAGE_PING,
    WEBSOCKET_MESSAGE_PONG,
    WEBSOCKET_MESSAGE_TEXT,
    WEBSOCKET_OPCODE_BINARY,
    WEBSOCKET_OPCODE_CLOSE,
    WEBSOCKET_OPCODE_CONTINUATION,
    WEBSOCKET_OPCODE_PING,
    WEBSOCKET_OPCODE_PONG,
    WEBSOCKET_OPCODE_TEXT,
    WebsocketCloseReason,
    WebsocketException,
    WebsocketHandler,
    WebsocketHandlerClass,
    WebsocketHandlerProxy,
    WebsocketRequest,
    WebsocketSession,
    websocket_close,
    websocket_handler,
    websocket_handshake,
    websocket_message,
    websocket_open,
)

HttpSession = Session
HttpSessionFactory = SessionFactory
FilterContex = FilterContext  # the original's spelling

_app = default_app()
request_map = _app.request_map
route = _app.request_map
request = _app.request_map
controller = _app.controller
request_filter = _app.request_filter
filter_map = _app.filter_map
error_message = _app.error_message
model_binding = _app.model_binding
default_model_binding = _app.default_model_binding


__all__ = [
    "DEFAULT_ENCODING",
    "SESSION_COOKIE_NAME",
    "WEBSOCKET_MESSAGE_BINARY",
    "WEBSOCKET_MESSAGE_BINARY_FRAME",
    "WEBSOCKET_MESSAGE_PING",
    "WEBSOCKET_MESSAGE_PONG",
    "WEBSOCKET_MESSAGE_TEXT",
    "WEBSOCKET_OPCODE_BINARY",
    "WEBSOCKET_OPCODE_CLOSE",
    "WEBSOCKET_OPCODE_CONTINUATION",
    "WEBSOCKET_OPCODE_PING",
    "WEBSOCKET_OPCODE_PONG",
    "WEBSOCKET_OPCODE_TEXT",
    "App",
    "AppConf",
    "BytesBody",
    "ClientGone",
    "ControllerFunction",
    "Cookie",
    "Cookies",
    "Environment",
    "FilterContex",
    "FilterContext",
    "Header",
    "Headers",
    "HttpError",
    "HttpSession",
    "HttpSessionFactory",
    "JSONBody",
    "LocalSessionFactory",
    "ModelBinding",
    "ModelBindingConf",
    "ModelDict",
    "MultipartFile",
    "ParamStringValue",
    "Parameter",
    "Parameters",
    "PathValue",
    "Redirect",
    "RegGroup",
    "RegGroups",
    "Request",
    "RequestBodyReader",
    "Response",
    "Session",
    "SessionFactory",
    "StaticFile",
    "WebsocketCloseReason",
    "WebsocketException",
    "WebsocketHandler",
    "WebsocketHandlerClass",
    "WebsocketHandlerProxy",
    "WebsocketRequest",
    "WebsocketSession",
    "controller",
    "default_model_binding",
    "error_message",
    "filter_map",
    "get_app_conf",
    "get_logger",
    "model_binding",
    "name",
    "request",
    "request_filter",
    "request_map",
    "route",
    "set_session_factory",
    "version",
    "websocket_close",
    "websocket_handler",
    "websocket_handshake",
    "websocket_message",
    "websocket_open",
]
