"""Response values and the one normalizer of controller return values.

:func:`normalize` turns whatever a controller returned (dict, str, bytes,
``Response``, ``Redirect``, ``StaticFile``, tuples of those...) into an
:class:`Outcome`; nothing else in the package interprets return values.
"""

from __future__ import annotations

import asyncio
import http.cookies
import json
import re
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .dispatch.channel import (
    ClientGone,
    HeadAnswered,
    declared_length,
    sends_no_body,
    without_framing,
)
from .dispatch.invoke import until_none
from .errors import HttpError
from .logger import get_logger
from .models import Cookies, Header, Headers

if TYPE_CHECKING:
    from .dispatch.channel import Channel as ResponseChannel

__all__ = [
    "Outcome",
    "Redirect",
    "Response",
    "StaticFile",
    "check_framing",
    "check_header_names",
    "final_status",
    "invalid_head",
    "normalize",
    "sniff_text_type",
]

_log = get_logger("simple_http_server.responses")
#: Guards every response's ``_behind`` (held for a few operations only).
_BEHIND_LOCK = threading.Lock()
#: Queued by a coroutine's ``close()`` behind a thread's write.
_END = object()

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
OCTET_TYPE = "application/octet-stream"


class StaticFile:
    """A file sent as the response body, streamed from disk.

    Args:
        file_path: the file to send.
        content_type: its media type; None guesses it from the file name.
        download_name: when given, sent as an ``attachment`` with this name.
    """

    def __init__(
        self,
        file_path: str,
        content_type: str | None = "application/octet-stream",
        download_name: str | None = None,
    ) -> None:
        self.file_path = file_path
        self.content_type = content_type
        self.download_name = download_name


class Redirect(Exception):
    """Redirect the client; return it or raise it. ``status`` defaults to 302."""

    def __init__(self, url: str, status: int = 302) -> None:
        super().__init__(url)
        self._url = url
        self.status = status

    @property
    def url(self) -> str:
        """The target URL."""
        return self._url


