"""The outbox relay: publishes what workflows emitted, after their checkpoint committed.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` inside the relay's transaction, and each
row's fate is recorded in it: sent, retried later with backoff, or failed with the reason
(``hub.runtime.outbox_fate``). So several relays never publish one row at the same time, the
healthy rows of a batch are published once even when a neighbour cannot be, and one bad row
never holds back later ones. A crash between publish and commit publishes again: consumers
dedupe on the ``event-id`` header. A retried row may land after a later event of its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from hub import metrics, tracing, wire
from hub import wire as h
from hub.aio import wait_event
from hub.engine.events import topic_problem
from hub.engine.hub import Hub
from hub.runtime.formats import EventFormats
from hub.runtime.outbox_fate import fate_of
from hub.runtime.topics import Topics
from hub.store.store import OutboxFate, RetryPolicy, Row

log = structlog.get_logger("hub.outbox")


class IllegalTopicName(ValueError):
    """A row's topic is no legal Kafka name: refused before asking the broker (which would
    keep the batch waiting for metadata that never comes)."""


class OutboxRelay:
    """Wakes on the hub's notifications (and a rare poll, or a retry falling due) and drains
    the outbox."""

    def __init__(self, hub: Hub, producer: AIOKafkaProducer, *, batch: int = 500,
                 poll_interval: float | None = None, prefix: str = "",
                 policy: RetryPolicy | None = None, topics: Topics | None = None,
                 formats: EventFormats | None = None) -> None:
        self.hub = hub
        self.topics = topics
        """Declared topics: one in a registry format or with ``cloudevents:`` is written
        that way (``hub.runtime.formats``); others, or all without it, as plain JSON."""
        self.formats = formats or EventFormats(None)
        self.producer = producer
        self.prefix = prefix
        self.batch = batch
        self.policy = policy or RetryPolicy()
        self.poll_interval = poll_interval or hub.settings.poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self.published = 0
        self.failed = 0

    def start(self) -> None:
        self.hub.on_notification(self._on_message)
        self._wake.set()
        self._task = asyncio.create_task(self._loop(), name="hub-outbox-relay")

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get(wire.N_OUTBOX):
            self._wake.set()

    async def _check_topics(self, rows: list[Row]) -> dict[str, BaseException]:
        """Each distinct topic of the batch that cannot take records, with why: an illegal
        name, or no metadata (unknown, unauthorized). Asked once per topic, side by side, so
        the batch waits for the slowest topic once, not for each of its rows."""
        names = sorted({self.prefix + r["topic"] for r in rows})
        bad: dict[str, BaseException] = {}
        legal = []
        for name in names:
            problem = topic_problem(name)
            if problem is None:
                legal.append(name)
            else:
                bad[name] = IllegalTopicName(problem)
        found = await asyncio.gather(*(self.producer.partitions_for(t) for t in legal),
                                     return_exceptions=True)
        for name, result in zip(legal, found, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                bad[name] = result
        return bad

    async def _publish(self, rows: list[Row]) -> list[OutboxFate]:
        """Send every row (in order) and wait for each acknowledgement: a fate per row, never
        an exception for one row's failure."""
        bad = await self._check_topics(rows)
        fates: dict[uuid.UUID, OutboxFate] = {}
        sent: list[tuple[uuid.UUID, asyncio.Future[Any]]] = []
        spans: dict[uuid.UUID, Any] = {}  # stays empty when tracing is off
        for row in rows:
            topic = self.prefix + row["topic"]
            if topic in bad:
                fates[row["id"]] = fate_of(row["id"], bad[topic])
                continue
            try:
                headers = dict(row["headers"] or {})
                headers[h.EVENT_ID] = str(row["id"])
                if tracing.enabled():  # the record carries the send span's trace context
                    spans[row["id"]] = tracing.publishing(topic, headers, str(row["id"]),
                                                          row["key"])
                spec = self.topics.topics.get(topic) if self.topics is not None else None
                if spec is not None and EventFormats.applies(spec):
                    value, wire = await self.formats.encode(spec, row["payload"], headers,
                                                            str(row["id"]))
                else:
                    value = row["payload"].encode()
                    wire = [(k, str(v).encode()) for k, v in headers.items()]
                sent.append((row["id"], await self.producer.send(
                    topic, value,
                    key=row["key"].encode() if row["key"] is not None else None,
                    headers=wire,
                )))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fates[row["id"]] = fate_of(row["id"], exc)
                tracing.published(spans.pop(row["id"], None), exc)
        acks = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (row_id, _), ack in zip(sent, acks, strict=True):
            if isinstance(ack, asyncio.CancelledError):
                raise ack
            if spans:
                tracing.published(spans.pop(row_id, None),
                                  ack if isinstance(ack, BaseException) else None)
            fates[row_id] = (fate_of(row_id, ack) if isinstance(ack, BaseException)
                             else OutboxFate(row_id, "sent"))
        return [fates[r["id"]] for r in rows]

    async def drain(self) -> int:
        """Publish until no row is due; the number of events published."""
        total = 0
        while True:
            settled = await self.hub.store.outbox_relay_batch(self.batch, self._publish,
                                                              self.policy)
            total += self._record(settled)
            if len(settled) < self.batch:
                break
        self.published += total
        if total:
            log.debug("outbox_published", events=total)
        return total

    def _record(self, settled: list[Row]) -> int:
        """Count and log the fates of one batch (each failure once, with its reason), and
        wake up when the earliest retry falls due."""
        sent = 0
        due: datetime | None = None
        for row in settled:
            if row["sent"]:
                sent += 1
            elif row["failed"]:
                self.failed += 1
                metrics.OUTBOX_FAILED.inc()
                log.error("outbox_event_failed", event_id=str(row["id"]), topic=row["topic"],
                          attempts=row["attempts"], reason=row["last_error"])
            else:
                metrics.OUTBOX_RETRIES.inc()
                log.warning("outbox_retry_scheduled", event_id=str(row["id"]),
                            topic=row["topic"], attempts=row["attempts"],
                            due_at=row["next_attempt_at"].isoformat(),
                            reason=row["last_error"])
                due = min(due, row["next_attempt_at"]) if due else row["next_attempt_at"]
        metrics.OUTBOX_PUBLISHED.inc(sent)
        if due is not None:
            self._wake_at(due)
        return sent

    def _wake_at(self, due: datetime) -> None:
        delay = max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.05
        when = asyncio.get_running_loop().time() + delay
        timer = self._retry_timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

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
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

