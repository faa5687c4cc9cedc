"""The server facade: ``scan``, ``start``, ``start_async``, ``stop``, ``is_ready``.

Module functions keep the original API and drive one process-wide
:class:`Server`; build :class:`Server` objects directly to run several.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import signal
import socket
import ssl as _ssl
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import logger as _logging
from .app import App, default_app
from .config import ConfigOptions, ServerConfig
from .dispatch.dispatcher import Dispatcher
from .dispatch.invoke import SyncPool
from .dispatch.sessions import configure_sessions, global_session_factory, set_session_factory
from .models import SessionFactory
from .transport.common import SERVING, open_listener, stop_wait_bound

if TYPE_CHECKING:  # imported when first used (see __getattr__)
    from typing_extensions import Unpack

    from .adapters.asgi import ASGIProxy as ASGIProxy
    from .adapters.wsgi import WSGIProxy as WSGIProxy

__all__ = [
    "Server",
    "global_session_factory",
    "init_asgi_proxy",
    "init_wsgi_proxy",
    "is_ready",
    "scan",
    "set_session_factory",
    "start",
    "start_async",
    "stop",
]

_log = _logging.get_logger("simple_http_server.server")


# -- scan --------------------------------------------------------------------
def scan(base_dir: str = "", regx: str = r"", project_dir: str = "") -> None:
    """Import every module under ``project_dir/base_dir`` whose path matches ``regx``.

    A module that fails to import (``SystemExit`` included) is logged with its
    error; the others still load.  The ``__main__`` script itself is skipped.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not project_dir:
        project_dir = os.path.dirname(os.path.abspath(main_file)) if main_file else os.getcwd()
    main_path = os.path.realpath(main_file) if main_file else None
    project_dir = os.path.abspath(project_dir)
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    root = os.path.join(project_dir, base_dir)
    pattern = re.compile(regx) if regx else None
    if not os.path.isdir(root):  # one module, as 0.22.x took it: "pkg/mod.py" or "pkg/mod"
        path = root if root.endswith(".py") else root + ".py"
        if os.path.isfile(path):
            _import_file(project_dir, path, pattern, main_path)
        else:
            _log.warning("scan(): no folder or module %r in %s", base_dir, project_dir)
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("__"):
                _import_file(project_dir, os.path.join(folder, name), pattern, main_path)


def _import_file(
    project_dir: str, path: str, pattern: re.Pattern[str] | None, main_path: str | None
) -> None:
    """Import the module at ``path`` (a ``.py`` file under ``project_dir``) when its
    relative path, that path without ``.py`` or its dotted name matches ``pattern``."""
    rel = os.path.relpath(path, project_dir)
    rel_noext = rel[:-3]
    module = rel_noext.replace(os.sep, ".")
    if pattern and not (pattern.match(rel) or pattern.match(rel_noext) or pattern.match(module)):
        return
    if main_path is not None and os.path.realpath(path) == main_path:
        return  # the running script: importing it again would run its body twice
    try:
        importlib.import_module(module)
        _log.info("Imported %s", module)
    except (Exception, SystemExit):  # argparse at module level exits; ^C still stops us
        _log.exception("Cannot import %s", module)


# -- TLS ---------------------------------------------------------------------
#: A private key's password: the text, or a function returning it.
Password = str | bytes | Callable[[], str | bytes]


def make_ssl_context(
    keyfile: str = "",
    certfile: str = "",
    keypass: Password = "",
    ssl_protocol: int = _ssl.PROTOCOL_TLS_SERVER,
    ssl_check_hostname: bool = False,
) -> _ssl.SSLContext:
    """A server TLS context from key and certificate files.

    ``keypass`` is the key's password, or a function returning it (as
    ``SSLContext.load_cert_chain`` takes it), called only for an encrypted key.

    Raises ``OSError`` naming a file that cannot be read, and ``ssl.SSLError``
    saying which file is wrong: an encrypted key without ``keypass`` (never a
    prompt on the terminal), a wrong ``keypass``, a key that is not the
    certificate's, a file that is not PEM.
    """
    if not certfile:
        raise ValueError("ssl=True needs certfile (and keyfile) or ssl_context")
    for path in (certfile, keyfile):
        if path:
            with open(path, "rb"):  # FileNotFoundError & co. name the file
                pass
    key = keyfile or certfile
    asked: list[bool] = []

    def password() -> str | bytes:
        # Without a callable, OpenSSL asks for the password on the terminal.
        asked.append(True)
        if not keypass:
            raise _tls_error(f"the TLS key {key!r} is encrypted: give its password (keypass)")
        return keypass() if callable(keypass) else keypass

    context = _ssl.SSLContext(ssl_protocol)
    context.check_hostname = ssl_check_hostname
    try:
        context.load_cert_chain(certfile, keyfile or None, password)
    except _ssl.SSLError as exc:
        if asked and not keypass:
            raise
        what = (
            f"cannot decrypt the TLS key {key!r} (wrong keypass?)"
            if asked
            else f"cannot load the TLS certificate {certfile!r} with the key {key!r}"
        )
        raise _tls_error(f"{what}: {exc}") from exc
    return context