class Response:
    """The response under construction; inject it or return one.

    Args:
        status_code: the HTTP status.
        headers: initial headers.
        body: str, dict, list, bytes, ``StaticFile`` or None.
    """

    #: Body bytes write_bytes handed to the connection (for the access log).
    _written: int = 0
    #: The streamed answer carries no body (a HEAD's, a 204, 205, 304, a 2xx to CONNECT):
    #: its head is sent, and write_bytes raises HeadAnswered (a ClientGone) so the
    #: controller stops.
    _head_only: bool = False
    #: The Content-Length the controller set on its streamed answer: write_bytes
    #: never sends past it, and the answer ends only when it is reached.
    _declared: int | None = None
    #: ``write_bytes`` / ``close`` calls under way (made at the first one): the end of
    #: the request waits for them, so a thread the controller left behind never
    #: writes after the answer's end (into the next answer on the connection).
    _writers: list[object] | None = None
    #: ``close()`` sent the end of the streamed answer.
    _ended: bool = False
    #: Threads' writes take turns on it (made at the first one): see ``_take_turn``.
    _turns: threading.RLock | None = None
    #: A coroutine's writes (and close) that came during a thread's turn, with their
    #: ``_writers`` tokens: that thread sends them at the end of its turn, in order.
    _behind: deque[tuple[object, object]] | None = None
    #: The threads kept for the sync streams of a ``def`` controller run in a pool (the
    #: dispatcher's, see ``track_streams``): released when the request ends.
    _pinned: list[Any] | None = None

    def __init__(
        self,
        status_code: int = 200,
        headers: dict[str, Any] | None = None,
        body: Any = "",
    ) -> None:
        self.status_code = status_code
        # Built on first use: most controllers never touch them.
        self._header_dict: Headers | None = Headers(headers) if headers else None
        self._cookie_jar: http.cookies.BaseCookie[str] | None = None
        self.body: Any = body
        self._channel: ResponseChannel | None = None
        #: (dispatcher, request) serving this response: adds the session cookie
        #: to a streamed head.
        self._served_by: tuple[Any, Any] | None = None
        self._streaming = False
        self._closed = False
        self._answer: Any = None  # an HttpError or Redirect set by send_error/send_redirect

    @property
    def headers(self) -> Headers:
        """The response headers (case-insensitive)."""
        if self._header_dict is None:
            self._header_dict = Headers()
        return self._header_dict

    @property
    def cookies(self) -> http.cookies.BaseCookie[str]:
        """Cookies to set with ``Set-Cookie``."""
        if self._cookie_jar is None:
            self._cookie_jar = Cookies()
        return self._cookie_jar

    @cookies.setter
    def cookies(self, value: http.cookies.BaseCookie[str]) -> None:
        self._cookie_jar = value

    @property
    def has_headers_or_cookies(self) -> bool:
        """True when a header or cookie was set (without creating either)."""
        return bool(self._header_dict) or bool(self._cookie_jar)

    @property
    def is_sent(self) -> bool:
        """True once the response was answered, streamed or closed."""
        return self._streaming or self._closed or self._answer is not None

    def set_header(self, key: str, value: Any) -> None:
        """Set a header, replacing any value it had."""
        self.headers[key] = value

    def add_header(self, key: str, value: Any) -> None:
        """Add a header value; repeated names are sent as several lines."""
        headers = self.headers
        if key not in headers:
            headers[key] = value
            return
        current = headers[key]
        # A tuple is several values, as a list is (and as the header lines read it).
        if isinstance(current, list):
            values = current
        else:
            values = list(current) if isinstance(current, tuple) else [current]
        values.extend(value if isinstance(value, list | tuple) else [value])
        headers[key] = values

    def add_headers(self, headers: dict[str, Any] | None = None) -> None:
        """Add every header of ``headers``."""
        for key, value in (headers or {}).items():
            self.add_header(key, value)

    def add_cookie(self, name: str, value: str, **options: Any) -> None:
        """Set a cookie, e.g. ``add_cookie("a", "b", path="/", httponly=True)``."""
        cookies = self.cookies
        cookies[name] = value
        for key, opt in options.items():
            cookies[name][key.replace("_", "-")] = opt

    def send_error(self, status_code: int, message: str = "", explain: str = "") -> None:
        """Answer with the error page for ``status_code``; the chain stops here."""
        self._answer = HttpError(status_code, message, explain)

    def send_redirect(self, url: str) -> None:
        """Answer with a 302 redirect to ``url``; the chain stops here."""
        self._answer = Redirect(url)

    def send_response(self) -> None:
        """Answer with what this response holds now; the chain stops here."""
        self._answer = self

    def write_bytes(self, data: bytes | bytearray) -> None:
        """Stream ``data`` to the client now (the head is sent on the first call).

        Raises ``ClientGone`` once the client is gone, and once the head is sent
        of an answer that carries no body (to a ``HEAD``; a 204, 304): nothing
        written could be sent, so the writer stops there.  Raises ``ValueError``,
        sending none of ``data``, when it would take the body past the
        ``Content-Length`` header set on this response.
        """
        if self._channel is None:
            raise RuntimeError("this Response is not attached to a connection")
        self._in_turn(data, self._write_while_open)  # False: a thread sends it after its own

    def _write_while_open(self, data: bytes | bytearray) -> None:
        if self._closed:  # closed, or its request is over (a thread writing late)
            raise RuntimeError("this Response is complete: nothing more can be written")
        self._write(data)

    def _in_turn(self, item: Any, act: Callable[[Any], None]) -> bool:
        """``act(item)`` in this call's turn (True), counted as a write under way; or, on
        an event loop during a thread's turn, ``item`` queued for that thread (False)."""
        writers, token = self._enter()
        try:
            if not self._take_turn(item, token):
                return False  # the token stays until the thread has sent the item
            try:
                act(item)
            finally:
                self._pass_turn()
        except BaseException:
            writers.remove(token)
            raise
        writers.remove(token)
        return True

    def _take_turn(self, item: object, token: object) -> bool:
        """Wait for this write's turn (True), so each call's bytes go out whole (the head
        once).  On an event loop nothing waits (a thread having the turn may be waiting
        for that very loop to send its bytes): the write, found during a thread's turn,
        is queued for that thread to send after its own (False)."""
        turns = self._turns
        if turns is None:
            turns = self.__dict__.setdefault("_turns", threading.RLock())
        if asyncio._get_running_loop() is None:
            turns.acquire()
            return True
        with _BEHIND_LOCK:
            if turns.acquire(blocking=False):
                return True
            if self._closed:
                if item is _END:  # close() after close(): nothing to do, nothing queued
                    assert self._writers is not None  # _enter made it
                    self._writers.remove(token)
                    return False
                raise RuntimeError("this Response is complete: nothing more can be written")
            if item is not _END:
                item = _payload(item)  # a TypeError now, for the caller
            behind = self.__dict__.setdefault("_behind", deque())
            behind.append((item, token))
        return False

    def _pass_turn(self) -> None:
        """End this turn, once the coroutines' writes queued during it were sent."""
        turns = self._turns
        assert turns is not None  # _take_turn made it
        while True:
            with _BEHIND_LOCK:
                behind = self._behind
                if not behind:
                    turns.release()
                    return
                item, token = behind.popleft()
            try:
                self._send_behind(item)
            finally:
                assert self._writers is not None  # _enter made it
                self._writers.remove(token)

    def _send_behind(self, item: object) -> None:
        """Send a coroutine's queued write (or close); what fails is logged, the
        coroutine's call having returned (a client gone shows at a later write or at
        ``drain()``)."""
        try:
            if item is not _END:
                self._write(item)  # type: ignore[arg-type]
            elif not self._ended:
                self._end()
        except ClientGone:
            pass
        except Exception:
            _log.exception("A coroutine's write_bytes queued behind a thread's failed")

    def _enter(self) -> tuple[list[object], object]:
        """Count a write under way, before the check that the request still lasts: the
        request's end marks the response closed, then waits for the writes counted
        (both steps atomic under the GIL, so one of the two sides sees the other)."""
        writers: list[object] = self.__dict__.setdefault("_writers", [])
        token = object()
        writers.append(token)
        return writers, token

    def _write(self, data: bytes | bytearray) -> None:
        channel = self._channel
        assert channel is not None  # write_bytes checked it
        payload = _payload(data)  # refused before anything is sent
        if not self._streaming:
            # Refused before anything is sent: the controller's error is a 500 page.
            self.status_code = final_status(self.status_code)
            lines = header_lines(self.headers, self.cookies)
            check_header_names(lines)
            method = "GET" if self._served_by is None else self._served_by[1].method
            if not _drops_framing(method, self.status_code):
                check_framing(lines, streamed=True)
                if not any(name.lower() == "content-type" for name, _ in lines):
                    lines.append(("Content-Type", OCTET_TYPE))  # as a returned stream's
            self._streaming = True
            if self._served_by is not None:
                dispatcher, request = self._served_by
                dispatcher.session_cookie(request, lines)
                if sends_no_body(request.method, self.status_code):  # a 204, say
                    self._head_only = True
                    lines = without_framing(lines)
                elif self.status_code == 205:  # no content either (RFC 9110 15.3.6)
                    self._head_only = True
                    lines = [*without_framing(lines), ("Content-Length", "0")]
                elif request.method == "HEAD":
                    self._head_only = True
            if not self._head_only:
                self._declared = declared_length(lines)
            channel.start_blocking(self.status_code, lines)
        if self._head_only:  # nothing written can ever be sent: stop the writer
            raise HeadAnswered("this answer has no body: its head is sent")
        declared = self._declared
        if declared is not None and self._written + len(payload) > declared:
            raise ValueError(
                f"write_bytes past the response's Content-Length ({declared}):"
                f" {len(payload)} more bytes after {self._written}"
            )
        channel.write_blocking(payload)
        self._written += len(payload)

    async def drain(self) -> None:
        """Wait until the client has taken most of what :meth:`write_bytes` sent.

        For coroutines, whose ``write_bytes`` never waits for the client: await it
        between writes to stream at the client's pace.  Raises ``ClientGone`` once
        the client is gone (or, for an answer without a body, once the head is sent).
        """
        if self._channel is None:
            raise RuntimeError("this Response is not attached to a connection")
        if self._head_only:
            raise HeadAnswered("this answer has no body: its head is sent")
        if self._behind:  # writes queued behind a thread's: they count as unsent
            await until_none(self._behind)
        await self._channel.drain()

    def close(self) -> None:
        """End a streamed response.

        Raises ``ValueError`` when fewer bytes were written than the ``Content-Length``
        header set on this response declares: the answer cannot end (the connection
        is dropped once the controller returns).
        """
        if self._channel is not None and self._streaming and not self._closed:
            # Queued behind a thread's write (False), the thread whose turn it is ends it.
            self._in_turn(_END, self._end_while_open)
        self._closed = True

    def _end_while_open(self, _item: object) -> None:
        if not self._closed:  # the request may have ended meanwhile
            self._end()

    def _end(self) -> None:
        declared = self._declared
        if declared is not None and self._written < declared:
            raise ValueError(
                f"close() short of the response's Content-Length ({declared}):"
                f" {self._written} bytes written"
            )
        assert self._channel is not None  # close() checked it
        self._channel.end_blocking()
        self._ended = self._closed = True  # before another thread's write takes its turn


