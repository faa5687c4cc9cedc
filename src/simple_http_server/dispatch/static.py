"""Static files: resource mounts, traversal-safe resolution, conditional and range requests.

Files are streamed through the channel in chunks; nothing reads a whole file
into memory.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from ..models import Request

__all__ = ["FileAnswer", "Resources", "guess_type", "plan_file"]

_EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".mp3": "audio/mpeg",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".wasm": "application/wasm",
}
_TEXTUAL = ("text/", "application/json", "application/javascript", "image/svg+xml")


def guess_type(path: str) -> str:
    """The media type of a file name (``application/octet-stream`` when unknown)."""
    ext = os.path.splitext(path)[1].lower()
    media = _EXTRA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    if media.startswith(_TEXTUAL) and "charset" not in media:
        media += "; charset=utf-8"
    return media


@dataclass(frozen=True, slots=True)
class _Mount:
    prefix: str  # "/p/" for path mounts, "" for suffix mounts
    suffix: str  # ".js" for suffix mounts
    recursive: bool
    root: str


def _parse_mount(pattern: str, directory: str) -> _Mount:
    root = os.path.realpath(directory)
    pattern = pattern.strip()
    if pattern.startswith("**") and not pattern.startswith("**/"):
        return _Mount("", pattern[2:], True, root)
    if pattern.startswith("*") and not pattern.startswith("*/"):
        return _Mount("", pattern[1:], False, root)
    path = "/" + pattern.lstrip("/")
    if path.endswith("/**"):
        return _Mount(path[:-2], "", True, root)
    if path.endswith("/*"):
        return _Mount(path[:-1], "", False, root)
    if not path.endswith("/"):
        path += "/"
    return _Mount(path, "", False, root)


class Resources:
    """Maps url patterns to folders: ``{"/public/**": "/srv/www", "*.js": "/srv/js"}``."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._mounts = [_parse_mount(p, d) for p, d in (mapping or {}).items()]

    def __bool__(self) -> bool:
        return bool(self._mounts)

    def resolve(self, path: str) -> str | None:
        """The file served for a normalized request path, or None.

        Refuses backslashes, NUL bytes, dot segments and anything whose real path
        (after following symlinks) leaves the mount's folder.
        """
        if "\\" in path or "\0" in path or "/../" in path or path.endswith("/.."):
            return None
        for mount in self._mounts:
            rel = self._relative(mount, path)
            if rel is None:
                continue
            found = _inside(mount.root, rel)
            if found is not None:
                return found
        return None

    @staticmethod
    def _relative(mount: _Mount, path: str) -> str | None:
        if mount.prefix:
            if not path.startswith(mount.prefix):
                return None
            rel = path[len(mount.prefix) :]
        else:
            if not path.endswith(mount.suffix):
                return None
            rel = path[1:]
        if not rel or rel.endswith("/") or (not mount.recursive and "/" in rel):
            return None
        return rel


def _inside(root: str, rel: str) -> str | None:
    candidate = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, candidate]) != root:
        return None
    try:
        if not stat.S_ISREG(os.stat(candidate).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return candidate


@dataclass(slots=True)
class FileAnswer:
    """How to answer a file request: status, headers, and the byte range to send."""

    status: int
    headers: list[tuple[str, str]]
    offset: int = 0
    length: int = 0


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def _not_modified(request: Request, etag: str, mtime: float) -> bool:
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in str(inm).split(",")]
        return "*" in tags or etag in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            return int(mtime) <= parsedate_to_datetime(str(ims)).timestamp()
        except (TypeError, ValueError, IndexError):
            return False
    return False


def _range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end) of a single byte range; None to ignore; False when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return False
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


def plan_file(
    request: Request,
    st: os.stat_result,
    content_type: str,
    download_name: str | None = None,
) -> FileAnswer:
    """Headers and range for sending a file, honoring validators and ``Range``."""
    etag = _etag(st)
    headers = [
        ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
        ("ETag", etag),
        ("Accept-Ranges", "bytes"),
    ]
    if _not_modified(request, etag, st.st_mtime):
        return FileAnswer(304, headers)
    headers.append(("Content-Type", content_type))
    if download_name:
        headers.append(
            ("Content-Disposition", f"attachment; filename*=UTF-8''{quote(download_name)}")
        )
    size = st.st_size
    raw_range = request.headers.get("Range")
    if raw_range and request.method in ("GET", "HEAD"):
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() == etag:
            span = _range(str(raw_range), size)
            if span is False:
                headers.append(("Content-Range", f"bytes */{size}"))
                return FileAnswer(416, headers)
            if span:
                start, end = span  # type: ignore[misc]
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
                return FileAnswer(206, headers, start, end - start + 1)
    return FileAnswer(200, headers, 0, size)
