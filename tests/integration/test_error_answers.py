"""Error answers and redirects in every front end (TestClient, threaded, asyncio,
WSGI, ASGI): the headers and cookies set on the response go out with them, as
0.22.x sent them, without breaking them; error pages get HTML-escaped text."""

from __future__ import annotations

import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import pytest

from simple_http_server import (
    App,
    FilterContext,
    Headers,
    HttpError,
    Redirect,
    Response,
)

from ..conftest import LogRecords

CORS = "Access-Control-Allow-Origin"
XSS = "<img src=x onerror=alert(1)>"
ESCAPED_XSS = "&lt;img src=x onerror=alert(1)&gt;"


def headers_app() -> App:
    app = App()

    @app.request_filter("/cors/**")
    def cors(ctx: FilterContext) -> None:
        ctx.response.set_header(CORS, "*")
        ctx.response.add_cookie("seen", "1")
        ctx.do_chain()

    @app.route("/cors/fail")
    def cors_fail() -> None:
        raise HttpError(400, "bad input")

    @app.route("/cors/async-fail")
    async def cors_async_fail(response: Response) -> None:
        response.set_header("X-Async", "1")
        raise HttpError(409, "taken")

    @app.route("/cors/crash")
    def cors_crash(response: Response) -> None:
        response.set_header("X-Before-Crash", "1")
        response.add_cookie("token", "half-done")
        raise RuntimeError("boom")

    @app.route("/login")
    def login(response: Response) -> None:
        response.add_cookie("token", "abc", path="/")
        response.set_header("X-Login", "1")
        response.set_header("Location", "/mine")  # the redirect's own Location wins
        response.set_header("Content-Type", "application/x-mine")
        response.send_redirect("/home")

    @app.route("/raise-redirect")
    def raise_redirect(response: Response) -> None:
        response.add_cookie("token", "abc")
        response.set_header("Location", "/mine")
        raise Redirect("/home")

    @app.route("/return-redirect")
    def return_redirect(response: Response) -> Redirect:
        response.add_cookie("token", "abc")
        response.set_header("Location", "/mine")
        return Redirect("/home")

    @app.route("/senderr")
    def senderr(response: Response) -> str:
        response.set_header("WWW-Authenticate", 'Basic realm="x"')
        response.add_cookie("token", "", max_age=0)
        # What describes the response's own body must not describe the error page.
        response.set_header("Content-Type", "application/x-mine")
        response.set_header("Content-Length", "999")
        response.set_header("Transfer-Encoding", "chunked")
        response.set_header("Content-Encoding", "gzip")
        response.send_error(401, "auth")
        return "ignored"

    @app.route("/raise401")
    def raise401(response: Response) -> None:
        response.add_header("WWW-Authenticate", 'Basic realm="x"')
        response.add_header("WWW-Authenticate", 'Bearer realm="y"')
        response.add_cookie("token", "", max_age=0)
        raise HttpError(401, "auth")

    @app.route("/bad-name-then-error")
    def bad_name_then_error(response: Response) -> None:
        response.set_header("Bad Name", "x")
        raise HttpError(401, "auth")

    @app.request_filter("/guarded/**")
    def guard(ctx: FilterContext) -> None:
        ctx.response.set_header("X-Guard", "1")
        if ctx.request.parameter.get("token") != "ok":
            ctx.response.send_error(403, "no token")
            return
        if ctx.request.parameter.get("go") == "raise":
            raise HttpError(418, "teapot")
        ctx.do_chain()

    @app.route("/guarded/page")
    def guarded_page() -> str:
        return "page"

    @app.route("/paged")
    def paged(response: Response) -> None:
        response.set_header("X-Page", "from the response")
        response.add_cookie("a", "response")
        raise HttpError(410, "gone")

    @app.error_message("410")
    def page_410(code: int, message: str) -> tuple[Any, ...]:
        return Headers({"X-Page": "from the page", "Set-Cookie": "b=page"}), f"{code} {message}"

    return app


