"""Request bodies over real sockets: forms, JSON, bytes, streaming multipart, limits."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from simple_http_server import (
    App,
    BytesBody,
    JSONBody,
    MultipartFile,
    Parameter,
    Request,
    Response,
)
from simple_http_server.dispatch.bodies import RequestBodyReader
from simple_http_server.testing import TestClient

BOUNDARY = "----shsTestBoundary7MA4YWxk"


def multipart_body(
    fields: dict[str, str] | None = None,
    files: list[tuple[str, str, str, bytes]] | None = None,
    boundary: str = BOUNDARY,
    raw_disposition: str | None = None,
) -> bytes:
    """A multipart/form-data body: ``files`` are (field, filename, content type, data)."""
    out: list[bytes] = []
    for name, value in (fields or {}).items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, filename, ctype, data in files or []:
        disposition = raw_disposition or f'form-data; name="{name}"; filename="{filename}"'
        out.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {ctype}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def mp_headers(boundary: str = BOUNDARY) -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def raw_exchange(
    port: int,
    head: bytes,
    body_parts: list[bytes] = (),
    timeout: float = 10.0,  # type: ignore[assignment]
) -> http.client.HTTPResponse:
    """Send a raw request head and some body pieces; return the parsed response."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head)
    for part in body_parts:
        sock.sendall(part)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    resp.read()
    sock.close()
    return resp


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + (b"0\r\n\r\n" if end else b"")


# -- urlencoded forms -----------------------------------------------------------------


def form_app() -> App:
    app = App()

    @app.route("/form", method="POST")
    def form(name: str, tags: list[str], age: int = 0) -> dict[str, Any]:
        return {"name": name, "tags": tags, "age": age}

    @app.route("/raw", method="POST")
    def raw(body: BytesBody) -> bytes:
        return bytes(body)

    return app


