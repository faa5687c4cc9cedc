"""Request bodies: urlencoded forms, JSON, raw bytes, streaming multipart and a body reader.

Bodies are pulled from the transport's :class:`~.channel.Channel` chunk by
chunk.  Buffered kinds (forms, JSON, bytes) stop at ``max_body_size`` with a
413; multipart bodies are parsed by ``multipart.PushMultipartParser`` as they
arrive and file parts spill to temporary files, so an upload never sits in
memory whole.  Every malformed body is a 400 with a message saying why.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import multipart

from .. import logger as _logging
from ..errors import HttpError
from ..models import JSONBody, Request
from .invoke import call_sync, current_loop, in_event_loop, run_sync, wait_on

if TYPE_CHECKING:
    import asyncio

    from ..config import Limits
    from .channel import Channel

__all__ = [
    "CHARSETS",
    "MultipartFile",
    "RequestBodyReader",
    "close_files",
    "content_coding",
    "is_charset",
    "is_json_type",
    "is_upload",
    "parse_query",
    "read_body",
    "read_form",
]

_log = _logging.get_logger("simple_http_server.dispatch")

#: File parts larger than this spill from memory to a temporary file.
SPOOL_THRESHOLD = 64 * 1024
_COPY_CHUNK = 1024 * 1024
#: One ``;``-separated piece of a header: a ``;`` inside a quoted string (backslash
#: escapes included) is text, never a separator.
_HEADER_PIECE = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*"?)+')
#: A urlencoded form larger than this is parsed off the event loop: ``unquote``
#: is Python code that takes seconds for megabytes of percent-escapes.
OFF_LOOP_FORM_SIZE = 64 * 1024

#: The charsets a request may name, as ``codecs.lookup`` names them: the
#: encodings of the WHATWG Encoding Standard (what browsers send), UTF-16/32
#: with a BOM, more CJK variants and a few DOS code pages.  Every one decodes in
#: linear time.  Other codecs are refused: ``punycode`` decodes in quadratic
#: time, and ``idna``, ``utf-7``, ``unicode_escape``... are no charsets of the web.
CHARSETS = frozenset(
    {
        "ascii",
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-be",
        "utf-16-le",
        "utf-32",
        "utf-32-be",
        "utf-32-le",
        *(f"iso8859-{n}" for n in range(1, 17) if n != 12),
        *(f"cp{n}" for n in range(1250, 1259)),
        "cp437",
        "cp850",
        "cp852",
        "cp866",
        "cp874",
        "tis-620",
        "koi8-r",
        "koi8-u",
        "koi8-t",
        "kz1048",
        "ptcp154",
        "mac-roman",
        "mac-cyrillic",
        "shift_jis",
        "shift_jis_2004",
        "shift_jisx0213",
        "cp932",
        "euc_jp",
        "euc_jis_2004",
        "euc_jisx0213",
        "iso2022_jp",
        "iso2022_jp_1",
        "iso2022_jp_2",
        "iso2022_jp_2004",
        "iso2022_jp_3",
        "iso2022_jp_ext",
        "gb2312",
        "gbk",
        "gb18030",
        "hz",
        "big5",
        "big5hkscs",
        "cp950",
        "euc_kr",
        "cp949",
        "johab",
        "iso2022_kr",
    }
)


def too_large(what: str, limit: int) -> HttpError:
    """The 413 error for a body (or part of one) over ``limit`` bytes."""
    return HttpError(413, "Content Too Large", f"The {what} exceeds {limit} bytes.")


def parse_query(
    query: str, encoding: str = "utf-8", errors: str = "replace"
) -> dict[str, list[str]]:
    """``a=1&a=2&b`` as ``{"a": ["1", "2"], "b": [""]}`` (``+`` is a space).

    Percent-escapes are bytes of text in ``encoding``; ``errors`` says what
    happens to those that are not (``"strict"`` raises ``UnicodeDecodeError``).
    """
    result: dict[str, list[str]] = {}
    if not query:
        return result
    for key, value in parse_qsl(query, keep_blank_values=True, encoding=encoding, errors=errors):
        result.setdefault(key, []).append(value)
    return result


def is_json_type(content_type: str) -> bool:
    """True for a JSON media type: ``application/json`` or any ``+json`` type.

    RFC 6839's structured syntax suffix: ``application/problem+json``,
    ``application/merge-patch+json``, ``application/vnd.api+json``... are JSON.
    Parameters (``; charset=...``) and case do not matter.
    """
    mime = content_type.partition(";")[0].strip().lower()
    kind, slash, subtype = mime.partition("/")
    if not (kind and slash and subtype):
        return False
    return mime == "application/json" or (subtype.endswith("+json") and subtype != "+json")


def content_coding(request: Request) -> str | None:
    """The ``Content-Encoding`` of the request body (``gzip``...); None when it has
    none, or ``identity``."""
    coding = str(request.headers.get("Content-Encoding") or "").strip()
    return None if coding.lower() in ("", "identity") else coding


def is_upload(request: Request) -> bool:
    """True for a body parsed as it streams in, never buffered whole: a
    ``multipart/form-data`` one without a ``Content-Encoding``."""
    mime = request.content_type.partition(";")[0].strip().lower()
    return mime == "multipart/form-data" and content_coding(request) is None


_REQUEST_OVER = "this request is over: the rest of its body cannot be read"


class RequestBodyReader:
    """Reads the raw request body as it arrives.

    Inject it by annotation (``reader: RequestBodyReader``), or use
    ``request.reader``; in ``async`` code use ``await reader.read(n)``, in plain
    functions ``reader.read_blocking(n)``.  ``n < 0`` reads everything that is
    left; an empty result means the body is complete.

    A reader without a channel reads ``data``, a body already read into memory.

    Args:
        channel: where the body comes from (None: ``data`` is the whole body).
        limit: most bytes accepted (0: no limit); more is a 413.
        data: the body, when it was read already.
    """

    def __init__(self, channel: Channel | None, limit: int = 0, data: bytes = b"") -> None:
        self._channel = channel
        self._pending = bytearray(data)
        self._eof = channel is None
        self._limit = limit
        self._seen = len(data)
        self._loop: asyncio.AbstractEventLoop | None = (
            current_loop() if channel is not None else None
        )

    @property
    def received(self) -> int:
        """Body bytes received so far."""
        return self._seen

    #: Reads of the connection under way (made at the first one): the request's end
    #: waits for them, so a thread the controller left behind never reads the
    #: connection along with the server (nor the next request's bytes).
    _readers: list[object] | None = None

    def detach(self) -> None:
        """The request is over: the connection may already carry the next request,
        so a read that would need more of the body raises (buffered bytes stay).
        The caller then waits for the reads under way (``_readers``)."""
        self._channel = None

    async def _more(self) -> bool:
        if self._eof:
            return False
        # Counted before the check, as Response.write_bytes does (see Response._enter).
        readers: list[object] = self.__dict__.setdefault("_readers", [])
        token = object()
        readers.append(token)
        try:
            channel = self._channel
            if channel is None:
                raise RuntimeError(_REQUEST_OVER)
            chunk = await channel.receive()
        finally:
            readers.remove(token)
        if not chunk:
            self._eof = True
            return False
        self._seen += len(chunk)
        if self._limit and self._seen > self._limit:
            channel.close_after_response()
            raise too_large("request body", self._limit)
        self._pending += chunk
        return True

    def _take(self, n: int) -> bytes:
        if n < 0:
            data = bytes(self._pending)
            self._pending.clear()
            return data
        data = bytes(self._pending[:n])
        del self._pending[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (everything left when ``n < 0``); ``b""`` at the end."""
        if n < 0:
            while await self._more():
                pass
        elif not self._pending:
            await self._more()
        return self._take(n)

    async def read_to_end(self) -> bytes:
        """Everything left of the body (naja-atra's spelling of ``await read()``)."""
        return await self.read(-1)

    def read_blocking(self, n: int = -1) -> bytes:
        """:meth:`read` for plain (non-async) code."""
        if self._channel is None:  # a body in memory (or detached): nothing to wait for
            if not self._eof and (n < 0 or not self._pending):
                raise RuntimeError(_REQUEST_OVER)
            return self._take(n)
        if in_event_loop():
            raise RuntimeError("use 'await reader.read()' inside a coroutine")
        loop = self._loop
        if loop is not None and loop.is_running():
            return wait_on(loop, self.read(n))
        return run_sync(self.read(n))


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _memory_reader(data: bytes) -> RequestBodyReader:
    return RequestBodyReader(None, data=data)