def _tls_error(message: str) -> _ssl.SSLError:
    """An ``SSLError`` whose ``str()`` is ``message`` (a lone argument would show as a tuple)."""
    return _ssl.SSLError(0, message)


class Server:
    """One server: an app, a config, static resources and a transport.

    Args:
        app: the app to serve (the default app when None).
        config: settings (defaults when None).
        resources: static mounts ``{pattern: folder}``.
        prefer_coroutine: asyncio transport when True, threaded otherwise.
    """

    def __init__(
        self,
        app: App | None = None,
        config: ServerConfig | None = None,
        resources: Mapping[str, str] | None = None,
        prefer_coroutine: bool = False,
    ) -> None:
        self.app = app if app is not None else default_app()
        self.config = config or ServerConfig()
        self.dispatcher = Dispatcher(self.app, self.config, resources)
        self.prefer_coroutine = prefer_coroutine
        self._transport: Any = None
        self._ready = threading.Event()
        self._stopped = threading.Event()  # set while no run is under way
        self._stopped.set()
        # Reentrant: a signal handler (stop) may run while the main thread holds it.
        self._lock = threading.RLock()
        self._running = False  # a start() is under way (until it returns)
        self._stopping = False  # the run under way was asked to stop
        self._stop_pending = False  # stop() came while not running: the next start() returns
        self._runs = 0  # runs ended
        self._run_ended: asyncio.Event | None = None  # the current start_async()'s
        self.port = self.config.port
        #: A listening socket to serve on instead of binding one (set by the supervisor).
        self.sock: Any = None
        #: In a worker of ``workers=N``: asks the supervisor to stop every worker.
        self._stop_supervisor: Callable[[], None] | None = None

    def is_ready(self) -> bool:
        """True once the server accepts connections (False again from stop() on)."""
        return self._ready.is_set()

    # -- the run's state (also used by the supervisor of workers) ------------------
    def _begin(self) -> bool:
        """Claim a run; False when a stop() came first (start() then returns at once)."""
        with self._lock:
            if self._running:
                raise RuntimeError("this Server is running already; stop() it first")
            if self._stop_pending:
                self._stop_pending = False
                _log.info("stop() came before start(): not serving")
                return False
            self._running = True
            self._stopping = False
            self._stopped.clear()
            return True

    def _attach(self, transport: Any) -> None:
        """The run's transport, stopped at once when stop() came before it."""
        with self._lock:
            self._transport = transport
            stopping = self._stopping
        if stopping:
            transport.stop(False)

    def _end(self) -> None:
        with self._lock:
            self._running = self._stopping = False
            self._transport = None
            self._runs += 1
            self._ready.clear()
            self._stopped.set()

    def _set_ready(self) -> bool:
        """Ready, unless stop() came meanwhile (then False)."""
        with self._lock:
            if self._stopping:
                return False
            self._ready.set()
            return True

    def _finished(self) -> bool:
        """True when a run ended and none is under way."""
        with self._lock:
            return not self._running and self._runs > 0

    def _forked(self) -> None:
        """In a worker process: the supervisor's run is not this process' own."""
        self._lock = threading.RLock()  # another thread may have held it at the fork
        self._running = self._stopping = self._stop_pending = False
        self._transport = None
        self._ready.clear()
        self._stopped.set()

    def _listener(self) -> Any:
        if self.sock is not None:
            return self.sock
        host = self.config.host or "0.0.0.0"
        sock = open_listener(host, self.config.port)
        self.port = sock.getsockname()[1]
        return sock

    def _upgrade_handler(self) -> Any:
        try:
            from .transport.ws_glue import WebsocketUpgrade
        except ImportError:
            return None
        return WebsocketUpgrade(self.dispatcher)

    def start(self) -> None:
        """Serve until :meth:`stop` (blocking).

        A stop() that came before the first start() makes it return at once; a
        Server runs once at a time (a second start() meanwhile: RuntimeError).
        """
        if self.prefer_coroutine:
            _no_running_loop()
            asyncio.run(self.start_async())
            return
        if not self._begin():
            return
        listener: Any = None
        try:
            from .transport.threaded import ThreadedServer

            self.app.compiled()
            listener = self._listener()
            transport = ThreadedServer(
                self.dispatcher,
                self.config,
                listener,
                self._upgrade_handler(),
                on_ready=self._mark_ready,
            )
            self._attach(transport)
            with _graceful_signals(self):
                transport.serve_forever()
        finally:
            if listener is not None:  # whatever ended the run: no client waits on it
                listener.close()
            self._end()

    def _mark_ready(self) -> None:
        if self._set_ready():
            _log.info("Serving on %s", host_port(self.config.host or "0.0.0.0", self.port))

    async def start_async(self) -> None:
        """Serve on the running event loop until :meth:`stop` (as :meth:`start` does)."""
        if not self._begin():
            return
        ended = self._run_ended = asyncio.Event()
        pool: SyncPool | None = None
        transport: Any = None
        listener: Any = None
        try:
            from .transport.aio import AioServer

            self.app.compiled()
            pool = SyncPool(self.config.worker_threads)  # this server's own, for its def code
            transport = AioServer(self.dispatcher, self.config, self._upgrade_handler(), pool)
            self._attach(transport)
            listener = self._listener()
            await transport.start(listener)
            self._mark_ready()
            with _graceful_signals(self):
                await _serve_until_stopped(self, transport)
        finally:
            try:
                # Whatever ended the run (KeyboardInterrupt stops the loop without a
                # shutdown): no client may wait on the port.
                if transport is not None:
                    transport.close_listener()
                if listener is not None:
                    listener.close()
                if pool is not None:
                    pool.shutdown()
                    await pool.wait_closed(1.0)  # stop() returns with the threads gone
            finally:
                self._end()
                ended.set()

    def _claim_stop(self) -> tuple[bool, Any]:
        """Mark the run as stopping: (True, its transport, None before it has one).
        With no run under way, (False, None): before the first start(), that start()
        is to return at once; after a run, the server has stopped already."""
        with self._lock:
            if not self._running:
                self._stop_pending = self._runs == 0
                return False, None
            self._stopping = True
            self._ready.clear()
            return True, self._transport

    def stop(self, wait: bool = True) -> None:
        """Stop accepting, let in-flight requests finish, then close (any thread).

        Waits for the shutdown, except where it cannot: on the server's loop, or in
        a request of its own.  Before the first start() (say right after starting it
        in another thread), that start() returns at once without serving; after the
        server stopped, it does nothing.  In a worker of ``workers=N``, it stops the
        whole server: the supervisor and every worker.
        """
        self._ask_supervisor()
        self._stop(wait)

    def _ask_supervisor(self) -> None:
        ask = self._stop_supervisor
        if ask is not None:
            ask()

    def _stop(self, wait: bool) -> None:
        """Stop this process' run only (a signal to a worker stops that worker)."""
        running, transport = self._claim_stop()
        if not running:
            return
        if transport is not None:
            transport.stop(False)
        if not wait or (transport is not None and transport_in_current_thread(transport)):
            return
        if not self._stopped.wait(stop_wait_bound(self.config)):
            _log.warning("stop(): the server has not stopped yet; not waiting longer")

    def _hurry(self) -> None:
        """A second Ctrl-C: the stop under way no longer waits for the requests in
        flight (``drain_timeout``): they are cut now, and the run ends."""
        with self._lock:
            transport = self._transport if self._running else None
        hurry = getattr(transport, "hurry", None)
        if hurry is not None:
            hurry()

    async def stop_async(self) -> None:
        """Stop from a coroutine (on the server's own loop or any other); returns
        once stopped, except in a request of its own (no wait for that very request)."""
        self._ask_supervisor()
        with self._lock:
            transport, ended = self._transport, self._run_ended
        if transport is not None and SERVING.get() is transport:
            self._stop(wait=False)
            return
        if transport is not None and getattr(transport, "loop", None) is asyncio.get_running_loop():
            self._claim_stop()
            await transport.stop_async()
            if ended is not None:
                await ended.wait()  # the server's pool threads gone, as with stop()
            return
        await asyncio.get_running_loop().run_in_executor(None, self._stop, True)


