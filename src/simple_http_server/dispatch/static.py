"""Static files: resource mounts, traversal-safe resolution, conditional and range requests.

Files are streamed through the channel in chunks; nothing reads a whole file
into memory.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from ..models import Request

__all__ = [
    "FileAnswer",
    "Resources",
    "attachment",
    "guess_type",
    "open_inside",
    "parse_range",
    "plain_segments",
    "plan_file",
]

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
#: The type of a compressed file (``a.tar.gz``, ``d.json.gz``, ``p.svgz``): what it is,
#: not what it holds once uncompressed (it goes out without ``Content-Encoding``).
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def guess_type(path: str) -> str:
    """The media type of a file name (``application/octet-stream`` when unknown).

    A compressed file's is the compression's (``application/gzip`` for ``.gz``,
    ``.tgz``, ``.svgz``), never the type of its uncompressed content."""
    ext = os.path.splitext(path)[1].lower()
    media = _EXTRA_TYPES.get(ext)
    if media is None:
        media, encoding = mimetypes.guess_type(path)
        if encoding is not None:
            media = _COMPRESSED.get(encoding, "application/octet-stream")
    media = media or "application/octet-stream"
    if media.startswith(_TEXTUAL) and "charset" not in media:
        media += "; charset=utf-8"
    return media


def plain_segments(raw_path: str) -> bool:
    """False when a request path as sent (still percent-encoded) has an encoded
    slash or backslash, or a ``.``/``..`` segment, plain or encoded: decoding and
    resolving would hide them, and static resources answer such paths 404."""
    if "%" not in raw_path and "/." not in raw_path:
        return True
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        return False
    for segment in raw_path.split("/"):
        if segment in (".", "..") or ("%" in segment and unquote(segment) in (".", "..")):
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Mount:
    prefix: str  # "/p/" for path mounts, "" for suffix mounts
    suffix: str  # ".js" for suffix mounts
    recursive: bool
    root: str  # the folder as given (absolute): its real path is found per request


def _parse_mount(pattern: str, directory: str) -> _Mount:
    root = os.path.abspath(directory)
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
        found = self.locate(path)
        return None if found is None else found[1]

    def covers(self, path: str) -> bool:
        """True when a pattern maps the decoded request path to a file name, whether
        or not that file exists."""
        if "\\" in path or "\0" in path or not path.startswith("/"):
            return False
        return any(self._relative(mount, path) is not None for mount in self._mounts)

    def locate(self, path: str) -> tuple[str, str] | None:
        """(the mount's folder, the file's real path) for a decoded request path, or
        None (see :meth:`resolve`); :func:`open_inside` opens what it names."""
        if "\\" in path or "\0" in path or not path.startswith("/"):
            return None
        for mount in self._mounts:
            rel = self._relative(mount, path)
            if rel is None:
                continue
            # Resolved now, not at start: a folder that is a symlink swapped by a deploy
            # ("current" -> releases/42) serves the new release, as in 0.22.x.
            root = _real(mount.root)
            found = None if root is None else _inside(root, rel)
            if root is not None and found is not None:
                return root, found
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


def _real(folder: str) -> str | None:
    """The real path of a mount's folder; None when it cannot be resolved."""
    try:
        return os.path.realpath(folder)
    except (OSError, ValueError):
        return None


def _inside(root: str, rel: str) -> str | None:
    try:  # realpath itself fails on a symlink swapped while it reads it (EINVAL, ENOENT)
        candidate = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, candidate]) != root:
            return None
        if not stat.S_ISREG(os.stat(candidate).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return candidate


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: Walk a path one directory at a time (openat), never following a symlink.
_WALK = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd
_DIR_FLAGS = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: a FIFO put in the file's place must not block the open.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC


def open_inside(root: str, path: str) -> BinaryIO | None:
    """The regular file at ``path`` (a real path below ``root``, as
    :meth:`Resources.locate` gives it), opened so that it is that file: None when
    it is no longer there, no longer a regular file, or reached through a symlink.

    A name checked earlier may have been swapped since for a symlink leaving the
    folder: each directory is opened from the one before (``openat``) without
    following symlinks, so what is opened is below ``root`` whatever changed.
    Where that cannot be done (no ``dir_fd``: Windows), the opened file must be
    the one its re-resolved real path names (same device and inode), which a
    single swap cannot pass but a fast enough succession of swaps can.
    """
    try:
        fd = _walk(root, path) if _WALK else _open_checked(root, path)
    except (OSError, ValueError):
        return None
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        if _NONBLOCK:
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
    except OSError:
        os.close(fd)
        return None
    raw.name = path  # for messages (FileShrank) instead of the descriptor's number
    return io.BufferedReader(raw)


def _walk(root: str, path: str) -> int | None:
    parts = os.path.relpath(path, root).split(os.sep)
    if any(part in ("", ".", "..") for part in parts):
        return None
    folder = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            below = os.open(part, _DIR_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = below
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)


def _open_checked(root: str, path: str) -> int | None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | _NONBLOCK | _CLOEXEC)
    try:
        opened = os.fstat(fd)
        again = _inside(root, os.path.relpath(path, root))
        if again == path:
            named = os.stat(again)
            if (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino):
                return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


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