def test_test_client_header_names_are_case_insensitive():
    """Headers given in lower case are not doubled by the ones ``data=`` implies."""
    client = TestClient(form_app())
    reply = client.post(
        "/form",
        data={"name": "n", "tags": ["t"]},  # name=n&tags=t: 13 bytes
        headers={"content-type": "application/x-www-form-urlencoded", "content-length": "13"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"name": "n", "tags": ["t"], "age": 0}
    reply = client.post("/raw", body=b"abc", headers={"content-length": "3", "host": "h"})
    assert reply.content == b"abc"


def test_urlencoded_plus_is_space_and_body_comes_first(make_client):
    client = make_client(form_app())
    reply = client.post(
        "/form?tags=q",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="name=John+Smith%21&tags=a+b&tags=c&age=42",
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"name": "John Smith!", "tags": ["a b", "c", "q"], "age": 42}


# Unknown names, and codecs that exist but are not text encodings ("undefined"
# raises UnicodeError on any use; base64 is bytes-to-bytes).
BAD_CHARSETS = ["nope-42", "undefined", "base64"]


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_urlencoded_bad_charset_is_400(make_client, charset):
    reply = make_client(form_app()).post(
        "/form",
        headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"},
        body="name=x&tags=y",
    )
    assert reply.status == 400
    assert "charset" in reply.json()["explain"].lower()


@pytest.mark.parametrize(
    ("charset", "name", "tag"),
    [
        ("latin-1", "José", "ü"),
        ("ISO-8859-1", "José", "ü"),
        ('"iso-8859-15"', "Jos€", "ü"),
        ("shift_jis", "山田太郎", "タグ"),
        ("utf-8", "José 中文", "ü"),
        ("", "José 中文", "ü"),  # no charset: UTF-8
    ],
)
def test_urlencoded_charset_is_honored(make_client, charset, name, tag):
    """Percent-escapes and raw bytes of a form are both text in the form's charset."""
    real = charset.strip('"') or "utf-8"
    content_type = "application/x-www-form-urlencoded"
    if charset:
        content_type += f"; charset={charset}"
    client = make_client(form_app())
    escaped = urlencode({"name": name, "tags": tag}, encoding=real).encode("ascii")
    raw = f"name={name}&tags={tag}".encode(real)
    for body in (escaped, raw):
        reply = client.post("/form", headers={"Content-Type": content_type}, body=body)
        assert reply.status == 200, (body, reply.text)
        assert reply.json() == {"name": name, "tags": [tag], "age": 0}


@pytest.mark.parametrize(
    ("charset", "body", "name", "tags"),
    [
        ("utf-8", b"name=%FF%FE&tags=y", "\ufffd\ufffd", ["y"]),
        ("utf-8", b"name=\xff\xfe&tags=y", "\ufffd\ufffd", ["y"]),  # raw bytes
        ("", b"name=a&tags=%C3", "a", ["\ufffd"]),
        ("", b"name=caf\xe9&tags=caf%E9", "caf\ufffd", ["caf\ufffd"]),
        ("shift_jis", b"name=%81&tags=y", "\ufffd", ["y"]),
    ],
)
def test_urlencoded_undecodable_text_reads_as_the_query_reads_it(
    make_any_client, charset, body, name, tags
):
    """A byte (raw or percent-escaped) that is not text in the form's charset is U+FFFD,
    as in the query string, in 0.22.x (whose raw byte dropped the connection), Werkzeug
    and Django; it was a 400, so the same link and form answered differently."""
    content_type = "application/x-www-form-urlencoded"
    if charset:
        content_type += f"; charset={charset}"
    client = make_any_client(query_and_form_app())
    reply = client.post("/form", headers={"Content-Type": content_type}, body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"name": name, "tags": tags}
    if charset != "shift_jis" and body.isascii():  # a query is UTF-8, escaped
        assert client.get(f"/form?{body.decode()}").json() == reply.json()


def query_and_form_app() -> App:
    app = App()

    @app.route("/form", method=["GET", "POST"])
    def form(name: str, tags: list[str]) -> dict[str, Any]:
        return {"name": name, "tags": tags}

    return app


def test_bytes_body_without_content_type(make_client):
    # Defect 9: Content-Length without Content-Type used to drop the connection.
    reply = make_client(form_app()).post("/raw", body=b"\x00\x01binary\xff")
    assert reply.status == 200
    assert reply.body == b"\x00\x01binary\xff"


def test_chunked_form_body(serve):
    # Defect 8: chunked request bodies are decoded.
    live = serve(form_app())
    head = (
        b"POST /form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    resp = raw_exchange(live.port, head, [chunked(b"name=Ch", b"unk+ed&ta", b"gs=1")])
    assert resp.status == 200


def test_chunked_bytes_body_roundtrip(serve):
    live = serve(form_app())
    conn = live.connection()
    pieces = [b"a" * 1000, b"b" * 70000, b"c"]
    conn.request("POST", "/raw", body=iter(pieces), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == b"".join(pieces)
    conn.close()


# -- JSON -----------------------------------------------------------------------------


def json_app() -> App:
    app = App()

    @app.route("/json", method="POST")
    def echo(data: JSONBody) -> dict[str, Any]:
        assert isinstance(data, JSONBody)  # the dict-like object the type promises
        return {"got": data}

    @app.route("/request-json", method="POST")
    def request_json(request: Request) -> dict[str, Any]:
        return {"json": request.json, "body": request.body.decode("latin-1")}

    return app


def test_json_body_object(make_client):
    payload = {"a": [1, 2], "b": "ü", "c": None}
    reply = make_client(json_app()).post(
        "/json",
        headers={"Content-Type": "application/json; charset=utf-8"},
        body=json.dumps(payload).encode(),
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"got": payload}


@pytest.mark.parametrize(
    "body",
    [b"null", b"", b"  \r\n ", b"[1, 2]", b"[]", b'"text"', b"42", b"true"],
    ids=["null", "empty", "blank", "list", "empty-list", "string", "number", "true"],
)
def test_json_body_that_is_not_an_object_is_400(make_client, body):
    """``JSONBody`` is a dict: valid JSON that is not an object, or no JSON at all, is a
    clear 400 (the controller never runs with a non-dict, and it is never a 500)."""
    reply = make_client(json_app()).post(
        "/json", headers={"Content-Type": "application/json"}, body=body
    )
    assert reply.status == 400, reply.text
    assert reply.json()["code"] == 400
    assert "JSON object" in reply.json()["explain"]


def optional_json_app() -> App:
    app = App()

    @app.route("/optional", method=["GET", "POST"])
    def optional(data: JSONBody | None = None) -> dict[str, Any]:
        return {"got": data, "is_default": data is None}

    return app


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("GET", {}, b""),
        ("POST", {}, b""),
        ("POST", {"Content-Type": "application/json"}, b""),
        ("POST", {"Content-Type": "application/json"}, b"  \r\n"),
    ],
    ids=["get", "post-no-type", "post-json-empty", "post-json-blank"],
)
def test_json_body_with_a_default_is_optional(make_client, method, headers, body):
    """``data: JSONBody = None``: a request without a body gets the default (not a
    415 or 400); a body that is there must still be a JSON object."""
    reply = make_client(optional_json_app()).request(
        method, "/optional", headers=headers, body=body
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"got": None, "is_default": True}


def test_optional_json_body_still_checks_a_body_that_is_sent(make_client):
    client = make_client(optional_json_app())
    json_type = {"Content-Type": "application/json"}
    reply = client.post("/optional", headers=json_type, body=b'{"a": 1}')
    assert reply.json() == {"got": {"a": 1}, "is_default": False}
    assert client.post("/optional", headers=json_type, body=b"[1]").status == 400
    assert client.post("/optional", headers=json_type, body=b"null").status == 400
    text = {"Content-Type": "text/plain"}
    assert client.post("/optional", headers=text, body=b"{}").status == 415
    # A body that is there, but is not JSON, is no "missing body": 415, not the default.
    assert client.post("/optional", headers=text, body=b" ").status == 415
    form = multipart_body(fields={"a": "1"})
    assert client.post("/optional", headers=mp_headers(), body=form).status == 415


@pytest.mark.parametrize(
    ("body", "value"),
    [(b"[1, 2]", [1, 2]), (b"null", None), (b"", None), (b'"s"', "s"), (b"{}", {})],
)
def test_request_json_is_any_json_value(make_client, body, value):
    """``request.json`` holds whatever JSON value was sent (None for no body at all):
    only a ``JSONBody`` argument demands an object."""
    reply = make_client(json_app()).post(
        "/request-json", headers={"Content-Type": "application/json"}, body=body
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"json": value, "body": body.decode()}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/problem+json",
        "application/merge-patch+json",
        "application/vnd.api+json",
        "application/vnd.api+json; charset=utf-8",
        "Application/Merge-Patch+JSON",
        "application/json",
        "APPLICATION/JSON; charset=UTF-8",
    ],
)
def test_structured_json_suffix_is_json(make_client, content_type):
    """RFC 6839: a ``+json`` media type is JSON, for ``JSONBody`` as for ``request.json``."""
    client = make_client(json_app())
    reply = client.post(
        "/json", headers={"Content-Type": content_type}, body='{"op": "ü"}'.encode()
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"got": {"op": "ü"}}
    reply = client.post("/request-json", headers={"Content-Type": content_type}, body=b"[7]")
    assert reply.json()["json"] == [7]
    bad = client.post("/json", headers={"Content-Type": content_type}, body=b"{oops")
    assert bad.status == 400 and "JSON" in bad.json()["explain"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json-seq", "application/jsonx", "application/x-json-ish", ""],
)
def test_json_body_of_a_non_json_type_is_415(make_client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = make_client(json_app()).post("/json", headers=headers, body=b'{"a": 1}')
    assert reply.status == 415, reply.text


def coded_app() -> App:
    app = App()

    @app.route("/raw", method="POST")
    def raw(body: BytesBody, request: Request) -> dict[str, Any]:
        return {"text": gzip.decompress(bytes(body)).decode(), "params": request.parameters}

    @app.route("/json", method="POST")
    def as_json(data: JSONBody) -> dict[str, Any]:
        return data

    return app


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("application/json", '{"a": 1}'),
        ("application/x-www-form-urlencoded; charset=latin-1", "a=1&b=2"),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart_body({"a": "1"}).decode()),
    ],
)
def test_a_content_coded_body_is_kept_as_it_came(make_any_client, content_type, text):
    """A gzip body is no JSON, form or multipart text: it was parsed as such (a 400,
    or garbage fields from a latin-1 form), so a controller could not decode it."""
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    client = make_any_client(coded_app())
    reply = client.post("/raw", headers=headers, body=gzip.compress(text.encode()))
    assert reply.status == 200, reply.text
    assert reply.json() == {"text": text, "params": {}}


def test_json_body_of_a_content_coded_body_is_415(make_any_client):
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    client = make_any_client(coded_app())
    reply = client.post("/json", headers=headers, body=gzip.compress(b'{"a": 1}'))
    assert reply.status == 415, reply.text
    assert reply.json()["explain"] == (
        "JSONBody needs a body without Content-Encoding (it is gzip)."
    )
    headers["Content-Encoding"] = "identity"
    reply = client.post("/json", headers=headers, body=b'{"a": 1}')
    assert reply.status == 200 and reply.json() == {"a": 1}


def test_invalid_json_is_400_with_message(make_client):
    # Defect 17: invalid JSON used to drop the connection.
    reply = make_client(json_app()).post(
        "/json", headers={"Content-Type": "application/json"}, body=b'{"a": '
    )
    assert reply.status == 400
    assert "JSON" in reply.json()["explain"]


