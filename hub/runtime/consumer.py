"""The consumer runtime: Kafka records in, durable workflow starts out, offsets committed after.

Built on aiokafka directly (docs/decisions/consumer-runtime.md says why). The fetch loop only
fetches and hands records to one worker per partition, so slow handlers never starve
heartbeats; a partition with too big a backlog, in records or in bytes, is paused
(backpressure) until half of it is drained. A worker takes a
batch of its partition's records, runs handlers (events of one key in order, different keys
side by side up to a bound), makes every start the batch requested durable in one statement,
waits for its dead letters to be acknowledged, and only then commits the batch's offsets.
Every consumed offset ends handled or dead-lettered; a redelivered one starts nothing new.
No record is retried for ever: a batch that keeps failing (a dead letter the broker will not
take, Postgres refusing every try) is tried ``HUB_KAFKA_BATCH_MAX_ATTEMPTS`` times, and a
record that cannot even be dead-lettered parks its partition: paused, logged
(``partition_parked``), counted (``hub_consumer_partitions_parked``), never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel
from pydantic_core import from_json
from structlog.contextvars import bind_contextvars, reset_contextvars

from hub import metrics, tracing
from hub import wire as h
from hub.engine.checkpoint import Batcher
from hub.engine.hub import Hub
from hub.engine.payload import tail_lines
from hub.errors import HubError
from hub.runtime.admin import existing_topics
from hub.runtime.formats import EventFormats, FormatRejected, route
from hub.runtime.kafka import client_kwargs, explained_start, start_producer
from hub.runtime.oversize import Headers, fitted_headers, is_truncated
from hub.runtime.schema_registry import RegistryUnavailable, SchemaRegistry
from hub.runtime.sizes import held_bytes
from hub.runtime.subscriber import (
    SUBSCRIBERS,
    SubscriberContext,
    SubscriberRegistry,
    SubscriberSpec,
)
from hub.runtime.topics import Topics, TopicSpec
from hub.settings import KafkaSettings
from hub.store.store import StartRow, is_data_error

log = structlog.get_logger("hub.consumer")


class EventRejected(Exception):
    """An event that no retry can fix (bad bytes, bad schema): dead-letter it at once."""

    def __init__(self, stage: str, cause: BaseException | str) -> None:
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause


class RecordParked(HubError):
    """A record that can be neither handled nor dead-lettered (too large for its dead-letter
    topic): retrying cannot help, so its partition stops at it, visibly, rather than drop it
    or retry it for ever."""

    def __init__(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        super().__init__(reason)
        self.record = record
        self.reason = reason


class DeadLetterTopicMissing(HubError):
    """A subscribed topic's dead-letter topic is not on the broker: its first poison record
    would stall the partition, so the consumer does not start."""


def registry_for(topics: Topics, names: Sequence[str],
                 settings: KafkaSettings) -> SchemaRegistry | None:
    """The schema registry the subscribed topics need; a registry topic without
    ``HUB_SCHEMA_REGISTRY_URL`` stops the start (its every record would wait)."""
    framed = [n for n in names if topics[n].registry_subject is not None]
    registry = SchemaRegistry.from_settings(settings) if framed else None
    if framed and registry is None:
        raise HubError(f"topic {framed[0]!r} is in format {topics[framed[0]].format!r} "
                       f"(declared in {topics.path}) but HUB_SCHEMA_REGISTRY_URL is not set")
    return registry


def dead_letter_topic(topics: Topics, topic: str) -> str:
    """Where ``topic``'s rejected records go: its ``dead_letter:``, else ``<topic>.dlq``."""
    spec = topics.topics.get(topic)
    return spec.dead_letter if spec is not None and spec.dead_letter else f"{topic}.dlq"


@dataclass
class Decoded:
    payload: Any
    event_id: str | None
    headers: dict[str, str]
    key: str | None
    ce_type: str | None = None


def decode_headers(raw: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw or ():
        out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)
    return out


def json_value(value: bytes) -> Any:
    """A record's JSON, parsed from its bytes in one pass by pydantic-core (exact for big
    integers, unlike orjson); what that parser refuses is parsed again by the standard
    library, so what a record may hold (a lone surrogate escape, NaN) and the reason a bad
    one is refused are the same as ever. Raises ``EventRejected``."""
    try:
        return from_json(value, allow_inf_nan=False)
    except ValueError:
        pass
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected("deserialize", exc) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EventRejected("deserialize", exc) from None