def _payload(data: Any) -> bytes:
    """What ``write_bytes`` sends of ``data``: a bytes-like object's bytes; ``TypeError``
    for anything else (``bytes(5)`` would be five NUL bytes, as 0.22.x refused it too)."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError("write_bytes takes bytes, not str: encode the text first")
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError(f"write_bytes takes bytes, not {type(data).__name__}") from None


# -- what every front end can send ---------------------------------------------
#: RFC 9110 5.1: a field name is a token.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_GOOD_NAMES: set[str] = set()  # names that passed, so a response checks each once


def final_status(status: Any) -> int:
    """``status`` as the status of a final response, 200 to 599 (RFC 9110 15: 1xx are
    interim, codes past 599 invalid); a numeric ``str`` such as ``"201"`` is taken, as
    the original did.  ``ValueError`` for anything else."""
    if type(status) is int and 200 <= status <= 599:
        return status
    numeric = isinstance(status, str) and status.strip().isdigit() and status.isascii()
    if numeric or (isinstance(status, int) and not isinstance(status, bool)):  # or an IntEnum
        value = int(status)
        if 200 <= value <= 599:
            return value
    raise ValueError(f"invalid response status {status!r}: an int from 200 to 599")


def check_header_names(lines: list[tuple[str, str]]) -> None:
    """``ValueError`` for a header name that is not a token (``"Bad Name"``, ``""``)."""
    good = _GOOD_NAMES
    for name, _ in lines:
        if type(name) is str and name in good:
            continue
        if not isinstance(name, str) or not _TOKEN(name.strip(" ")):
            raise ValueError(f"invalid header name {name!r}")
        if len(good) < 512:  # names repeat; a bound keeps odd ones from piling up
            good.add(name)


def _drops_framing(method: str, status: int) -> bool:
    """True for the answers whose framing headers are replaced, whatever they say: the
    bodiless ones (:func:`sends_no_body`) and a 205 (``Content-Length: 0``)."""
    return status == 205 or sends_no_body(method, status)


def _content_length_ok(values: list[str]) -> bool:
    """One non-negative integer, however many lines and comma-separated copies of it
    hold it (RFC 9110 8.6)."""
    lengths = {part.strip(" \t") for value in values for part in value.split(",")}
    if len(lengths) != 1:
        return False
    length = lengths.pop()
    return length.isdigit() and length.isascii()


def check_framing(lines: list[tuple[str, str]], streamed: bool) -> None:
    """``ValueError`` for framing headers that no front end can send as given: a
    ``Transfer-Encoding`` other than one ``chunked`` (the only coding HTTP/1.1
    servers here frame), or, for a ``streamed`` body (sent with the controller's own
    ``Content-Length``), a ``Content-Length`` that is not one non-negative integer.
    A body in memory or a file gets its ``Content-Length`` from the server instead."""
    lengths: list[str] = []
    codings: list[str] = []
    for name, value in lines:
        lower = name.lower()
        if lower == "transfer-encoding":
            codings.append(value)
        elif lower == "content-length" and streamed:
            lengths.append(value)
    if codings and (len(codings) > 1 or codings[0].strip(" \t").lower() != "chunked"):
        raise ValueError(
            f"invalid Transfer-Encoding {', '.join(codings)!r}: only 'chunked' can be sent"
        )
    if lengths and not _content_length_ok(lengths):
        raise ValueError(f"invalid Content-Length {', '.join(lengths)!r}")


def invalid_head(outcome: Outcome, method: str = "GET") -> str | None:
    """Why ``outcome`` cannot be sent (its status, header names and framing headers), or
    None; a numeric ``str`` status becomes its int."""
    try:
        outcome.status = final_status(outcome.status)
        check_header_names(outcome.headers)
        if not _drops_framing(method, outcome.status):
            streamed = not isinstance(outcome.body, bytes | StaticFile | None)
            check_framing(outcome.headers, streamed)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(slots=True)
class Outcome:
    """A normalized answer: status, header lines, and one body value."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # bytes | StaticFile | Iterable[bytes] | AsyncIterable[bytes] | None
    content_type: str | None = None