def test_bad_bodies_are_explained_without_python_internals(make_client):
    """The explain of a 400 says what is wrong with the body, not how Python failed:
    it read "...; use sys.set_int_max_str_digits() to increase the limit" and
    "('Segment header failed to decode', UnicodeDecodeError('utf-8', b'...'...))"."""
    client = make_client(disposition_app())
    reply = client.post(
        "/fields", headers={"Content-Type": "application/json"}, body=b"[" + b"9" * 5000 + b"]"
    )
    assert reply.status == 400
    assert reply.json()["explain"] == "The JSON body has a number with too many digits."
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="\xff"\r\n\r\n1\r\n'
    reply = client.post("/fields", headers=mp_headers(), body=body.encode("latin-1"))
    assert reply.status == 400
    assert reply.json()["explain"] == "Malformed multipart body: Segment header failed to decode."


@pytest.mark.parametrize("charset", [*BAD_CHARSETS, "klingon"])
def test_json_bad_charset_is_400(make_client, charset):
    reply = make_client(json_app()).post(
        "/json", headers={"Content-Type": f"application/json; charset={charset}"}, body=b"{}"
    )
    assert reply.status == 400
    assert "charset" in reply.json()["explain"].lower()


def test_deeply_nested_json_is_400(make_client):
    """json.loads raises RecursionError (not ValueError) past Python's recursion limit."""
    app = json_app()

    @app.route("/param")
    def param(x: dict) -> dict[str, Any]:
        return {"got": x}

    client = make_client(app)
    reply = client.post("/json", headers={"Content-Type": "application/json"}, body=b"[" * 200_000)
    assert reply.status == 400
    assert "JSON" in reply.json()["explain"]
    reply = client.get("/param?x=" + "%5B" * 15_000)
    assert reply.status == 400
    assert client.get("/param?x=%7B%22a%22%3A1%7D").json() == {"got": {"a": 1}}


