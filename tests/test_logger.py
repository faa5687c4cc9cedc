"""Tests of simple_http_server.logger: levels, isolation, off-thread emission, README usage."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from simple_http_server import logger

SIMPLE_FORMAT = "%(levelname)s|%(name)s|%(message)s"


def _capture(
    fmt: str = SIMPLE_FORMAT, level: int = logging.NOTSET
) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.setLevel(level)
    return handler, stream


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.fixture
def factory() -> Iterator[logger.LoggerFactory]:
    """A fresh, uniquely tagged factory whose only handler is replaced by the tests."""
    fac = logger.get_logger_factory(f"test-{uuid.uuid4().hex}")
    yield fac
    logger.flush()


@pytest.fixture
def default_factory() -> Iterator[logger.LoggerFactory]:
    """The default factory, with its handlers and level restored afterwards."""
    fac = logger.get_logger_factory()
    saved_handlers, saved_level = fac.handlers, fac.log_level
    try:
        yield fac
    finally:
        fac.set_handler(saved_handlers[0])  # drains records queued for the test's handlers
        for handler in saved_handlers[1:]:
            fac.add_handler(handler)
        fac.log_level = saved_level


@pytest.mark.parametrize(
    ("level", "expected", "name"),
    [
        ("DEBUG", logging.DEBUG, "DEBUG"),
        ("debug", logging.DEBUG, "DEBUG"),
        ("Info", logging.INFO, "INFO"),
        ("WARN", logging.WARNING, "WARN"),  # read back as set, as 0.22.x did (not "WARNING")
        (" warn ", logging.WARNING, "WARN"),
        ("warning", logging.WARNING, "WARNING"),
        ("fatal", logging.CRITICAL, "FATAL"),
        (logging.WARNING, logging.WARNING, "WARNING"),
        ("error", logging.ERROR, "ERROR"),
        ("CRITICAL", logging.CRITICAL, "CRITICAL"),
        (logging.ERROR, logging.ERROR, "ERROR"),
        (logging.DEBUG, logging.DEBUG, "DEBUG"),
        ("verbose", logging.INFO, "INFO"),
        ("", logging.INFO, "INFO"),
    ],
)
def test_level_values_map(
    factory: logger.LoggerFactory, level: str | int, expected: int, name: str
) -> None:
    factory.log_level = "CRITICAL" if expected != logging.CRITICAL else "DEBUG"
    factory.log_level = level
    assert factory.log_level == name
    child = factory.get_logger("svc")
    assert child.getEffectiveLevel() == expected
    assert _constructed_level(level) == expected


def test_level_read_back_follows_a_change_made_through_logging(
    factory: logger.LoggerFactory,
) -> None:
    factory.log_level = "WARN"
    assert logger.LoggerFactory(log_level="warn").log_level == "WARN"
    factory.get_logger().setLevel(logging.ERROR)  # the factory's logger, set through logging
    assert factory.log_level == "ERROR"


def _constructed_level(level: str | int) -> int:
    """Level of a factory constructed with ``level`` (constructor path)."""
    return logger.LoggerFactory(log_level=level).get_logger("x").getEffectiveLevel()


def test_constructor_defaults() -> None:
    fac = logger.LoggerFactory()
    assert fac.log_level == "INFO"
    assert fac.log_format == logger.DEFAULT_FORMAT
    assert fac.date_format == logger.DEFAULT_DATE_FORMAT
    assert len(fac.handlers) == 1
    assert logger.DEFAULT_FORMAT == (
        "[%(asctime)s]-[%(threadName)s]-[%(name)s:%(lineno)d] %(levelname)-4s: %(message)s"
    )


def test_set_level_after_use_takes_effect(factory: logger.LoggerFactory) -> None:
    """Regression: the original cached isEnabledFor, so later level changes were ignored."""
    handler, stream = _capture()
    factory.set_handler(handler)
    log = factory.get_logger("svc")
    log.debug("hidden-1")
    log.info("shown-1")
    assert not log.isEnabledFor(logging.DEBUG)
    factory.log_level = "DEBUG"
    log.debug("shown-2")
    factory.log_level = "ERROR"
    log.info("hidden-2")
    log.error("shown-3")
    logger.flush()
    assert [line.split("|")[2] for line in _lines(stream)] == ["shown-1", "shown-2", "shown-3"]


def test_module_set_level_after_use_takes_effect(default_factory: logger.LoggerFactory) -> None:
    handler, stream = _capture()
    logger.set_handler(handler)
    logger.set_level("INFO")
    log = logger.get_logger()
    log.debug("hidden")
    logger.set_level("debug")
    log.debug("shown")
    logger.set_level("nonsense")  # unknown -> INFO
    log.debug("hidden-again")
    logger.flush()
    assert _lines(stream) == ["DEBUG|simple_http_server|shown"]
    assert default_factory.log_level == "INFO"


def test_readme_usage(
    capsys: pytest.CaptureFixture[str], default_factory: logger.LoggerFactory
) -> None:
    import simple_http_server.logger as logger_mod

    _handler = logging.StreamHandler()  # binds to the captured sys.stderr
    _handler.setFormatter(
        logging.Formatter(fmt="[%(asctime)s]-[%(name)s]-%(levelname)-4s: %(message)s")
    )
    logger_mod.set_handler(_handler)
    logger_mod.add_handler(_handler)
    logger_mod.set_level("DEBUG")
    log_fac = logger_mod.get_logger_factory("my_log_fac")
    log_fac.log_level = "DEBUG"
    log = log_fac.get_logger("my_service")
    log.info("service info")
    log.debug("service debug")
    logger_mod.get_logger().debug("framework debug")
    logger_mod.flush()

    captured = capsys.readouterr()
    # The framework logger uses the README handler, exactly once (no duplicate handler).
    err = captured.err.splitlines()
    assert len(err) == 1
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d [\d:,]+\]-\[simple_http_server\]-DEBUG: framework debug", err[0]
    )
    # The "my_log_fac" factory keeps its own default stdout handler and format.
    out = captured.out.splitlines()
    assert len(out) == 2
    thread = re.escape(threading.current_thread().name)
    pattern = (
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]-\[" + thread + r"\]-"
        r"\[simple_http_server\.factories\.my_log_fac\.my_service:\d+\] (INFO|DEBUG): service "
    )
    assert re.match(pattern + "info", out[0])
    assert re.match(pattern + "debug", out[1])
    assert logger_mod.get_logger_factory("my_log_fac") is log_fac


def test_default_handler_writes_stdout_in_default_format(
    factory: logger.LoggerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    log = factory.get_logger("svc")
    line = sys._getframe().f_lineno + 1
    log.warning("hello %s", "world")
    logger.flush()
    out = capsys.readouterr().out
    expected = (
        rf"\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\]-\[{re.escape(threading.current_thread().name)}\]-"
        rf"\[{re.escape(log.name)}:{line}\] WARNING: hello world\n"
    )
    assert re.fullmatch(expected, out), out


def test_factories_are_isolated(
    factory: logger.LoggerFactory, default_factory: logger.LoggerFactory
) -> None:
    other = logger.get_logger_factory(f"other-{uuid.uuid4().hex}")
    nested = logger.get_logger_factory(f"{other.get_logger().name.rsplit('.', 1)[1]}.sub")
    h1, s1 = _capture()
    h2, s2 = _capture()
    h3, s3 = _capture()
    hd, sd = _capture()
    factory.set_handler(h1)
    other.set_handler(h2)
    nested.set_handler(h3)
    logger.set_handler(hd)
    factory.get_logger("a").info("one")
    other.get_logger("a").info("two")
    other.get_logger("sub").info("three")  # a child of "other", not the "<other>.sub" factory
    nested.get_logger("a").info("four")
    logger.get_logger("simple_http_server.x").info("five")
    logger.flush()
    assert [line.split("|")[2] for line in _lines(s1)] == ["one"]
    assert [line.split("|")[2] for line in _lines(s2)] == ["two", "three"]
    assert [line.split("|")[2] for line in _lines(s3)] == ["four"]
    assert [line.split("|")[2] for line in _lines(sd)] == ["five"]
    assert factory.get_logger("a").name.endswith(".a")
    assert factory.get_logger("a") is not other.get_logger("a")


def test_get_logger_names() -> None:
    assert logger.get_logger().name == "simple_http_server"
    assert logger.get_logger("simple_http_server.routing").name == "simple_http_server.routing"
    assert logger.get_logger("routing").name == "simple_http_server.routing"
    log = logger.get_logger("svc", factory="named_fac")
    assert log is logger.get_logger_factory("named_fac").get_logger("svc")
    assert log.name == "simple_http_server.factories.named_fac.svc"  # as README says
    assert isinstance(log, logging.Logger)
    assert logging.getLogger(log.name) is log  # registered with logging's manager


def test_emit_runs_on_listener_thread(factory: logger.LoggerFactory) -> None:
    seen: list[tuple[threading.Thread, str]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((threading.current_thread(), record.threadName or ""))

    factory.set_handler(Recorder())
    factory.get_logger("svc").info("hi")
    logger.flush()
    assert len(seen) == 1
    emit_thread, record_thread_name = seen[0]
    assert emit_thread is not threading.current_thread()
    assert emit_thread.daemon
    assert record_thread_name == threading.current_thread().name


def test_logging_does_not_wait_for_slow_handler(factory: logger.LoggerFactory) -> None:
    release = threading.Event()
    done: list[str] = []

    class Blocking(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(10)
            done.append(record.getMessage())

    factory.set_handler(Blocking())
    log = factory.get_logger("svc")
    start = time.monotonic()
    for i in range(3):
        log.info("msg %d", i)
    assert time.monotonic() - start < 1
    assert done == []
    release.set()
    logger.flush()
    assert done == ["msg 0", "msg 1", "msg 2"]


def test_user_formatter_fields_are_kept(factory: logger.LoggerFactory) -> None:
    handler, stream = _capture(
        "%(asctime)s|%(name)s|%(funcName)s:%(lineno)d|%(levelname)s|%(message)s", logging.DEBUG
    )
    handler.formatter.default_msec_format = None  # type: ignore[union-attr]
    factory.set_handler(handler)
    log = factory.get_logger("svc")
    payload = [1]
    line = sys._getframe().f_lineno + 1
    log.info("value=%s", payload)
    payload.append(2)  # args are merged at log time, not when the listener formats
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %d", 42)
    logger.flush()
    text = stream.getvalue()
    first, rest = text.split("\n", 1)
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d [\d:]+\|{re.escape(log.name)}\|"
        rf"test_user_formatter_fields_are_kept:{line}\|INFO\|value=\[1\]",
        first,
    )
    assert "|ERROR|failed 42\nTraceback (most recent call last):" in rest
    assert "ValueError: boom" in rest


def test_handler_level_is_respected(factory: logger.LoggerFactory) -> None:
    low, low_stream = _capture()
    high, high_stream = _capture(level=logging.WARNING)
    factory.set_handler(low)
    factory.add_handler(high)
    log = factory.get_logger("svc")
    log.info("info")
    log.warning("warn")
    logger.flush()
    assert len(_lines(low_stream)) == 2
    assert _lines(high_stream) == [f"WARNING|{log.name}|warn"]


def test_handler_changes_restart_listener(factory: logger.LoggerFactory) -> None:
    h1, s1 = _capture()
    h2, s2 = _capture()
    h3, s3 = _capture()
    log = factory.get_logger("svc")
    factory.set_handler(h1)
    log.info("a")  # queued before the change: must reach the old handler set only
    factory.add_handler(h2)
    factory.add_handler(h2)  # duplicates are ignored
    assert factory.handlers == [h1, h2]
    log.info("b")
    factory.remove_handler(h1)
    factory.remove_handler(h1)  # absent: no-op
    log.info("c")
    factory.set_handler(h3)
    log.info("d")
    logger.flush()
    assert [line[-1] for line in _lines(s1)] == ["a", "b"]
    assert [line[-1] for line in _lines(s2)] == ["b", "c"]
    assert [line[-1] for line in _lines(s3)] == ["d"]
    factory.remove_handler(h3)
    assert factory.handlers == []
    log.info("e")  # dropped, but must not fail or hang
    logger.flush()


def test_concurrent_logging_while_swapping_handlers(factory: logger.LoggerFactory) -> None:
    h1, s1 = _capture()
    h2, s2 = _capture()
    factory.set_handler(h1)
    log = factory.get_logger("svc")
    threads_n, per_thread = 4, 300

    def work(n: int) -> None:
        for i in range(per_thread):
            log.info("t%d-%d", n, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for i in range(30):
        factory.set_handler(h2 if i % 2 else h1)
    for t in threads:
        t.join()
    logger.flush()
    lines = _lines(s1) + _lines(s2)
    assert len(lines) == threads_n * per_thread
    assert len(set(lines)) == len(lines)


def test_after_close_records_are_handled_synchronously() -> None:
    fac = logger.LoggerFactory(log_level="DEBUG")
    handler, stream = _capture()
    fac.set_handler(handler)
    log = fac.get_logger("svc")
    log.info("queued")
    fac._close()  # what the atexit hook does
    assert _lines(stream) == [f"INFO|{log.name}|queued"]
    log.debug("late")  # no listener anymore: handled in the caller, nothing lost
    assert _lines(stream)[-1] == f"DEBUG|{log.name}|late"
    logger.flush()


class _Gated(logging.Handler):
    """Stuck in its first ``emit`` until released; keeps what it handled."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.seen.append((record.levelno, record.getMessage()))


