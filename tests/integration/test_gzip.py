"""Optional gzip: ``gzip_content_types``, ``gzip_min_size``, ``gzip_compress_level``."""

from __future__ import annotations

import gzip
import http.client
from pathlib import Path
from typing import Any

import pytest

from simple_http_server import App, Headers, Response, StaticFile

PAGE = "<!doctype html><html><body>" + "hello gzip " * 500 + "</body></html>"
GZ = {"gzip_content_types": {"text/html", "application/json", "text/css"}, "gzip_min_size": 200}


def gzip_app(tmp_path: Path) -> App:
    app = App()
    (tmp_path / "style.css").write_text("body { color: red; }\n" * 200)
    (tmp_path / "logo.png").write_bytes(b"\x89PNG" + b"\0" * 5000)

    @app.route("/page")
    def page() -> str:
        return PAGE

    @app.route("/small")
    def small() -> str:
        return "<html>tiny</html>"

    @app.route("/json")
    def data() -> dict[str, list[int]]:
        return {"numbers": list(range(500))}

    @app.route("/text")
    def text() -> str:
        return "plain text " * 500

    @app.route("/stream")
    def stream() -> Response:
        return Response(headers={"Content-Type": "text/html"}, body=iter([b"<p>x</p>"] * 300))

    @app.route("/pre-encoded")
    def pre_encoded() -> Response:
        body = gzip.compress(PAGE.encode())
        return Response(
            headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}, body=body
        )

    @app.route("/file")
    def file() -> StaticFile:
        return StaticFile(str(tmp_path / "style.css"), None)

    @app.route("/tagged", method=["GET", "POST"])
    def tagged(response: Response) -> str:
        response.set_header("ETag", '"v1"')
        response.set_header("Cache-Control", "max-age=60")
        response.add_cookie("seen", "1", path="/")
        return PAGE

    @app.route("/weak-tagged")
    def weak_tagged() -> Response:
        return Response(headers={"Content-Type": "text/html", "etag": 'W/"w1"'}, body=PAGE)

    @app.route("/tagged-stream")
    def tagged_stream() -> Response:
        headers = {"Content-Type": "text/html", "ETag": '"s1"'}
        return Response(headers=headers, body=iter([b"<p>x</p>"] * 300))

    @app.route("/tagged-small")
    def tagged_small() -> tuple:
        return Headers({"ETag": '"t1"'}), "<html>tiny</html>"

    return app


ACCEPT = {"Accept-Encoding": "gzip, deflate"}


def test_compressible_response_is_gzipped(make_client, tmp_path):
    client = make_client(gzip_app(tmp_path), **GZ)
    reply = client.get("/page", headers=ACCEPT)
    assert reply.status == 200
    assert reply.header("Content-Encoding") == "gzip"
    assert reply.header("Vary") == "Accept-Encoding"
    assert reply.header("Content-Length") == str(len(reply.body))
    assert len(reply.body) < len(PAGE) // 5
    assert gzip.decompress(reply.body).decode() == PAGE
    json_reply = client.get("/json", headers=ACCEPT)
    assert json_reply.header("Content-Encoding") == "gzip"
    assert gzip.decompress(json_reply.body).startswith(b'{"numbers": [0, 1')


def test_client_without_gzip_gets_identity_with_vary(make_client, tmp_path):
    client = make_client(gzip_app(tmp_path), **GZ)
    for headers in ({}, {"Accept-Encoding": "gzip;q=0"}, {"Accept-Encoding": "br"}):
        reply = client.get("/page", headers=headers)
        assert reply.header("Content-Encoding") is None
        assert reply.header("Vary") == "Accept-Encoding"
        assert reply.text == PAGE


@pytest.mark.parametrize("path", ["/small", "/text", "/pre-encoded"])
def test_not_gzipped(make_client, tmp_path, path):
    reply = make_client(gzip_app(tmp_path), **GZ).get(path, headers=ACCEPT)
    assert reply.status == 200
    if path == "/pre-encoded":
        assert gzip.decompress(reply.body).decode() == PAGE  # not compressed twice
    else:
        assert reply.header("Content-Encoding") is None


def test_off_by_default(make_client, tmp_path):
    reply = make_client(gzip_app(tmp_path)).get("/page", headers=ACCEPT)
    assert reply.header("Content-Encoding") is None
    assert reply.header("Vary") is None
    assert reply.text == PAGE


