"""``hub dlq``: read dead-lettered events, and redrive them.

A dead-letter topic is read without a consumer group: the records are the evidence, so
nothing here moves or deletes them. It is read a bounded page at a time: at most
``PAGE_LIMIT`` records and ``PAGE_BYTES`` of them, from an offset per partition (a cursor),
oldest first (partition, then offset); a dead letter named by its position is read alone;
counts come from the partitions' offsets, never from reading records. A topic that a
producer loop filled with millions of letters costs a page per request, not the topic.
A redrive sends the original record back to its topic (marked with ``hub.redriven.from``)
or hands it straight to one subscriber, and is recorded in Postgres (who, when, where to),
so ``list`` shows what was redriven.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from hub import metrics
from hub import wire as h
from hub.engine.hub import Hub
from hub.errors import HubError
from hub.runtime.consumer import BatchResult, Handling, decode_headers
from hub.runtime.dlq_cursor import decode_cursor, encode_cursor
from hub.runtime.formats import EventFormats
from hub.runtime.kafka import client_kwargs, start_producer
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.sizes import held_bytes
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics
from hub.settings import KafkaSettings


@dataclass
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]
    redriven: list[dict[str, Any]]
    raw_key: bytes | None = None
    raw_headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.dlq_topic}/{self.partition}/{self.offset}"

    def summary(self) -> dict[str, Any]:
        hd = self.headers
        return {
            "ref": self.ref, "topic": hd.get(h.DLQ_TOPIC), "partition": hd.get(h.DLQ_PARTITION),
            "offset": hd.get(h.DLQ_OFFSET), "key": self.key, "stage": hd.get(h.DLQ_STAGE),
            "subscriber": hd.get(h.DLQ_SUBSCRIBER) or None,
            "error": hd.get(h.DLQ_EXCEPTION_CLASS, "").rsplit(".", 1)[-1],
            "message": (hd.get(h.DLQ_EXCEPTION_MESSAGE) or "")[:200],
            "redriven": [str(r["redriven_at"]) + " -> " + r["target"] for r in self.redriven],
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "headers": self.headers,
                "value": self.value.decode("utf-8", "replace") if self.value is not None
                else None}


def dead_letter_topics(topics: Topics) -> list[str]:
    return sorted({t.dead_letter for t in topics if t.dead_letter})


PAGE_LIMIT = 200
"""Dead letters one page holds at most, whatever a caller asks for."""
PAGE_BYTES = 4 * 1024 * 1024
"""Key, value and header bytes one page holds at most: a page of large letters is cut short
(with a cursor to the rest) rather than grow a request's memory with the letters' size."""
_IDLE_POLLS = 6
"""Empty fetches (500 ms each) after which a partition's read stops short of its end: a gap
left by compaction or a transaction marker moves the position without a record."""


@dataclass(frozen=True)
class DeadLetterPage:
    """A bounded slice of one dead-letter topic, and where the next one starts."""

    topic: str
    letters: list[DeadLetter]
    next: str | None
    """The cursor of the next page; None on the last."""
    fetched: int
    """Records fetched from the broker for this page (at most ``PAGE_LIMIT``)."""


@dataclass(frozen=True)
class DeadLetterCount:
    """How many dead letters a topic holds, from its offsets (end minus beginning)."""

    topic: str
    held: int
    redriven: int
    """Of those, redriven at least once (from Postgres, not from the records)."""
    approximate: bool
    """A compacted topic holds fewer records than its offsets span: ``held`` is an upper
    bound ("about")."""

    @property
    def waiting(self) -> int:
        return max(0, self.held - self.redriven)


def parse_ref(ref: str) -> tuple[str, int, int]:
    """``dlq-topic/partition/offset`` to its parts; HubError naming the form otherwise."""
    topic, _, rest = ref.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    if not topic or not partition.isdigit() or not rest.isdigit() or len(ref) > 500:
        raise HubError(f"{ref[:100]!r} is not a dead letter: write dlq-topic/partition/offset")
    return topic, int(partition), int(rest)


@asynccontextmanager
async def _reader(settings: KafkaSettings, bootstrap: str, dlq_topic: str
                  ) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A group-less consumer of ``dlq_topic`` and its partitions, none assigned yet."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(dlq_topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(dlq_topic) or set()
        yield consumer, [TopicPartition(dlq_topic, p) for p in sorted(parts)]
    finally:
        await consumer.stop()


async def _offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition]
                   ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int], int]:
    """Beginning and end offsets, and the records fetched to learn them.

    The end is the high watermark a fetch reports: some brokers (Tansu) answer ListOffsets
    with the base offset of the last record batch, short of the records in it, so one small
    fetch per partition (at most a record each handed to us) corrects the end."""
    if not tps:
        return {}, {}, 0
    begin: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    end: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(begin[tp], end[tp] - 1))
    fetched = 0
    for _ in range(_IDLE_POLLS):
        got = await consumer.getmany(*tps, timeout_ms=500, max_records=len(tps))
        fetched += sum(len(v) for v in got.values())
        marks = {tp: consumer.highwater(tp) for tp in tps}
        if all(m is not None for m in marks.values()):
            break
    for tp in tps:
        mark = consumer.highwater(tp)
        if mark is not None:
            end[tp] = max(end[tp], mark)
    return begin, end, fetched


async def read_dead_letters(hub: Hub, settings: KafkaSettings, bootstrap: str, dlq_topic: str,
                            *, cursor: str | None = None, limit: int = PAGE_LIMIT,
                            max_bytes: int = PAGE_BYTES,
                            upto: dict[int, int] | None = None) -> DeadLetterPage:
    """One page of ``dlq_topic``, oldest first, from ``cursor`` (default: the beginning).

    Each partition is read alone from its cursor offset, asking the broker for no more than
    the page still has room for; ``upto`` (partition: offset) stops short of later letters,
    so a walk over the topic ends even while letters keep arriving."""
    limit = max(1, min(limit, PAGE_LIMIT))
    start = decode_cursor(cursor) if cursor else {}
    records: list[ConsumerRecord[bytes, bytes]] = []
    size = 0
    full = False
    async with _reader(settings, bootstrap, dlq_topic) as (consumer, tps):
        begin, end, fetched = await _offsets(consumer, tps)
        if upto is not None:
            end = {tp: min(o, upto.get(tp.partition, o)) for tp, o in end.items()}
        pos = {tp: max(start.get(tp.partition, 0), begin[tp]) for tp in tps}
        for tp in tps:
            if full:
                break
            if pos[tp] >= end[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, pos[tp])
            idle = 0
            while pos[tp] < end[tp] and not full and idle < _IDLE_POLLS:
                got = (await consumer.getmany(tp, timeout_ms=500,
                                              max_records=limit - len(records))).get(tp, [])
                fetched += len(got)
                if not got:
                    idle += 1
                    pos[tp] = max(pos[tp], min(await consumer.position(tp), end[tp]))
                    continue
                idle = 0
                for r in got:
                    if r.offset >= end[tp]:
                        pos[tp] = end[tp]
                        break
                    n = held_bytes(r)
                    if records and size + n > max_bytes:
                        full = True
                        break
                    records.append(r)
                    size += n
                    pos[tp] = r.offset + 1
                    if len(records) >= limit:
                        full = True
                        break
    metrics.DEAD_LETTERS_READ.labels(dlq_topic).inc(fetched)
    more = any(pos[tp] < end[tp] for tp in tps)
    return DeadLetterPage(dlq_topic, await _letters(hub, dlq_topic, records),
                          encode_cursor({tp.partition: o for tp, o in pos.items()})
                          if more else None, fetched)


async def read_letters(hub: Hub, settings: KafkaSettings, bootstrap: str, refs: list[str]
                       ) -> dict[str, DeadLetter]:
    """The dead letters named (``dlq-topic/partition/offset``), each fetched alone; a ref
    past the topic's retention or end is absent from the result."""
    if len(refs) > PAGE_LIMIT:
        raise HubError(f"{len(refs)} dead letters named; at most {PAGE_LIMIT} at a time")
    wanted: dict[str, list[tuple[int, int]]] = {}
    for ref in refs:
        topic, partition, offset = parse_ref(ref)
        wanted.setdefault(topic, []).append((partition, offset))
    found: dict[str, DeadLetter] = {}
    for topic, positions in wanted.items():
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with _reader(settings, bootstrap, topic) as (consumer, tps):
            begin, end, fetched = await _offsets(consumer, tps)
            by_number = {tp.partition: tp for tp in tps}
            for partition, offset in sorted(set(positions)):
                tp = by_number.get(partition)
                if tp is None or not begin[tp] <= offset < end[tp]:
                    continue
                consumer.assign([tp])
                consumer.seek(tp, offset)
                for _ in range(_IDLE_POLLS):
                    got = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, [])
                    fetched += len(got)
                    if got or await consumer.position(tp) > offset:
                        records.extend(r for r in got if r.offset == offset)
                        break
        metrics.DEAD_LETTERS_READ.labels(topic).inc(fetched)
        found.update((d.ref, d) for d in await _letters(hub, topic, records))
    return found


