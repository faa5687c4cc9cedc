"""Sessions: the default in-memory store and the per-request session glue.

* :class:`LocalSessionFactory` keeps sessions in this process' memory, expires
  them lazily on access (no sweeper thread) and never reuses an id it does not
  know (no session fixation).
* :class:`RequestSessions` is what the dispatcher attaches to each request: it
  reads the session cookie, asks the factory for the session (off the event
  loop when the factory may block), flushes deferred writes and builds the
  ``Set-Cookie`` header of the response.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any

from .. import logger as _logging
from ..config import finite_number
from ..models import Request, Session, SessionFactory
from .invoke import call, user_error

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_TIMEOUT",
    "LocalSession",
    "LocalSessionFactory",
    "RequestSessions",
    "StoredSession",
    "check_session_settings",
    "configure_sessions",
    "global_session_factory",
    "new_session_id",
    "session_cookie",
    "set_session_factory",
]

#: Default idle timeout of a session, in seconds.
DEFAULT_SESSION_TIMEOUT = 30 * 60
#: Default bound of a local store: past it, the least recently used session ends.
DEFAULT_MAX_SESSIONS = 100_000
_log = _logging.get_logger("simple_http_server.sessions")
_EXPIRED = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


def new_session_id() -> str:
    """A fresh, unguessable session id (256 bits from ``secrets``, URL-safe)."""
    return secrets.token_urlsafe(32)


_global_factory: SessionFactory | None = None


def set_session_factory(session_factory: SessionFactory) -> None:
    """Use ``session_factory`` for the sessions of every app that has none of its own."""
    global _global_factory
    _global_factory = session_factory


def global_session_factory() -> SessionFactory | None:
    """The factory set with :func:`set_session_factory`, if any."""
    return _global_factory


class StoredSession(Session):
    """Bookkeeping shared by the built-in stores: id, times, newness."""

    def __init__(self, session_id: str, created: float, accessed: float, is_new: bool) -> None:
        super().__init__()
        self._id = session_id
        self._created = created
        self._accessed = accessed
        self._is_new = is_new
        self._valid = True

    @property
    def id(self) -> str:
        return self._id

    @property
    def creation_time(self) -> float:
        return self._created

    @property
    def last_accessed_time(self) -> float:
        return self._accessed

    @property
    def is_new(self) -> bool:
        return self._is_new


class LocalSession(StoredSession):
    """A session kept in this process' memory (thread-safe)."""

    def __init__(self, factory: LocalSessionFactory, session_id: str, max_inactive: float) -> None:
        now = time.time()
        super().__init__(session_id, now, now, True)
        self.max_inactive_interval = max_inactive  # type: ignore[assignment]
        self._factory = factory
        self._deadline_base = time.monotonic()
        self._attributes: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def is_valid(self) -> bool:
        return self._valid and not self._expired(time.monotonic())

    def _expired(self, now: float) -> bool:
        return now - self._deadline_base >= self.max_inactive_interval

    @property
    def attribute_names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._attributes)

    def get_attribute(self, name: str) -> Any:
        with self._lock:
            return self._attributes.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        with self._lock:
            self._attributes[name] = value

    def remove_attribute(self, name: str) -> None:
        """Forget one attribute."""
        with self._lock:
            self._attributes.pop(name, None)

    def invalidate(self) -> None:
        with self._lock:
            self._valid = False
            self._attributes.clear()
        self._factory._forget(self._id)

    def _touch(self) -> None:
        self._accessed = time.time()
        self._deadline_base = time.monotonic()
        self._is_new = False


