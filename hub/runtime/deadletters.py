"""``hub dlq``: read dead-lettered events, and redrive them.

A dead-letter topic is read without a consumer group, from its beginning: the records are
the evidence, so nothing here moves or deletes them. A redrive sends the original record
back to its topic (marked with ``hub.redriven.from``) or hands it straight to one subscriber,
and is recorded in Postgres (who, when, where to), so ``list`` shows what was redriven.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from hub.engine.hub import Hub
from hub.errors import HubError
from hub.runtime import constants as h
from hub.runtime.consumer import BatchResult, Handling, decode_headers
from hub.runtime.kafka import client_kwargs, start_producer
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


async def read_dead_letters(hub: Hub, settings: KafkaSettings, bootstrap: str,
                            dlq_topic: str) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        parts = consumer.partitions_for_topic(dlq_topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(dlq_topic) or set()
        tps = [TopicPartition(dlq_topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    redrives: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in await hub.store.redrives(dlq_topic):
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
                                    max_message_bytes=hub.settings.max_event_bytes)
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
    return done
