"""Injected values keep the original's types: code written for simple_http_server
0.22 reads ``.name`` of what it is given and loops over absent lists.

The original handed text arguments over as ``Parameter`` (a ``str`` with ``.name``),
``Parameters`` as a ``list`` with ``.name``, a header as a ``Header``, present or
absent, a cookie as a ``Cookie``; ``li: List[int] = None`` got ``[]`` and
``d: dict = None`` got ``{}``.  Every front end: the TestClient and real sockets
(``http.client``) in both transports.
"""

# ruff: noqa: UP006, UP035, UP045, RUF013, E741  (the original's spellings on purpose)

from __future__ import annotations

import copy
import datetime
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest

from simple_http_server import (
    App,
    Cookie,
    Header,
    ModelBinding,
    MultipartFile,
    Parameter,
    Parameters,
    PathValue,
    RegGroup,
    Request,
    RequestBodyReader,
)

from ..conftest import UniformClient

if TYPE_CHECKING:  # for the type checker only: at run time this annotation does not resolve
    from decimal import Decimal

MakeClient = Callable[..., UniformClient]


def desc(value: Any) -> list[Any]:
    """[type name, value, .name] of an injected value (``.name`` absent: "<none>")."""
    if isinstance(value, Cookie):
        return ["Cookie", value.value, value.name]
    if isinstance(value, list):
        shown: Any = list(value)
    else:
        shown = value if value is None or isinstance(value, str) else "<object>"
    return [type(value).__name__, shown, getattr(value, "name", "<none>")]


def described(**values: Any) -> dict[str, Any]:
    return {key: desc(value) for key, value in values.items()}


def marker_app() -> App:
    app = App()

    @app.route("/named")
    def named(
        h=Header("X-Token", default="none"),
        p=Parameter("p", default="dp"),
        ps=Parameters("ps", default=["d"]),
        c=Cookie("c", default="dc"),
    ) -> dict[str, Any]:
        return described(h=h, p=p, ps=ps, c=c)

    @app.route("/unnamed")
    def unnamed(
        x_token=Header(), p=Parameter(), ps=Parameters(), c=Cookie(), h2=Header(default="hd")
    ) -> dict[str, Any]:
        return described(x_token=x_token, p=p, ps=ps, c=c, h2=h2)

    @app.route("/annotated")
    def annotated(
        x_token: Header = None,
        p: Parameter = None,
        ps: Parameters = None,
        f: MultipartFile = None,
        oh: Optional[Header] = None,
        op: Parameter | None = None,
        ops: Optional[Parameters] = None,
        of: Optional[MultipartFile] = None,
        c: Cookie = None,
    ) -> dict[str, Any]:
        got = described(x_token=x_token, p=p, ps=ps, f=f, oh=oh, op=op, ops=ops, of=of, c=c)
        got["f"].append(f.is_empty)
        return got

    @app.route("/text/{pv}")
    def text(s: str, u, pv: str, a: str = "x", b="y", n: str = None) -> dict[str, Any]:
        return described(s=s, u=u, pv=pv, a=a, b=b, n=n)

    @app.route("/plist")
    def plist(lp: List[Parameter], ls: List[str]) -> dict[str, Any]:
        return {"lp": [desc(v) for v in lp], "ls": [desc(v) for v in ls]}

    return app