def test_streamed_body_is_gzipped_chunked(serve, tmp_path):
    live = serve(gzip_app(tmp_path), **GZ)
    conn = live.connection()
    conn.request("GET", "/stream", headers=ACCEPT)
    resp = conn.getresponse()
    assert resp.getheader("Content-Encoding") == "gzip"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert gzip.decompress(resp.read()) == b"<p>x</p>" * 300
    conn.close()


def test_static_resources_gzip_and_validators(make_client, tmp_path):
    client = make_client(gzip_app(tmp_path), {"/s/*": str(tmp_path)}, **GZ)
    css = (tmp_path / "style.css").read_bytes()
    zipped = client.get("/s/style.css", headers=ACCEPT)
    assert zipped.header("Content-Encoding") == "gzip"
    assert zipped.header("Vary") == "Accept-Encoding"
    assert gzip.decompress(zipped.body) == css
    plain = client.get("/s/style.css")
    assert plain.body == css and plain.header("Content-Encoding") is None
    assert zipped.header("ETag") != plain.header("ETag")
    # 304 for the gzip form's tag; it keeps Vary and carries no Content-Encoding.
    again = client.get("/s/style.css", headers={**ACCEPT, "If-None-Match": zipped.header("ETag")})
    assert again.status == 304
    assert again.header("Vary") == "Accept-Encoding"
    assert again.header("Content-Encoding") is None
    # Ranges apply to the identity form, never to gzip.
    ranged = client.get("/s/style.css", headers={**ACCEPT, "Range": "bytes=0-9"})
    assert ranged.status == 206 and ranged.body == css[:10]
    assert ranged.header("Content-Encoding") is None
    # Not a listed type.
    png = client.get("/s/logo.png", headers=ACCEPT)
    assert png.header("Content-Encoding") is None and png.header("Vary") is None
    # A controller's StaticFile is compressed the same way.
    assert gzip.decompress(client.get("/file", headers=ACCEPT).body) == css


def test_head_matches_get_headers(serve, tmp_path):
    live = serve(gzip_app(tmp_path), {"/s/*": str(tmp_path)}, **GZ)
    conn = live.connection()
    for path in ("/page", "/s/style.css"):
        conn.request("GET", path, headers=ACCEPT)
        get = conn.getresponse()
        get.read()
        conn.request("HEAD", path, headers=ACCEPT)
        head = conn.getresponse()
        assert head.read() == b""
        assert head.getheader("Content-Encoding") == get.getheader("Content-Encoding") == "gzip"
        assert head.getheader("Content-Length") == get.getheader("Content-Length")
        assert head.getheader("Vary") == get.getheader("Vary")
    conn.close()


def test_start_options_reach_the_config():
    from simple_http_server import server as server_module

    built = server_module._build(
        host="127.0.0.1",
        port=0,
        app_conf=App(),
        gzip_content_types=["text/html"],
        gzip_min_size=5,
        gzip_compress_level=1,
        max_body_size=1234,
        max_upload_size=5678,
        max_parts=7,
        max_part_header_size=99,
    )
    try:
        config = built.config
        assert config.gzip_content_types == frozenset({"text/html"})
        assert (config.gzip_min_size, config.gzip_compress_level) == (5, 1)
        limits = config.limits
        assert (limits.max_body_size, limits.max_upload_size) == (1234, 5678)
        assert (limits.max_parts, limits.max_part_header_size) == (7, 99)
        assert built.dispatcher.gzip is not None
    finally:
        built.stop()


