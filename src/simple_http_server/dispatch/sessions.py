"""The default in-memory session store, with lazy expiry and no sweeper thread."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from ..models import Session, SessionFactory

__all__ = ["LocalSession", "LocalSessionFactory", "new_session_id"]


def new_session_id() -> str:
    """A fresh, unguessable session id (256 bits from ``secrets``)."""
    return secrets.token_urlsafe(32)


class LocalSession(Session):
    """A session kept in this process' memory."""

    def __init__(self, factory: LocalSessionFactory, session_id: str, max_inactive: int) -> None:
        super().__init__()
        self.max_inactive_interval = max_inactive
        self._factory = factory
        self._id = session_id
        self._created = self._accessed = time.time()
        self._attributes: dict[str, Any] = {}
        self._is_new = True
        self._valid = True
        self._lock = threading.Lock()

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

    @property
    def is_valid(self) -> bool:
        return self._valid and time.time() - self._accessed < self.max_inactive_interval

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
        self._valid = False
        with self._lock:
            self._attributes.clear()
        self._factory._forget(self._id)

    def _touch(self) -> None:
        self._accessed = time.time()
        self._is_new = False


class LocalSessionFactory(SessionFactory):
    """Sessions in memory; an unknown, expired or invalidated id is never reused.

    Args:
        max_inactive_interval: seconds of inactivity after which a session ends.
    """

    def __init__(self, max_inactive_interval: int = 30 * 60) -> None:
        self.max_inactive_interval = max_inactive_interval
        self._sessions: dict[str, LocalSession] = {}
        self._lock = threading.Lock()
        self._created = 0

    def get_session(self, session_id: str, create: bool = False) -> Session | None:
        if session_id:
            with self._lock:
                session = self._sessions.get(session_id)
            if session is not None:
                if session.is_valid:
                    session._touch()
                    return session
                self._forget(session_id)
        if not create:
            return None
        session = LocalSession(self, new_session_id(), self.max_inactive_interval)
        with self._lock:
            self._sessions[session.id] = session
            self._created += 1
            if self._created % 1000 == 0:
                self._prune()
        return session

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        # Called with the lock held, every 1000 creations: drop expired sessions.
        now = time.time()
        dead = [
            sid
            for sid, s in self._sessions.items()
            if not s._valid or now - s._accessed >= s.max_inactive_interval
        ]
        for sid in dead:
            del self._sessions[sid]