# (path, headers, expected {argument: [type, value, name]})
CASES = [
    (
        "/named",
        {},
        {
            "h": ["Header", "none", "X-Token"],
            "p": ["Parameter", "dp", "p"],
            "ps": ["Parameters", ["d"], "ps"],
            "c": ["Cookie", "dc", "c"],
        },
    ),
    (
        "/named?p=1&ps=a&ps=b",
        {"X-Token": "t", "Cookie": "c=1"},
        {
            "h": ["Header", "t", "X-Token"],
            "p": ["Parameter", "1", "p"],
            "ps": ["Parameters", ["a", "b"], "ps"],
            "c": ["Cookie", "1", "c"],
        },
    ),
    (
        "/unnamed",
        {},
        {
            "x_token": ["Header", "", "x_token"],
            "p": ["Parameter", "", "p"],
            "ps": ["Parameters", [], "ps"],
            "c": ["Cookie", None, "c"],
            "h2": ["Header", "hd", "h2"],
        },
    ),
    (
        "/unnamed?p=1&ps=a",
        {"X-Token": "t", "h2": "hh", "Cookie": "c=1"},
        {
            "x_token": ["Header", "t", "x_token"],
            "p": ["Parameter", "1", "p"],
            "ps": ["Parameters", ["a"], "ps"],
            "c": ["Cookie", "1", "c"],
            "h2": ["Header", "hh", "h2"],
        },
    ),
    (
        "/annotated",
        {},
        {
            "x_token": ["Header", "", "x_token"],
            "p": ["Parameter", "", "p"],
            "ps": ["Parameters", [], "ps"],
            "f": ["MultipartFile", "<object>", "f", True],
            "oh": ["NoneType", None, "<none>"],
            "op": ["NoneType", None, "<none>"],
            "ops": ["NoneType", None, "<none>"],
            "of": ["NoneType", None, "<none>"],
            "c": ["NoneType", None, "<none>"],
        },
    ),
    (
        "/annotated?p=1&ps=a&op=2&ops=b",
        {"x_token": "t", "oh": "o", "Cookie": "c=v"},
        {
            "x_token": ["Header", "t", "x_token"],
            "p": ["Parameter", "1", "p"],
            "ps": ["Parameters", ["a"], "ps"],
            "f": ["MultipartFile", "<object>", "f", True],
            "oh": ["Header", "o", "oh"],
            "op": ["Parameter", "2", "op"],
            "ops": ["Parameters", ["b"], "ops"],
            "of": ["NoneType", None, "<none>"],
            "c": ["Cookie", "v", "c"],
        },
    ),
    (
        "/text/P?s=1&u=2",
        {},
        {
            "s": ["Parameter", "1", "s"],
            "u": ["Parameter", "2", "u"],
            "pv": ["Parameter", "P", "pv"],
            "a": ["Parameter", "x", "a"],
            "b": ["Parameter", "y", "b"],
            "n": ["NoneType", None, "<none>"],
        },
    ),
    (
        "/text/P?s=1&u=2&a=3&b=4&n=5",
        {},
        {
            "s": ["Parameter", "1", "s"],
            "u": ["Parameter", "2", "u"],
            "pv": ["Parameter", "P", "pv"],
            "a": ["Parameter", "3", "a"],
            "b": ["Parameter", "4", "b"],
            "n": ["Parameter", "5", "n"],
        },
    ),
    (
        "/plist?lp=a&lp=b&ls=c",
        {},
        {
            "lp": [["Parameter", "a", "lp"], ["Parameter", "b", "lp"]],
            "ls": [["str", "c", "<none>"]],
        },
    ),
]


@pytest.mark.parametrize(("path", "headers", "expected"), CASES)
def test_injected_values_keep_the_original_types_and_names(
    make_client: MakeClient, path: str, headers: dict[str, str], expected: dict[str, Any]
) -> None:
    reply = make_client(marker_app()).get(path, headers=headers)
    assert reply.status == 200, reply.text
    assert reply.json() == expected


def original_code_app() -> App:
    """Controllers as written for the original: they read ``.name`` and loop over lists."""
    app = App()

    @app.route("/hdr")
    def hdr(ua=Header("User-Agent"), x=Header("X-Custom", default="none")) -> dict[str, Any]:
        return {"ua": ua, "x": x, "xname": x.name}

    @app.route("/params_multi")
    def params_multi(
        tags=Parameters("tag"),
        p=Parameter("p", required=True),
        opt=Parameters("opt", default=["o1"]),
    ) -> dict[str, Any]:
        return {"tags": list(tags), "p": p, "pname": p.name, "tname": tags.name, "opt": opt.name}

    @app.route("/kw")
    def kw(li: List[int] = None, d: dict = None, l: list = None) -> dict[str, Any]:
        return {"sum": sum(x for x in li), "keys": list(d), "n": len(l)}

    @app.route("/greet")
    def greet(user_name: str) -> tuple[int, str]:
        return 200, user_name  # a Parameter: still the body

    return app


def test_code_written_for_the_original_runs(make_client: MakeClient) -> None:
    client = make_client(original_code_app())
    got = client.get("/hdr", headers={"User-Agent": "ua/1"})
    assert got.status == 200, got.text
    assert got.json() == {"ua": "ua/1", "x": "none", "xname": "X-Custom"}
    got = client.get("/params_multi?tag=a&tag=b&p=pp")
    assert got.status == 200, got.text
    assert got.json() == {"tags": ["a", "b"], "p": "pp", "pname": "p", "tname": "tag", "opt": "opt"}
    got = client.get("/kw")
    assert got.status == 200, got.text
    assert got.json() == {"sum": 0, "keys": [], "n": 0}
    assert client.get("/kw?li=1&li=2&d=%7B%22k%22%3A1%7D&l=a").json() == {
        "sum": 3,
        "keys": ["k"],
        "n": 1,
    }
    greeting = client.get("/greet?user_name=ann")
    assert (greeting.status, greeting.text) == (200, "ann")