async def count_dead_letters(hub: Hub, settings: KafkaSettings, bootstrap: str,
                             dlq_topic: str, *, compacted: bool = False) -> DeadLetterCount:
    """Letters held (end minus beginning offset, per partition) and how many of them were
    redriven, without reading the letters (a record per partition at most, for its end)."""
    async with _reader(settings, bootstrap, dlq_topic) as (consumer, tps):
        begin, end, fetched = await _offsets(consumer, tps)
    metrics.DEAD_LETTERS_READ.labels(dlq_topic).inc(fetched)
    ranges = [(tp.partition, begin[tp], end[tp]) for tp in tps if end[tp] > begin[tp]]
    held = sum(hi - lo for _, lo, hi in ranges)
    redriven = await hub.store.redriven_count(dlq_topic, ranges)
    return DeadLetterCount(dlq_topic, held, redriven, compacted)


async def end_offsets(settings: KafkaSettings, bootstrap: str, dlq_topic: str
                      ) -> dict[int, int]:
    """Where each partition of ``dlq_topic`` ends now (the ``upto`` of a walk)."""
    async with _reader(settings, bootstrap, dlq_topic) as (consumer, tps):
        _, end, fetched = await _offsets(consumer, tps)
    metrics.DEAD_LETTERS_READ.labels(dlq_topic).inc(fetched)
    return {tp.partition: o for tp, o in end.items()}