def decode_record(record: ConsumerRecord[bytes, bytes], spec: TopicSpec | None) -> Decoded:
    """Bytes to JSON, with the schema version checked; raises ``EventRejected``."""
    headers = decode_headers(record.headers)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if record.value is None:
        raise EventRejected("deserialize", "record has no value (tombstone)")
    payload = json_value(record.value)
    if spec is not None and h.SCHEMA_VERSION in headers:
        try:
            version = int(headers[h.SCHEMA_VERSION])
        except ValueError:
            raise EventRejected(
                "schema_version", f"header {h.SCHEMA_VERSION}={headers[h.SCHEMA_VERSION]!r} "
                "is not an integer") from None
        if version not in spec.versions:
            raise EventRejected(
                "schema_version",
                f"schema version {version} of topic {spec.name!r} is not accepted "
                f"(accepted: {sorted(spec.versions)})")
    event_id = headers.get(h.EVENT_ID)
    if event_id is None and isinstance(payload, dict) and isinstance(payload.get("id"), str | int):
        event_id = str(payload["id"])
    return Decoded(payload, event_id, headers, key)


def dead_letter_context(
    record: ConsumerRecord[bytes, bytes], stage: str, exc: BaseException | str, *,
    subscriber: str | None, attempts: int, group: str,
) -> dict[str, str]:
    """Connect-style context headers (the record's own headers go beside them)."""
    if isinstance(exc, BaseException):
        cls = f"{type(exc).__module__}.{type(exc).__qualname__}"
        message = str(exc) or repr(exc)
        stack = tail_lines("".join(traceback.format_exception(exc)), 8000)
    else:
        cls, message, stack = "hub.runtime.consumer.EventRejected", exc, ""
    ctx = {
        h.DLQ_TOPIC: record.topic,
        h.DLQ_PARTITION: str(record.partition),
        h.DLQ_OFFSET: str(record.offset),
        h.DLQ_KEY: record.key.decode("utf-8", "replace") if record.key is not None else "",
        h.DLQ_TIMESTAMP: str(record.timestamp),
        h.DLQ_STAGE: stage,
        h.DLQ_SUBSCRIBER: subscriber or "",
        h.DLQ_ATTEMPTS: str(attempts),
        h.DLQ_EXCEPTION_CLASS: cls,
        h.DLQ_EXCEPTION_MESSAGE: message[:8000],
        h.DLQ_EXCEPTION_STACKTRACE: stack,
        h.DLQ_CONSUMER_GROUP: group,
    }
    return ctx


def original_headers(record: ConsumerRecord[bytes, bytes]) -> Headers:
    """The record's own headers, byte for byte (an earlier dead letter's context dropped)."""
    return [(k, bytes(v)) for k, v in (record.headers or ()) if not k.startswith(h.DLQ_PREFIX)]


@dataclass
class BatchResult:
    """What handling one batch of a partition produced."""

    rows: list[StartRow] = field(default_factory=list)
    origins: list[tuple[ConsumerRecord[bytes, bytes], str]] = field(default_factory=list)
    """The record and subscriber of each of ``rows``, in step."""
    dead: list[Awaitable[Any]] = field(default_factory=list)
    parked: list[RecordParked] = field(default_factory=list)
    handled: int = 0
    dead_lettered: int = 0