def _weak(tag: str) -> str:
    """An entity tag for weak comparison (RFC 9110 8.8.3.2): no ``W/``."""
    return tag.strip().removeprefix("W/")


def _opaque(tag: str) -> str:
    """A static file's entity tag for weak comparison: no ``W/``, no gzip marker."""
    return _weak(tag).replace(_GZIP_TAG + '"', '"')


_DAYS = ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")
_DAY_NAMES = frozenset([day[:3] for day in _DAYS] + [day + "day" for day in _DAYS])


def _one_date(value: str) -> bool:
    """False when a date field holds a list (``date, date``): the only comma a date
    has follows its day name (IMF-fixdate, RFC 850); the asctime form has none."""
    parts = value.split(",")
    return len(parts) == 1 or (len(parts) == 2 and parts[0].strip().lower() in _DAY_NAMES)


def _http_date(value: str) -> float | None:
    """An HTTP date as a timestamp; None when it does not parse, or is a list of dates
    (RFC 9110 13.1.3, 13.1.4: such an ``If-Modified-Since`` is ignored).

    Every HTTP date is GMT (RFC 9110 5.6.7): the asctime form and ``-0000``
    parse without a zone, and must not be read in the server's local time.
    """
    if not _one_date(value):
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


#: One member of an entity-tag list: a quoted tag (which may hold a comma, RFC 9110
#: 8.8.3), or anything else up to the next comma (``*``, or a sloppy unquoted tag).
_LIST_MEMBER = re.compile(r'(?:W/)?"[^"]*"|[^,\s][^,]*')


def _tags(header: str) -> set[str]:
    return {tag.strip() for tag in _LIST_MEMBER.findall(header)}


def _precondition_failed(request: Request, etag: str, mtime: float | None) -> bool:
    """RFC 9110 13.2.2 steps 1-2: If-Match (strong comparison), else If-Unmodified-Since."""
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = _tags(str(if_match))
        return not ("*" in tags or etag in tags)
    ius = request.headers.get("If-Unmodified-Since")
    if ius and mtime is not None:
        date = _http_date(str(ius))
        return date is not None and int(mtime) > date
    return False


def none_match(if_none_match: str, etag: str, opaque: Callable[[str], str] = _weak) -> bool:
    """True when an ``If-None-Match`` value matches ``etag`` by weak comparison
    (RFC 9110 13.1.2: ``W/"x"`` and ``"x"`` match), or is ``*``."""
    tags = {opaque(t) for t in _tags(if_none_match)}
    return "*" in tags or opaque(etag) in tags


def _none_match(request: Request, etag: str, opaque: Callable[[str], str]) -> bool | None:
    """If-None-Match of a static file: True when it matches; None when absent."""
    inm = request.headers.get("If-None-Match")
    if inm is None:
        return None
    return none_match(str(inm), etag, opaque)


def _not_modified(request: Request, mtime: float | None) -> bool:
    """If-Modified-Since (GET and HEAD only, and only without If-None-Match)."""
    ims = request.headers.get("If-Modified-Since")
    if ims and mtime is not None:
        date = _http_date(str(ims))
        return date is not None and int(mtime) <= date
    return False


def _if_range_holds(if_range: str, etag: str, mtime: float | None) -> bool:
    """RFC 9110 13.1.5: a strong entity tag match, or the exact Last-Modified date."""
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return if_range == etag and not etag.startswith("W/")
    date = _http_date(if_range)
    return date is not None and mtime is not None and int(mtime) == int(date)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone takes "²"


#: Larger than any file: a position with more digits is only compared, never
#: converted (int() refuses more than 4300 digits, and would be slow long before).
_BEYOND = 1 << 64
_MAX_DIGITS = len(str(_BEYOND)) - 1


def _position(digits: str) -> int:
    """A byte position, capped at :data:`_BEYOND`."""
    digits = digits.lstrip("0")
    return _BEYOND if len(digits) > _MAX_DIGITS else int(digits or "0")


