"""Sessions stored in Redis, shared by every server process and host that uses it.

Install with ``pip install "simple_http_server[redis]"``.  Each session is one
Redis hash ``<prefix><id>``: two metadata fields (``m:created``,
``m:accessed``) and one field ``a:<name>`` per attribute; the hash's TTL is the
idle timeout and is refreshed on every access, so Redis itself expires idle
sessions.  Values are JSON by default; pickle only when asked for
(``serializer="pickle"``), because unpickling data from a shared store runs code.

The client is the synchronous ``redis`` client.  The dispatcher never calls it
on an event loop: session lookups for ``Session`` arguments and async
controllers run in the worker pool (asyncio transport), sync controllers run
there anyway, and writes made from ``async def`` code are kept in memory and
written by the dispatcher, off the loop, before the response is sent (those
made by a streamed body, after it was sent).
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from .config import finite_number
from .dispatch.invoke import in_event_loop
from .dispatch.sessions import DEFAULT_SESSION_TIMEOUT, StoredSession, new_session_id
from .models import Session, SessionFactory

__all__ = ["RedisSession", "RedisSessionFactory"]

#: Seconds a connection or a command may take before it fails (redis-py < 8 waits
#: forever by default: a Redis that stops answering would hold every worker).
#: ``?socket_timeout=`` / ``?socket_connect_timeout=`` in the URL win.
REDIS_TIMEOUT = 5.0

_CREATED = b"m:created"
_ACCESSED = b"m:accessed"
_ATTR = "a:"

# Refresh a live session: (KEYS[1]=key, ARGV[1]=now, ARGV[2]=ttl) -> hash or nil.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'm:accessed', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# Write to a live session only, so an expired or invalidated one never comes back:
# ARGV = now, ttl, n, field1, value1, ..., fieldn, valuen, deleted fields... -> 1 | 0.
_WRITE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'm:accessed', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _serializers(kind: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if kind == "json":
        # An undecodable byte of request text (a lone surrogate) is stored as that
        # byte and read back as the same text, as the in-memory store keeps it.
        return (
            lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogateescape"),
            lambda data: json.loads(data.decode("utf-8", "surrogateescape")),
        )
    if kind == "pickle":
        return (
            lambda value: pickle.dumps(value, pickle.HIGHEST_PROTOCOL),
            pickle.loads,
        )
    raise ValueError(f'serializer must be "json" or "pickle", not {kind!r}')


class RedisSession(StoredSession):
    """One session of a :class:`RedisSessionFactory`, for the current request.

    Reads come from the snapshot loaded when the session was looked up (plus
    this request's own writes). Writes go to Redis at once, or, when made on an
    event loop, at :meth:`flush`, which the dispatcher calls off the loop.
    """

    def __init__(
        self,
        factory: RedisSessionFactory,
        session_id: str,
        created: float,
        accessed: float,
        attributes: dict[str, Any],
        is_new: bool,
    ) -> None:
        super().__init__(session_id, created, accessed, is_new)
        self.max_inactive_interval = factory.max_inactive_interval
        self._factory = factory
        self._attributes = attributes
        self._pending_set: dict[str, bytes] = {}
        self._pending_del: set[str] = set()
        self._pending_invalidate = False
        self._lock = threading.Lock()

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
        """Store ``value`` (it must be serializable: JSON types by default)."""
        data = self._factory._dumps(value)  # fail here, in the caller, if it cannot
        with self._lock:
            self._attributes[name] = value
            self._pending_del.discard(name)
            self._pending_set[name] = data
        self._write_now_or_later()

    def remove_attribute(self, name: str) -> None:
        """Forget one attribute."""
        with self._lock:
            self._attributes.pop(name, None)
            self._pending_set.pop(name, None)
            self._pending_del.add(name)
        self._write_now_or_later()

    def invalidate(self) -> None:
        """End the session everywhere (its Redis hash is deleted)."""
        with self._lock:
            self._valid = False
            self._attributes.clear()
            self._pending_set.clear()
            self._pending_del.clear()
            self._pending_invalidate = True
        self._write_now_or_later()

    def _write_now_or_later(self) -> None:
        if not in_event_loop():
            self.flush()

    def flush(self) -> None:
        """Write pending changes to Redis (blocking; never call it on an event loop)."""
        with self._lock:
            invalidate = self._pending_invalidate
            sets, self._pending_set = self._pending_set, {}
            deletes, self._pending_del = self._pending_del, set()
            self._pending_invalidate = False
        if invalidate:
            self._factory._delete(self._id)
            return
        if not sets and not deletes:
            return
        now = time.time()
        if self._factory._write(self._id, now, sets, deletes):
            self._accessed = now
        else:  # expired or invalidated elsewhere meanwhile: never recreate it
            with self._lock:
                self._valid = False


class RedisSessionFactory(SessionFactory):
    """Sessions in Redis, shared by all processes and hosts that use the same Redis.

    Args:
        url: the Redis URL (``redis://[:password@]host:port/db``, ``rediss://`` for TLS,
            ``unix:///path/redis.sock``).
        prefix: prefix of the session keys (one Redis hash per session).
        max_inactive_interval: idle timeout in seconds; the TTL of each hash,
            refreshed on every access.
        serializer: ``"json"`` (default, safe) or ``"pickle"`` (any Python
            object; only for a Redis that nobody else can write to).
        client: an existing ``redis.Redis`` client to use instead of ``url``.
    """

    #: The client blocks on network I/O: the dispatcher calls it off the event loop.
    blocking_io = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "simple_http_server:session:",
        max_inactive_interval: int = DEFAULT_SESSION_TIMEOUT,
        serializer: str = "json",
        client: Any = None,
    ) -> None:
        # A Redis TTL is whole seconds: nan, inf and bools are refused (ValueError).
        if finite_number("max_inactive_interval", max_inactive_interval) < 1:
            raise ValueError("max_inactive_interval must be at least 1 second")
        self._dumps, self._loads = _serializers(serializer)
        if client is None:
            try:
                import redis
            except ImportError as err:  # pragma: no cover - depends on the install
                raise ImportError(
                    "RedisSessionFactory needs the redis client: "
                    'pip install "simple_http_server[redis]"'
                ) from err
            client = redis.Redis.from_url(
                url,
                decode_responses=False,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
        self.client: Any = client
        self.prefix = prefix
        self.max_inactive_interval = int(max_inactive_interval)
        self._touch_script = client.register_script(_TOUCH)
        self._write_script = client.register_script(_WRITE)

    def key(self, session_id: str) -> str:
        """The Redis key of a session."""
        return self.prefix + session_id

    def get_session(self, session_id: str, create: bool = False) -> Session | None:
        """The live session ``session_id`` (TTL refreshed); else a new one when ``create``."""
        if session_id and len(session_id) <= 256:
            now = time.time()
            flat = self._touch_script(
                keys=[self.key(session_id)], args=[repr(now), self.max_inactive_interval]
            )
            if flat:
                return self._load(session_id, flat, now)
        if not create:
            return None
        return self._create()

    def _create(self) -> RedisSession:
        session_id = new_session_id()
        now = time.time()
        stamp = repr(now).encode()
        key = self.key(session_id)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={_CREATED: stamp, _ACCESSED: stamp})
            pipe.expire(key, self.max_inactive_interval)
            pipe.execute()
        return RedisSession(self, session_id, now, now, {}, is_new=True)

    def _load(self, session_id: str, flat: list[bytes], now: float) -> RedisSession:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        attributes: dict[str, Any] = {}
        for field, data in fields.items():
            name = field.decode("utf-8", "surrogateescape")
            if name.startswith(_ATTR):
                try:
                    attributes[name[len(_ATTR) :]] = self._loads(data)
                except Exception:  # a value this serializer cannot read: leave it out
                    continue
        created = _as_float(fields.get(_CREATED), now)
        return RedisSession(self, session_id, created, now, attributes, is_new=False)

    def _write(
        self, session_id: str, now: float, sets: dict[str, bytes], deletes: set[str]
    ) -> bool:
        args: list[Any] = [repr(now), self.max_inactive_interval, len(sets)]
        for name, data in sets.items():
            args += [_field(name), data]
        args += [_field(name) for name in deletes]
        return bool(self._write_script(keys=[self.key(session_id)], args=args))

    def _delete(self, session_id: str) -> None:
        self.client.delete(self.key(session_id))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def _field(name: str) -> bytes:
    """The hash field of attribute ``name``: an undecodable byte of request text in
    the name (a lone surrogate) is stored as that byte, as in a value."""
    return (_ATTR + name).encode("utf-8", "surrogateescape")


def _as_float(data: bytes | None, default: float) -> float:
    try:
        return float(data) if data is not None else default
    except ValueError:
        return default