class Handling:
    """Runs the subscribers of one topic on one record (decode, validate, retry, DLQ)."""

    def __init__(self, hub: Hub, topics: Topics, subscribers: SubscriberRegistry,
                 producer: AIOKafkaProducer | None, group: str, *,
                 replay_id: str | None = None, replaying: bool = False,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_message_bytes: int = 1_048_576,
                 formats: EventFormats | None = None) -> None:
        self.hub = hub
        self.formats = formats or EventFormats(None)
        self.replaying = replaying
        self.topics = topics
        self.subscribers = subscribers
        self.producer = producer
        self.group = group
        self.replay_id = replay_id
        self._sleep = sleep
        self.max_message_bytes = max_message_bytes
        self._models: dict[str, type[BaseModel] | None] = {}

    def _topic_model(self, topic: str) -> type[BaseModel] | None:
        if topic not in self._models:
            spec = self.topics.topics.get(topic)
            self._models[topic] = spec.event_model() if spec is not None else None
        return self._models[topic]

    def dead_letter(self, record: ConsumerRecord[bytes, bytes], stage: str,
                    exc: BaseException | str, subscriber: str | None, attempts: int,
                    out: BatchResult) -> None:
        """Queue the record for its dead-letter topic; ``RecordParked`` if it cannot fit."""
        target = dead_letter_topic(self.topics, record.topic)
        context = dead_letter_context(record, stage, exc, subscriber=subscriber,
                                      attempts=attempts, group=self.group)
        tries = fitted_headers(record.key, record.value, original_headers(record), context,
                               self.max_message_bytes)
        if not tries:
            raise RecordParked(record, (
                f"cannot be dead-lettered to {target!r}: its value ({len(record.value or b'')} "
                f"bytes), key and headers alone exceed HUB_MAX_EVENT_BYTES="
                f"{self.max_message_bytes} (it failed at {stage}: {str(exc)[:200]})"))
        metrics.DEAD_LETTERS.labels(record.topic, stage).inc()
        log.warning("event_dead_lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, stage=stage, subscriber=subscriber,
                    dead_letter_topic=target, error=str(exc)[:300])
        out.dead.append(self._send(target, record, tries))
        out.dead_lettered += 1

    async def _send(self, target: str, record: ConsumerRecord[bytes, bytes],
                    tries: list[Headers]) -> None:
        """The largest header set the broker takes (its limit may be below ours); the value
        and key go as they came."""
        assert self.producer is not None, "a consumer that dead-letters needs a producer"
        refused: Exception | None = None
        for headers in tries:
            try:
                await self.producer.send_and_wait(target, record.value, key=record.key,
                                                  headers=headers, partition=None)
            except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
                refused = exc
                continue
            if is_truncated(headers):
                metrics.DEAD_LETTERS_TRUNCATED.labels(record.topic).inc()
                log.warning("dead_letter_truncated", topic=record.topic,
                            partition=record.partition, offset=record.offset,
                            dead_letter_topic=target, value_bytes=len(record.value or b""))
            return
        raise RecordParked(record, (
            f"the broker refused its dead letter to {target!r} as too large even with the "
            f"context headers cut ({refused!r}); raise that topic's max.message.bytes"))

    async def handle(self, record: ConsumerRecord[bytes, bytes], out: BatchResult,
                     only: str | None = None) -> None:
        spec = self.topics.topics.get(record.topic)
        subs = self.subscribers.for_topic(record.topic)
        if only is not None:
            subs = [s for s in subs if s.name == only]
        try:
            if EventFormats.applies(spec):
                decoded = await self._formatted(record, spec)
                routed = route(spec, decoded.ce_type, [s.name for s in subs])
                if routed is not None:
                    subs = [s for s in subs if s.name in routed]
            else:
                decoded = decode_record(record, spec)
        except RegistryUnavailable:
            raise  # the record is good: the batch is retried (then parked), not dead-lettered
        except (EventRejected, FormatRejected) as exc:
            self.dead_letter(record, exc.stage, exc.cause, None, 1, out)
            return
        except Exception as exc:  # any decoding failure: dead-letter, never loop on it
            self.dead_letter(record, "deserialize", exc, None, 1, out)
            return
        for sub in subs:
            await self._one(sub, record, decoded, out)
        out.handled += 1

    async def _formatted(self, record: ConsumerRecord[bytes, bytes], spec: TopicSpec | None
                         ) -> Decoded:
        """A registry-framed or CloudEvents record (see ``hub.runtime.formats``)."""
        assert spec is not None
        event = await self.formats.decode(record.headers, record.value, spec)
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        return Decoded(event.payload, event.event_id, event.headers, key, event.ce_type)

    async def _one(self, sub: SubscriberSpec, record: ConsumerRecord[bytes, bytes],
                   decoded: Decoded, out: BatchResult) -> None:
        event: Any = decoded.payload
        try:
            model = sub.event_model or self._topic_model(record.topic)
        except Exception as exc:  # checked at start; a Topics built without the check
            self.dead_letter(record, "validate", exc, sub.name, 1, out)
            return
        if model is not None:
            try:
                event = model.model_validate(decoded.payload)
            except Exception as exc:
                # a ValidationError, or whatever a validator raised (RuntimeError, KeyError):
                # the record is dead-lettered with the reason, the partition moves on
                self.dead_letter(record, "validate", exc, sub.name, 1, out)
                return
        attempt = 1
        while True:
            ctx = SubscriberContext(
                hub=self.hub, subscriber=sub.name, topic=record.topic,
                partition=record.partition, offset=record.offset, key=decoded.key,
                timestamp=record.timestamp, headers=decoded.headers,
                event_id=decoded.event_id, attempt=attempt, replay=self.replaying,
            )
            try:
                with self.hub.start_scope(ctx.trigger, replay_id=self.replay_id,
                                          key=ctx.start_key) as scope, \
                        tracing.consuming(record.topic, record.partition, record.offset,
                                          decoded.key, sub.name, self.group,
                                          decoded.headers, decoded.event_id):
                    # tokens, not bound_contextvars: that one reads every context variable
                    # of the context first, on each record
                    bound = bind_contextvars(topic=record.topic, partition=record.partition,
                                             offset=record.offset, subscriber=sub.name)
                    try:
                        await sub.handler(event, ctx)
                    finally:
                        reset_contextvars(**bound)
            except Exception as exc:
                if attempt > sub.max_retries:
                    self.dead_letter(record, "handler", exc, sub.name, attempt, out)
                    return
                log.warning("subscriber_retry", subscriber=sub.name, topic=record.topic,
                            offset=record.offset, attempt=attempt, error=repr(exc)[:300])
                await self._sleep(sub.retry_backoff * (2 ** (attempt - 1)))
                attempt += 1
                continue
            out.rows.extend(scope.rows)
            out.origins.extend((record, sub.name) for _ in scope.rows)
            return


