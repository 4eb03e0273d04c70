"""Events in, durable workflow starts out; poison events to the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub import (
    Hub,
    SubscriberContext,
    WorkflowResponse,
    create_step,
    create_workflow,
    subscriber,
)
from hub import wire as h
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics, load_topics
from hub.settings import KafkaSettings
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

pytestmark = pytest.mark.broker

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def order(i: int, *, total: int | None = None) -> dict[str, Any]:
    return {"id": f"o{i}", "customer_email": f"c{i}@example.com", "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500}],
            "total": 1000 if total is None else total}


def topics_for(tmp_path: Path, prefix: str) -> Topics:
    text = f"""
topics:
  {prefix}.order.placed:
    partitions: 4
    event: workflows.events:OrderPlaced
    schema_version: 2
    accepted_versions: [1]
    dead_letter: {prefix}.order.placed.dlq
  {prefix}.order.placed.dlq:
    partitions: 1
  {prefix}.order.confirmed:
    partitions: 1
    event: workflows.events:OrderConfirmed
"""
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    return load_topics(path)


@pytest.fixture
def registry(prefix: str) -> SubscriberRegistry:
    reg = SubscriberRegistry()
    failures: dict[str, int] = {}

    @subscriber(f"{prefix}.order.placed", registry=reg, max_retries=2, retry_backoff=0.01)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        if event.customer_email.startswith("flaky"):
            failures[event.id] = failures.get(event.id, 0) + 1
            if failures[event.id] <= 2:
                raise ConnectionError("CRM briefly unavailable")
        if event.customer_email.startswith("broken"):
            raise RuntimeError(f"cannot handle {event.id}")
        await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                        wait=False)

    return reg


@pytest.fixture
async def runtime(hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path,
                  registry: SubscriberRegistry) -> AsyncIterator[KafkaRuntime]:
    settings = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-hub",
                             fetch_max_wait_ms=20)
    rt = KafkaRuntime(hub, settings, subscribers=registry, topics=topics_for(tmp_path, prefix))
    await rt.start()
    assert rt.consumer is not None
    await asyncio.wait_for(rt.consumer.ready.wait(), 30)
    try:
        yield rt
    finally:
        await rt.stop()


async def produce(bootstrap: str, topic: str,
                  records: list[tuple[str | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key.encode() if key else None,
                                         headers=headers)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, n: int, timeout: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


async def until(predicate: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_events_become_durable_starts_with_lineage(
        hub: Hub, runtime: KafkaRuntime, kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.order.placed"
    await produce(kafka_bootstrap, topic,
                  [(f"o{i}", json.dumps(order(i)).encode(),
                    [("traceparent", TRACEPARENT.encode())]) for i in range(20)])

    async def all_done() -> bool:
        runs = await hub.store.list_executions(workflow="record-order", limit=100)
        return len(runs) == 20 and all(r["status"] == "succeeded" for r in runs)

    await until(all_done)
    run = await hub.get_run("order.placed:o7")
    assert run.trigger is not None
    assert run.trigger["traceparent"] == TRACEPARENT, "trace context carried into the run"
    stored = await hub.store.outbox_for_execution(__import__("uuid").UUID(run.id))
    assert stored and stored[0]["headers"]["traceparent"] == TRACEPARENT
    assert run.trigger["topic"] == topic and run.trigger["event_id"] == "o7"
    assert run.trigger["key"] == "o7" and isinstance(run.trigger["offset"], int)
    assert run.result["order"] == {"order_id": "o7", "total": 1000, "currency": "EUR"}


async def test_redelivered_event_starts_nothing_new(
        hub: Hub, runtime: KafkaRuntime, kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.order.placed"
    same = json.dumps(order(1)).encode()
    await produce(kafka_bootstrap, topic, [("o1", same, []), ("o1", same, []), ("o1", same, [])])
    assert runtime.consumer is not None

    async def consumed() -> bool:
        return runtime.consumer is not None and runtime.consumer.stats["handled"] >= 3

    await until(consumed)
    runs = await hub.store.list_executions(workflow="record-order", limit=10)
    assert len(runs) == 1


async def test_poison_events_are_dead_lettered_and_good_ones_flow(
        hub: Hub, runtime: KafkaRuntime, kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.order.placed"
    key = "same-key"  # all in one partition: the poison ones must not stall the good ones
    await produce(kafka_bootstrap, topic, [
        (key, b"\xff\xfe not utf-8", []),
        (key, b"{not json", []),
        (key, json.dumps({"id": "x"}).encode(), []),
        (key, json.dumps(order(90)).encode(), [(h.SCHEMA_VERSION, b"7")]),
        (key, json.dumps({**order(91), "customer_email": "broken@x"}).encode(), []),
        (key, json.dumps({**order(92), "customer_email": "flaky@x"}).encode(), []),
        (key, json.dumps(order(93)).encode(), [(h.SCHEMA_VERSION, b"1")]),
    ])
    dead = await read_all(kafka_bootstrap, f"{prefix}.order.placed.dlq", 5)
    assert len(dead) == 5
    stages = []
    for rec in dead:
        hd = {k: v.decode() for k, v in rec.headers}
        assert hd[h.DLQ_TOPIC] == topic
        assert hd[h.DLQ_KEY] == key
        assert int(hd[h.DLQ_PARTITION]) >= 0 and int(hd[h.DLQ_OFFSET]) >= 0
        assert hd[h.DLQ_TIMESTAMP].isdigit()
        assert hd[h.DLQ_EXCEPTION_CLASS] and hd[h.DLQ_EXCEPTION_MESSAGE]
        stages.append(hd[h.DLQ_STAGE])
    assert stages == ["deserialize", "deserialize", "validate", "schema_version", "handler"]
    handler_dead = {k: v.decode() for k, v in dead[4].headers}
    assert handler_dead[h.DLQ_ATTEMPTS] == "3"
    assert "cannot handle o91" in handler_dead[h.DLQ_EXCEPTION_MESSAGE]
    assert "Traceback" in handler_dead[h.DLQ_EXCEPTION_STACKTRACE]

    async def good_ones_started() -> bool:
        runs = await hub.store.list_executions(workflow="record-order", limit=10)
        return {r["transaction_id"] for r in runs} == {"order.placed:o92", "order.placed:o93"}

    await until(good_ones_started)


async def test_failed_workflow_does_not_dead_letter_the_event(
        hub: Hub, runtime: KafkaRuntime, kafka_bootstrap: str, prefix: str) -> None:
    # a business failure is the workflow's to compensate, not a poison event
    await produce(kafka_bootstrap, f"{prefix}.order.placed",
                  [("o5", json.dumps(order(5, total=1)).encode(), [])])

    async def compensated() -> bool:
        runs = await hub.store.list_executions(workflow="record-order", limit=10)
        return bool(runs) and runs[0]["status"] == "compensated"

    await until(compensated)


@create_workflow("sub-unkeyed-again", idempotent=False)
def sub_unkeyed_again(inp: OrderPlaced) -> WorkflowResponse:
    return WorkflowResponse(create_step("sub-note", lambda o, c: o["id"])(inp))


async def test_a_start_without_a_transaction_id_is_keyed_by_its_record(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    # the handler forgot transaction_id: a redelivered record (an at-least-once broker, a
    # rebalance, a replay of the offsets) must still not start a second execution, even of
    # an idempotent=False workflow run with wait=True
    reg = SubscriberRegistry()

    @subscriber(f"{prefix}.order.placed", registry=reg, name="forgetful")
    async def forgetful(event: OrderPlaced, ctx: SubscriberContext) -> None:
        await record_order(ctx.hub).run(input=event, wait=False)
        await record_order(ctx.hub).run(input=event, wait=False)  # a second, on purpose
        await sub_unkeyed_again(ctx.hub).run(input=event, wait=True)

    settings = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-unkeyed")
    topic = f"{prefix}.order.placed"
    same = json.dumps(order(5)).encode()
    rt = KafkaRuntime(hub, settings, subscribers=reg, topics=topics_for(tmp_path, prefix))
    await rt.start()  # creates the topics
    try:
        assert rt.consumer is not None
        await asyncio.wait_for(rt.consumer.ready.wait(), 30)
        await produce(kafka_bootstrap, topic, [("o5", same, [(h.EVENT_ID, b"evt-5")])] * 3)
        await produce(kafka_bootstrap, topic, [("o6", json.dumps(order(6)).encode(), [])])

        async def consumed() -> bool:
            return rt.consumer is not None and rt.consumer.stats["handled"] >= 4

        await until(consumed)
    finally:
        await rt.stop()
    runs = await hub.store.list_executions(workflow="record-order", limit=10)
    assert sorted(r["transaction_id"] for r in runs) == [
        "forgetful:event:evt-5", "forgetful:event:evt-5#2",
        "forgetful:event:o6", "forgetful:event:o6#2"]
    again = await hub.store.list_executions(workflow="sub-unkeyed-again", limit=10)
    assert sorted(r["transaction_id"] for r in again) == [
        "forgetful:event:evt-5", "forgetful:event:o6"]
    archived = await hub.store.pool.fetchval(
        f"SELECT count(*) FROM {hub.store.schema}.execution WHERE archived")
    assert archived == 0, "a redelivery never re-ran the finished non-idempotent run"