class LocalSessionFactory(SessionFactory):
    """Sessions in memory; an unknown, expired or invalidated id is never reused.

    Safe to share between threads and coroutines: every operation is a short
    critical section that never waits for I/O.

    Args:
        max_inactive_interval: seconds of inactivity after which a session ends.
        max_sessions: how many sessions it holds at most; a new one past it ends the
            least recently used (clients that never send the cookie back cannot grow
            the store without bound).
    """

    #: Never blocks: the dispatcher may call it on the event loop.
    blocking_io = False

    def __init__(
        self,
        max_inactive_interval: float = DEFAULT_SESSION_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if finite_number("max_inactive_interval", max_inactive_interval) <= 0:
            raise ValueError("max_inactive_interval must be positive")
        if type(max_sessions) is not int or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive integer, not {max_sessions!r}")
        self.max_inactive_interval = max_inactive_interval
        self.max_sessions = max_sessions
        self._evicted = False
        # In the order of last use (a session found is moved to the end): the first
        # is the least recently used.
        self._sessions: dict[str, LocalSession] = {}
        self._lock = threading.Lock()
        self._created = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def get_session(self, session_id: str, create: bool = False) -> Session | None:
        """The live session ``session_id``; else a new one (new id) when ``create``."""
        if session_id:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is not None:
                    del self._sessions[session_id]
                    if session._valid and not session._expired(time.monotonic()):
                        session._touch()
                        self._sessions[session_id] = session  # now the most recently used
                        return session
        if not create:
            return None
        session = LocalSession(self, new_session_id(), self.max_inactive_interval)
        with self._lock:
            self._created += 1
            if self._created % 1000 == 0:
                self._prune()
            while len(self._sessions) >= self.max_sessions:
                self._evict_oldest()
            self._sessions[session.id] = session
        return session

    def _evict_oldest(self) -> None:
        # Called with the lock held: end the least recently used session.
        oldest = self._sessions.pop(next(iter(self._sessions)))
        oldest._valid = False
        if not self._evicted and not oldest._expired(time.monotonic()):
            self._evicted = True
            _log.warning(
                "The local session store is full (max_sessions=%d): the least recently "
                "used sessions end early",
                self.max_sessions,
            )

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        # Called with the lock held every 1000 creations: drop dead sessions.
        now = time.monotonic()
        dead = [sid for sid, s in self._sessions.items() if not s._valid or s._expired(now)]
        for sid in dead:
            del self._sessions[sid]


_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def configure_sessions(
    app: Any, session_cookie_name: str | None = None, session_timeout: float | None = None
) -> None:
    """Set an app's session cookie name and idle timeout (validated).

    ``server.start(session_cookie_name=..., session_timeout=...)`` calls it;
    it is the same as setting ``app.session_cookie_name`` / ``app.session_timeout``
    before the first request.
    """
    if session_cookie_name is not None:
        _check_cookie_name(session_cookie_name)
        app.session_cookie_name = session_cookie_name
    if session_timeout is not None:
        _check_timeout(session_timeout)
        app.session_timeout = session_timeout


def check_session_settings(app: Any) -> None:
    """Refuse (ValueError) an app whose ``session_cookie_name`` or ``session_timeout``
    was set to what no request could use; servers, proxies and the TestClient call it
    when they are built, so the error shows at start, not as a 500 per request."""
    _check_cookie_name(app.session_cookie_name)
    _check_timeout(app.session_timeout)


def _check_cookie_name(name: Any) -> None:
    # A "$" name is never read back: in a Cookie header it is an RFC 2109 attribute.
    if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name) or name[0] == "$":
        raise ValueError(f"invalid session cookie name: {name!r}")


def _check_timeout(timeout: Any) -> None:
    if finite_number("session_timeout", timeout) <= 0:  # nan and inf are refused too
        raise ValueError("session_timeout must be positive (seconds)")


def session_cookie(name: str, value: str, secure: bool, expire: bool = False) -> str:
    """The ``Set-Cookie`` value of the session cookie (or of its removal)."""
    text = f"{name}={value}; Path=/; HttpOnly; SameSite=Lax"
    if secure:
        text += "; Secure"
    if expire:
        text += "; " + _EXPIRED
    return text


def _alive(session: Session) -> bool:
    try:
        return bool(session.is_valid)
    except BaseException as exc:  # a user session that cannot tell: treat it as alive
        if not isinstance(user_error(exc), Exception):  # ^C, or the task's cancellation
            raise
        return True


