"""The dispatcher: route -> body -> filters -> bind -> invoke -> normalize -> send.

``Dispatcher.handle(request, channel)`` is the one pipeline behind every front
end (threaded, asyncio, WSGI, ASGI, TestClient).  It never sees bytes from a
socket: it reads the body from and writes the response into a ``Channel``.
"""

from __future__ import annotations

import contextvars
import html
import inspect
import os
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from .. import logger as _logging
from ..config import ServerConfig
from ..errors import HttpError
from ..models import Cookies, Headers, Request, SessionFactory
from ..responses import (
    JSON_TYPE,
    Outcome,
    Redirect,
    Response,
    StaticFile,
    final_status,
    header_lines,
    invalid_head,
    normalize,
)
from .binding import BindContext
from .bodies import (
    MultipartFile,
    RequestBodyReader,
    close_files,
    is_upload,
    parse_query,
    read_form,
    too_large,
)
from .channel import (
    FILE_CHUNK,
    AnswerCut,
    Channel,
    ClientGone,
    FileShrank,
    HeadAnswered,
    LengthMismatch,
    declared_length,
    encode_headers,
    file_chunks,
    without_framing,
)
from .compile import CompiledApp, Endpoint
from .compression import GzipPolicy, choose_file_gzip
from .error_pages import default_error_body, default_message
from .favicon import FAVICON, FAVICON_HEADERS, FAVICON_PATH, FAVICON_TYPE
from .filters import ChainStep, FilterContext, run_chain
from .invoke import (
    StreamRunner,
    TaskCancelled,
    after_task,
    call,
    call_async,
    cancellation,
    cancelling_me,
    current_loop,
    release_streams,
    run_in_task,
    running_task,
    share_helper,
    stream_runner,
    track_streams,
    until_none,
    user_error,
)
from .routing import Match, Router, normalize_path
from .sessions import (
    LocalSessionFactory,
    RequestSessions,
    check_session_settings,
    global_session_factory,
)
from .static import (
    FileAnswer,
    Resources,
    guess_type,
    none_match,
    open_inside,
    plain_segments,
    plan_file,
)

__all__ = ["Dispatcher", "make_request"]

_log = _logging.get_logger("simple_http_server.dispatch")
_access = _logging.get_logger("simple_http_server.access")
_escape = _logging.escape


def make_request(
    method: str,
    target: str,
    headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]],
    scheme: str = "http",
) -> Request:
    """Build a :class:`Request` from a request line's pieces and raw header pairs."""
    if not target.isascii():
        target = _ascii_target(target)
    if "#" in target:  # a fragment is the client's business, wherever it sits
        target = target.partition("#")[0]
    raw_path, _, query = target.partition("?")
    authority = None
    if raw_path[:1] != "/" and raw_path[:8].lower().startswith(("http://", "https://")):
        # absolute-form (RFC 9112 3.2.2): the path and the host are the target's
        authority, _, rest = raw_path.partition("://")[2].partition("/")
        raw_path = "/" + rest
    request = Request(
        method,
        normalize_path(raw_path or "/"),
        query,
        Headers.from_lines(headers),
        # Query values are text: a valid value of the wider parameter type.
        cast("dict[str, list[str | MultipartFile]]", parse_query(query)) if query else {},
        scheme,
    )
    request._raw_path = raw_path
    if authority is not None:
        request.headers["Host"] = authority  # the Host header sent is ignored
    return request


#: What stays as it is when a target's other bytes are percent-encoded: printable ASCII.
_PRINTABLE = "".join(chr(code) for code in range(0x21, 0x7F))


def _ascii_target(target: str) -> str:
    """``target`` with its non-ASCII characters percent-encoded as the bytes the client
    sent (a WSGI server's latin-1 text, an ASGI server's bytes read as latin-1), as
    HTTP clients send them: a raw ``café`` in the query reads as ``caf%C3%A9`` does."""
    try:
        raw = target.encode("latin-1")
    except UnicodeEncodeError:  # not bytes read as latin-1: text, sent as UTF-8
        raw = target.encode("utf-8", "surrogateescape")
    return quote(raw, safe=_PRINTABLE)


def request_line(request: Request) -> str:
    """Method and path for a log line, escaped: both come from the client."""
    return f"{_escape(request.method)} {_escape(request.path)}"


def _has_body(request: Request) -> bool:
    return "Transfer-Encoding" in request.headers or bool(request.content_length)


#: The original's message and explain when no controller serves a path.
_NO_CONTROLLER = ("Controller Not Found", "Cannot find a controller for your path")
#: 0.22.x's 404 for a path a resource pattern maps to a file that is not there.
_NO_FILE = ("", "Cannot find file for this url.")
#: What static files (resources, the built-in icon) answer; other methods get 405.
_FILE_METHODS = ("GET", "HEAD")

