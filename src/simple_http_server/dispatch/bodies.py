"""Request bodies: urlencoded forms, JSON, raw bytes and streaming multipart.

Bodies are pulled from the transport's :class:`~.channel.Channel` chunk by
chunk.  Buffered kinds (forms, JSON, bytes) stop at ``max_body_size`` with a
413; multipart file parts stream into temporary files, so an upload never
sits in memory whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import multipart

from ..errors import HttpError

if TYPE_CHECKING:
    from ..config import Limits
    from ..models import Request
    from .channel import Channel

__all__ = [
    "MultipartFile",
    "RequestBodyReader",
    "parse_query",
    "read_body",
    "read_form",
]

_MEMORY_PART = 64 * 1024  # file parts larger than this spill to disk


def parse_query(query: str) -> dict[str, list[str]]:
    """``a=1&a=2&b`` as ``{"a": ["1", "2"], "b": [""]}`` (``+`` is a space)."""
    result: dict[str, list[str]] = {}
    if not query:
        return result
    for key, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        result.setdefault(key, []).append(value)
    return result


class RequestBodyReader:
    """Reads the raw request body as it arrives: ``await reader.read(n=-1)``."""

    def __init__(self, channel: Channel, limit: int = 0) -> None:
        self._channel = channel
        self._buffer = b""
        self._eof = False
        self._limit = limit
        self._seen = 0

    async def _more(self) -> bool:
        if self._eof:
            return False
        chunk = await self._channel.receive()
        if not chunk:
            self._eof = True
            return False
        self._seen += len(chunk)
        if self._limit and self._seen > self._limit:
            raise HttpError(413, "Content Too Large", "The request body is too large.")
        self._buffer += chunk
        return True

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (everything left when ``n < 0``); ``b""`` at the end."""
        if n < 0:
            while await self._more():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while not self._buffer and await self._more():
            pass
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


