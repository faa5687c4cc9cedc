"""User code in the style of the README and the original's, for ``mypy --strict``.

Not run: ``tests/unit/test_typing.py`` type-checks it.  ``assert_type`` on a call's
result fails when a decorator turned the function into ``Any``; a
``# type: ignore[arg-type]`` that mypy finds unused (``--strict`` warns of it) fails
when a decorator lost the function's parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import make_server

from typing_extensions import assert_type

from simple_http_server import (
    WEBSOCKET_MESSAGE_TEXT,
    App,
    BytesBody,
    Cookie,
    Cookies,
    FilterContext,
    Header,
    Headers,
    HttpError,
    JSONBody,
    ModelBinding,
    MultipartFile,
    Parameter,
    PathValue,
    Redirect,
    RegGroup,
    RegGroups,
    Request,
    Response,
    Session,
    WebsocketCloseReason,
    WebsocketHandler,
    WebsocketRequest,
    WebsocketSession,
    controller,
    default_model_binding,
    error_message,
    filter_map,
    model_binding,
    request_filter,
    request_map,
    route,
    server,
    websocket_close,
    websocket_handler,
    websocket_message,
    websocket_open,
)
from simple_http_server.adapters.asgi import ASGIProxy
from simple_http_server.adapters.wsgi import WSGIProxy
from simple_http_server.testing import TestClient, TestResponse


@request_map("/index", method=["GET", "POST"])
def my_controller(
    user_name: str,
    password: Parameter = Parameter("pass", default="x"),
    user_agent: Header = Header("User-Agent"),
    headers: Headers = Headers(),
    cookie: Cookie = Cookie("ck"),
    cookies: Cookies = Cookies(),
    body: JSONBody = JSONBody(),
    raw: BytesBody = BytesBody(),
    request: Request = Request(),
    session: Session = Session(),
    response: Response = Response(),
    img: MultipartFile | None = None,
) -> tuple[int, dict[str, str], str]:
    session.set_attribute("seen", body.get("a"))
    response.set_header("X-A", raw.decode())
    return 200, {"X-B": request.path}, f"{user_name}{password}{user_agent}{cookie}"


@route("/user/{uid}")
async def user(uid: PathValue, groups: RegGroups) -> Redirect:
    raise HttpError(404, "No such user", f"user {uid} does not exist")


@route(regexp="^(reg/(.+))$")
def by_regexp(group: RegGroup = RegGroup(1)) -> str:
    return group


class Plain:
    @request_map("/obj/say_hello", method="GET")
    def hello(self, name: str) -> dict[str, str]:
        return {"message": f"hello, {name}"}


@controller(args=["ctr_name"], kwargs={"desc": "a keyword argument"})
@request_map("/obj", method="GET")
class Singleton:
    def __init__(self, name: str, desc: str = "") -> None:
        self.name = f"{name} - {desc}"

    @request_map
    def default(self, name: str) -> str:
        return name


@controller
class BareController:
    pass


@request_filter("/tuple/**")
@request_filter(regexp="^/tuple")
def filter_tuple(ctx: FilterContext) -> None:
    ctx.request.headers["filter-set"] = "through filter"
    ctx.do_chain()


@request_filter
def every_path(ctx: FilterContext) -> None:
    ctx.do_chain()


@request_filter("/api/**")
async def timing(ctx: FilterContext) -> None:
    await ctx.do_chain()


@filter_map("^/old")
def old_filter(ctx: FilterContext) -> None:
    ctx.do_chain()


@error_message("403", "404")
def my_40x_page(message: str, explain: str = "") -> str:
    return f"{message} {explain}"


@error_message
def all_errors(code: int, message: str, explain: str = "") -> dict[str, Any]:
    return {"error": code, "why": explain}


@websocket_handler(endpoint="/ws/{room}")
class ChatHandler(WebsocketHandler):
    def on_handshake(self, request: WebsocketRequest) -> tuple[int, dict[str, str]]:
        return 0, {"X-Room": request.path_values["room"]}

    def on_text_message(self, session: WebsocketSession, message: str) -> None:
        session.send(message.upper())


@websocket_open(endpoint="/ws-fun/{path_val}")
def ws_open(session: WebsocketSession) -> None:
    session.send("hi")


@websocket_message(endpoint="/ws-fun/{path_val}", message_type=WEBSOCKET_MESSAGE_TEXT)
async def ws_text(session: WebsocketSession, message: str) -> None:
    session.close("bye")


@websocket_close(endpoint="/ws-fun/{path_val}")
def ws_close(session: WebsocketSession, reason: WebsocketCloseReason) -> None:
    print(reason.code)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@model_binding(Point)
class PointBinding(ModelBinding):
    async def bind(self) -> Point:
        x, y = str(self.request.parameter[self.arg_name]).split(",")
        return Point(int(x), int(y))


@default_model_binding
class Fallback(ModelBinding):
    def bind(self) -> Any:
        return self.default_value


app = App()


@app.route("/hello", method=["GET", "POST"])
def hello(name: str = "world") -> dict[str, str]:
    return {"hello": name}


async def check(
    ctx: FilterContext, session: WebsocketSession, reason: WebsocketCloseReason
) -> None:
    assert_type(my_controller("u"), tuple[int, dict[str, str], str])
    assert_type(await user(PathValue(), RegGroups()), Redirect)
    assert_type(Plain().hello("x"), dict[str, str])
    assert_type(Singleton("a").default("b"), str)
    assert_type(BareController(), BareController)
    assert_type(filter_tuple(ctx), None)
    assert_type(every_path(ctx), None)
    assert_type(await timing(ctx), None)
    assert_type(old_filter(ctx), None)
    assert_type(my_40x_page("m"), str)
    assert_type(all_errors(404, "m"), dict[str, Any])
    assert_type(ChatHandler(), ChatHandler)
    assert_type(ws_open(session), None)
    assert_type(await ws_text(session, "m"), None)
    assert_type(ws_close(session, reason), None)
    assert_type(PointBinding, type[PointBinding])
    assert_type(Fallback, type[Fallback])
    assert_type(hello(), dict[str, str])
    my_40x_page(404)  # type: ignore[arg-type]
    filter_tuple("ctx")  # type: ignore[arg-type]


def test_hello() -> None:
    client = TestClient(app)
    reply = client.get("/hello", params={"name": "you"})
    client.post("/hello", data={"name": "form"}, headers=[("X-A", "1"), ("X-A", "2")])
    client.put("/hello", json={"a": 1}, cookies={"k": "v"})
    client.post("/up", files={"img": ("a.png", b"...", "image/png")}, body=b"")
    client.get("/hello", param={"name": "typo"})  # type: ignore[call-arg]
    client.delete("/hello", headers=1)  # type: ignore[arg-type]
    assert_type(reply, TestResponse)
    assert_type(reply.status_code, int)
    with TestClient(app).websocket_connect("/ws/lobby") as ws:
        ws.send_text("hi")
        assert_type(ws.receive_text(), str)


def main() -> None:
    server.start(host="127.0.0.1", port=9090, resources={"/s/*": "/tmp"}, app_conf=app)
    server.start("", 8080, prefer_coroutine=True, workers=2, keep_alive_max_request=100)
    server.start(max_body_size=16e6, gzip_content_types="text/html, text/css", worker_threads=8)
    server.start(session_cookie_name="SID", session_timeout=600, connection_idle_time=30)
    server.start(certfile="c.pem", keyfile="k.pem", keypass=lambda: "secret", ssl=True)
    server.start(prot=9090)  # type: ignore[call-arg]
    server.start(port="9090")  # type: ignore[arg-type]
    assert_type(server.is_ready(), bool)


async def main_async() -> None:
    await server.start_async(prefer_coroutine=True, workers=1, idle_timeout=5)
    await server.start_async(prefer_coroutines=True)  # type: ignore[call-arg]


def deploy(asgi_proxy: server.ASGIProxy, wsgi_proxy: server.WSGIProxy) -> None:
    assert_type(asgi_proxy, ASGIProxy)  # the original's names, from its server module
    assert_type(wsgi_proxy, WSGIProxy)
    wsgi_app = server.init_wsgi_proxy(app_conf=app)
    assert_type(wsgi_app, WSGIProxy)
    make_server("127.0.0.1", 8080, wsgi_app).serve_forever()  # a typeshed WSGIApplication
    asgi_app = server.init_asgi_proxy(resources={"/public/**": "/srv"})
    assert_type(asgi_app, ASGIProxy)


wsgi_proxy = server.init_wsgi_proxy(resources={"/public/*": "/srv"}, max_body_size=1 << 20)
asgi_proxy = server.init_asgi_proxy(gzip_content_types=["text/"], access_log=True)
server.init_asgi_proxy(keep_alive_max_request=10)  # type: ignore[call-arg]


def simple_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    return wsgi_proxy.app_proxy(environ, start_response)


async def async_simple_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return await wsgi_proxy.async_app_proxy(environ, start_response)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asgi_proxy.app_proxy(scope, receive, send)
    await asgi_proxy(scope, receive, send)
