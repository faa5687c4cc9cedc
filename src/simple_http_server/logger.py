"""Logging facade of ``simple_http_server``: logger factories over stdlib :mod:`logging`.

Keeps the 0.22.3 API (``get_logger``, ``get_logger_factory``, ``set_level``,
``add_handler``, ``remove_handler``, ``set_handler``, ``LoggerFactory``). Each factory
owns a non-propagating logger namespace (``simple_http_server`` for the default
factory, ``simple_http_server.factories.<tag>`` otherwise) carrying its level, and a
queue drained by a :class:`~logging.handlers.QueueListener` daemon thread that feeds
its handlers: logging never does I/O in the calling (request) thread.  The queue is
bounded (:data:`MAX_QUEUED`): past it, records are dropped and counted, and one warning
tells the handlers how many once they have caught up.
"""

from __future__ import annotations

import atexit
import copy
import itertools
import logging
import os
import queue
import re
import sys
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import ClassVar

__all__ = [
    "DEFAULT_DATE_FORMAT",
    "DEFAULT_FORMAT",
    "MAX_QUEUED",
    "LoggerFactory",
    "add_handler",
    "escape",
    "flush",
    "get_logger",
    "get_logger_factory",
    "remove_handler",
    "set_handler",
    "set_level",
]

DEFAULT_FORMAT = "[%(asctime)s]-[%(threadName)s]-[%(name)s:%(lineno)d] %(levelname)-4s: %(message)s"
DEFAULT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
ROOT_NAMESPACE = "simple_http_server"
#: Records a factory's queue holds for its handlers at most (a handler stuck on a full
#: disk or a pipe nobody reads): past it, records are dropped, not queued.
MAX_QUEUED = 10_000

_LEVELS: dict[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}
_anonymous_ids = itertools.count(1)


def escape(text: str) -> str:
    """``text`` fit for a log line: every character that is not printable (CR, LF,
    ESC and the other control characters, Unicode separators and format characters),
    ``"`` and ``\\`` become ``\\xHH`` (``\\uHHHH`` past Latin-1), as nginx and Apache
    escape what a client sent (CWE-117); a byte that percent-decoding could not
    make UTF-8 (a lone surrogate) shows as the byte.  Plain text is returned as is."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != '"' and c != "\\" else _escaped(c) for c in text)


#: A lone surrogate: what a handler writing strict UTF-8 (a file, most terminals) cannot
#: write; an exception message holding an undecodable byte of request text has one.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _writable(text: str) -> str:
    """``text`` with each lone surrogate escaped as :func:`escape` does it."""
    return _SURROGATE.sub(lambda m: _escaped(m[0]), text) if _SURROGATE.search(text) else text


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte itself
        code -= 0xDC00
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _to_level(level: str | int) -> int:
    """Map a level name (case-insensitive) or number to a level; unknown -> INFO."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        return _LEVELS.get(level.strip().upper(), logging.INFO)
    return logging.INFO


def _level_name(level: str | int) -> str | None:
    """The known level name ``level`` spells (``"warn"`` -> ``"WARN"``), else None."""
    if isinstance(level, str) and level.strip().upper() in _LEVELS:
        return level.strip().upper()
    return None


def _positive(max_queued: int) -> int:
    """A queue bound: a positive whole number (0 would make the queue unbounded)."""
    if isinstance(max_queued, bool) or not isinstance(max_queued, int) or max_queued < 1:
        raise ValueError(f"max_queued must be a positive int, not {max_queued!r}")
    return max_queued


def _namespace(tag: str | None) -> str:
    """Logger namespace of a factory; dots/percents in the tag are escaped."""
    if tag is None:
        return f"{ROOT_NAMESPACE}.factories.%anonymous-{next(_anonymous_ids)}"
    if not tag:
        return ROOT_NAMESPACE
    return f"{ROOT_NAMESPACE}.factories.{tag.replace('%', '%25').replace('.', '%2E')}"


class _StdoutHandler(logging.Handler):
    """Write records to the *current* ``sys.stdout`` (follows redirections)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


class _FactoryQueueHandler(QueueHandler):
    """Queue records of a factory namespace for its listener thread."""

    def __init__(self, factory: LoggerFactory) -> None:
        super().__init__(factory._queue)
        self._factory = factory

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Merge args into msg and cache exc_text, keeping all other fields; a lone
        surrogate in them (say, a path value in an exception's message) is escaped,
        so that every handler can write the record."""
        record = copy.copy(record)
        record.msg = _writable(record.getMessage())
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = _writable(record.exc_text)
        if record.stack_info:
            record.stack_info = _writable(record.stack_info)
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        self._factory._enqueue(record)