async def handle_batch(handling: Handling, records: Sequence[ConsumerRecord[bytes, bytes]],
                       max_in_flight: int) -> BatchResult:
    """Handle one partition's records: one lane per key, lanes side by side (bounded)."""
    out = BatchResult()
    lanes: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
    for r in records:
        lanes.setdefault(r.key, []).append(r)
    if len(lanes) == 1 or max_in_flight == 1:
        await _lane(handling, records, out)
        return out
    pending = iter(list(lanes.values()))

    async def runner() -> None:
        # a few runners pull whole lanes: a key's events stay in order, at most
        # ``max_in_flight`` keys are in hand, and no task is made per key
        for recs in pending:
            await _lane(handling, recs, out)

    await asyncio.gather(*(runner() for _ in range(min(max_in_flight, len(lanes)))))
    return out


async def _lane(handling: Handling, records: Sequence[ConsumerRecord[bytes, bytes]],
                out: BatchResult) -> None:
    """Records in order; a parked one stops the lane (what follows it waits behind it)."""
    for r in records:
        try:
            await handling.handle(r, out)
        except RecordParked as exc:
            out.parked.append(exc)
            return


class _Partition:
    """One assigned partition: its fetched records, and what they weigh until handled.

    The bytes of the batch in hand count until it is settled: a handler that is slow on
    large records holds them in memory as surely as the queue does."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.queue: deque[ConsumerRecord[bytes, bytes]] = deque()
        self.queued_bytes = 0
        self.batch_bytes = 0
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.parked = False
        self.committed: int | None = None

    @property
    def backlog_bytes(self) -> int:
        """Bytes fetched and not yet handled: queued, plus the batch being handled."""
        return self.queued_bytes + self.batch_bytes

    def push(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        self.queue.extend(records)
        self.queued_bytes += sum(held_bytes(r) for r in records)
        self._report()

    def take(self, n: int) -> list[ConsumerRecord[bytes, bytes]]:
        batch = [self.queue.popleft() for _ in range(n)]
        moved = sum(held_bytes(r) for r in batch)
        self.queued_bytes -= moved
        self.batch_bytes = moved
        return batch

    def settled(self) -> None:
        self.batch_bytes = 0
        self._report()

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self._report()

    def _report(self) -> None:
        metrics.BACKLOG_BYTES.labels(self.tp.topic, str(self.tp.partition)).set(
            self.backlog_bytes)


class ConsumerRuntime(ConsumerRebalanceListener):  # type: ignore[misc]
    """One consumer in the deployment's group, driving every subscribed topic."""

    def __init__(self, hub: Hub, topics: Topics, settings: KafkaSettings, bootstrap: str,
                 subscribers: SubscriberRegistry = SUBSCRIBERS, *,
                 registry: SchemaRegistry | None = None) -> None:
        self.hub = hub
        self.topics = topics
        self.settings = settings
        self.bootstrap = bootstrap
        self.subscribers = subscribers
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._handling: Handling | None = None
        self._registry = registry
        self._owns_registry = registry is None
        self.stats = {"handled": 0, "dead_lettered": 0, "batches": 0, "starts": 0}
        self.parked: dict[TopicPartition, int] = {}
        """Parked partitions and the offset each stopped at."""
        self.paused: set[TopicPartition] = set()
        """Partitions paused for backpressure (not the parked ones), until they drain."""
        # offsets of partitions whose batches land together go in one OffsetCommit
        # (aiokafka sends one commit at a time anyway)
        self._commits: Batcher[tuple[TopicPartition, int], TopicPartition] = Batcher(
            self._commit_offsets, lambda r: r[0], max_inflight=1)
        self.ready = asyncio.Event()

    async def start(self) -> None:
        names = self.subscribers.topics()
        for name in names:
            self.topics[name]  # raises, naming the file, for an undeclared topic
        if self._registry is None:
            self._registry = registry_for(self.topics, names, self.settings)
        async with explained_start(self.settings, self.bootstrap, "checking dead-letter topics"):
            await self._check_dead_letter_topics(names)
        kw = client_kwargs(self.settings, self.bootstrap)
        self._producer = await start_producer(
            self.settings, self.bootstrap, max_request_size=self.hub.settings.max_event_bytes)
        self._consumer = AIOKafkaConsumer(
            **kw,
            group_id=self.settings.group,
            group_instance_id=self.settings.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            max_poll_records=self.settings.max_poll_records,
            session_timeout_ms=self.settings.session_timeout_ms,
            rebalance_timeout_ms=self.settings.rebalance_timeout_ms,
            isolation_level="read_committed",
        )
        self._consumer.subscribe(topics=names, listener=self)
        try:
            async with explained_start(self.settings, self.bootstrap, "starting the consumer"):
                await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            await self._producer.stop()
            self._consumer = self._producer = None
            raise
        self._handling = Handling(self.hub, self.topics, self.subscribers, self._producer,
                                  self.settings.group,
                                  max_message_bytes=self.hub.settings.max_event_bytes,
                                  formats=EventFormats(self._registry))
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="hub-fetch")
        log.info("consumer_started", group=self.settings.group, topics=names)

    async def _check_dead_letter_topics(self, names: list[str]) -> None:
        """Before any record is fetched: a poison record must have somewhere to go."""
        wanted = {name: dead_letter_topic(self.topics, name) for name in names}
        deadline = time.monotonic() + 5.0
        while True:
            present = await existing_topics(self.settings, self.bootstrap)
            missing = {n: d for n, d in wanted.items() if d not in present}
            # a topic created a moment ago may not be in every broker's metadata yet
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if not missing:
            return
        name, dlq = sorted(missing.items())[0]
        if dlq in self.topics:
            fix = f"create it with `hub topics apply` (it is declared in {self.topics.path})"
        else:
            fix = (f"declare `dead_letter:` for {name!r} in {self.topics.path} and create it "
                   "with `hub topics apply`")
        raise DeadLetterTopicMissing(
            f"subscribed topic {name!r} has no dead-letter topic on the broker at "
            f"{self.bootstrap}: {dlq!r} does not exist, so a record it cannot handle would stall "
            f"its partition; {fix}"
            + (f" ({len(missing) - 1} more subscribed topic(s) too)" if len(missing) > 1 else ""))

    # -- rebalance -----------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish the batch in hand (bounded), commit it, forget the rest (redelivered)."""
        parts = [self._parts.pop(tp) for tp in revoked if tp in self._parts]
        for p in parts:
            if self.parked.pop(p.tp, None) is not None:
                metrics.PARTITIONS_PARKED.labels(p.tp.topic, str(p.tp.partition)).set(0)
            p.stopping = True
            p.clear()
            p.ready.set()
            self._unpause(p.tp)
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks,
                                               timeout=self.settings.shutdown_timeout_s)
            for t in pending:
                t.cancel()
        if parts:
            log.info("partitions_revoked", partitions=[f"{p.tp.topic}/{p.tp.partition}"
                                                       for p in parts])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._parts:
                part = _Partition(tp)
                part.task = asyncio.create_task(self._work(part),
                                                name=f"hub-part-{tp.topic}-{tp.partition}")
                self._parts[tp] = part
        if assigned:
            log.info("partitions_assigned",
                     partitions=[f"{tp.topic}/{tp.partition}" for tp in assigned])
        self.ready.set()

    # -- loops ---------------------------------------------------------------------------
    def _full(self, part: _Partition) -> bool:
        """Over either bound: more records, or more bytes, fetched than handled."""
        return (len(part.queue) >= self.settings.max_backlog_per_partition
                or part.backlog_bytes >= self.settings.max_backlog_bytes_per_partition)

    def _drained(self, part: _Partition) -> bool:
        """Below half of both bounds: resuming at half (not just under the bound) keeps a
        partition near its limit from pausing and resuming on every fetch."""
        return (len(part.queue) <= self.settings.max_backlog_per_partition // 2
                and part.backlog_bytes <= self.settings.max_backlog_bytes_per_partition // 2)

    def _unpause(self, tp: TopicPartition) -> None:
        if tp in self.paused:
            self.paused.discard(tp)
            metrics.PARTITIONS_PAUSED.labels(tp.topic, str(tp.partition)).set(0)

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        paused = self.paused
        while not self._stopping:
            try:
                data = await consumer.getmany(timeout_ms=200,
                                              max_records=self.settings.max_poll_records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("fetch_failed", error=repr(exc)[:300])
                await asyncio.sleep(1.0)
                continue
            for tp, records in data.items():
                part = self._parts.get(tp)
                if part is None or part.stopping or part.parked:
                    continue
                part.push(records)
                part.ready.set()
                if tp not in paused and self._full(part):
                    consumer.pause(tp)
                    paused.add(tp)
                    metrics.PARTITIONS_PAUSED.labels(tp.topic, str(tp.partition)).set(1)
                    log.info("partition_paused", topic=tp.topic, partition=tp.partition,
                             records=len(part.queue), bytes=part.backlog_bytes)
            for tp in list(paused):
                part = self._parts.get(tp)
                if part is not None and part.parked:
                    self._unpause(tp)  # it stays paused: only a reassignment resumes it
                elif part is None or self._drained(part):
                    if tp in consumer.assignment():
                        consumer.resume(tp)
                    self._unpause(tp)

    async def _work(self, part: _Partition) -> None:
        assert self._handling is not None and self._consumer is not None
        while True:
            await part.ready.wait()
            part.ready.clear()
            while part.queue and not part.parked:
                n = min(len(part.queue), self.settings.max_poll_records)
                batch = part.take(n)
                try:
                    await self._settle(part, batch)
                finally:
                    part.settled()
                if part.stopping:
                    return
            if part.stopping:
                return

    async def _settle(self, part: _Partition, batch: list[ConsumerRecord[bytes, bytes]]
                      ) -> None:
        """Process the batch; retry a failure (bounded, with backoff), then park."""
        delay = 0.5
        attempts = self.settings.batch_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._process(part, batch)
                return
            except asyncio.CancelledError:
                raise
            except RecordParked as exc:  # retrying cannot make it fit
                self._park(part, exc.record.offset, exc.reason)
                return
            except Exception as exc:
                # never die silently: the partition would stall unseen. Handling a batch
                # again is safe (starts are idempotent by transaction id)
                if attempt == attempts:
                    self._park(part, batch[0].offset,
                               f"its batch failed {attempts} times, last with {exc!r}"[:500])
                    return
                log.error("batch_failed", topic=part.tp.topic, partition=part.tp.partition,
                          first_offset=batch[0].offset, attempt=attempt,
                          error=repr(exc)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if part.stopping:
                    return

    def _park(self, part: _Partition, offset: int, reason: str) -> None:
        """Stop the partition at ``offset``, uncommitted and visible: the record is neither
        lost nor retried for ever; a reassignment (a restart, a rebalance) tries it again."""
        part.parked = True
        part.clear()
        assert self._consumer is not None
        if part.tp in self._consumer.assignment():
            self._consumer.pause(part.tp)
        self.parked[part.tp] = offset
        metrics.PARTITIONS_PARKED.labels(part.tp.topic, str(part.tp.partition)).set(1)
        log.error("partition_parked", topic=part.tp.topic, partition=part.tp.partition,
                  offset=offset, reason=reason,
                  fix="fix the cause (see docs/operations.md, Parked partitions), then "
                      "restart the worker: the partition resumes at this offset")

    async def _process(self, part: _Partition,
                       batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._handling is not None and self._consumer is not None
        result = await handle_batch(self._handling, batch,
                                    self.settings.max_in_flight_per_partition)
        created = await self._flush_starts(result)
        sent = await asyncio.gather(*result.dead, return_exceptions=True)
        result.parked.extend(x for x in sent if isinstance(x, RecordParked))
        failed = [x for x in sent if isinstance(x, BaseException) and
                  not isinstance(x, RecordParked)]
        if failed:
            raise failed[0]
        parked = min(result.parked, key=lambda p: p.record.offset, default=None)
        # everything before a parked record is settled (its lane stopped at it; the other
        # lanes ran to their end): commit up to it, not past it
        next_offset = parked.record.offset if parked is not None else batch[-1].offset + 1
        try:
            if next_offset > batch[0].offset:
                await self._commits.write((part.tp, next_offset))
                part.committed = next_offset
        except Exception as exc:
            # a rebalance took the partition: the new owner re-reads from the last commit,
            # and its starts find these transaction ids already stored
            log.warning("commit_failed", topic=part.tp.topic, partition=part.tp.partition,
                        offset=next_offset, error=repr(exc)[:300])
        self.stats["handled"] += result.handled
        metrics.EVENTS_HANDLED.labels(part.tp.topic).inc(result.handled)
        hw = self._consumer.highwater(part.tp)
        if hw is not None:
            metrics.CONSUMER_LAG.labels(part.tp.topic, str(part.tp.partition)).set(
                max(0, hw - next_offset))
        self.stats["dead_lettered"] += result.dead_lettered
        self.stats["batches"] += 1
        self.stats["starts"] += len(created)
        if parked is not None:
            raise parked

    async def _flush_starts(self, result: BatchResult) -> set[uuid.UUID]:
        """The batch's starts (still one shared statement); a start Postgres refuses for what
        its row holds dead-letters its record (stage ``start``) instead of failing the batch
        on every try. Any other failure fails the batch (retried)."""
        assert self._handling is not None
        outcomes = await self.hub.flush_starts_each(result.rows)
        created: set[uuid.UUID] = set()
        refused: dict[int, tuple[ConsumerRecord[bytes, bytes], str, BaseException]] = {}
        for row, (record, sub), outcome in zip(result.rows, result.origins, outcomes,
                                                strict=True):
            if outcome is True:
                created.add(row.id)
            elif not isinstance(outcome, BaseException):
                continue  # already started: a redelivery
            elif is_data_error(outcome):
                refused.setdefault(record.offset, (record, sub, outcome))
            else:
                raise outcome
        for record, sub, exc in refused.values():
            try:
                self._handling.dead_letter(record, "start", exc, sub, 1, result)
            except RecordParked as parked:
                result.parked.append(parked)
        return created

    async def _commit_offsets(
        self, rows: Sequence[tuple[TopicPartition, int]]
    ) -> set[TopicPartition]:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp, offset in rows:
            offsets[tp] = max(offset, offsets.get(tp, 0))
        await self._consumer.commit(
            {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        return set(offsets)

    # -- shutdown ------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop fetching, drain what was fetched, commit, leave the group (bounded)."""
        self._stopping = True
        if self._fetch_task is not None:
            self._fetch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fetch_task
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        for part in list(self._parts.values()):
            part.stopping = True
            part.ready.set()
        tasks = [p.task for p in self._parts.values() if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))
            for t in pending:
                t.cancel()
        for part in self._parts.values():
            part.clear()
        self._parts.clear()
        for tp in list(self.paused):
            self._unpause(tp)
        for tp in self.parked:  # the partitions are no longer ours to report
            metrics.PARTITIONS_PARKED.labels(tp.topic, str(tp.partition)).set(0)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 10)
        if self._registry is not None and self._owns_registry:
            await self._registry.aclose()
            self._registry = None
        log.info("consumer_stopped", **self.stats)
