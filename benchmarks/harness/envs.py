"""Virtualenvs of the contenders, created on first use under ``benchmarks/.venvs/``.

Three environments because their packages clash or must stay apart:

- ``original``: ``simple-http-server==0.22.3`` exactly as on PyPI.
- ``uvicorn``: uvicorn + starlette + python-multipart (whose ``multipart`` shim
  module clashes with the ``multipart`` package this project depends on).
- ``ours``: this project's runtime dependencies (the code itself comes from
  ``src/`` via ``PYTHONPATH``, so edits are measured without reinstalling), the
  ceilings' h11 and wsproto, waitress, matplotlib for the charts and py-spy for
  ``profile_hot_path.py``.

An environment is rebuilt when its requirement list changes (a stamp file).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
INSTALL_TIMEOUT = 900

PINNED: dict[str, list[str]] = {
    "original": ["simple-http-server==0.22.3"],
    "uvicorn": [
        "uvicorn==0.54.0",
        "starlette==1.10.0",
        "python-multipart==0.0.34",
        "wsproto==1.3.2",
    ],
    "ours": ["waitress==3.0.2", "matplotlib>=3.7", "py-spy>=0.3"],
}


def project_dependencies() -> list[str]:
    """The ``[project] dependencies`` of ``pyproject.toml`` (a tiny parser, no tomllib)."""
    text = (REPO_DIR / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    if not block:
        raise RuntimeError("pyproject.toml has no [project] dependencies")
    return re.findall(r"\"([^\"]+)\"", block.group(1))


def requirements(name: str) -> list[str]:
    """Everything installed into environment ``name``."""
    extra = project_dependencies() if name == "ours" else []
    return extra + PINNED[name]


def python_of(name: str) -> Path:
    """The interpreter of environment ``name`` (may not exist yet)."""
    return VENVS_DIR / name / "bin" / "python"


def ensure(name: str, log: bool = True) -> Path:
    """Create or update environment ``name`` and return its interpreter."""
    reqs = requirements(name)
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    root = VENVS_DIR / name
    stamp = root / ".bench-stamp"
    python = python_of(name)
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    if log:
        print(f"[envs] preparing {root} : {' '.join(reqs)}", flush=True)
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(root)], check=True, timeout=INSTALL_TIMEOUT
        )
    subprocess.run(
        [str(python), "-m", "pip", "install", "-qq", "--disable-pip-version-check", *reqs],
        check=True,
        timeout=INSTALL_TIMEOUT,
    )
    stamp.write_text(digest)
    return python


def server_env(name: str) -> dict[str, str]:
    """Process environment for a server running in environment ``name``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    paths = [str(BENCH_DIR / "servers")]
    if name == "ours":
        paths.insert(0, str(REPO_DIR / "src"))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def package_version(name: str, package: str) -> str:
    """The installed version of ``package`` in environment ``name`` ("?" if unknown)."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        out = subprocess.run(
            [str(python_of(name)), "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() or "?"