def test_headers_and_cookies_go_out_with_error_answers(make_any_client) -> None:
    client = make_any_client(headers_app())
    fail = client.get("/cors/fail")
    assert fail.status == 400 and fail.get_all(CORS) == ["*"]
    assert fail.get_all("Set-Cookie") == ["seen=1"]
    assert fail.json() == {"code": 400, "message": "bad input", "explain": ""}
    conflict = client.get("/cors/async-fail")
    assert conflict.status == 409
    assert (conflict.header(CORS), conflict.header("X-Async")) == ("*", "1")
    for path in ("/senderr", "/raise401"):
        reply = client.get(path)
        assert reply.status == 401, path
        assert reply.get_all("WWW-Authenticate")[0] == 'Basic realm="x"', path
        assert reply.get_all("Set-Cookie") == ['token=""; Max-Age=0'], path
        assert reply.json() == {"code": 401, "message": "auth", "explain": ""}, path
    both = client.get("/raise401").get_all("WWW-Authenticate")
    assert both == ['Basic realm="x"', 'Bearer realm="y"']


def test_the_error_page_keeps_its_own_type_and_framing(make_any_client) -> None:
    reply = make_any_client(headers_app()).get("/senderr", headers={"Accept-Encoding": "gzip"})
    assert reply.status == 401
    assert reply.get_all("Content-Type") == ["application/json; charset=utf-8"]
    assert reply.get_all("Content-Length") == [str(len(reply.body))]
    assert reply.header("Transfer-Encoding") is None
    assert reply.header("Content-Encoding") is None
    assert reply.json()["code"] == 401


def test_an_error_page_overrides_the_headers_it_sets_itself(make_any_client) -> None:
    reply = make_any_client(headers_app()).get("/paged")
    assert (reply.status, reply.text) == (410, "410 gone")
    assert reply.get_all("X-Page") == ["from the page"]
    assert reply.get_all("Set-Cookie") == ["a=response", "b=page"]


def test_filters_answering_with_an_error_keep_their_headers(make_any_client) -> None:
    client = make_any_client(headers_app())
    refused = client.get("/guarded/page")
    assert refused.status == 403 and refused.header("X-Guard") == "1"
    raised = client.get("/guarded/page?token=ok&go=raise")
    assert raised.status == 418 and raised.header("X-Guard") == "1"
    served = client.get("/guarded/page?token=ok")
    assert (served.status, served.text, served.header("X-Guard")) == (200, "page", "1")


def test_redirects_keep_headers_and_cookies_but_their_own_location(make_any_client) -> None:
    client = make_any_client(headers_app())
    login = client.get("/login")
    assert login.status == 302
    assert login.get_all("Location") == ["/home"]
    assert login.header("X-Login") == "1"
    assert login.get_all("Set-Cookie") == ["token=abc; Path=/"]
    assert login.header("Content-Type") is None and login.body == b""
    for path in ("/raise-redirect", "/return-redirect"):
        reply = client.get(path)
        assert reply.status == 302, path
        assert reply.get_all("Location") == ["/home"], path
        assert reply.get_all("Set-Cookie") == ["token=abc"], path


def test_a_500_keeps_the_headers_but_not_the_cookies(
    make_any_client, log_records: LogRecords
) -> None:
    reply = make_any_client(headers_app()).get("/cors/crash")
    assert reply.status == 500
    assert reply.json() == {"code": 500, "message": "Internal Server Error", "explain": ""}
    assert (reply.header(CORS), reply.header("X-Before-Crash")) == ("*", "1")
    assert reply.get_all("Set-Cookie") == []
    assert any("/cors/crash" in r.getMessage() for r in log_records.records)


def test_an_invalid_header_name_kept_for_an_error_is_a_logged_500(
    make_any_client, log_records: LogRecords
) -> None:
    reply = make_any_client(headers_app()).get("/bad-name-then-error")
    assert reply.status == 500
    assert reply.json() == {"code": 500, "message": "Internal Server Error", "explain": ""}
    assert any("Bad Name" in r.getMessage() for r in log_records.records)


