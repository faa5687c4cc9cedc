"""Every controller, filter and error-page example of the seed README, run as written.

Each ``build_*`` function holds a README block verbatim except for its obvious typos
(noted inline); the module-level decorators are bound to a fresh ``App`` so tests stay
independent.  Every test runs through the TestClient and both real transports
(``make_client``).
"""

# ruff: noqa: UP031  (the README formats with %)

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from simple_http_server import (
    App,
    Cookie,
    Cookies,
    Header,
    Headers,
    HttpError,
    JSONBody,
    ModelDict,
    MultipartFile,
    Parameter,
    Parameters,
    PathValue,
    Redirect,
    RegGroup,
    RegGroups,
    Response,
    Session,
    StaticFile,
)

_ = (JSONBody, Parameters)  # imported by the README block, unused there
_logger = logging.getLogger("readme")


def build_controllers(app: App, root: str) -> None:
    """README "Write Controllers", first block."""
    request_map = route = app.request_map
    __logger = _logger  # README: a module-level ``__logger``

    @request_map("/index")
    def my_ctrl():
        return {"code": 0, "message": "success"}

    @route("/say_hello", method=["GET", "POST"])
    def my_ctrl2(name, name2=Parameter("name", default="KEIJACK"), model=ModelDict()):
        """name and name2 is the same"""
        assert name == name2
        assert name == model["name"]
        return "<!DOCTYPE html><html><body>hello, %s, %s</body></html>" % (name, name2)

    @request_map("/error")
    def my_ctrl3():
        return Response(status_code=500)

    @request_map("/exception")
    def exception_ctrl():
        raise HttpError(400, "Exception")

    @request_map("/upload", method="GET")
    def show_upload():
        return StaticFile("%s/my_dev/my_test_index.html" % root, "text/html; charset=utf-8")

    @request_map("/upload", method="POST")
    def my_upload(img=MultipartFile("img")):
        img.save_to_file(root + "/my_dev/imgs/" + img.filename)
        return "<!DOCTYPE html><html><body>upload ok!</body></html>"

    @request_map("/post_txt", method="POST")
    def normal_form_post(txt):
        return "<!DOCTYPE html><html><body>hi, %s</body></html>" % txt

    @request_map("/tuple")
    def tuple_results():
        return 200, Headers({"my-header": "headers"}), {"success": True}

    @request_map("tuple_cookie")
    def tuple_with_cookies(all_cookies=Cookies(), cookie_sc=Cookie("sc")):
        print(all_cookies, cookie_sc)
        import datetime

        expires = datetime.datetime(2018, 12, 31)
        cks = Cookies()
        cks["ck1"] = "keijack"  # README typo: `"keijack"request`
        cks["ck1"]["path"] = "/"
        cks["ck1"]["expires"] = expires.strftime(Cookies.EXPIRE_DATE_FORMAT)
        return Header({"xx": "yyy"}), cks, "<html><body>OK</body></html>"

    @request_map("/a/b/{path_val}/x")
    def my_path_val_ctr(path_val=PathValue()):
        return f"<html><body>{path_val}</body></html>"

    @request_map("/star/*")
    @request_map("*/star")
    def star_path(path_val=PathValue()):
        return f"<html><body>{path_val}</body></html>"

    @request_map("/star/**")
    @request_map("**/star")
    def star_path2(path_val=PathValue()):  # README reuses the name `star_path`
        return f"<html><body>{path_val}</body></html>"

    @request_map("/redirect")
    def redirect():
        return Redirect("/index")

    @request_map("session")
    def test_session(session=Session(), invalid=False):
        ins = session.get_attribute("in-session")
        if not ins:
            session.set_attribute("in-session", "Hello, Session!")
        __logger.info("session id: %s" % session.id)
        if invalid:
            __logger.info("session[%s] is being invalidated. " % session.id)
            session.invalidate()
        return "<!DOCTYPE html><html><body>%s</body></html>" % str(ins)

    async def say(sth: str = ""):
        _logger.info(f"Say: {sth}")
        return f"Success! {sth}"

    @request_map("/中文/coroutine")
    async def coroutine_ctrl(hey: str = "Hey!"):
        return await say(hey)

    @route("/res/write/bytes")
    def res_writer(response: Response):
        response.status_code = 200
        response.add_header("Content-Type", "application/octet-stream")
        response.write_bytes(b"abcd")
        response.write_bytes(bytearray(b"efg"))
        response.close()


