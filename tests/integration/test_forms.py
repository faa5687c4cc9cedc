"""Form bodies as parameters: ``params=`` narrowing on body fields, ``request.reader``
over a buffered body, uploaded files among ``request.parameter(s)`` and ``ModelDict``.

Every test runs through the TestClient and real sockets in both transports
(``make_client``), or through raw sockets (``serve``) for chunked bodies.
"""

from __future__ import annotations

from typing import Any

from simple_http_server import (
    App,
    FilterContext,
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