@pytest.mark.parametrize("kind", ["threaded", "asyncio"])
def test_one_type_given_as_a_str_is_that_type_not_its_letters(kind, tmp_path):
    """``server.start(gzip_content_types="text/plain")`` was ``frozenset("text/plain")``:
    every type starting with one of its letters (application/json, image/png) was gzipped."""
    import threading
    import time

    from simple_http_server import server as server_module

    app = gzip_app(tmp_path)

    @app.route("/png")
    def png() -> tuple[int, Headers, bytes]:
        return 200, Headers({"Content-Type": "image/png"}), b"\x89PNG" + b"\0" * 3000

    thread = threading.Thread(
        target=server_module.start,
        kwargs={
            "host": "127.0.0.1",
            "port": 0,
            "app_conf": app,
            "prefer_coroutine": kind == "asyncio",
            "gzip_content_types": "text/plain",
            "gzip_min_size": 200,
        },
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server_module.is_ready():
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        assert server_module._server is not None
        conn = http.client.HTTPConnection("127.0.0.1", server_module._server.port, timeout=10)
        encodings = {}
        for path in ("/text", "/json", "/page", "/png"):
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            resp.read()
            encodings[path] = resp.getheader("Content-Encoding")
        conn.close()
    finally:
        server_module.stop()
        thread.join(15)
    assert encodings == {"/text": "gzip", "/json": None, "/page": None, "/png": None}


# -- entity tags of compressed answers --------------------------------------------------


def test_gzipped_response_weakens_a_strong_etag(make_client, tmp_path):
    """The gzip form is another representation: its strong tag would claim byte equality
    with the identity form's.  Like nginx, the tag is weakened when gzipping on the fly."""
    client = make_client(gzip_app(tmp_path), **GZ)
    zipped = client.get("/tagged", headers=ACCEPT)
    assert zipped.header("Content-Encoding") == "gzip"
    assert zipped.header("ETag") == 'W/"v1"'
    assert zipped.header("Vary") == "Accept-Encoding"
    assert gzip.decompress(zipped.body).decode() == PAGE
    plain = client.get("/tagged")
    assert plain.header("Content-Encoding") is None
    assert plain.header("ETag") == '"v1"'
    assert plain.header("Vary") == "Accept-Encoding"
    # An already weak tag stays as it is.
    weak = client.get("/weak-tagged", headers=ACCEPT)
    assert weak.header("Content-Encoding") == "gzip"
    assert weak.get_all("ETag") == ['W/"w1"']
    # A streamed body is gzipped on the fly too.
    stream = client.get("/tagged-stream", headers=ACCEPT)
    assert stream.header("Content-Encoding") == "gzip"
    assert stream.header("ETag") == 'W/"s1"'
    assert gzip.decompress(stream.body) == b"<p>x</p>" * 300
    # Not compressed (too small): the strong tag is the identity form's, kept.
    small = client.get("/tagged-small", headers=ACCEPT)
    assert small.header("Content-Encoding") is None
    assert small.header("ETag") == '"t1"'


@pytest.mark.parametrize(
    ("accept", "if_none_match", "etag"),
    [
        (ACCEPT, 'W/"v1"', 'W/"v1"'),  # the tag the gzip answer gave
        (ACCEPT, '"v1"', 'W/"v1"'),  # the identity form's tag: weak comparison matches
        ({}, 'W/"v1"', '"v1"'),
        ({}, '"v1"', '"v1"'),
        (ACCEPT, '"other", W/"v1"', 'W/"v1"'),
        (ACCEPT, "*", 'W/"v1"'),
    ],
)
def test_if_none_match_on_a_gzipped_answer(make_client, tmp_path, accept, if_none_match, etag):
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): a revalidation with the
    tag of either form is a 304 that carries this client's tag and Vary."""
    client = make_client(gzip_app(tmp_path), **GZ)
    for method in ("GET", "HEAD"):
        reply = client.request(
            method, "/tagged", headers={**accept, "If-None-Match": if_none_match}
        )
        assert reply.status == 304, (method, reply.status)
        assert reply.body == b""
        assert reply.header("ETag") == etag
        assert reply.header("Vary") == "Accept-Encoding"
        assert reply.header("Cache-Control") == "max-age=60"
        assert reply.header("Set-Cookie") == "seen=1; Path=/"
        assert reply.header("Content-Encoding") is None
        assert reply.header("Content-Length") is None
        assert reply.header("Content-Type") is None


def test_if_none_match_that_does_not_match_gets_the_answer(make_client, tmp_path):
    client = make_client(gzip_app(tmp_path), **GZ)
    reply = client.get("/tagged", headers={**ACCEPT, "If-None-Match": '"v2", W/"v0"'})
    assert reply.status == 200
    assert gzip.decompress(reply.body).decode() == PAGE
    # A streamed body is revalidated the same way, without being produced.
    stream = client.get("/tagged-stream", headers={**ACCEPT, "If-None-Match": 'W/"s1"'})
    assert stream.status == 304 and stream.body == b""
    # Only GET and HEAD: a POST's controller has already acted.
    posted = client.post("/tagged", headers={**ACCEPT, "If-None-Match": 'W/"v1"'})
    assert posted.status == 200
    # No entity tag, nothing to compare.
    assert client.get("/page", headers={**ACCEPT, "If-None-Match": "*"}).status == 200


