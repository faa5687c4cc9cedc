"""Benchmark server: the asyncio h11 ceiling (an ``asyncio.Protocol`` around h11).

Nothing but the event loop, h11 (and wsproto after an upgrade): the upper bound
for any asyncio server built on h11.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _ceiling import CeilingConnection
from _common import parse_args, skip

args = parse_args(("asyncio",))
if {"workers"} & args.need or args.files_dir or args.scratch_dir:
    skip("the ceiling answers a fixed response only")


class CeilingProtocol(asyncio.Protocol):
    """One connection: bytes to the Sans-IO core, its answer to the transport."""

    def __init__(self) -> None:
        self.core = CeilingConnection()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reply(data)

    def eof_received(self) -> bool:
        self._reply(b"")
        return False

    def _reply(self, data: bytes) -> None:
        core = self.core
        out = core.feed(data)
        if out:
            self.transport.write(out)
        if core.closed:
            self.transport.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CeilingProtocol, "127.0.0.1", args.port, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