def _no_running_loop() -> None:
    """start() with the asyncio transport runs a loop of its own: not inside another."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "start(prefer_coroutine=True) blocks and cannot run in a running event loop: "
        "await start_async() there"
    )


async def _serve_until_stopped(server: Server, transport: Any) -> None:
    """Wait for the end of the run; when the task awaiting it is cancelled, stop the
    server as stop() does first (its connections were served on, their sockets left open)."""
    try:
        await transport.wait_closed()
    except asyncio.CancelledError:
        server._claim_stop()
        await transport.stop_async()
        raise


async def _start_in_thread(server: Server) -> None:
    """The threaded transport for start_async(): a cancelled caller stops the server
    (it served on, and asyncio.run() then waited for its thread forever)."""
    loop = asyncio.get_running_loop()
    serving = loop.run_in_executor(None, server.start)
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        await loop.run_in_executor(None, server.stop)
        raise


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL spells it: an IPv6 address in brackets (``[::1]:8080``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def transport_in_current_thread(transport: Any) -> bool:
    """True when stop() cannot wait: called where ``transport`` runs, or from a request."""
    cannot_wait = getattr(transport, "cannot_wait", None)
    if cannot_wait is not None:
        return bool(cannot_wait())
    owner = getattr(transport, "owner_thread", None)
    return owner is threading.current_thread()


class _graceful_signals:
    """SIGTERM/SIGINT stop the server gracefully while it serves in the main thread.

    The handler only writes the signal's number to a socket: a watcher thread logs
    it and stops the server.  A handler runs in the main thread between two of its
    bytecodes, maybe inside a lock that thread holds (a log queue's, an event's):
    taking that lock again there (a log line, ``Event.set()``) would deadlock it for
    good, with an async controller logging on the loop or a second signal landing
    in the first one's log line (^C on ``workers=N``: the worker gets the terminal's
    SIGINT, then its supervisor's SIGTERM).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.previous: dict[int, Any] = {}
        self._receive: socket.socket | None = None
        self._send: socket.socket | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._receive, self._send = socket.socketpair()
        self._send.setblocking(False)  # a flood of signals never blocks the main thread
        self._watcher = threading.Thread(
            target=self._watch, args=(self._receive,), name="shs-signals", daemon=True
        )
        self._watcher.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        send = self._send
        if send is not None:
            try:
                send.send(bytes((signum,)))
            except OSError:  # full: a stop is on its way already; closed: the run is over
                pass

    def _watch(self, receive: socket.socket) -> None:
        stopping = False
        while True:
            try:
                signals = receive.recv(256)
            except OSError:
                return
            if not signals:  # the run is over
                return
            for signum in signals:
                # A SIGINT while a stop is under way (a second ^C; the first one's or
                # a supervisor's SIGTERM, or stop()) ends the wait for the requests.
                if signum == signal.SIGINT and (stopping or self.server._stopping):
                    _log.warning("Signal %d again: not waiting for the requests in flight", signum)
                    self.server._hurry()
                elif not stopping:
                    _log.info("Signal %d: stopping gracefully", signum)
                    self.server._stop(wait=False)
                stopping = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        send, self._send = self._send, None
        if send is not None:
            send.close()  # the watcher reads the end of the stream and returns
        if self._watcher is not None:
            self._watcher.join(5.0)
        if self._receive is not None:
            self._receive.close()