# json.dumps builds a new encoder per call whenever an option is not the default.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_to_json = _ENCODER.encode
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _dict_to_json(value: dict[Any, Any]) -> str:
    """``_to_json`` of a dict: the very C encoder ``JSONEncoder.encode`` makes for it,
    without the Python steps around it (a circular-reference table per call, as there)."""
    if _c_make_encoder is None:
        return _to_json(value)
    enc = _ENCODER
    encoder = _c_make_encoder(
        {},
        enc.default,
        json.encoder.encode_basestring,  # what ensure_ascii=False picks
        enc.indent,
        enc.key_separator,
        enc.item_separator,
        enc.sort_keys,
        enc.skipkeys,
        enc.allow_nan,
    )
    return "".join(encoder(value, 0))


def sniff_text_type(text: str) -> str:
    """The original's content-type sniffing of ``str`` results."""
    head = text.lstrip()[:16].lower()
    if head.startswith("<?xml") and text.rstrip().endswith(">"):
        return XML_TYPE
    if (head.startswith("<!doctype html") or head.startswith("<html")) and text.rstrip().endswith(
        ">"
    ):
        return HTML_TYPE
    return TEXT_TYPE


def _header_lines(headers: dict[str, Any], out: list[tuple[str, str]]) -> None:
    # A None value sends no line, as 0.22.x (``set_header(name, None)`` unsets it).
    for name, value in headers.items():
        if isinstance(value, list | tuple):
            out.extend((name, str(v)) for v in value if v is not None)
        elif value is not None:  # the common case: one line, no list or generator made
            out.append((name, str(value)))


