"""Request bodies over real sockets: forms, JSON, bytes, streaming multipart, limits."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from simple_http_server import App, BytesBody, JSONBody, MultipartFile, Parameter
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
        data={"name": "n", "tags": ["t"]},
        headers={"content-type": "application/x-www-form-urlencoded", "content-length": "12"},
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


def test_urlencoded_undecodable_text_is_400(make_client):
    reply = make_client(form_app()).post(
        "/form",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=b"name=\xff\xfe&tags=y",
    )
    assert reply.status == 400


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
        return {"got": data}

    return app


@pytest.mark.parametrize("payload", [{"a": [1, 2], "b": "ü"}, [1, "two", {"three": 3}]])
def test_json_body_dict_or_list(make_client, payload):
    reply = make_client(json_app()).post(
        "/json",
        headers={"Content-Type": "application/json; charset=utf-8"},
        body=json.dumps(payload).encode(),
    )
    assert reply.status == 200, reply.text
    assert reply.json() == {"got": payload}


def test_invalid_json_is_400_with_message(make_client):
    # Defect 17: invalid JSON used to drop the connection.
    reply = make_client(json_app()).post(
        "/json", headers={"Content-Type": "application/json"}, body=b'{"a": '
    )
    assert reply.status == 400
    assert "JSON" in reply.json()["explain"]


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
    conn.request("POST", "/json", body=b"[1]", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read()) == {"got": [1]}
    conn.close()


def test_expect_continue_over_limit_gets_413_instead_of_100(serve, tmp_path):
    live = serve(limits_app(tmp_path), max_body_size=1000)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 413 ")


def test_expect_continue_within_limit_gets_100(serve, tmp_path):
    live = serve(limits_app(tmp_path))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"[7]")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b'{"got": [7]}')