async def _letters(hub: Hub, dlq_topic: str, records: list[ConsumerRecord[bytes, bytes]]
                   ) -> list[DeadLetter]:
    """Records as dead letters, with their redrives (read for these positions only)."""
    redrives: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in await hub.store.redrives_at(dlq_topic, [(x.partition, x.offset) for x in records]):
        redrives.setdefault((r["partition"], r["offset"]), []).append(r)
    return [
        DeadLetter(dlq_topic, r.partition, r.offset, r.timestamp,
                   r.key.decode("utf-8", "replace") if r.key is not None else None, r.value,
                   decode_headers(r.headers), redrives.get((r.partition, r.offset), []),
                   r.key, tuple((k, bytes(v)) for k, v in r.headers or ()))
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    ]


async def redrive(hub: Hub, topics: Topics, subscribers: SubscriberRegistry,
                  settings: KafkaSettings, bootstrap: str, letters: list[DeadLetter], *,
                  to_subscriber: bool = False, by: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Send each letter back to its topic, or straight to its subscriber; record it."""
    who = by or getpass.getuser()
    done: list[dict[str, Any]] = []
    producer = await start_producer(settings, bootstrap,
                                    max_request_size=hub.settings.max_event_bytes)
    registry = SchemaRegistry.from_settings(settings) if to_subscriber else None
    try:
        for letter in letters:
            original = letter.headers.get(h.DLQ_TOPIC)
            if not original:
                raise HubError(f"{letter.ref} has no {h.DLQ_TOPIC} header: not a hub dead letter")
            # the original key and headers go back byte for byte: a re-encoded key would
            # land on another partition
            raw = letter.raw_headers or tuple((k, v.encode()) for k, v in letter.headers.items())
            headers = [(k, v) for k, v in raw if not k.startswith(h.DLQ_PREFIX)]
            key = (letter.raw_key if letter.raw_key is not None
                   else letter.key.encode() if letter.key is not None else None)
            headers.append((h.REDRIVEN_FROM, letter.ref.encode()))
            if to_subscriber:
                sub = letter.headers.get(h.DLQ_SUBSCRIBER) or None
                record = ConsumerRecord(
                    topic=original, partition=int(letter.headers.get(h.DLQ_PARTITION, "0")),
                    offset=int(letter.headers.get(h.DLQ_OFFSET, "0")),
                    timestamp=letter.timestamp, timestamp_type=0,
                    key=key, value=letter.value, checksum=None, serialized_key_size=-1,
                    serialized_value_size=-1, headers=tuple(headers))
                out = BatchResult()
                handling = Handling(hub, topics, subscribers, producer, settings.group,
                                    max_message_bytes=hub.settings.max_event_bytes,
                                    formats=EventFormats(registry))
                await handling.handle(record, out, only=sub)
                for fut in out.dead:
                    await fut
                if out.dead_lettered:
                    raise HubError(f"{letter.ref} failed again: it is dead-lettered anew")
                await hub.flush_starts(out.rows)
                target = f"subscriber:{sub or 'all'}"
            else:
                await producer.send_and_wait(
                    original, letter.value,
                    key=key, headers=headers)
                target = f"topic:{original}"
            await hub.store.record_redrive(letter.dlq_topic, letter.partition, letter.offset,
                                           target, who)
            done.append({"ref": letter.ref, "target": target, "by": who})
            if progress is not None:
                progress(len(done), len(letters))
    finally:
        await producer.stop()
        if registry is not None:
            await registry.aclose()
    return done
