"""Each outbox row's fate is its own: one unpublishable row fails alone, visible and
retryable; a passing failure backs off; emit refuses what Kafka would; retention purges only
what was sent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub import Hub, StepContext, WorkflowResponse, create_step, create_workflow
from hub import wire as h
from hub.api import ApiSettings, create_app, create_key
from hub.engine.events import topic_problem
from hub.runtime.kafka import start_producer
from hub.runtime.outbox import OutboxRelay
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.tansu import TansuBroker
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from hub.store.store import RetryPolicy
from tests.conftest import ROOT, worker_env
from tests.support.console import serve

LIMIT = 16_384
"""The relay producer's max_request_size in these tests: a 20 kB row is over it."""


# -- helpers -------------------------------------------------------------------------------
async def insert(hub: Hub, topic: str, payload: Any, key: str | None = None) -> uuid.UUID:
    """A row written straight into the outbox, as one from before the emit-time checks (or
    raced past them) would be."""
    row_id = uuid.uuid4()
    await hub.store.pool.execute(
        f"INSERT INTO {hub.store.schema}.outbox (id, topic, key, payload) "
        "VALUES ($1, $2, $3, $4::jsonb)", row_id, topic, key, json.dumps(payload))
    return row_id


async def row(hub: Hub, row_id: uuid.UUID) -> dict[str, Any]:
    [found] = await hub.store.outbox_get([row_id])
    due = await hub.store.pool.fetchval(
        f"SELECT next_attempt_at > now() FROM {hub.store.schema}.outbox WHERE id = $1", row_id)
    return {**found, "later": due}


async def records_on(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end now: exact, whatever the machine's speed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, 0)]  # the relay fixture's topic has one partition
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Any] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            for recs in (await consumer.getmany(*parts, timeout_ms=500)).values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


@pytest.fixture
async def relay(hub: Hub, kafka_bootstrap: str, prefix: str,
                tmp_path: Path) -> AsyncIterator[OutboxRelay]:
    """A relay (driven by the test, not a loop) whose producer refuses records over LIMIT,
    with the topic ``<prefix>.out`` created."""
    (tmp_path / "topics.yaml").write_text(f"topics:\n  {prefix}.out:\n    partitions: 1\n")
    settings = KafkaSettings(bootstrap=kafka_bootstrap)
    async with KafkaRuntime(hub, settings, consume=False, relay=False,
                            topics=load_topics(tmp_path / "topics.yaml")):
        producer = await start_producer(settings, kafka_bootstrap, max_request_size=LIMIT)
        try:
            yield OutboxRelay(hub, producer, batch=100)
        finally:
            await producer.stop()


