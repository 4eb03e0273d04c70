"""The consumer's backlog is bounded in bytes as well as records.

A count of records alone lets a few large records fill a worker's memory: a partition whose
fetched-but-unhandled records pass ``HUB_KAFKA_MAX_BACKLOG_BYTES_PER_PARTITION`` is paused
until half of it is drained, and every record is still handled once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from hub import Hub, SubscriberContext, subscriber
from hub.metrics import REGISTRY
from hub.runtime.admin import consumer_lag, reconcile
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.conftest import broker_session_ms
from tests.test_subscribers import until

pytestmark = pytest.mark.broker

RECORDS = 80
PAD = 32 * 1024
"""80 records of 32 KiB: 2.5 MiB, ten times the bytes bound, far under the records bound."""


class Blob(BaseModel):
    id: str
    pad: str = ""


async def test_a_partition_is_paused_on_bytes_then_resumes_and_handles_each_record_once(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.big:
    partitions: 1
    dead_letter: {prefix}.big.dlq
  {prefix}.big.dlq:
    partitions: 1
""")
    topics = load_topics(path)
    await reconcile(topics, KafkaSettings(bootstrap=kafka_bootstrap), kafka_bootstrap,
                    create=True)
    topic = f"{prefix}.big"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, json.dumps({"id": str(i), "pad": "x" * PAD}).encode(),
                                    key=f"k{i}".encode()) for i in range(RECORDS)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    gate = asyncio.Event()
    seen: list[str] = []
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_blob(event: Blob, ctx: SubscriberContext) -> None:
        await gate.wait()  # a slow subscriber: nothing is handled until the gate opens
        seen.append(event.id)

    s = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-hub",
                      session_timeout_ms=broker_session_ms(), rebalance_timeout_ms=10_000,
                      max_poll_records=4, max_backlog_per_partition=10_000,
                      max_backlog_bytes_per_partition=256 * 1024)
    rt = KafkaRuntime(hub, s, relay=False, subscribers=reg, topics=topics)
    tp = TopicPartition(topic, 0)
    await rt.start()
    try:
        assert rt.consumer is not None
        consumer = rt.consumer

        async def paused() -> bool:
            return tp in consumer.paused

        await until(paused, timeout=30)
        assert REGISTRY.get_sample_value("hub_consumer_partitions_paused",
                                         {"topic": topic, "partition": "0"}) == 1
        held = REGISTRY.get_sample_value("hub_consumer_backlog_bytes",
                                         {"topic": topic, "partition": "0"})
        assert held is not None and held >= 256 * 1024, "paused on bytes, not on records"
        assert not seen

        gate.set()

        async def all_handled_and_committed() -> bool:
            lag = await consumer_lag(s, kafka_bootstrap, [topic])
            return len(seen) >= RECORDS and lag[0].committed == RECORDS

        await until(all_handled_and_committed, timeout=60)

        async def resumed() -> bool:
            return tp not in consumer.paused

        await until(resumed, timeout=10)
        assert REGISTRY.get_sample_value("hub_consumer_partitions_paused",
                                         {"topic": topic, "partition": "0"}) == 0
    finally:
        await rt.stop()
    counts = Counter(seen)
    assert sorted(counts, key=int) == [str(i) for i in range(RECORDS)]
    assert set(counts.values()) == {1}, "each record handled exactly once"
