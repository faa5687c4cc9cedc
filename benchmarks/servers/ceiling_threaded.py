"""Benchmark server: the threaded h11 ceiling (a selector thread and a worker pool).

The main thread waits on an epoll set in which every connection is armed
``EPOLLONESHOT``: a readable connection is handed to a worker through a queue,
the worker reads once, lets the Sans-IO core answer, writes, and re-arms the
connection itself (``epoll_ctl`` is thread-safe), so one request costs one
hand-off and no wake-up pipe.  The upper bound for a threaded h11 server.
"""

from __future__ import annotations

import queue
import select
import socket
import threading

from _ceiling import CeilingConnection
from _common import parse_args, skip

args = parse_args(("threads",))
if {"workers"} & args.need or args.files_dir or args.scratch_dir:
    skip("the ceiling answers a fixed response only")

WORKER_THREADS = 16
READ_SIZE = 65536
ARMED = select.EPOLLIN | select.EPOLLONESHOT | select.EPOLLRDHUP


class Conn:
    """A client socket and its Sans-IO core."""

    __slots__ = ("core", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.core = CeilingConnection()


def serve() -> None:
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    listener.setblocking(False)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, Conn] = {}
    ready: queue.SimpleQueue[Conn] = queue.SimpleQueue()

    def work() -> None:
        while True:
            conn = ready.get()
            sock = conn.sock
            try:
                data = sock.recv(READ_SIZE)
                out = conn.core.feed(data)
                if out:
                    sock.sendall(out)
            except OSError:
                conn.core.closed = True
            if conn.core.closed:
                conns.pop(sock.fileno(), None)
                epoll.unregister(sock.fileno())
                sock.close()
            else:
                epoll.modify(sock.fileno(), ARMED)

    for i in range(WORKER_THREADS):
        threading.Thread(target=work, name=f"ceiling-worker-{i}", daemon=True).start()

    listen_fd = listener.fileno()
    while True:
        for fd, _mask in epoll.poll():
            if fd == listen_fd:
                while True:
                    try:
                        sock, _peer = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(True)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[sock.fileno()] = Conn(sock)
                    epoll.register(sock.fileno(), ARMED)
            else:
                conn = conns.get(fd)
                if conn is not None:
                    ready.put(conn)


serve()