def controllers_app(tmp_path: Path) -> App:
    app = App()
    (tmp_path / "my_dev" / "imgs").mkdir(parents=True)
    (tmp_path / "my_dev" / "my_test_index.html").write_text("<html>upload form</html>")
    build_controllers(app, str(tmp_path))
    return app


def test_index(make_client, tmp_path):
    reply = make_client(controllers_app(tmp_path)).get("/index")
    assert reply.status == 200
    assert reply.json() == {"code": 0, "message": "success"}


def test_say_hello_query_and_form(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    reply = client.get("/say_hello?name=Tom")
    assert reply.text == "<!DOCTYPE html><html><body>hello, Tom, Tom</body></html>"
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    form = client.post(
        "/say_hello",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="name=Ann+Lee",
    )
    assert form.text == "<!DOCTYPE html><html><body>hello, Ann Lee, Ann Lee</body></html>"


def test_error_and_exception(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    error = client.get("/error")
    assert error.status == 500 and error.body == b""
    exc = client.get("/exception")
    assert exc.status == 400
    assert exc.json() == {"code": 400, "message": "Exception", "explain": ""}
    assert exc.header("Content-Type") == "application/json; charset=utf-8"


def test_upload_page_and_upload(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    page = client.get("/upload")
    assert page.text == "<html>upload form</html>"
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="img"; filename="pic.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG-data\r\n"
        b"--XyZ--\r\n"
    )
    reply = client.post(
        "/upload", headers={"Content-Type": "multipart/form-data; boundary=XyZ"}, body=body
    )
    assert reply.text == "<!DOCTYPE html><html><body>upload ok!</body></html>"
    assert (tmp_path / "my_dev" / "imgs" / "pic.png").read_bytes() == b"\x89PNG-data"


def test_post_txt(make_client, tmp_path):
    reply = make_client(controllers_app(tmp_path)).post(
        "/post_txt",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="txt=%E4%BD%A0%E5%A5%BD",
    )
    assert reply.text == "<!DOCTYPE html><html><body>hi, 你好</body></html>"


def test_tuple_results(make_client, tmp_path):
    reply = make_client(controllers_app(tmp_path)).get("/tuple")
    assert reply.status == 200
    assert reply.header("my-header") == "headers"
    assert reply.json() == {"success": True}


def test_tuple_with_cookies(make_client, tmp_path):
    reply = make_client(controllers_app(tmp_path)).get(
        "/tuple_cookie", headers={"Cookie": "sc=1; other=2"}
    )
    assert reply.status == 200
    assert reply.header("xx") == "yyy"  # the README's Header({...}) is sent (defect 36)
    assert reply.get_all("Set-Cookie") == [
        "ck1=keijack; expires=Mon, 31 Dec 2018 00:00:00 GMT; Path=/"
    ]
    assert reply.text == "<html><body>OK</body></html>"


def test_path_values_and_wildcards(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    expected = {
        "/a/b/xyz/x": "xyz",
        "/star/c": "c",
        "/c/star": "c",
        "/star/c/d": "c/d",
        "/c/d/star": "c/d",
    }
    for path, value in expected.items():
        reply = client.get(path)
        assert (reply.status, reply.text) == (200, f"<html><body>{value}</body></html>"), path


def test_redirect(make_client, tmp_path):
    reply = make_client(controllers_app(tmp_path)).get("/redirect")
    assert reply.status == 302 and reply.header("Location") == "/index"


def test_session(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    first = client.get("/session")
    assert first.text == "<!DOCTYPE html><html><body>None</body></html>"
    second = client.get("/session?invalid=true")
    assert second.text == "<!DOCTYPE html><html><body>Hello, Session!</body></html>"
    third = client.get("/session")
    assert third.text == "<!DOCTYPE html><html><body>None</body></html>"


def test_coroutine_with_chinese_path(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    path = "/%E4%B8%AD%E6%96%87/coroutine"
    assert client.get(path).text == "Success! Hey!"
    assert client.get(path + "?hey=you").text == "Success! you"


def test_write_bytes_streams_chunked(make_client, tmp_path):
    client = make_client(controllers_app(tmp_path))
    reply = client.get("/res/write/bytes")
    assert reply.status == 200
    assert reply.body == b"abcdefg"
    assert reply.header("Content-Type") == "application/octet-stream"
    if client.front_end != "dispatch":
        assert reply.header("Transfer-Encoding") == "chunked"


# -- annotations and narrowing ---------------------------------------------------------
def build_annotated(app: App) -> None:
    """README "Write Controllers", second block."""
    request_map, request = app.request_map, app.request
    hits: list[str] = []

    @request_map("/say_hello/to/{name}", method=["GET", "POST", "PUT"])
    def your_ctroller_function(
        user_name: str,
        password: str,
        skills: list,
        all_headers: Headers,
        user_token: Header,
        all_cookies: Cookies,
        user_info: Cookie,
        name: PathValue,
        session: Session,
    ):
        assert all_headers["user_token"] == user_token
        assert all_cookies["user_info"].value == user_info.value
        assert session is not None
        return (
            f"<html><body>{name}:{user_name}:{password}:{','.join(skills)}:"
            f"{user_token}:{user_info.value}</body></html>"
        )

    @request("/exact_params", method="GET", params="a=b")
    def exact_params(a: str):
        hits.append("a=b")
        return {"result": "ok"}

    @request("/exact_params", method="GET", params="a!=b")
    def exact_not_params(a: str):
        hits.append("a!=b")
        return {"result": "ok"}

    @request("/exact_params", method="GET", params="a^=b")
    def exact_startwith_params(a: str):
        hits.append("a^=b")
        return {"result": "ok"}

    @request("/exact_params", method="GET", params="!a")
    def no_params():
        hits.append("!a")
        return {"result": "ok"}

    @request("/exact_params", method="GET", params="a")
    def must_has_params():
        hits.append("a")
        return {"result": "ok"}

    @request("/exact_params", method="GET", params=["a=b", "c!=d"])
    def multipul_params():
        hits.append("a=b&c!=d")
        return {"result": "ok"}

    @request(
        "/exact_params", method="GET", params=["a=b", "c!=d"], match_all_params_expressions=False
    )
    def multipul_params2():
        hits.append("a=b|c!=d")
        return {"result": "ok"}

    app.hits = hits  # type: ignore[attr-defined]


def test_annotated_arguments(make_client):
    app = App()
    build_annotated(app)
    client = make_client(app)
    reply = client.get(
        "/say_hello/to/keijack?user_name=u&password=p&skills=a&skills=b",
        headers={"user_token": "tok", "Cookie": "user_info=info"},
    )
    assert reply.status == 200
    assert reply.text == "<html><body>keijack:u:p:a,b:tok:info</body></html>"


def test_annotated_arguments_missing_values_are_400(make_client):
    app = App()
    build_annotated(app)
    client = make_client(app)
    base = "/say_hello/to/k?user_name=u&password=p&skills=a"
    cases = {
        "/say_hello/to/k?password=p&skills=a": "user_name",
        "/say_hello/to/k?user_name=u&password=p": "skills",
    }
    for path, name in cases.items():
        reply = client.get(path, headers={"user_token": "t", "Cookie": "user_info=i"})
        assert reply.status == 400 and f"[{name}]" in reply.json()["explain"], path
    no_header = client.get(base, headers={"Cookie": "user_info=i"})
    assert no_header.status == 400 and "[user_token]" in no_header.json()["explain"]
    no_cookie = client.get(base, headers={"user_token": "t"})
    assert no_cookie.status == 400 and "[user_info]" in no_cookie.json()["explain"]


def test_params_narrowing(make_client):
    app = App()
    build_annotated(app)
    client = make_client(app)
    hits: list[str] = app.hits  # type: ignore[attr-defined]
    cases = [
        ("?a=b", "a=b|c!=d"),  # last registered is tried first
        ("?c=x", "a=b|c!=d"),
        ("?a=x&c=d", "a"),
        ("?c=d", "!a"),
    ]
    for query, expected in cases:
        hits.clear()
        reply = client.get("/exact_params" + query)
        assert reply.json() == {"result": "ok"}
        assert hits == [expected], query


# -- class controllers ----------------------------------------------------------------
def build_class_plain(app: App) -> None:
    request_map = app.request_map

    class MyController:
        instances = 0

        def __init__(self) -> None:
            MyController.instances += 1
            self._name = f"ctr object {MyController.instances}"

        @request_map("/obj/say_hello", method="GET")
        def my_ctrl_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}


def build_class_singleton(app: App) -> None:
    request_map, controller = app.request_map, app.controller

    @controller
    class MyController:
        instances = 0

        def __init__(self) -> None:
            MyController.instances += 1
            self._name = f"ctr object {MyController.instances}"

        @request_map("/obj/say_hello", method="GET")
        def my_ctrl_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}


def test_plain_class_gets_a_new_instance_per_request(make_client):
    app = App()
    build_class_plain(app)
    client = make_client(app)
    first = client.get("/obj/say_hello?name=a").json()["message"]
    second = client.get("/obj/say_hello?name=a").json()["message"]
    assert first == "hello, a, ctr object 1 says. "
    assert second == "hello, a, ctr object 2 says. "


def test_controller_class_is_a_singleton(make_client):
    app = App()
    build_class_singleton(app)
    client = make_client(app)
    for _ in range(2):
        reply = client.get("/obj/say_hello?name=a")
        assert reply.json() == {"message": "hello, a, ctr object 1 says. "}


def build_class_prefix(app: App) -> None:
    request_map, controller = app.request_map, app.controller

    @controller
    @request_map("/obj", method="GET")
    class MyController:
        def __init__(self) -> None:
            self._name = "ctr object"

        @request_map
        def my_ctrl_default_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}

        @request_map("/say_hello", method=("GET", "POST"))
        def my_ctrl_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}


def test_class_prefix_and_default_method(make_client):
    app = App()
    build_class_prefix(app)
    client = make_client(app)
    assert client.get("/obj?name=a").json() == {"message": "hello, a, ctr object says. "}
    assert client.post("/obj?name=a").status == 405  # the class method (GET) applies
    posted = client.post(
        "/obj/say_hello",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="name=b",
    )
    assert posted.json() == {"message": "hello, b, ctr object says. "}


def build_class_args(app: App) -> None:
    request_map, controller, route = app.request_map, app.controller, app.route

    @controller(args=["ctr_name"], kwargs={"desc": "this is a key word argument"})
    @request_map("/obj", method="GET")  # regexp do not work here, method will still available
    class MyController:
        def __init__(self, name, desc="") -> None:
            self._name = f"ctr[{name}] - {desc}"

        @request_map
        def my_ctrl_default_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}

        @route(regexp="^(reg/(.+))$")
        def my_ctrl_mth(self, name: str):
            return {"message": f"hello, {name}, {self._name} says. "}