def _below(a: str, b: str) -> bool:
    """True when the number written ``a`` is less than the one written ``b``, however long."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(first, last) byte of a single range; None to ignore it; False when unsatisfiable.

    Several ranges and syntax errors are ignored (the whole file is sent),
    as RFC 9110 14.2 allows. Positions of any length are read: a last byte past
    the end stands for the end, a first one past it is unsatisfiable.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not (first or last):
        return None
    if not (_is_number(first) or first == "") or not (_is_number(last) or last == ""):
        return None
    if first == "":
        suffix = _position(last)
        if suffix == 0:
            return False
        if size == 0:  # satisfiable (RFC 9110 14.1.3), but no 206 can carry zero bytes
            return None
        return max(0, size - suffix), size - 1
    if last and _below(last, first):
        return None
    start = _position(first)
    if start >= size:
        return False
    end = _position(last) if last else size - 1
    return start, min(end, size - 1)


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, a raw byte of undecodable request text (``surrogateescape``)
    as that byte again; any other lone surrogate, which has no bytes, as ``?``."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join(
            "?" if "\ud800" <= c <= "\udfff" and not "\udc80" <= c <= "\udcff" else c for c in text
        ).encode("utf-8", "surrogateescape")


def attachment(download_name: str) -> str:
    """A ``Content-Disposition`` value for downloading as ``download_name``: an ASCII
    ``filename`` (``_`` for anything else) and the RFC 8187 ``filename*``, which
    carries the bytes of the name (those of a path value holding ``%FF`` too)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in download_name
    )
    encoded = quote(_utf8(download_name), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


@dataclass(frozen=True, slots=True)
class _Validators:
    """What a file answer's conditions are evaluated against: the validators it sends."""

    etag: str
    mtime: float | None  # None: a Last-Modified that is no date (date conditions fail)
    opaque: Callable[[str], str]  # the weak comparison's view of a tag
    ranges: bool  # False when the controller sent ``Accept-Ranges`` without ``bytes``


def _validators(st: os.stat_result, gzip: bool, given: Mapping[str, str]) -> _Validators:
    """The file's own validators, or the ones the controller set (they are the ones sent)."""
    etag, opaque = (given["etag"].strip(), _weak) if "etag" in given else (_etag(st, gzip), _opaque)
    mtime = _http_date(given["last-modified"]) if "last-modified" in given else st.st_mtime
    accept = given.get("accept-ranges")
    ranges = accept is None or "bytes" in (t.strip().lower() for t in accept.split(","))
    return _Validators(etag, mtime, opaque, ranges)


def _last_modified(st: os.stat_result) -> str:
    """The ``Last-Modified`` of a file: its mtime, or now when that is in the future
    (RFC 9110 8.8.2.1: never later than the answer's ``Date``; an archive unpacked from
    a clock ahead).  The conditions still compare with the mtime: no 304 until then."""
    return formatdate(min(st.st_mtime, time.time()), usegmt=True)


def plan_file(
    request: Request,
    st: os.stat_result,
    content_type: str,
    download_name: str | None = None,
    gzip: bool = False,
    conditional: bool = True,
    given: Sequence[tuple[str, str]] = (),
) -> FileAnswer:
    """Headers and range for sending a file, honoring preconditions and ``Range``.

    Preconditions apply to GET and HEAD (for other methods the controller has
    already acted), in RFC 9110 13.2.2's order: ``If-Match`` /
    ``If-Unmodified-Since`` (412), ``If-None-Match`` / ``If-Modified-Since``
    (304), then ``If-Range``.  With
    ``conditional=False`` (a file sent with another status than 200, such as
    an error page) none of them, nor ``Range``, applies.  With ``gzip`` the
    entity tag is the one of the gzipped form and ``Range`` is not honored
    (the caller only gzips requests without one).  ``given`` are the headers
    the controller set: those win over the file's own (``ETag``,
    ``Last-Modified``, ``Content-Type``, ``Content-Disposition``,
    ``Accept-Ranges``), which are then left out, and the conditions are
    evaluated against the validators sent.
    """
    own = {name.lower(): str(value) for name, value in reversed(given)}  # the first one wins
    valid = _validators(st, gzip, own)
    headers = [
        ("Last-Modified", _last_modified(st)),
        ("ETag", valid.etag),
        ("Accept-Ranges", "bytes"),
    ]
    safe = request.method in ("GET", "HEAD")
    if conditional and safe:
        if _precondition_failed(request, valid.etag, valid.mtime):
            return FileAnswer(412, _not_given(headers, own))
        matched = _none_match(request, valid.etag, valid.opaque)
        if matched or (matched is None and _not_modified(request, valid.mtime)):
            return FileAnswer(304, _not_given(headers, own))
    headers.append(("Content-Type", content_type))
    if download_name:
        headers.append(("Content-Disposition", attachment(download_name)))
    size = st.st_size
    raw_range = request.headers.get("Range")
    if raw_range and safe and conditional and not gzip and valid.ranges:
        if_range = request.headers.get("If-Range")
        if if_range is None or _if_range_holds(str(if_range), valid.etag, valid.mtime):
            span = parse_range(str(raw_range), size)
            if span is False:
                headers.append(("Content-Range", f"bytes */{size}"))
                return FileAnswer(416, _not_given(headers, own))
            if isinstance(span, tuple):
                start, end = span
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
                return FileAnswer(206, _not_given(headers, own), start, end - start + 1)
    return FileAnswer(200, _not_given(headers, own), 0, size)


def _not_given(headers: list[tuple[str, str]], given: Mapping[str, str]) -> list[tuple[str, str]]:
    """``headers`` less those the controller set itself."""
    return [h for h in headers if h[0].lower() not in given] if given else headers
