"""Group commit: the checkpoints (and starts) of concurrent executions share one statement.

Every durable transition still commits before its consequences run; what is shared is the
round trip and the commit. With nothing else in flight a write goes out at once, so a lone
execution pays no batching delay; under load, writes that arrive while a flush is on the
wire leave together in the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")
K = TypeVar("K")


class Batcher(Generic[R, K]):
    """Collects rows and flushes them with ``flush(rows) -> keys written``."""

    def __init__(
        self,
        flush: Callable[[Sequence[R]], Awaitable[set[K]]],
        key: Callable[[R], K],
        *,
        max_batch: int = 256,
        max_inflight: int = 3,
        isolate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._flush = flush
        self._isolate = isolate
        self._key = key
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._pending: list[tuple[R, asyncio.Future[bool]]] = []
        self._inflight = 0
        self.flushes = 0
        self.rows = 0

    async def write(self, row: R) -> bool:
        """True if the row was written (for checkpoints: the epoch still matched)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        self._kick()
        return await fut

    def submit(self, rows: Sequence[R]) -> list[asyncio.Future[bool]]:
        """Queue many rows at once, one future each, as ``write`` does for one: a consumer's
        batch of hundreds of starts costs no task or coroutine per row."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[bool]] = [loop.create_future() for _ in rows]
        self._pending.extend(zip(rows, futs, strict=True))
        self._kick()
        return futs

    def _kick(self) -> None:
        while self._pending and self._inflight < self._max_inflight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._inflight += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[R, asyncio.Future[bool]]]) -> None:
        try:
            await self._flush_settling(batch)
        finally:
            self._inflight -= 1
            self._kick()

    async def _flush_settling(self, batch: list[tuple[R, asyncio.Future[bool]]]) -> None:
        """Flush and settle each row's future. A shared statement that fails on one row's
        data (``isolate``) is retried row by row, so only the bad row fails: its neighbours
        must not pay for it."""
        try:
            written = await self._flush([row for row, _ in batch])
        except BaseException as exc:
            if len(batch) > 1 and self._isolate is not None and self._isolate(exc):
                for one in batch:
                    await self._flush_settling([one])
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.flushes += 1
            self.rows += len(batch)
            for row, fut in batch:
                if not fut.done():
                    fut.set_result(self._key(row) in written)
