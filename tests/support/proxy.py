"""A loopback TCP proxy a test can cut: a server (a broker, Postgres) away for one client
while the others still reach it, or not there yet at the address a client was given."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def to_tcp(host: str, port: int) -> Connect:
    return lambda: asyncio.open_connection(host, port)


def to_unix(path: str) -> Connect:
    return lambda: asyncio.open_unix_connection(path)


class Proxy:
    """Listens on 127.0.0.1:``port`` (0: any) while entered; each link goes to ``connect``.
    :meth:`sever` drops every link and refuses new ones."""

    def __init__(self, connect: Connect, port: int = 0) -> None:
        self._connect = connect
        self.port = port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.cut = False

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.sever()

    def sever(self) -> None:
        self.cut = True
        for w in list(self._links):
            w.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        up_reader, up_writer = await self._connect()
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()
            self._links.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