_server: Server | None = None
_server_lock = threading.Lock()
#: stop() came when no server ran (none yet, or the last one had stopped): the
#: next start() builds its server stopped (it returns at once).
_stop_pending = False


_SESSION_OPTIONS = ("session_cookie_name", "session_timeout")


def _build(
    host: str = "",
    port: int = 9090,
    ssl: bool = False,
    ssl_protocol: int = _ssl.PROTOCOL_TLS_SERVER,
    ssl_check_hostname: bool = False,
    keyfile: str = "",
    certfile: str = "",
    keypass: Password = "",
    ssl_context: _ssl.SSLContext | None = None,
    resources: Mapping[str, str] | None = None,
    connection_idle_time: float | None = None,
    keep_alive: bool = True,
    keep_alive_max_request: int | None = None,
    prefer_coroutine: bool = False,
    app_conf: App | None = None,
    **options: Any,
) -> Server:
    global _server, _stop_pending
    if "prefer_corountine" in options:  # the original's misspelling
        prefer_coroutine = bool(options.pop("prefer_corountine"))
    _check_positional_order(prefer_coroutine, app_conf)
    if ssl and ssl_context is None:
        ssl_context = make_ssl_context(keyfile, certfile, keypass, ssl_protocol, ssl_check_hostname)
    changes: dict[str, Any] = {
        "host": host,
        "port": port,
        "keep_alive": keep_alive,
        "ssl_context": ssl_context if ssl or ssl_context is not None else None,
    }
    if connection_idle_time:
        changes["idle_timeout"] = float(connection_idle_time)
    if keep_alive_max_request:
        changes["keep_alive_max_requests"] = int(keep_alive_max_request)
    session_options = {k: options.pop(k) for k in _SESSION_OPTIONS if k in options}
    changes.update(options)
    config = ServerConfig().with_changes(**changes)
    app = app_conf if app_conf is not None else default_app()
    if session_options:  # before the server is built: it checks the app's settings
        configure_sessions(app, **session_options)
    server = Server(app, config, resources, prefer_coroutine)
    with _server_lock:
        old, _server = _server, server
        if _stop_pending:
            _stop_pending = False
            server.stop()  # not started: its start() returns at once
    if old is not None and not old._finished():
        old.stop()
    return server


