"""One-shot readiness polling for the threaded transport.

A connection is *armed*: the next time it becomes readable the poller reports
it once and disarms it, and the worker thread that served it arms it again
with :meth:`Poller.rearm` (from any thread).  On Linux this is ``epoll`` with
``EPOLLONESHOT``: re-arming is one ``epoll_ctl`` call from the worker, with no
hand-off back to the polling thread.  Elsewhere a ``selectors`` selector
emulates it: re-armed connections are queued and the polling thread is woken
to register them again.
"""

from __future__ import annotations

import queue
import select
import selectors
import socket
from typing import Any, Protocol

__all__ = ["Poller", "make_poller"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class Poller:
    """Readiness of sockets, one report per arming (see the module docstring)."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    def wake(self) -> None:
        """Make a pending :meth:`poll` return (any thread)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def add_static(self, fileobj: _HasFileno, data: Any) -> None:
        """Watch ``fileobj`` (a listener) for good: reported on every poll it is ready."""
        raise NotImplementedError

    def add(self, fileobj: _HasFileno, data: Any) -> None:
        """Watch a new connection, armed (polling thread)."""
        raise NotImplementedError

    def rearm(self, fileobj: _HasFileno, data: Any) -> bool:
        """Arm a connection again (any thread); False when it cannot be watched."""
        raise NotImplementedError

    def remove(self, fileobj: _HasFileno) -> None:
        """Stop watching an armed connection (polling thread)."""
        raise NotImplementedError

    def discard(self, fileobj: _HasFileno) -> None:
        """A disarmed connection leaves for good, e.g. closed (any thread)."""

    def poll(self, timeout: float) -> list[Any]:
        """The data of the ready entries; connections among them are now disarmed."""
        raise NotImplementedError

    def armed(self) -> list[Any]:
        """The data of every armed connection (polling thread)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the poller."""
        self._wake_r.close()
        self._wake_w.close()


class _EpollPoller(Poller):
    _ARMED = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, "EPOLLONESHOT") else 0

    def __init__(self) -> None:
        super().__init__()
        self._epoll = select.epoll()
        self._static: dict[int, Any] = {}
        self._armed: dict[int, Any] = {}
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)

    def add_static(self, fileobj: _HasFileno, data: Any) -> None:
        fd = fileobj.fileno()
        self._static[fd] = data
        self._epoll.register(fd, select.EPOLLIN)

    def add(self, fileobj: _HasFileno, data: Any) -> None:
        fd = fileobj.fileno()
        self._armed[fd] = data
        self._epoll.register(fd, self._ARMED)

    def rearm(self, fileobj: _HasFileno, data: Any) -> bool:
        try:
            fd = fileobj.fileno()
            self._armed[fd] = data  # before arming: the event may fire at once
            self._epoll.modify(fd, self._ARMED)
        except (OSError, ValueError):
            self._armed.pop(fd, None)
            return False
        return True

    def remove(self, fileobj: _HasFileno) -> None:
        try:
            fd = fileobj.fileno()
        except (OSError, ValueError):
            return
        self._armed.pop(fd, None)
        self.discard(fileobj)

    def discard(self, fileobj: _HasFileno) -> None:
        try:
            self._epoll.unregister(fileobj.fileno())
        except (OSError, ValueError):
            pass

    def poll(self, timeout: float) -> list[Any]:
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return []
        ready: list[Any] = []
        wake_fd = self._wake_r.fileno()
        for fd, _mask in events:
            if fd == wake_fd:
                self._drain_wake()
                continue
            data = self._static.get(fd)
            if data is None:
                data = self._armed.pop(fd, None)
                if data is None:
                    continue
            ready.append(data)
        return ready

    def armed(self) -> list[Any]:
        return list(self._armed.values())

    def close(self) -> None:
        self._epoll.close()
        super().close()


_WAKE = object()


class _SelectorPoller(Poller):
    def __init__(self) -> None:
        super().__init__()
        self._selector = selectors.DefaultSelector()
        self._static: set[int] = set()
        self._rearmed: queue.SimpleQueue[tuple[_HasFileno, Any]] = queue.SimpleQueue()
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)

    def add_static(self, fileobj: _HasFileno, data: Any) -> None:
        self._static.add(fileobj.fileno())
        self._selector.register(fileobj, selectors.EVENT_READ, data)

    def add(self, fileobj: _HasFileno, data: Any) -> None:
        self._selector.register(fileobj, selectors.EVENT_READ, data)

    def rearm(self, fileobj: _HasFileno, data: Any) -> bool:
        self._rearmed.put((fileobj, data))
        self.wake()
        return True

    def remove(self, fileobj: _HasFileno) -> None:
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def poll(self, timeout: float) -> list[Any]:
        ready: list[Any] = []
        for key, _mask in self._selector.select(timeout):
            if key.data is _WAKE:
                self._drain_wake()
                self._register_rearmed()
            elif key.fd in self._static:
                ready.append(key.data)
            else:
                self._selector.unregister(key.fileobj)
                ready.append(key.data)
        return ready

    def _register_rearmed(self) -> None:
        while True:
            try:
                fileobj, data = self._rearmed.get_nowait()
            except queue.Empty:
                return
            try:
                self._selector.register(fileobj, selectors.EVENT_READ, data)
            except (ValueError, KeyError, OSError):
                getattr(data, "rearm_failed", lambda: None)()

    def armed(self) -> list[Any]:
        self._register_rearmed()
        return [
            key.data
            for key in list(self._selector.get_map().values())
            if key.data is not _WAKE and key.fd not in self._static
        ]

    def close(self) -> None:
        self._selector.close()
        super().close()


def make_poller() -> Poller:
    """``epoll`` with one-shot arming where available, a selector elsewhere."""
    if hasattr(select, "epoll") and hasattr(select, "EPOLLONESHOT"):
        return _EpollPoller()
    return _SelectorPoller()
