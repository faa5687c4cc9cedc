"""Static resources and ``StaticFile`` over real sockets: mounts, traversal, caching, ranges."""

from __future__ import annotations

import datetime
import gzip
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from simple_http_server import App, Headers, Response, StaticFile, logger

from ..conftest import LogRecords, small_send_buffer_listener

INDEX = b"<!doctype html><title>hi</title>" * 10


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """www/ (served) next to secret.txt (never served) and a symlink leaving www/."""
    www = tmp_path / "www"
    (www / "sub" / "deep").mkdir(parents=True)
    (www / "index.html").write_bytes(INDEX)
    (www / "app.js").write_bytes(b"console.log(1);")
    (www / "style.css").write_bytes(b"body{}")
    (www / "sub" / "nested.css").write_bytes(b"p{}")
    (www / "sub" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 4)
    (www / "中文.txt").write_text("ni hao", encoding="utf-8")
    (www / "empty.txt").write_bytes(b"")
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET")
    (www / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (www / "escape_dir").symlink_to(tmp_path)
    (www / "inside_link.js").symlink_to(www / "app.js")
    return www


def static_app(site: Path) -> App:
    app = App()

    @app.route("/download")
    def download() -> StaticFile:
        return StaticFile(
            str(site / "sub" / "deep" / "data.bin"),
            "application/x-custom",
            download_name="résumé 2024.bin",
        )

    @app.route("/missing")
    def missing() -> StaticFile:
        return StaticFile(str(site / "nope.bin"))

    @app.route("/guess")
    def guess() -> StaticFile:
        return StaticFile(str(site / "style.css"), None)

    return app


def mounts(site: Path) -> dict[str, str]:
    return {
        "/public/**": str(site),
        "/flat/*": str(site),
        "/p/": str(site),
        "*.js": str(site),
        "**.css": str(site),
    }


def raw_get(port: int, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send a request line exactly as given; return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/public/index.html", INDEX),
        ("/public/sub/deep/data.bin", bytes(range(256)) * 4),
        ("/flat/app.js", b"console.log(1);"),
        ("/p/style.css", b"body{}"),
        ("/app.js", b"console.log(1);"),
        ("/style.css", b"body{}"),
        ("/sub/nested.css", b"p{}"),
        ("/public/%E4%B8%AD%E6%96%87.txt", b"ni hao"),
        ("/inside_link.js", b"console.log(1);"),
        ("/public/empty.txt", b""),
    ],
)
def test_mount_patterns_serve_files(make_client, site, path, expected):
    reply = make_client(static_app(site), mounts(site)).get(path)
    assert reply.status == 200, path
    assert reply.body == expected
    assert reply.header("Content-Length") == str(len(expected))


@pytest.mark.parametrize(
    "path",
    [
        "/flat/sub/nested.css",
        "/sub/x/app.js",
        "/public/",
        "/public/sub",
        "/public/nope.txt",
        "/p/sub/nested.css",
    ],
)
def test_mount_patterns_refuse_what_they_do_not_cover(make_client, site, path):
    assert make_client(static_app(site), mounts(site)).get(path).status == 404


@pytest.mark.parametrize(
    ("path", "explain"),
    [
        ("/public/nope.txt", "Cannot find file for this url."),
        ("/public/sub", "Cannot find file for this url."),  # a folder: no file
        ("/flat/nope.txt", "Cannot find file for this url."),
        ("/nope.js", "Cannot find file for this url."),
        ("/flat/sub/nope.css", "Cannot find file for this url."),  # **.css maps it
        ("/flat/sub/x.txt", "Cannot find a controller for your path"),  # /flat/* does not
        ("/public/", "Cannot find a controller for your path"),
        ("/elsewhere/x.txt", "Cannot find a controller for your path"),
    ],
)
def test_a_missing_file_a_pattern_maps_is_a_404_of_a_file(make_any_client, site, path, explain):
    """0.22.x's 404 for a path a resource pattern maps to no file; ours said that no
    controller was found, as for a path no pattern maps."""
    reply = make_any_client(static_app(site), mounts(site)).get(path)
    assert reply.status == 404
    message = "Not Found" if explain.startswith("Cannot find file") else "Controller Not Found"
    assert reply.json() == {"code": 404, "message": message, "explain": explain}


def test_overlapping_patterns_are_tried_in_order(make_client, site, tmp_path):
    """``**.css`` (first) and ``/theme/**`` both match ``/theme/dark.css``: the file is
    in the second folder only, and served from there (0.22.x looked in the first: 404)."""
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "dark.css").write_bytes(b"dark{}")
    client = make_client(App(), {"**.css": str(site), "/theme/**": str(theme)})
    assert client.get("/theme/dark.css").body == b"dark{}"
    assert client.get("/sub/nested.css").body == b"p{}"  # the first folder still serves
    assert client.get("/theme/none.css").status == 404


def test_content_type_and_validators(make_client, site):
    client = make_client(static_app(site), mounts(site))
    reply = client.get("/public/index.html")
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert reply.header("Accept-Ranges") == "bytes"
    st = os.stat(site / "index.html")
    assert reply.header("Last-Modified") == formatdate(st.st_mtime, usegmt=True)
    etag = reply.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"')
    assert client.get("/app.js").header("Content-Type") == "text/javascript; charset=utf-8"
    bin_type = client.get("/public/sub/deep/data.bin").header("Content-Type")
    assert bin_type == "application/octet-stream"
    assert client.get("/guess").header("Content-Type") == "text/css; charset=utf-8"