def basic_models_app() -> App:
    """Markers imported from the original's ``simple_http_server.basic_models`` (as real
    code does: ``from simple_http_server.basic_models import Parameter``)."""
    from simple_http_server.app_conf import AppConf
    from simple_http_server.basic_models import Header as OldHeader
    from simple_http_server.basic_models import Parameter as OldParameter
    from simple_http_server.basic_models import Response as OldResponse

    app = AppConf()

    @app.route("/old")
    def old(q=OldParameter("q", default="d"), h=OldHeader("X-H", default="-")) -> Any:
        return OldResponse(status_code=201, body={"q": q, "qname": q.name, "h": h})

    return app


def test_the_originals_basic_models_module_serves(make_client: MakeClient) -> None:
    client = make_client(basic_models_app())
    got = client.get("/old?q=v", headers={"X-H": "hh"})
    assert (got.status, got.json()) == (201, {"q": "v", "qname": "q", "h": "hh"})
    assert client.get("/old").json() == {"q": "d", "qname": "q", "h": "-"}


class Length(int):
    """A body's length, bound by naja-atra's ``model_binding(arg_type=...)``."""


class Csv(list):  # type: ignore[type-arg]
    """An annotation only the app's default binder knows."""


def naja_binding_app() -> App:
    """naja-atra code: ``@default_model_binding()`` with parentheses,
    ``@model_binding(arg_type=...)`` by keyword, and binders and
    controllers reading the body with ``await reader.read_to_end()``."""
    app = App()

    @app.default_model_binding()
    class BodyLines(ModelBinding):
        async def bind(self) -> Any:
            return Csv((await self.request.reader.read_to_end()).decode().split(","))

    @app.route("/csv", method="POST")
    def csv(rows: Csv) -> dict[str, Any]:
        return {"rows": list(rows), "type": type(rows).__name__}

    @app.model_binding(arg_type=Length)  # naja-atra's keyword
    class BodyLength(ModelBinding):
        def bind(self) -> Any:
            return Length(len(self.request.body or b""))

    @app.route("/length", method="POST")
    def length(n: Length) -> dict[str, Any]:
        return {"n": n, "type": type(n).__name__}

    @app.route("/stream", method="POST")
    async def stream(reader: RequestBodyReader) -> dict[str, Any]:
        first = await reader.read(2)
        return {"first": first.decode(), "rest": (await reader.read_to_end()).decode()}

    return app


def test_naja_default_model_binding_with_parentheses_and_read_to_end(
    make_any_client: MakeClient,
) -> None:
    client = make_any_client(naja_binding_app())
    got = client.post("/csv", body=b"a,b,c", headers={"Content-Type": "text/plain"})
    assert (got.status, got.json()) == (200, {"rows": ["a", "b", "c"], "type": "Csv"})
    got = client.post("/stream", body=b"0123456789")
    assert (got.status, got.json()) == (200, {"first": "01", "rest": "23456789"})
    got = client.post("/length", body=b"0123")
    assert (got.status, got.json()) == (200, {"n": 4, "type": "Length"})


def empty_app() -> App:
    app = App()

    @app.route("/absent")
    def absent(
        l: list = None,
        L: List = None,
        ls: List[str] = None,
        li: List[int] = None,
        lp: List[Parameter] = None,
        pl: list[int] = None,
        d: dict = None,
        D: Dict = None,
        dt: Dict[str, int] = None,
        ol: Optional[List[int]] = None,
        od: dict | None = None,
        s: str = None,
        i: int = None,
    ) -> dict[str, Any]:
        values = {"l": l, "L": L, "ls": ls, "li": li, "lp": lp, "pl": pl, "d": d, "D": D}
        values.update({"dt": dt, "ol": ol, "od": od, "s": s, "i": i})
        return values

    @app.route("/mutate")
    def mutate(
        l: list = None,
        d: dict = None,
        ps=Parameters("ps", default=["d"]),
        ann: Parameters = None,
    ) -> dict[str, Any]:
        got = {"l": list(l), "d": dict(d), "ps": list(ps), "ann": list(ann)}
        l.append("x")  # a controller may change what it is given:
        d["x"] = 1  # the next request gets a new one
        ps.append("x")
        ann.append("x")
        return got

    return app


def test_absent_lists_and_dicts_with_a_none_default(make_client: MakeClient) -> None:
    reply = make_client(empty_app()).get("/absent")
    assert reply.status == 200, reply.text
    assert reply.json() == {
        "l": [],
        "L": [],
        "ls": [],
        "li": [],
        "lp": [],
        "pl": [],
        "d": {},
        "D": {},
        "dt": {},
        "ol": None,  # Optional[...] = None: None
        "od": None,
        "s": None,
        "i": None,
    }


