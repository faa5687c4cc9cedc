"""``server.scan`` imports matching controller modules; a broken one is logged and skipped."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simple_http_server import get_app_conf, server
from simple_http_server.testing import TestClient

from ..conftest import LiveServer, LogRecords
from .test_wire import fetch

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def scan_log() -> Iterator[LogRecords]:
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    handler = LogRecords()
    server._log.addHandler(handler)
    try:
        yield handler
    finally:
        server._log.removeHandler(handler)
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("ctrls"):
                del sys.modules[name]


def test_scan_imports_matching_modules_and_logs_failures(scan_log: LogRecords) -> None:
    server.scan("ctrls", r".*controller.*", project_dir=TESTS_DIR)
    assert "ctrls.good_controller" in sys.modules
    assert "ctrls.sub.deep_controller" in sys.modules
    assert "ctrls.not_matching" not in sys.modules
    failures = [r for r in scan_log.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert "ctrls.broken_controller" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert "broken on purpose" in str(failures[0].exc_info[1])

    client = TestClient(get_app_conf("scan-fixture"))
    assert client.get("/scanned/good").text == "good"
    assert client.get("/scanned/deep").text == "deep"
    assert client.get("/scanned/not-matching").status_code == 404


def test_scan_without_pattern_imports_everything(scan_log: LogRecords) -> None:
    server.scan("ctrls", project_dir=TESTS_DIR)
    assert "ctrls.not_matching" in sys.modules
    assert "ctrls.good_controller" in sys.modules


@pytest.mark.parametrize("base_dir", ["ctrls/good_controller.py", "ctrls/good_controller"])
def test_scan_of_one_module_imports_it(
    scan_log: LogRecords, base_dir: str, serve: Callable[..., LiveServer]
) -> None:
    """0.22.x took a module's path (with or without ``.py``) for ``base_dir``; that
    imported nothing, silently: every route of the module answered 404."""
    server.scan(base_dir, r".*deep.*", project_dir=TESTS_DIR)  # the pattern applies too
    assert "ctrls.good_controller" not in sys.modules
    server.scan(base_dir, project_dir=TESTS_DIR)
    assert "ctrls.good_controller" in sys.modules
    assert "ctrls.not_matching" not in sys.modules
    assert [r for r in scan_log.records if r.levelno >= logging.WARNING] == []
    live = serve(get_app_conf("scan-fixture"))
    assert fetch(live.port, "/scanned/good") == b"good"


def test_scan_of_a_missing_folder_warns(scan_log: LogRecords) -> None:
    server.scan("ctrls/no_such_folder", project_dir=TESTS_DIR)
    warnings = [r.getMessage() for r in scan_log.records if r.levelno == logging.WARNING]
    assert warnings == [f"scan(): no folder or module 'ctrls/no_such_folder' in {TESTS_DIR}"]


# -- a module that exits at import; the __main__ script -----------------------------
def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def forget_scanned() -> Iterator[None]:
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("exitpkg"):
                del sys.modules[name]


EXITING_PACKAGE = {
    "exitpkg/__init__.py": "",
    "exitpkg/a_tool.py": """
        import argparse  # a helper script next to the controllers: parses argv at import
        parser = argparse.ArgumentParser(prog="a_tool")
        parser.add_argument("--required-thing", required=True)
        parser.parse_args()
    """,
    "exitpkg/b_exits.py": "import sys; sys.exit(3)",
    "exitpkg/c_controller.py": """
        from simple_http_server import get_app_conf
        app = get_app_conf("scan-exit")
        @app.route("/after-exit")
        def after() -> str:
            return "scanned on"
    """,
}


def test_scan_goes_on_after_a_module_that_exits(
    scan_log: LogRecords,
    forget_scanned: None,
    tmp_path: Path,
    serve: Callable[..., LiveServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_files(tmp_path, EXITING_PACKAGE)
    server.scan("exitpkg", project_dir=str(tmp_path))  # SystemExit used to end the scan
    failures = {r.getMessage(): r for r in scan_log.records if r.levelno >= logging.ERROR}
    assert set(failures) == {"Cannot import exitpkg.a_tool", "Cannot import exitpkg.b_exits"}
    exc_info = failures["Cannot import exitpkg.b_exits"].exc_info
    assert exc_info is not None and isinstance(exc_info[1], SystemExit)
    assert "exitpkg.c_controller" in sys.modules
    assert "--required-thing" in capsys.readouterr().err  # argparse's own message
    live = serve(get_app_conf("scan-exit"))
    assert fetch(live.port, "/after-exit") == b"scanned on"


def test_scan_is_stopped_by_keyboard_interrupt(
    scan_log: LogRecords, forget_scanned: None, tmp_path: Path
) -> None:
    write_files(
        tmp_path,
        {
            "exitpkg/__init__.py": "",
            "exitpkg/a_interrupted.py": "raise KeyboardInterrupt",
            "exitpkg/b_later.py": "",
        },
    )
    with pytest.raises(KeyboardInterrupt):
        server.scan("exitpkg", project_dir=str(tmp_path))
    assert "exitpkg.b_later" not in sys.modules


MAIN_SCRIPT = """
    import http.client, json, sys, threading, time
    from simple_http_server import request_filter, route, server

    with open(sys.argv[2], "a") as runs:  # every execution of this body leaves a line
        runs.write(__name__ + "\\n")

    @request_filter("/**")
    def count(ctx):
        with open(sys.argv[2], "a") as runs:
            runs.write("filter\\n")
        ctx.do_chain()

    @route("/hello")
    def hello():
        return "hello"

    if __name__ == "__main__":
        server.scan()  # the defaults: the folder of this script
        thread = threading.Thread(
            target=server.start,
            kwargs={"host": "127.0.0.1", "port": 0, "prefer_coroutine": sys.argv[1] == "asyncio"},
            daemon=True,
        )
        thread.start()
        for _ in range(1000):
            if server.is_ready():
                break
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", server._server.port, timeout=10)
        conn.request("GET", "/hello")
        reply = conn.getresponse()
        body = reply.read().decode()
        conn.close()
        server.stop()
        thread.join(10)
        from simple_http_server.app import default_app
        urls = sorted(c.url for c in default_app().controllers)
        print(json.dumps({"status": reply.status, "body": body, "urls": urls}))
"""


def test_scan_skips_the_main_script(transport: str, tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "app_main.py": MAIN_SCRIPT,
            "ctrls_of_main/__init__.py": "",
            "ctrls_of_main/other.py": """
                from simple_http_server import route
                @route("/other")
                def other():
                    return "other"
            """,
        },
    )
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "app_main.py"), transport, str(runs)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "body": "hello", "urls": ["/hello", "/other"]}
    # The body ran once (not again as module "app_main"), and one filter saw the request.
    assert runs.read_text().splitlines() == ["__main__", "filter"]
