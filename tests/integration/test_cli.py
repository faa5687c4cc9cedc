"""``python -m simple_http_server`` in subprocesses, and the access log."""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

from simple_http_server import App, logger

from ..conftest import live_server
from .apps import harness

CONTROLLERS = """
from simple_http_server import route


@route("/hi")
def hi(name: str = "cli"):
    return {"hi": name}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a controller module, a static folder and an unrelated module."""
    (tmp_path / "my_controllers.py").write_text(CONTROLLERS)
    (tmp_path / "other_module.py").write_text(
        "from simple_http_server import route\n\n@route('/other')\ndef other():\n    return 'x'\n"
    )
    public = tmp_path / "public"
    public.mkdir()
    (public / "page.txt").write_text("static page\n")
    return tmp_path


def cli(port: int, *args: str) -> list[str]:
    return harness.python("-m", "simple_http_server", "-p", str(port), *args)


def test_help_documents_every_option() -> None:
    out = subprocess.run(
        cli(0, "--help"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=harness.ROOT,
        env=harness.child_environment(),
    ).stdout
    text = " ".join(out.split())
    for flag in ["-p", "--port", "-b", "--bind", "--host", "-s", "--scan", "--regex", "-r",
                 "--resources", "--prefer-coroutine", "--workers", "--certfile", "--keyfile",
                 "--keypass", "--log-level", "--loglevel", "--access-log", "--max-body-size",
                 "--max-upload-size", "--max-form-fields", "--idle-timeout", "--drain-timeout",
                 "--websocket-ping-interval", "--websocket-ping-timeout", "--min-body-rate",
                 "--min-body-rate-grace", "--min-send-rate", "--min-send-rate-grace"]:  # fmt: skip
        assert f" {flag} " in text or f" {flag}," in text, flag
    assert "Without -r nothing is served from the file system" in text


def test_nothing_from_the_file_system_without_r(project: Path) -> None:
    port = harness.free_port()
    with harness.running(cli(port, "-s", str(project)), port, cwd=str(project)) as proc:
        assert json.loads(proc.get("/hi?name=x")[2]) == {"hi": "x"}
        for path in ["/etc/passwd", "//etc/passwd", "/public/page.txt", "/page.txt", "/"]:
            assert proc.get(path)[0] == 404, path


def test_original_flags_and_bare_resources_dir(project: Path) -> None:
    port = harness.free_port()
    args = cli(port, "-b", "127.0.0.1", "-s", str(project), "--regex", r".*controllers.*",
               "-r", str(project / "public"), "--loglevel", "WARN")  # fmt: skip
    with harness.running(args, port, cwd="/") as proc:
        assert proc.get("/page.txt")[2] == b"static page\n"  # bare DIR = "/**"
        assert proc.get("/hi")[0] == 200
        assert proc.get("/other")[0] == 404  # not matched by --regex
        assert proc.get("/../../etc/passwd")[0] in (400, 404)


def test_loglevel_critical_is_a_level(project: Path) -> None:
    """The logger takes CRITICAL; the command line refused it (exit 2)."""
    port = harness.free_port()
    args = cli(port, "-s", str(project), "--regex", "my_", "--loglevel", "critical")
    with harness.running(args, port, cwd=str(project)) as proc:
        assert proc.get("/hi")[0] == 200
        assert "Serving on" not in proc.output()  # INFO is below the level


def test_prefixed_resources_coroutine_and_workers(project: Path) -> None:
    port = harness.free_port()
    args = cli(port, "-s", str(project), "-r", f"/static/**={project / 'public'}",
               "--prefer-coroutine", "--workers", "2")  # fmt: skip
    with harness.running(args, port, cwd=str(project)) as proc:
        assert proc.get("/static/page.txt")[2] == b"static page\n"
        assert proc.get("/page.txt")[0] == 404
        assert proc.get("/other")[0] == 200


def test_tls_options(project: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = project / "cert.pem", project / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    port = harness.free_port()
    args = cli(port, "-s", str(project), "--regex", "my_", "--certfile", str(certfile),
               "--keyfile", str(keyfile))  # fmt: skip
    with harness.running(args, port, cwd=str(project)):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.request("GET", "/hi?name=tls")
            assert json.loads(conn.getresponse().read()) == {"hi": "tls"}
        finally:
            conn.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_access_log_switch(project: Path, enabled: bool) -> None:
    port = harness.free_port()
    switch = "--access-log" if enabled else "--no-access-log"
    args = cli(port, "-s", str(project), "--regex", "my_", switch)
    with harness.running(args, port, cwd=str(project)) as proc:
        assert proc.get("/hi?name=logged")[0] == 200
        assert proc.get("/missing")[0] == 404
        # The log thread writes asynchronously, and a request's line is written after
        # its answer went out: the two lines may come in either order.
        deadline = time.monotonic() + (5.0 if enabled else 0.5)
        while True:
            lines = [ln for ln in proc.output().splitlines() if "simple_http_server.access" in ln]
            if len(lines) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    if enabled:
        assert len(lines) == 2, lines
        hi = [line for line in lines if '"GET /hi" 200 16 ' in line]
        assert len(hi) == 1 and hi[0].endswith("ms"), lines
        assert any('"GET /missing" 404' in line for line in lines), lines
    else:
        assert lines == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "/does/not/exist"], "resources folder does not exist"),
        (["-s", "/does/not/exist"], "scan folder does not exist"),
        (["-s", __file__], "scan folder is not a folder"),  # it exists: say what is wrong
        (["--regex", "("], "--regex is not a valid regular expression"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--max-body-size", "lots"], "not a size"),
        (["--loglevel", "LOUD"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        cli(harness.free_port(), *args),
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env=harness.child_environment(),
    )
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (["--worker-threads", "0"], "--worker-threads must be at least 1"),
        (["-p", "70000"], "--port must be in 0..65535"),
        (["--max-head-size", "0"], "--max-head-size must be positive"),
        (["--min-body-rate", "nan"], "--min-body-rate must be a finite number"),
        (["--min-send-rate", "-1"], "--min-send-rate and --min-send-rate-grace must not be"),
        (["--min-send-rate", "inf"], "--min-send-rate must be a finite number"),
        (["--keep-alive-max-requests", "-1"], "--keep-alive-max-requests must not be negative"),
        (["--max-form-fields", "-3"], "--max-form-fields must not be negative"),
    ],
)
def test_out_of_range_values_exit_2_before_any_module_runs(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """argparse let these through; ``ServerConfig`` refused them inside ``server.start``,
    after the scan had run the user's modules, with status 1."""
    (tmp_path / "noisy.py").write_text("import sys\nprint('MODULE RAN', file=sys.stderr)\n")
    result = subprocess.run(
        cli(harness.free_port(), "-s", str(tmp_path), *args),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(tmp_path),
        env=harness.child_environment(),
    )
    assert (result.returncode, "MODULE RAN" in result.stderr) == (2, False), result.stderr
    assert message in result.stderr


def _tls_files(folder: Path) -> trustme.CA:
    """cert.pem, key.pem, locked.pem (key.pem encrypted with ``s3cret``) and other.pem
    (another certificate's key) in ``folder``; returns their CA."""
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    ca.issue_cert("other").private_key_pem.write_to_path(str(folder / "other.pem"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (folder / "locked.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    return ca


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["--certfile", "missing.pem", "--keyfile", "key.pem"], "missing.pem"),
        (["--certfile", "cert.pem", "--keyfile", "locked.pem"], "'locked.pem' is encrypted"),
        (["--certfile", "cert.pem", "--keyfile", "locked.pem", "--keypass", "no"],
         "cannot decrypt the TLS key 'locked.pem'"),
        (["--certfile", "cert.pem", "--keyfile", "other.pem"], "KEY_VALUES_MISMATCH"),
    ],
)  # fmt: skip
def test_tls_file_errors_exit_2_before_any_module_runs(
    tmp_path: Path, files: list[str], message: str
) -> None:
    """They exited with 1 after the scan had run the user's modules, with messages
    naming no file (``[Errno 2] No such file or directory``, ``[SSL] PEM lib``)."""
    _tls_files(tmp_path)
    (tmp_path / "noisy.py").write_text("import sys\nprint('MODULE RAN', file=sys.stderr)\n")
    result = subprocess.run(
        cli(harness.free_port(), "-s", str(tmp_path), *files),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(tmp_path),
        env=harness.child_environment(),
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, "MODULE RAN" in result.stderr) == (2, False), result.stderr
    assert message in result.stderr


def test_tls_with_an_encrypted_key_and_keypass(tmp_path: Path) -> None:
    (tmp_path / "my_controllers.py").write_text(CONTROLLERS)
    ca = _tls_files(tmp_path)
    port = harness.free_port()
    args = cli(port, "-s", str(tmp_path), "--certfile", "cert.pem", "--keyfile", "locked.pem",
               "--keypass", "s3cret", "--prefer-coroutine")  # fmt: skip
    with harness.running(args, port, cwd=str(tmp_path)):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.request("GET", "/hi?name=locked")
            assert json.loads(conn.getresponse().read()) == {"hi": "locked"}
        finally:
            conn.close()


class _BlockingHandler(logging.Handler):
    """A handler stuck on I/O until released."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(20)
        self.records.append(record.getMessage())


class _EnteredHandler(_BlockingHandler):
    """A stuck handler that tells when it got its first record."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        super().emit(record)


def test_a_stuck_log_handler_never_blocks_a_request(transport: str) -> None:
    app = App()

    @app.route("/ping")
    def ping() -> str:
        logger.get_logger("my.app").info("ping called")
        return "pong"

    handler = _BlockingHandler()
    logger.add_handler(handler)
    try:
        with live_server(app, transport, access_log=True) as live:
            for _ in range(3):
                conn = live.connection(timeout=5)
                conn.request("GET", "/ping")
                assert conn.getresponse().read() == b"pong"
                conn.close()
            assert handler.records == []  # still stuck, yet every request was answered
            handler.gate.set()
            logger.flush()
        access = [r for r in handler.records if '"GET /ping" 200' in r]
        assert len(access) == 3 and handler.records.count("ping called") == 3
    finally:
        handler.gate.set()
        logger.remove_handler(handler)


def test_records_of_a_stuck_log_handler_are_bounded_and_the_drops_reported(
    transport: str,
) -> None:
    """Past ``max_queued`` waiting records, new ones are dropped (the queue grew by a
    record per request for as long as the handler was stuck), and one warning counts
    them once the handler has caught up."""
    app = App()

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    factory = logger.get_logger_factory()
    bound, requests = 5, 30
    handler = _EnteredHandler()
    saved = factory.max_queued
    try:
        with live_server(app, transport, access_log=True) as live:
            factory.max_queued = bound
            logger.add_handler(handler)
            logger.get_logger("my.app").warning("the handler is stuck on this one")
            assert handler.entered.wait(5)
            conn = live.connection(timeout=5)
            for _ in range(requests):
                conn.request("GET", "/ping")
                assert conn.getresponse().read() == b"pong"
            conn.close()
            deadline = time.monotonic() + 5  # the last access lines follow their answers
            while factory._queue.qsize() + factory._dropped < requests:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert factory._queue.qsize() == bound  # the rest was dropped, not queued
            handler.gate.set()
            logger.flush()
    finally:
        handler.gate.set()
        logger.remove_handler(handler)
        factory.max_queued = saved
    access = [r for r in handler.records if '"GET /ping" 200' in r]
    dropped = f"{requests - bound} log records were dropped: the log handlers did not keep up"
    assert len(access) == bound
    assert [r for r in handler.records if "dropped" in r] == [
        f"{dropped} (more than {bound} records waiting)"
    ]


def test_module_runs_as_console_script() -> None:
    script = Path(sys.executable).parent / "simple-http-server"
    if not script.exists():
        pytest.skip("the console script is not installed")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--resources" in result.stdout


@pytest.mark.parametrize(
    ("argv0", "usage"),
    [
        ("/venv/bin/simple-http-server", "usage: simple-http-server "),
        ("/site-packages/simple_http_server/__main__.py", "usage: python -m simple_http_server "),
    ],
)
def test_usage_names_the_command_that_was_run(argv0: str, usage: str) -> None:
    """The console script's ``--help`` and errors named ``python -m simple_http_server``."""
    code = (
        f"import sys; sys.argv[0] = {argv0!r}\n"
        "from simple_http_server.__main__ import main\n"
        "sys.exit(main(['--workers', '0']))"
    )
    result = subprocess.run(
        harness.python("-c", code),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=harness.ROOT,
        env=harness.child_environment(),
    )
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