class _Listener(QueueListener):
    """The factory's listener thread; it reports the records dropped meanwhile once
    the queue is half empty again."""

    def __init__(self, factory: LoggerFactory, handlers: list[logging.Handler]) -> None:
        super().__init__(factory._queue, *handlers, respect_handler_level=True)
        self._factory = factory

    def enqueue_sentinel(self) -> None:
        # The stdlib's put_nowait fails on a full (bounded) queue: wait for room.
        self._factory._queue.put(self._sentinel)  # type: ignore[attr-defined]

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        factory = self._factory
        if factory._dropped and factory._queue.qsize() <= factory.max_queued // 2:
            report = factory._drops_report()
            if report is not None:
                super().handle(report)


class LoggerFactory:
    """A set of handlers and a level shared by the loggers it creates.

    Prefer :func:`get_logger_factory`, which returns one factory per tag; a
    factory created with an already used tag replaces the registered one.

    Args:
        log_level: Level name (DEBUG, INFO, WARN/WARNING, ERROR, CRITICAL) or number.
        log_format: Format of the default stdout handler.
        date_format: Date format of the default stdout handler.
        tag: Factory tag; ``""`` is the framework's own namespace, None a fresh one.
        max_queued: Records queued for the handlers at most (see :attr:`max_queued`).
    """

    DEFAULT_LOG_FORMAT: ClassVar[str] = DEFAULT_FORMAT
    DEFAULT_DATE_FORMAT: ClassVar[str] = DEFAULT_DATE_FORMAT

    def __init__(
        self,
        log_level: str | int = "INFO",
        log_format: str = DEFAULT_FORMAT,
        date_format: str = DEFAULT_DATE_FORMAT,
        *,
        tag: str | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.log_format = log_format
        self.date_format = date_format
        self._lock = threading.RLock()  # re-entrant: handlers may log while dispatching
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(_positive(max_queued))
        self._listener: QueueListener | None = None
        # Records the full queue refused since the last report.  Their own lock, never
        # held while waiting: set_handler() holds _lock while the old listener drains.
        self._drops_lock = threading.Lock()
        self._dropped = 0
        self._dropped_level = logging.NOTSET
        self._closed = False
        default = _StdoutHandler()
        default.setFormatter(logging.Formatter(log_format, date_format))
        self._handlers: list[logging.Handler] = [default]
        self._namespace = _namespace(tag)
        self._logger = logging.getLogger(self._namespace)
        self._logger.propagate = False
        self._logger.setLevel(_to_level(log_level))
        self._level_name = _level_name(log_level)
        for old in [h for h in self._logger.handlers if isinstance(h, _FactoryQueueHandler)]:
            self._logger.removeHandler(old)
        self._logger.addHandler(_FactoryQueueHandler(self))
        with _registry_lock:
            _all_factories.append(self)
            if tag is not None:  # the newest factory of a tag owns its namespace
                _factories[tag] = self

    @property
    def handlers(self) -> list[logging.Handler]:
        """A copy of the handlers the records are dispatched to."""
        return list(self._handlers)

    @property
    def log_level(self) -> str:
        """Level name of the factory, as it was set (``"WARN"`` stays ``"WARN"``, as in
        0.22.x); setting it applies to all its loggers at once."""
        level, name = self._logger.level, self._level_name
        if name is not None and _LEVELS[name] == level:  # not changed through logging since
            return name
        return logging.getLevelName(level)

    @log_level.setter
    def log_level(self, log_level: str | int) -> None:
        self._logger.setLevel(_to_level(log_level))
        self._level_name = _level_name(log_level)

    @property
    def max_queued(self) -> int:
        """Records waiting for the handlers at most: a handler that falls behind (a full
        disk, a pipe nobody reads) never makes the queue grow past it.  Records logged
        while it is full are dropped, and counted: once the queue is half empty again,
        one warning tells the handlers how many."""
        return self._queue.maxsize

    @max_queued.setter
    def max_queued(self, value: int) -> None:
        value = _positive(value)
        q = self._queue
        with q.mutex:
            q.maxsize = value
            q.not_full.notify_all()

    def add_handler(self, handler: logging.Handler) -> None:
        """Add a handler (no-op if already present)."""
        if handler not in self._handlers:
            self._set_handlers([*self._handlers, handler])

    def remove_handler(self, handler: logging.Handler) -> None:
        """Remove a handler (no-op if absent)."""
        self._set_handlers([h for h in self._handlers if h is not handler])

    def set_handler(self, handler: logging.Handler) -> None:
        """Replace all handlers (including the default one) by ``handler``."""
        self._set_handlers([handler])

    def get_logger(self, tag: str = "") -> logging.Logger:
        """Return the logger ``tag`` of this factory (its parent logger if empty)."""
        if not tag or tag == self._namespace:
            return self._logger
        if tag.startswith(self._namespace + "."):
            return logging.getLogger(tag)
        return logging.getLogger(f"{self._namespace}.{tag}")

    def flush(self) -> None:
        """Wait until every queued record was handed to the handlers, flush them."""
        with self._lock:
            listener = self._listener
            if self._closed:
                self._drain()
        if listener is not None and listener._thread is not threading.current_thread():
            self._queue.join()
        for handler in self.handlers:
            try:
                handler.flush()
            except (OSError, ValueError):  # closed stream: as logging.shutdown() does
                pass

    def _set_handlers(self, handlers: list[logging.Handler]) -> None:
        with self._lock:
            self._handlers = handlers
            old = self._listener
            if old is not None:  # restart now; records queued so far go to old handlers
                new = _Listener(self, handlers)
                old.stop()
                new.start()
                self._listener = new

    def _enqueue(self, record: logging.LogRecord) -> None:
        if self._listener is None:
            with self._lock:
                if self._closed:
                    self._dispatch(record)
                    return
                if self._listener is None:
                    self._listener = _Listener(self, self._handlers)
                    self._listener.start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:  # the handlers fell behind: never wait for them, never grow
            with self._drops_lock:
                self._dropped += 1
                self._dropped_level = max(self._dropped_level, record.levelno)

    def _drops_report(self) -> logging.LogRecord | None:
        """The warning about the records dropped since the last one (None: none)."""
        with self._drops_lock:
            dropped, level = self._dropped, self._dropped_level
            self._dropped, self._dropped_level = 0, logging.NOTSET
        if not dropped:
            return None
        return logging.LogRecord(
            self._namespace,
            max(logging.WARNING, level),  # as visible as the most severe record lost
            __file__,
            0,
            "%d log records were dropped: the log handlers did not keep up"
            " (more than %d records waiting)",
            (dropped, self._queue.maxsize),
            None,
        )

    def _dispatch(self, record: logging.LogRecord) -> None:
        for handler in self._handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def _drain(self) -> None:
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            self._dispatch(record)
            self._queue.task_done()
        report = self._drops_report()
        if report is not None:
            self._dispatch(report)

    def _close(self) -> None:
        """Stop the listener; later records are handled synchronously."""
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()  # without the lock: handlers may log re-entrantly
        with self._lock:
            self._drain()


_registry_lock = threading.RLock()
_all_factories: list[LoggerFactory] = []
_factories: dict[str, LoggerFactory] = {}


def get_logger_factory(tag: str = "") -> LoggerFactory:
    """Return the factory registered under ``tag``, creating it on first use."""
    with _registry_lock:
        return _factories.get(tag) or LoggerFactory(tag=tag)


def get_logger(tag: str = ROOT_NAMESPACE, factory: str = "") -> logging.Logger:
    """Return logger ``tag`` of factory ``factory`` (default: the framework's logger)."""
    return get_logger_factory(factory).get_logger(tag)


def set_level(level: str | int) -> None:
    """Set the level of the default factory."""
    get_logger_factory().log_level = level


def add_handler(handler: logging.Handler) -> None:
    """Add a handler to the default factory."""
    get_logger_factory().add_handler(handler)


def remove_handler(handler: logging.Handler) -> None:
    """Remove a handler from the default factory."""
    get_logger_factory().remove_handler(handler)


def set_handler(handler: logging.Handler) -> None:
    """Replace the handlers of the default factory by ``handler``."""
    get_logger_factory().set_handler(handler)


def flush() -> None:
    """Wait until the queued records of all factories were handed to handlers."""
    with _registry_lock:
        factories = list(_all_factories)
    for factory in factories:
        factory.flush()


@atexit.register
def _shutdown() -> None:
    with _registry_lock:
        factories = list(_all_factories)
    for factory in factories:
        factory._close()


def _after_fork_in_child() -> None:
    """A forked child (``server.start(workers=N)``) has no listener threads: start afresh."""
    global _registry_lock
    _registry_lock = threading.RLock()
    for factory in _all_factories:
        factory._lock = threading.RLock()
        # Records queued before the fork stay the parent's.
        factory._queue = queue.Queue(factory._queue.maxsize)
        factory._drops_lock = threading.Lock()
        factory._dropped, factory._dropped_level = 0, logging.NOTSET
        factory._listener = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