Request._memory_reader = _memory_reader  # ``request.reader`` of a body already read


_REMOVED = (
    "This upload's temporary file was removed when its request ended: "
    "copy it (save_to_file) or read it while the request runs."
)


class _UploadView(io.RawIOBase):
    """A read-only view of an upload's temporary file with a position of its own:
    closing it (``with upload.open() as f:``) leaves the upload open, and two views
    read on without moving each other.  The views of an upload share one descriptor
    of its file, open while any of them is (see :class:`MultipartFile`)."""

    def __init__(self, upload: MultipartFile, lock: threading.RLock) -> None:
        super().__init__()
        self._upload = upload
        self._lock = lock
        self._pos = 0

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._upload._view_closed()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        with self._lock:
            file = self._upload._backing()
            file.seek(self._pos)
            data = file.read(len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if whence == io.SEEK_END:
            with self._lock:
                offset += self._upload._backing().seek(0, io.SEEK_END)
        elif whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence ({whence})")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self.seek(0, io.SEEK_CUR)

    def fileno(self) -> int:
        """The temporary file's descriptor (a small upload is written to disk first)."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        with self._lock:
            if self._upload._path is None:
                self._upload._spill()
            return self._upload._backing().fileno()


class MultipartFile:
    """An uploaded file part, or the marker that injects one: ``MultipartFile("img")``.

    Args:
        name: the form field name (defaults to the argument name).
        required: 400 when the request has no such file.
        filename: the client's file name.
        content_type: the part's media type.
        content: the content, for files built in memory (tests).
    """

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
        #: Where the content is: in memory while small, else in a named temporary file
        #: (``_path``) that is open (``_file``) only while the part is written or a view
        #: reads it, so uploads waiting for their controller hold no file descriptor.
        self._memory: io.BytesIO | None = None
        self._path: str | None = None
        self._file: IO[bytes] | None = None
        self._remove: weakref.finalize[Any, Any] | None = None
        self._size = len(content) if content is not None else 0
        # Views (``open()``) share one file position; reentrant: a view dropped (closed) while
        # the lock is held takes it again.
        self._lock = threading.RLock()
        self._removed = False
        self._views: weakref.WeakSet[_UploadView] = weakref.WeakSet()

    @property
    def name(self) -> str:
        """The form field name."""
        return self._name

    @property
    def filename(self) -> str:
        """The client's file name (``filename*`` decoded)."""
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
        """The whole content, read from the temporary file on demand."""
        if self._content is None and (self._stored or self._removed):
            with self.open() as file:
                return file.read()
        return self._content or b""

    @property
    def is_empty(self) -> bool:
        """True for an empty file (e.g. a form submitted without choosing one)."""
        return self._size == 0

    def open(self) -> IO[bytes]:
        """A new binary file object positioned at the start of the content.

        Each has its own position, and closing it leaves the upload open (its
        temporary file is removed when the request ends)."""
        if self._removed:
            raise ValueError(_REMOVED)
        if not self._stored:
            return io.BytesIO(self._content or b"")
        view = _UploadView(self, self._lock)
        with self._lock:
            self._views.add(view)
        return io.BufferedReader(view)

    @property
    def _stored(self) -> bool:
        """The content was received as an upload (in memory or on disk)."""
        return self._memory is not None or self._path is not None

    def _backing(self) -> IO[bytes]:
        """The file the views read (``_lock`` held): the temporary file, opened when
        the first view is; a small upload in memory."""
        if self._file is not None:
            return self._file
        if self._path is None:
            assert self._memory is not None
            return self._memory
        self._file = open(self._path, "rb")  # noqa: SIM115 (closed with the last view)
        return self._file

    def _spill(self) -> None:
        """Write the content kept in memory to disk, to a temporary file of its own
        (a view's ``fileno()``, or a part larger than :data:`SPOOL_THRESHOLD`)."""
        fd, path = tempfile.mkstemp(prefix="shs-upload-")
        self._path = path
        self._remove = weakref.finalize(self, _unlink, path)
        file = os.fdopen(fd, "w+b")
        if self._memory is not None:
            file.write(self._memory.getbuffer())
            file.flush()  # for a view's fileno(): the content is on disk
            self._memory = None
        self._file = file

    def _written(self) -> None:
        """The part is complete: its temporary file is closed until a view reads it."""
        if self._file is not None and not self._views:
            self._file.close()
            self._file = None

    def _view_closed(self) -> None:
        """A view was closed: the last one of a file on disk closes its descriptor."""
        with self._lock:
            if self._path is not None and self._file is not None and not self._views_open():
                self._file.close()
                self._file = None

    def _views_open(self) -> bool:
        return any(not view.closed for view in self._views)

    def save_to_file(self, file_path: str | os.PathLike[str]) -> None:
        """Copy the content to ``file_path`` without loading it into memory.

        An empty upload (a file input left empty) writes nothing, as in the original:
        a file already at ``file_path`` is left as it is, not emptied."""
        if self.is_empty:
            return
        with self.open() as content, open(file_path, "wb") as out:
            shutil.copyfileobj(content, out, _COPY_CHUNK)

    def _write(self, chunk: bytes | bytearray) -> None:
        self._size += len(chunk)
        if self._path is None:
            if self._memory is None:
                self._memory = io.BytesIO()
            if self._size <= SPOOL_THRESHOLD:
                self._memory.write(chunk)
                return
            self._spill()
        assert self._file is not None
        self._file.write(chunk)

    def close(self) -> None:
        """Remove the temporary file (the file objects ``open()`` gave are closed too);
        the content can no longer be read (``ValueError``), rather than read as empty."""
        for view in list(self._views):
            view.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._stored:
            self._memory = None
            self._path = None
            if self._remove is not None:
                self._remove()
            self._removed = True


async def read_body(channel: Channel, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes with 413."""
    body = bytearray()
    while True:
        chunk = await channel.receive()
        if not chunk:
            return bytes(body)
        if limit and len(body) + len(chunk) > limit:
            channel.close_after_response()
            raise too_large("request body", limit)
        body += chunk


def is_charset(name: str) -> bool:
    """True when ``name`` (any alias: ``latin-1``, ``Shift_JIS``...) is one of :data:`CHARSETS`."""
    try:
        return codecs.lookup(name).name in CHARSETS
    except LookupError:
        return False


def _charset(options: dict[str, str], default: str = "utf-8") -> str:
    charset = options.get("charset") or default
    if not is_charset(charset):
        raise HttpError(400, "Bad Request", f"Unknown or unsupported charset: {charset}")
    return charset


def _decode(data: bytes | bytearray, charset: str, what: str) -> str:
    try:
        return data.decode(charset)
    except UnicodeError:
        raise HttpError(400, "Bad Request", f"The {what} is not valid {charset} text.") from None


async def read_form(request: Request, channel: Channel, limits: Limits) -> None:
    """Read the body into ``request`` according to its ``Content-Type``.

    Form fields join ``request.parameters`` (body values first, then the
    query's; decoded with the form's ``charset``, UTF-8 by default), JSON
    (``application/json`` or ``+json``) goes to ``request.json`` (any JSON
    value; None for an empty body), multipart files to ``request.files`` and,
    as :class:`MultipartFile` values, to ``request.parameters``; other bodies,
    and a body with a ``Content-Encoding`` (gzip...), are kept as ``request.body``.
    """
    mime, options = multipart.parse_options_header(request.content_type)
    if content_coding(request) is not None:
        # A gzip (...) body is no form, JSON or multipart text until decoded, which the
        # server does not do: kept as it came, for the app to decode.
        request.body = await read_body(channel, limits.max_body_size)
        return
    if is_upload(request):
        await _read_multipart(request, channel, options, limits)
        return
    body = await read_body(channel, limits.max_body_size)
    request.body = body
    if mime == "application/x-www-form-urlencoded":
        max_fields = limits.max_form_fields
        if len(body) > OFF_LOOP_FORM_SIZE and current_loop() is not None:
            form = await call_sync(_parse_form, body, options, max_fields)
        else:
            form = _parse_form(body, options, max_fields)
        _merge_parameters(request, form)
    elif is_json_type(mime) and body.strip():
        text = _decode(body, _charset(options), "JSON body")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HttpError(400, "Bad Request", f"The body is not valid JSON: {exc}") from None
        except ValueError:  # an integer of over 4300 digits (sys.get_int_max_str_digits)
            explain = "The JSON body has a number with too many digits."
            raise HttpError(400, "Bad Request", explain) from None
        except RecursionError:
            raise HttpError(400, "Bad Request", "The JSON body is nested too deeply.") from None
        # An object is a JSONBody (a dict): what a ``JSONBody`` argument receives.
        request.json = JSONBody(value) if type(value) is dict else value


def _parse_form(body: bytes, options: dict[str, str], max_fields: int) -> dict[str, list[str]]:
    """The fields of a urlencoded body: at most ``max_fields`` (0: no limit)."""
    charset = _charset(options)
    text = form_text(body, charset)
    # Counted before any is parsed: millions of tiny fields cost gigabytes as lists.
    if max_fields and text.count("&") >= max_fields:
        explain = f"The form has more than {max_fields} fields (max_form_fields)."
        raise HttpError(413, "Content Too Large", explain)
    # Percent-escapes are bytes of text in the form's charset too; as in the query
    # (and 0.22.x, Werkzeug, Django), one that is not text there reads as U+FFFD.
    return parse_query(text, charset, "replace")


def form_text(data: bytes | bytearray, charset: str) -> str:
    """A form's bytes (a urlencoded body, a multipart text field) as text: a byte that
    is no text in ``charset`` reads as U+FFFD, as an undecodable query escape does."""
    return data.decode(charset, "replace")


def _merge_parameters(request: Request, form: Mapping[str, Sequence[str | MultipartFile]]) -> None:
    """Body values first, then the query's."""
    merged: dict[str, list[str | MultipartFile]] = {k: list(v) for k, v in form.items()}
    for key, values in request.parameters.items():
        merged.setdefault(key, []).extend(values)
    request.parameters = merged


def _ext_decode(raw: str, key: str) -> str:
    """An RFC 5987 ``charset'lang'percent-encoded`` value (``name*``, ``filename*``)."""
    charset, _, rest = raw.strip('"').partition("'")
    _, _, encoded = rest.partition("'")
    try:
        if not is_charset(charset or "utf-8"):
            raise LookupError(charset)
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeError):
        raise HttpError(400, "Bad Request", f"Invalid {key} in a multipart part.") from None


_NAME_KEYS = frozenset({"name", "name*", "filename", "filename*"})


def _disposition(segment: multipart.MultipartSegment) -> tuple[str, str | None]:
    """The field name and file name (None: a text field) of a part.

    Read here, not by ``multipart``, whose parameter search also finds ``; name=x``
    inside a quoted value (``filename*="...; name=x"``): a field a proxy reads under
    one name would reach the app under another.  For the same reason a part with two
    ``Content-Disposition`` headers, or one that names a parameter twice, is a 400.
    """
    headers = [v for k, v in segment.headerlist if k == "Content-Disposition"]
    if len(headers) != 1:
        raise HttpError(400, "Bad Request", "A multipart part has two Content-Disposition headers.")
    params: dict[str, str] = {}
    for piece in _HEADER_PIECE.findall(headers[0])[1:]:
        key, _, value = piece.partition("=")
        key = key.strip().lower()
        if key not in _NAME_KEYS:
            continue
        if key in params:
            explain = f"A multipart part's Content-Disposition has two {key} parameters."
            raise HttpError(400, "Bad Request", explain)
        params[key] = value.strip()
    names: list[str | None] = []
    for key in ("name", "filename"):
        if f"{key}*" in params:
            names.append(_ext_decode(params[f"{key}*"], f"{key}*"))
        elif key in params:
            names.append(multipart.content_disposition_unquote(params[key], key == "filename"))
        else:
            names.append(None)
    filename = names[1]
    return names[0] or "", None if filename is None else _last_component(filename)


def _last_component(filename: str) -> str:
    """A client's file name without its folders: ``../../app.py`` is ``app.py``.

    RFC 7578 4.2 (after RFC 2183 2.3): a file name is a terminal component only, never
    a path to follow. Code such as 0.22.x's README example,
    ``img.save_to_file(root + "/imgs/" + img.filename)``, must not write outside ``imgs``.
    """
    last = filename.replace("\\", "/").rpartition("/")[2]
    return "" if last in (".", "..") else last


def _part_type(segment: multipart.MultipartSegment) -> str:
    """A part's ``Content-Type`` header as sent (``text/csv; charset=Shift_JIS``)."""
    return str(segment.header("Content-Type", "") or "").strip()


class _MultipartCollector:
    """Turns parser events into form fields and spooled files."""

    def __init__(self, limits: Limits) -> None:
        #: Text fields and uploads, in the body's order.
        self.form: dict[str, list[str | MultipartFile]] = {}
        self.files: dict[str, list[MultipartFile]] = {}
        self._field_limit = limits.max_body_size
        self._field_bytes = 0
        self._files_left = limits.max_files or -1  # -1: no limit
        self._header_limit = limits.max_part_header_size
        self._segment: multipart.MultipartSegment | None = None
        self._name = ""
        self._file: MultipartFile | None = None
        self._field: bytearray | None = None
        # Text fields with no charset of their own, decoded once the form's default
        # is known: a ``_charset_`` field may come anywhere (RFC 7578 4.6).
        self._undecoded: list[tuple[list[str | MultipartFile], int, bytearray]] = []
        self._charset_field: bytearray | None = None

    def feed(self, event: multipart.MultipartSegment | bytearray | None) -> None:
        if isinstance(event, multipart.MultipartSegment):
            self._start(event)
        elif event is None:
            self._finish()
        elif self._file is not None:
            try:
                self._file._write(event)
            except OSError as exc:  # the temporary folder is full, or gone; no fd left
                _log.warning("An upload could not be stored: %s", _logging.escape(str(exc)))
                explain = "The server cannot store the upload now."
                raise HttpError(503, "Service Unavailable", explain) from None
        elif self._field is not None:
            self._field_bytes += len(event)
            if self._field_limit and self._field_bytes > self._field_limit:
                raise too_large("form data", self._field_limit)
            self._field += event

    def _start(self, segment: multipart.MultipartSegment) -> None:
        # The parser bounds each header line (and their count); the block is bounded here.
        size = sum(len(name) + len(value) + 4 for name, value in segment.headerlist)
        if self._header_limit and size > self._header_limit:
            explain = f"A multipart part's header block exceeds {self._header_limit} bytes."
            raise HttpError(413, "Content Too Large", explain)
        self._segment = segment
        name, filename = _disposition(segment)
        self._name = name
        if filename is not None:
            if self._files_left == 0:
                raise HttpError(
                    413, "Content Too Large", "The form has too many file parts (max_files)."
                )
            self._files_left -= 1
            upload = MultipartFile(
                name,
                filename=filename,
                # As sent, parameters included (a text file's charset), as in 0.22.x.
                content_type=_part_type(segment) or "application/octet-stream",
            )
            self.files.setdefault(name, []).append(upload)
            self.form.setdefault(name, []).append(upload)
            self._file, self._field = upload, None
        else:
            self._file, self._field = None, bytearray()

    def _finish(self) -> None:
        if self._file is not None:
            self._file._written()
        segment, field = self._segment, self._field
        if segment is not None and field is not None:
            if self._name == "_charset_" and self._charset_field is None:
                self._charset_field = field
            values = self.form.setdefault(self._name, [])
            if segment.charset:
                values.append(form_text(field, _charset({"charset": segment.charset})))
            else:
                self._undecoded.append((values, len(values), field))
                values.append("")
        self._segment = self._file = self._field = None

    def decode_fields(self) -> None:
        """Decode the text fields that name no charset: in the one the form's first
        ``_charset_`` field names (HTML forms send it), else UTF-8."""
        charset = "utf-8"
        if self._charset_field is not None:
            name = self._charset_field.decode("ascii", "replace").strip()
            charset = _charset({"charset": name})
        for values, index, field in self._undecoded:
            values[index] = form_text(field, charset)
        self._undecoded.clear()

    def close(self) -> None:
        _close_all(self.files)


async def _read_multipart(
    request: Request, channel: Channel, options: dict[str, str], limits: Limits
) -> None:
    boundary = options.get("boundary")
    if not boundary:
        raise HttpError(400, "Bad Request", "multipart/form-data needs a boundary parameter.")
    try:
        parser = multipart.PushMultipartParser(
            boundary,
            max_header_size=limits.max_part_header_size or 2**31,
            max_header_count=16,
            max_segment_count=limits.max_parts or float("inf"),
            header_charset=_charset(options),
        )
    except (multipart.MultipartError, ValueError):
        raise HttpError(400, "Bad Request", "Invalid multipart boundary.") from None
    collector = _MultipartCollector(limits)
    limit = limits.max_upload_size
    total = 0
    try:
        # The parser closes at the body's end only (b""): bytes after the closing
        # boundary (an epilogue) are read here too, and counted.
        with parser:
            while not parser.closed:
                chunk = await channel.receive()
                total += len(chunk)
                if limit and total > limit:
                    channel.close_after_response()
                    raise too_large("upload", limit)
                for event in parser.parse(chunk):
                    collector.feed(event)
    except multipart.ParserLimitReached as exc:
        collector.close()
        channel.close_after_response()
        raise HttpError(413, "Content Too Large", f"Multipart limit reached: {exc}.") from None
    except multipart.MultipartError as exc:
        collector.close()
        channel.close_after_response()  # the rest of the body is not worth reading
        # The reason alone: the decode error that may follow is Python's repr of the bytes.
        reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise HttpError(400, "Bad Request", f"Malformed multipart body: {reason}.") from None
    except HttpError:  # a part refused by the collector (413, 400): the rest is not read
        collector.close()
        channel.close_after_response()
        raise
    except BaseException:
        collector.close()
        raise
    try:
        collector.decode_fields()
    except HttpError:
        collector.close()
        raise
    _merge_parameters(request, collector.form)
    request.files = collector.files


def _close_all(files: dict[str, list[MultipartFile]]) -> None:
    for items in files.values():
        for item in items:
            item.close()


def close_files(request: Request) -> None:
    """Remove the temporary files of a request's uploads (``request.files`` is then
    empty, so a second call closes nothing twice)."""
    files, request.files = request.files, {}
    _close_all(files)
