"""Form bodies as parameters: ``params=`` narrowing on body fields, ``request.reader``
over a buffered body, uploaded files among ``request.parameter(s)`` and ``ModelDict``.

Every test runs through the TestClient and real sockets in both transports
(``make_client``), or through raw sockets (``serve``) for chunked bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simple_http_server import (
    App,
    FilterContext,
    ModelDict,
    MultipartFile,
    Request,
    RequestBodyReader,
)

from .test_bodies import mp_headers, multipart_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


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