class Point:
    """A type of the app's that no parameter text converts to (no model binder)."""


def unconvertible_app() -> App:
    app = App()

    @app.route("/point")
    def point(p: Point) -> dict[str, Any]:
        return {"p": repr(p)}

    @app.route("/day")
    def day(day: datetime.date) -> dict[str, Any]:
        return {"day": repr(day)}

    @app.route("/days")
    def days(days: List[datetime.date]) -> dict[str, Any]:
        return {"days": repr(days)}

    @app.route("/partly-resolved")
    def partly_resolved(n: int, d: Decimal = None) -> dict[str, Any]:
        return {"n": n + 1, "d": d}

    return app


def test_a_type_no_parameter_text_converts_to_is_a_400(make_client: MakeClient) -> None:
    """0.22.x answered 400 "... is not supported yet." for a required ``p: Point``,
    ``day: date`` or ``days: List[date]``; the text was handed over as that type
    (``day.year``: a 500)."""
    client = make_client(unconvertible_app())
    for path, name, type_name in (
        ("/point?p=1", "p", Point.__qualname__),
        ("/day?day=2024-01-01", "day", "datetime.date"),
    ):
        reply = client.get(path)
        assert reply.status == 400, reply.text
        assert reply.json()["message"] == "Bad Request"
        explain = reply.json()["explain"]
        assert explain.startswith(f"Parameter[{name}] with Type &lt;class "), explain
        assert explain.endswith(f"{type_name}'&gt; is not supported yet."), explain
    days = client.get("/days?days=2024-01-01")
    assert days.status == 400, days.text
    expected = "Parameter[days] with Type typing.List[datetime.date] is not supported yet."
    assert days.json()["explain"] == expected
    absent = client.get("/point")
    assert absent.status == 400
    assert absent.json()["explain"] == "Parameter[p] is required."


def test_one_unresolvable_annotation_leaves_the_others_typed(make_client: MakeClient) -> None:
    """``d: Decimal`` named under ``TYPE_CHECKING`` only does not resolve: ``n: int``
    (also a string, ``from __future__ import annotations``) is still an ``int``."""
    reply = make_client(unconvertible_app()).get("/partly-resolved?n=1")
    assert reply.status == 200, reply.text
    assert reply.json() == {"n": 2, "d": None}


def test_absent_values_are_new_for_every_request(make_client: MakeClient) -> None:
    client = make_client(empty_app())
    first = client.get("/mutate").json()
    assert first == client.get("/mutate").json() == {"l": [], "d": {}, "ps": ["d"], "ann": []}


def copies_app() -> App:
    app = App()

    @app.route(regexp=r"^/copy/(\w+)$")
    def copies(group: RegGroup, p: str, h: Header, ps: Parameters) -> dict[str, Any]:
        got = {}
        for key, value in {"group": group, "p": p, "h": h, "ps": ps}.items():
            again = [copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))]
            got[key] = [[type(v).__name__, v, getattr(v, "name", None)] for v in again]
        return got

    @app.route("/pv/{name}")
    def path_value(name: PathValue) -> list[Any]:
        again = pickle.loads(pickle.dumps(copy.copy(name)))
        return [type(again).__name__, again, again.name]

    return app


def test_injected_values_survive_copy_and_pickle(make_client: MakeClient) -> None:
    client = make_client(copies_app())
    reply = client.get("/copy/grp?p=pp&ps=a", headers={"h": "hv"})
    assert reply.status == 200, reply.text
    got = reply.json()
    assert got["group"] == [["RegGroup", "grp", None]] * 3
    assert got["p"] == [["Parameter", "pp", "p"]] * 3
    assert got["h"] == [["Header", "hv", "h"]] * 3
    assert got["ps"] == [["Parameters", ["a"], "ps"]] * 3
    assert client.get("/pv/abc").json() == ["PathValue", "abc", "name"]


def test_a_cookie_argument_is_a_copy(make_client: MakeClient) -> None:
    app = App()

    @app.route("/cookie")
    def cookie(request: Request, c: Cookie) -> dict[str, Any]:
        c["path"] = "/changed"
        return {"type": type(c).__name__, "path": request.cookies["c"]["path"], "key": c.key}

    reply = make_client(app).get("/cookie", headers={"Cookie": "c=1"})
    assert reply.json() == {"type": "Cookie", "path": "", "key": "c"}
