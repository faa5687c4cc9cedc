"""Run an example script with ``server.start`` pinned to 127.0.0.1 and a given port.

python tests/examples/launch.py examples/hello.py 8123
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

import simple_http_server.server as server

script, port = sys.argv[1], int(sys.argv[2])
_original_start = server.start


def _start(**kwargs: Any) -> None:
    kwargs.update(host="127.0.0.1", port=port)
    _original_start(**kwargs)


server.start = _start  # type: ignore[assignment]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
