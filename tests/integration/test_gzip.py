"""Optional gzip: ``gzip_content_types``, ``gzip_min_size``, ``gzip_compress_level``."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from simple_http_server import App, Response, StaticFile

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
