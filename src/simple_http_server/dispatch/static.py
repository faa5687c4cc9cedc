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

__all__ = ["FileAnswer", "Resources", "attachment", "guess_type", "parse_range", "plan_file"]

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
    """Maps url patterns to folders: ``{"/public/**": "/srv/www", "*.js": "/srv/js"}``.

    ``"/p/*"`` (or ``"/p/"``) serves the files directly in the folder,
    ``"/p/**"`` its whole tree, ``"*.ext"`` files with that suffix directly in
    the folder and ``"**.ext"`` such files anywhere below it.
    """

    def __init__(self, mapping: Mapping[str, str | os.PathLike[str]] | None = None) -> None:
        if mapping is not None and not isinstance(mapping, Mapping):
            raise TypeError(
                "resources must be a dict {url pattern: folder}, e.g. "
                '{"/public/**": "/var/www"}; a set such as {"/p/*", "/dir"} cannot pair them'
            )
        self._mounts = [_parse_mount(p, os.fspath(d)) for p, d in (mapping or {}).items()]

    def __bool__(self) -> bool:
        return bool(self._mounts)

    def resolve(self, path: str) -> str | None:
        """The real path of the file served for a decoded request path, or None.

        Refuses backslashes, NUL bytes, empty and dot segments, and anything
        whose real path (symlinks followed) leaves the mount's folder.
        """
        if "\\" in path or "\0" in path or not path.startswith("/"):
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
        if not rel or (not mount.recursive and "/" in rel):
            return None
        if any(part in ("", ".", "..") for part in rel.split("/")):
            return None
        return rel


def _inside(root: str, rel: str) -> str | None:
    candidate = os.path.realpath(os.path.join(root, rel))
    try:
        if os.path.commonpath([root, candidate]) != root:
            return None
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


_GZIP_TAG = "-gzip"


def _etag(st: os.stat_result, gzip: bool = False) -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}{_GZIP_TAG if gzip else ""}"'


def _opaque(tag: str) -> str:
    """An entity tag for weak comparison: no ``W/``, no gzip marker."""
    tag = tag.strip().removeprefix("W/")
    return tag.replace(_GZIP_TAG + '"', '"')


def _not_modified(request: Request, etag: str, mtime: float) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) wins over If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {_opaque(t) for t in str(inm).split(",")}
        return "*" in tags or _opaque(etag) in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            return int(mtime) <= parsedate_to_datetime(str(ims)).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


def _if_range_holds(if_range: str, etag: str, mtime: float) -> bool:
    """RFC 9110 13.1.5: a strong entity tag match, or the exact Last-Modified date."""
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    try:
        return int(mtime) == int(parsedate_to_datetime(if_range).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(first, last) byte of a single range; None to ignore it; False when unsatisfiable.

    Several ranges and syntax errors are ignored (the whole file is sent),
    as RFC 9110 14.2 allows.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not (first or last):
        return None
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


def attachment(download_name: str) -> str:
    """A ``Content-Disposition`` value for downloading as ``download_name``."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in download_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(download_name, safe='')}"


def plan_file(
    request: Request,
    st: os.stat_result,
    content_type: str,
    download_name: str | None = None,
    gzip: bool = False,
) -> FileAnswer:
    """Headers and range for sending a file, honoring validators and ``Range``.

    Conditionals apply to GET and HEAD only.  With ``gzip`` the entity tag is
    the one of the gzipped form and ``Range`` is not honored (the caller only
    gzips requests without one).
    """
    etag = _etag(st, gzip)
    headers = [
        ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
        ("ETag", etag),
        ("Accept-Ranges", "bytes"),
    ]
    safe = request.method in ("GET", "HEAD")
    if safe and _not_modified(request, etag, st.st_mtime):
        return FileAnswer(304, headers)
    headers.append(("Content-Type", content_type))
    if download_name:
        headers.append(("Content-Disposition", attachment(download_name)))
    size = st.st_size
    raw_range = request.headers.get("Range")
    if raw_range and safe and not gzip:
        if_range = request.headers.get("If-Range")
        if if_range is None or _if_range_holds(str(if_range), etag, st.st_mtime):
            span = parse_range(str(raw_range), size)
            if span is False:
                headers.append(("Content-Range", f"bytes */{size}"))
                return FileAnswer(416, headers)
            if isinstance(span, tuple):
                start, end = span
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
                return FileAnswer(206, headers, start, end - start + 1)
    return FileAnswer(200, headers, 0, size)