def test_chunked_json(serve):
    live = serve(json_app())
    conn = live.connection()
    conn.request(
        "POST",
        "/json",
        body=iter([b'{"k": ', b"[1, 2, ", b"3]}"]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read()) == {"got": {"k": [1, 2, 3]}}
    conn.close()


# -- streaming reader -----------------------------------------------------------------


def reader_app() -> App:
    app = App()

    @app.route("/stream", method="POST")
    async def stream(reader: RequestBodyReader) -> dict[str, int]:
        total = pieces = 0
        while True:
            data = await reader.read(4096)
            if not data:
                break
            assert len(data) <= 4096
            total += len(data)
            pieces += 1
        return {"total": total, "pieces": pieces}

    @app.route("/stream-sync", method="POST")
    def stream_sync(reader: RequestBodyReader) -> dict[str, int]:
        first = reader.read_blocking(10)
        rest = reader.read_blocking()
        return {"first": len(first), "rest": len(rest)}

    return app


def test_body_reader_streams_chunked_body(serve):
    live = serve(reader_app())
    conn = live.connection()
    conn.request("POST", "/stream", body=iter([b"x" * 10000] * 30), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200
    got = json.loads(resp.read())
    assert got["total"] == 300000
    assert got["pieces"] >= 300000 // 4096
    conn.close()


def test_body_reader_from_sync_controller(make_client):
    reply = make_client(reader_app()).post("/stream-sync", body=b"y" * 100000)
    assert reply.status == 200, reply.text
    assert reply.json() == {"first": 10, "rest": 99990}


def test_body_reader_respects_max_body_size(serve):
    live = serve(reader_app(), max_upload_size=50000)
    conn = live.connection()
    conn.request("POST", "/stream", body=b"z" * 60000)
    assert conn.getresponse().status == 413
    conn.close()


@pytest.mark.parametrize("size", [50_000, 50_001])
def test_a_chunked_streamed_body_is_refused_one_byte_past_the_limit(serve, size):
    """No length is declared: the reader counts, and the limit is inclusive."""
    live = serve(reader_app(), max_upload_size=50_000)
    conn = live.connection()
    conn.request("POST", "/stream", body=iter([b"z" * size]), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == (200 if size == 50_000 else 413)
    if size == 50_000:
        assert json.loads(response.read())["total"] == size
    conn.close()


# -- multipart ------------------------------------------------------------------------


def upload_app(seen: list[MultipartFile], tmp_path: Path) -> App:
    app = App()

    @app.route("/upload", method="POST")
    def upload(
        title: str,
        doc: MultipartFile,
        other: MultipartFile = MultipartFile("other"),
        note: str = Parameter("note", default="none"),
    ) -> dict[str, Any]:
        seen.append(doc)
        handle = doc.open()
        seen_handles.append(handle)
        target = tmp_path / "saved.bin"
        doc.save_to_file(str(target))
        return {
            "title": title,
            "note": note,
            "name": doc.name,
            "filename": doc.filename,
            "content_type": doc.content_type,
            "size": len(doc.content),
            "saved": target.read_bytes() == doc.content,
            "is_empty": doc.is_empty,
            "other_empty": other is None or other.is_empty,
        }

    seen_handles: list[Any] = []
    app.seen_handles = seen_handles  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_multipart_file_and_fields(make_client, tmp_path, size):
    seen: list[MultipartFile] = []
    app = upload_app(seen, tmp_path)
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    body = multipart_body(
        {"title": "Hello World", "note": "n1"}, [("doc", "a.bin", "image/png", data)]
    )
    reply = make_client(app).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {
        "title": "Hello World",
        "note": "n1",
        "name": "doc",
        "filename": "a.bin",
        "content_type": "image/png",
        "size": size,
        "saved": True,
        "is_empty": False,
        "other_empty": True,
    }
    # The temporary file is gone once the request is over.
    handles = app.seen_handles  # type: ignore[attr-defined]
    assert handles and all(h.closed for h in handles)


@pytest.mark.parametrize("size", [10, 300 * 1024], ids=["in-memory", "spooled-to-disk"])
def test_closing_an_opened_upload_leaves_the_upload_open(make_client, tmp_path, size):
    """``with doc.open() as f:`` closed the upload itself: ``content`` and
    ``save_to_file`` then failed (a 500); each ``open()`` has its own position."""
    app = App()
    data = (bytes(range(256)) * (size // 256 + 1))[:size]

    @app.route("/upload", method="POST")
    def upload(doc: MultipartFile) -> dict[str, Any]:
        with doc.open() as file:
            head = file.read(4)
        first, second = doc.open(), doc.open()
        first.read(2)
        doc.save_to_file(tmp_path / "saved.bin")
        with doc.open() as file:  # as the temporary file's own fileno() did
            size = os.fstat(file.fileno()).st_size
        return {
            "fstat": size == len(data),
            "head": list(head),
            "content": doc.content == data,
            "saved": (tmp_path / "saved.bin").read_bytes() == data,
            "second": list(second.read(3)),
            "first": list(first.read(2)),
        }

    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", data)])
    reply = make_client(app).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {
        "fstat": True,
        "head": [0, 1, 2, 3],
        "content": True,
        "saved": True,
        "second": [0, 1, 2],
        "first": [2, 3],
    }


@pytest.mark.parametrize("size", [10, 300 * 1024], ids=["in-memory", "spooled-to-disk"])
def test_an_upload_read_after_its_request_is_an_error_not_empty(make_client, tmp_path, size):
    """Its temporary file is removed when the request ends: reading it later (a
    thread the controller started) read b"" and save_to_file wrote an empty file."""
    app = App()
    kept: list[MultipartFile] = []

    @app.route("/upload", method="POST")
    def upload(doc: MultipartFile) -> dict[str, Any]:
        kept.append(doc)
        return {"size": doc.size}

    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", b"d" * size)])
    reply = make_client(app).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200 and reply.json() == {"size": size}
    doc = kept[0]  # removed before a made answer (a dict) is sent
    with pytest.raises(ValueError, match="removed when its request ended"):
        doc.content
    with pytest.raises(ValueError, match="removed when its request ended"):
        doc.save_to_file(tmp_path / "late.bin")
    assert not (tmp_path / "late.bin").exists()
    assert (doc.size, doc.is_empty) == (size, False)


def files_app() -> App:
    app = App()

    @app.route("/all", method="POST")
    def every(docs: list[MultipartFile]) -> list[str]:
        return [f"{doc.filename}={doc.content.decode()}" for doc in docs]

    @app.route("/optional", method="POST")
    def optional(docs: list[MultipartFile] | None = None) -> Any:
        return {"docs": None if docs is None else len(docs)}

    @app.route("/empty", method="POST")
    def empty(docs: list[MultipartFile] = None) -> Any:  # type: ignore[assignment]  # noqa: RUF013
        return {"docs": docs}

    return app


def test_a_list_of_files_gets_every_file_part_of_its_name(make_client):
    """``<input type="file" multiple>``: 'docs: list[MultipartFile]' was a 400
    "Parameter[docs] is required." whatever files were sent."""
    client = make_client(files_app())
    files = [("docs", f"{n}.txt", "text/plain", n.encode()) for n in ("a", "b", "c")]
    body = multipart_body({"other": "x"}, files)
    reply = client.post("/all", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == ["a.txt=a", "b.txt=b", "c.txt=c"]
    assert client.post("/optional", headers=mp_headers(), body=body).json() == {"docs": 3}
    none = multipart_body({"other": "x"})
    assert client.post("/optional", headers=mp_headers(), body=none).json() == {"docs": None}
    assert client.post("/empty", headers=mp_headers(), body=none).json() == {"docs": []}
    reply = client.post("/all", headers=mp_headers(), body=none)
    assert (reply.status, reply.json()["explain"]) == (400, "Parameter[docs] is required.")
    reply = client.post("/all", headers=mp_headers(), body=multipart_body({"docs": "text"}))
    assert (reply.status, reply.json()["explain"]) == (400, "Parameter[docs] should be a file.")


def test_saving_an_empty_upload_writes_nothing(make_client, tmp_path):
    """As 0.22.x and naja-atra: a file input left empty must not empty the file
    already saved there (a profile picture the form did not change)."""
    app = App()

    @app.route("/avatar", method="POST")
    def avatar(img: MultipartFile) -> dict[str, Any]:
        img.save_to_file(tmp_path / "avatar.png")
        return {"empty": img.is_empty}

    (tmp_path / "avatar.png").write_bytes(b"old picture")
    client = make_client(app)
    empty = multipart_body(files=[("img", "", "application/octet-stream", b"")])
    reply = client.post("/avatar", headers=mp_headers(), body=empty)
    assert reply.json() == {"empty": True}
    assert (tmp_path / "avatar.png").read_bytes() == b"old picture"
    new = multipart_body(files=[("img", "a.png", "image/png", b"new picture")])
    assert client.post("/avatar", headers=mp_headers(), body=new).json() == {"empty": False}
    assert (tmp_path / "avatar.png").read_bytes() == b"new picture"


def test_an_upload_content_type_is_as_sent(make_client):
    """With its parameters, as 0.22.x gave it: the charset of an uploaded text file was
    dropped ('text/csv'), so the app could not decode it."""
    app = App()

    @app.route("/csv", method="POST")
    def csv(doc: MultipartFile, other: MultipartFile) -> list[str]:
        return [doc.content_type, other.content_type]

    files = [
        ("doc", "a.csv", "text/csv; charset=Shift_JIS", "名前".encode("shift_jis")),
        ("other", "b.bin", "image/png", b"png"),
    ]
    reply = make_client(app).post("/csv", headers=mp_headers(), body=multipart_body(files=files))
    assert reply.json() == ["text/csv; charset=Shift_JIS", "image/png"]


def test_an_upload_the_disk_cannot_take_is_a_503(make_client, monkeypatch, tmp_path, log_records):
    """A temporary folder that is full or gone (here: gone): a 503 and one warning,
    not a 500 with a traceback; a small upload (kept in memory) still works."""
    client = make_client(files_app())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    big = multipart_body(files=[("docs", "a.bin", "application/octet-stream", b"a" * 100_000)])
    reply = client.post("/all", headers=mp_headers(), body=big)
    assert reply.status == 503, reply.text
    assert reply.json()["explain"] == "The server cannot store the upload now."
    small = multipart_body(files=[("docs", "b.txt", "text/plain", b"b")])
    assert client.post("/all", headers=mp_headers(), body=small).json() == ["b.txt=b"]
    records = log_records.records
    assert not [r for r in records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("An upload could not be stored: [Errno 2] No such file")


def test_multipart_utf8_filename_star(make_client, tmp_path):
    # Inventory #13: filename*=UTF-8''... names.
    seen: list[MultipartFile] = []
    disposition = "form-data; name=\"doc\"; filename*=UTF-8''%E4%B8%AD%E6%96%87.txt"
    body = multipart_body(
        {"title": "t"}, [("doc", "", "text/plain", b"hi")], raw_disposition=disposition
    )
    reply = make_client(upload_app(seen, tmp_path)).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json()["filename"] == "中文.txt"


def disposition_app() -> App:
    app = App()

    @app.route("/fields", method="POST")
    def fields(request: Request) -> dict[str, Any]:
        return {
            name: [v.filename if isinstance(v, MultipartFile) else v for v in values]
            for name, values in request.parameters.items()
        }

    return app


@pytest.mark.parametrize(
    ("disposition", "fields"),
    [
        # A quoted value's text is no parameter (multipart's own search found
        # "; name=evil" in it, and the old name*/filename* search found "name*=").
        ('form-data; name="a"; filename*="UTF-8\'\'x; name=evil"', {"a": ["x; name=evil"]}),
        ('form-data; name="a"; x*="; name=evil"', {"a": ["X"]}),
        ("form-data; name=\"x; name*=UTF-8''evil\"", {"x; name*=UTF-8''evil": ["X"]}),
        (
            'form-data; name="f"; filename="x; filename*=UTF-8\'\'evil"',
            {"f": ["x; filename*=UTF-8''evil"]},
        ),
        ('form-data; name="a\\"; name=evil"', {'a"; name=evil': ["X"]}),
        ('form-data; name="a;b"; filename="c;d.txt"', {"a;b": ["c;d.txt"]}),
        ("form-data; name*=UTF-8''%E4%B8%AD", {"中": ["X"]}),
        ('form-data; name="f"; filename="C:\\\\dir\\\\a.txt"', {"f": ["a.txt"]}),
        ('form-data; name="a%22b"; filename="c%22d"', {'a"b': ['c"d']}),
        ('form-data; ; ; x; x; name="a"', {"a": ["X"]}),  # other parameters: ignored
    ],
)
def test_multipart_disposition_parameters_are_read_in_order(make_client, disposition, fields):
    body = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\nX\r\n--{BOUNDARY}--\r\n"
    reply = make_client(disposition_app()).post("/fields", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == fields


@pytest.mark.parametrize(
    ("filename", "kept"),
    [
        ('filename="../../evil.py"', "evil.py"),
        ('filename="/etc/cron.d/job"', "job"),
        ('filename="photos/2024/a.png"', "a.png"),  # a folder upload's relative path
        ('filename="..\\\\..\\\\evil.py"', "evil.py"),
        ("filename*=UTF-8''..%2F..%2Fevil.py", "evil.py"),
        ('filename=".."', ""),
        ('filename="a.txt"', "a.txt"),
    ],
)
def test_an_upload_filename_is_its_last_component(make_client, tmp_path, filename, kept):
    """0.22.x's README saved uploads as ``root + "/my_dev/imgs/" + img.filename``: a
    client's ``../`` wrote outside that folder. RFC 7578 4.2: no path, the name only."""
    imgs = tmp_path / "srv" / "imgs"  # deep enough that "../../" stays in tmp_path
    imgs.mkdir(parents=True)
    app = App()

    @app.route("/upload", method="POST")
    def upload(img: MultipartFile) -> dict[str, Any]:
        if img.filename:
            img.save_to_file(str(imgs) + "/" + img.filename)
        return {"filename": img.filename}

    disposition = f'form-data; name="img"; {filename}'
    body = multipart_body({}, [("img", "", "text/plain", b"x")], raw_disposition=disposition)
    reply = make_client(app).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.json() == {"filename": kept}
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["srv", "srv/imgs"] + ([f"srv/imgs/{kept}"] if kept else [])


@pytest.mark.parametrize(
    ("headers", "explain"),
    [
        (
            'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"',
            "A multipart part has two Content-Disposition headers.",
        ),
        (
            'Content-Disposition: form-data; name="a"; name="b"',
            "A multipart part's Content-Disposition has two name parameters.",
        ),
        (
            'Content-Disposition: form-data; name="a"; filename="b"; FILENAME="c"',
            "A multipart part's Content-Disposition has two filename parameters.",
        ),
    ],
)
def test_multipart_part_read_two_ways_is_400(make_client, headers, explain):
    """Two dispositions or two names: a proxy may read one, the app the other."""
    body = f"--{BOUNDARY}\r\n{headers}\r\n\r\nX\r\n--{BOUNDARY}--\r\n"
    reply = make_client(disposition_app()).post("/fields", headers=mp_headers(), body=body)
    assert reply.status == 400
    assert reply.json()["explain"] == explain


def test_multipart_bad_charsets_are_400(make_client, tmp_path):
    """A part's charset and a ``filename*`` charset that are not text encodings."""
    client = make_client(upload_app([], tmp_path))
    disposition = "form-data; name=\"doc\"; filename*=undefined''%41"
    body = multipart_body({"title": "t"}, [("doc", "", "text/plain", b"hi")], disposition)
    assert client.post("/upload", headers=mp_headers(), body=body).status == 400
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n'
        "Content-Type: text/plain; charset=undefined\r\n\r\nt\r\n"
    ).encode()
    body = part + multipart_body(files=[("doc", "a.txt", "text/plain", b"hi")])
    assert client.post("/upload", headers=mp_headers(), body=body).status == 400


def text_part(name: str, value: bytes, content_type: str = "") -> bytes:
    """One text field of a multipart body, its value as given (any bytes)."""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


CAFE_LATIN1 = text_part("name", "café".encode("latin-1"))


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        # HTML forms with accept-charset send the charset in a _charset_ field, anywhere
        ([text_part("_charset_", b"ISO-8859-1"), CAFE_LATIN1], {"name": ["café"]}),
        ([CAFE_LATIN1, text_part("_charset_", b"latin-1")], {"name": ["café"]}),
        (
            [text_part("_charset_", b"Shift_JIS"), text_part("name", "日本".encode("shift_jis"))],
            {"name": ["日本"]},
        ),
        ([CAFE_LATIN1], {"name": ["caf\ufffd"]}),  # no _charset_: UTF-8, as in the query
        ([text_part("_charset_", b"ascii"), CAFE_LATIN1], {"name": ["caf\ufffd"]}),
        (  # a part's own charset wins
            [
                text_part("_charset_", b"latin-1"),
                text_part("name", "日本".encode(), "text/plain; charset=utf-8"),
                text_part("name", b"caf\xe9"),
            ],
            {"name": ["日本", "café"]},
        ),
    ],
)
def test_multipart_text_fields_are_decoded_in_the_charset_field_s_charset(
    make_any_client, parts, expected
):
    """RFC 7578 4.6: a form's ``_charset_`` field names the charset of the text fields
    that have none; they were read as UTF-8 (a 400 for a legacy form's bytes)."""
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    reply = make_any_client(disposition_app()).post("/fields", headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert {k: v for k, v in reply.json().items() if k != "_charset_"} == expected


@pytest.mark.parametrize(
    ("parts", "explain"),
    [
        (
            [text_part("_charset_", b"bogus"), CAFE_LATIN1],
            "Unknown or unsupported charset: bogus",
        ),
        (
            [CAFE_LATIN1, text_part("_charset_", b"utf-7")],  # a codec, no charset of the web
            "Unknown or unsupported charset: utf-7",
        ),
    ],
)
def test_multipart_charset_fields_naming_no_charset_are_400(make_any_client, parts, explain):
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    reply = make_any_client(disposition_app()).post("/fields", headers=mp_headers(), body=body)
    assert reply.status == 400
    assert reply.json()["explain"] == explain


def test_multipart_text_field_where_file_expected_is_400(make_client, tmp_path):
    body = multipart_body({"title": "t", "doc": "not a file"})
    reply = make_client(upload_app([], tmp_path)).post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 400
    assert "file" in reply.json()["explain"]


@pytest.mark.parametrize(
    ("content_type", "body", "needle"),
    [
        ("multipart/form-data", b"--x--\r\n", "boundary"),
        (f"multipart/form-data; boundary={BOUNDARY}", b"garbage without boundary", "multipart"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            multipart_body({"title": "t"})[:-20],
            "multipart",
        ),
    ],
    ids=["no-boundary", "bad-body", "truncated"],
)
def test_multipart_malformed_is_400(make_client, tmp_path, content_type, body, needle):
    reply = make_client(upload_app([], tmp_path)).post(
        "/upload", headers={"Content-Type": content_type}, body=body
    )
    assert reply.status == 400
    assert needle in reply.json()["explain"].lower()


def test_multipart_too_many_parts_is_413(make_client, tmp_path):
    body = multipart_body({f"f{i}": "v" for i in range(20)})
    reply = make_client(upload_app([], tmp_path), max_parts=5).post(
        "/upload", headers=mp_headers(), body=body
    )
    assert reply.status == 413


def test_multipart_too_many_files_is_413(make_client, tmp_path):
    """Each file part may hold a temporary file open: ``max_files`` (100) bounds them."""
    files = [("doc", f"f{i}.txt", "text/plain", b"x") for i in range(101)]
    body = multipart_body({"title": "t"}, files)
    assert (
        make_client(upload_app([], tmp_path))
        .post("/upload", headers=mp_headers(), body=body)
        .status
        == 413
    )
    client = make_client(upload_app([], tmp_path), max_files=2)
    body = multipart_body({"title": "t"}, files[:2])
    assert client.post("/upload", headers=mp_headers(), body=body).status == 200
    body = multipart_body({"title": "t"}, files[:3])
    reply = client.post("/upload", headers=mp_headers(), body=body)
    assert reply.status == 413
    assert "max_files" in reply.json()["explain"]


def test_multipart_part_header_too_large_is_413(make_client, tmp_path):
    body = multipart_body({"x" * 3000: "v"})
    reply = make_client(upload_app([], tmp_path), max_part_header_size=1024).post(
        "/upload", headers=mp_headers(), body=body
    )
    assert reply.status == 413


@pytest.mark.parametrize(("lines", "status"), [(3, 200), (6, 413)])
def test_multipart_part_header_block_is_bounded(make_client, lines, status):
    """``max_part_header_size`` bounds the header block of a part, not each line of
    it: 14 lines of 7000 bytes (98 KB) went through the 8 KiB default."""
    headers = "".join(f"X-Pad-{i}: {'a' * 900}\r\n" for i in range(lines))
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n{headers}\r\n'
        f"1\r\n--{BOUNDARY}--\r\n"
    )
    client = make_client(disposition_app(), max_part_header_size=4096)
    reply = client.post("/fields", headers=mp_headers(), body=body)
    assert reply.status == status, reply.text
    if status == 413:
        assert reply.json()["explain"] == "A multipart part's header block exceeds 4096 bytes."


def test_chunked_multipart_upload(serve, tmp_path):
    seen: list[MultipartFile] = []
    live = serve(upload_app(seen, tmp_path))
    data = b"0123456789abcdef" * 20000
    body = multipart_body({"title": "c"}, [("doc", "c.txt", "text/plain", data)])
    conn = live.connection()
    conn.request(
        "POST",
        "/upload",
        body=(body[i : i + 7777] for i in range(0, len(body), 7777)),
        headers=mp_headers(),
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["size"] == len(data)
    conn.close()


# -- uploads behind a streamed response ---------------------------------------------


class CloseLog:
    """Counts ``MultipartFile.close`` per upload and keeps the handles the app opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[int, int] = {}
        self.handles: list[Any] = []
        self.uploads: list[MultipartFile] = []
        self._lock = threading.Lock()
        real_close = MultipartFile.close
        log = self

        def close(upload: MultipartFile) -> None:
            with log._lock:
                log.calls[id(upload)] = log.calls.get(id(upload), 0) + 1
            real_close(upload)

        monkeypatch.setattr(MultipartFile, "close", close)

    def opened(self, upload: MultipartFile) -> Any:
        handle = upload.open()
        with self._lock:
            self.uploads.append(upload)
            self.handles.append(handle)
        return handle

    def wait_all_closed(self, count: int, timeout: float = 5.0) -> None:
        """The response may reach the client just before the server's cleanup runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.handles) == count and all(h.closed for h in self.handles):
                    if all(self.calls.get(id(u)) for u in self.uploads):
                        break
            time.sleep(0.01)
        time.sleep(0.05)  # a second close would come right after the first
        with self._lock:
            assert len(self.handles) == count
            assert all(h.closed for h in self.handles), "an upload was left open"
            assert [self.calls.get(id(u), 0) for u in self.uploads] == [1] * count


def streaming_upload_app(log: CloseLog) -> App:
    app = App()
    octet = {"Content-Type": "application/octet-stream"}

    @app.route("/generator", method="POST")
    def generator(doc: MultipartFile) -> Response:
        handle = log.opened(doc)

        def chunks() -> Any:
            while piece := handle.read(7000):
                yield piece

        return Response(headers=octet, body=chunks())

    @app.route("/async-generator", method="POST")
    async def async_generator(doc: MultipartFile) -> Response:
        handle = log.opened(doc)

        async def chunks() -> Any:
            while piece := handle.read(7000):
                yield piece

        return Response(headers=octet, body=chunks())

    @app.route("/iterator", method="POST")
    def iterator(doc: MultipartFile) -> Response:
        handle = log.opened(doc)
        return Response(headers=octet, body=iter(lambda: handle.read(5000), b""))

    @app.route("/file-object", method="POST")
    def file_object(doc: MultipartFile) -> Any:
        return log.opened(doc)  # the upload's own file object, returned as the body

    @app.route("/write-bytes", method="POST")
    def write_bytes(doc: MultipartFile, response: Response) -> None:
        handle = log.opened(doc)
        response.add_header("Content-Type", "application/octet-stream")
        while piece := handle.read(9000):
            response.write_bytes(piece)
        response.close()

    @app.route("/two-files", method="POST")
    def two_files(doc: MultipartFile, other: MultipartFile) -> Response:
        first, second = log.opened(doc), log.opened(other)
        return Response(headers=octet, body=(b for h in (first, second) for b in iter(h.read, b"")))

    return app


STREAM_PATHS = ["/generator", "/async-generator", "/iterator", "/file-object", "/write-bytes"]


@pytest.mark.parametrize("size", [1000, 300 * 1024], ids=["in-memory", "spooled-to-disk"])
@pytest.mark.parametrize("path", STREAM_PATHS)
def test_upload_stays_open_until_streamed_response_is_sent(make_client, monkeypatch, path, size):
    """A streamed body built on an upload's stream is read after the controller has
    returned: the upload is closed once the response is sent, not before, and once."""
    log = CloseLog(monkeypatch)
    client = make_client(streaming_upload_app(log))
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", data)])
    reply = client.post(path, headers=mp_headers(), body=body)
    assert reply.status == 200, reply.text
    assert reply.body == data
    log.wait_all_closed(1)


def test_every_upload_stays_open_for_the_stream(make_client, monkeypatch):
    log = CloseLog(monkeypatch)
    client = make_client(streaming_upload_app(log))
    a, b = b"A" * 100_000, b"B" * 2000
    files = [("doc", "a", "text/plain", a), ("other", "b", "text/plain", b)]
    reply = client.post("/two-files", headers=mp_headers(), body=multipart_body(files=files))
    assert reply.status == 200, reply.text
    assert reply.body == a + b
    log.wait_all_closed(2)


def test_upload_closed_when_client_leaves_mid_stream(serve, monkeypatch):
    """A client that goes away during a streamed answer: the upload is closed all the same."""
    log = CloseLog(monkeypatch)
    app = App()
    sent = threading.Event()

    @app.route("/endless", method="POST")
    def endless(doc: MultipartFile) -> Response:
        handle = log.opened(doc)

        def chunks() -> Any:
            for _ in range(20_000):  # bounded: ~1.3 GB, never reached
                handle.seek(0)
                yield handle.read()
                sent.set()

        return Response(headers={"Content-Type": "application/octet-stream"}, body=chunks())

    live = serve(app)
    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", b"z" * 65536)])
    head = (
        f"POST /endless HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(head + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert sent.wait(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    log.wait_all_closed(1, timeout=15)


def test_upload_closed_when_streamed_body_fails(make_client, monkeypatch):
    log = CloseLog(monkeypatch)
    app = App()

    @app.route("/fails", method="POST")
    def fails(doc: MultipartFile) -> Response:
        handle = log.opened(doc)

        def chunks() -> Any:
            yield handle.read(10)
            raise RuntimeError("the stream broke")

        return Response(headers={"Content-Type": "application/octet-stream"}, body=chunks())

    client = make_client(app)
    body = multipart_body(files=[("doc", "d.bin", "application/octet-stream", b"q" * 100)])
    # The body is cut short (no final chunk), also by the TestClient (a truncated reply).
    with pytest.raises(http.client.IncompleteRead):
        client.post("/fails", headers=mp_headers(), body=body)
    log.wait_all_closed(1)


def closing_app(tmp_path: Path, events: list[str]) -> App:
    app = App()
    (tmp_path / "data.bin").write_bytes(b"F" * 200_000)

    @app.route("/open-file")
    def open_file() -> Any:
        handle = open(tmp_path / "data.bin", "rb")  # the server closes it
        events.append("opened")
        app.handle = handle  # type: ignore[attr-defined]
        return handle

    @app.route("/generator")
    def generator() -> Response:
        def chunks() -> Any:
            try:
                for _ in range(20_000):  # bounded: 1.3 GB, never all read
                    yield b"G" * 65536
            finally:
                events.append("finally")

        return Response(headers={"Content-Type": "application/octet-stream"}, body=chunks())

    @app.route("/async-generator")
    async def async_generator() -> Response:
        async def chunks() -> Any:
            try:
                for _ in range(3):
                    yield b"A" * 1000
            finally:
                events.append("async finally")

        return Response(headers={"Content-Type": "application/octet-stream"}, body=chunks())

    return app


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_returned_file_and_generators_are_closed_once_sent(make_client, tmp_path):
    events: list[str] = []
    app = closing_app(tmp_path, events)
    client = make_client(app)
    reply = client.get("/open-file")
    assert reply.status == 200 and reply.body == b"F" * 200_000
    assert _wait_for(lambda: app.handle.closed)  # type: ignore[attr-defined]
    reply = client.get("/async-generator")
    assert reply.body == b"A" * 3000
    assert _wait_for(lambda: "async finally" in events)


def test_generator_is_closed_when_the_client_leaves(serve, tmp_path):
    events: list[str] = []
    live = serve(closing_app(tmp_path, events))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /generator HTTP/1.1\r\nHost: x\r\n\r\n")
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
        while b"GGGG" not in received:  # the stream started: one left before its first
            received += sock.recv(65536)  # step never runs, nor its finally
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    assert _wait_for(lambda: "finally" in events, timeout=15)
    assert events.count("finally") == 1


class _ReadLog(io.BytesIO):
    """A file object that records the size of every piece the server takes from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.pieces: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.pieces.append(len(piece))
        return piece

    def readline(self, size: int | None = -1) -> bytes:
        piece = super().readline(size)
        self.pieces.append(len(piece))
        return piece

    def __next__(self) -> bytes:
        piece = super().__next__()
        self.pieces.append(len(piece))
        return piece


@pytest.mark.parametrize("source", ["file", "upload"])
def test_a_returned_file_object_is_read_in_blocks(make_any_client, source):
    """A file object returned as the body is read in blocks, not line by line: a file
    without line ends (an image, an upload) was one 'line', read into memory whole."""
    data = bytes(range(1, 256)).replace(b"\n", b"") * 16_500  # 4 MiB, no line end
    files: list[_ReadLog] = []
    app = App()

    @app.route("/file")
    def file() -> Any:
        files.append(_ReadLog(data))
        return files[-1]

    @app.route("/upload", method="POST")
    def upload(doc: MultipartFile) -> Any:
        return doc.open()

    client = make_any_client(app)
    if source == "file":
        reply = client.get("/file")
        assert max(files[0].pieces) <= 1024 * 1024, "the file was read in one piece"
        assert _wait_for(lambda: files[0].closed)
    else:
        upload = multipart_body(files=[("doc", "d.bin", "application/octet-stream", data)])
        reply = client.post("/upload", headers=mp_headers(), body=upload)
    assert reply.status == 200
    assert reply.body == data


# -- limits: 413 before the body is read to the end -----------------------------------


def limits_app(tmp_path: Path) -> App:
    app = upload_app([], tmp_path)

    @app.route("/json", method="POST")
    def echo(data: JSONBody) -> dict[str, Any]:
        return {"got": data}

    return app


def _expect_early_413(port: int, head: bytes, first: bytes) -> None:
    started = time.monotonic()
    resp = raw_exchange(port, head, [first], timeout=10)
    assert resp.status == 413
    assert resp.getheader("Connection", "").lower() == "close"
    assert time.monotonic() - started < 5


def test_declared_length_over_limit_is_413_without_reading(serve, tmp_path):
    live = serve(limits_app(tmp_path), max_body_size=100_000)
    head = (
        b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    _expect_early_413(live.port, head, b"{" * 1000)


def test_a_declared_length_one_byte_over_the_limit_is_413_before_the_body(serve, tmp_path):
    """The limit is inclusive: ``max_body_size`` bytes are read, one more is refused
    from the head alone (the client has sent none of its body)."""
    live = serve(limits_app(tmp_path), max_body_size=1000, body_timeout=30)
    head = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    _expect_early_413(live.port, head + b"Content-Length: 1001\r\n\r\n", b"")
    body = b'{"a": "' + b"a" * 991 + b'"}'
    reply = raw_exchange(live.port, head + b"Content-Length: 1000\r\n\r\n", [body], timeout=10)
    assert reply.status == 200


@pytest.mark.parametrize("size", [1000, 1001])
def test_a_chunked_buffered_body_is_refused_one_byte_past_the_limit(serve, tmp_path, size):
    live = serve(limits_app(tmp_path), max_body_size=1000)
    body = b'{"a": "' + b"a" * (size - 9) + b'"}'
    head = (
        b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    reply = raw_exchange(live.port, head, [chunked(body)], timeout=10)
    assert reply.status == (200 if size == 1000 else 413)


def test_streamed_body_over_limit_is_413_before_end(serve, tmp_path):
    live = serve(limits_app(tmp_path), max_body_size=100_000)
    head = (
        b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    _expect_early_413(live.port, head, chunked(b"[" * 60_000, b"1" * 60_000, end=False))


def test_upload_over_limit_is_413_before_end(serve, tmp_path):
    live = serve(limits_app(tmp_path), max_upload_size=200_000)
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="doc"; filename="a"\r\n\r\n'
    head = (
        f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    _expect_early_413(
        live.port, head, chunked(part.encode(), b"u" * 150_000, b"v" * 150_000, end=False)
    )


@pytest.mark.parametrize("size", [1000, 1001])
def test_a_multipart_text_field_is_bounded_by_max_body_size(make_client, size):
    """A text part is kept in memory: ``max_body_size`` bounds it (inclusive), while the
    whole upload is bounded by the larger ``max_upload_size``."""
    app = App()

    @app.route("/note", method="POST")
    def note(note: str) -> dict[str, Any]:
        return {"length": len(note)}

    client = make_client(app, max_body_size=1000)
    body = multipart_body(fields={"note": "n" * size})
    reply = client.post("/note", headers=mp_headers(), body=body)
    assert reply.status == (200 if size == 1000 else 413)
    if size == 1000:
        assert reply.json() == {"length": 1000}


def _raw_part(extra_headers: int, disposition: str) -> bytes:
    lines = [f"Content-Disposition: {disposition}"]
    lines += [f"X-Extra-{i}: {i}" for i in range(extra_headers)]
    head = "\r\n".join(lines)
    return f"--{BOUNDARY}\r\n{head}\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(("headers", "status"), [(16, 200), (17, 413)])
def test_a_multipart_part_has_at_most_16_header_lines(make_client, headers, status):
    app = App()

    @app.route("/note", method="POST")
    def note(note: str) -> str:
        return note

    body = _raw_part(headers - 1, 'form-data; name="note"')
    reply = make_client(app).post("/note", headers=mp_headers(), body=body)
    assert reply.status == status
    if status == 200:
        assert reply.text == "value"


@pytest.mark.parametrize(("block", "status"), [(200, 200), (201, 413)])
def test_a_part_header_block_is_bounded_inclusively(make_client, block, status):
    """``max_part_header_size`` counts each header line as name + value + 4 bytes."""
    app = App()

    @app.route("/note", method="POST")
    def note(note: str) -> str:
        return note

    disposition = 'form-data; name="note"'
    pad = "p" * (block - (19 + len(disposition) + 4) - (5 + 4))  # beside "X-Pad"
    body = (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nX-Pad: {pad}\r\n\r\n"
        f"value\r\n--{BOUNDARY}--\r\n"
    ).encode()
    reply = make_client(app, max_part_header_size=200).post(
        "/note", headers=mp_headers(), body=body
    )
    assert reply.status == status


def test_a_file_part_without_a_content_type_is_octet_stream(make_client):
    """RFC 7578 4.4: a part without ``Content-Type`` defaults to text/plain, but a
    file's is unknown: ``application/octet-stream``, as in 0.22.x."""
    app = App()

    @app.route("/file", method="POST")
    def file(doc: MultipartFile) -> dict[str, Any]:
        return {"type": doc.content_type, "name": doc.filename}

    body = _raw_part(0, 'form-data; name="doc"; filename="d.bin"')
    reply = make_client(app).post("/file", headers=mp_headers(), body=body)
    assert reply.json() == {"type": "application/octet-stream", "name": "d.bin"}


@pytest.mark.parametrize(("epilogue", "status"), [(100, 200), (5000, 413)])
def test_the_epilogue_after_the_closing_boundary_counts_toward_the_upload_limit(
    make_client, epilogue, status
):
    """Bytes after the closing boundary are read and dropped, but not without bound."""
    app = App()

    @app.route("/note", method="POST")
    def note(note: str) -> str:
        return note

    body = _raw_part(0, 'form-data; name="note"') + b"e" * epilogue
    client = make_client(app, max_upload_size=2000)
    reply = client.post("/note", headers=mp_headers(), body=body)
    assert reply.status == status


def test_declared_upload_over_limit_is_413(serve, tmp_path):
    live = serve(limits_app(tmp_path), max_upload_size=200_000)
    head = (
        f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nContent-Length: 900000000\r\n\r\n"
    ).encode()
    _expect_early_413(live.port, head, b"--")


def test_connection_still_usable_after_small_rejected_body(serve, tmp_path):
    # A 400 for a small, fully sent body keeps the connection alive.
    live = serve(limits_app(tmp_path))
    conn = live.connection()
    conn.request("POST", "/json", body=b"{bad", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400
    resp.read()
    conn.request("POST", "/json", body=b'{"a":1}', headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read()) == {"got": {"a": 1}}
    conn.close()


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Type: application/json\r\n",
        # Buffered, as a JSON body is: max_body_size is theirs (they were given
        # max_upload_size, so the 413 came after 100 Continue and max_body_size bytes).
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"Content-Type: multipart/form-data; boundary=a\r\nContent-Encoding: gzip\r\n",
    ],
    ids=["json", "multipart-mixed", "gzip-multipart"],
)
def test_expect_continue_over_limit_gets_413_instead_of_100(serve, tmp_path, headers):
    live = serve(limits_app(tmp_path), max_body_size=1000)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /json HTTP/1.1\r\nHost: x\r\n"
            + headers
            + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 413 ")


def test_expect_continue_within_limit_gets_100(serve, tmp_path):
    live = serve(limits_app(tmp_path))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b'{"a":7}')
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b'{"got": {"a": 7}}')