def test_controller_args_and_regexp_method(make_client):
    app = App()
    build_class_args(app)
    client = make_client(app)
    expected = {"message": "hello, a, ctr[ctr_name] - this is a key word argument says. "}
    assert client.get("/obj?name=a").json() == expected
    # the regexp ignores the /obj prefix but keeps the class' GET
    assert client.get("/reg/x/y?name=a").json() == expected
    assert client.post("/reg/x/y?name=a").status == 405
    assert client.get("/obj/reg/x?name=a").status == 404


def build_regexp(app: App) -> list[Any]:
    route = app.route
    seen: list[Any] = []

    @route(regexp="^(reg/(.+))$", method="GET")
    def my_reg_ctr(reg_groups: RegGroups, reg_group: RegGroup = RegGroup(1)):
        seen.append((reg_groups, reg_group))
        return f"{reg_group.group},{reg_group}"  # README typo: `self._name` in a function

    return seen


def test_regexp_groups(make_client):
    app = App()
    seen = build_regexp(app)
    reply = make_client(app).get("/reg/abcef/aref/xxx")
    assert reply.text == "1,abcef/aref/xxx"
    assert seen == [(("reg/abcef/aref/xxx", "abcef/aref/xxx"), "abcef/aref/xxx")]


# -- error pages ----------------------------------------------------------------------
def build_error_pages(app: App) -> None:
    error_message = app.error_message

    @error_message("403", "404")
    def my_40x_page(message: str, explain=""):
        return f"""
    <html>
        <head>
            <title>发生错误！</title>
        <head>
        <body>
            message: {message}, explain: {explain}
        </body>
    </html>
    """

    @error_message("40x", "50x")
    def my_error_message(code, message, explain=""):
        return f"{code}-{message}-{explain}"

    @error_message
    def my_error_message2(code, message, explain=""):  # README reuses the name
        return f"{code}-{message}-{explain}"

    @app.route("/raise/{code}")
    def raise_code(code: PathValue):
        raise HttpError(int(code), "msg", "why")


