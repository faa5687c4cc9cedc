"""What ``pip install`` gives users: metadata, dependency bounds, shipped files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h11
import pytest
import wsproto
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

import simple_http_server

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: its backport, from the test extra
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _requirements() -> dict[str, str]:
    found = (re.match(r"([A-Za-z0-9_.-]+)(.*)", d) for d in _project()["project"]["dependencies"])
    return {m[1].lower(): m[2] for m in found if m}


def test_the_version_is_the_metadatas() -> None:
    assert simple_http_server.__version__ == _project()["project"]["version"]


@pytest.mark.parametrize("name", ["h11", "wsproto", "multipart"])
def test_each_dependency_has_both_bounds_and_the_lower_one_is_tested(name: str) -> None:
    """The protocol layer uses h11's and wsproto's internals: a newer minor version may
    drop them, so the range stops below it; ``nox -s mindeps`` tests the lower bound."""
    spec = _requirements()[name]
    lower = re.search(r">=([\d.]+)", spec)
    assert lower and "<" in spec, spec
    pinned = f"{name}=={lower[1]}"
    assert re.search(rf'"{re.escape(pinned)}(\.0)*"', (ROOT / "noxfile.py").read_text()), pinned


def test_the_internals_used_exist_in_the_installed_versions() -> None:
    """A guard: fails, rather than every connection, when an allowed version lacks them."""
    conn = h11.Connection(h11.SERVER)
    assert callable(conn._receive_buffer._extract)
    assert isinstance(conn._receive_buffer._data, bytearray)
    assert conn._receive_buffer_closed is False
    ws = wsproto.Connection(wsproto.ConnectionType.SERVER)
    assert isinstance(ws._proto, FrameProtocol)
    assert callable(FrameProtocol._process_close)
    deflate = PerMessageDeflate()
    for name in ("_inbound_compressed", "_inbound_is_compressible", "_decompressor"):
        assert hasattr(deflate, name), name


def test_every_package_data_file_exists() -> None:
    package = ROOT / "src" / "simple_http_server"
    listed = _project()["tool"]["setuptools"]["package-data"]["simple_http_server"]
    assert "py.typed" in listed
    assert [name for name in listed if not (package / name).is_file()] == []


def test_the_license_is_an_spdx_expression() -> None:
    """setuptools refuses the ``{text = ...}`` table form from 2027-02-18 (PEP 639);
    the SPDX string needs setuptools 77 or later to build."""
    project = _project()
    assert project["project"]["license"] == "MIT"
    requires = " ".join(project["build-system"]["requires"])
    found = re.search(r"setuptools>=(\d+)", requires)
    assert found and int(found[1]) >= 77, requires


def test_the_license_text_ships_with_the_package() -> None:
    """The MIT license asks for its notice in every copy: the wheel and sdist carry it."""
    project = _project()["project"]
    assert project["license"] == "MIT"
    files = project["license-files"]
    assert files and all((ROOT / name).is_file() for name in files), files
    assert "MIT License" in (ROOT / files[0]).read_text()