TRAVERSALS = [
    b"/public/../secret.txt",
    b"/public/%2e%2e/secret.txt",
    b"/public/%2E%2E/%2e%2E/secret.txt",
    b"/public/..%2fsecret.txt",
    b"/public/sub%2f..%2f..%2fsecret.txt",
    b"/public/..%5csecret.txt",
    b"/public/sub\\..\\..\\secret.txt",
    b"/public/index.html%00.txt",
    b"/public//etc/passwd",
    b"/public/%2fetc%2fpasswd",
    b"/public/escape.txt",
    b"/public/escape_dir/secret.txt",
    b"/escape.txt",
    b"/../secret.txt",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"http://x/public/../../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_traversal_vectors_get_404(serve, site, target):
    assert (site / "escape.txt").is_symlink()
    live = serve(static_app(site), mounts(site) | {"*.txt": str(site)})
    status, body = raw_get(live.port, target)
    assert status == 404, target
    assert b"SECRET" not in body and b"root:" not in body


def test_head_sends_headers_only(serve, site):
    live = serve(static_app(site), mounts(site))
    conn = live.connection()
    conn.request("HEAD", "/public/index.html")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") == str(len(INDEX))
    assert resp.read() == b""
    conn.request("GET", "/public/index.html")  # the connection is still in sync
    resp = conn.getresponse()
    assert resp.read() == INDEX
    conn.close()


def test_if_none_match_and_if_modified_since_give_304(make_client, site):
    client = make_client(static_app(site), mounts(site))
    first = client.get("/public/index.html")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        reply = client.get("/public/index.html", headers=headers)
        assert reply.status == 304, headers
        assert reply.body == b""
        assert reply.header("ETag") == etag
    # A non-matching tag wins over a matching date (RFC 9110 13.2.2).
    reply = client.get(
        "/public/index.html", headers={"If-None-Match": '"other"', "If-Modified-Since": modified}
    )
    assert reply.status == 200
    old = formatdate(os.stat(site / "index.html").st_mtime - 3600, usegmt=True)
    assert client.get("/public/index.html", headers={"If-Modified-Since": old}).status == 200
    assert client.get("/public/index.html", headers={"If-Modified-Since": "garbage"}).status == 200


def test_if_match_and_if_unmodified_since_give_412(make_client, site):
    client = make_client(static_app(site), mounts(site))
    path = "/public/index.html"
    first = client.get(path)
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    old = formatdate(os.stat(site / "index.html").st_mtime - 3600, usegmt=True)
    for headers in (
        {"If-Match": '"other"'},
        {"If-Match": f"W/{etag}"},  # If-Match compares strongly: a weak tag never matches
        {"If-Unmodified-Since": old},
        {"If-Match": '"other"', "If-None-Match": etag},  # If-Match is evaluated first
    ):
        reply = client.get(path, headers=headers)
        assert reply.status == 412, headers
        assert reply.body == b""
    for headers in (
        {"If-Match": etag},
        {"If-Match": f'"other", {etag}'},
        {"If-Match": "*"},
        {"If-Unmodified-Since": modified},
        {"If-Unmodified-Since": "garbage"},  # an invalid date is ignored
        {"If-Match": etag, "If-Unmodified-Since": old},  # If-Match wins over the date
    ):
        reply = client.get(path, headers=headers)
        assert (reply.status, reply.body) == (200, INDEX), headers
    assert client.get(path, headers={"If-Match": etag, "If-None-Match": etag}).status == 304


@pytest.mark.parametrize("zone", ["EST+5", "JST-9"])
def test_dates_without_a_zone_are_gmt(make_client, site, zone, monkeypatch):
    """asctime dates carry no zone; HTTP says GMT, whatever the server's local time."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        client = make_client(static_app(site), mounts(site))
        path = "/public/index.html"
        mtime = int(os.stat(site / "index.html").st_mtime)
        before, after = (time.asctime(time.gmtime(mtime + shift)) for shift in (-3600, 3600))
        assert client.get(path, headers={"If-Modified-Since": before}).status == 200
        assert client.get(path, headers={"If-Modified-Since": after}).status == 304
        assert client.get(path, headers={"If-Unmodified-Since": before}).status == 412
        assert client.get(path, headers={"If-Unmodified-Since": after}).status == 200
        exact = time.asctime(time.gmtime(mtime))
        ranged = client.get(path, headers={"Range": "bytes=0-1", "If-Range": exact})
        assert ranged.status == 206
    finally:
        monkeypatch.undo()
        time.tzset()


def test_file_sent_with_another_status_ignores_range_and_validators(make_client, site):
    """An error page (or ``return 410, StaticFile(...)``) is sent whole: Range and the
    conditional headers are about the resource, not about this answer."""
    app = App()
    page = site / "sub" / "deep" / "data.bin"

    @app.error_message("404")
    def not_found(code: int, message: str, explain: str = "") -> StaticFile:
        return StaticFile(str(page), "application/octet-stream")

    @app.route("/gone")
    def gone() -> tuple[int, StaticFile]:
        return 410, StaticFile(str(page), "application/octet-stream")

    client = make_client(app, mounts(site))
    etag = client.get("/public/sub/deep/data.bin").header("ETag")
    for path, status in (("/nowhere", 404), ("/gone", 410)):
        for headers in (
            {"Range": "bytes=0-1"},
            {"If-None-Match": "*"},
            {"If-None-Match": etag},
            {"If-Match": '"other"'},
        ):
            reply = client.get(path, headers=headers)
            assert (reply.status, reply.body) == (status, DATA), (path, headers)
            assert reply.header("Content-Range") is None


DATA = bytes(range(256)) * 4  # data.bin, 1024 bytes


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=1020-5000", 1020, 1023),
        ("bytes=-5000", 0, 1023),
        ("bytes=5-5", 5, 5),
    ],
)
def test_range_gives_206(make_client, site, spec, start, end):
    reply = make_client(static_app(site), mounts(site)).get(
        "/public/sub/deep/data.bin", headers={"Range": spec}
    )
    assert reply.status == 206
    assert reply.body == DATA[start : end + 1]
    assert reply.header("Content-Range") == f"bytes {start}-{end}/1024"
    assert reply.header("Content-Length") == str(end - start + 1)


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_gives_416(make_client, site, spec):
    reply = make_client(static_app(site), mounts(site)).get(
        "/public/sub/deep/data.bin", headers={"Range": spec}
    )
    assert reply.status == 416
    assert reply.header("Content-Range") == "bytes */1024"


@pytest.mark.parametrize(
    "spec",
    # str.isdigit() is True for "²" (latin-1 0xb2): such ranges are ignored, never a 500.
    [
        "bytes=5-1",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes=x-",
        "bytes=\xb2-",
        "bytes=0-\xb9",
        "bytes=-\xb3",
    ],
)
def test_ignored_range_gives_200(make_client, site, spec):
    reply = make_client(static_app(site), mounts(site)).get(
        "/public/sub/deep/data.bin", headers={"Range": spec}
    )
    assert reply.status == 200
    assert reply.body == DATA


def test_if_range(make_client, site):
    client = make_client(static_app(site), mounts(site))
    first = client.get("/public/sub/deep/data.bin")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    path = "/public/sub/deep/data.bin"
    assert client.get(path, headers={"Range": "bytes=0-1", "If-Range": etag}).status == 206
    assert client.get(path, headers={"Range": "bytes=0-1", "If-Range": modified}).status == 206
    stale = client.get(path, headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
    assert stale.status == 200 and stale.body == DATA
    weak = client.get(path, headers={"Range": "bytes=0-1", "If-Range": f"W/{etag}"})
    assert weak.status == 200


def test_static_file_download_name(make_client, site):
    reply = make_client(static_app(site), mounts(site)).get("/download")
    assert reply.status == 200
    assert reply.body == DATA
    assert reply.header("Content-Type") == "application/x-custom"
    disposition = reply.header("Content-Disposition")
    assert disposition == (
        "attachment; filename=\"r_sum_ 2024.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.bin"
    )


def test_static_file_missing_is_404(make_client, site):
    reply = make_client(static_app(site), mounts(site)).get("/missing")
    assert reply.status == 404
    assert reply.json()["explain"] == "Cannot find file for this url."  # the original's


def test_large_file_is_streamed_whole(serve, tmp_path):
    """More than one sendfile slice (asyncio: 4 MiB each), whole and from an odd offset."""
    big = tmp_path / "big.bin"
    content = os.urandom(5 << 20)
    big.write_bytes(content)
    live = serve(App(), {"/files/*": str(tmp_path)})
    conn = live.connection()
    conn.request("GET", "/files/big.bin")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") == str(len(content))
    assert resp.read() == content
    conn.request("GET", "/files/big.bin", headers={"Range": "bytes=65530-65545"})
    resp = conn.getresponse()
    assert resp.status == 206
    assert resp.read() == content[65530:65546]
    conn.request("GET", "/files/big.bin", headers={"Range": "bytes=100-"})
    resp = conn.getresponse()
    assert resp.status == 206
    assert resp.read() == content[100:]  # the same connection goes on afterwards
    conn.request("GET", "/files/big.bin", headers={"Range": "bytes=0-0"})
    resp = conn.getresponse()
    assert resp.read() == content[:1]
    conn.close()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head of a raw socket, and the body bytes read past it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head ended: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def check_shrinking_file(
    serve: Callable[..., Any],
    folder: Path,
    wrap: Callable[[socket.socket], socket.socket],
    **config: Any,
) -> Any:
    """A file truncated mid-send cannot fill its Content-Length: the server must
    close the connection (a short body the client can see), not leave it open
    as if the response were complete.  Returns the live server, still up."""
    size = 48 << 20
    big = folder / "big.bin"
    big.write_bytes(b"0123456789abcdef" * (size // 16))
    app = App()

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    live = serve(app, {"/files/*": str(folder)}, **config)
    records = LogRecords()
    logger.add_handler(records)
    try:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # the server blocks early
        raw.settimeout(10)
        raw.connect((live.host, live.port))
        sock = wrap(raw)
        sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_head(sock)
        assert b" 200 " in head.split(b"\r\n")[0]
        assert f"content-length: {size}".encode() in head.lower()
        os.truncate(big, 1 << 20)
        received = len(body)
        while True:  # a hang here (socket.timeout) is the defect
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
        sock.close()
        time.sleep(0.2)  # the server logs once it sees the short file, maybe after the close
        logger.flush()
    finally:
        logger.remove_handler(records)
    assert received < size
    # An expected runtime condition: one warning line (path, expected and sent bytes),
    # no traceback, nothing at ERROR.
    shrank = [r for r in records.records if "shrank" in r.getMessage()]
    assert len(shrank) == 1, [r.getMessage() for r in records.records]
    message = shrank[0].getMessage()
    assert shrank[0].levelno == logging.WARNING, message
    assert str(big) in message and f"{size} bytes" in message, message
    assert "\n" not in message and not shrank[0].exc_text and not shrank[0].exc_info
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    return live


def test_file_that_shrinks_while_sent_closes_the_connection(serve, tmp_path):
    live = check_shrinking_file(serve, tmp_path, lambda sock: sock)
    conn = live.connection()
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    conn.close()


def test_routes_win_over_resources(make_client, site):
    app = App()

    @app.route("/public/index.html")
    def shadow() -> str:
        return "from the controller"

    assert make_client(app, mounts(site)).get("/public/index.html").text == "from the controller"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_resources_answer_other_methods_405(make_client, site, method):
    """RFC 9110 15.5.6: the file is there, the method is not one it answers."""
    client = make_client(App(), mounts(site))
    reply = client.request(method, "/public/index.html", body=b"x")
    assert (reply.status, reply.header("Allow")) == (405, "GET, HEAD")
    assert reply.json() == {"code": 405, "message": "Method Not Allowed", "explain": ""}
    assert client.request(method, "/public/no-such-file.html").status == 404
    assert client.request(method, "/public/sub").status == 404  # a folder is no file


def test_resource_405_names_the_routes_methods_too(make_client, site):
    app = App()

    @app.route("/public/index.html", method="PUT")
    def replace() -> str:
        return "replaced"

    client = make_client(app, mounts(site))
    assert client.request("PUT", "/public/index.html").text == "replaced"
    assert client.get("/public/index.html").body == INDEX
    reply = client.request("DELETE", "/public/index.html")
    assert (reply.status, reply.header("Allow")) == (405, "GET, HEAD, PUT")


def test_resource_405_goes_to_the_405_error_page_not_the_404_one(make_client, site):
    app = App()

    @app.error_message("404")
    def not_found() -> str:
        return "404 page"

    @app.error_message("405")
    def not_allowed(message: str) -> str:
        return f"405 page: {message}"

    client = make_client(app, mounts(site))
    reply = client.post("/public/index.html")
    assert (reply.status, reply.text, reply.header("Allow")) == (
        405,
        "405 page: Method Not Allowed",
        "GET, HEAD",
    )
    assert client.post("/public/nothing.html").text == "404 page"


def swapping_site(tmp_path: Path) -> tuple[Path, App]:
    """www/d/f.txt and www/g.txt (served) next to out/ (never served); the app's filter
    runs after the file was found and checked, before it is opened: there it puts, in
    place of the checked name, what ``?swap=`` says."""
    www, out = tmp_path / "www", tmp_path / "out"
    (www / "d").mkdir(parents=True)
    out.mkdir()
    (www / "d" / "f.txt").write_bytes(b"public")
    (www / "g.txt").write_bytes(b"public")
    (out / "f.txt").write_bytes(b"OUTSIDE-SECRET")
    app = App()

    @app.request_filter("/r/**")
    def swap(ctx: Any) -> None:
        kind = ctx.request.parameter.get("swap")
        if kind == "dir":  # the folder on the path becomes a symlink leaving www/
            os.rename(www / "d", tmp_path / "d.moved")
            os.symlink(out, www / "d")
        elif kind == "file":  # the file becomes a symlink to a file outside
            os.unlink(www / "g.txt")
            os.symlink(out / "f.txt", www / "g.txt")
        elif kind == "fifo":  # the file becomes a FIFO (opening it would wait for a writer)
            os.unlink(www / "g.txt")
            os.mkfifo(www / "g.txt")
        ctx.do_chain()

    return www, app


def release_fifo(path: Path) -> None:
    """Give a reader blocked on opening the FIFO its end of file (the defect's hang)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader waits: nothing to release
        pass


@pytest.mark.parametrize(
    ("swap", "path"),
    [("dir", "/r/d/f.txt"), ("file", "/r/g.txt"), ("fifo", "/r/g.txt")],
)
def test_a_name_swapped_after_the_check_is_not_followed(make_any_client, tmp_path, swap, path):
    """README: symlinks leaving the folder are answered 404, never served; a symlink
    swapped in between the check of a name and the opening of the file too (TOCTOU):
    the file opened is the one checked, or none (404). Before, the swapped-in symlink
    was followed (the outside file served) and a FIFO held the request until a writer came."""
    www, app = swapping_site(tmp_path)
    client = make_any_client(app, {"/r/**": str(www)})
    assert client.get(path).body == b"public"
    release = threading.Timer(3, release_fifo, (www / "g.txt",))
    release.start()
    try:
        started = time.monotonic()
        reply = client.get(f"{path}?swap={swap}")
        took = time.monotonic() - started
    finally:
        release.cancel()
    assert b"OUTSIDE" not in reply.body
    assert reply.status == 404, reply.body
    assert took < 2.5  # a FIFO is refused at once, not opened and waited on


def test_symlinks_that_stay_inside_are_still_followed(make_any_client, tmp_path):
    """Files and folders reached through symlinks inside the folder are served (the
    path is resolved first, then opened below the folder without symlinks)."""
    www = tmp_path / "www"
    (www / "real" / "deep").mkdir(parents=True)
    (www / "real" / "deep" / "f.txt").write_bytes(b"deep")
    (www / "alias").symlink_to(www / "real")
    (www / "rel_alias").symlink_to("real/deep")
    (www / "real" / "link.txt").symlink_to("deep/f.txt")
    client = make_any_client(App(), {"/r/**": str(www)})
    for path in ("/r/alias/deep/f.txt", "/r/rel_alias/f.txt", "/r/real/link.txt"):
        reply = client.get(path)
        assert (reply.status, reply.body) == (200, b"deep"), path
        assert reply.header("Content-Length") == "4"


def test_a_path_failing_to_resolve_is_404_not_500(make_client, tmp_path, monkeypatch):
    """os.path.realpath raises when a symlink it reads is swapped at that moment
    (EINVAL, ENOENT): the request is a 404, not a 500 with a traceback."""
    www = tmp_path / "www"
    (www / "d").mkdir(parents=True)
    (www / "d" / "f.txt").write_bytes(b"public")
    real_realpath = os.path.realpath

    def racing_realpath(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path).endswith("f.txt"):
            raise OSError(22, "Invalid argument")
        return real_realpath(path, *args, **kwargs)

    client = make_client(App(), {"/r/**": str(www)})
    records = LogRecords()
    logger.add_handler(records)
    monkeypatch.setattr(os.path, "realpath", racing_realpath)
    try:
        reply = client.get("/r/d/f.txt")
    finally:
        monkeypatch.undo()
        logger.remove_handler(records)
    assert reply.status == 404
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


HUGE = "9" * 5000  # more digits than int() converts (4300)


@pytest.mark.parametrize(
    ("spec", "status", "start", "end"),
    [
        (f"bytes=0-{HUGE}", 206, 0, 1023),
        (f"bytes=-{HUGE}", 206, 0, 1023),
        (f"bytes=1000-{HUGE}", 206, 1000, 1023),
        (f"bytes={'0' * 5000}5-{'0' * 5000}9", 206, 5, 9),
        (f"bytes={HUGE}-", 416, 0, 0),
        (f"bytes={HUGE}-{HUGE}", 416, 0, 0),
        (f"bytes={'0' * 5000}-0", 206, 0, 0),
        (f"bytes=-{'0' * 5000}", 416, 0, 0),
        (f"bytes={HUGE}-5", 200, 0, 1023),  # last before first: invalid, ignored
        (f"bytes=1{HUGE}-{HUGE}", 200, 0, 1023),
    ],
    ids=lambda v: v if len(str(v)) < 20 else f"{str(v)[:12]}...({len(str(v))})",
)
def test_range_positions_of_any_length(make_client, site, spec, status, start, end):
    """RFC 9110 14.1.2: a last position past the end means the end, a first one past it
    is unsatisfiable, whatever the number of digits. Before, more than 4300 digits
    were a 500 with a traceback logged on every request."""
    client = make_client(static_app(site), mounts(site))
    records = LogRecords()
    logger.add_handler(records)
    try:
        reply = client.get("/public/sub/deep/data.bin", headers={"Range": spec})
    finally:
        logger.remove_handler(records)
    assert reply.status == status
    if status == 206:
        assert reply.body == DATA[start : end + 1]
        assert reply.header("Content-Range") == f"bytes {start}-{end}/1024"
    elif status == 416:
        assert reply.header("Content-Range") == "bytes */1024"
    else:
        assert reply.body == DATA
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "value",
    [
        f"Mon, 01 Jan {HUGE} 00:00:00 GMT",
        f"Mon, {HUGE} Jan 2024 00:00:00 GMT",
        f"Mon, 01 Jan 2024 {HUGE}:00:00 GMT",
        f"Mon, 01 Jan 2024 00:00:00 +{HUGE}",
        "Fri, 31 Dec 9999 23:59:59 -2359",
        "Mon, 01 Jan 0000 00:00:00 GMT",
        "Mon, 01 Jan 2024 00:00:00 +9999",
        HUGE,
    ],
    ids=lambda v: v if len(v) < 40 else f"{v[:20]}...({len(v)})",
)
def test_odd_dates_in_conditional_headers_are_no_500(make_client, site, value):
    """If-Modified-Since, If-Unmodified-Since and If-Range with a date that does not
    parse, overflows or has a zone that does not parse are read as what they parse to
    (email.utils), or as absent: never an error."""
    client = make_client(static_app(site), mounts(site))
    path = "/public/sub/deep/data.bin"
    records = LogRecords()
    logger.add_handler(records)
    try:
        assert client.get(path, headers={"If-Modified-Since": value}).status in (200, 304)
        assert client.get(path, headers={"If-Unmodified-Since": value}).status in (200, 412)
        ranged = client.get(path, headers={"Range": "bytes=0-1", "If-Range": value})
        assert ranged.status in (200, 206)
    finally:
        logger.remove_handler(records)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


def download_app(site: Path) -> App:
    app = App()

    @app.route("/report/{name}")
    def report(name: str) -> StaticFile:
        return StaticFile(str(site / "app.js"), None, download_name=name + ".txt")

    return app


@pytest.mark.parametrize(
    ("target", "disposition"),
    [
        (
            "/report/r%C3%A9sum%C3%A9",
            "filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt",
        ),
        ("/report/r%E9sum%E9", "filename=\"r_sum_.txt\"; filename*=UTF-8''r%E9sum%E9.txt"),
        ("/report/%FF", "filename=\"_.txt\"; filename*=UTF-8''%FF.txt"),
    ],
)
def test_download_name_with_undecodable_bytes(make_client, site, target, disposition):
    """A path value holding a byte that is no UTF-8 (%FF, a Latin-1 %E9) goes back as
    that byte in filename*, with an ASCII filename; before, a 500 (UnicodeEncodeError)."""
    reply = make_client(download_app(site), mounts(site)).get(target)
    assert reply.status == 200
    assert reply.body == b"console.log(1);"
    assert reply.header("Content-Disposition") == f"attachment; {disposition}"


def test_dotfiles_are_served(make_client, tmp_path):
    """README: dotfiles are served as in 0.22.x (.well-known/ has to be, for ACME);
    mapping a folder is publishing all of it."""
    www = tmp_path / "www"
    (www / ".well-known" / "acme-challenge").mkdir(parents=True)
    (www / ".well-known" / "acme-challenge" / "token").write_bytes(b"proof")
    (www / ".env").write_bytes(b"KEY=1")
    client = make_client(App(), {"/public/**": str(www)})
    assert client.get("/public/.well-known/acme-challenge/token").body == b"proof"
    assert client.get("/public/.env").body == b"KEY=1"


def test_compressed_files_have_the_compressions_type(make_any_client, tmp_path):
    """d.json.gz is gzip bytes sent without Content-Encoding: application/gzip, as the
    original's application/octet-stream was no lie either; before, application/json
    with a charset (and a text/ type gzipped again by the gzip option)."""
    www = tmp_path / "www"
    www.mkdir()
    packed = {"d.json.gz": b"\x1f\x8bjson", "a.tar.gz": b"\x1f\x8btar", "t.txt.bz2": b"BZh" * 400}
    for name, data in packed.items():
        (www / name).write_bytes(data)
    client = make_any_client(App(), {"/p/**": str(www)}, gzip_content_types={"text/"})
    expected = {"d.json.gz": "application/gzip", "a.tar.gz": "application/gzip"}
    expected["t.txt.bz2"] = "application/x-bzip2"
    for name, media in expected.items():
        reply = client.get(f"/p/{name}", headers={"Accept-Encoding": "gzip"})
        assert (reply.status, reply.header("Content-Type")) == (200, media), name
        assert reply.header("Content-Encoding") is None, name
        assert reply.body == packed[name], name


def test_empty_file_suffix_range_is_the_whole_file(make_client, site):
    """RFC 9110 14.1.3: on an empty file a suffix range (bytes=-n, n > 0) is satisfiable
    and no 206 can carry it, so the answer is the (empty) file; bytes=0- is not (416)."""
    client = make_client(static_app(site), mounts(site))
    reply = client.get("/public/empty.txt", headers={"Range": "bytes=-5"})
    assert (reply.status, reply.body, reply.header("Content-Length")) == (200, b"", "0")
    assert reply.header("Content-Range") is None
    assert client.get("/public/empty.txt", headers={"Range": "bytes=0-"}).status == 416
    assert client.get("/public/empty.txt", headers={"Range": "bytes=-0"}).status == 416


def test_a_static_file_path_with_a_nul_byte_is_404(make_any_client, tmp_path):
    """A StaticFile path built from a request value holding %00 names no file: 404 in
    every front end, as a missing one; before, a 500 with a traceback (ValueError)."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n")
    app = App()

    @app.route("/f/{name}")
    def f(name: str) -> StaticFile:
        return StaticFile(str(tmp_path / name), None)

    records = LogRecords()
    logger.add_handler(records)
    try:
        client = make_any_client(app)
        assert client.get("/f/r.csv").body == b"a,b\n"
        reply = client.get("/f/r.csv%00x")
        assert reply.status == 404
        assert reply.json()["explain"] == "Cannot find file for this url."
    finally:
        logger.remove_handler(records)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


LAST_MODIFIED = "Sat, 29 Oct 1994 19:43:31 GMT"


def own_headers_app(path: Path) -> App:
    """Controllers that set headers of their own next to a StaticFile."""
    app = App()

    @app.route("/type")
    def own_type() -> Any:
        return Headers({"Content-Type": "text/csv; charset=latin-1"}), StaticFile(str(path))

    @app.route("/validators")
    def validators() -> Any:
        own = {"ETag": '"v1"', "Last-Modified": LAST_MODIFIED, "Cache-Control": "max-age=60"}
        return Headers(own), StaticFile(str(path), None)

    @app.route("/disposition")
    def disposition(response: Response) -> StaticFile:
        response.set_header("Content-Disposition", "inline")
        return StaticFile(str(path), None, download_name="x.csv")

    @app.route("/encoded")
    def encoded() -> Any:  # bytes stored compressed, served as such
        return Headers({"Content-Encoding": "gzip"}), StaticFile(str(path), None)

    @app.route("/weak")
    def weak() -> Any:
        return Headers({"ETag": 'W/"w1"'}), StaticFile(str(path), None)

    @app.route("/no-ranges")
    def no_ranges() -> Any:
        return Headers({"Accept-Ranges": "none"}), StaticFile(str(path), None)

    @app.route("/length/{size}")
    def length(size: str) -> Any:
        return Headers({"Content-Length": size}), StaticFile(str(path), None)

    return app


def test_a_controllers_headers_win_over_the_files_own(make_any_client, tmp_path):
    """Each header once: the controller's Content-Type, ETag, Last-Modified,
    Content-Disposition and Accept-Ranges are sent instead of the file's, as 0.22.x let
    a Content-Type header win; before, both went out (two Content-Type, two ETag...)."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n")
    client = make_any_client(own_headers_app(tmp_path / "r.csv"))
    reply = client.get("/type")
    assert reply.get_all("Content-Type") == ["text/csv; charset=latin-1"]
    reply = client.get("/validators")
    assert reply.get_all("ETag") == ['"v1"']
    assert reply.get_all("Last-Modified") == [LAST_MODIFIED]
    assert reply.get_all("Content-Type") == ["text/csv; charset=utf-8"]
    assert reply.get_all("Content-Disposition") == []
    reply = client.get("/disposition")
    assert reply.get_all("Content-Disposition") == ["inline"]
    reply = client.get("/no-ranges", headers={"Range": "bytes=0-1"})
    assert (reply.status, reply.body, reply.get_all("Accept-Ranges")) == (
        200,
        b"a,b\n1,2\n",
        ["none"],
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"If-None-Match": '"v1"'}, 304),
        ({"If-None-Match": 'W/"v1"'}, 304),
        ({"If-Modified-Since": LAST_MODIFIED}, 304),
        ({"If-Match": '"v1"'}, 200),
        ({"If-Match": '"other", "v1"'}, 200),
        ({"If-Match": '"v1,v2"'}, 412),  # one tag holding a comma (RFC 9110 8.8.3)
        ({"If-Unmodified-Since": "Sat, 29 Oct 1994 19:43:30 GMT"}, 412),
        ({"Range": "bytes=0-1", "If-Range": '"v1"'}, 206),
        ({"Range": "bytes=0-1", "If-Range": LAST_MODIFIED}, 206),
    ],
)
def test_conditions_use_the_validators_the_controller_sent(
    make_any_client, tmp_path, headers, status
):
    """A controller's ETag and Last-Modified are the validators the client has: the
    conditions compare with them (before, with the file's, never sent alone)."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n")
    reply = make_any_client(own_headers_app(tmp_path / "r.csv")).get("/validators", headers=headers)
    assert reply.status == status
    assert reply.get_all("ETag") == ['"v1"']


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Range": "bytes=100-"}, 416), ({"If-None-Match": "*"}, 304), ({"If-Match": '"x"'}, 412)],
)
def test_an_answer_without_the_file_drops_its_content_encoding(
    make_any_client, tmp_path, headers, status
):
    """A 416, 304 or 412 carries none of the file's bytes: no coding of them either."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n")
    client = make_any_client(own_headers_app(tmp_path / "r.csv"))
    assert client.get("/encoded").header("Content-Encoding") == "gzip"
    reply = client.get("/encoded", headers=headers)
    assert reply.status == status
    assert reply.header("Content-Encoding") is None


