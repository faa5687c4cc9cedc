"""Controllers end to end: routing forms, results, streaming, filters, error pages, bad input.

Every test runs through the TestClient and both real transports (``make_client``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import http.client
import json
import pickle
import socket
import sys
import threading
import time
from typing import Any

import pytest

from simple_http_server import (
    App,
    Header,
    Headers,
    HttpError,
    JSONBody,
    MultipartFile,
    PathValue,
    Redirect,
    RegGroup,
    Request,
    Response,
)
from simple_http_server.testing import TestClient

from ..conftest import UniformClient


# -- routing forms ----------------------------------------------------------------------
def routing_app() -> App:
    app = App()

    @app.route("no/leading/slash")
    def no_slash() -> str:
        return "no-slash"

    @app.request_map(url="/kw-url", method="get, post")
    def kw_url() -> str:
        return "kw-url"

    @app.route("/patch", method="PATCH")
    def patch() -> str:
        return "patched"

    @app.route("/purge", method=["PURGE"])
    def purge() -> str:
        return "purged"

    @app.route("/get-only", method="GET")
    def get_only() -> str:
        return "get body"

    @app.route("/stacked/a", method="GET")
    @app.route("/stacked/b", method="POST")
    def stacked(req: Request) -> str:
        return f"{req.method} {req.path}"

    @app.route("/any")
    def any_method(req: Request) -> str:
        return req.method

    @app.route("/target")
    def target() -> str:
        return "target"

    @app.route("/folder/")
    def folder() -> str:
        return "folder/"

    @app.route("/folder")
    def folder_without_slash() -> str:
        return "folder"

    @app.route("/hdr", headers="X-Kind=a")
    def hdr_a() -> str:
        return "kind a"

    @app.route("/hdr", headers=["X-Kind=b", "!X-Other"], match_all_headers_expressions=False)
    def hdr_b_or_no_other() -> str:
        return "kind b or no X-Other"

    @app.route("/hdr-all", headers=["X-Kind=a", "X-Level"])  # both must hold (the default)
    def hdr_all() -> str:
        return "kind a with a level"

    @app.route
    def bare() -> str:  # a bare decorator outside a class maps "/", as in 0.22.x
        return "bare"

    return app


def test_urls_with_and_without_leading_slash(make_client):
    client = make_client(routing_app())
    assert client.get("/no/leading/slash").text == "no-slash"
    assert client.post("/kw-url").text == "kw-url"


def test_patch_and_any_token_method(make_client):
    client = make_client(routing_app())
    assert client.request("PATCH", "/patch").text == "patched"
    assert client.request("PURGE", "/purge").text == "purged"
    assert client.request("PURGE", "/any").text == "PURGE"


def test_head_is_answered_by_get_routes(make_client):
    client = make_client(routing_app())
    reply = client.request("HEAD", "/get-only")
    assert reply.status == 200 and reply.body == b""
    assert reply.header("Content-Length") == str(len(b"get body"))


def test_stacked_decorators(make_client):
    client = make_client(routing_app())
    assert client.get("/stacked/a").text == "GET /stacked/a"
    assert client.post("/stacked/b").text == "POST /stacked/b"
    assert client.post("/stacked/a").status == 405


def test_dot_segments_are_normalized(make_client):
    client = make_client(routing_app())
    assert client.get("/no/../target").text == "target"
    assert client.get("/./target").text == "target"
    assert client.get("/../../target").text == "target"
    assert client.get("/%2E%2E/target").text == "target"
    assert client.get("/stacked/x/../a").text == "GET /stacked/a"  # ".." drops one segment
    # A path ending in "/." or "/.." names a folder: the trailing slash stays.
    assert client.get("/folder/.").text == "folder/"
    assert client.get("/folder/x/..").text == "folder/"
    assert client.get("/folder/%2e").text == "folder/"


def test_headers_narrowing(make_client):
    client = make_client(routing_app())
    assert client.get("/hdr", headers={"x-kind": "a", "X-Other": "1"}).text == "kind a"
    assert client.get("/hdr", headers={"X-Kind": "b", "X-Other": "1"}).text == (
        "kind b or no X-Other"
    )
    assert client.get("/hdr").text == "kind b or no X-Other"
    assert client.get("/hdr", headers={"X-Kind": "c", "X-Other": "1"}).status == 404
    both = {"X-Kind": "a", "X-Level": "2"}
    assert client.get("/hdr-all", headers=both).text == "kind a with a level"
    assert client.get("/hdr-all", headers={"X-Kind": "a"}).status == 404
    assert client.get("/hdr-all", headers={"X-Level": "2"}).status == 404


def test_bad_method_and_unknown_path(make_client):
    client = make_client(routing_app())
    wrong = client.post("/get-only")
    assert wrong.status == 405 and wrong.header("Allow") == "GET, HEAD"
    assert wrong.json()["code"] == 405
    unknown = client.get("/no/such/path")
    assert unknown.status == 404
    assert unknown.json() == {  # the original's texts
        "code": 404,
        "message": "Controller Not Found",
        "explain": "Cannot find a controller for your path",
    }
    assert client.get("/bare").status == 404


def test_a_function_mapped_without_url_serves_the_root(make_client, log_records):
    """0.22.x logged a configuration warning for ``@route`` / ``@route("")`` on a
    function but still served it at ``/`` (the last one mapped wins); it was skipped."""
    assert routing_app_root(make_client(routing_app())) == (200, "bare")
    app = App()

    @app.route
    def first() -> str:
        return "first"

    @app.route("")
    def empty() -> str:
        return "empty"

    client = make_client(app)
    assert routing_app_root(client) == (200, "empty")
    assert client.request("HEAD", "/").status == 200
    messages = [r.getMessage() for r in log_records.records]
    assert any(
        m.endswith(".empty: request_map without a url or a regexp serves /") for m in messages
    )


def routing_app_root(client: UniformClient) -> tuple[int, str]:
    reply = client.get("/")
    return reply.status, reply.text


# -- results ----------------------------------------------------------------------------
def results_app() -> App:
    app = App()

    @app.route("/none")
    def none() -> None:
        return None

    @app.route("/bytes")
    def raw() -> bytearray:
        return bytearray(b"\x00\x01")

    @app.route("/xml")
    def xml() -> str:
        return "<?xml version='1.0'?><a/>"

    @app.route("/list")
    def as_list() -> list[int]:
        return [1, 2]

    @app.route("/injected")
    def injected(response: Response) -> dict[str, bool]:
        response.status_code = 201
        response.add_header("X-Multi", "1")
        response.add_header("X-Multi", "2")
        response.set_header("X-Set", "a")
        response.set_header("X-Set", "b")
        response.add_cookie("sid", "v", path="/", httponly=True)
        return {"ok": True}

    @app.route("/own-type")
    def own_type() -> tuple[Any, ...]:
        return Headers({"Content-Type": "text/csv"}), "a,b\n"

    @app.route("/send-error")
    def send_error(response: Response) -> str:
        response.send_error(403, "nope", "not allowed")
        return "ignored"

    @app.route("/send-redirect")
    def send_redirect(response: Response) -> None:
        response.send_redirect("/none")

    @app.route("/raise-redirect")
    def raise_redirect() -> None:
        raise Redirect("/none")

    @app.route("/raise-error")
    def raise_error() -> None:
        raise HttpError(409, "Conflict here", "already exists")

    @app.route("/header-marker")
    def header_marker() -> tuple[Any, ...]:
        return 202, Header({"X-A": "1"}), Header({"X-B": "2"}), Headers({"X-C": "3"}), b"z"

    @app.route("/unicode-message")
    def unicode_message() -> None:
        raise HttpError(400, "错误\r\nInjected: yes", "line\r\nbreak")

    return app


def test_simple_results(make_client):
    client = make_client(results_app())
    none = client.get("/none")
    assert (none.status, none.body, none.header("Content-Length")) == (200, b"", "0")
    raw = client.get("/bytes")
    assert raw.body == b"\x00\x01" and raw.header("Content-Type") == "application/octet-stream"
    assert client.get("/xml").header("Content-Type") == "text/xml; charset=utf-8"
    assert client.get("/list").json() == [1, 2]


def test_injected_response(make_client):
    reply = make_client(results_app()).get("/injected")
    assert reply.status == 201
    assert reply.get_all("X-Multi") == ["1", "2"]
    assert reply.get_all("X-Set") == ["b"]
    assert reply.get_all("Set-Cookie") == ["sid=v; HttpOnly; Path=/"]
    assert reply.json() == {"ok": True}


def injected_status_app() -> App:
    app = App()

    @app.route("/status/tuple")
    def tuple_without_status(response: Response) -> tuple[Any, ...]:
        response.status_code = 404
        return Headers({"X-T": "1"}), "no such item"

    @app.route("/status/headers")
    def headers_only(response: Response) -> Headers:
        response.status_code = 202
        return Headers({"X-T": "1"})

    @app.route("/status/int")
    def returned_int(response: Response) -> int:
        response.status_code = 404
        return 202

    @app.route("/status/tuple-int")
    def tuple_with_status(response: Response) -> tuple[Any, ...]:
        response.status_code = 404
        return 201, "made"

    @app.route("/status/response")
    def returned_response(response: Response) -> Response:
        response.status_code = 404
        return Response(body="its own 200")

    @app.request_filter("/status/filtered")
    def accepted(ctx: Any) -> None:
        ctx.response.status_code = 202
        ctx.do_chain()

    @app.route("/status/filtered")
    def filtered() -> tuple[Any, ...]:
        return "queued", Headers({"X-T": "1"})

    return app


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/status/tuple", 404, "no such item"),
        ("/status/headers", 202, ""),
        ("/status/int", 202, ""),
        ("/status/tuple-int", 201, "made"),
        ("/status/response", 200, "its own 200"),
        ("/status/filtered", 202, "queued"),
    ],
)
def test_the_injected_status_holds_unless_the_result_names_one(make_any_client, path, status, body):
    """As 0.22.x: a tuple without an int kept the status set on the response (by the
    controller or a filter), and a returned int won over it; both were the other way."""
    reply = make_any_client(injected_status_app()).get(path)
    assert (reply.status, reply.text) == (status, body)


def test_returning_the_injected_response_sends_its_headers_once(make_any_client):
    """``return response`` sent each of its headers and cookies twice (two
    ``Content-Type`` lines), as it was merged into itself."""
    app = App()

    @app.route("/itself")
    def itself(response: Response) -> Response:
        response.status_code = 201
        response.set_header("Content-Type", "text/csv")
        response.add_header("X-Many", "1")
        response.add_header("X-Many", "2")
        response.add_cookie("sid", "v")
        response.body = "a,b\n"
        return response

    reply = make_any_client(app).get("/itself")
    assert (reply.status, reply.text) == (201, "a,b\n")
    assert reply.get_all("Content-Type") == ["text/csv"]
    assert reply.get_all("X-Many") == ["1", "2"]
    assert reply.get_all("Set-Cookie") == ["sid=v"]


def test_a_header_valued_none_is_not_sent(make_any_client):
    """As 0.22.x: a ``None`` header value sends no line (``set_header(name, None)``
    unsets it); it was sent as ``X: None``, a ``None`` in a list too.  A tuple is
    several values, as a list: ``add_header`` sent a tuple as its ``repr``."""
    app = App()

    @app.route("/returned")
    def returned() -> tuple[Any, ...]:
        return 201, Headers({"X-A": None, "X-B": "b"}), "body"

    @app.route("/set")
    def set_none(response: Response) -> str:
        response.set_header("X-A", "a")
        response.set_header("X-A", None)
        response.add_header("X-C", None)
        response.add_header("X-D", ["d", None])
        response.set_header("Content-Type", None)
        response.set_header("X-N", 5)
        return "body"

    @app.route("/tuples")
    def tuples(response: Response) -> str:
        response.set_header("X-T", ("a", "b"))
        response.add_header("X-T", "c")
        response.add_header("X-U", "1")
        response.add_header("X-U", ("2", None))
        return "body"

    @app.route("/streamed")
    def streamed(response: Response) -> None:
        response.set_header("X-A", None)
        response.set_header("Content-Type", "text/csv")
        response.write_bytes(b"a,b")
        response.close()

    client = make_any_client(app)
    sent = {}
    for path in ("/returned", "/set", "/tuples", "/streamed"):
        reply = client.get(path)
        sent[path] = [(k.upper(), v) for k, v in reply.header_list if k.lower().startswith("x-")]
        assert reply.status in (200, 201) and b"None" not in reply.body
        assert all(v != "None" for _, v in reply.header_list)
    assert sent == {
        "/returned": [("X-B", "b")],  # uvicorn sends names in lower case
        "/set": [("X-D", "d"), ("X-N", "5")],
        "/tuples": [("X-T", "a"), ("X-T", "b"), ("X-T", "c"), ("X-U", "1"), ("X-U", "2")],
        "/streamed": [],
    }
    assert client.get("/set").header("Content-Type") == "text/plain; charset=utf-8"


def test_copied_or_merged_headers_keep_their_case_insensitive_lookups(make_any_client):
    """``copy.copy(request.headers)`` shared its name index with the request's (the
    original's ``get`` then raised ``KeyError``: a 500), ``headers |= {...}`` bypassed
    it (``"X-B" in headers`` was False), and a pickled ``Headers`` did not load."""
    app = App()

    @app.request_filter("/merged")
    def add_more(ctx: Any) -> None:
        headers = ctx.response.headers  # a property without a setter, as in 0.22.x
        headers |= {"X-Merged": "m"}
        ctx.do_chain()

    @app.route("/merged")
    def merged(request: Request, response: Response) -> dict[str, Any]:
        mine = copy.copy(request.headers)
        mine["X-Copy-Only"] = "c"
        deep = copy.deepcopy(request.headers)
        loaded = pickle.loads(pickle.dumps(request.headers))
        return {
            "copy": mine.get("x-copy-only"),
            "original": request.headers.get("x-copy-only"),
            "deep": deep.get("x-sent"),
            "pickled": loaded.get("X-SENT"),
            "merged": "x-merged" in response.headers and response.headers.get("X-MERGED"),
        }

    reply = make_any_client(app).get("/merged", headers={"X-Sent": "s"})
    assert reply.status == 200, reply.text
    assert reply.json() == {
        "copy": "c", "original": None, "deep": "s", "pickled": "s", "merged": "m"
    }  # fmt: skip
    assert reply.header("X-Merged") == "m"


def test_a_body_set_on_the_response_is_sent_when_the_controller_returns_none(make_client):
    """``response.body = ...`` alone (no status, header or cookie set, nothing returned)
    is the answer, not an empty 200."""
    app = App()

    @app.route("/body-only")
    def body_only(response: Response) -> None:
        response.body = "set on the response"

    reply = make_client(app).get("/body-only")
    assert (reply.status, reply.text) == (200, "set on the response")


def test_controller_content_type_wins(make_client):
    reply = make_client(results_app()).get("/own-type")
    assert reply.header("Content-Type") == "text/csv" and reply.text == "a,b\n"


def test_send_error_redirect_and_raise(make_client):
    client = make_client(results_app())
    err = client.get("/send-error")
    assert err.status == 403
    assert err.json() == {"code": 403, "message": "nope", "explain": "not allowed"}
    for path in ("/send-redirect", "/raise-redirect"):
        reply = client.get(path)
        assert reply.status == 302 and reply.header("Location") == "/none"
    conflict = client.get("/raise-error")
    assert conflict.status == 409
    assert conflict.json() == {"code": 409, "message": "Conflict here", "explain": "already exists"}


def test_every_header_of_a_tuple_is_sent(make_client):
    reply = make_client(results_app()).get("/header-marker")
    assert reply.status == 202 and reply.body == b"z"
    assert [reply.header(n) for n in ("X-A", "X-B", "X-C")] == ["1", "2", "3"]


def test_error_message_cannot_split_the_response(make_client):
    reply = make_client(results_app()).get("/unicode-message")
    assert reply.status == 400
    assert reply.header("Injected") is None
    assert reply.json()["message"] == "错误\r\nInjected: yes"


CONTROLS = "".join(chr(c) for c in (*range(0x20), 0x7F) if c != 0x09)


def test_control_characters_in_header_values_become_spaces(make_client):
    """RFC 9110 5.5: no CTL but HTAB in a field value.  ``\\x0b``/``\\x0c`` made h11
    refuse the head (a 500 on sockets, passed through by the TestClient); the
    others went out raw.  Every front end now sends the same neutralized value."""
    app = App()

    @app.route("/login")
    def login(next: str = "/") -> Redirect:  # the usual pattern: Redirect(next)
        return Redirect(next)

    @app.route("/echo-header")
    def echo_header(value: str = "") -> Response:
        response = Response(body="ok")
        response.set_header("X-Echo", value)
        return response

    client = make_client(app)
    reply = client.get("/login?next=/home%0bx%0c")
    assert reply.status == 302
    assert reply.header("Location") == "/home x"  # trailing whitespace is dropped by clients
    value = "a" + CONTROLS + "\tb"
    reply = client.get("/echo-header?value=" + "".join(f"%{ord(c):02x}" for c in value))
    assert reply.status == 200 and reply.body == b"ok"
    echoed = reply.header("X-Echo")
    assert echoed is not None and echoed.startswith("a") and echoed.endswith("\tb")
    assert not set(echoed) & set(CONTROLS)
    reply = client.get("/echo-header?value=%20padded%09%20")  # h11 refuses edge whitespace
    assert (reply.status, reply.header("X-Echo")) == (200, "padded")


def test_a_returned_response_adds_its_headers_and_cookies(make_client):
    """0.22.x sent a returned ``Response``'s status, headers and body, not its cookies."""
    app = App()

    @app.route("/mix")
    def mix(response: Response) -> Response:
        response.set_header("X-Injected", "i")
        response.cookies["inj"] = "1"
        returned = Response(status_code=201, headers={"X-Returned": "r"}, body="mixed")
        returned.cookies["ret"] = "2"
        return returned

    reply = make_client(app).get("/mix")
    assert (reply.status, reply.text) == (201, "mixed")
    assert (reply.header("X-Injected"), reply.header("X-Returned")) == ("i", "r")
    assert sorted(reply.get_all("Set-Cookie")) == ["inj=1", "ret=2"]