_FRAMING_NAMES = frozenset({"content-length", "transfer-encoding"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _routes_by_form(router: Router[Endpoint], request: Request, channel: Channel) -> bool:
    """True when the form body must be read before routing: it is a form, and a
    route that could serve the request narrows by ``params=``.  Never when one of
    those routes streams the body (a ``RequestBodyReader``): the body is left for
    it, and the expressions see the query alone."""
    if not (channel.unframed_body or _has_body(request)):
        return False
    if request.content_type.partition(";")[0].strip().lower() not in _FORM_TYPES:
        return False
    narrowed = False
    for entry in router.candidates(request.method, request.path):
        if entry.target.plan.needs_stream:
            return False
        narrowed = narrowed or bool(entry.conditions.params)
    return narrowed


class Dispatcher:
    """Serves requests of one app.

    Args:
        app: the :class:`~simple_http_server.app.App` to serve.
        config: limits and options.
        resources: static mounts ``{pattern: folder}``.
        session_factory: overrides the app's session factory.
    """

    def __init__(
        self,
        app: Any,
        config: ServerConfig | None = None,
        resources: Mapping[str, str] | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        check_session_settings(app)
        self.app = app
        self.config = config or ServerConfig()
        self.resources = Resources(resources)
        self.gzip = GzipPolicy.from_config(self.config)
        self._session_factory = session_factory
        self._local_sessions: SessionFactory | None = None

    # -- sessions ------------------------------------------------------------
    @property
    def session_factory(self) -> SessionFactory:
        """The factory in use: explicit, the app's, or a local in-memory one."""
        # ``is None``, not truthiness: a factory may define ``__len__`` (an empty
        # LocalSessionFactory is falsy).
        factory = self._session_factory
        if factory is None:
            factory = self.app.session_factory
        if factory is None:
            factory = global_session_factory()
        if factory is None:
            if self._local_sessions is None:
                self._local_sessions = LocalSessionFactory(self.app.session_timeout)
            factory = self._local_sessions
        return factory

    def _session_state(self, request: Request) -> RequestSessions:
        """Build the request's session state (on the first ``get_session``)."""
        state = RequestSessions(self.session_factory, self.app.session_cookie_name, request)
        request._session_getter = state.get
        request._session_state = state
        return state

    async def _prefetch_session(self, request: Request, endpoint: Endpoint) -> None:
        """Look the client's session up before the filters and a controller that will
        need it on the loop: one with a ``Session`` argument, or an async one sent a
        cookie. A new session is made only when the arguments are bound, after the
        others (see ``binders.session``): never for a request a filter answers, as in
        0.22.x, nor for one whose arguments fail to bind."""
        state = self._session_state(request)
        if state.sent_id is not None:
            try:
                await state.prefetch(create=False)
            except Exception as exc:  # a controller that never asks must not fail for it
                state.prefetch_error = exc

    async def _finish_session(self, request: Request) -> bool:
        """Write what the request's session deferred; False (logged) when it failed."""
        state = request._session_state
        if state is not None:
            try:
                await state.finish()
            except Exception:
                _log.exception("Cannot save the session of %s", request_line(request))
                state.failed = True
                return False
        return True

    async def _unsaved_session(self, response: Response, outcome: Outcome) -> Outcome:
        """The answer when the session could not save what the controller wrote (a
        write deferred by ``async def`` code): the ``500`` a ``def`` controller's
        failed write gets, unless the head is already out."""
        if response._streaming:
            return outcome
        if not isinstance(outcome.body, bytes | StaticFile | None):
            await _close_body(outcome.body)
        error = await self.error_outcome(500, "", "")
        _keep_response_headers(response, error, cookies=False)
        return error

    def session_cookie(self, request: Request, headers: list[tuple[str, str]]) -> None:
        """Add the ``Set-Cookie`` line the request's session needs, if any."""
        state = request._session_state
        if state is not None:
            headers.extend(state.cookie_headers())

    # -- pipeline ------------------------------------------------------------
    async def handle(self, request: Request, channel: Channel) -> None:
        """Serve one request through ``channel``.

        Uploaded files are removed once nothing can read them any more: before
        sending a body already in memory (or a file), after sending a streamed
        one (a generator or file object may read them), or when it failed.
        """
        response = Response()
        try:
            started = time.perf_counter() if self.config.access_log else 0.0
            response._channel = channel
            response._served_by = (self, request)
            request.client_address = channel.peer
            outcome: Outcome
            failed = True  # the controller (or a filter) raised: set False when it did not
            try:
                outcome = await self._serve(request, response, channel)
                failed = False
            except HttpError as err:
                _cut_if_streaming(response)
                outcome = await self.error_outcome(err.code, err.message, err.explain)
                _keep_response_headers(response, outcome)
            except Redirect as redirect:
                _cut_if_streaming(response)
                outcome = normalize(redirect)
                _keep_response_headers(response, outcome)
            except HeadAnswered:  # write_bytes stopped a bodiless answer: its head is all
                outcome = Outcome(status=response.status_code)
                failed = False
            except ClientGone:
                raise  # nobody to answer: the transport drops the connection
            except (Exception, SystemExit):  # sys.exit() in a controller ends the request only
                _log.exception("Error while serving %s", request_line(request))
                _cut_if_streaming(response)
                _failed(request)
                outcome = await self.error_outcome(500, "", "")
                # As 0.22.x: the headers (a CORS header...) but not the cookies of a
                # controller that failed half-way, which must not, say, log a client in.
                _keep_response_headers(response, outcome, cookies=False)
            # The controller is done: a write_bytes from a thread it left behind is
            # refused from now on, and one under way goes out before the answer's end.
            response._closed = True
            if response._writers:
                streaming = response._streaming
                await until_none(response._writers)
                if response._streaming and not streaming:  # that write sent the head
                    if failed and not response._ended and not response._head_only:
                        # As a failure after write_bytes: cut, never passed off as whole.
                        await _close_unsent(outcome.body)
                        raise AnswerCut("the controller failed as a thread's write started")
                    body = outcome.body
                    if not failed and body is not None and body != b"":
                        await _drop_body_after_thread(request, body)
            status = outcome.status
            if type(status) is not int or not 200 <= status <= 599 or outcome.headers:
                # What user code answered must be sendable by every front end alike.
                problem = None if response._streaming else invalid_head(outcome, request.method)
                if problem is not None:
                    _log.error("Cannot answer %s: %s", request_line(request), problem)
                    _failed(request)
                    if not isinstance(outcome.body, bytes | StaticFile | None):
                        await _close_body(outcome.body)
                    outcome = await self.error_outcome(500, "", "")
            if request.files and isinstance(outcome.body, bytes | StaticFile | None):
                close_files(request)  # the body is made: free them before a slow client reads it
            if request._session_state is not None and not await self._finish_session(request):
                outcome = await self._unsaved_session(response, outcome)
            try:
                if response._streaming:
                    if not response._ended:
                        declared = response._declared
                        if declared is not None and response._written < declared:
                            raise _length_mismatch(request, declared, response._written)
                        await channel.send_end()
                    status, size = response.status_code, response._written
                else:
                    status, size = await self.send(request, channel, outcome)
            finally:
                if request._session_state is not None and (
                    response._streaming or not isinstance(outcome.body, bytes | StaticFile | None)
                ):
                    # The body ran after the flush above: what it wrote to the session
                    # (kept in memory when it ran on an event loop) is written now.
                    await self._finish_session(request)
            if started:
                _access.info(
                    '%s "%s" %d %d %.2fms',
                    _escape(str(channel.peer[0])) if channel.peer else "-",
                    request_line(request),
                    status,
                    0 if request.method == "HEAD" else size,  # a HEAD answer has no body
                    (time.perf_counter() - started) * 1000,
                )
        finally:
            # A task that outlived the request can neither write nor read on: the
            # connection may carry the next request already.
            response._closed = True
            pinned = response._pinned
            if pinned is not None:
                release_streams(pinned)
            reader = request._reader
            if reader is not None:
                reader.detach()
                if reader._readers:  # a thread's read under way: it ends first
                    await until_none(reader._readers)
            if request.files:
                close_files(request)

    async def _serve(self, request: Request, response: Response, channel: Channel) -> Outcome:
        compiled: CompiledApp = self.app.compiled()
        router = compiled.router
        if request._raw_path == "*":
            return self._asterisk(request, router)
        body_read = False
        if router.narrows_by_params and _routes_by_form(router, request, channel):
            await self._read_body(request, channel, None)
            body_read = True
        match = router.lookup(request.method, request.path, request.parameters, request.headers)
        endpoint = match.target
        resource: _Resource | None = None
        if endpoint is None:
            if match.refused:  # the original's 404: nothing else is tried
                raise HttpError(404, *_NO_CONTROLLER)
            if self.resources and plain_segments(request._raw_path):
                found = self.resources.locate(request.path)
                resource = None if found is None else _Resource(*found)
            if resource is None or request.method not in _FILE_METHODS:
                return await self._unrouted(request, router, match, resource is not None)
        else:
            request.path_values = match.path_values
            request.reg_groups = match.reg_groups
        headers = request.headers
        filters: Sequence[Callable[..., Any]] = ()
        early = 0
        if compiled.filters:
            filters, early = compiled.filters_for(request.path)
        if not body_read and (
            headers._has_any(_FRAMING_NAMES)
            or channel.unframed_body
            or (endpoint is not None and endpoint.plan.needs_stream)
        ):
            limited = self._body_limit(request, channel, endpoint)  # a 413 comes first
            if early and not (endpoint is not None and endpoint.plan.needs_stream):
                # The before_body filters run first; the body is read when they go on.
                step = _BodyStep(self, request, channel, endpoint)
                filters = (*filters[:early], step, *filters[early:])
            else:
                await self._read_body(request, channel, endpoint, limited)
        if endpoint is not None and (
            endpoint.binds_session or (endpoint.is_async and "Cookie" in headers)
        ):
            await self._prefetch_session(request, endpoint)
        else:  # most requests never touch a session: build its state on first use
            request._session_getter = _LazySession(self, request)
        if endpoint is not None and not endpoint.is_async:
            # On a loop, a pool thread runs it and is kept for a sync stream it returns.
            response._pinned = track_streams()
        holder: list[Any] = []
        if filters:

            async def run_endpoint() -> None:
                if endpoint is None:
                    holder.append(resource)
                else:
                    holder.append(await endpoint.invoke(BindContext(request, response)))

            try:
                await run_chain(FilterContext(request, response, filters, run_endpoint))
            except Exception:  # a filter failed (or refused) after the controller returned
                if holder:
                    await _close_unsent(holder[0])
                raise
        elif endpoint is None:
            holder.append(resource)
        else:
            holder.append(await endpoint.invoke(BindContext(request, response)))
        answer = response._answer
        if answer is not None:
            if answer is not response:  # send_error/send_redirect: as if raised
                _cut_if_streaming(response)
            if isinstance(answer, HttpError):
                outcome = await self.error_outcome(answer.code, answer.message, answer.explain)
            else:
                outcome = normalize(answer)
            if answer is not response:  # send_response() sends the response itself
                _keep_response_headers(response, outcome)
            if holder and holder[0] is not response:
                await _close_unsent(holder[0], outcome.body)
            return outcome
        if response._streaming:
            if holder and holder[0] is not None and holder[0] is not response:
                await _drop_late_body(request, holder[0])
            return Outcome(status=response.status_code)
        if holder:
            result = holder[0]
            if result is response or (result is None and _response_touched(response)):
                return normalize(response)  # its headers and cookies once
            # As 0.22.x: the status set on the response (by the controller or a
            # filter) unless the result names its own (an int, a Response, a Redirect).
            outcome = normalize(result, response.status_code)
            if isinstance(result, Redirect):
                _keep_response_headers(response, outcome)
            elif response.has_headers_or_cookies:
                _merge_response(response, outcome)
            return outcome
        return normalize(response)

    def _body_limit(self, request: Request, channel: Channel, endpoint: Endpoint | None) -> int:
        """The size limit of the request's body; a ``413`` at once (nothing of the body
        read) when its declared ``Content-Length`` is over it."""
        limits = self.config.limits
        streamed = endpoint is not None and endpoint.plan.needs_stream
        # Streamed and multipart bodies are not buffered: they get the larger limit
        # (not a multipart/mixed or a gzip multipart body: those are buffered).
        limit = limits.max_upload_size if streamed or is_upload(request) else limits.max_body_size
        declared = request.content_length
        if declared is not None and limit and declared > limit:
            channel.close_after_response()  # answer now, never read the body
            raise too_large("request body", limit)
        return limit

    async def _read_body(
        self,
        request: Request,
        channel: Channel,
        endpoint: Endpoint | None,
        limit: int | None = None,
    ) -> None:
        if limit is None:
            limit = self._body_limit(request, channel, endpoint)
        if endpoint is not None and endpoint.plan.needs_stream:
            request.reader = RequestBodyReader(channel, limit)
            return
        if channel.unframed_body or _has_body(request):
            await read_form(request, channel, self.config.limits)

    def _asterisk(self, request: Request, router: Router[Endpoint]) -> Outcome:
        """``OPTIONS *`` asks about the server in general (RFC 9110 9.3.7): a 200 with
        the methods it serves; ``*`` is no target for any other method (RFC 9112 3.2.4)."""
        if request.method != "OPTIONS" or request.query_string:
            raise HttpError(400, "", "The request target * is only valid for OPTIONS.")
        methods = {*_FILE_METHODS, "OPTIONS", *router.named_methods()}
        return Outcome(200, [("Allow", ", ".join(sorted(methods)))], b"")

    # -- errors --------------------------------------------------------------
    async def _unrouted(
        self, request: Request, router: Router[Endpoint], match: Match[Endpoint], file: bool
    ) -> Outcome:
        """The answer when neither a route nor a resource serves the request: the
        built-in icon, 501 (CONNECT), 405 (with ``Allow``) or 404.  ``file``: a
        resource is there (and the method is not one it answers)."""
        method = request.method
        if method == "CONNECT" and not router.serves_connect:
            raise HttpError(501, "", "No route of this server answers CONNECT.")
        methods = set(match.allowed or ())
        if file or request.path == FAVICON_PATH:
            if not file and method in _FILE_METHODS:
                return Outcome(200, list(FAVICON_HEADERS), FAVICON, FAVICON_TYPE)
            methods.update(_FILE_METHODS)  # a file there answers these, and only these
        if not methods:
            raise HttpError(404, *self._not_found(request))
        if "GET" in methods:
            methods.add("HEAD")
        outcome = await self.error_outcome(405, "", "")
        outcome.headers.append(("Allow", ", ".join(sorted(methods))))
        return outcome

    def _not_found(self, request: Request) -> tuple[str, str]:
        """The message and explain of a 404: a file's when a resource pattern maps
        the path (as 0.22.x said), else a controller's."""
        resources = self.resources
        if resources and plain_segments(request._raw_path) and resources.covers(request.path):
            return _NO_FILE
        return _NO_CONTROLLER

    async def error_outcome(self, code: int, message: str, explain: str) -> Outcome:
        """The outcome of the error page for ``code``."""
        try:
            code = final_status(code)
        except ValueError as exc:  # HttpError(99), send_error("x")...
            _log.error("Cannot answer with an error page: %s", exc)
            code, message, explain = 500, "", ""
        message = default_message(code, message)
        page = self.app.error_pages.find(code)
        if page is not None:
            func, arguments_of = page
            # HTML-escaped, as 0.22.x gave them: the text often holds client input, and
            # a page that puts it into its HTML must not reflect markup or script.
            args, kwargs = arguments_of(code, _html_text(message), _html_text(explain))
            try:
                result = await call(func, *args, **kwargs)
                outcome = normalize(result, code)
                problem = invalid_head(outcome)
                if problem is None:
                    return outcome
                _log.error("Error page for %d answered what cannot be sent: %s", code, problem)
            except Exception:
                _log.exception("Error page for %d failed", code)
        body = default_error_body(code, message, explain)
        return Outcome(status=code, body=body, content_type=JSON_TYPE)

    # -- sending -------------------------------------------------------------
    async def send(self, request: Request, channel: Channel, outcome: Outcome) -> tuple[int, int]:
        """Write an outcome; returns (status, body bytes)."""
        headers = outcome.headers
        tagged = bool(headers)  # an ETag (If-None-Match) needs headers of the outcome's own
        if request._session_state is not None:
            self.session_cookie(request, headers)
        body = outcome.body
        status = outcome.status  # sends_no_body(), inlined: every answer passes here
        if status < 200 or status in (204, 304) or (status < 300 and request.method == "CONNECT"):
            return await _send_without_body(channel, outcome, headers)
        if status == 205:
            return await _send_reset_content(channel, outcome, headers)
        if isinstance(body, StaticFile):
            return await self._send_file(request, channel, outcome, body)
        content_type = _header(headers, "content-type") if headers else None
        if isinstance(body, bytes) and headers:  # we frame the body ourselves
            headers = [h for h in headers if h[0].lower() != "content-length"]
        if content_type is None:
            content_type = ""
            if outcome.content_type:
                content_type = outcome.content_type
                headers.append(("Content-Type", content_type))
        gzip = self.gzip
        if isinstance(body, bytes):
            zipped = gzip is not None and gzip.choose(
                request, outcome.status, headers, content_type, len(body)
            )
            if tagged and _not_modified(request, outcome.status, headers):
                return await _send_not_modified(channel, headers)
            if gzip is not None and zipped:
                body = gzip.compress(body)
            lines = encode_headers(headers)
            lines.append((b"Content-Length", b"%d" % len(body)))
            await channel.send_response(outcome.status, lines, body)
            return outcome.status, len(body)
        context: contextvars.Context | None = None
        runner = stream_runner(body)
        steps: _Steps | None = None
        owned: _OwnedStream | None = None
        try:
            zipped = gzip is not None and gzip.choose(
                request, outcome.status, headers, content_type, None
            )
            if tagged and _not_modified(request, outcome.status, headers):
                return await _send_not_modified(channel, headers)
            if request.method == "HEAD":  # RFC 9110 9.3.2: the head alone, the stream unread
                await channel.send_head(outcome.status, encode_headers(headers))
                await channel.send_end()
                return outcome.status, 0
            context = contextvars.copy_context()  # the stream's, for all its steps
            steps = _steps_of(body, context)
            chunks = _byte_chunks(body, context, runner, steps)
            if gzip is not None and zipped:
                chunks = gzip.stream(chunks)
            await channel.send_head(outcome.status, encode_headers(headers))
            declared = declared_length(headers)  # the controller's, unless gzip dropped it
            # On a loop the stream runs in a task of its own, which closes it too (an
            # async generator's finally in the task, and context, of its steps).
            if current_loop() is not None:
                owned = _OwnedStream(body, context, steps, runner)
            sending = _send_stream(request, channel, chunks, declared, owned)
            return outcome.status, await _while_client_stays(channel, sending)
        finally:
            if owned is None or not owned.taken:
                await _close_stream(body, context, steps, runner)

    async def _send_file(
        self, request: Request, channel: Channel, outcome: Outcome, static: StaticFile
    ) -> tuple[int, int]:
        file = _open_file(static)
        if file is None:
            outcome = await self.error_outcome(404, *_NO_FILE)
            return await self.send(request, channel, outcome)
        with file:
            st = os.fstat(file.fileno())
            # The server frames the file (and its ranges); the controller's other
            # headers win over the file's own (plan_file leaves those out).
            headers = [h for h in outcome.headers if h[0].lower() not in _FILE_FRAMING]
            content_type = (
                _header(headers, "content-type")
                or static.content_type
                or guess_type(static.file_path)
            )
            gzip = self.gzip is not None and choose_file_gzip(
                self.gzip, request, outcome.status, headers, content_type, st.st_size
            )
            answer = plan_file(
                request,
                st,
                content_type,
                static.download_name,
                gzip,
                conditional=outcome.status == 200,  # an error page's file goes out whole
                given=headers,
            )
            status = answer.status if outcome.status == 200 else outcome.status
            headers += answer.headers
            if status in (304, 412, 416):
                headers = [h for h in headers if h[0].lower() != "content-encoding"]
                return await self.send(request, channel, Outcome(status, headers, b""))
            if gzip:
                return await self._send_gzipped(request, channel, status, headers, file, answer)
            headers.append(("Content-Length", str(answer.length)))
            await channel.send_head(status, encode_headers(headers))
            if request.method != "HEAD" and answer.length:
                try:
                    await channel.send_file(file, answer.offset, answer.length)
                except FileShrank as exc:  # expected at run time: one line, no traceback
                    _log.warning("%s: %s", request_line(request), _escape(str(exc)))
                    raise
            await channel.send_end()
            return status, answer.length

    async def _send_gzipped(
        self,
        request: Request,
        channel: Channel,
        status: int,
        headers: list[tuple[str, str]],
        file: BinaryIO,
        answer: FileAnswer,
    ) -> tuple[int, int]:
        assert self.gzip is not None
        await channel.send_head(status, encode_headers(headers))
        size = 0
        if request.method != "HEAD":
            chunks = file_chunks(file, answer.offset, answer.length)
            try:
                async for chunk in self.gzip.stream(chunks):
                    size += len(chunk)
                    await channel.send_data(chunk)
            except FileShrank as exc:  # as for the identity form: the end is never sent
                _log.warning("%s: %s", request_line(request), _escape(str(exc)))
                raise
        await channel.send_end()
        return status, size


async def _send_stream(
    request: Request,
    channel: Channel,
    chunks: AsyncIterator[bytes],
    declared: int | None,
    owned: _OwnedStream | None = None,
) -> int:
    """Send a streamed body and its end; its size.  ``owned``: the body (and the
    context of its steps) to close here once it is sent or failed."""
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if declared is not None and size > declared:
                raise _length_mismatch(request, declared, size)
            await channel.send_data(chunk)
        if declared is not None and size < declared:
            raise _length_mismatch(request, declared, size)
        await channel.send_end()
    finally:
        if owned is not None:
            # No cancellation for a departed client from now on: it would cut the
            # close short (its outcome unlogged) and leave it to run twice at once.
            channel.unwatch_departure()
            owned.taken = True
            await _close_stream(owned.body, owned.context, owned.steps, owned.runner)
    return size


class _OwnedStream:
    """A stream body that the task sending it closes (on an event loop: in the task
    and context of its steps); ``taken`` once that task started closing it."""

    __slots__ = ("body", "context", "runner", "steps", "taken")

    def __init__(
        self,
        body: Any,
        context: contextvars.Context,
        steps: _Steps | None,
        runner: StreamRunner,
    ) -> None:
        self.body = body
        self.context = context
        self.steps = steps
        self.runner = runner
        self.taken = False


async def _close_stream(
    body: Any, context: contextvars.Context | None, steps: _Steps | None, runner: StreamRunner
) -> None:
    """:func:`_close_body` on the stream's ``runner``, unless a sync step still running
    there will close it; the runner's thread then ends (after that step).  An async
    body stepped on the background loop is closed there (:class:`_AsyncSteps`)."""
    try:
        if isinstance(steps, _AsyncSteps):
            await call_async(steps.close)
        elif steps is None or not steps.abandon():
            await _close_body(body, context, runner)
    finally:
        runner.release()


async def _while_client_stays(channel: Channel, sending: Coroutine[Any, Any, int]) -> int:
    """Run ``sending`` (a streamed body going out) while the transport watches the
    client: once it left (its EOF or a reset), the stream ends at once, even while
    it waits for its next piece, and ``ClientGone`` is raised.  On an event loop the
    stream runs in a task of its own, cancelled then (an async generator gets
    ``CancelledError`` at its ``await``, its ``finally`` runs); without one the
    transport cancels what the thread waits for itself."""
    if current_loop() is None:
        channel.watch_departure(None)
        try:
            return await sending
        finally:
            channel.unwatch_departure()
    try:
        return await run_in_task(sending, channel.watch_departure)
    except TaskCancelled:
        raise ClientGone("the client left while the stream went out") from None
    except Exception as exc:
        if isinstance(exc, ClientGone) or not channel.unwatch_departure():
            raise
        # The stream's finally failed as it was cancelled: an error of user code.
        _log.error("Error while closing the response body", exc_info=exc)
        raise ClientGone("the client left while the stream went out") from None
    finally:
        channel.unwatch_departure()


class _Resource(StaticFile):
    """A file of a static resource mount: opened only below the mount's folder."""

    def __init__(self, root: str, path: str) -> None:
        super().__init__(path, None)
        self.root = root


#: Headers of a controller's that a file answer leaves out: the server frames the file.
_FILE_FRAMING = frozenset({"content-length", "content-range"})


def _open_file(static: StaticFile) -> BinaryIO | None:
    """The file to send, or None (a 404). A resource's is the very file checked to
    be in its folder (:func:`.static.open_inside`); a controller's path is its own
    choice, opened as given (one with a NUL byte names no file: ValueError)."""
    if isinstance(static, _Resource):
        return open_inside(static.root, static.file_path)
    try:
        return open(static.file_path, "rb")
    except (OSError, ValueError):
        return None


def _not_modified(request: Request, status: int, headers: list[tuple[str, str]]) -> bool:
    """RFC 9110 13.1.2: a GET or HEAD whose ``If-None-Match`` matches the answer's
    ``ETag`` (weak comparison: the gzip form's ``W/`` tag and the identity form's
    strong one match each other) gets a 304 instead of the body."""
    if status != 200 or request.method not in ("GET", "HEAD"):
        return False
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is None:
        return False
    etag = _header(headers, "etag")
    return etag is not None and none_match(str(if_none_match), etag)


#: Representation metadata a 304 does not repeat (RFC 9110 15.4.5); ETag, Vary,
#: Cache-Control, Expires, Date and Set-Cookie stay.
_NOT_IN_304 = frozenset({"content-type", "content-length", "content-encoding"})


async def _send_not_modified(channel: Channel, headers: list[tuple[str, str]]) -> tuple[int, int]:
    headers = [h for h in headers if h[0].lower() not in _NOT_IN_304]
    await channel.send_response(304, encode_headers(headers), b"")
    return 304, 0


async def _send_without_body(
    channel: Channel, outcome: Outcome, headers: list[tuple[str, str]]
) -> tuple[int, int]:
    """An answer that carries no body (:func:`.channel.sends_no_body`): whatever body the
    controller gave is dropped (a stream closed unread), and so are the framing
    headers; the connection stays usable."""
    if not isinstance(outcome.body, bytes | StaticFile | None):
        await _close_body(outcome.body)
    await channel.send_response(outcome.status, encode_headers(without_framing(headers)), b"")
    return outcome.status, 0


async def _send_reset_content(
    channel: Channel, outcome: Outcome, headers: list[tuple[str, str]]
) -> tuple[int, int]:
    """A ``205 Reset Content``: no content whatever body the controller gave (RFC 9110
    15.3.6), framed as ``Content-Length: 0`` so the connection stays usable."""
    if not isinstance(outcome.body, bytes | StaticFile | None):
        await _close_body(outcome.body)
    lines = [*without_framing(headers), ("Content-Length", "0")]
    await channel.send_response(205, encode_headers(lines), b"")
    return 205, 0


async def _close_body(
    body: Any, context: contextvars.Context | None = None, runner: StreamRunner | None = None
) -> None:
    """Close a streamed body once it is sent, or failed, or was never needed (HEAD,
    304), as WSGI servers do: a returned file is closed, a generator's ``finally``
    runs (one never started has run none of its code, and has no ``finally`` to run),
    in the ``context`` its steps ran in (:func:`_byte_chunks`).  What that raises is
    logged, as any error of user code: the answer is sent (or lost) already.  A
    generator still running a step (in a thread the request stopped waiting for)
    cannot be closed: its own end, or the garbage collector, closes it.  A sync
    stream closes on the thread its steps ran on (``runner``, or the one the
    controller that returned it kept), which then ends."""
    own = runner is None
    if runner is None:
        runner = stream_runner(body)
    try:
        await _close_in(body, context, runner)
    finally:
        if own:
            runner.release()


async def _close_in(body: Any, context: contextvars.Context | None, runner: StreamRunner) -> None:
    if getattr(body, "gi_running", False) or getattr(body, "ag_running", False):
        return
    try:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:  # its finally may await: on the background loop without one
            # (on a loop, its steps ran in this task's own context, as aclose does)
            on_loop = current_loop() is not None
            await call_async(_await_call, aclose, None if on_loop else context)
            return
        close = getattr(body, "close", None)
        if close is not None:
            await runner.call(close) if context is None else await runner.call(context.run, close)
    except Exception:
        _log.exception("Error while closing the response body")


def _length_mismatch(request: Request, declared: int, sent: int) -> LengthMismatch:
    """The error that drops a connection whose streamed body disagrees with its
    controller's ``Content-Length``, logged as one line (no traceback: the
    controller's mistake is all there is to say)."""
    exc = LengthMismatch(declared, sent)
    _log.error("Cannot complete %s: %s", request_line(request), exc)
    return exc


async def _drop_late_body(request: Request, result: Any) -> None:
    """A controller that streamed with ``write_bytes`` also returned a body: the answer
    went out already, so the body cannot be sent; say so (0.22.x failed there), and
    close a returned stream (an open file)."""
    _log.warning(
        "%s: the controller returned a %s after write_bytes started the answer; it is not sent",
        request_line(request),
        _escape(type(result).__name__),
    )
    await _close_unsent(result)  # a stream, also in a tuple or a Response


async def _drop_body_after_thread(request: Request, body: Any) -> None:
    """A thread's ``write_bytes`` under way as the controller returned sent the head
    first: the body the controller returned cannot be sent (a stream is closed)."""
    _log.warning(
        "%s: a write_bytes from another thread started the answer as the controller"
        " returned; the body it returned is not sent",
        request_line(request),
    )
    await _close_unsent(body)


async def _close_unsent(result: Any, sent: Any = None) -> None:
    """Close the streams of a controller's result that no answer sends (a filter
    raised, or answered, after the controller returned it), as a sent one is closed:
    an open file kept its descriptor, a generator its ``finally``, until the garbage
    collector found them (often in a cycle with the error's traceback)."""
    for item in result if isinstance(result, tuple) else (result,):
        if isinstance(item, Response):
            item = item.body
        if item is sent:
            continue
        if callable(getattr(item, "close", None)) or callable(getattr(item, "aclose", None)):
            await _close_body(item)


def _cut_if_streaming(response: Response) -> None:
    """A failure after ``write_bytes`` started the response: it cannot become an
    error page, and ending it normally would pass a truncated body off as
    complete.  The transport drops the connection instead (no final chunk).
    An answer without a body (a HEAD's, a 204) is complete with its head: it ends
    normally."""
    if response._streaming and not response._closed and not response._head_only:
        raise AnswerCut("the controller failed after its response started")


def _failed(request: Request) -> None:
    """The request is answered with a 500: a session it created gets no cookie."""
    if request._session_state is not None:
        request._session_state.failed = True


class _LazySession:
    """``request.get_session`` before the session state exists."""

    __slots__ = ("dispatcher", "request")

    def __init__(self, dispatcher: Dispatcher, request: Request) -> None:
        self.dispatcher = dispatcher
        self.request = request

    def __call__(self, create: bool = False) -> Any:
        return self.dispatcher._session_state(self.request).get(create)


class _BodyStep(ChainStep):
    """The chain's step between the ``before_body`` filters and the others: it reads
    the request body, then goes on."""

    __slots__ = ("_channel", "_dispatcher", "_endpoint", "_request")

    def __init__(
        self, dispatcher: Dispatcher, request: Request, channel: Channel, endpoint: Endpoint | None
    ) -> None:
        self._dispatcher = dispatcher
        self._request = request
        self._channel = channel
        self._endpoint = endpoint

    async def __call__(self, ctx: FilterContext) -> None:
        await self._dispatcher._read_body(self._request, self._channel, self._endpoint)
        await ctx.do_chain()


def _as_bytes(chunk: Any) -> bytes:
    """A piece of a stream as bytes: a ``str`` (UTF-8) or a bytes-like object;
    ``TypeError`` for anything else (``bytes(5)`` would be five NUL bytes)."""
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, str):  # undecodable request bytes go back as they came, as in a str body
        return chunk.encode("utf-8", "surrogateescape")
    try:
        return memoryview(chunk).tobytes()
    except TypeError:
        raise TypeError(
            f"a streamed body's pieces are str or bytes-like, not {type(chunk).__name__}"
        ) from None


async def _byte_chunks(
    body: Any,
    context: contextvars.Context | None,
    runner: StreamRunner | None,
    steps: _Steps | None = None,
) -> AsyncIterator[bytes]:
    """The pieces of a streamed body (sync or async iterable, or None) as bytes; what
    the body lets out as for any user code (:func:`~.invoke.user_error`).

    Each step of the body runs in ``context`` (a fresh one without it), as all steps
    of a generator iterated by one task or thread do: a context variable the body sets
    holds at its next piece (a step handed to a thread or a task otherwise runs in a
    copy of its own), and a ``ContextVar.reset`` in its ``finally`` works."""
    if context is None:
        context = contextvars.copy_context()
    at_yield = False  # what is thrown in there (aclose()'s GeneratorExit) is the consumer's
    try:
        if isinstance(body, AsyncIterable):
            if current_loop() is not None:  # in this task, whose context its steps share
                async for chunk in body:
                    data = _as_bytes(chunk)
                    at_yield = True
                    yield data
                    at_yield = False
                return
            # No loop here (threaded transport, WSGI, TestClient): each step runs on the
            # background loop, where the generator can await; the sending stays here.
            if not isinstance(steps, _AsyncSteps):
                steps = _AsyncSteps(body, context)
            steps.iterator = aiter(body)
            while True:
                item = await call_async(steps.next)
                if item is _END_OF_BODY:
                    return
                data = _as_bytes(item)
                at_yield = True
                yield data
                at_yield = False
        elif body is not None:
            # A sync generator may block (files, sleeps): on an event loop each step
            # runs off the loop, all on one thread (:func:`.invoke.stream_runner`),
            # elsewhere it is called directly.
            if runner is None:  # the caller closes the stream, and releases its runner
                raise ValueError("a sync stream needs its runner")
            if not isinstance(steps, _SyncSteps):
                steps = _SyncSteps(body, context)
            try:
                while True:
                    chunk = await runner.call(steps.step)
                    if chunk is _END_OF_BODY:
                        return
                    data = _as_bytes(chunk)
                    at_yield = True
                    yield data
                    at_yield = False
            finally:
                steps.abandon()
    except BaseException as exc:
        if at_yield or (error := user_error(exc)) is exc:
            raise
        raise error from exc


_END_OF_BODY = object()


class _SyncSteps:
    """The steps of a sync body.  On an event loop each runs on the stream's thread
    (its :class:`~.invoke.StreamRunner`): when the stream stops waiting for one (its
    client left), that step ends in its own time and then closes the body there (its
    ``finally`` runs), which nothing else can do while the step runs."""

    __slots__ = ("abandoned", "body", "closing", "context", "lock", "pieces", "running")

    def __init__(self, body: Any, context: contextvars.Context) -> None:
        self.body = body
        self.context = context
        self.pieces: Iterator[Any] | None = None  # made by the first step (iter() runs code)
        self.lock = threading.Lock()
        self.running = False
        self.abandoned = False
        self.closing = False  # a step ended after the stream did: it closes the body

    def step(self) -> Any:
        """The next piece, or ``_END_OF_BODY`` (also once the stream ended)."""
        with self.lock:
            if self.abandoned:
                return _END_OF_BODY
            self.running = True
        try:
            if self.pieces is None:
                body = self.body
                self.pieces = _file_blocks(body) if _is_file(body) else iter(body)
            return self.context.run(next, self.pieces, _END_OF_BODY)
        finally:
            with self.lock:
                self.running = False
                self.closing = self.abandoned
            if self.closing:
                _close_after_step(self.body, self.context)

    def abandon(self) -> bool:
        """The stream ended: no step starts any more.  True when one runs (or ended
        meanwhile): that step closes the body, nothing else may."""
        with self.lock:
            self.abandoned = True
            return self.running or self.closing


class _AsyncSteps:
    """The steps of an async body driven from a thread that runs no loop (threaded
    transport, WSGI, TestClient): each is a task of the background loop, and so is
    its close, which therefore never misses a step under way.  The thread's own check
    could (its client left, the thread stopped waiting for a step and cancelled it:
    that cancellation may reach the loop only after the step ended, which left the
    body at its next piece, never closed, its ``finally`` run by the garbage
    collector if ever)."""

    __slots__ = ("body", "closed", "context", "iterator", "step")

    def __init__(self, body: Any, context: contextvars.Context) -> None:
        self.body = body
        self.context = context
        self.iterator: AsyncIterator[Any] | None = None
        self.step: Any = None  # the task of the latest step
        self.closed = False

    async def next(self) -> Any:
        """(On the background loop.) The next piece, or ``_END_OF_BODY`` (also once
        the stream is closed: a step that starts late never runs)."""
        if self.closed or self.iterator is None:
            return _END_OF_BODY
        self.step = running_task()
        return await _anext_in(self.iterator, self.context)

    async def close(self) -> None:
        """(On the background loop.) Close the body now, or once the step under way
        ended (the thread that stopped waiting for it cancelled it): in its context,
        what it raises logged."""
        self.closed = True
        await after_task(self.step, self._close)

    async def _close(self) -> None:
        aclose = getattr(self.body, "aclose", None)
        if aclose is None:
            return
        try:
            await _await_call(aclose, self.context)
        except BaseException as exc:
            if not isinstance(user_error(exc), Exception):  # a cancellation, a Ctrl-C
                raise
            _log.exception("Error while closing the response body")


_Steps = _SyncSteps | _AsyncSteps


def _steps_of(body: Any, context: contextvars.Context) -> _Steps | None:
    """What runs the steps of a stream body, and closes it, when one is needed."""
    if _is_sync_stream(body):
        return _SyncSteps(body, context)
    if body is not None and current_loop() is None:
        return _AsyncSteps(body, context)
    return None


def _close_after_step(body: Any, context: contextvars.Context) -> None:
    close = getattr(body, "close", None)
    if close is None:
        return
    try:
        context.run(close)
    except Exception:
        _log.exception("Error while closing the response body")


def _is_sync_stream(body: Any) -> bool:
    """A body whose steps :class:`_SyncSteps` runs (see :func:`_byte_chunks`)."""
    return body is not None and not isinstance(body, AsyncIterable)


def _is_file(body: Any) -> bool:
    """A file object (``open(path, "rb")``, ``upload.open()``): iterating one gives its
    lines, and a file without line ends is then one line as large as the file."""
    return callable(getattr(body, "read", None))


def _file_blocks(file: Any) -> Iterator[Any]:
    """The content of a file object in blocks of at most ``FILE_CHUNK``."""
    while block := file.read(FILE_CHUNK):
        yield block


async def _await_call(func: Any, context: contextvars.Context | None = None) -> None:
    if context is None:
        result = func()
    else:
        share_helper(context)
        result = context.run(func)
    if inspect.isawaitable(result):
        await (result if context is None else _InContext(context, result))


async def _anext_in(iterator: AsyncIterator[Any], context: contextvars.Context) -> Any:
    share_helper(context)
    try:
        return await _InContext(context, anext(iterator, _END_OF_BODY))
    except Exception as exc:
        if not cancelling_me(exc):
            raise
        # Cancelled as its client left (nobody awaits the outcome): its finally failed.
        _log.exception("Error while closing the response body")
        raise cancellation() from None


class _InContext:
    """Awaits ``awaitable`` with each of its steps run in ``context``, whatever task
    awaits it: the steps of an async generator driven by one task per piece (the
    background loop's, for a thread) share one context, as in a single task."""

    __slots__ = ("awaitable", "context")

    def __init__(self, context: contextvars.Context, awaitable: Awaitable[Any]) -> None:
        self.context = context
        self.awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self.awaitable.__await__()
        run = self.context.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = run(steps.send, value) if error is None else run(steps.throw, error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = yield yielded
            except BaseException as exc:  # thrown in (a cancellation): the awaitable's
                error = exc


def _header(headers: list[tuple[str, str]], lower_name: str) -> str | None:
    """The value of the first header named ``lower_name``, or None."""
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None


def _response_touched(response: Response) -> bool:
    return (
        response.status_code != 200
        or response.has_headers_or_cookies
        or response.body not in ("", None)
    )


def _merge_response(response: Response, outcome: Outcome) -> None:
    """Headers and cookies set on the injected response join the returned value's."""
    outcome.headers[:0] = header_lines(response.headers, response.cookies)


#: What an error page or a redirect says alone: its body's type, coding and framing.
_ANSWER_OWN = frozenset({"content-type", "content-encoding", "content-length", "transfer-encoding"})


def _keep_response_headers(response: Response, outcome: Outcome, cookies: bool = True) -> None:
    """The headers (and cookies) set on the response join an error page's or a
    redirect's outcome, as 0.22.x sent them, without breaking it: the outcome's own
    headers (a redirect's ``Location``) and its body's type and framing win."""
    if not response.has_headers_or_cookies:
        return
    own = {name.lower() for name, _ in outcome.headers if name.lower() != "set-cookie"}
    own |= _ANSWER_OWN
    lines = header_lines(response.headers, response.cookies if cookies else Cookies())
    # str(): a name that is not a str stays, for invalid_head() to refuse with a 500.
    outcome.headers[:0] = [line for line in lines if str(line[0]).strip().lower() not in own]


def _html_text(text: str) -> str:
    """``text`` HTML-escaped as 0.22.x escaped an error page's message and explain."""
    return html.escape(text, quote=False)