def _cookie_lines(cookies: http.cookies.BaseCookie[str], out: list[tuple[str, str]]) -> None:
    for morsel in cookies.values():
        out.append(("Set-Cookie", morsel.OutputString()))


def header_lines(
    headers: dict[str, Any], cookies: http.cookies.BaseCookie[str]
) -> list[tuple[str, str]]:
    """The header lines of a response's headers, then one ``Set-Cookie`` per cookie."""
    lines: list[tuple[str, str]] = []
    _header_lines(headers, lines)
    _cookie_lines(cookies, lines)
    return lines


def _body_of(value: Any, outcome: Outcome) -> None:
    """Set ``outcome.body`` and its default content type from a body value."""
    if isinstance(value, bytes | bytearray | memoryview):
        outcome.body = bytes(value)
        outcome.content_type = OCTET_TYPE
    elif isinstance(value, str):
        # surrogateescape: a path value decoded from invalid UTF-8 goes back as sent
        outcome.body = value.encode("utf-8", "surrogateescape")
        outcome.content_type = sniff_text_type(value)
    elif isinstance(value, dict | list):
        outcome.body = _to_json(value).encode("utf-8", "surrogateescape")
        outcome.content_type = JSON_TYPE
    elif value is None:
        outcome.body = b""
        outcome.content_type = TEXT_TYPE
    elif isinstance(value, StaticFile):
        outcome.body = value
    elif isinstance(value, AsyncIterable | Iterable):
        outcome.body = value
        outcome.content_type = OCTET_TYPE
    else:
        raise TypeError(f"unsupported result type: {type(value).__name__}")


def _is_body(value: Any) -> bool:
    # A ``Header`` is a response header; other text (an injected ``Parameter``) is a body.
    if isinstance(value, Header | http.cookies.BaseCookie | Headers):
        return False
    # A stream (a generator, an async one, a file object) too: a tuple is how its
    # status and headers (``text/event-stream``) are given without the Response.
    return isinstance(
        value, str | dict | list | bytes | bytearray | StaticFile | Iterator | AsyncIterator
    )


def _from_tuple(values: tuple[Any, ...], outcome: Outcome) -> None:
    status_set = body_set = False
    for item in values:
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not status_set:
            outcome.status, status_set = item, True
        elif isinstance(item, Headers):
            _header_lines(item, outcome.headers)
        elif isinstance(item, Header):
            if isinstance(item.name, dict):
                _header_lines(item.name, outcome.headers)
            elif item.name:
                outcome.headers.append((item.name, str(item)))
        elif isinstance(item, http.cookies.BaseCookie):
            _cookie_lines(item, outcome.headers)
        elif not body_set and _is_body(item):
            _body_of(item, outcome)
            body_set = True
    if not body_set:
        _body_of(None, outcome)


def normalize(result: Any, status: int = 200) -> Outcome:
    """Turn a controller's return value into an :class:`Outcome`.

    Args:
        result: what the controller (or error page) returned.
        status: the status when ``result`` names none (an ``int``, a
            ``Response`` or a ``Redirect`` do).
    """
    if type(result) is dict:  # the most common result: skip the type tests below
        body = _dict_to_json(result).encode("utf-8", "surrogateescape")
        return Outcome(status, [], body, JSON_TYPE)
    outcome = Outcome(status=status)
    if isinstance(result, Response):
        outcome.status = result.status_code
        outcome.headers = header_lines(result.headers, result.cookies)
        _body_of(result.body if result.body != "" else None, outcome)
    elif isinstance(result, Redirect):
        outcome.status = result.status
        outcome.headers.append(("Location", result.url))
        outcome.body = b""
    elif isinstance(result, tuple):
        _from_tuple(result, outcome)
    elif isinstance(result, int | Headers | http.cookies.BaseCookie) and not isinstance(
        result, bool
    ):
        _from_tuple((result,), outcome)
    else:
        _body_of(result, outcome)
    return outcome