class MultipartFile:
    """An uploaded file part, or the marker that injects one: ``MultipartFile("img")``."""

    def __init__(
        self,
        name: str = "",
        required: bool = False,
        filename: str = "",
        content_type: str = "",
        content: bytes | None = None,
    ) -> None:
        self._name = name
        self._required = required
        self._filename = filename
        self._content_type = content_type
        self._content = content
        self._file: IO[bytes] | None = None
        self._size = len(content) if content is not None else 0

    @property
    def name(self) -> str:
        """The form field name."""
        return self._name

    @property
    def filename(self) -> str:
        """The client's file name."""
        return self._filename

    @property
    def content_type(self) -> str:
        """The part's media type."""
        return self._content_type

    @property
    def size(self) -> int:
        """The size in bytes."""
        return self._size

    @property
    def content(self) -> bytes:
        """The whole file content (read from disk on demand)."""
        if self._content is None and self._file is not None:
            self._file.seek(0)
            return self._file.read()
        return self._content or b""

    @property
    def is_empty(self) -> bool:
        """True for an empty or absent file."""
        return self._size == 0

    def open(self) -> IO[bytes]:
        """A binary file object positioned at the start of the content."""
        if self._file is None:
            import io

            return io.BytesIO(self._content or b"")
        self._file.seek(0)
        return self._file

    def save_to_file(self, file_path: str | os.PathLike[str]) -> None:
        """Copy the content to ``file_path`` without loading it into memory."""
        with open(file_path, "wb") as out:
            shutil.copyfileobj(self.open(), out, 1024 * 1024)

    def _write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._file is None:
            self._file = tempfile.SpooledTemporaryFile(max_size=_MEMORY_PART)  # noqa: SIM115
        self._file.write(chunk)

    def close(self) -> None:
        """Remove the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_body(channel: Channel, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes with 413."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await channel.receive()
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if limit and size > limit:
            raise HttpError(413, "Content Too Large", f"The request body exceeds {limit} bytes.")
        parts.append(chunk)


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    mime, options = multipart.parse_options_header(content_type)
    return mime.lower(), options


def _charset(options: dict[str, str]) -> str:
    charset = options.get("charset", "utf-8")
    try:
        "".encode(charset)
    except LookupError:
        raise HttpError(400, "Bad Request", f"Unknown charset: {charset}") from None
    return charset


async def read_form(request: Request, channel: Channel, limits: Limits) -> None:
    """Read the body into ``request`` according to its ``Content-Type``."""
    mime, options = _media_type(request.content_type)
    if mime == "multipart/form-data":
        await _read_multipart(request, channel, options, limits)
        return
    body = await read_body(channel, limits.max_body_size)
    request.body = body
    if mime == "application/x-www-form-urlencoded":
        try:
            text = body.decode(_charset(options))
        except UnicodeDecodeError:
            raise HttpError(400, "Bad Request", "The form is not valid text.") from None
        form = parse_query(text)
        merged = form
        for key, values in request.parameters.items():
            merged.setdefault(key, []).extend(values)
        request.parameters = merged
    elif mime == "application/json" or mime.endswith("+json"):
        if body:
            try:
                request.json = json.loads(body.decode(_charset(options)))
            except (ValueError, UnicodeDecodeError):
                raise HttpError(400, "Bad Request", "The body is not valid JSON.") from None


async def _read_multipart(
    request: Request, channel: Channel, options: dict[str, str], limits: Limits
) -> None:
    boundary = options.get("boundary")
    if not boundary:
        raise HttpError(400, "Bad Request", "multipart/form-data needs a boundary.")
    try:
        parser = multipart.PushMultipartParser(
            boundary,
            max_header_size=limits.max_part_header_size,
            max_segment_count=limits.max_parts,
            header_charset=_charset(options),
        )
    except multipart.MultipartError:
        raise HttpError(400, "Bad Request", "Invalid multipart boundary.") from None
    form: dict[str, list[str]] = {}
    files: dict[str, list[MultipartFile]] = {}
    field_data: bytearray | None = None
    current: MultipartFile | None = None
    segment: Any = None
    total = 0
    try:
        while not parser.closed:
            chunk = await channel.receive()
            total += len(chunk)
            if limits.max_upload_size and total > limits.max_upload_size:
                raise HttpError(413, "Content Too Large", "The upload is too large.")
            for event in parser.parse(chunk):
                if isinstance(event, multipart.MultipartSegment):
                    segment = event
                    if event.filename is not None:
                        current = MultipartFile(
                            event.name or "",
                            filename=event.filename,
                            content_type=event.content_type or "application/octet-stream",
                        )
                        files.setdefault(current.name, []).append(current)
                        field_data = None
                    else:
                        current, field_data = None, bytearray()
                elif event is None:
                    if field_data is not None and segment is not None:
                        charset = segment.charset or "utf-8"
                        form.setdefault(segment.name or "", []).append(
                            field_data.decode(charset, errors="replace")
                        )
                    current = field_data = segment = None
                elif current is not None:
                    current._write(bytes(event))
                elif field_data is not None:
                    field_data += event
                    if len(field_data) > limits.max_body_size:
                        raise HttpError(413, "Content Too Large", "A form field is too large.")
            if not chunk:
                break
        parser.close()
    except multipart.ParserLimitReached:
        _close_all(files)
        raise HttpError(
            413, "Content Too Large", "Too many or too large multipart parts."
        ) from None
    except multipart.MultipartError as exc:
        _close_all(files)
        raise HttpError(400, "Bad Request", f"Malformed multipart body: {exc}") from None
    except BaseException:
        _close_all(files)
        raise
    for key, values in request.parameters.items():
        form.setdefault(key, []).extend(values)
    request.parameters = form
    request.files = files


def _close_all(files: dict[str, list[MultipartFile]]) -> None:
    for items in files.values():
        for item in items:
            item.close()


def close_files(request: Request) -> None:
    """Remove the temporary files of a request's uploads."""
    _close_all(request.files)