def test_error_pages(make_client):
    app = App()
    build_error_pages(app)
    client = make_client(app)
    missing = client.get("/nothing")
    assert missing.status == 404
    assert "<title>发生错误！</title>" in missing.text
    assert (
        "message: Controller Not Found, explain: Cannot find a controller for your path\n"
        in missing.text
    )
    assert missing.header("Content-Type") == "text/html; charset=utf-8"
    forbidden = client.get("/raise/403")
    assert forbidden.status == 403 and "message: msg, explain: why" in forbidden.text
    for code in (400, 418, 500, 503):  # "40x"/"50x" cover their whole class
        reply = client.get(f"/raise/{code}")
        assert (reply.status, reply.text) == (code, f"{code}-msg-why")
    teapot = client.get("/raise/302")
    assert (teapot.status, teapot.text) == (302, "302-msg-why")  # the catch-all


def test_a_40x_page_covers_the_whole_class(make_client):
    """README: ``"40x"`` covers 400-499, as ``"4xx"`` does.  In ``test_error_pages`` the
    catch-all answers with the same text, so 418 reaching it could not be told apart."""
    app = App()

    @app.error_message("40x")
    def forty(code, message, explain=""):
        return f"40x page {code}"

    @app.route("/raise/{code}")
    def raise_code(code: PathValue):
        raise HttpError(int(code), "msg", "why")

    client = make_client(app)
    for code in (400, 409, 418, 451):
        assert client.get(f"/raise/{code}").text == f"40x page {code}"
    assert client.get("/raise/500").json()["code"] == 500  # the default page