# -- streaming --------------------------------------------------------------------------
def test_write_bytes_is_sent_as_written(transport, serve):
    """The first chunk reaches the client while the controller is still running."""
    app = App()
    client_saw_first = threading.Event()

    @app.route("/stream")
    def stream(response: Response) -> None:
        response.add_header("Content-Type", "text/plain")
        response.write_bytes(b"first;")
        assert client_saw_first.wait(10), "the first chunk was buffered"
        response.write_bytes(b"second")
        response.close()

    live = serve(app)
    with socket.create_connection((live.host, live.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"first;" not in received:
            data = sock.recv(4096)
            assert data, "connection closed early"
            received += data
        head = received.split(b"\r\n\r\n", 1)[0].lower()
        assert b"transfer-encoding: chunked" in head
        client_saw_first.set()
        while not received.endswith(b"0\r\n\r\n"):
            data = sock.recv(4096)
            assert data, "connection closed before the last chunk"
            received += data
    assert b"second" in received


def test_write_bytes_refuses_what_is_not_bytes_like_before_sending(make_any_client):
    """``write_bytes(3)`` sent the head and three NUL bytes, then failed (a cut
    answer); ``write_bytes("text")`` sent the head, then failed. 0.22.x refused both
    before sending anything, as now: the controller's error is a 500 page."""
    app = App()

    @app.route("/write/{what}")
    def write(response: Response, what: PathValue) -> None:
        response.set_header("Content-Type", "text/plain")
        if what == "int":
            response.write_bytes(3)  # type: ignore[arg-type]
        elif what == "str":
            response.write_bytes("text")  # type: ignore[arg-type]
        else:
            response.write_bytes(bytearray(b"a"))
            response.write_bytes(memoryview(b"b"))  # type: ignore[arg-type]
            response.write_bytes(b"c")

    client = make_any_client(app)
    for what in ("int", "str"):
        reply = client.get(f"/write/{what}")
        assert reply.status == 500 and reply.json()["message"] == "Internal Server Error"
    assert client.get("/write/bytes").body == b"abc"


@pytest.mark.parametrize(
    "failure", ["raise", "http-error", "exit", "send-error", "send-redirect", "raise-redirect"]
)
def test_a_stream_that_fails_half_way_is_cut_not_completed(serve, failure):
    """A controller failing after ``write_bytes`` cannot get an error page any more;
    ending the chunked body normally would pass the half as the whole answer. So for
    ``send_error``/``send_redirect`` after it, which ended the body as complete."""
    app = App()

    @app.route("/stream")
    def stream(response: Response) -> None:
        response.write_bytes(b"first half;")
        if failure == "raise":
            raise RuntimeError("boom")
        if failure == "exit":
            sys.exit(3)
        if failure == "send-error":
            response.send_error(500)
            return
        if failure == "send-redirect":
            response.send_redirect("/elsewhere")
            return
        if failure == "raise-redirect":
            raise Redirect("/elsewhere")
        raise HttpError(403)

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    live = serve(app)
    conn = live.connection()
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == b"first half;"
    conn.close()
    if live.transport == "threaded":  # and the TestClient, once
        reply = TestClient(app).get("/stream")
        assert (reply.status_code, reply.content, reply.truncated) == (200, b"first half;", True)
    conn = live.connection()  # the server goes on
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    conn.close()


def stream_pieces_app() -> App:
    app = App()

    @app.route("/pieces")
    def pieces() -> Any:
        yield b"a"
        yield bytearray(b"b")
        yield memoryview(b"c")
        yield "d"
        yield 3  # a mistake: bytes(3) was sent as three NUL bytes
        yield b"never"

    @app.route("/async-pieces")
    async def async_pieces() -> Any:
        async def pieces() -> Any:
            yield b"abc"
            yield [100]  # bytes([100]) was sent as b"d"

        return pieces()

    return app


@pytest.mark.parametrize("path", ["/pieces", "/async-pieces"])
def test_a_stream_piece_that_is_not_bytes_like_cuts_the_answer(serve, path):
    live = serve(stream_pieces_app())
    conn = live.connection()
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial in (b"abcd", b"abc")
    conn.close()


def test_a_stream_piece_that_is_not_bytes_like_cuts_the_testclient_reply():
    reply = TestClient(stream_pieces_app()).get("/pieces")
    assert (reply.body, reply.truncated) == (b"abcd", True)


def test_an_async_stream_learns_that_its_client_left(serve):
    """``write_bytes`` from an ``async def`` loop (server-sent events...) raises once
    the client is gone, instead of writing into a closed connection forever."""
    app = App()
    outcome: list[str] = []
    done = threading.Event()

    @app.route("/events")
    async def events(response: Response) -> None:
        try:
            for _ in range(500):  # at most ~5 s
                response.write_bytes(b"data: tick\n\n")
                await asyncio.sleep(0.01)
            outcome.append("never noticed")
        except Exception as exc:
            outcome.append(type(exc).__name__)
            raise
        finally:
            done.set()

    live = serve(app)
    with socket.create_connection((live.host, live.port), timeout=10) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"data: tick" not in received:  # the head may come on its own first
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert done.wait(8)
    assert outcome == ["ClientGone"]


def test_sys_exit_in_a_controller_is_a_500(make_client):
    app = App()

    @app.route("/exit")
    def leave() -> str:
        sys.exit(3)

    client = make_client(app)
    for _ in range(3):  # the server (and every worker) survives it
        assert client.get("/exit").status == 500


# -- filters ----------------------------------------------------------------------------
def filters_app(calls: list[str]) -> App:
    app = App()

    @app.request_filter("/f/**")
    def first(ctx) -> None:
        calls.append("first")
        ctx.request.headers["X-From-Filter"] = "one"
        ctx.do_chain()
        ctx.response.set_header("X-After", "set after the chain")

    @app.request_filter("/f/**")
    async def second(ctx) -> None:
        calls.append("second")
        await asyncio.sleep(0)
        await ctx.do_chain()

    @app.request_filter(regexp="^f/stop")
    def stopper(ctx) -> None:
        calls.append("stopper")
        ctx.response.status_code = 401
        ctx.response.set_header("WWW-Authenticate", "Basic")

    @app.request_filter(regexp="^/f/raise")
    def raiser(ctx) -> None:
        raise HttpError(418, "teapot")

    @app.request_filter("/f/redirect")
    async def redirecter(ctx) -> None:
        raise Redirect("/elsewhere")

    @app.route("/f/**")
    def controller(x=Header("X-From-Filter")) -> dict[str, str]:
        calls.append("controller")
        return {"header": x}

    @app.route("/unfiltered")
    def unfiltered() -> str:
        return "plain"

    return app


def test_filters_run_in_order_and_see_header_changes(make_client):
    calls: list[str] = []
    client = make_client(filters_app(calls))
    reply = client.get("/f/ok")
    assert reply.json() == {"header": "one"}
    assert reply.header("X-After") == "set after the chain"
    assert calls == ["first", "second", "controller"]


def test_filter_that_neither_chains_nor_answers(make_client):
    calls: list[str] = []
    reply = make_client(filters_app(calls)).get("/f/stop")
    assert reply.status == 401 and reply.header("WWW-Authenticate") == "Basic"
    assert "controller" not in calls


def test_filters_raise_errors_and_redirects(make_client):
    client = make_client(filters_app([]))
    teapot = client.get("/f/raise")
    assert teapot.status == 418 and teapot.json()["message"] == "teapot"
    redirect = client.get("/f/redirect")
    assert redirect.status == 302 and redirect.header("Location") == "/elsewhere"


def test_unmatched_paths_bypass_filters(make_client):
    calls: list[str] = []
    client = make_client(filters_app(calls))
    assert client.get("/unfiltered").text == "plain"
    assert client.get("/missing").status == 404
    assert calls == []


def test_a_def_filters_do_chain_returns_a_done_awaitable(make_any_client):
    """One return type for ``do_chain()``: a ``def`` filter gets an awaitable that is
    already done (it returned None), so ``await ctx.do_chain()`` type-checks."""
    app = App()

    @app.request_filter
    def plain(ctx: Any) -> None:
        chained = ctx.do_chain()
        steps = chained.__await__()
        finished = next(steps, "done")  # a done awaitable yields nothing
        ctx.response.add_header("X-Chained", f"{type(chained).__name__}:{finished}")

    @app.route("/")
    def root() -> str:
        return "root"

    reply = make_any_client(app).get("/")
    assert reply.text == "root"
    assert reply.header("X-Chained") == "_Nothing:done"


def test_filters_without_a_pattern_apply_to_every_path(make_client):
    """A bare ``@request_filter`` and 0.22.x's ``filter_map()`` (its regexp ``""``
    matched every path) skipped ``/``: they were taken for ``/**``."""
    app = App()

    @app.request_filter
    def bare(ctx: Any) -> None:
        ctx.response.add_header("X-Seen", "bare")
        ctx.do_chain()

    @app.filter_map()
    def old_style(ctx: Any) -> None:
        ctx.response.add_header("X-Seen", "filter_map")
        ctx.do_chain()

    def added(ctx: Any) -> None:
        ctx.response.add_header("X-Seen", "added")
        ctx.do_chain()

    app.filter_map("", added)

    @app.route("/")
    def root() -> str:
        return "root"

    @app.route("/a/b")
    def deep() -> str:
        return "deep"

    client = make_client(app)
    for path in ("/", "/a/b"):
        assert client.get(path).get_all("X-Seen") == ["bare", "filter_map", "added"]


def unawaited_chain_app() -> App:
    """``async def`` filters written for 0.22.x, whose ``do_chain()`` returned None:
    they call it without awaiting it."""
    app = App()

    @app.request_filter("/u/**")
    async def outer(ctx: Any) -> None:
        ctx.response.add_header("X-Chain", "outer")
        ctx.do_chain()

    @app.request_filter("/u/**")
    def middle(ctx: Any) -> None:
        ctx.response.add_header("X-Chain", "middle")
        ctx.do_chain()

    @app.request_filter("/u/**")
    async def inner(ctx: Any) -> None:
        ctx.response.add_header("X-Chain", "inner")
        ctx.do_chain()

    @app.route("/u/sync")
    def sync_controller() -> str:
        time.sleep(0.05)  # still running when the filters have returned
        return "sync"

    @app.route("/u/async")
    async def async_controller() -> str:
        await asyncio.sleep(0.05)
        return "async"

    @app.route("/u/error")
    def failing() -> None:
        time.sleep(0.05)
        raise HttpError(409, "conflict")

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_async_filters_need_not_await_do_chain(make_any_client, kind):
    """It was a 500 (a coroutine suspended outside an event loop) in the threaded
    transport, under WSGI and in the TestClient whenever the controller behind was
    still running when the filter returned."""
    reply = make_any_client(unawaited_chain_app()).get(f"/u/{kind}")
    assert (reply.status, reply.text) == (200, kind)
    assert reply.get_all("X-Chain") == ["outer", "middle", "inner"]


def test_what_an_unawaited_chain_raises_answers_the_request(make_any_client):
    reply = make_any_client(unawaited_chain_app()).get("/u/error")
    assert reply.status == 409 and reply.json()["message"] == "conflict"
    assert reply.get_all("X-Chain") == ["outer", "middle", "inner"]


def test_a_filter_that_fails_after_an_unawaited_chain_answers_once_it_is_over(
    make_any_client,
):
    """The rest of the chain went on after the request was answered (a controller
    reading a request that was over; its error logged as a task exception never
    retrieved): the request now ends once it is over, as with a ``def`` filter."""
    app = App()
    done: list[str] = []

    @app.request_filter("/late/**")
    async def deny(ctx: Any) -> None:
        ctx.do_chain()
        raise HttpError(401, "denied")

    @app.route("/late/x")
    async def slow() -> str:
        await asyncio.sleep(0.2)
        done.append("controller")
        return "x"

    reply = make_any_client(app).get("/late/x")
    assert reply.status == 401 and reply.json()["message"] == "denied"
    assert done == ["controller"]


def test_await_do_chain_when_it_has_nothing_to_do(make_any_client):
    """``do_chain()`` after the response was answered, or a second time, gave None to
    an ``async def`` filter: ``await`` of it was a TypeError, a 500."""
    app = App()
    calls: list[str] = []

    @app.request_filter("/auth/**")
    async def auth(ctx: Any) -> None:
        if "token" not in ctx.request.parameter:
            ctx.response.send_error(401, "login first")
        await ctx.do_chain()
        await ctx.do_chain()

    @app.route("/auth/x")
    def protected() -> str:
        calls.append("controller")
        return "x"

    client = make_any_client(app)
    denied = client.get("/auth/x")
    assert denied.status == 401 and denied.json()["message"] == "login first"
    assert calls == []
    assert client.get("/auth/x?token=1").text == "x"
    assert calls == ["controller"]


def test_an_async_filter_may_handle_what_the_chain_raised(make_any_client):
    """A ``def`` filter could catch the controller's error around ``ctx.do_chain()``; an
    ``async def`` one caught it too, but the error was raised again after it returned."""
    app = App()

    @app.request_filter("/guarded/**")
    async def guard(ctx: Any) -> None:
        try:
            await ctx.do_chain()
        except HttpError as err:
            ctx.response.status_code = 503
            ctx.response.body = f"handled {err.code}"

    @app.route("/guarded/fail")
    def fail() -> None:
        raise HttpError(400, "bad")

    @app.route("/guarded/fail-async")
    async def fail_async() -> None:
        raise HttpError(400, "bad")

    client = make_any_client(app)
    for path in ("/guarded/fail", "/guarded/fail-async"):
        reply = client.get(path)
        assert (reply.status, reply.text) == (503, "handled 400")


def test_filters_may_add_change_and_remove_parameters(make_client):
    """The original's controllers read ``request.parameter``; a filter that set one there
    (say, the user an auth filter found) was lost: arguments read ``request.parameters``."""
    app = App()

    @app.request_filter("/params")
    def add_parameters(ctx: Any) -> None:
        parameter = ctx.request.parameter
        parameter["user"] = "alice"  # set through the first-value view
        parameter.update(role="admin")
        parameter.pop("drop")
        ctx.request.parameters["n"] = ["5", "6"]  # and through the full view
        assert ctx.request.parameter["n"] == "5"  # each access sees the current values
        ctx.do_chain()

    @app.route("/params")
    def params(user: str, role: str, n: list[int], request: Request, drop: str = "gone") -> Any:
        return {"user": user, "role": role, "n": n, "drop": drop, "all": request.parameters}

    reply = make_client(app).get("/params?user=mallory&drop=x&n=1")
    assert reply.json() == {
        "user": "alice",
        "role": "admin",
        "n": [5, 6],
        "drop": "gone",
        "all": {"user": ["alice"], "role": ["admin"], "n": ["5", "6"]},
    }


# -- error pages ------------------------------------------------------------------------
def error_pages_app() -> App:
    app = App()

    @app.error_message("404")
    def exact(explain: str, code: int, message: str) -> dict[str, Any]:
        return {"page": "exact", "code": code, "message": message, "explain": explain}

    @app.error_message("4xx")
    def four(code) -> Response:
        return Response(status_code=code, headers={"X-Page": "4xx"}, body=f"4xx page {code}")

    @app.error_message("41x")
    def tens(code) -> tuple[Any, ...]:
        return Headers({"X-Page": "41x"}), f"41x page {code}"

    @app.error_message("500")
    def broken() -> str:
        raise RuntimeError("the error page itself fails")

    @app.route("/raise/{code}")
    def raise_code(code: PathValue) -> None:
        raise HttpError(int(code), "m", "e")

    return app


def test_error_page_lookup(make_client):
    client = make_client(error_pages_app())
    exact = client.get("/nothing-here")
    assert exact.status == 404
    assert exact.json() == {
        "page": "exact",
        "code": 404,
        "message": "Controller Not Found",
        "explain": "Cannot find a controller for your path",
    }
    four = client.get("/raise/403")
    assert (four.status, four.header("X-Page"), four.text) == (403, "4xx", "4xx page 403")
    tens = client.get("/raise/415")
    assert (tens.status, tens.header("X-Page"), tens.text) == (415, "41x", "41x page 415")


def test_error_page_keyword_arguments_go_by_their_default_type(make_client):
    app = App()

    @app.error_message
    def page(msg="", status=0) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {"msg": msg, "status": status}

    reply = make_client(app).get("/missing")
    assert (reply.status, reply.json()) == (404, {"msg": "Controller Not Found", "status": 404})


def test_error_pages_with_positional_only_or_extra_arguments(make_client):
    """0.22.x called a page with positional arguments, None for a required one past
    the three; such pages failed (the default body answered instead)."""
    app = App()

    @app.error_message("404")
    def positional(code: int, message: str, /) -> str:
        return f"{code} {message}"

    @app.error_message("405")
    def extra(code, message, explain, request, *, flag) -> str:  # type: ignore[no-untyped-def]
        return f"{code} {message} {request} {flag}"

    @app.route("/post-only", method="POST")
    def post_only() -> str:
        return "p"

    client = make_client(app)
    assert client.get("/missing").text == "404 Controller Not Found"
    assert client.get("/post-only").text == "405 Method Not Allowed None None"


def test_an_error_page_for_no_code_is_the_catch_all(make_client):
    """0.22.x took ``@error_message("")`` for the catch-all; it raised ValueError."""
    app = App()

    @app.error_message("")
    def page(code: int) -> str:
        return f"caught {code}"

    assert make_client(app).get("/missing").text == "caught 404"


def test_failing_error_page_falls_back_to_the_default(make_client):
    reply = make_client(error_pages_app()).get("/raise/500")
    assert reply.status == 500
    assert reply.header("Content-Type") == "application/json; charset=utf-8"
    assert reply.json() == {"code": 500, "message": "m", "explain": "e"}


# -- the built-in favicon ---------------------------------------------------------------
def test_builtin_favicon_answers_when_nothing_else_does(make_client, tmp_path):
    from simple_http_server.dispatch.favicon import FAVICON

    reply = make_client(App()).get("/favicon.ico")
    assert (reply.status, reply.header("Content-Type")) == (200, "image/x-icon")
    assert reply.body == FAVICON and FAVICON[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert reply.header("Cache-Control") == "public, max-age=86400"
    head = make_client(App()).request("HEAD", "/favicon.ico")
    assert (head.status, head.body) == (200, b"")
    post = make_client(App()).post("/favicon.ico")
    assert (post.status, post.header("Allow")) == (405, "GET, HEAD")

    app = App()

    @app.route("/favicon.ico")
    def own_icon() -> bytes:
        return b"mine"

    assert make_client(app).get("/favicon.ico").body == b"mine"
    (tmp_path / "favicon.ico").write_bytes(b"static icon")
    static = make_client(App(), resources={"/**": str(tmp_path)}).get("/favicon.ico")
    assert static.body == b"static icon"


# -- defaults a request cannot replace --------------------------------------------------
class _Service:
    name = "the service"


SERVICE = _Service()


def defaults_app() -> App:
    app = App()

    @app.route("/defaults")
    def defaults(  # type: ignore[no-untyped-def]
        svc=SERVICE, marker=(1, 2), day: datetime.date | None = None, n=5, any_value: Any = None
    ) -> dict[str, Any]:
        return {
            "svc": svc.name,
            "marker": list(marker),
            "day": repr(day),
            "n": n,
            "any": any_value,
        }

    return app


def test_defaults_of_types_a_parameter_cannot_convert_to_are_kept(make_client):
    """The original passed such defaults through; a query parameter of the same name
    replaced an injected object with a string (a 500 here, wrong logic elsewhere)."""
    client = make_client(defaults_app())
    expected = {"svc": "the service", "marker": [1, 2], "day": "None", "n": 5, "any": None}
    assert client.get("/defaults").json() == expected
    query = "/defaults?svc=zzz&marker=x&day=2024-01-01&n=7&any_value=v"
    assert client.get(query).json() == {**expected, "n": 7, "any": "v"}


# -- bad input --------------------------------------------------------------------------
def bad_input_app() -> App:
    app = App()

    @app.route("/int")
    def as_int(n: int) -> int:
        return {"n": n}  # type: ignore[return-value]

    @app.route("/json", method="POST")
    def json_body(data=JSONBody()) -> dict[str, Any]:
        return data

    @app.route("/boom")
    def boom() -> None:
        raise ValueError("internal detail")

    return app


def test_bad_input_gives_clear_4xx(make_client):
    client = make_client(bad_input_app())
    missing = client.get("/int")
    assert missing.status == 400
    assert missing.json()["explain"] == "Parameter[n] is required."
    not_int = client.get("/int?n=abc")
    assert not_int.status == 400
    assert not_int.json() == {  # the original's texts, word for word
        "code": 400,
        "message": "Bad Request",
        "explain": "Parameter[n] should be an int. ",
    }
    bad_json = client.post("/json", headers={"Content-Type": "application/json"}, body="{oops")
    assert bad_json.status == 400 and bad_json.json()["code"] == 400
    assert client.get("/json").status == 405
    assert client.get("/nope").status == 404


def conversions_app() -> App:
    app = App()

    @app.route("/float")
    def as_float(x: float) -> str:
        return "ok"

    @app.route("/ints")
    def as_ints(x: list[int]) -> str:
        return "ok"

    @app.route("/dict")
    def as_dict(x: dict) -> str:  # type: ignore[type-arg]
        return "ok"

    @app.route(regexp="^/rg/(.*)$")
    def third_group(g: RegGroup = RegGroup(3)) -> str:
        return "ok"

    @app.route("/file", method="POST")
    def upload(x: MultipartFile) -> str:
        return "ok"

    return app


@pytest.mark.parametrize(
    ("method", "target", "explain"),
    [
        ("GET", "/float?x=a", "Parameter[x] should be an float. "),
        ("GET", "/ints?x=1&x=a", "One of the parameter[x] is not int. "),
        ("GET", "/dict?x=a", "Parameter[x] should be a JSON string."),
        ("GET", "/rg/a", "RegGroup required an element at 3, but the reg length is only 1"),
        ("POST", "/file?x=text", "Parameter[x] should be a file."),
    ],
)
def test_conversion_errors_keep_the_original_texts(make_client, method, target, explain):
    """Word for word what the original answered ("an float" included): clients and
    error pages may compare them."""
    reply = make_client(conversions_app()).request(method, target)
    assert reply.status == 400
    assert reply.json() == {"code": 400, "message": "Bad Request", "explain": explain}


def test_unexpected_exception_is_500_without_details(make_client):
    reply = make_client(bad_input_app()).get("/boom")
    assert reply.status == 500
    assert b"internal detail" not in reply.body


def test_plain_argument_falls_back_to_the_path_value_of_the_same_name(make_client):
    app = App()

    @app.route("/users/{user_id}")
    def user(user_id: int, q: str = "") -> dict:
        return {"id": user_id, "q": q}

    client = make_client(app)
    assert client.get("/users/42").json() == {"id": 42, "q": ""}
    assert client.get("/users/42?user_id=7").json()["id"] == 7  # the query wins, as before
    assert client.get("/users/abc").status == 400


def test_controller_not_singleton_builds_an_instance_per_request(make_client):
    app = App()
    built: list[int] = []

    @app.controller(singleton=False, args=["fresh"], kwargs={"step": 2})
    @app.request_map("/per-request", method="GET")
    class PerRequest:
        def __init__(self, name: str, step: int = 1) -> None:
            built.append(step)
            self.name = name
            self.count = 0

        @app.request_map
        def hit(self) -> dict:
            self.count += 1
            return {"name": self.name, "count": self.count}

    client = make_client(app)
    assert client.get("/per-request").json() == {"name": "fresh", "count": 1}
    assert client.get("/per-request").json() == {"name": "fresh", "count": 1}
    assert built == [2, 2]


def test_routes_on_static_and_class_methods(make_client):
    """``@route`` above ``@staticmethod`` or ``@classmethod`` answered 500, and the
    ``classmethod`` one made every route of the app a 500 (compiling it failed)."""
    app = App()
    built: list[str] = []

    @app.request_map("/tools", method="GET")
    class Tools:
        def __init__(self) -> None:
            built.append("instance")

        @app.route("/version")
        @app.route("/v")
        @staticmethod
        def version(full: bool = False) -> str:
            return "1.2.3" if full else "1"

        @app.route("/name")
        @classmethod
        async def name(cls, suffix: str = "") -> str:
            return cls.__name__ + suffix

        @app.request_map
        @classmethod
        def root(cls) -> str:
            return "root of " + cls.__name__

    @app.route("/other")
    def other() -> str:
        return "other"

    client = make_client(app)
    assert client.get("/other").text == "other"
    assert client.get("/tools/version?full=1").text == "1.2.3"
    assert client.get("/tools/v").text == "1"
    assert client.get("/tools/name?suffix=!").text == "Tools!"
    assert client.get("/tools").text == "root of Tools"
    assert client.post("/tools/v").status == 405  # the class' method applies
    assert built == []  # never an instance: the methods take none
    assert Tools.version() == "1" and Tools.root() == "root of Tools"  # still usable


_WRAPPED_APP = App()


class _PlainWrapped:
    """A module-level class with no class decorator: found by its qualified name."""

    @classmethod
    @_WRAPPED_APP.route("/plain-class")
    def plain(cls, suffix: str = "") -> str:
        return cls.__name__ + suffix

    @staticmethod
    @_WRAPPED_APP.route("/plain-static")
    def version(full: bool = False) -> str:
        return "1.2.3" if full else "1"


def test_static_and_class_methods_above_routes(make_client):
    """``@classmethod`` / ``@staticmethod`` written ABOVE ``@route`` work as below it:
    the classmethod got no class (a 400 or 404), and neither took the class' prefix."""
    app = App()

    @app.request_map("/tools", method="GET")
    class Tools:
        @classmethod
        @app.route("/name")
        async def name(cls, suffix: str = "") -> str:
            return cls.__name__ + suffix

        @staticmethod
        @app.route("/version")
        def version(full: bool = False) -> str:
            return "1.2.3" if full else "1"

        @app.route("/both")
        @classmethod
        @app.route("/both2")
        def both(cls) -> str:
            return "both of " + cls.__name__

    @app.controller
    class Counted:
        @classmethod
        @app.route("/counted")
        def counted(cls) -> str:
            return cls.__name__

    client = make_client(app)
    assert client.get("/tools/name?suffix=!").text == "Tools!"
    assert client.get("/tools/version?full=1").text == "1.2.3"
    assert client.get("/tools/both").text == "both of Tools"
    assert client.get("/tools/both2").text == "both of Tools"
    assert client.post("/tools/version").status == 405  # the class' method applies
    assert client.get("/counted").text == "Counted"
    plain = make_client(_WRAPPED_APP)
    assert plain.get("/plain-class?suffix=?").text == "_PlainWrapped?"
    assert plain.get("/plain-static").text == "1"
    assert Tools.name.__self__ is Tools and Tools.version() == "1"  # still usable
    assert _PlainWrapped.plain("!") == "_PlainWrapped!"


def test_positional_only_controller_arguments(make_client):
    """0.22.x passed arguments by position; a positional-only one was a 500 (passed
    by keyword)."""
    app = App()

    @app.route("/greet")
    def greet(name: str, /, times: int = 1, *, request: Request) -> str:
        return f"{name}x{times} {request.path}"

    class Items:
        @app.route("/items/{item_id}")
        async def item(self, item_id: int, verbose: bool = False, /) -> dict[str, Any]:
            return {"id": item_id, "verbose": verbose}

    client = make_client(app)
    assert client.get("/greet?name=bo&times=2").text == "box2 /greet"
    assert client.get("/items/7?verbose=1").json() == {"id": 7, "verbose": True}
    assert client.get("/greet").status == 400  # still required


def test_filter_map_is_the_deprecated_regexp_filter(make_client):
    app = App()
    seen: list[str] = []

    def mark(ctx) -> None:
        seen.append(ctx.request.path)
        ctx.do_chain()

    app.filter_map("^/filtered", mark)

    @app.filter_map(regexp="^/decorated")
    def mark_decorated(ctx) -> None:
        seen.append("decorated:" + ctx.request.path)
        ctx.do_chain()

    @app.route("/filtered/x")
    def filtered() -> str:
        return "f"

    @app.route("/decorated/y")
    def decorated() -> str:
        return "d"

    @app.route("/plain")
    def plain() -> str:
        return "p"

    client = make_client(app)
    assert [client.get(p).text for p in ("/filtered/x", "/decorated/y", "/plain")] == [
        "f",
        "d",
        "p",
    ]
    assert seen == ["/filtered/x", "decorated:/decorated/y"]


def test_a_singleton_controller_is_built_once_by_concurrent_first_requests(serve):
    """Eight requests arrive before the instance exists: one constructor call, and
    every request is served by that one instance (README: "one instance")."""
    app = App()
    built: list[str] = []

    @app.controller(args=["db-url"])
    @app.request_map("/svc", method="GET")
    class Service:
        def __init__(self, url: str) -> None:
            built.append(url)
            time.sleep(0.3)  # say, it opens a connection pool

        @app.request_map
        def get(self) -> dict:
            return {"instance": id(self)}

    live = serve(app)
    answers: list[int] = []
    start = threading.Barrier(8)

    def hit() -> None:
        conn = live.connection()
        try:
            start.wait(5)
            conn.request("GET", "/svc")
            answers.append(json.loads(conn.getresponse().read())["instance"])
        finally:
            conn.close()

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(answers) == 8
    assert built == ["db-url"]
    assert len(set(answers)) == 1


def test_a_str_given_where_a_list_goes_is_one_item(make_client):
    """``@controller(args="x")`` and ``Parameters(default="x")`` took the characters."""
    from simple_http_server import Parameters

    app = App()

    @app.controller(args="db-url")
    @app.request_map("/one-arg", method="GET")
    class OneArg:
        def __init__(self, url: str, more: str = "") -> None:
            self.args = [url, more]

        @app.request_map
        def get(self) -> dict:
            return {"args": self.args}

    @app.route("/tags")
    def tags(tag: list = Parameters("tag", default="none")) -> dict:
        return {"tags": tag}

    client = make_client(app)
    assert client.get("/one-arg").json() == {"args": ["db-url", ""]}
    assert client.get("/tags").json() == {"tags": ["none"]}
    assert client.get("/tags?tag=a&tag=b").json() == {"tags": ["a", "b"]}


def before_body_app(log: list[tuple[str, Any]]) -> App:
    """An auth filter that runs before the body is read, behind a filter registered
    before it, in front of a form controller."""
    app = App()

    @app.request_filter("/up/**")
    def late(ctx: Any) -> None:
        log.append(("late", sorted(ctx.request.parameter)))
        ctx.do_chain()

    @app.request_filter("/up/**", before_body=True)
    def auth(ctx: Any) -> None:
        log.append(("auth", sorted(ctx.request.parameter)))
        if ctx.request.headers.get("Authorization") != "Bearer yes":
            raise HttpError(401, "who are you?")
        try:
            ctx.do_chain()
        except HttpError as error:  # what reading the body raised comes out here too
            log.append(("auth saw", error.code))
            raise
        log.append(("auth after", sorted(ctx.request.parameter)))

    @app.route("/up/form", method="POST")
    def form(name: str = "", q: str = "") -> str:
        return f"name={name} q={q}"

    @app.route("/up/json", method="POST")
    def json_body(body: JSONBody) -> dict[str, Any]:
        return dict(body)

    return app


FORM = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer yes"}


def test_a_before_body_filter_runs_first_and_sees_no_form_fields(make_any_client):
    log: list[tuple[str, Any]] = []
    client = make_any_client(before_body_app(log))
    reply = client.post("/up/form?q=1", headers=FORM, body="name=ann")
    assert (reply.status, reply.text) == (200, "name=ann q=1")
    # it ran before the filter registered ahead of it, and before the body was read
    assert log == [("auth", ["q"]), ("late", ["name", "q"]), ("auth after", ["name", "q"])]


def test_a_before_body_filter_gets_what_reading_the_body_raised(make_any_client):
    log: list[tuple[str, Any]] = []
    client = make_any_client(before_body_app(log))
    headers = {**FORM, "Content-Type": "application/json"}
    reply = client.post("/up/json", headers=headers, body="{not json")
    assert reply.status == 400
    assert log == [("auth", []), ("auth saw", 400)]


def test_a_before_body_filter_refuses_without_reading_the_body(make_any_client):
    log: list[tuple[str, Any]] = []
    client = make_any_client(before_body_app(log))
    reply = client.post("/up/form", headers={"Content-Type": FORM["Content-Type"]}, body="name=x")
    assert reply.status == 401 and reply.json()["message"] == "who are you?"
    assert log == [("auth", [])]


def test_a_before_body_filter_answers_before_the_body_is_sent(serve):
    """The body is never waited for: the 401 comes while the client has sent only
    the head (and with ``Expect: 100-continue``, no 100 goes out first)."""
    log: list[tuple[str, Any]] = []
    live = serve(before_body_app(log), max_body_size=100 << 20)
    for expect in (b"", b"Expect: 100-continue\r\n"):
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"POST /up/form HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + expect
                + b"Content-Length: 50000000\r\n\r\n"
            )
            data = b""
            while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
        assert data.startswith(b"HTTP/1.1 401 "), data[:40]
        assert b"\r\nconnection: close\r\n" in data.lower()  # too much body left to drain
    assert log == [("auth", []), ("auth", [])]


def test_without_before_body_the_body_is_read_before_any_filter(make_client):
    """The default stays as in 0.22.x: filters see the form fields."""
    app = App()
    seen: list[list[str]] = []

    @app.request_filter("/f")
    def look(ctx: Any) -> None:
        seen.append(sorted(ctx.request.parameter))
        ctx.do_chain()

    @app.route("/f", method="POST")
    def f(name: str = "") -> str:
        return name

    reply = make_client(app).post(
        "/f", headers={"Content-Type": FORM["Content-Type"]}, body="name=z"
    )
    assert (reply.status, reply.text, seen) == (200, "z", [["name"]])


@pytest.mark.parametrize("awaited", [True, False])
def test_an_async_before_body_filter_in_front_of_def_code(make_any_client, awaited):
    """The body is then read from the loop the filter runs on (in the threaded
    transport, the shared one: the worker thread does the socket reads)."""
    app = App()
    seen: list[str] = []

    @app.request_filter("/a/**", before_body=True)
    async def auth(ctx: Any) -> None:
        seen.append(",".join(sorted(ctx.request.parameter)))
        if awaited:
            await ctx.do_chain()
        else:
            ctx.do_chain()  # as 0.22.x filters did: the chain runs on

    @app.request_filter("/a/**")
    def late(ctx: Any) -> None:
        seen.append(",".join(sorted(ctx.request.parameter)))
        ctx.do_chain()

    @app.route("/a/form", method="POST")
    def form(name: str = "") -> str:
        return name

    body = "name=" + "n" * 200_000  # more than one read
    reply = make_any_client(app).post("/a/form", headers=FORM, body=body)
    assert (reply.status, len(reply.text), seen) == (200, 200_000, ["", "name"])


def test_a_declared_body_over_the_limit_is_refused_before_a_before_body_filter(make_client):
    log: list[tuple[str, Any]] = []
    client = make_client(before_body_app(log), max_body_size=10)
    reply = client.post("/up/form", headers=FORM, body="name=" + "x" * 20)
    assert reply.status == 413 and log == []
