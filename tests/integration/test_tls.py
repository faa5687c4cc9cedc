"""HTTPS (and WSS) in both transports, with certificates from a trustme CA."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from simple_http_server import App, BytesBody, ClientGone, Request, RequestBodyReader, Response
from simple_http_server.config import ServerConfig
from simple_http_server.server import make_ssl_context

from ..conftest import LogRecords, small_send_buffer_listener
from ..robustness.test_websocket_hostile import (
    check_a_client_gone_after_the_handshake,
    check_stop_with_a_stuck_sender,
    check_unanswered_pings_close_1011,
    frame,
    upgraded,
)
from .test_static import check_shrinking_file


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


@pytest.fixture(scope="module")
def server_context(cert_files: tuple[str, str]) -> ssl.SSLContext:
    """The server side's context (one per module: a context serves any number of servers)."""
    certfile, keyfile = cert_files
    return make_ssl_context(keyfile, certfile)


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def tls_app() -> App:
    app = App()

    @app.route("/hello")
    def hello(name: str = "tls") -> dict[str, str]:
        return {"hello": name}

    @app.route("/scheme")
    def scheme(request: Request) -> str:
        return f"{request.scheme} {request.get_session(True).id != ''}"

    return app


def https(live: Any, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", live.port, timeout=10, context=context)


def the_slot_serves_within(live: Any, context: ssl.SSLContext, seconds: float) -> bool:
    """True once a GET gets a 200 within ``seconds`` (a server at ``max_connections=1``
    whose one slot is held answers 503)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = https(live, context)
        try:
            conn.request("GET", "/hello")
            if conn.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    return False


def test_https_keep_alive_in_both_transports(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    live = serve(tls_app(), ssl_context=server_context)
    conn = https(live, client_context)
    try:
        for name in ("one", "two", "three"):  # one TLS connection, several requests
            conn.request("GET", f"/hello?name={name}")
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())) == (200, {"hello": name})
        assert conn.sock is not None and conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.request("GET", "/scheme")
        resp = conn.getresponse()
        assert resp.read() == b"https True"
        assert "; Secure" in resp.headers["Set-Cookie"]  # session cookies are Secure on TLS
    finally:
        conn.close()


def test_large_bodies_both_ways_over_tls(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    app = App()

    @app.route("/upload", method="POST")
    def upload(body: BytesBody) -> dict[str, int]:
        return {"size": len(body)}

    @app.route("/big")
    def big(n: int) -> bytes:
        return b"b" * n

    live = serve(app, ssl_context=server_context)
    conn = https(live, client_context)
    try:
        conn.request("GET", "/big?n=3000000")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"b" * 3_000_000
        conn.request("POST", "/upload", body=os.urandom(2_000_000))
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"size": 2_000_000})
    finally:
        conn.close()


def test_pipelined_requests_over_tls(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Requests already decrypted in the TLS buffer are served without new socket data."""
    live = serve(tls_app(), ssl_context=server_context)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        for i in range(3):  # three TLS records, back to back
            sock.sendall(f"GET /hello?name=p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b'"p2"}'):
            data = sock.recv(65536)
            assert data, received
            received += data
    assert b'{"hello": "p0"}' in received and b'{"hello": "p1"}' in received


def test_static_file_over_tls(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    payload = os.urandom(1_500_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    live = serve(tls_app(), {"/files/*": str(tmp_path)}, ssl_context=server_context)
    conn = https(live, client_context)
    try:
        conn.request("GET", "/files/blob.bin")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == payload
        conn.request("GET", "/files/blob.bin", headers={"Range": "bytes=10-19"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == payload[10:20]
    finally:
        conn.close()


def test_plain_http_and_untrusted_clients_fail_server_survives(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    live = serve(tls_app(), ssl_context=server_context)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert b"HTTP/1.1 200" not in answer
    untrusting = ssl.create_default_context()  # does not know the trustme CA
    conn = https(live, untrusting)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/hello")
    conn.close()
    conn = https(live, client_context)
    try:
        conn.request("GET", "/hello")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("body", [b"", b"x" * 50_000], ids=["get", "post-body"])
def test_plain_http_to_the_tls_port_is_closed_cleanly(
    serve: Callable[..., Any], server_context: ssl.SSLContext, body: bytes
) -> None:
    """Plain HTTP sent to the TLS port: a clean close (FIN) in both transports; the
    threaded one reset the connection (it closed with the request's bytes unread)."""
    live = serve(tls_app(), ssl_context=server_context)
    head = f"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(head.encode() + body)
            answer = b""
            for _ in range(100):  # until the server's FIN (a reset raises)
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
            assert answer == b""


def test_encrypted_key_with_keypass(
    cert_files: tuple[str, str], tmp_path: Path, client_context: ssl.SSLContext, transport: str
) -> None:
    from cryptography.hazmat.primitives import serialization

    from ..conftest import live_server

    certfile, keyfile = cert_files
    key = serialization.load_pem_private_key(Path(keyfile).read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    with pytest.raises(ssl.SSLError):
        make_ssl_context(str(locked), certfile, "wrong")
    # The password, its bytes, or a function returning it, as load_cert_chain takes them
    # (a function was returned as the password: TypeError).
    for keypass in ("s3cret", b"s3cret", lambda: "s3cret"):
        context = make_ssl_context(str(locked), certfile, keypass)
        with live_server(tls_app(), transport, ssl_context=context) as live:
            conn = https(live, client_context)
            try:
                conn.request("GET", "/hello?name=locked")
                assert json.loads(conn.getresponse().read()) == {"hello": "locked"}
            finally:
                conn.close()


def _locked_key(keyfile: str, folder: Path) -> str:
    """``keyfile`` encrypted with the password ``s3cret``."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(keyfile).read_bytes(), password=None)
    locked = folder / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    return str(locked)


def test_tls_file_errors_name_the_file_and_the_fault(
    ca: trustme.CA, cert_files: tuple[str, str], tmp_path: Path, transport: str
) -> None:
    """Each error says which file and what is wrong; it was ``[Errno 2] No such file or
    directory`` (which one?), ``[SSL] PEM lib (_ssl.c:3926)`` for a wrong keypass, and
    ``[Errno 22] Invalid argument`` for an encrypted key without one."""
    from simple_http_server import server

    certfile, keyfile = cert_files
    locked = _locked_key(keyfile, tmp_path)
    other = tmp_path / "other.pem"
    ca.issue_cert("other").private_key_pem.write_to_path(str(other))
    missing = str(tmp_path / "missing.pem")
    cases: list[tuple[dict[str, str], type[Exception], str]] = [
        ({"certfile": missing, "keyfile": keyfile}, FileNotFoundError, "missing.pem"),
        ({"certfile": certfile, "keyfile": missing}, FileNotFoundError, "missing.pem"),
        ({"certfile": certfile, "keyfile": locked}, ssl.SSLError, "locked.pem' is encrypted"),
        ({"certfile": certfile, "keyfile": locked, "keypass": "wrong"}, ssl.SSLError,
         "cannot decrypt the TLS key"),
        ({"certfile": certfile, "keyfile": str(other)}, ssl.SSLError, "KEY_VALUES_MISMATCH"),
    ]  # fmt: skip
    for files, error, message in cases:
        with pytest.raises(error) as caught:
            server.start(
                host="127.0.0.1", port=0, ssl=True, prefer_coroutine=transport == "asyncio", **files
            )
        assert message in str(caught.value), (files, str(caught.value))
    assert not server.is_ready()


def _start_error(transport: str, **options: Any) -> BaseException | None:
    """What ``server.start(...)`` raised within 5 s (None: it served; then it is stopped)."""
    from simple_http_server import server

    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start(host="127.0.0.1", port=0, prefer_coroutine=transport == "asyncio",
                         **options)  # fmt: skip
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        server.stop()
        thread.join(15)
    return errors[0] if errors else None


def test_a_context_no_server_can_use_is_refused_at_start(
    cert_files: tuple[str, str], client_context: ssl.SSLContext, transport: str
) -> None:
    """``ssl_check_hostname=True`` (the original's option) and a client context (what
    ``ssl.create_default_context()`` makes) fail every handshake: the threaded server
    died with a ``ValueError`` at its first connection, the asyncio one closed each."""
    certfile, keyfile = cert_files
    error = _start_error(transport, ssl=True, certfile=certfile, keyfile=keyfile,
                         ssl_check_hostname=True)  # fmt: skip
    assert isinstance(error, ValueError) and "ssl_check_hostname=True" in str(error), error
    client_side = ssl.create_default_context()
    client_side.load_cert_chain(certfile, keyfile)
    error = _start_error(transport, ssl_context=client_side)
    assert isinstance(error, ValueError) and "client context" in str(error), error
    with pytest.raises(ValueError, match="client context"):
        ServerConfig(ssl_context=client_context)


def test_tls_1_2_at_least_and_http_1_1_for_a_client_offering_h2(
    serve: Callable[..., Any], server_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    live = serve(tls_app(), ssl_context=server_context)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(old)
    old.set_ciphers("ALL:@SECLEVEL=0")  # the client side allows TLS 1.1: the server must not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        with pytest.raises((ssl.SSLError, OSError)):
            old.wrap_socket(sock, server_hostname="localhost")
    modern = ssl.create_default_context()
    ca.configure_trust(modern)
    modern.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        with modern.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
            tls.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")


def test_an_encrypted_key_without_keypass_never_prompts_on_the_terminal(
    cert_files: tuple[str, str], tmp_path: Path
) -> None:
    """Given no password, OpenSSL asks for it on the process' terminal: a server
    started from a shell (or under a terminal multiplexer) hung there for good."""
    import pty
    import select
    import signal as signals
    import sys

    from .apps import harness

    certfile, keyfile = cert_files
    code = (
        "from simple_http_server import server\n"
        f"server.start(host='127.0.0.1', port=0, ssl=True, certfile={certfile!r}, "
        f"keyfile={_locked_key(keyfile, tmp_path)!r})\n"
    )
    env = harness.child_environment()
    pid, terminal = pty.fork()  # the child gets the pty as its controlling terminal
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    output = b""
    exited = False
    try:
        deadline = time.monotonic() + 20
        while not exited and b"pass phrase" not in output and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the child is gone
                    output += os.read(terminal, 4096)
            exited = os.waitpid(pid, os.WNOHANG)[0] != 0
        with contextlib.suppress(OSError):
            while select.select([terminal], [], [], 0.1)[0]:  # what is left to read
                chunk = os.read(terminal, 4096)
                if not chunk:
                    break
                output += chunk
    finally:
        if not exited:
            os.kill(pid, signals.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert b"pass phrase" not in output, output
    assert b"is encrypted: give its password" in output, output


def test_wss_in_both_transports(
    serve: Callable[..., Any], ca: trustme.CA, server_context: ssl.SSLContext, tmp_path: Path
) -> None:
    import websocket

    from .apps.demo_app import build_app

    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    live = serve(build_app(), ssl_context=server_context)
    url = f"wss://127.0.0.1:{live.port}/ws/echo/secure"
    conn = websocket.create_connection(url, timeout=10, sslopt={"ca_certs": str(cafile)})
    try:
        assert conn.recv() == "open secure"
        big = "x" * 300_000  # several TLS records
        conn.send(big)
        assert conn.recv() == f"echo: {big}"
        conn.send_binary(b"\x00\x01\x02")
        assert conn.recv() == b"\x02\x01\x00"
    finally:
        conn.close()
    with pytest.raises(ssl.SSLError):  # the client checks the server's certificate
        websocket.create_connection(url, timeout=10, sslopt={"cert_reqs": ssl.CERT_REQUIRED})


def close_notify_and_fin(sock: socket.socket) -> None:
    """A clean TLS end: the client's close_notify, then its FIN."""
    assert isinstance(sock, ssl.SSLSocket)
    sock.setblocking(False)
    with contextlib.suppress(ssl.SSLError):  # (it does not wait for the server's)
        sock.unwrap()
    socket.socket.shutdown(sock, socket.SHUT_WR)


def fin_only(sock: socket.socket) -> None:
    socket.socket.shutdown(sock, socket.SHUT_WR)


@pytest.mark.parametrize("leave", [close_notify_and_fin, fin_only], ids=["close-notify", "fin"])
@pytest.mark.parametrize("slow", ["", "async on_handshake"])
def test_a_wss_client_gone_right_after_the_handshake_is_closed_with_1006(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    leave: Callable[[socket.socket], None],
    slow: str,
) -> None:
    """As without TLS: the session opens, gets what was sent before the client's end,
    ends with 1006 and frees its connection (asyncio closes a TLS transport at the
    client's end: the session used to be dropped unopened, its messages lost)."""
    check_a_client_gone_after_the_handshake(
        serve,
        lambda sock: client_context.wrap_socket(sock, server_hostname="127.0.0.1"),
        leave,
        frame(0x1, b"early"),
        ("early",),
        slow,
        ssl_context=server_context,
    )


def test_file_that_shrinks_while_sent_over_tls(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    """TLS reads and writes the file in user space: a truncated file closes the
    connection there too (it cannot fill its Content-Length)."""
    live = check_shrinking_file(
        serve,
        tmp_path,
        lambda sock: client_context.wrap_socket(sock, server_hostname="127.0.0.1"),
        ssl_context=server_context,
    )
    conn = https(live, client_context)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    conn.close()


def test_stalled_handshakes_do_not_stall_the_server(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Connections stuck half-way through a TLS handshake are timed out without
    blocking anyone else (the threaded sweep used to write each one a 408, blocking)."""
    live = serve(tls_app(), ssl_context=server_context, head_timeout=1.0)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    stalled = []
    try:
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
            sock.sendall(hello[:20])  # a partial ClientHello
            stalled.append(sock)
        time.sleep(1.6)  # past head_timeout: the deadline sweep handles them now
        started = time.monotonic()
        conn = https(live, client_context)
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b'{"hello": "tls"}'
        conn.close()
        assert time.monotonic() - started < 2.0
    finally:
        for sock in stalled:
            sock.close()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes (an abrupt close ends it too); fails
    if it does not close in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"server did not close within {timeout}s; got {data!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, ConnectionError):
            return data
        if not chunk:
            return data
        data += chunk


# -- head_timeout covers the handshake and the first head; idle_timeout is between requests
def test_a_fresh_tls_connection_that_sends_nothing_is_closed_after_head_timeout(
    serve: Callable[..., Any], server_context: ssl.SSLContext
) -> None:
    live = serve(
        tls_app(), ssl_context=server_context,
        head_timeout=1.0, idle_timeout=30.0,
    )  # fmt: skip
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        assert read_until_closed(sock, 5) == b""  # no ClientHello ever
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.0 + 1.0, elapsed


def test_a_tls_handshake_then_silence_is_closed_head_timeout_after_the_accept(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Completing the handshake does not buy idle_timeout: the first request head is
    due head_timeout after the accept.  Nothing was asked: closed without a 408."""
    live = serve(
        tls_app(), ssl_context=server_context,
        head_timeout=1.0, idle_timeout=30.0,
    )  # fmt: skip
    started = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        data = read_until_closed(sock, 5)
        elapsed = time.monotonic() - started
    assert data == b""
    assert 0.9 <= elapsed < 1.0 + 1.0, elapsed


def test_a_partial_tls_head_gets_408_head_timeout_after_the_accept(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    live = serve(
        tls_app(), ssl_context=server_context,
        head_timeout=2.0, idle_timeout=30.0,
    )  # fmt: skip
    started = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        time.sleep(1.2)
        sock.sendall(b"GET /hello HTTP/1.1\r\nHo")  # late, and never finished
        data = read_until_closed(sock, 5)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 1.9 <= elapsed < 3.0, elapsed  # from its first byte it would be 3.2 s at least


def test_idle_timeout_not_head_timeout_applies_between_tls_requests(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    live = serve(
        tls_app(), ssl_context=server_context,
        head_timeout=0.5, idle_timeout=2.0,
    )  # fmt: skip
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = read_until_closed(sock, 5)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"hello": "tls"}'), data
    assert 1.9 <= elapsed < 2.0 + 1.0, elapsed


def test_stop_is_not_held_up_by_a_stuck_tls_websocket_sender(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Over TLS a stuck websocket send had no timeout at all: stop() never finished."""
    check_stop_with_a_stuck_sender(
        serve,
        lambda sock: client_context.wrap_socket(sock, server_hostname="127.0.0.1"),
        ssl_context=server_context,
    )


def test_a_wss_peer_that_answers_no_ping_is_closed_with_1011(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    check_unanswered_pings_close_1011(
        serve,
        lambda sock: client_context.wrap_socket(sock, server_hostname="127.0.0.1"),
        ssl_context=server_context,
    )


def test_coroutine_body_reads_and_streamed_writes_over_https(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """An ``async def`` controller reading its body (``await reader.read()``) and streaming
    with ``write_bytes`` + ``drain()`` over TLS (in the threaded transport both happen on
    the worker thread), then the kept-alive connection serves the next request."""
    app = tls_app()

    @app.route("/echo", method="POST")
    async def echo(reader: RequestBodyReader, response: Response) -> None:
        body = await reader.read()
        for start in range(0, len(body), 100_000):
            response.write_bytes(body[start : start + 100_000])
            await response.drain()

    live = serve(app, ssl_context=server_context)
    payload = os.urandom(1_000_000)
    conn = https(live, client_context)
    try:
        conn.request("POST", "/echo", body=payload)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == payload
        conn.request("GET", "/hello")
        assert json.loads(conn.getresponse().read()) == {"hello": "tls"}
    finally:
        conn.close()


def test_a_coroutine_streams_to_a_wss_client_with_drain(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Over TLS a coroutine's output (messages, a file in pieces, a close) goes out in
    order: what the socket takes at once from the loop, the rest from the threaded
    session's writer thread; ``drain()`` waits for it."""
    import asyncio
    import threading

    from websocket import ABNF, WebSocket

    from simple_http_server import WebsocketHandler, WebsocketSession

    app = App()
    data = [os.urandom(1024 * 1024) for _ in range(4)]
    drained: list[bool] = []
    closed = threading.Event()

    @app.websocket_handler(endpoint="/ws")
    class Streamer(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            for item in data:
                session.send_binary(item)
                await session.drain()
                drained.append(True)
            session.send_binary(data[0], chunk_size=100_000)  # framed piece by piece, in turn
            await asyncio.sleep(0)
            session.close("done")

        def on_close(self, session: WebsocketSession, reason: Any) -> None:
            closed.set()

    # (drain_timeout: the asyncio transport's stop waits that long for this closed
    # TLS connection, with or without this test's subject)
    live = serve(app, ssl_context=server_context, drain_timeout=1.0)
    client = WebSocket(sslopt={"context": client_context})
    client.connect(f"wss://127.0.0.1:{live.port}/ws", timeout=10)
    try:
        client.send("go")
        got = [client.recv() for _ in range(5)]
        opcode, frame = client.recv_data_frame(control_frame=True)
        assert opcode == ABNF.OPCODE_CLOSE and frame.data[2:] == b"done"
    finally:
        client.close()
    assert got == [*data, data[0]]
    assert drained == [True] * 4
    assert closed.wait(5)


def test_a_wss_session_the_server_closed_frees_its_slot_at_once(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """After the closing handshake the server closes TLS; a client that never sends
    its close_notify (most do not) held the connection's slot for asyncio's own 30 s
    TLS shutdown timeout (and ``stop()`` waited its whole drain_timeout for it)."""

    from websocket import ABNF, WebSocket

    from simple_http_server import WebsocketHandler, WebsocketSession

    app = tls_app()

    @app.websocket_handler(endpoint="/bye")
    class Bye(WebsocketHandler):
        def on_text_message(self, session: WebsocketSession, message: str) -> None:
            session.close("bye")

    live = serve(app, ssl_context=server_context, max_connections=1)
    client = WebSocket(sslopt={"context": client_context})
    client.connect(f"wss://127.0.0.1:{live.port}/bye", timeout=10)
    client.send("go")
    assert client.recv_data_frame(control_frame=True)[0] == ABNF.OPCODE_CLOSE
    client.close()
    assert the_slot_serves_within(live, client_context, 5), "the session still holds its slot"


def test_a_slow_tls_reader_gets_a_closing_answer_whole(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """``Connection: close`` over TLS: the end of the answer may wait, encrypted, below
    the TLS layer when the connection is closed; a client that starts reading only
    seconds later (past the close linger) still gets all of it."""
    import time

    from ..robustness.wire import parse_responses

    body = 60 * 1024
    app = tls_app()

    @app.route("/answer")
    def answer() -> bytes:
        return b"a" * body

    # Small kernel buffers (accepted sockets inherit the listener's SO_SNDBUF), so part
    # of the answer stays in the server's own buffers while the client waits.
    listener = small_send_buffer_listener()
    live = serve(app, listener=listener, ssl_context=server_context)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /answer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(2.5)  # answered and closed meanwhile; the client has read nothing
        data = read_until_closed_or_cut(sock)
    [reply] = parse_responses(data)
    assert reply.status == 200 and len(reply.body) == body


def test_a_slow_but_steady_tls_reader_gets_a_large_answer_written_at_once(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """8 MiB of ``bytes``, one write, to a reader slower than the server: body_timeout
    bounds a stall, not the write.  The threaded transport gave one TLS write of it
    all body_timeout and dropped a reader that kept reading."""
    size = 8 * 1024 * 1024
    app = tls_app()

    @app.route("/large")
    def large() -> bytes:
        return b"l" * size

    live = serve(app, ssl_context=server_context, body_timeout=1.0)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /large HTTP/1.1\r\nHost: t\r\n\r\n")
        started, head = time.monotonic(), b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 ")
        received = 0
        while received < size:  # 16 KiB every 5 ms at most: over 2.5 s in all
            chunk = sock.recv(16384)
            assert chunk, f"dropped after {received} bytes"
            received += len(chunk)
            time.sleep(0.005)
        elapsed = time.monotonic() - started
    assert received == size
    assert elapsed > 2.0  # several body_timeouts: only progress kept it going


def test_a_tls_client_that_stops_reading_a_stream_is_dropped_after_body_timeout(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """A stall is still a stall over TLS, whose answers go out in slices."""
    given_up = threading.Event()
    app = tls_app()

    @app.route("/stream")
    def stream() -> Iterator[bytes]:
        try:
            for _ in range(512):  # 128 MiB at most: the buffers fill long before
                yield b"s" * (256 * 1024)
        finally:  # closed: the answer was abandoned
            given_up.set()

    live = serve(app, ssl_context=server_context, body_timeout=2.0)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
        started = time.monotonic()
        assert given_up.wait(10), "the server still waits for a client that reads nothing"
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3.5, elapsed


def steady_tls_reader(
    live: Any, context: ssl.SSLContext, request: bytes, rcvbuf: int, pause: float = 0.0
) -> bytes:
    """Send ``request`` over TLS and read until the end, 64 KiB at most every 10 ms
    (after a pause of ``pause`` seconds once the answer's head came): all it got."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    data = b""
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(request)
        paused = False
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if not paused and b"\r\n\r\n" in data:
                    paused = True
                    time.sleep(pause)
                time.sleep(0.01)
        except (ssl.SSLError, OSError):  # dropped: the caller sees what it got
            pass
    return data


def test_a_steady_tls_reader_of_a_closing_answer_is_not_taken_for_a_stalled_one(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """``Connection: close``, a small body_timeout and a reader slower than the server:
    the asyncio transport looked only at what its own buffers still held, which does
    not move while the kernel's (megabytes, over loopback) drains, and cut a reader that
    kept reading (after about 4 MiB of 8).  What the client's TCP acknowledges counts."""
    from ..robustness.wire import parse_responses

    size = 8 * 1024 * 1024
    app = tls_app()

    @app.route("/large")
    def large() -> bytes:
        return b"l" * size

    live = serve(app, ssl_context=server_context, body_timeout=0.5)
    request = b"GET /large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    data = steady_tls_reader(live, client_context, request, 65536)  # ~1.6 MB/s at most
    [reply] = parse_responses(data)
    assert reply.status == 200 and len(reply.body) == size


def test_a_tls_answer_is_written_with_body_timeout_after_a_paced_body_read(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """The threaded transport bounded a TLS body read with the socket's timeout, cut to
    what min_body_rate allowed (0.3 s here), and restored body_timeout only after the
    request: its answer was written with the short timeout, and a client that paused a
    second (well within body_timeout) was dropped."""
    from ..robustness.wire import parse_responses

    size = 4_000_000
    app = tls_app()

    @app.route("/upload", method="POST")
    def upload(body: BytesBody) -> bytes:
        return bytes(body) * (size // 10)

    live = serve(
        app,
        ssl_context=server_context,
        body_timeout=5.0,
        min_body_rate=1000,
        min_body_rate_grace=0.3,
    )
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    data = b""
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        )
        time.sleep(0.1)  # the server waits for the body (0.3 s at most at this rate)
        sock.sendall(b"0123456789")
        time.sleep(1.0)  # the answer goes out meanwhile, and stalls
        data += read_until_closed_or_cut(sock)
    [reply] = parse_responses(data)
    assert reply.status == 200 and len(reply.body) == size


def test_a_tls_reader_slower_than_min_send_rate_is_dropped(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """min_send_rate over TLS (non-blocking TLS writes in the threaded transport)."""
    given_up = threading.Event()
    app = tls_app()

    @app.route("/stream")
    def stream() -> Iterator[bytes]:
        try:
            for _ in range(512):  # 128 MiB at most
                yield b"s" * (256 * 1024)
        finally:  # closed: the answer was abandoned
            given_up.set()

    live = serve(
        app,
        listener=small_send_buffer_listener(),
        ssl_context=server_context,
        body_timeout=10.0,  # never a stall: the rate drops it
        min_send_rate=256 * 1024,
        min_send_rate_grace=1.0,
    )
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        started = time.monotonic()
        try:
            while not given_up.is_set() and time.monotonic() - started < 8:
                sock.recv(4096)  # 80 KiB/s at most
                time.sleep(0.05)
        except (ssl.SSLError, OSError):
            pass
        assert given_up.wait(5), "a client slower than min_send_rate was not dropped"
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 4.0, elapsed


@pytest.mark.parametrize("size", [100, 4 * 1024 * 1024])
def test_a_closed_tls_connection_frees_its_slot_soon_after_its_answer_went_out(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    size: int,
) -> None:
    """``Connection: close``: the client reads the whole answer and keeps its socket open,
    never sending its close_notify.  The slot frees about a second after the last byte
    went out, however large the answer (a large one held it for body_timeout)."""

    app = tls_app()

    @app.route("/answer")
    def answer() -> bytes:
        return b"a" * size

    live = serve(app, ssl_context=server_context, max_connections=1, body_timeout=8.0)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    sock = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        sock.sendall(b"GET /answer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ssl.SSLError, OSError):
            pass
        assert received > size
        assert the_slot_serves_within(live, client_context, 4), "the slot is still held"
    finally:
        raw.close()


def request_key_update(sock: ssl.SSLSocket) -> None:
    """Make the client's next write carry a TLS 1.3 KeyUpdate that asks the server to
    update its keys too (Python has no API for it: OpenSSL's, through ctypes)."""
    import _ssl
    import ctypes

    libssl = ctypes.CDLL(_ssl.__file__)  # resolves libssl's symbols too
    libssl.SSL_version.argtypes = [ctypes.c_void_p]
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    # CPython's _ssl._SSLSocket: PyObject_HEAD, a weak reference, then the SSL *.
    ssl_ptr = ctypes.c_void_p.from_address(id(sock._sslobj) + 24).value  # type: ignore[attr-defined]
    assert libssl.SSL_version(ssl_ptr) == 0x0304, "not the SSL * of a TLS 1.3 connection"
    assert libssl.SSL_key_update(ssl_ptr, 1) == 1  # SSL_KEY_UPDATE_REQUESTED


@pytest.mark.parametrize("buffers", ["default", "small"])
def test_wss_survives_key_updates_while_another_thread_sends(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    buffers: str,
) -> None:
    """A TLS 1.3 peer's key update is read by the session's thread and changes the keys
    another thread encrypts with: in the threaded transport both used the connection at
    once, and the client soon got a record it could not decrypt (bad record MAC).

    With small socket buffers the sending thread often leaves a record half sent
    (``SSLWantWriteError``) when the key update is read: OpenSSL then refused the
    read's own write (the answering key update, "bad length") and the session ended."""
    import struct
    import threading

    from simple_http_server import WebsocketHandler, WebsocketSession

    count = 6000
    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Pump(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            def pump() -> None:
                for i in range(count):
                    session.send(f"{i:05d}" + "y" * 1000)

            threading.Thread(target=pump, daemon=True).start()

    small = buffers == "small"
    listener = small_send_buffer_listener(8192) if small else None
    live = serve(app, ssl_context=server_context, listener=listener)
    raw = socket.socket()
    if small:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", live.port))
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.3"
        upgraded(sock)  # type: ignore[arg-type]
        data, got = b"", []
        while len(got) < count:
            if len(got) % 5 == 0:  # 1,200 key updates, each while the server sends
                request_key_update(sock)
                sock.sendall(frame(0x1, b"k"))
            while len(data) < 4 or len(data) < 4 + struct.unpack("!H", data[2:4])[0]:
                chunk = sock.recv(65536)  # an ssl.SSLError here is the defect
                assert chunk, len(got)
                data += chunk
            size = struct.unpack("!H", data[2:4])[0]
            assert data[1] == 126, data[:4]  # unmasked, 16-bit length
            got.append(data[4 : 4 + size][:5])
            data = data[4 + size :]
    assert got == [f"{i:05d}".encode() for i in range(count)]


def read_until_closed_or_cut(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sent until it closed, with or without TLS's closure alert."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    return data


def read_to_a_clean_end(sock: ssl.SSLSocket) -> bytes:
    """Everything until the server's TLS closure alert (``ssl.SSLEOFError`` when the
    connection ends without one: the client cannot tell the end from a cut)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        (b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 "),
        (b"GET /hello HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 "),
        (b"GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", b"HTTP/1.1 400 "),
    ],
    ids=["connection-close", "http-1.0", "bad-request"],
)
def test_the_server_ends_a_tls_connection_with_close_notify(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    request_bytes: bytes,
    expected: bytes,
) -> None:
    """The threaded transport closed TLS connections without the closure alert: a client
    that checks (``suppress_ragged_eofs=False``) saw every ending as a truncation."""
    live = serve(tls_app(), ssl_context=server_context)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(
        raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
    ) as sock:
        sock.sendall(request_bytes)
        assert read_to_a_clean_end(sock).startswith(expected)


def test_a_wss_session_the_server_ends_closes_tls_with_close_notify(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    from simple_http_server import WebsocketHandler, WebsocketSession

    app = App()

    @app.websocket_handler(endpoint="/ws")
    class Leaving(WebsocketHandler):
        def on_open(self, session: WebsocketSession) -> None:
            session.close("bye")

    live = serve(app, ssl_context=server_context)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(
        raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
    ) as sock:
        upgraded(sock)  # type: ignore[arg-type]
        closing = sock.recv(64)  # the server's Close (small: one record)
        sock.sendall(frame(0x8, b"\x03\xe8"))  # the client's answer to it
        rest = read_to_a_clean_end(sock)
    assert closing[:1] == b"\x88" and closing[4:] == b"bye" and rest == b""


# -- a client that resets a TLS connection while a coroutine streams to it
class _Warnings(logging.Handler):
    """What asyncio itself logs (``socket.send() raised exception.`` per lost write)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def asyncio_warnings() -> Iterator[_Warnings]:
    handler = _Warnings()
    log = logging.getLogger("asyncio")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def read_then_reset(sock: socket.socket, size: int) -> None:
    """Read ``size`` bytes of what the server streams, then reset the connection."""
    got = 0
    while got < size:
        chunk = sock.recv(65536)
        assert chunk, got
        got += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


#: Writes a coroutine may make at most: before, asyncio's TLS kept taking (and dropping)
#: every one, none raised, and asyncio logged a warning for each.
_WRITES = 2000


def test_write_bytes_and_drain_raise_client_gone_once_a_tls_client_reset(
    serve: Callable[..., Any], server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    app = App()
    ended: queue.Queue[str] = queue.Queue()

    @app.route("/stream")
    async def stream(response: Response) -> None:
        written = 0
        try:
            while written < _WRITES:
                response.write_bytes(b"w" * 65536)
                written += 1
                await response.drain()
            ended.put("every write taken")
        except ClientGone:
            ended.put("ClientGone")

    live = serve(app, ssl_context=server_context)
    with asyncio_warnings() as warnings:
        raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        sock = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        read_then_reset(sock, 200_000)
        assert ended.get(timeout=10) == "ClientGone"
    assert warnings.lines == []


def test_a_wss_session_sees_a_reset_client_in_its_send_and_drain_loop(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    log_records: LogRecords,
) -> None:
    """... and ends quietly: on Python 3.10 the asyncio session resumed reading on the
    closed SSL transport, which raises there ("Websocket session failed")."""
    from simple_http_server import WebsocketCloseReason, WebsocketHandler, WebsocketSession

    from ..robustness.test_websocket_hostile import frame, upgraded

    app = App()
    ended: queue.Queue[str] = queue.Queue()
    closed: queue.Queue[int] = queue.Queue()

    @app.websocket_handler(endpoint="/ws")
    class Streamer(WebsocketHandler):
        async def on_text_message(self, session: WebsocketSession, message: str) -> None:
            for _ in range(_WRITES):
                if session.is_closed:
                    ended.put("is_closed")
                    return
                session.send_binary(b"w" * 65536)
                await session.drain()
            ended.put("every send taken")

        def on_close(self, session: WebsocketSession, reason: WebsocketCloseReason) -> None:
            closed.put(reason.code)

    live = serve(app, ssl_context=server_context)
    with asyncio_warnings() as warnings:
        raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        sock = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        upgraded(sock)  # type: ignore[arg-type]
        sock.sendall(frame(0x1, b"go"))
        read_then_reset(sock, 200_000)
        assert ended.get(timeout=10) == "is_closed"
        assert closed.get(timeout=5) == 1006
    assert warnings.lines == []
    live.stop()  # the session's task has ended: whatever it logged is in
    errors = [r.getMessage() for r in log_records.records if r.levelno >= logging.ERROR]
    assert errors == []


# -- max_connections over TLS: the 503 goes out encrypted, after a handshake
@pytest.mark.parametrize("size", [0, 100_000, 3_000_000])
def test_a_tls_client_over_max_connections_reads_the_503(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    size: int,
) -> None:
    """The threaded transport wrote the 503 in plaintext before the handshake: an HTTPS
    client saw ``WRONG_VERSION_NUMBER``.  A client still sending its request reads it
    too (a lingering close)."""
    live = serve(tls_app(), ssl_context=server_context, max_connections=1)
    held = https(live, client_context)
    try:
        held.request("GET", "/hello")
        assert held.getresponse().read() == b'{"hello": "tls"}'
        conn = https(live, client_context)
        try:
            conn.request("POST", "/hello", body=b"b" * size)
            resp = conn.getresponse()
            assert resp.status == 503
            assert json.loads(resp.read())["code"] == 503
        finally:
            conn.close()
    finally:
        held.close()


def test_tls_refusals_past_max_connections_are_bounded(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    monkeypatch: Any,
) -> None:
    """A refused TLS connection needs a handshake before it can read its 503.  Not
    counted in max_connections, such connections are bounded all the same: at most
    TLS_REFUSALS at once (past them, closed at once, unanswered), each closed
    head_timeout after its accept at the latest.  (asyncio counted a TLS connection
    only once its handshake was done: these were all kept, and the third one served.)"""
    from simple_http_server.transport import aio, threaded

    monkeypatch.setattr(threaded, "TLS_REFUSALS", 2)
    monkeypatch.setattr(aio, "TLS_REFUSALS", 2)
    config = {"ssl_context": server_context, "max_connections": 1, "head_timeout": 1.5}
    live = serve(tls_app(), **config)
    held = https(live, client_context)
    held.request("GET", "/hello")
    assert held.getresponse().read() == b'{"hello": "tls"}'
    silent = [socket.create_connection(("127.0.0.1", live.port), timeout=10) for _ in "ab"]
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw:
            with pytest.raises(OSError):  # no handshake: closed at once
                client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        assert time.monotonic() - started < 1.0
        for sock in silent:  # their handshakes never started: closed in time
            assert read_until_closed(sock, 5) == b""
    finally:
        for sock in silent:
            sock.close()
    conn = https(live, client_context)  # room again: refused with a 503
    try:
        conn.request("GET", "/hello")
        assert conn.getresponse().status == 503
    finally:
        conn.close()
    held.close()


@pytest.mark.parametrize("then", ["close", "garbage"])
def test_tcp_connections_without_a_handshake_count_in_max_connections(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    then: str,
) -> None:
    """A TLS connection counts from its TCP accept in both transports: asyncio made it
    (and counted it) only once its handshake was done, so clients that never send a
    ClientHello held sockets past max_connections (300 of them at max_connections=5)
    while a real client was still served.  A handshake that ends (the client leaves,
    or sends what is not TLS) frees its slot at once, not at head_timeout."""
    live = serve(tls_app(), ssl_context=server_context, max_connections=2, head_timeout=30.0)
    idle = [socket.create_connection(("127.0.0.1", live.port), timeout=10) for _ in "ab"]
    try:
        time.sleep(0.2)  # both accepted
        conn = https(live, client_context)
        try:
            conn.request("GET", "/hello")
            resp = conn.getresponse()
            assert resp.status == 503
        finally:
            conn.close()
        for sock in idle:
            if then == "close":
                sock.close()
            else:
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert the_slot_serves_within(live, client_context, 5.0)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("how", ["close", "rst"])
def test_a_quiet_stream_whose_tls_client_left_ends(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    how: str,
) -> None:
    """Over TLS too, an async event stream waiting for an event that never comes ends
    once its client left (its close_notify and FIN, or a reset): its ``finally`` never
    ran, and its worker thread (or task) stayed."""
    import asyncio

    events: list[str] = []
    app = App()

    @app.route("/events")
    def events_route() -> Any:
        async def stream() -> Any:
            try:
                yield b"data: 1\n\n"
                await asyncio.Event().wait()
            finally:
                events.append("finally")

        return stream()

    live = serve(app, ssl_context=server_context, worker_threads=1)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=5)
    sock = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
    received = b""
    while b"data: 1" not in received:
        chunk = sock.recv(4096)
        assert chunk
        received += chunk
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        try:
            plain = sock.unwrap()  # close_notify
            plain.shutdown(socket.SHUT_WR)
            plain.close()
        except ssl.SSLEOFError:  # ours went out; 3.10's asyncio closes without its own
            sock.close()
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events == ["finally"]


@pytest.fixture
def long_linger(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """A lingering close of 30 s in both transports: an answer whose end waits for it
    cannot go unnoticed within a client's 10 s timeout."""
    if transport == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("Python 3.10's asyncio TLS sends the alert at the linger's end (README)")
    from simple_http_server.transport import aio, threaded_conn

    monkeypatch.setattr(aio, "LINGER_SECONDS", 30.0)
    monkeypatch.setattr(threaded_conn, "LINGER_SECONDS", 30.0)


def _refused_over_tls(port: int, context: ssl.SSLContext, head: bytes, body: int = 0) -> bytes:
    """Send ``head`` and ``body`` bytes (as http.client does: all of it, then read),
    and read the answer up to the server's TLS closure alert (10 s at most)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(head)
        for _ in range(body // 65536):  # the server discards it while it lingers
            sock.sendall(b"y" * 65536)
        return read_to_a_clean_end(sock)


def test_an_error_answer_over_tls_ends_with_the_closure_alert_at_once(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    long_linger: None,
) -> None:
    """TLS cannot half-close: asyncio sent its close_notify only once its lingering
    close was over (1 s), so a client reading a 400 or a 413 to its end waited that
    long; the threaded transport sends it at once.  Now both do, and a body the client
    is still sending does not cost it the answer."""
    from ..robustness.wire import parse_responses

    app = tls_app()

    @app.route("/upload", method="POST")
    def upload(body: BytesBody) -> str:
        return "never"

    live = serve(app, ssl_context=server_context, max_body_size=1024)
    bad = _refused_over_tls(live.port, client_context, b"GET nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert [r.status for r in parse_responses(bad)] == [400]
    head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 20000000\r\n\r\n"
    big = _refused_over_tls(live.port, client_context, head, 20_000_000)
    [reply] = parse_responses(big)
    assert reply.status == 413 and reply.closes


def test_a_503_over_max_connections_over_tls_ends_with_the_closure_alert_at_once(
    serve: Callable[..., Any],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    long_linger: None,
) -> None:
    from ..robustness.wire import parse_responses

    live = serve(tls_app(), ssl_context=server_context, max_connections=1)
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as held:
        held.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 200 ")  # the one slot is taken
        data = _refused_over_tls(
            live.port, client_context, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        )
    assert [r.status for r in parse_responses(data)] == [503]