class RequestSessions:
    """The session state of one request.

    ``get(create)`` is what ``request.get_session(create)`` calls. Factories
    are assumed to block on I/O unless they say otherwise with a
    ``blocking_io = False`` attribute; :meth:`prefetch` then resolves the
    session through :func:`~simple_http_server.dispatch.invoke.call`, i.e. in
    the worker pool when the asyncio transport serves the request.

    Args:
        factory: the session factory of the app.
        cookie_name: the session cookie's name.
        request: the request (its cookies and scheme are read).
    """

    __slots__ = (
        "cookie_name",
        "ended",
        "factory",
        "failed",
        "looked_up",
        "prefetch_error",
        "secure",
        "sent_id",
        "session",
    )

    def __init__(self, factory: SessionFactory, cookie_name: str, request: Request) -> None:
        self.factory = factory
        self.cookie_name = cookie_name
        morsel = request.cookies.get(cookie_name)
        self.sent_id: str | None = morsel.value if morsel is not None else None
        self.secure = request.scheme == "https"
        self.session: Session | None = None
        self.looked_up = False
        # Sessions of this request that ended (invalidated, expired) while it ran:
        # their deferred writes (an invalidation made on an event loop) are flushed
        # too, and the client's id is never looked up again once its session ended.
        self.ended: list[Session] = []
        # The request failed (an unexpected exception): no new session cookie.
        self.failed = False
        self.prefetch_error: Exception | None = None

    @property
    def blocking(self) -> bool:
        """True when the factory may wait for I/O (remote stores, user factories)."""
        return bool(getattr(self.factory, "blocking_io", True))

    def _cached(self, create: bool) -> tuple[bool, Session | None]:
        session = self.session
        if session is not None and _alive(session):
            return True, session
        if self.looked_up and session is None and not create:
            return True, None
        return False, None

    def get(self, create: bool = False) -> Session | None:
        """The request's session; a new one (with a new id) when ``create``."""
        done, session = self._cached(create)
        if done:
            return session
        if (error := self.prefetch_error) is not None:
            self.prefetch_error = None  # raised once, where the session is asked for
            raise error
        return self._store(self.factory.get_session(self._lookup_id(), create))

    async def prefetch(self, create: bool) -> None:
        """Resolve the session now, off the event loop when the factory may block."""
        done, _ = self._cached(create)
        if done:
            return
        if not self.blocking:
            self.get(create)
            return
        self._store(await call(self.factory.get_session, self._lookup_id(), create))

    def _lookup_id(self) -> str:
        """The id to look up: the client's, unless its session ended in this request
        (a store that defers writes would still find it, not yet invalidated)."""
        session = self.session
        if session is not None and all(s is not session for s in self.ended):
            self.ended.append(session)  # looked up again only once it is not alive
        return "" if self.ended else self.sent_id or ""

    def _store(self, session: Session | None) -> Session | None:
        self.session = session
        self.looked_up = True
        return session

    async def finish(self) -> None:
        """Write what the sessions deferred (``flush()``), off the event loop."""
        for session in (*self.ended, self.session):
            flush = getattr(session, "flush", None)
            if callable(flush):
                await call(flush)

    def cookie_headers(self) -> list[tuple[str, str]]:
        """The ``Set-Cookie`` header this response needs, if any.

        A live session whose id the client did not send gets its cookie, unless
        the request failed (a controller that failed half-way must not log a
        client in); a cookie naming a session that is gone (invalidated,
        expired, unknown, replaced) is removed.
        """
        if not self.looked_up:
            return []
        session = self.session
        if session is not None and _alive(session):
            try:
                session_id = session.id  # a user session's property: user code
            except BaseException as exc:
                if (error := user_error(exc)) is exc:
                    raise
                raise error from exc
            if self.sent_id == session_id:
                return []
            if not self.failed:
                return [("Set-Cookie", session_cookie(self.cookie_name, session_id, self.secure))]
        if self.sent_id is not None:
            value = session_cookie(self.cookie_name, "", self.secure, expire=True)
            return [("Set-Cookie", value)]
        return []