def _stuck_factory(max_queued: int) -> tuple[logger.LoggerFactory, _Gated, logging.Logger]:
    factory = logger.LoggerFactory(tag=f"test-{uuid.uuid4().hex}", max_queued=max_queued)
    handler = _Gated()
    factory.set_handler(handler)
    log = factory.get_logger("svc")
    log.info("first")
    assert handler.entered.wait(5)  # the listener is stuck on it
    return factory, handler, log


def test_a_stuck_handler_holds_at_most_max_queued_records() -> None:
    factory, handler, log = _stuck_factory(max_queued=5)
    started = time.monotonic()
    for i in range(50):
        log.info("r%d", i)
    assert time.monotonic() - started < 1  # never waits for the handler
    assert factory._queue.qsize() == 5
    handler.gate.set()
    logger.flush()
    report = (
        "45 log records were dropped: the log handlers did not keep up"
        " (more than 5 records waiting)"
    )
    # Reported once the queue is half empty again, between the records kept.
    assert handler.seen == [
        (logging.INFO, "first"),
        *[(logging.INFO, f"r{i}") for i in range(3)],
        (logging.WARNING, report),
        (logging.INFO, "r3"),
        (logging.INFO, "r4"),
    ]


def test_the_drops_report_is_as_severe_as_the_worst_record_dropped() -> None:
    _, handler, log = _stuck_factory(max_queued=1)
    log.info("kept")
    log.error("lost")
    log.info("lost too")
    handler.gate.set()
    logger.flush()
    assert handler.seen[-1][0] == logging.ERROR and handler.seen[-1][1].startswith("2 log records")
    log.info("later")  # nothing dropped since: no report
    logger.flush()
    assert handler.seen[-1] == (logging.INFO, "later")


def test_handlers_change_and_close_with_a_full_queue() -> None:
    """The listener's stop marker waits for room (the stdlib's raised queue.Full), and
    records dropped before a close are reported by it."""
    factory, handler, log = _stuck_factory(max_queued=2)
    for i in range(5):
        log.info("r%d", i)
    other, stream = _capture()
    releaser = threading.Timer(0.3, handler.gate.set)
    releaser.start()
    factory.set_handler(other)  # waits for the stuck handler: the queue stays in order
    releaser.join()
    log.info("after")
    factory._close()
    report = (
        "3 log records were dropped: the log handlers did not keep up (more than 2 records waiting)"
    )
    assert [m for _, m in handler.seen] == ["first", "r0", report, "r1"]
    assert _lines(stream) == [f"INFO|{log.name}|after"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_max_queued_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_queued"):
        logger.LoggerFactory(max_queued=bad)  # type: ignore[arg-type]
    factory = logger.LoggerFactory()
    with pytest.raises(ValueError, match="max_queued"):
        factory.max_queued = bad  # type: ignore[assignment]
    assert factory.max_queued == logger.MAX_QUEUED
    factory._close()