def _check_positional_order(prefer_coroutine: Any, app_conf: Any) -> None:
    """Refuse naja-atra's positional order, which has ``gzip_content_types`` and
    ``gzip_compress_level`` where 0.22.x (and this package) has ``prefer_coroutine``
    and ``app_conf``: a set of media types would silently choose the transport."""
    # Not a str: 0.22.x took any truthy value ("yes"); types come as a set, list or tuple.
    if isinstance(prefer_coroutine, Collection) and not isinstance(prefer_coroutine, str):
        raise TypeError(f"prefer_coroutine must be a bool, not {prefer_coroutine!r}: {_ORDER}")
    if app_conf is not None and not isinstance(app_conf, App):
        raise TypeError(f"app_conf must be an App, not {app_conf!r}: {_ORDER}")


def _check_arity(args: tuple[Any, ...]) -> None:
    """naja-atra's start() takes two positional arguments more than 0.22.x's."""
    if len(args) > _MAX_POSITIONAL:
        raise TypeError(
            f"start() takes at most {_MAX_POSITIONAL} positional arguments "
            f"({len(args)} given): {_ORDER}"
        )


_ORDER = (
    "start()'s positional arguments are simple_http_server 0.22.x's: after "
    "keep_alive_max_request come prefer_coroutine and app_conf; pass naja-atra's "
    "gzip_content_types and gzip_compress_level by keyword"
)
_MAX_POSITIONAL = list(inspect.signature(_build).parameters).index("app_conf") + 1


class StartOptions(ConfigOptions, total=False):
    """The keyword options of :func:`start`, for type checkers: the original's
    arguments, the session settings and every ``ServerConfig`` setting."""

    ssl: bool
    ssl_protocol: int
    ssl_check_hostname: bool
    keyfile: str
    certfile: str
    keypass: Password
    resources: Mapping[str, str] | None
    connection_idle_time: float | None
    keep_alive_max_request: int | None
    prefer_coroutine: bool
    prefer_corountine: bool  # the original's misspelling
    app_conf: App | None
    session_cookie_name: str | None
    session_timeout: float | None


class StartAsyncOptions(StartOptions, total=False):
    """The keyword options of :func:`start_async`: :func:`start`'s."""

    workers: int


#: Where ``prefer_coroutine`` is among the positional arguments of start() (the original's order).
_PREFER_COROUTINE_AT = list(inspect.signature(_build).parameters).index("prefer_coroutine")