@pytest.mark.parametrize(
    ("path", "if_range"),
    [
        ("/weak", 'W/"w1"'),  # RFC 9110 13.1.5: a weak tag never holds, even the same one
        ("/validators", "Sat, 29 Oct 1994 19:43:32 GMT"),  # a date holds only when exact
    ],
    ids=["weak tag", "later date"],
)
def test_an_if_range_that_does_not_hold_gets_the_whole_file(
    make_any_client, tmp_path, path, if_range
):
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n")
    client = make_any_client(own_headers_app(tmp_path / "r.csv"))
    reply = client.get(path, headers={"Range": "bytes=0-1", "If-Range": if_range})
    assert (reply.status, reply.body) == (200, b"a,b\n1,2\n")
    assert client.get(path, headers={"Range": "bytes=0-1"}).status == 206  # the range is good


@pytest.mark.parametrize("size", ["8", "3", "999"])
def test_a_controllers_content_length_on_a_file_is_replaced(make_any_client, tmp_path, size):
    """The server frames a file answer: a Content-Length the controller set goes, right or
    wrong; before, a 500 (conflicting Content-Length) or, under WSGI, two of them."""
    (tmp_path / "r.csv").write_bytes(b"a,b\n1,2\n")
    client = make_any_client(own_headers_app(tmp_path / "r.csv"))
    reply = client.get(f"/length/{size}")
    assert (reply.status, reply.body, reply.get_all("Content-Length")) == (
        200,
        b"a,b\n1,2\n",
        ["8"],
    )
    reply = client.get(f"/length/{size}", headers={"Range": "bytes=0-1"})
    assert (reply.status, reply.body, reply.get_all("Content-Length")) == (206, b"a,", ["2"])