# -- filters --------------------------------------------------------------------------
def build_filters(app: App, calls: list[str]) -> None:
    request_filter = app.request_filter

    @request_filter("/tuple/**")
    @request_filter(regexp="^/tuple")
    def filter_tuple(ctx):
        calls.append(ctx.request.path)
        ctx.request.headers["filter-set"] = "through filter"
        ctx.request.parameter["via"] = "filter"
        if "user_name" not in ctx.request.parameter:
            ctx.response.send_redirect("/index")
        elif "pass" not in ctx.request.parameter:
            ctx.response.send_error(400, "pass should be passed")
        else:
            ctx.do_chain()

    @app.route("/tuple/**")
    @app.route("/tuple")
    def tuple_ctrl(via: str, filter_set=Header("filter-set")):
        return {"filter-set": filter_set, "via": via}


def test_filter_redirect_error_and_chain(make_client):
    app = App()
    calls: list[str] = []
    build_filters(app, calls)
    client = make_client(app)
    redirect = client.get("/tuple")
    assert redirect.status == 302 and redirect.header("Location") == "/index"
    error = client.get("/tuple?user_name=a")
    assert error.status == 400
    assert error.json()["message"] == "pass should be passed"
    ok = client.get("/tuple/x/y?user_name=a&pass=b")
    assert ok.json() == {"filter-set": "through filter", "via": "filter"}
    # the filter is registered for both patterns but runs once per request
    assert calls == ["/tuple", "/tuple", "/tuple/x/y"]


def test_static_file_missing_is_404(make_client, tmp_path):
    app = App()

    @app.route("/file")
    def file():
        return StaticFile(os.path.join(str(tmp_path), "absent.bin"))

    assert make_client(app).get("/file").status == 404
