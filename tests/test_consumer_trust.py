"""The consumer under bad data: nothing stops it quietly, nothing loops on one record.

A missing dead-letter topic stops the start; a dead letter too large with its context is
sent with the context cut (value and key as they came); one that cannot fit at all parks its
partition, visibly, until it is reassigned; a start Postgres refuses dead-letters its record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel
from structlog.testing import capture_logs

from hub import Hub, SubscriberContext, subscriber
from hub import wire as h
from hub.metrics import REGISTRY
from hub.runtime.admin import consumer_lag, reconcile
from hub.runtime.consumer import DeadLetterTopicMissing
from hub.runtime.deadletters import read_dead_letters
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics, load_topics
from hub.settings import KafkaSettings
from tests.conftest import broker_session_ms
from tests.test_subscribers import order, produce, until
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

pytestmark = pytest.mark.broker


class Blob(BaseModel):
    id: str
    pad: str = ""


def topics_file(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.in:
    partitions: 1
    dead_letter: {prefix}.in.dlq
  {prefix}.in.dlq:
    partitions: 1
  order.recorded:
    partitions: 1
""")
    return path


def settings(bootstrap: str, prefix: str, **kw: Any) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, group=f"{prefix}-hub",
                         session_timeout_ms=broker_session_ms(), rebalance_timeout_ms=10_000,
                         **kw)


async def created(bootstrap: str, path: Path) -> Topics:
    topics = load_topics(path)
    await reconcile(topics, KafkaSettings(bootstrap=bootstrap), bootstrap, create=True)
    return topics


def failing_registry(topic: str, message: str) -> SubscriberRegistry:
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_blob(event: Blob, ctx: SubscriberContext) -> None:
        if event.id.startswith("bad"):
            raise RuntimeError(message)
        await record_order(ctx.hub).run(input=order(int(event.id)),
                                        transaction_id=f"blob:{event.id}", wait=False)

    return reg


async def send(bootstrap: str, topic: str, value: bytes, key: bytes,
               headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def started(hub: Hub) -> set[str]:
    rows = await hub.store.list_executions(workflow="record-order", limit=100)
    return {r["transaction_id"] for r in rows}


async def test_a_subscribed_topic_without_its_dead_letter_topic_stops_the_start(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    path = topics_file(tmp_path, prefix)
    topics = load_topics(path)
    only_input = Topics(path, {f"{prefix}.in": topics[f"{prefix}.in"]})
    await reconcile(only_input, KafkaSettings(bootstrap=kafka_bootstrap), kafka_bootstrap,
                    create=True)  # the input topic exists, its dead-letter topic does not
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False, create_topics=False,
                      subscribers=failing_registry(f"{prefix}.in", "x"), topics=topics)
    try:
        with pytest.raises(DeadLetterTopicMissing,
                           match=rf"subscribed topic '{prefix}\.in' .*'{prefix}\.in\.dlq' does "
                                 r"not exist.*`hub topics apply`"):
            await rt.start()
    finally:
        await rt.stop()


async def test_a_dead_letter_too_large_with_its_context_keeps_value_and_key_bytes(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, topics_file(tmp_path, prefix))
    # near the default 1 MiB limit: with a 20 kB error message and its traceback in the
    # context headers the dead letter would be refused by the producer, on every try
    value = json.dumps({"id": "bad-1", "pad": "é" * 520_000}, ensure_ascii=False).encode()
    key = b"\xff\xfebig"
    await send(kafka_bootstrap, f"{prefix}.in", value, key, [("x-blob", b"\x80\x00raw")])
    reg = failing_registry(f"{prefix}.in", "boom " * 4000)
    s = settings(kafka_bootstrap, prefix)
    rt = KafkaRuntime(hub, s, relay=False, subscribers=reg, topics=topics)
    await rt.start()
    try:
        async def dead() -> bool:
            page = await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.in.dlq")
            return bool(page.letters)

        await until(dead, timeout=60)
    finally:
        await rt.stop()
    [letter] = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.in.dlq")).letters
    assert letter.value == value, "the value byte for byte"
    assert letter.raw_key == key, "the key byte for byte"
    assert ("x-blob", b"\x80\x00raw") in letter.raw_headers
    assert letter.headers[h.DLQ_TRUNCATED] == "true"
    assert letter.headers[h.DLQ_STAGE] == "handler"
    assert letter.headers[h.DLQ_EXCEPTION_MESSAGE].startswith("boom boom")
    assert len(letter.headers[h.DLQ_EXCEPTION_MESSAGE]) <= 1000


async def test_a_record_that_cannot_be_dead_lettered_parks_its_partition_until_reassigned(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, topics_file(tmp_path, prefix))
    topic = f"{prefix}.in"
    await produce(kafka_bootstrap, topic, [("k", json.dumps({"id": "1"}).encode(), [])])
    big = json.dumps({"id": "bad-2", "pad": "p" * 100_000}).encode()
    await send(kafka_bootstrap, topic, big, b"k", [])
    await produce(kafka_bootstrap, topic, [("k", json.dumps({"id": "3"}).encode(), [])])
    reg = failing_registry(topic, "cannot handle it")
    small = settings(kafka_bootstrap, prefix)
    normal = hub.settings
    hub.settings = normal.model_copy(update={"max_event_bytes": 64 * 1024})
    tp = TopicPartition(topic, 0)
    with capture_logs() as logs:
        rt = KafkaRuntime(hub, small, relay=False, subscribers=reg, topics=topics)
        await rt.start()
        try:
            async def parked() -> bool:
                return rt.consumer is not None and tp in rt.consumer.parked

            await until(parked, timeout=60)
            assert rt.consumer is not None and rt.consumer.parked[tp] == 1
            assert REGISTRY.get_sample_value(
                "hub_consumer_partitions_parked", {"topic": topic, "partition": "0"}) == 1
        finally:
            await rt.stop()
    [event] = [e for e in logs if e["event"] == "partition_parked"]
    assert event["offset"] == 1 and "HUB_MAX_EVENT_BYTES=65536" in event["reason"]
    [lag] = await consumer_lag(small, kafka_bootstrap, [topic])
    assert lag.committed == 1, "committed up to the parked record, not past it"
    assert await started(hub) == {"blob:1"}
    # the limit raised, the next owner of the partition resumes at the parked record
    hub.settings = normal
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False, subscribers=reg,
                      topics=topics)
    await rt.start()
    try:
        async def resumed() -> bool:
            return await started(hub) == {"blob:1", "blob:3"}

        await until(resumed, timeout=60)
    finally:
        await rt.stop()
    [letter] = (await read_dead_letters(hub, small, kafka_bootstrap, f"{prefix}.in.dlq")).letters
    assert letter.value == big


