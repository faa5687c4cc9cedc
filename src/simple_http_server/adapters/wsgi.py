"""The dispatch layer behind any WSGI server (PEP 3333): gunicorn, uWSGI, wsgiref...

``WSGIProxy(dispatcher)`` is a WSGI application.  A request is built from the
``environ``; its body is read from ``wsgi.input``; the response goes out through
``start_response``.  Responses held in memory are returned as one-item lists;
streamed ones (generators, files, ``Response.write_bytes``) become an iterable
that the server pulls chunk by chunk, so nothing is buffered whole.

How streaming works without a thread: the dispatch coroutine never suspends in
a WSGI worker (like the threaded transport), except in ``send_data`` of a
streamed response, where it yields the chunk out through :class:`_Chunk`; the
response iterable resumes it for the next chunk.  This module holds no socket
and never parses HTTP itself.

An ``async def`` controller runs on the shared background loop while the WSGI
server's request thread waits for it; the loop must never wait for a client, so
that thread does the controller's I/O (:mod:`..transport.thread_io`, as in the
threaded transport): ``await reader.read()`` awaits a ``wsgi.input`` read done
there, and ``response.write_bytes`` queues its bytes, which that thread hands to
``write()``, in order, before the app returns (``write()`` is the app's only
while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from .. import logger as _logging
from ..dispatch.channel import (
    AnswerCut,
    Channel,
    HeaderLines,
    encode_headers,
    with_content_length,
)
from ..dispatch.dispatcher import Dispatcher, make_request, request_line
from ..dispatch.invoke import LoopHelper, help_while_waiting
from ..dispatch.routing import PATH_SAFE
from ..dispatch.ws_handlers import Rejected
from ..errors import HttpError
from ..models import Request
from ..protocol import ws
from ..protocol.http11 import RequestHead, error_body, reason_phrase
from ..transport.common import ClientGone
from ..transport.thread_io import Inbox, Outbox

__all__ = ["WSGIProxy"]

StartResponse = Callable[..., Callable[[bytes], Any]]
READ_SIZE = 64 * 1024
_COMPLETE = "this Response is complete: nothing more can be written"
_TRUNCATED = "The request body is shorter than its Content-Length."
_get_running_loop = asyncio._get_running_loop
#: A ``Content-Length`` value (``str.isdigit`` would also take "²" or "١٢").
_LENGTH = re.compile(r"[0-9]+")
_threads = threading.local()
_log = _logging.get_logger("simple_http_server.wsgi")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def status_line(status: int) -> str:
    """``"200 OK"`` for 200; unknown codes get a generic phrase."""
    return f"{status} {reason_phrase(status).decode('latin-1') or 'Unknown'}"


def wsgi_headers(headers: HeaderLines) -> list[tuple[str, str]]:
    """Response header lines as WSGI wants them: str pairs, no hop-by-hop headers."""
    out = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        if name.lower() not in _HOP_BY_HOP:
            out.append((name, raw_value.decode("latin-1")))
    return out


def request_target(environ: dict[str, Any]) -> str:
    """The request target below ``SCRIPT_NAME``, undecoded when the server passes it
    (``RAW_URI``: gunicorn; ``REQUEST_URI``: uWSGI, mod_wsgi); otherwise rebuilt from
    ``PATH_INFO``, already decoded: ``%2F`` and ``/`` can no longer be told apart.
    An absolute-form target keeps its scheme and host (they are the request's)."""
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    origin = ""
    if raw[:8].lower().startswith(("http://", "https://")):
        # absolute-form (RFC 9112 3.2.2): its host is the request's, not Host's
        scheme, _, after = raw.partition("://")
        authority, slash, raw = after.partition("/")
        origin, raw = f"{scheme}://{authority}", slash + raw
    if raw.startswith("/"):
        script = str(environ.get("SCRIPT_NAME") or "").rstrip("/")
        if not script:
            return origin + raw
        rest = _below_script(raw, quote(script.encode("latin-1"), safe=PATH_SAFE))
        if rest is not None:
            return origin + rest
    path = quote(environ.get("PATH_INFO", "").encode("latin-1") or b"/", safe=PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return origin + (f"{path}?{query}" if query else path)


def _below_script(raw: str, script: str) -> str | None:
    """The raw target ``raw`` without its leading ``script`` segments (None when it does
    not start with them as spelled: ``PATH_INFO`` is used then)."""
    path, mark, query = raw.partition("?")
    if path != script and not path.startswith(script + "/"):
        return None
    return (path[len(script) :] or "/") + mark + query


def declared_length(environ: dict[str, Any]) -> int | None:
    """``CONTENT_LENGTH`` as an int; None when it is absent or empty (no body, PEP 3333).

    A list of one number repeated (``6, 6``: a header sent twice, joined) is that
    number, as h11 reads it in our transports (RFC 9110 8.6).

    Raises:
        ValueError: it is no decimal number (``abc``, ``-1``), or a list of different
            ones: a 400, as in our transports.
    """
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not length:
        return None
    values = {value.strip() for value in length.split(",")}
    if len(values) != 1 or not _LENGTH.fullmatch(value := values.pop()):
        raise ValueError(f"invalid Content-Length {length!r}")
    return int(value)


def request_headers(environ: dict[str, Any], length: int | None) -> list[tuple[str, str]]:
    """The request headers of a WSGI ``environ``; ``length`` is its ``declared_length``
    (``6, 6`` is ``6`` there, as h11 passes it in our transports)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return headers


class _Chunk:
    """Awaited by the channel to hand a body chunk out of the dispatch coroutine."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __await__(self) -> Generator[_Chunk, None, None]:
        yield self


def _thread_helper() -> LoopHelper:
    """The calling thread's helper: one per WSGI server thread, for all its requests."""
    helper: LoopHelper | None = getattr(_threads, "helper", None)
    if helper is None:
        helper = _threads.helper = LoopHelper()
    return helper


class _WSGIChannel(Channel):
    """Reads ``wsgi.input``, answers through ``start_response``."""

    def __init__(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        length: int | None,
        backlog: int = 0,
    ) -> None:
        self.environ = environ
        self.start_response = start_response
        self.secure = environ.get("wsgi.url_scheme") == "https"
        addr, port = environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")
        # wsgiref and others give no REMOTE_PORT: the address alone still names the client
        number = int(str(port)) if str(port or "").isdigit() else 0
        self.peer = (str(addr), number) if addr else None
        self.method = str(environ.get("REQUEST_METHOD") or "GET")
        self.is_head = self.method == "HEAD"
        self.parts: list[bytes] = []
        self.streaming = False
        #: The head says ``Content-Length``.
        self.framed = False
        #: The head, until :meth:`commit` hands it to ``start_response``.
        self._head: tuple[str, list[tuple[str, str]]] | None = None
        self._write: Callable[[bytes], Any] | None = None
        self._input = environ["wsgi.input"]
        # A chunked body the WSGI server does not terminate cannot be read safely.
        self._length_required = False
        if length is not None:
            self._remaining: int | None = length
        elif environ.get("HTTP_TRANSFER_ENCODING"):
            self._remaining = None  # chunked: the server marks the end with b""
            self._length_required = not environ.get("wsgi.input_terminated")
        else:
            self._remaining = 0
        # The I/O of coroutines, done by the request thread (see the module docstring).
        self._backlog = backlog
        self.helper: LoopHelper | None = None
        self.outbox: Outbox | None = None
        self.inbox: Inbox | None = None
        self._returned = False  # the app returned: write() is no longer ours

    async def receive(self) -> bytes:
        if self._length_required:
            raise HttpError(411, "", "This server needs a Content-Length for request bodies.")
        inbox = self.inbox
        if _get_running_loop() is None:
            if inbox is not None and inbox.ready:  # a read a coroutine stopped waiting for
                return inbox.take() or b""
            return self._read_input()
        if inbox is None:
            if self._remaining == 0:
                return b""
            inbox = self.inbox = Inbox()
        return await inbox.read(self._read_input, self._post) or b""

    def _read_input(self) -> bytes:
        """The next piece of the body from ``wsgi.input`` (blocking: never on a loop)."""
        remaining = self._remaining
        if remaining is not None and remaining <= 0:
            return b""
        try:
            data = bytes(
                self._input.read(READ_SIZE if remaining is None else min(READ_SIZE, remaining))
            )
        except OSError:  # reset, or the WSGI server's own read timeout
            self._remaining = 0
            raise HttpError(400, "", _TRUNCATED) from None
        if remaining is None:
            return data
        if not data:  # the client left before sending all of its Content-Length
            self._remaining = 0
            raise HttpError(400, "", _TRUNCATED)
        self._remaining = remaining - len(data)
        return data

    def _start(self, status: int, headers: HeaderLines) -> None:
        self.framed = any(name.lower() == b"content-length" for name, _ in headers)
        self._head = (status_line(status), wsgi_headers(headers))

    @property
    def committed(self) -> bool:
        """The head went to ``start_response``: it is the WSGI server's to send."""
        return self._write is not None

    def commit(self) -> None:
        """Hand the head to ``start_response``, once: before the first ``write()`` or
        when the app returns, so that a failure before then can still be answered
        with our 500 (a second ``start_response``, even with ``exc_info``, is not
        enough: gunicorn adds its headers to the first one's)."""
        if self._head is not None and self._write is None:
            self._write = self.start_response(*self._head)

    async def send_head(self, status: int, headers: HeaderLines) -> None:
        self._start(status, headers)
        self.streaming = True

    async def send_data(self, data: bytes) -> None:
        if data and not self.is_head:
            await _Chunk(data)

    async def send_end(self) -> None:
        return None

    async def send_response(self, status: int, headers: HeaderLines, body: bytes) -> None:
        headers = with_content_length(headers, status, len(body), self.method)
        self._start(status, headers)
        if body and not self.is_head:
            self.parts.append(body)

    # ``Response.write_bytes`` from user code: WSGI's imperative ``write()``.
    def start_blocking(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._start(status, encode_headers(headers))
        self.streaming = True

    def write_blocking(self, data: bytes) -> None:
        if self._head is None:
            raise RuntimeError("write_bytes before the response head")
        if self.is_head:
            return
        if _get_running_loop() is not None:
            self._queue(data)  # a coroutine: the request thread writes it
        elif self.outbox is not None:
            self.outbox.write(data)  # after what coroutines queued
        elif data:
            self._send(data)

    def end_blocking(self) -> None:
        return None

    async def drain(self) -> None:
        outbox = self.outbox
        if outbox is not None:
            await outbox.drain()

    # -- the I/O of coroutines, done by the request thread ---------------------
    def _queue(self, data: bytes) -> None:
        """Queue a coroutine's bytes for the request thread (write-behind)."""
        outbox = self.outbox
        if outbox is None:
            if not data:
                return
            if self._returned:
                raise RuntimeError(_COMPLETE)
            outbox = Outbox(self._send, self._cut, self._post, self._backlog, self.peer)
            self.outbox = outbox
        outbox.put(data)

    def _send(self, data: bytes) -> None:
        """WSGI's ``write()``; whatever it raises (servers differ) means the client is gone."""
        if self._head is None:
            raise RuntimeError("write_bytes before the response head")
        self.commit()
        assert self._write is not None
        try:
            self._write(data)
        except Exception as exc:
            raise ClientGone(str(exc) or type(exc).__name__) from None

    def send_head_now(self) -> None:
        """Have the WSGI server send the head at once (an empty ``write()``), so that
        an answer failing now is cut after it rather than replaced by the server's 500."""
        if self._head is not None and not self.committed:
            with contextlib.suppress(ClientGone):
                self._send(b"")

    def _cut(self) -> None:
        """Nothing to do: the connection is the WSGI server's, ended once the app raises."""

    def _post(self, job: Callable[[], None]) -> None:
        helper = self.helper
        if helper is None:
            helper = self.helper = LoopHelper()
        helper.post(job)

    def step(self, coro: Any) -> bytes | None:
        """:func:`_step` in the calling thread, which meanwhile does the I/O handed to
        it by the coroutines it waits for."""
        helper = self.helper = _thread_helper()
        previous = help_while_waiting(helper)
        try:
            return _step(coro)
        finally:
            help_while_waiting(previous)

    def app_returns(self, complete: bool) -> None:
        """What coroutines queued goes out now (``complete``) or never (the answer
        failed); nothing can be queued after it."""
        self._returned = True
        outbox = self.outbox
        if outbox is None:
            return
        if complete:
            outbox.finish()
        else:
            outbox.fail("the answer was cut short")


def _step(coro: Any) -> bytes | None:
    """Run the dispatch coroutine to its next chunk; None when it has finished."""
    try:
        marker = coro.send(None)
    except StopIteration:
        return None
    if isinstance(marker, _Chunk):
        return marker.data
    coro.close()
    raise RuntimeError("the dispatch coroutine suspended outside an event loop")


class _StreamedBody:
    """The response iterable of a streamed response: resumes dispatch per chunk."""

    def __init__(self, channel: _WSGIChannel, coro: Any, first: bytes, request: Request) -> None:
        self._channel = channel
        self._coro = coro
        self._first: bytes | None = first
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while True:
            try:
                chunk = self._channel.step(self._coro)
            except Exception as exc:
                _log_cut(exc, self._request)
                raise  # the WSGI server ends the connection: the client sees the answer cut
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._coro.close()


def _log_cut(exc: Exception, request: Request) -> None:
    """Log, as our transports do, a failure that cuts an answer already under way (a
    returned stream raising); a client gone, or a cut logged already, is not one."""
    if not isinstance(exc, ClientGone):
        _log.error("Error while sending the response to %s", request_line(request), exc_info=exc)


def _refuse(
    start_response: StartResponse,
    status: int,
    body: bytes,
    kind: str,
    head: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    """An answer of the adapter's own, before any app code runs; the head alone for
    a ``HEAD`` (RFC 9110 9.3.2: wsgiref would send the body)."""
    headers = [("Content-Type", kind), *extra, ("Content-Length", str(len(body)))]
    start_response(status_line(status), headers)
    return [] if head else [body]


#: The refusal of every websocket handshake here, in the form of our transports' refusals.
_NO_WEBSOCKETS = Rejected(501, [], "Websocket is not supported under WSGI").body()


def _websocket_refusal(
    environ: dict[str, Any],
) -> tuple[int, bytes, tuple[tuple[str, str], ...]] | None:
    """(status, body, headers) for a websocket upgrade, or None for a request that
    is not one (no ``websocket`` among the ``Upgrade`` tokens, or HTTP/1.0, whose
    ``Upgrade`` is ignored): as in our transports, a handshake by another method than
    GET is a ``405`` with ``Allow: GET``; a GET one is a ``501``: no websockets here."""
    version = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
    upgrade = str(environ.get("HTTP_UPGRADE", "")).encode("latin-1", "replace")
    method = str(environ.get("REQUEST_METHOD", "GET"))
    head = RequestHead(method, b"/", [(b"Upgrade", upgrade)], version.encode(), False, True)
    if not ws.is_websocket_upgrade(head):
        return None
    checked = ws.check_handshake(head)
    if isinstance(checked, ws.HandshakeRejection) and checked.status == 405:
        rejected = Rejected(405, list(checked.headers), checked.message)
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in rejected.headers)
        return 405, rejected.body(), headers
    return 501, _NO_WEBSOCKETS, ()


def _head_only() -> Iterator[bytes]:
    """The body of an answer without a body nor a ``Content-Length`` (a 204, a 304,
    a HEAD's streamed answer): one empty piece of an iterable without ``len()``, so
    that the server sends the head as it is instead of adding ``Content-Length: 0``
    to it (wsgiref does for an empty list; RFC 9110 8.6: a 204 has none, a 304 only
    the length of the 200 it stands for, and the length of a stream is unknown)."""
    yield b""


def _server_error(
    start_response: StartResponse, channel: _WSGIChannel, request: Request
) -> list[bytes]:
    """Our 500 page for a failure before the head went to the WSGI server (a body
    failing at its first piece), as our transports answer one whose head is not out,
    instead of the server's own page (and its traceback).  Call it in an ``except``."""
    _log.exception("Error while sending the response to %s", request_line(request))
    body = error_body(500)
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ]
    start_response(status_line(500), headers)
    return [] if channel.is_head else [body]


class WSGIProxy:
    """A WSGI application serving one dispatcher (see ``server.init_wsgi_proxy``).

    Args:
        dispatcher: the dispatcher of the app to serve.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._backlog = dispatcher.config.limits.max_send_backlog

    def app_proxy(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point: ``app_proxy(environ, start_response)``."""
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if environ.get("HTTP_UPGRADE"):
            refusal = _websocket_refusal(environ)
            if refusal is not None:
                status, body, extra = refusal
                kind = "application/json; charset=utf-8"
                return _refuse(start_response, status, body, kind, head, extra)
        try:
            length = declared_length(environ)
        except ValueError:  # wsgiref passes it on; our transports (h11) answer 400
            kind = "application/json; charset=utf-8"
            return _refuse(start_response, 400, error_body(400), kind, head)
        scheme = str(environ.get("wsgi.url_scheme", "http"))
        request = make_request(
            str(environ.get("REQUEST_METHOD", "GET")),  # case-sensitive (RFC 9110 9.1)
            request_target(environ),
            request_headers(environ, length),
            scheme,
        )
        request.environment = environ
        channel = _WSGIChannel(environ, start_response, length, self._backlog)
        coro = self.dispatcher.handle(request, channel)
        try:
            first = channel.step(coro)
        except Exception as exc:
            channel.app_returns(complete=False)
            if isinstance(exc, AnswerCut):
                channel.send_head_now()  # the client sees the answer cut, as in our transports
            if isinstance(exc, ClientGone) or channel.committed:
                _log_cut(exc, request)
                raise
            return _server_error(start_response, channel, request)
        except BaseException:
            channel.app_returns(complete=False)
            raise
        channel.app_returns(complete=True)
        channel.commit()
        if first is None:
            if not channel.parts and not channel.framed:
                return _head_only()
            return channel.parts
        return _StreamedBody(channel, coro, first, request)

    __call__ = app_proxy

    async def async_app_proxy(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> list[bytes]:
        """``await proxy.async_app_proxy(environ, start_response)``: the body as a list.

        The blocking WSGI work runs in the loop's default executor.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._collect, environ, start_response)

    def _collect(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        body = self.app_proxy(environ, start_response)
        try:
            return [bytes(chunk) for chunk in body]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
