"""Form bodies as parameters: ``params=`` narrowing on body fields, ``request.reader``
over a buffered body, uploaded files among ``request.parameter(s)`` and ``ModelDict``.

Every test runs through the TestClient and real sockets in both transports
(``make_client``), or through raw sockets (``serve``) for chunked bodies.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from simple_http_server import (
    App,
    FilterContext,
    ModelDict,
    MultipartFile,
    Request,
    RequestBodyReader,
    server,
)

from .test_asgi import body_of, http_scope, run_asgi
from .test_bodies import BOUNDARY, chunked, mp_headers, multipart_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def read_reply(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the one response on ``sock``."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


# -- 1. params= narrowing sees the form body ------------------------------------------


def narrowing_app() -> App:
    app = App()

    @app.route("/n", method="POST", params="a=b")
    def a_is_b(request: Request) -> dict[str, Any]:
        return {"route": "a=b", "a": request.parameters["a"], "body": request.body.decode()}

    @app.route("/n", method="POST", params="!a")
    def no_a() -> dict[str, Any]:
        return {"route": "no a"}

    @app.route("/f", method="POST", params="img")
    def with_img(img: MultipartFile) -> dict[str, Any]:
        return {"route": "img", "filename": img.filename}

    @app.route("/f", method="POST", params="!img")
    def without_img() -> dict[str, Any]:
        return {"route": "no img"}

    @app.route(
        "/g", method="POST", params=["img=p.png", "img^=p"], match_all_params_expressions=False
    )
    def never() -> dict[str, Any]:  # an upload equals no text, starts with none
        return {"route": "text"}

    # A url where one route streams the body: it is left for that route to stream.
    @app.route("/s", method="POST", params="a=b")
    def s_a_is_b() -> dict[str, Any]:
        return {"route": "a=b"}

    @app.route("/s", method="POST", params="!a")
    async def s_streams(reader: RequestBodyReader) -> dict[str, Any]:
        return {"route": "stream", "body": (await reader.read()).decode()}

    @app.route("/plain", method="POST")
    def plain(a: str = "") -> dict[str, Any]:
        return {"a": a}

    return app


def test_params_narrowing_sees_urlencoded_form_fields(make_client):
    client = make_client(narrowing_app())
    reply = client.post("/n", headers=FORM, body="a=b")
    assert reply.status == 200, reply.text
    # Routed by the body, which is read once: intact, its values not repeated.
    assert reply.json() == {"route": "a=b", "a": ["b"], "body": "a=b"}
    reply = client.post("/n?a=q", headers=FORM, body="a=b")
    assert reply.json() == {"route": "a=b", "a": ["b", "q"], "body": "a=b"}
    assert client.post("/n", headers=FORM, body="x=1").json() == {"route": "no a"}
    assert client.post("/n", headers=FORM, body="a=c").status == 404
    assert client.post("/n?a=b").json() == {"route": "a=b", "a": ["b"], "body": ""}
    assert client.post("/n").json() == {"route": "no a"}


def test_params_narrowing_sees_multipart_fields_and_files(make_client):
    client = make_client(narrowing_app())
    reply = client.post("/n", headers=mp_headers(), body=multipart_body({"a": "b"}))
    assert reply.status == 200, reply.text
    assert reply.json() == {"route": "a=b", "a": ["b"], "body": ""}
    body = multipart_body({"x": "1"}, [("img", "p.png", "image/png", b"\x89PNG")])
    reply = client.post("/f", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"route": "img", "filename": "p.png"}
    reply = client.post("/f", headers=mp_headers(), body=multipart_body({"x": "1"}))
    assert reply.json() == {"route": "no img"}
    assert client.post("/g", headers=mp_headers(), body=body).status == 404


def test_params_narrowing_sees_a_chunked_form(serve):
    live = serve(narrowing_app())
    for content_type, body, expected in [
        ("application/x-www-form-urlencoded", b"a=b", "a=b"),
        (mp_headers()["Content-Type"], multipart_body({"a": "b"}), "a=b"),
        ("application/x-www-form-urlencoded", b"x=1", "no a"),
    ]:
        head = (
            f"POST /n HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(head + chunked(body[:2], body[2:]))
            status, data = read_reply(sock)
        assert status == 200, data
        assert json.loads(data)["route"] == expected


def test_params_narrowing_sees_an_unframed_http2_form_under_asgi():
    """HTTP/2 behind an ASGI server: a form body without Content-Length or chunking."""
    scope = http_scope("POST", "/n", headers=[(b"content-type", FORM["Content-Type"].encode())])
    scope["http_version"] = "2"
    messages = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"=b", "more_body": False},
    ]
    sent = run_asgi(scope, messages, server.init_asgi_proxy(app_conf=narrowing_app()))
    assert sent[0]["status"] == 200
    assert json.loads(body_of(sent)) == {"route": "a=b", "a": ["b"], "body": "a=b"}


def test_a_form_read_for_routing_keeps_the_body_limits_and_errors(make_client, tmp_path):
    client = make_client(narrowing_app(), max_body_size=100, max_files=1)
    reply = client.post("/n", headers=FORM, body="a=b&pad=" + "x" * 200)
    assert reply.status == 413
    two_files = [("img", "1", "text/plain", b"1"), ("img", "2", "text/plain", b"2")]
    reply = client.post("/f", headers=mp_headers(), body=multipart_body(files=two_files))
    assert reply.status == 413
    assert "max_files" in reply.json()["explain"]
    reply = client.post("/f", headers=mp_headers(), body=b"--" + BOUNDARY.encode() + b"\r\nX")
    assert reply.status == 400
    assert "multipart" in reply.json()["explain"].lower()
    reply = client.post("/n", headers={"Content-Type": "multipart/form-data"}, body=b"a")
    assert reply.status == 400


def test_a_streaming_route_on_the_url_keeps_the_body_for_itself(make_client):
    """Where a route could stream the body, ``params=`` sees the query only."""
    client = make_client(narrowing_app())
    reply = client.post("/s", headers=FORM, body="a=b")
    assert reply.status == 200, reply.text
    assert reply.json() == {"route": "stream", "body": "a=b"}
    assert client.post("/s?a=b", headers=FORM, body="a=c").json() == {"route": "a=b"}


def test_forms_on_other_urls_are_not_read_before_routing(make_client):
    client = make_client(narrowing_app())
    bad = b"--" + BOUNDARY.encode() + b"\r\nX"
    assert client.post("/nowhere", headers=mp_headers(), body=bad).status == 404
    assert client.post("/plain", headers=FORM, body="a=z").json() == {"a": "z"}


# -- 2. request.reader is always usable -------------------------------------------------


def reader_app() -> App:
    app = App()

    @app.route("/raw", method="POST")
    async def raw_body(request: Request) -> str:
        return (await request.reader.read()).decode()

    @app.route("/raw-sync", method=["POST", "GET"])
    def raw_sync(request: Request) -> dict[str, Any]:
        reader = request.reader
        first = reader.read_blocking(2)
        rest = reader.read_blocking(-1)
        return {
            "first": first.decode(),
            "rest": rest.decode(),
            "end": reader.read_blocking(5).decode(),
        }

    @app.route("/pieces", method="POST")
    async def pieces(request: Request) -> list[str]:
        out = []
        while data := await request.reader.read(3):
            out.append(data.decode())
        return out

    @app.route("/form", method="POST")
    async def form(request: Request, a: str) -> dict[str, Any]:
        return {"a": a, "raw": (await request.reader.read()).decode()}

    @app.route("/upload", method="POST")
    async def upload(request: Request, doc: MultipartFile) -> dict[str, Any]:
        return {"doc": doc.content.decode(), "raw": (await request.reader.read()).decode()}

    @app.route("/filtered", method="POST")
    async def filtered(request: Request, reader: RequestBodyReader) -> dict[str, Any]:
        return {"same": request.reader is reader, "rest": (await reader.read()).decode()}

    @app.route("/filtered-buffered", method="POST")
    def filtered_buffered(request: Request) -> dict[str, Any]:
        return {"rest": request.reader.read_blocking().decode()}

    @app.request_filter(regexp="^/filtered")
    async def peek(ctx: FilterContext) -> None:
        ctx.response.set_header("X-Peek", (await ctx.request.reader.read(2)).decode())
        await ctx.do_chain()

    return app


def test_request_reader_reads_a_buffered_body(make_client):
    client = make_client(reader_app())
    reply = client.post("/raw", headers={"Content-Type": "text/plain"}, body="hello")
    assert reply.status == 200, reply.text
    assert reply.text == "hello"
    reply = client.post("/raw", headers={"Content-Type": "application/json"}, body='{"k": 1}')
    assert reply.text == '{"k": 1}'
    reply = client.post("/raw-sync", body="hello")
    assert reply.json() == {"first": "he", "rest": "llo", "end": ""}
    assert client.post("/pieces", body="abcdefg").json() == ["abc", "def", "g"]
    assert client.get("/raw-sync").json() == {"first": "", "rest": "", "end": ""}
    assert client.post("/form", headers=FORM, body="a=x+y").json() == {"a": "x y", "raw": "a=x+y"}


def test_request_reader_after_a_multipart_form_is_at_its_end(make_client):
    body = multipart_body(files=[("doc", "d.txt", "text/plain", b"content")])
    reply = make_client(reader_app()).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"doc": "content", "raw": ""}


def test_request_reader_in_filters(make_client):
    client = make_client(reader_app())
    reply = client.post("/filtered", body="streamed")  # a streamed body: the same reader
    assert reply.status == 200, reply.text
    assert reply.header("X-Peek") == "st"
    assert reply.json() == {"same": True, "rest": "reamed"}
    reply = client.post("/filtered-buffered", body="buffered")
    assert reply.status == 200, reply.text
    assert reply.header("X-Peek") == "bu"
    assert reply.json() == {"rest": "ffered"}


def test_request_reader_keeps_the_body_limit(make_client):
    client = make_client(reader_app(), max_body_size=10)
    assert client.post("/raw", body="x" * 11).status == 413
    assert client.post("/raw", body="x" * 10).text == "x" * 10


# -- 3. uploaded files are parameters too ------------------------------------------------


def files_app(tmp_path: Path) -> App:
    app = App()

    @app.route("/up", method="POST")
    def up(request: Request, model: ModelDict, title: str) -> dict[str, Any]:
        img = request.parameter["img"]
        assert isinstance(img, MultipartFile)
        model["img"].save_to_file(tmp_path / "saved.bin")
        got = request.get_parameter("img")
        assert isinstance(got, MultipartFile)
        return {
            "title": title,
            "filename": img.filename,
            "same": got is img and model["img"] is img and request.parameters["img"] == [img],
            "saved": (tmp_path / "saved.bin").read_bytes().decode(),
            "docs": [d.filename for d in model["docs"]],
            "docs_too": [d.filename for d in request.parameters["docs"]],
            "model_title": model["title"],
        }

    @app.route("/str", method="POST")
    def as_str(img: str = "default", docs: list[str] | None = None) -> dict[str, Any]:
        return {"img": img, "docs": docs}

    @app.route("/str-required", method="POST")
    def as_required_str(img: str) -> str:
        return img

    @app.route("/file", method="POST")
    def as_file(img: MultipartFile) -> str:
        return img.content.decode()

    return app


FILES = [
    ("img", "a.png", "image/png", b"PNG-bytes"),
    ("docs", "1.txt", "text/plain", b"one"),
    ("docs", "2.txt", "text/plain", b"two"),
]


def test_uploads_are_in_parameter_parameters_and_model_dict(make_client, tmp_path):
    body = multipart_body({"title": "t"}, FILES)
    reply = make_client(files_app(tmp_path)).post("/up", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {
        "title": "t",
        "filename": "a.png",
        "same": True,
        "saved": "PNG-bytes",
        "docs": ["1.txt", "2.txt"],
        "docs_too": ["1.txt", "2.txt"],
        "model_title": "t",
    }


def test_a_str_argument_named_like_a_file_part_is_unchanged(make_client, tmp_path):
    """Text arguments read text values only: a file part does not fill them."""
    client = make_client(files_app(tmp_path))
    body = multipart_body(files=FILES)
    reply = client.post("/str", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"img": "default", "docs": None}
    reply = client.post("/str?img=q&docs=d", headers=mp_headers(), body=body)
    assert reply.json() == {"img": "q", "docs": ["d"]}
    reply = client.post("/str-required", headers=mp_headers(), body=body)
    assert reply.status == 400
    assert reply.json()["explain"] == "Parameter[img] is required."
    assert client.post("/file", headers=mp_headers(), body=body).text == "PNG-bytes"
