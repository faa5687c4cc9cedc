"""Parameter injection: every marker, annotation and binder, through the TestClient."""

# ruff: noqa: UP006, UP035, UP045  (the README's typing spellings on purpose)

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import pytest

from simple_http_server import (
    App,
    BytesBody,
    Cookie,
    Cookies,
    Environment,
    Header,
    Headers,
    JSONBody,
    ModelBinding,
    ModelDict,
    MultipartFile,
    Parameter,
    Parameters,
    PathValue,
    RegGroup,
    RegGroups,
    Request,
    RequestBodyReader,
    Response,
    Session,
)
from simple_http_server.dispatch.binding import plan_binding
from simple_http_server.testing import TestClient


def client_for(register: Any) -> TestClient:
    app = App()
    register(app)
    return TestClient(app)


def get_json(client: TestClient, path: str, **kwargs: Any) -> Any:
    reply = client.get(path, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


# -- plain names and annotations --------------------------------------------------------
def _annotations(app: App) -> None:
    @app.route("/ann")
    def ann(
        s: str,
        i: int,
        f: float,
        b: bool,
        items: list,
        ints: List[int],
        d: dict,
        strs: List[str] = [],
        opt: Optional[int] = None,
        typed: int | None = None,
    ) -> dict[str, Any]:
        return {
            "s": s,
            "i": i,
            "f": f,
            "b": b,
            "items": items,
            "ints": ints,
            "d": d,
            "strs": strs,
            "opt": opt,
            "typed": typed,
        }

    @app.route("/kw")
    def kw(a=1, b=2.5, c=True, d="x", e: Dict[str, int] = {}) -> dict[str, Any]:
        return {"a": a, "b": b, "c": c, "d": d, "e": e}


def test_annotations_convert() -> None:
    client = client_for(_annotations)
    query = {
        "s": "text",
        "i": "3",
        "f": "1.5",
        "b": "false",
        "items": ["x", "y"],
        "ints": ["1", "2"],
        "d": '{"k": 1}',
        "strs": ["p"],
        "opt": "7",
        "typed": "8",
    }
    assert get_json(client, "/ann", params=query) == {
        "s": "text",
        "i": 3,
        "f": 1.5,
        "b": False,
        "items": ["x", "y"],
        "ints": [1, 2],
        "d": {"k": 1},
        "strs": ["p"],
        "opt": 7,
        "typed": 8,
    }


@pytest.mark.parametrize(
    ("value", "expected"), [("0", False), ("FALSE", False), ("", False), ("yes", True)]
)
def test_bool_values(value: str, expected: bool) -> None:
    client = client_for(_annotations)
    assert get_json(client, "/kw", params={"c": value})["c"] is expected


def test_keyword_defaults_give_the_type() -> None:
    client = client_for(_annotations)
    assert get_json(client, "/kw") == {"a": 1, "b": 2.5, "c": True, "d": "x", "e": {}}
    assert get_json(client, "/kw", params={"a": "5", "b": "1", "e": '{"z": 2}'}) == {
        "a": 5,
        "b": 1.0,
        "c": True,
        "d": "x",
        "e": {"z": 2},
    }


@pytest.mark.parametrize(
    ("query", "message", "explain"),
    [  # the original's texts, word for word (trailing spaces and "an float" included)
        ({"i": "abc"}, "Bad Request", "Parameter[i] should be an int. "),
        ({"f": "x"}, "Bad Request", "Parameter[f] should be an float. "),
        ({"ints": ["1", "z"]}, "Bad Request", "One of the parameter[ints] is not int. "),
        ({"d": "{not json"}, "Bad Request", "Parameter[d] should be a JSON string."),
        # valid JSON, but not an object (the original passed it on)
        ({"d": "[1, 2]"}, "Bad Request", "Parameter[d] should be a JSON object."),
        ({"d": "null"}, "Bad Request", "Parameter[d] should be a JSON object."),
        ({"i": None}, "Missing Parameter", "Parameter[i] is required."),
        ({"items": None}, "Missing Parameter", "Parameter[items] is required."),
    ],
)
def test_bad_or_missing_values_are_400(query: dict[str, Any], message: str, explain: str) -> None:
    good = {"s": "a", "i": "1", "f": "1", "b": "1", "items": "a", "ints": "1", "d": "{}"}
    good.update(query)
    params = {k: v for k, v in good.items() if v is not None}
    reply = client_for(_annotations).get("/ann", params=params)
    assert reply.status_code == 400
    assert reply.json() == {"code": 400, "message": message, "explain": explain}


# -- markers ------------------------------------------------------------------------------
def _markers(app: App) -> None:
    @app.route("/param")
    def param(
        a=Parameter("other", default="dflt"),
        req=Parameter("r", required=True),
        many=Parameters("m"),
        num: int = Parameter("n", default="4"),
    ) -> dict[str, Any]:
        return {"a": a, "req": req, "many": many, "num": num}

    @app.route("/header")
    def header(
        user_token: Header,
        x=Header("X-Custom", default="none"),
        must=Header("X-Must", required=True),
        all_headers=Headers(),
    ) -> dict[str, Any]:
        return {"token": user_token, "x": x, "must": must, "host": all_headers["host"]}

    @app.route("/cookie")
    def cookie(
        user_info: Cookie,
        sc=Cookie("sc", default="d"),
        must=Cookie("m", required=True),
        jar=Cookies(),
    ) -> dict[str, Any]:
        return {"info": user_info.value, "sc": sc.value, "must": must.value, "jar": sorted(jar)}

    @app.route("/items/{item_id}/{other}")
    def path_values(item_id: PathValue, renamed=PathValue("other")) -> dict[str, Any]:
        return {"id": item_id, "other": renamed}

    @app.route("/files/**")
    def wildcard(rest=PathValue()) -> str:
        return rest

    @app.route(regexp=r"^/re/(\w+)/(\d+)$")
    def regexp(groups: RegGroups, first: RegGroup, second=RegGroup(1)) -> dict[str, Any]:
        return {"groups": list(groups), "first": first, "second": second}

    @app.route(regexp=r"^/re-out/(\w+)$")
    def out_of_range(group=RegGroup(5)) -> str:
        return group

    @app.route(regexp=r"^/re-next/(\w+)$")
    def just_past_the_end(group=RegGroup(1)) -> str:  # one group: index 0 only
        return group

    @app.route("/model")
    def model(m=ModelDict(), env=Environment()) -> dict[str, Any]:
        return {"m": m, "env": env}

    @app.route("/request")
    def request(req: Request, res: Response) -> dict[str, Any]:
        res.set_header("X-Res", "yes")
        return {
            "method": req.method,
            "path": req.path,
            "query": req.query_string,
            "host": req.host,
            "ct": req.content_type,
            "cl": req.content_length,
            "parameter": req.parameter,
            "parameters": req.parameters,
            "get": req.get_parameter("a"),
        }


def test_parameter_markers() -> None:
    client = client_for(_markers)
    assert get_json(client, "/param", params={"r": "1"}) == {
        "a": "dflt",
        "req": "1",
        "many": [],
        "num": 4,
    }
    assert get_json(
        client, "/param", params={"r": "1", "other": "o", "m": ["1", "2"], "n": "9"}
    ) == {"a": "o", "req": "1", "many": ["1", "2"], "num": 9}
    missing = client.get("/param")
    assert missing.status_code == 400 and "Parameter[r]" in missing.json()["explain"]


def test_header_markers() -> None:
    client = client_for(_markers)
    headers = {"user_token": "tok", "x-must": "m"}
    assert get_json(client, "/header", headers=headers) == {
        "token": "tok",
        "x": "none",
        "must": "m",
        "host": "testserver",
    }
    # header names ignore case; ``user_token`` also finds ``User-Token``
    got = get_json(client, "/header", headers={"User-Token": "t2", "X-CUSTOM": "c", "X-Must": "m"})
    assert (got["token"], got["x"]) == ("t2", "c")
    missing = client.get("/header", headers={"user_token": "t"})
    assert missing.status_code == 400 and "Header[X-Must]" in missing.json()["explain"]


def test_cookie_markers() -> None:
    client = client_for(_markers)
    got = get_json(client, "/cookie", headers={"Cookie": "user_info=i; m=1"})
    assert got == {"info": "i", "sc": "d", "must": "1", "jar": ["m", "user_info"]}
    missing = client.get("/cookie", headers={"Cookie": "user_info=i"})
    assert missing.status_code == 400 and "Cookie[m]" in missing.json()["explain"]
    positional = client.get("/cookie", headers={"Cookie": "m=1"})
    assert positional.status_code == 400 and "Cookie[user_info]" in positional.json()["explain"]


def test_path_values_decoded_once() -> None:
    client = client_for(_markers)
    assert get_json(client, "/items/a%20b/%2541") == {"id": "a b", "other": "%41"}
    assert client.get("/files/a/b/c.txt").text == "a/b/c.txt"


def test_reg_groups() -> None:
    client = client_for(_markers)
    assert get_json(client, "/re/abc/42") == {
        "groups": ["abc", "42"],
        "first": "abc",
        "second": "42",
    }
    assert client.get("/re-out/x").status_code == 400
    assert client.get("/re-next/x").status_code == 400


def test_model_dict_and_environment() -> None:
    client = client_for(_markers)
    assert get_json(client, "/model", params={"a": "1", "b": ["2", "3"]}) == {
        "m": {"a": "1", "b": ["2", "3"]},
        "env": {},
    }


def test_request_and_response_objects() -> None:
    client = client_for(_markers)
    reply = client.post(
        "/request?a=1&a=2",
        body="x=3",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.headers["X-Res"] == "yes"
    assert reply.json() == {
        "method": "POST",
        "path": "/request",
        "query": "a=1&a=2",
        "host": "testserver",
        "ct": "application/x-www-form-urlencoded",
        "cl": 3,
        "parameter": {"x": "3", "a": "1"},
        "parameters": {"x": ["3"], "a": ["1", "2"]},
        "get": "1",
    }


# -- bodies -------------------------------------------------------------------------------
def _bodies(app: App) -> None:
    @app.route("/json", method="POST")
    def json_body(data=JSONBody()) -> Any:
        return {"got": data}

    @app.route("/json-ann", method="POST")
    def json_ann(data: JSONBody) -> Any:
        return {"got": data}

    @app.route("/bytes", method="POST")
    def raw(data: BytesBody) -> bytes:
        return bytes(data)

    @app.route("/reader", method="POST")
    async def reader(r: RequestBodyReader) -> bytes:
        first = await r.read(2)
        rest = await r.read()
        return first + b"|" + rest

    @app.route("/upload", method="POST")
    def upload(f=MultipartFile("f"), g: MultipartFile = None, note: str = "") -> Any:
        return {
            "name": f.name,
            "filename": f.filename,
            "type": f.content_type,
            "content": f.content.decode(),
            "g": [type(g).__name__, g.name, g.is_empty],  # absent: empty, as in the original
            "note": note,
        }


def test_json_body() -> None:
    client = client_for(_bodies)
    for path in ("/json", "/json-ann"):
        assert client.post(path, json={"a": [1]}).json() == {"got": {"a": [1]}}


def test_invalid_json_is_400() -> None:
    reply = client_for(_bodies).post(
        "/json", body="{nope", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == 400


def test_json_body_needs_a_json_content_type() -> None:
    reply = client_for(_bodies).post(
        "/json", body='{"a": 1}', headers={"Content-Type": "text/plain"}
    )
    assert 400 <= reply.status_code < 500
    assert "application/json" in reply.json()["explain"]


def test_bytes_body_and_reader() -> None:
    client = client_for(_bodies)
    payload = bytes(range(256))
    assert client.post("/bytes", body=payload).content == payload
    assert client.post("/reader", body=b"abcdef").content == b"ab|cdef"


def test_multipart_file() -> None:
    client = client_for(_bodies)
    reply = client.post(
        "/upload", files={"f": ("a.txt", "hello", "text/plain")}, data={"note": "n"}
    )
    assert reply.json() == {
        "name": "f",
        "filename": "a.txt",
        "type": "text/plain",
        "content": "hello",
        "g": ["MultipartFile", "g", True],
        "note": "n",
    }
    not_a_file = client.post("/upload", files={"g": ("b", "x")}, data={"f": "text"})
    assert not_a_file.status_code == 400
    assert "should be a file" in not_a_file.json()["explain"]


# -- sessions -----------------------------------------------------------------------------
def test_session_annotation_creates_one() -> None:
    def register(app: App) -> None:
        @app.route("/count")
        def count(session: Session) -> int:
            value = (session.get_attribute("n") or 0) + 1
            session.set_attribute("n", value)
            return {"n": value}  # type: ignore[return-value]

    client = client_for(register)
    assert [client.get("/count").json()["n"] for _ in range(3)] == [1, 2, 3]


# -- model bindings (naja-atra) -----------------------------------------------------------
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class Anything:
    pass


def test_model_binding_sync_and_async() -> None:
    app = App()

    @app.model_binding(Point)
    class PointBinding(ModelBinding):
        async def bind(self) -> Point:
            x, y = self.request.parameter[self.arg_name].split(",")
            return Point(int(x), int(y))

    @app.model_binding(int)
    class DoubledInt(ModelBinding):  # overrides the built-in int conversion
        def bind(self) -> int:
            return int(self.request.parameter.get(self.arg_name, "0")) * 2

    @app.default_model_binding
    class Fallback(ModelBinding):
        def bind(self) -> Any:
            return f"{self.arg_name}:{self.arg_type.__name__}:{self.default_value}"

    @app.route("/bind")
    def bind(p: Point, n: int, other: Anything = "dv") -> dict[str, Any]:  # type: ignore[assignment]
        return {"p": [p.x, p.y], "n": n, "other": other}

    reply = TestClient(app).get("/bind", params={"p": "1,2", "n": "5"})
    assert reply.json() == {"p": [1, 2], "n": 10, "other": "other:Anything:dv"}


# -- the plan is built once -----------------------------------------------------------------
def test_plan_is_built_from_the_signature_once() -> None:
    def func(a: int, data=JSONBody(), r: RequestBodyReader = None, v=PathValue("x")) -> None:  # type: ignore[assignment]
        pass

    plan = plan_binding(func)
    assert plan.names == ("a", "data", "r", "v")
    assert plan.needs_body and plan.needs_stream
    assert plan.path_value_names == {"x"}


def test_positional_self_is_skipped() -> None:
    def method(self: Any, name: str) -> None:
        pass

    assert plan_binding(method, skip_first=True).names == ("name",)


def test_json_round_trip_of_unicode() -> None:
    def register(app: App) -> None:
        @app.route("/u")
        def u(name: str) -> dict[str, str]:
            return {"name": name}

    reply = client_for(register).get("/u", params={"name": "中文"})
    assert json.loads(reply.content) == {"name": "中文"}
    assert "中文".encode() in reply.content  # ensure_ascii=False
