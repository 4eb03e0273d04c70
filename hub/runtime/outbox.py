"""The outbox relay: publishes what workflows emitted, after their checkpoint committed.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` inside the relay's transaction and marked
sent in it, so several relays never publish one row at the same time. A crash between
publish and commit publishes again: consumers dedupe on the ``event-id`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from hub import metrics
from hub.aio import wait_event
from hub.engine.hub import Hub
from hub.runtime import constants as h

log = structlog.get_logger("hub.outbox")


class OutboxRelay:
    """Wakes on the hub's notifications (and a rare poll) and drains the outbox."""

    def __init__(self, hub: Hub, producer: AIOKafkaProducer, *, batch: int = 500,
                 poll_interval: float | None = None, prefix: str = "") -> None:
        self.hub = hub
        self.producer = producer
        self.prefix = prefix
        self.batch = batch
        self.poll_interval = poll_interval or hub.settings.poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self.hub.on_notification(self._on_message)
        self._wake.set()
        self._task = asyncio.create_task(self._loop(), name="hub-outbox-relay")

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("ob"):
            self._wake.set()

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        futures = []
        for row in rows:
            headers = dict(row["headers"] or {})
            headers[h.EVENT_ID] = str(row["id"])
            futures.append(await self.producer.send(
                self.prefix + row["topic"], row["payload"].encode(),
                key=row["key"].encode() if row["key"] is not None else None,
                headers=[(k, str(v).encode()) for k, v in headers.items()],
            ))
        await asyncio.gather(*futures)

    async def drain(self) -> int:
        """Publish until the outbox is empty; the number of events published."""
        total = 0
        while True:
            n = await self.hub.store.outbox_relay_batch(self.batch, self._publish)
            total += n
            if n < self.batch:
                break
        self.published += total
        metrics.OUTBOX_PUBLISHED.inc(total)
        if total:
            log.debug("outbox_published", events=total)
        return total

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, self.poll_interval)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_failed", error=repr(exc)[:300])
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self.hub.off_notification(self._on_message)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
