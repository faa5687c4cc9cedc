"""Static resolution, range parsing, validators and the gzip policy, without sockets."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simple_http_server.config import ServerConfig
from simple_http_server.dispatch import static
from simple_http_server.dispatch.compression import GzipPolicy, accepts_gzip, add_vary
from simple_http_server.dispatch.dispatcher import make_request
from simple_http_server.dispatch.static import (
    Resources,
    attachment,
    guess_type,
    open_inside,
    parse_range,
    plain_segments,
    plan_file,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.js").write_text("1")
    (root / "a" / "mid.css").write_text("2")
    (root / "a" / "b" / "low.css").write_text("3")
    (tmp_path / "outside.js").write_text("secret")
    (root / "link_out.js").symlink_to(tmp_path / "outside.js")
    (root / "a" / "dir_out").symlink_to(tmp_path)
    (root / "link_in.js").symlink_to(root / "top.js")
    return root


def test_mount_forms(tree: Path):
    real = os.path.realpath
    res = Resources({"/s/*": str(tree), "/r/**": str(tree), "/p/": str(tree)})
    assert res.resolve("/s/top.js") == real(tree / "top.js")
    assert res.resolve("/s/a/mid.css") is None
    assert res.resolve("/r/a/b/low.css") == real(tree / "a" / "b" / "low.css")
    assert res.resolve("/p/top.js") == real(tree / "top.js")
    assert res.resolve("/p/a/mid.css") is None
    suffix = Resources({"*.js": str(tree), "**.css": str(tree)})
    assert suffix.resolve("/top.js") == real(tree / "top.js")
    assert suffix.resolve("/a/mid.css") == real(tree / "a" / "mid.css")
    assert suffix.resolve("/a/top.js") is None
    assert suffix.resolve("/top.css") is None


@pytest.mark.parametrize(
    "path",
    [
        "/r/../outside.js",
        "/r/a/../../outside.js",
        "/r/./top.js",
        "/r//top.js",
        "/r/a\\..\\top.js",
        "/r/top.js\0",
        "/r/link_out.js",
        "/r/a/dir_out/outside.js",
        "/r/a",
        "/r/",
        "r/top.js",
        "/r/" + "/etc/passwd",
    ],
)
def test_refused_paths(tree: Path, path: str):
    assert (tree / "link_out.js").resolve().exists()  # refused, not missing
    assert Resources({"/r/**": str(tree), "*.js": str(tree)}).resolve(path) is None


def test_symlink_inside_root_is_served(tree: Path):
    found = Resources({"/r/**": str(tree)}).resolve("/r/link_in.js")
    assert found == os.path.realpath(tree / "top.js")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "a", "b", "top.js", "%2e", "\\", "dir_out"])))
def test_resolution_never_leaves_the_root(tmp_path_factory, segments):
    base = tmp_path_factory.getbasetemp() / "prop"
    root = base / "root"
    if not root.exists():
        (root / "a" / "b").mkdir(parents=True)
        (root / "top.js").write_text("x")
        (base / "top.js").write_text("secret")
        (root / "dir_out").symlink_to(base)
    found = Resources({"/r/**": str(root), "**.js": str(root)}).resolve("/r/" + "/".join(segments))
    real_root = os.path.realpath(root)
    assert found is None or os.path.commonpath([real_root, found]) == real_root


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=3-100", 10, (3, 9)),
        (" bytes = 2 - 4 ", 10, (2, 4)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-", 0, False),
        ("bytes=-1", 0, None),  # satisfiable (RFC 9110 14.1.3): the whole, empty, file
        ("bytes=4-2", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("bytes=-", 10, None),
        ("bytes=a-b", 10, None),
        ("bytes=+1-2", 10, None),
        ("lines=1-2", 10, None),
        ("bytes", 10, None),
        ("bytes=\xb2-", 10, None),  # "²".isdigit() is True; int("²") fails
        ("bytes=0-\u0663", 10, None),  # ARABIC-INDIC DIGIT THREE
        # Positions of any length (int() refuses more than 4300 digits):
        ("bytes=0-" + "9" * 5000, 10, (0, 9)),
        ("bytes=-" + "9" * 5000, 10, (0, 9)),
        ("bytes=" + "9" * 5000 + "-", 10, False),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5000, 10, False),
        ("bytes=" + "9" * 5000 + "-" + "9" * 4999, 10, None),
        ("bytes=" + "0" * 5000 + "3-" + "0" * 5000 + "4", 10, (3, 4)),
        ("bytes=-" + "0" * 5000, 10, False),
        ("bytes=0-18446744073709551616", 10, (0, 9)),
        ("bytes=18446744073709551615-", 1 << 63, False),
        ("bytes=-18446744073709551616", 1 << 63, (0, (1 << 63) - 1)),
    ],
    ids=lambda v: repr(v) if len(str(v)) < 30 else f"{str(v)[:15]}...({len(str(v))})",
)
def test_parse_range(header: str, size: int, expected):
    assert parse_range(header, size) == expected


def _request(headers: dict[str, str], method: str = "GET"):
    return make_request(method, "/f", list(headers.items()))


def test_plan_file_validators(tree: Path):
    info = os.stat(tree / "top.js")
    plain = plan_file(_request({}), info, "text/javascript")
    etag = dict(plain.headers)["ETag"]
    assert plain.status == 200 and plain.length == info.st_size
    assert plan_file(_request({"If-None-Match": etag}), info, "x").status == 304
    assert plan_file(_request({"If-None-Match": etag}, "POST"), info, "x").status == 200
    zipped = plan_file(_request({}), info, "x", gzip=True)
    gz_etag = dict(zipped.headers)["ETag"]
    assert gz_etag != etag
    # Weak comparison: either form's tag validates the other form's cache entry.
    assert plan_file(_request({"If-None-Match": gz_etag}), info, "x").status == 304
    assert plan_file(_request({"If-None-Match": etag}), info, "x", gzip=True).status == 304
    ranged = plan_file(_request({"Range": "bytes=0-0"}), info, "x", gzip=True)
    assert ranged.status == 200  # gzip answers never honor ranges


def test_attachment_header():
    assert attachment("a b.txt") == "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
    value = attachment('日本"\\.txt')
    assert value.startswith("attachment; filename=\"____.txt\"; filename*=UTF-8''")
    assert "%E6%97%A5" in value


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # a path value holding undecodable bytes (surrogateescape): the bytes themselves
        ("r\udce9sum\udce9.pdf", "filename=\"r_sum_.pdf\"; filename*=UTF-8''r%E9sum%E9.pdf"),
        ("\udcff", "filename=\"_\"; filename*=UTF-8''%FF"),
        ("caf\u00e9\udcff", "filename=\"caf__\"; filename*=UTF-8''caf%C3%A9%FF"),
        # a lone surrogate that stands for no byte has none to send
        ("a\ud800b", "filename=\"a_b\"; filename*=UTF-8''a%3Fb"),
        ("\x00\x7f\n", "filename=\"___\"; filename*=UTF-8''%00%7F%0A"),
    ],
)
def test_attachment_of_undecodable_names(name: str, expected: str):
    assert attachment(name) == f"attachment; {expected}"


@pytest.fixture(params=["walk", "check"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """open_inside as it runs here (openat walk), and its fallback elsewhere."""
    if request.param == "check":
        monkeypatch.setattr(static, "_WALK", False)
    else:
        assert static._WALK  # POSIX: the walk is what runs
    yield str(request.param)


def _read(found: tuple[str, str] | None) -> bytes | None:
    if found is None:
        return None
    file = open_inside(*found)
    if file is None:
        return None
    with file:
        return file.read()


def test_open_inside_opens_what_was_checked(tree: Path, opener: str):
    res = Resources({"/r/**": str(tree)})
    assert _read(res.locate("/r/a/b/low.css")) == b"3"
    assert _read(res.locate("/r/link_in.js")) == b"1"  # a symlink inside: followed
    found = res.locate("/r/a/mid.css")
    assert found is not None
    with open_inside(*found) as file:  # type: ignore[union-attr]
        assert file.name == found[1]  # named by its path (FileShrank's message), not its fd
    os.rename(tree / "a", tree / "a.moved")
    (tree / "a").symlink_to(tree.parent)  # now a/mid.css would be outside
    (tree.parent / "mid.css").write_text("secret")
    assert open_inside(*found) is None
    (tree / "a").unlink()
    (tree / "a").mkdir()
    os.mkfifo(tree / "a" / "mid.css")  # would block an open(); not a regular file anyway
    assert open_inside(*found) is None
    os.unlink(tree / "a" / "mid.css")
    (tree / "a" / "mid.css").mkdir()
    assert open_inside(*found) is None
    os.rmdir(tree / "a" / "mid.css")
    assert open_inside(*found) is None  # gone


def test_open_inside_refuses_a_file_swapped_for_a_symlink(tree: Path, opener: str):
    found = Resources({"/r/**": str(tree)}).locate("/r/top.js")
    assert found is not None
    os.unlink(tree / "top.js")
    (tree / "top.js").symlink_to(tree.parent / "outside.js")
    assert open_inside(*found) is None


def test_a_folder_swapped_while_resolving_never_raises_nor_leaks(tmp_path: Path):
    """A thread swaps a folder for a symlink leaving the root and back, as fast as it
    can: resolving a path through it gives the inside file or None, never an error
    (os.path.realpath raised EINVAL/ENOENT, a 500), and what is opened is inside.
    (The fallback without openat can be beaten by such a race: it checks a path
    again after the open, and a path can change again between two looks.)"""
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "d").mkdir(parents=True)
    out.mkdir()
    (root / "d" / "f.txt").write_bytes(b"inside")
    (out / "f.txt").write_bytes(b"outside")
    (tmp_path / "link").symlink_to(out)
    res = Resources({"/r/**": str(root)})
    stop = threading.Event()

    def swap() -> None:
        d, real, link = root / "d", tmp_path / "real", tmp_path / "link"
        while not stop.is_set():
            os.rename(d, real)
            os.rename(link, d)
            os.rename(d, link)
            os.rename(real, d)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen: set[bytes | None] = set()
    try:
        deadline = time.monotonic() + 1.5
        for _ in range(20000):
            if time.monotonic() > deadline:
                break
            seen.add(_read(res.locate("/r/d/f.txt")))
    finally:
        stop.set()
        swapper.join(5)
    assert seen <= {b"inside", None}
    assert b"inside" in seen


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("a.html", "text/html; charset=utf-8"),
        ("a.JS", "text/javascript; charset=utf-8"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.json", "application/json; charset=utf-8"),
        ("a.png", "image/png"),
        ("a.svg", "image/svg+xml; charset=utf-8"),
        ("a.mp3", "audio/mpeg"),
        ("noext", "application/octet-stream"),
        # A compressed file is sent as it is (no Content-Encoding): its own type.
        ("a.tar.gz", "application/gzip"),
        ("d.json.gz", "application/gzip"),
        ("a.tgz", "application/gzip"),
        ("p.svgz", "application/gzip"),
        ("t.txt.bz2", "application/x-bzip2"),
        ("t.txt.xz", "application/x-xz"),
        ("t.txt.br", "application/octet-stream"),
        ("t.txt.Z", "application/octet-stream"),
    ],
)
def test_guess_type(name: str, media: str):
    assert guess_type(name) == media


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("br, *", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("", False),
        (None, False),
        ("gzip;q=abc", False),
        # An explicit gzip decides; x-gzip (its alias) only when gzip is not named;
        # * only when neither is.
        ("x-gzip;q=0, gzip", True),
        ("gzip, x-gzip;q=0", True),
        ("gzip;q=0, x-gzip", False),
        ("x-gzip;q=0.5, gzip;q=0", False),
        ("x-gzip", True),
        ("X-GZIP;Q=0.5", True),
        ("x-gzip;q=0", False),
        ("x-gzip;q=0, *", False),
        ("*;q=0, x-gzip", True),
        ("*;q=0, gzip", True),
        ("*, gzip;q=0", False),
        ("identity;q=0, *", True),
        # q values, strictly: "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]
        ("gzip;q=0.0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0.", False),
        ("gzip;q=0.001", True),
        ("gzip;q=0.5", True),
        ("gzip;q=1", True),
        ("gzip;q=1.", True),
        ("gzip;q=1.0", True),
        ("gzip;q=1.000", True),
        ("gzip ; q=0.8", True),
        ("gzip;Q=0", False),
        ("gzip;q=1.0001", False),
        ("gzip;q=0.0001", False),
        ("gzip;q=1.5", False),
        ("gzip;q=1.001", False),
        ("gzip;q=2", False),
        ("gzip;q=-1", False),
        ("gzip;q=.5", False),
        ("gzip;q=+1", False),
        ("gzip;q=1e0", False),
        ("gzip;q=inf", False),
        ("gzip;q=nan", False),
        ("gzip;q=", False),
        ("gzip;q", False),
        ('gzip;q="1"', False),
        ("gzip;q=0.5;q=0", False),  # a repeated q is malformed
        ("*;q=abc", False),
        ("gzip;level=9", True),  # other parameters do not matter
        ("gzip;q=1;level=9", True),
        (" , gzip ,", True),  # empty list elements are allowed
        ("gzipx, xgzip, gzip2", False),
    ],
)
def test_accepts_gzip(value, expected):
    assert accepts_gzip(value) is expected


def test_gzip_policy_choices():
    policy = GzipPolicy({"text/html", "application/json"}, min_size=10, level=9)
    req = _request({"Accept-Encoding": "gzip"})
    headers: list[tuple[str, str]] = [("Content-Length", "100")]
    assert policy.choose(req, 200, headers, "text/html; charset=utf-8", 100)
    assert ("Content-Encoding", "gzip") in headers and ("Vary", "Accept-Encoding") in headers
    assert all(name != "Content-Length" for name, _ in headers)
    assert policy.compress(b"abc" * 100) != b"abc" * 100
    assert gzip.decompress(policy.compress(b"abc" * 100)) == b"abc" * 100
    # Not for small bodies, other types, partial or bodiless answers, pre-encoded bodies.
    assert not policy.choose(req, 200, [], "text/html", 5)
    assert not policy.choose(req, 200, [], "image/png", 500)
    for status in (204, 206, 304, 101):
        assert not policy.choose(req, status, [], "text/html", 500)
    assert not policy.choose(req, 200, [("Content-Encoding", "br")], "text/html", 500)
    # A client without gzip still gets Vary.
    plain: list[tuple[str, str]] = []
    assert not policy.choose(_request({}), 200, plain, "text/html", 500)
    assert plain == [("Vary", "Accept-Encoding")]


def test_gzip_policy_from_config():
    assert GzipPolicy.from_config(ServerConfig()) is None
    policy = GzipPolicy.from_config(
        ServerConfig().with_changes(gzip_content_types={"text/"}, gzip_compress_level=2)
    )
    assert policy is not None and policy.level == 2 and policy.content_types == ("text/",)


def test_add_vary_merges():
    headers = [("Vary", "Cookie")]
    add_vary(headers)
    assert headers == [("Vary", "Cookie, Accept-Encoding")]
    add_vary(headers)
    assert headers == [("Vary", "Cookie, Accept-Encoding")]


def test_resources_as_a_set_get_a_clear_error(tmp_path: Path) -> None:
    from simple_http_server import server

    # The original README showed a set literal; it cannot pair patterns with folders.
    with pytest.raises(TypeError, match="dict"):
        Resources({"/p/*", str(tmp_path)})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dict"):
        server.init_wsgi_proxy(resources={"/p/*", str(tmp_path)})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("/r/a/b.css", True),
        ("/r/%E4%B8%AD.txt", True),
        ("/r/a.b/..c/.d", True),
        ("/r/%252e%252e/x", True),  # a file named "%2e%2e": decoded once
        ("/r/a%2Fb", False),
        ("/r/a%2fb", False),
        ("/r/a%5cb", False),
        ("/r/../x", False),
        ("/r/./x", False),
        ("/r/x/..", False),
        ("/r/%2e%2e/x", False),
        ("/r/%2E/x", False),
        ("/r/.%2e/x", False),
    ],
)
def test_plain_segments(raw: str, plain: bool) -> None:
    assert plain_segments(raw) is plain
