"""``server.scan`` imports matching controller modules; a broken one is logged and skipped."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest

from simple_http_server import get_app_conf, server
from simple_http_server.testing import TestClient

from ..conftest import LogRecords

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