def start(*args: Any, workers: int = 1, **kwargs: Unpack[StartOptions]) -> None:
    """Start serving and block until :func:`stop` (see the README for every option).

    Positional arguments are the original's, in its order (``start("", 8080)``):
    ``host`` (every interface when empty), ``port`` (9090), ``ssl``, ``ssl_protocol``,
    ``ssl_check_hostname``, ``keyfile``, ``certfile``, ``keypass``, ``ssl_context``,
    ``resources`` (static mounts ``{pattern: folder}``), ``connection_idle_time``,
    ``keep_alive``, ``keep_alive_max_request``, ``prefer_coroutine`` (the asyncio
    transport) and ``app_conf`` (the ``App`` to serve).  By name only:
    ``workers`` (N > 1: N processes sharing one listening socket);
    ``session_cookie_name`` and ``session_timeout`` configure the app's sessions; any
    other name is a ``ServerConfig`` setting (limits, timeouts, ``gzip_*``...).
    """
    _check_arity(args)
    server = _build(*args, **kwargs)
    if workers > 1:
        from .workers import run_workers

        run_workers(server, workers)
    else:
        server.start()


async def start_async(*args: Any, **kwargs: Unpack[StartAsyncOptions]) -> None:
    """Serve on the caller's event loop until :func:`stop` (asyncio transport by default).

    Takes the arguments of :func:`start`, positional ones included.
    """
    _check_arity(args)
    if len(args) <= _PREFER_COROUTINE_AT:  # not given positionally
        kwargs.setdefault("prefer_coroutine", True)
    if int(kwargs.pop("workers", 1)) > 1:
        raise ValueError("workers > 1 needs server.start(), not start_async()")
    server = _build(*args, **kwargs)
    if server.prefer_coroutine:
        await server.start_async()
    else:
        await _start_in_thread(server)


def stop() -> None:
    """Stop the running server (from any thread); with none running (say it is being
    started in another thread), the next :func:`start` returns at once."""
    global _stop_pending
    with _server_lock:
        server = _server
        if server is None or server._finished():
            _stop_pending = True
            return
    server.stop()


def is_ready() -> bool:
    """True once the server accepts connections."""
    server = _server
    return server is not None and server.is_ready()


def __getattr__(name: str) -> Any:
    """The original's proxy classes, imported on first use: its README annotates
    ``asgi_proxy: ASGIProxy`` after ``from simple_http_server.server import ASGIProxy``."""
    if name == "ASGIProxy":
        from .adapters.asgi import ASGIProxy

        return ASGIProxy
    if name == "WSGIProxy":
        from .adapters.wsgi import WSGIProxy

        return WSGIProxy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def init_wsgi_proxy(
    resources: Mapping[str, str] | None = None,
    session_factory: SessionFactory | None = None,
    app_conf: App | None = None,
    **options: Unpack[ConfigOptions],
) -> WSGIProxy:
    """A WSGI app of an app: ``proxy.app_proxy(environ, start_response)`` or ``proxy(...)``.

    ``options`` are settings of :class:`ServerConfig` (limits, ``access_log``...).
    """
    from .adapters.wsgi import WSGIProxy as WSGIProxy

    config = ServerConfig().with_changes(**options)
    app = app_conf if app_conf is not None else default_app()
    return WSGIProxy(Dispatcher(app, config, resources, session_factory))


def init_asgi_proxy(
    resources: Mapping[str, str] | None = None,
    session_factory: SessionFactory | None = None,
    app_conf: App | None = None,
    **options: Unpack[ConfigOptions],
) -> ASGIProxy:
    """An ASGI 3 app of an app: ``await proxy.app_proxy(scope, receive, send)`` or ``proxy(...)``.

    Serves the ``http``, ``websocket`` and ``lifespan`` scopes; ``options`` are
    settings of :class:`ServerConfig` (limits, ``access_log``...).
    """
    from .adapters.asgi import ASGIProxy as ASGIProxy

    config = ServerConfig().with_changes(**options)
    app = app_conf if app_conf is not None else default_app()
    dispatcher = Dispatcher(app, config, resources, session_factory)
    try:
        from .transport.ws_glue import WebsocketUpgrade
    except ImportError:
        return ASGIProxy(dispatcher)
    return ASGIProxy(dispatcher, WebsocketUpgrade(dispatcher))