# -- one bad row fails alone -----------------------------------------------------------------
@pytest.mark.broker
async def test_one_unpublishable_row_fails_alone_and_its_batch_is_published_once(
        hub: Hub, relay: OutboxRelay, kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.out"
    first = await insert(hub, topic, {"n": 1}, key="k")
    too_large = await insert(hub, topic, {"blob": "x" * 20_000}, key="k")
    second = await insert(hub, topic, {"n": 2}, key="k")
    bad_topic = await insert(hub, "orders confirmed!", {"n": 0})
    third = await insert(hub, topic, {"n": 3}, key="k")

    assert await relay.drain() == 3
    assert await relay.drain() == 0, "nothing is due any more: no row is published again"
    later = await insert(hub, topic, {"n": 4}, key="k")
    assert await relay.drain() == 1, "a row after the bad ones flows"

    records = await records_on(kafka_bootstrap, topic)
    assert [json.loads(r.value)["n"] for r in records] == [1, 2, 3, 4], "each exactly once"
    assert [dict(r.headers)[h.EVENT_ID].decode() for r in records] == [
        str(first), str(second), str(third), str(later)]
    big, named = await row(hub, too_large), await row(hub, bad_topic)
    assert big["state"] == "failed" and big["attempts"] == 1
    assert "MessageSizeTooLargeError" in big["last_error"]
    assert named["state"] == "failed"
    assert "not a legal Kafka topic name" in named["last_error"]
    assert (await row(hub, first))["state"] == "sent"
    backlog = await hub.store.outbox_backlog()
    assert backlog["unsent"] == 0 and backlog["failed"] == 2


@pytest.mark.broker
@pytest.mark.slow
async def test_a_failed_row_is_listed_and_retried_from_the_cli(
        hub: Hub, relay: OutboxRelay, dsn: str, schema: str, prefix: str) -> None:
    bad = await insert(hub, f"{prefix}.out", {"blob": "x" * 20_000}, key="order-7")
    await insert(hub, f"{prefix}.out", {"n": 1})
    assert await relay.drain() == 1
    env = worker_env(dsn, schema, "workflows")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", "outbox", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    listed = await asyncio.to_thread(cli, "list", "--failed")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == ["id", "topic", "key", "state", "attempts", "reason"]
    [line] = lines
    fields = line.split("\t")
    assert fields[:5] == [str(bad), f"{prefix}.out", "order-7", "failed", "1"]
    assert "MessageSizeTooLargeError" in fields[5]

    retried = await asyncio.to_thread(cli, "retry", str(bad))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.split() == [str(bad)]
    again = await row(hub, bad)
    assert again["state"] == "pending" and again["attempts"] == 0 and not again["later"]
    assert again["last_error"], "the reason stays until a publish succeeds or fails anew"
    [audit] = await hub.store.audit_for_targets([f"outbox:{bad}"])
    assert audit["action"] == "outbox_retry" and audit["via"] == "cli"
    assert audit["detail"]["attempts"] == 1 and "MessageSize" in audit["detail"]["error"]
    assert (await asyncio.to_thread(cli, "list", "--failed")).stdout.splitlines()[1:] == []
    assert await relay.drain() == 0, "still too large: failed again, not published"
    assert (await row(hub, bad))["state"] == "failed"
    unknown = await asyncio.to_thread(cli, "retry", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "no outbox event" in unknown.stderr


@pytest.mark.broker
async def test_the_api_lists_failed_rows_and_retries_one_audited(
        hub: Hub, relay: OutboxRelay, prefix: str) -> None:
    bad = await insert(hub, "..", {"n": 0})
    sent = await insert(hub, f"{prefix}.out", {"n": 1})
    assert await relay.drain() == 1
    ops = (await create_key(hub.store, "ops", ["read", "operate"])).token
    viewer = (await create_key(hub.store, "viewer", ["read"])).token
    app = create_app(hub, settings=ApiSettings(), kafka=KafkaSettings(bootstrap=None),
                     subscribers=SubscriberRegistry())
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        page = await client.get("/outbox", params={"state": "failed"},
                                headers={"Authorization": f"Bearer {viewer}"})
        assert page.status_code == 200
        [item] = page.json()["items"]
        assert item["id"] == str(bad) and item["state"] == "failed"
        assert "reserved" in item["last_error"]
        refused = await client.post(f"/outbox/{bad}/retry",
                                    headers={"Authorization": f"Bearer {viewer}"})
        assert refused.status_code == 403
        done = await client.post(f"/outbox/{bad}/retry",
                                 headers={"Authorization": f"Bearer {ops}"})
        assert done.status_code == 202 and done.json() == {"ids": [str(bad)]}
        assert (await row(hub, bad))["state"] == "pending"
        [audit] = await hub.store.audit_for_targets([f"outbox:{bad}"])
        assert audit["actor_name"] == "ops" and audit["via"] == "api"
        published = await client.post(f"/outbox/{sent}/retry",
                                      headers={"Authorization": f"Bearer {ops}"})
        assert published.status_code == 409 and "already published" in published.text
        missing = await client.post(f"/outbox/{uuid.uuid4()}/retry",
                                    headers={"Authorization": f"Bearer {ops}"})
        assert missing.status_code == 404


# -- a passing failure backs off -------------------------------------------------------------
PASSING = {"KafkaTimeoutError", "NodeNotReadyError", "KafkaConnectionError",
           "RequestTimedOutError"}
"""What a producer whose broker went away reports (which one depends on timing)."""


@pytest.mark.broker
async def test_a_retryable_failure_backs_off_and_fails_past_the_bound(hub: Hub) -> None:
    broker = TansuBroker()
    bootstrap = broker.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=1500,
                                acks=1)
    await producer.start()
    try:
        await producer.send_and_wait("fate.retry", b"{}")  # the topic, in its metadata
        broker.stop()  # the broker is gone: every publish times out
        relay = OutboxRelay(hub, producer, policy=RetryPolicy(max_attempts=2, backoff_s=60))
        row_id = await insert(hub, "fate.retry", {"n": 1})

        assert await relay.drain() == 0
        first = await row(hub, row_id)
        assert first["state"] == "retrying" and first["attempts"] == 1 and first["later"]
        assert first["last_error"].split(":")[0] in PASSING, first["last_error"]
        assert await relay.drain() == 0
        assert (await row(hub, row_id))["attempts"] == 1, "not claimed before it is due"

        await hub.store.pool.execute(  # its backoff has passed
            f"UPDATE {hub.store.schema}.outbox SET next_attempt_at = now() WHERE id = $1",
            row_id)
        assert await relay.drain() == 0
        last = await row(hub, row_id)
        assert last["state"] == "failed" and last["attempts"] == 2
        assert last["last_error"].startswith("gave up after 2 attempts: ")
        assert last["last_error"].split(": ")[1] in PASSING
    finally:
        await producer.stop()
        broker.stop()


# -- emit refuses what Kafka would -------------------------------------------------------------
async def _emit_bad(inp: dict[str, Any], ctx: StepContext) -> str:
    if inp["what"] == "topic":
        ctx.emit("order confirmed", {"id": 1})
    else:
        ctx.emit("order.confirmed", {"blob": "x" * 1_100_000}, key="order-9")
    return "emitted"


@create_workflow("ob-emit-bad")
def ob_emit_bad(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("ob-emit-bad-step", _emit_bad, max_retries=3)(inp))


@pytest.mark.parametrize(("what", "words"), [
    ("topic", ["'order confirmed'", "not a legal Kafka topic name"]),
    ("size", ["'order.confirmed'", "over the limit of 1048576 bytes", "HUB_MAX_EVENT_BYTES"]),
])
async def test_an_event_kafka_would_refuse_fails_its_step_when_emitted(
        hub: Hub, what: str, words: list[str]) -> None:
    run = await ob_emit_bad(hub).run(input={"what": what}, raise_on_error=False)
    assert run.status == "compensated"
    step = run.steps["ob-emit-bad-step"]
    assert step.attempts == 1, "a permanent error: not retried"
    message = run.error["message"] if run.error else ""
    for word in words:
        assert word in message
    if what == "size":
        assert "the record is 11" in message
    assert await hub.store.outbox_for_execution(uuid.UUID(run.id)) == []


def test_topic_names_follow_kafkas_rule() -> None:
    assert topic_problem("order.confirmed_v2-eu") is None
    assert topic_problem("a" * 249) is None
    for bad in ("", ".", "..", "a" * 250, "orders/eu", "ordres été"):
        assert topic_problem(bad) is not None, bad


# -- retention ----------------------------------------------------------------------------------
async def test_retention_purges_old_sent_rows_in_batches_never_failed_ones(hub: Hub) -> None:
    s = hub.store.schema
    old_sent = [await insert(hub, "t.out", {"n": i}) for i in range(3)]
    new_sent = await insert(hub, "t.out", {"n": 9})
    old_failed = await insert(hub, "t.out", {"n": 10})
    old_pending = await insert(hub, "t.out", {"n": 11})
    await hub.store.pool.execute(
        f"UPDATE {s}.outbox SET sent_at = now() - interval '8 days' WHERE id = ANY($1)",
        old_sent)
    await hub.store.pool.execute(f"UPDATE {s}.outbox SET sent_at = now() WHERE id = $1",
                                 new_sent)
    await hub.store.pool.execute(
        f"UPDATE {s}.outbox SET failed_at = now() - interval '30 days', "
        "created_at = now() - interval '30 days', last_error = 'refused' WHERE id = $1",
        old_failed)
    await hub.store.pool.execute(
        f"UPDATE {s}.outbox SET created_at = now() - interval '30 days' WHERE id = $1",
        old_pending)

    week = hub.settings.outbox_retention_s
    assert week == 7 * 86400
    assert await hub.store.outbox_purge_sent(week, limit=2) == 2, "a bounded batch"
    await hub.purge()
    left = {r["id"] for r in await hub.store.pool.fetch(f"SELECT id FROM {s}.outbox")}
    assert left == {new_sent, old_failed, old_pending}


async def test_retry_of_all_failed_makes_only_failed_rows_due(hub: Hub) -> None:
    from hub.api.service import Actor, HubService

    failed = [await insert(hub, "t.out", {"n": i}) for i in range(2)]
    waiting = await insert(hub, "t.out", {"n": 3})
    await hub.store.pool.execute(
        f"UPDATE {hub.store.schema}.outbox SET failed_at = now(), attempts = 1, "
        "last_error = 'refused' WHERE id = ANY($1)", failed)
    service = HubService(hub)
    assert [i.id for i in (await service.outbox(state="failed")).items] == [
        str(i) for i in reversed(failed)]
    done = await service.retry_outbox([], all_failed=True, actor=Actor("ops", "cli"))
    assert sorted(done.ids) == sorted(str(i) for i in failed)
    assert (await service.outbox(state="failed")).items == []
    assert {r["id"]: r["state"] for r in await hub.store.outbox_get([*failed, waiting])} == {
        failed[0]: "pending", failed[1]: "pending", waiting: "pending"}
    assert len(await hub.store.audit_for_targets([f"outbox:{i}" for i in failed])) == 2