# -- the text an error page gets ------------------------------------------------
def escape_app() -> App:
    app = App()

    @app.error_message("404")
    def html_page(message: str, explain: str = "") -> str:
        return f"<html><body>message: {message}, explain: {explain}</body></html>"

    @app.route("/user")
    def user(uid: str) -> None:
        raise HttpError(404, "No such <user>", f"user {uid} does not exist")

    @app.route("/send")
    def send(response: Response, uid: str) -> None:
        response.send_error(404, f"<{uid}>", f'"{uid}" & more')

    @app.route("/default")
    def default(uid: str) -> None:
        raise HttpError(400, f"<{uid}>", f'"{uid}" & more')

    return app


def test_error_pages_get_html_escaped_text(make_any_client) -> None:
    client = make_any_client(escape_app())
    reply = client.get("/user?uid=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert reply.status == 404
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert XSS not in reply.text
    assert f"message: No such &lt;user&gt;, explain: user {ESCAPED_XSS} does not exist" in (
        reply.text
    )
    sent = client.get("/send?uid=b%26i")
    # quote=False, as 0.22.x: quotes stay, & < > are escaped.
    assert 'message: &lt;b&amp;i&gt;, explain: "b&amp;i" &amp; more' in sent.text


def test_the_default_error_body_is_json_of_the_escaped_text(make_any_client) -> None:
    reply = make_any_client(escape_app()).get("/default?uid=b%26i")
    assert reply.status == 400
    assert reply.header("Content-Type") == "application/json; charset=utf-8"
    explain = '"b&amp;i" &amp; more'
    assert reply.json() == {"code": 400, "message": "&lt;b&amp;i&gt;", "explain": explain}


def test_an_error_text_that_is_not_a_str_is_its_str(make_any_client) -> None:
    """``raise HttpError(400, "bad number", exc)`` answered a logged 500 (the text could
    not be escaped) instead of the 400 it names."""
    app = App()

    @app.route("/number")
    def number(n: str = "x") -> int:
        try:
            return int(n)
        except ValueError as exc:
            raise HttpError(400, "bad number", exc) from exc

    @app.route("/sent")
    def sent(response: Response) -> None:
        response.send_error(404, 123, None)  # type: ignore[arg-type]

    client = make_any_client(app)
    bad = client.get("/number?n=%3Cb%3E")
    assert bad.status == 400
    explain = "invalid literal for int() with base 10: '&lt;b&gt;'"
    assert bad.json() == {"code": 400, "message": "bad number", "explain": explain}
    assert client.get("/sent").json() == {"code": 404, "message": "123", "explain": ""}


def test_readme_login_example(make_any_client) -> None:
    """README "The injected Response": the login example, as written."""
    app = App()
    route = app.route

    def password_ok(user: str, password: str) -> bool:
        return (user, password) == ("ann", "secret")

    def new_token(user: str) -> str:
        return f"token-of-{user}"

    @route("/login", method="POST")
    def login(response: Response, user: str = "", password: str = ""):  # type: ignore[no-untyped-def]
        if not password_ok(user, password):  # your own check
            response.set_header("WWW-Authenticate", 'Basic realm="app"')
            raise HttpError(401)  # the 401 carries WWW-Authenticate
        response.add_cookie("token", new_token(user), path="/", httponly=True)
        response.send_redirect("/home")  # the 302 sets the cookie

    client = make_any_client(app)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    refused = client.post("/login", headers=form, body="user=ann&password=wrong")
    assert refused.status == 401
    assert refused.header("WWW-Authenticate") == 'Basic realm="app"'
    accepted = client.post("/login", headers=form, body="user=ann&password=secret")
    assert (accepted.status, accepted.header("Location")) == (302, "/home")
    assert accepted.get_all("Set-Cookie") == ["token=token-of-ann; HttpOnly; Path=/"]


def undecodable_app() -> App:
    app = App()

    @app.route("/user/{uid}")
    def user(uid: str) -> None:
        raise HttpError(404, "No such user", f"user {uid} does not exist")  # README's example

    @app.route("/bad/{uid}")
    def bad(uid: str, response: Response) -> None:
        response.send_error(400, f"bad {uid}")

    @app.route("/stream/{uid}")
    def stream(uid: str) -> Any:
        yield "id: "
        yield uid

    @app.route("/astream/{uid}")
    async def astream(uid: str) -> Any:
        async def pieces() -> Any:
            yield "id: "
            yield uid

        return pieces()

    return app


def test_undecodable_request_bytes_go_back_in_error_bodies_and_streams(make_any_client) -> None:
    """A path value holding a byte that is not UTF-8 (``%E9``, ``%FF``: a lone
    surrogate) went into JSON error bodies and streamed text as a 500
    (``UnicodeEncodeError``); it goes back as the same byte, as in ``str`` bodies."""
    client = make_any_client(undecodable_app())
    for raw, byte in (("caf%E9", b"caf\xe9"), ("%FF", b"\xff")):
        missing = client.get(f"/user/{raw}")
        assert missing.status == 404
        assert missing.body == (
            b'{"code": 404, "message": "No such user", "explain": "user %s does not exist"}' % byte
        )
        refused = client.get(f"/bad/{raw}")
        assert (refused.status, refused.body) == (
            400,
            b'{"code": 400, "message": "bad %s", "explain": ""}' % byte,
        )
        for path in (f"/stream/{raw}", f"/astream/{raw}"):
            streamed = client.get(path)
            assert (streamed.status, streamed.body) == (200, b"id: " + byte)


# -- a stream no answer sends is closed ----------------------------------------------
def unsent_streams_app(streams: list[Any], path: str) -> App:
    """Controllers return streams (generators, an open file) that a filter then replaces
    by an error answer or a redirect, or whose head cannot be sent; ``streams`` gets
    each stream returned."""
    app = App()

    def numbers() -> Iterator[str]:
        yield "never sent"

    async def async_numbers() -> AsyncIterator[str]:
        yield "never sent"

    def kept(stream: Any) -> Any:
        streams.append(stream)
        return stream

    @app.request_filter("/after/**")
    def refuse(ctx: FilterContext) -> None:
        ctx.do_chain()
        what = ctx.request.path.rsplit("/", 1)[1]
        if what == "send-error":
            ctx.response.send_error(403, "refused")
        elif what == "redirect":
            raise Redirect("/elsewhere")
        else:
            raise HttpError(403, "refused")

    @app.route("/after/raise")
    def generator() -> Iterator[str]:
        return kept(numbers())

    @app.route("/after/file")
    def file() -> IO[bytes]:
        return kept(open(path, "rb"))  # the answer closes it

    @app.route("/after/send-error")
    def in_tuple() -> tuple[Any, ...]:
        return 200, Headers({"X-Kind": "tuple"}), kept(numbers())

    @app.route("/after/redirect")
    async def async_generator() -> AsyncIterator[str]:
        return kept(async_numbers())

    @app.route("/bad-status")
    def bad_status() -> tuple[Any, ...]:
        return 999, kept(numbers())

    return app


def _closed(stream: Any) -> bool:
    if inspect.isgenerator(stream):
        return inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED
    if inspect.isasyncgen(stream):
        return stream.ag_frame is None
    return bool(stream.closed)


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/after/raise", 403),
        ("/after/file", 403),
        ("/after/send-error", 403),
        ("/after/redirect", 302),
        ("/bad-status", 500),
    ],
)
def test_a_stream_no_answer_sends_is_closed_with_its_request(
    make_any_client: Any, tmp_path: Any, url: str, status: int
) -> None:
    """A sent stream is closed once sent (a file closed, a generator's ``finally`` run);
    one that a filter's error, a redirect or an unsendable head replaced was dropped
    unclosed: an open file kept its descriptor (a generator its ``finally``) until the
    garbage collector came, which the error's traceback cycle puts off to a full
    collection."""
    target = tmp_path / "data.bin"
    target.write_bytes(b"x" * 100)
    streams: list[Any] = []
    client = make_any_client(unsent_streams_app(streams, str(target)))
    gc.disable()  # no collection closes them: only the request's end may
    try:
        for _ in range(3):
            assert client.get(url).status == status
    finally:
        gc.enable()
    assert [_closed(stream) for stream in streams] == [True] * 3