def test_a_mounted_folder_that_is_a_symlink_is_followed_as_it_is_now(make_any_client, tmp_path):
    """A deploy that swaps the mounted symlink (current -> releases/2) is served at once,
    as 0.22.x served it; before, the folder's real path was fixed at start, so the old
    release went on being served (or 404 once removed) until a restart."""
    for release in ("1", "2"):
        (tmp_path / "releases" / release).mkdir(parents=True)
        (tmp_path / "releases" / release / "v.txt").write_text(f"release {release}")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "1")
    client = make_any_client(App(), {"/s/**": str(current)})
    assert client.get("/s/v.txt").body == b"release 1"
    swap = tmp_path / "current.new"
    swap.symlink_to(tmp_path / "releases" / "2")
    os.replace(swap, current)
    assert client.get("/s/v.txt").body == b"release 2"
    (tmp_path / "releases" / "2" / "v.txt").unlink()
    assert client.get("/s/v.txt").status == 404


def test_a_list_of_dates_in_a_conditional_header_is_ignored(serve, site):
    """RFC 9110 13.1.3 / 13.1.4: If-Modified-Since or If-Unmodified-Since holding more
    than one date (sent on two lines, joined) is ignored; before, the first date was read
    (a 304 or a 412 decided by one of several dates)."""
    live = serve(static_app(site), mounts(site))
    mtime = os.stat(site / "index.html").st_mtime
    later = formatdate(mtime + 3600, usegmt=True).encode()
    earlier = formatdate(mtime - 3600, usegmt=True).encode()
    for name, first, second in (
        (b"If-Modified-Since", later, earlier),
        (b"If-Unmodified-Since", earlier, later),
    ):
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"GET /public/index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + name + b": " + first + b"\r\n" + name + b": " + second + b"\r\n\r\n"
            )  # fmt: skip
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), (name, data[:40])
        assert data.endswith(INDEX)


