"""One dedicated connection that LISTENs for the hub's notifications, and comes back after
Postgres restarts. Idle, it sends nothing: this is why workers need only a rare poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from hub.store.store import is_disconnect

log = structlog.get_logger(__name__)


class Listener:
    """Calls ``on_message(payload)`` for each notification and ``on_reconnect()`` after a
    reconnect (notifications sent while disconnected are lost; the caller re-reads state)."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_message: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="hub-listener")

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(self._channel, self._deliver)
        conn.add_termination_listener(lambda _c: self._lost.set())
        self._conn = conn
        self._lost.clear()
        self.connected.set()

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_message(str(payload))

    async def _watch(self) -> None:
        while True:
            await self._lost.wait()
            self.connected.clear()
            log.warning("listener_disconnected", channel=self._channel)
            delay = 0.05
            while True:
                try:
                    await self._connect()
                    break
                except Exception as exc:
                    if not is_disconnect(exc):
                        log.error("listener_reconnect_failed", error=repr(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            log.info("listener_reconnected", channel=self._channel)
            self._on_reconnect()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
            self._conn = None