async def test_a_start_postgres_refuses_dead_letters_its_record_and_the_partition_moves_on(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, topics_file(tmp_path, prefix))
    topic = f"{prefix}.in"
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        # the shop's reference header becomes the transaction id: a NUL in it is text
        # Postgres cannot hold, on every try
        ref = ctx.headers.get("x-order-ref", event.id)
        await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{ref}",
                                        wait=False)

    await produce(kafka_bootstrap, topic, [
        ("k", json.dumps(order(1)).encode(), [("x-order-ref", b"o\x001")]),
        ("k", json.dumps(order(2)).encode(), []),
    ])
    s = settings(kafka_bootstrap, prefix)
    rt = KafkaRuntime(hub, s, relay=False, subscribers=reg, topics=topics)
    await rt.start()
    try:
        async def settled() -> bool:
            [lag] = await consumer_lag(s, kafka_bootstrap, [topic])
            return lag.committed == 2

        await until(settled, timeout=60)
    finally:
        await rt.stop()
    assert await started(hub) == {"order.placed:o2"}
    [letter] = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.in.dlq")).letters
    assert letter.headers[h.DLQ_STAGE] == "start"
    assert letter.headers[h.DLQ_OFFSET] == "0"
    assert letter.headers[h.DLQ_SUBSCRIBER] == "on_order"


async def test_a_batch_that_keeps_failing_is_tried_a_bounded_number_of_times_then_parked(
        hub: Hub, dsn: str, schema: str, kafka_bootstrap: str, prefix: str,
        tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, topics_file(tmp_path, prefix))
    topic = f"{prefix}.in"
    conn = await asyncpg.connect(dsn)
    try:  # a constraint a DBA added: every try of this start is refused, not for its text
        await conn.execute(f"ALTER TABLE {schema}.execution ADD CONSTRAINT no_stuck "
                           "CHECK (transaction_id NOT LIKE 'blob:7%') NOT VALID")
    finally:
        await conn.close()
    await produce(kafka_bootstrap, topic, [("k", json.dumps({"id": "7"}).encode(), [])])
    s = settings(kafka_bootstrap, prefix, batch_max_attempts=3)
    tp = TopicPartition(topic, 0)
    with capture_logs() as logs:
        rt = KafkaRuntime(hub, s, relay=False, topics=topics,
                          subscribers=failing_registry(topic, "x"))
        await rt.start()
        try:
            async def parked() -> bool:
                return rt.consumer is not None and tp in rt.consumer.parked

            await until(parked, timeout=60)
        finally:
            await rt.stop()
    assert [e["attempt"] for e in logs if e["event"] == "batch_failed"] == [1, 2]
    [event] = [e for e in logs if e["event"] == "partition_parked"]
    assert event["offset"] == 0 and "failed 3 times" in event["reason"]
    assert "CheckViolation" in event["reason"]
    [lag] = await consumer_lag(s, kafka_bootstrap, [topic])
    assert lag.committed is None, "nothing committed past the record"