def test_a_file_modified_in_the_future_is_last_modified_now(make_any_client, tmp_path):
    """RFC 9110 8.8.2.1: Last-Modified is never later than Date; a file whose mtime is
    ahead (unpacked from a machine whose clock is ahead) says now, and is not answered
    304 for that date. Before, the future date went out as it was."""
    (tmp_path / "f.txt").write_bytes(b"future")
    ahead = time.time() + 86400
    os.utime(tmp_path / "f.txt", (ahead, ahead))
    client = make_any_client(App(), {"/p/**": str(tmp_path)})
    reply = client.get("/p/f.txt")
    modified = parsedate_to_datetime(reply.header("Last-Modified") or "")
    assert modified.timestamp() <= time.time() + 1
    if reply.header("Date") is not None:  # the TestClient sends none
        date = parsedate_to_datetime(reply.header("Date") or "")
        # Under ASGI the Date is uvicorn's, which it refreshes once a second: up to 1 s old.
        slack = datetime.timedelta(seconds=1 if client.front_end == "asgi" else 0)
        assert modified <= date + slack
    again = client.get("/p/f.txt", headers={"If-Modified-Since": reply.header("Last-Modified")})
    assert (again.status, again.body) == (200, b"future")


@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_a_file_changed_while_gzipped_keeps_to_its_size(serve, tmp_path, change):
    """The gzip form sends the bytes its ETag describes, as the identity form does: a
    file that grows mid-send is cut at its size, and one that shrinks ends the
    connection without the last chunk (the client sees a short body, one warning).
    Before, it read to the end: the grown file's new bytes went out, and a shrunk file
    ended as a complete answer, the client none the wiser."""
    size = 24 << 20
    content = os.urandom(size)  # incompressible: the server blocks on the socket early
    big = tmp_path / "big.txt"
    big.write_bytes(content)
    live = serve(
        App(),
        {"/files/*": str(tmp_path)},
        listener=small_send_buffer_listener(),
        gzip_content_types={"text/plain"},
        gzip_compress_level=1,
    )
    records = LogRecords()
    logger.add_handler(records)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # the server blocks early
        sock.settimeout(10)
        sock.connect((live.host, live.port))
        conn = http.client.HTTPConnection(live.host, live.port, timeout=10)
        conn.sock = sock
        conn.request("GET", "/files/big.txt", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
        if change == "grow":
            with big.open("ab") as f:
                f.write(b"appended" * 4096)
            assert gzip.decompress(resp.read()) == content
        else:
            os.truncate(big, 1 << 20)
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                resp.read()
        conn.close()
        time.sleep(0.2)  # the server logs once it sees the short file, maybe after the close
        logger.flush()
    finally:
        logger.remove_handler(records)
    shrank = [r for r in records.records if "shrank" in r.getMessage()]
    assert len(shrank) == (1 if change == "shrink" else 0)
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in shrank)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


