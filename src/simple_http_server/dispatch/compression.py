"""Optional gzip of responses (naja-atra's ``gzip_content_types`` option).

A response is compressed when the server lists its media type in
``gzip_content_types``, its body has at least ``gzip_min_size`` bytes (or its
size is unknown: streams), it carries no ``Content-Encoding`` yet, it is not a
partial (206) or bodiless (204/304) answer, and the client's
``Accept-Encoding`` accepts gzip.  Every response that could be compressed
says ``Vary: Accept-Encoding``, compressed or not, so caches keep both forms.
A strong ``ETag`` of a response gzipped on the fly is made weak; static files
have a distinct strong tag for their gzip form instead (see ``static.py``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..models import Request

__all__ = ["GzipPolicy", "accepts_gzip", "add_vary", "choose_file_gzip", "weaken_etag"]

_NEVER = (204, 206, 304)


#: RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_GZIP_NAMES = ("gzip", "x-gzip", "*")  # in the order they decide


def _quality(params: str) -> float:
    """The ``q`` of one ``Accept-Encoding`` element: 1 without one, 0 when malformed."""
    q: float | None = None
    for param in params.split(";"):
        key, eq, value = param.partition("=")
        if key.strip().lower() != "q":
            continue
        value = value.strip()
        if q is not None or not eq or not _QVALUE.fullmatch(value):
            return 0.0  # repeated, valueless or malformed ("1.5", "nan", "1e0", ".5")
        q = float(value)
    return 1.0 if q is None else q


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when an ``Accept-Encoding`` value accepts gzip.

    An explicit ``gzip`` entry decides; ``x-gzip``, its alias (RFC 9110
    8.4.1.3), decides only when ``gzip`` is not named, and ``*`` only when
    neither is.  ``q=0`` refuses, and so does a malformed ``q`` (anything but
    ``0``...``0.999`` and ``1``...``1.000``).  A coding named twice counts
    with its best ``q``.
    """
    if not accept_encoding:
        return False
    found: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in _GZIP_NAMES:
            found[coding] = max(found.get(coding, 0.0), _quality(params))
    for coding in _GZIP_NAMES:
        if coding in found:
            return found[coding] > 0
    return False


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class GzipPolicy:
    """Decides whether a response is gzipped and does the compressing.

    Args:
        content_types: media types (or prefixes such as ``"text/"``) to compress.
        min_size: smaller bodies are sent as they are.
        level: zlib compression level, 1 (fast) to 9 (small).
    """

    def __init__(self, content_types: Iterable[str], min_size: int = 1024, level: int = 6):
        self.content_types = tuple(sorted({_media_type(t) for t in content_types if t}))
        self.min_size = max(0, min_size)
        self.level = min(9, max(1, level))

    @classmethod
    def from_config(cls, config: ServerConfig) -> GzipPolicy | None:
        """The policy of a server configuration; None when gzip is off."""
        types = config.gzip_content_types
        if not types:
            return None
        return cls(types, config.gzip_min_size, config.gzip_compress_level)

    def covers(self, status: int, headers: list[tuple[str, str]], content_type: str) -> bool:
        """True when this response is one that may be gzipped (so it varies)."""
        if status < 200 or status in _NEVER:
            return False
        media = _media_type(content_type)
        if not media or not media.startswith(self.content_types):
            return False
        return not any(name.lower() == "content-encoding" for name, _ in headers)

    def choose(
        self,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        content_type: str,
        size: int | None,
    ) -> bool:
        """Add ``Vary`` when the response may be gzipped; True to gzip it for this client.

        ``size`` is the body size, None when unknown (a stream).
        """
        if not self.covers(status, headers, content_type):
            return False
        if size is not None and size < self.min_size:
            return False
        add_vary(headers)
        if not accepts_gzip(request.headers.get("Accept-Encoding")):
            return False
        headers[:] = [h for h in headers if h[0].lower() != "content-length"]
        headers.append(("Content-Encoding", "gzip"))
        weaken_etag(headers)
        return True

    def _compressor(self) -> Any:
        return zlib.compressobj(self.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, body: bytes) -> bytes:
        """A whole body, gzipped."""
        comp = self._compressor()
        return bytes(comp.compress(body) + comp.flush())

    async def stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
        """Gzip a body piece by piece; each piece is flushed, so streams stay live."""
        comp = self._compressor()
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                if chunk:
                    yield comp.compress(chunk) + comp.flush(zlib.Z_SYNC_FLUSH)
        else:
            for chunk in chunks:
                if chunk:
                    yield comp.compress(chunk) + comp.flush(zlib.Z_SYNC_FLUSH)
        yield comp.flush()


def weaken_etag(headers: list[tuple[str, str]]) -> None:
    """Make a strong ``ETag`` weak (``W/"..."``), as nginx does when it gzips.

    A strong tag promises byte-identical representations; the gzip form is
    another one, so it must not share the identity form's strong tag.  Weak
    comparison (``If-None-Match``) still finds them equivalent.
    """
    for index, (name, value) in enumerate(headers):
        if name.lower() == "etag":
            tag = value.strip()
            if tag.startswith('"'):
                headers[index] = (name, "W/" + tag)


def add_vary(headers: list[tuple[str, str]]) -> None:
    """Make the headers say ``Vary: Accept-Encoding`` (once)."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            tokens = [t.strip().lower() for t in value.split(",")]
            if "accept-encoding" not in tokens and "*" not in tokens:
                headers[index] = (name, f"{value}, Accept-Encoding")
            return
    headers.append(("Vary", "Accept-Encoding"))


def choose_file_gzip(
    policy: GzipPolicy,
    request: Request,
    status: int,
    headers: list[tuple[str, str]],
    content_type: str,
    size: int,
) -> bool:
    """:meth:`GzipPolicy.choose` for a file: never for range requests (they get ``Vary``)."""
    if request.headers.get("Range") and request.method in ("GET", "HEAD"):
        if policy.covers(status, headers, content_type) and size >= policy.min_size:
            add_vary(headers)
        return False
    return policy.choose(request, status, headers, content_type, size)