def test_if_none_match_on_a_controller_answer_without_gzip(make_client, tmp_path):
    """The 304 does not depend on gzip being on: the tag is the controller's."""
    client = make_client(gzip_app(tmp_path))
    reply = client.get("/tagged", headers={**ACCEPT, "If-None-Match": '"v1"'})
    assert reply.status == 304 and reply.body == b""
    assert reply.header("ETag") == '"v1"' and reply.header("Vary") is None
    assert client.get("/tagged", headers={"If-None-Match": 'W/"v1"'}).status == 304
    assert client.get("/tagged", headers={"If-None-Match": '"v0"'}).status == 200


def test_static_file_gzip_etag_stays_coherent(make_client, tmp_path):
    """Static files keep their own strong tag per form (gzip output is deterministic);
    If-None-Match with either tag, weak or strong, is a 304 in both forms."""
    client = make_client(gzip_app(tmp_path), {"/s/*": str(tmp_path)}, **GZ)
    zipped = client.get("/s/style.css", headers=ACCEPT)
    plain = client.get("/s/style.css")
    zipped_tag, plain_tag = zipped.header("ETag"), plain.header("ETag")
    assert zipped_tag and plain_tag and zipped_tag != plain_tag
    assert not zipped_tag.startswith("W/") and not plain_tag.startswith("W/")
    assert client.get("/s/style.css", headers=ACCEPT).header("ETag") == zipped_tag
    for tag in (zipped_tag, plain_tag, "W/" + zipped_tag, "W/" + plain_tag):
        for accept, expected in ((ACCEPT, zipped_tag), ({}, plain_tag)):
            again = client.get("/s/style.css", headers={**accept, "If-None-Match": tag})
            assert again.status == 304, tag
            assert again.header("ETag") == expected


# -- Accept-Encoding, end to end --------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("x-gzip;q=0, gzip", True),
        ("gzip, x-gzip;q=0", True),
        ("gzip;q=0, x-gzip", False),
        ("x-gzip", True),
        ("x-gzip;q=0, *", False),
        ("*;q=0, x-gzip", True),
        ("*;q=0, gzip;q=0.001", True),
        ("gzip;q=0.0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=1", True),
        ("gzip;q=1.000", True),
        ("gzip;q=1.5", False),
        ("gzip;q=nan", False),
        ("gzip;q=inf", False),
        ("gzip;q=1e0", False),
        ("gzip;q=", False),
        ("br;q=1, deflate", False),
    ],
)
def test_accept_encoding_over_the_wire(make_client, tmp_path, accept_encoding, gzipped):
    client = make_client(gzip_app(tmp_path), **GZ)
    reply = client.get("/page", headers={"Accept-Encoding": accept_encoding})
    assert reply.status == 200
    assert reply.header("Vary") == "Accept-Encoding"
    if gzipped:
        assert reply.header("Content-Encoding") == "gzip"
        assert gzip.decompress(reply.body).decode() == PAGE
    else:
        assert reply.header("Content-Encoding") is None
        assert reply.text == PAGE


@pytest.mark.parametrize("if_none_match", ['"a,b"', 'W/"a,b"', '"x", "a,b"', '"a,b" , W/"y"'])
def test_an_entity_tag_holding_a_comma_is_one_tag(make_client, if_none_match):
    """RFC 9110 8.8.3: a quoted entity tag may hold a comma; the list is not cut inside it
    (before, '"a,b"' was read as '"a' and 'b"' and never matched)."""
    app = App()

    @app.route("/comma")
    def comma() -> Any:
        return Headers({"ETag": '"a,b"'}), "<p>x</p>"

    client = make_client(app)
    assert client.get("/comma", headers={"If-None-Match": if_none_match}).status == 304
    assert client.get("/comma", headers={"If-None-Match": '"a"'}).status == 200