def test_a_head_with_range_gets_the_gets_206_head_and_other_methods_ignore_range(
    make_any_client, tmp_path
):
    """RFC 9110 9.3.2: a HEAD is answered the head its GET would get, with a Range the
    206 one (as nginx and Apache answer); range handling is defined for GET only, so a
    POST answered with a StaticFile ignores it (RFC 9110 14.2). Every front end agrees."""
    (tmp_path / "f.txt").write_bytes(b"0123456789" * 10)
    app = App()

    @app.route("/dl", method=["GET", "POST"])
    def dl() -> StaticFile:
        return StaticFile(str(tmp_path / "f.txt"), "text/plain")

    client = make_any_client(app, {"/r/*": str(tmp_path)})
    for path in ("/r/f.txt", "/dl"):
        got = client.get(path, headers={"Range": "bytes=0-9"})
        head = client.request("HEAD", path, headers={"Range": "bytes=0-9"})
        assert (got.status, got.body) == (206, b"0123456789"), path
        assert (head.status, head.body) == (206, b""), path
        for name in ("Content-Range", "Content-Length", "ETag", "Content-Type"):
            assert head.header(name) == got.header(name), (path, name)
    posted = client.post("/dl", headers={"Range": "bytes=0-9"})
    assert (posted.status, len(posted.body), posted.header("Content-Range")) == (200, 100, None)
