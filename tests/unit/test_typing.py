"""User code type-checks with ``mypy --strict`` against the package (``py.typed``).

The decorators keep the decorated function's or class' type, the injected
types work as annotations and defaults, and ``await ctx.do_chain()`` is valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import simple_http_server

pytest.importorskip("mypy")

USER_APP = Path(__file__).parent / "typed_user_code" / "user_app.py"


def test_user_code_passes_mypy_strict(tmp_path: Path) -> None:
    package_root = Path(simple_http_server.__file__).parent.parent
    command = [
        sys.executable, "-m", "mypy", "--strict", "--config-file=", "--no-incremental",
        "--follow-imports=silent",  # the package's own imports are not the user's errors
        f"--cache-dir={tmp_path}", str(USER_APP),
    ]  # fmt: skip
    env = {**os.environ, "MYPYPATH": str(package_root)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_is_typed() -> None:
    assert (Path(simple_http_server.__file__).parent / "py.typed").is_file()


def test_the_typed_options_are_the_settings() -> None:
    """``ConfigOptions`` and ``StartOptions`` (what type checkers allow as keyword options of
    ``server.start`` and the proxies) name exactly what those accept at run time."""
    import dataclasses
    import inspect

    from simple_http_server import server
    from simple_http_server.config import ConfigOptions, Limits, ServerConfig

    settings = {f.name for f in dataclasses.fields(ServerConfig) if f.init}
    settings |= {f.name for f in dataclasses.fields(Limits)}
    assert set(ConfigOptions.__optional_keys__) == settings
    arguments = set(inspect.signature(server._build).parameters) - {"options"}
    accepted = settings | arguments | {"session_cookie_name", "session_timeout"}
    assert set(server.StartOptions.__optional_keys__) == accepted | {"prefer_corountine"}
    assert set(server.StartAsyncOptions.__optional_keys__) == accepted | {
        "prefer_corountine",
        "workers",
    }
