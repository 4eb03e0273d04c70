"""The consumer under stress: per-key order, rebalances, a SIGKILLed consumer, replay, DLQ."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from hub import Hub, SubscriberContext, subscriber
from hub.runtime.admin import reconcile
from hub.runtime.deadletters import read_dead_letters, redrive
from hub.runtime.kafka import KafkaUnavailable
from hub.runtime.replay import Position, replay
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics, load_topics
from hub.settings import KafkaSettings
from tests.conftest import ROOT, worker_env
from tests.support.proxy import Proxy, free_port, to_tcp
from tests.test_subscribers import order, produce, until
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

pytestmark = pytest.mark.broker

def session_ms() -> int:
    # Tansu holds a join for half the session timeout; Apache Kafka refuses < 6 s
    return 6000 if os.environ.get("HUB_TEST_BROKER") == "kafka" else 2000


def topics_file(tmp_path: Path, prefix: str, partitions: int = 4) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.orders:
    partitions: {partitions}
    event: workflows.events:OrderPlaced
    dead_letter: {prefix}.orders.dlq
  {prefix}.orders.dlq:
    partitions: 1
  order.recorded:
    partitions: 1
""")
    return path


def settings(bootstrap: str, prefix: str, **kw: Any) -> KafkaSettings:
    kw.setdefault("session_timeout_ms", session_ms())
    return KafkaSettings(bootstrap=bootstrap, group=f"{prefix}-hub",
                         rebalance_timeout_ms=10_000, **kw)


def starting_registry(prefix: str, seen: list[tuple[str, str]] | None = None
                      ) -> SubscriberRegistry:
    reg = SubscriberRegistry()

    @subscriber(f"{prefix}.orders", registry=reg, max_retries=0)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        if seen is not None:
            seen.append((ctx.key or "", event.id))
            await asyncio.sleep(0.001)
        if event.customer_email.startswith("broken"):
            raise RuntimeError(f"cannot handle {event.id}")
        await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                        wait=False)

    return reg


@asynccontextmanager
async def runtime(hub: Hub, bootstrap: str, prefix: str, topics: Topics,
                  reg: SubscriberRegistry, **kw: Any) -> AsyncIterator[KafkaRuntime]:
    rt = KafkaRuntime(hub, settings(bootstrap, prefix, **kw), subscribers=reg, topics=topics,
                      relay=False)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


async def create_topics(bootstrap: str, path: Path) -> Topics:
    """Apache Kafka here does not auto-create topics: tests that publish first create them."""
    topics = load_topics(path)
    await reconcile(topics, KafkaSettings(bootstrap=bootstrap), bootstrap, create=True)
    return topics


async def count_started(hub: Hub) -> int:
    rows = await hub.store.list_executions(workflow="record-order", limit=10_000)
    return len(rows)


async def test_events_of_one_key_are_handled_in_order(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix))
    records = [(f"k{i % 5}", json.dumps(order(i)).encode(), []) for i in range(200)]
    await produce(kafka_bootstrap, f"{prefix}.orders", records)  # type: ignore[arg-type]
    async with runtime(hub, kafka_bootstrap, prefix, topics, starting_registry(prefix, seen)):
        await until(lambda: _at_least(hub, 200), timeout=60)
    for key in {k for k, _ in seen}:
        ids = [int(e[1:]) for k, e in seen if k == key]
        assert ids == sorted(ids), f"events of key {key} out of order"


async def _at_least(hub: Hub, n: int) -> bool:
    return await count_started(hub) >= n


async def test_two_consumers_in_a_group_rebalance_without_loss(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = load_topics(topics_file(tmp_path, prefix))
    topic = f"{prefix}.orders"
    async with runtime(hub, kafka_bootstrap, prefix, topics, starting_registry(prefix)) as one:
        await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                               for i in range(150)])
        async with runtime(hub, kafka_bootstrap, prefix, topics, starting_registry(prefix)):
            await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                                   for i in range(150, 300)])
            await asyncio.sleep(0.5)
        # the second consumer left: its partitions come back to the first
        await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                               for i in range(300, 400)])
        await until(lambda: _at_least(hub, 400), timeout=90)
        assert one.consumer is not None
    assert await count_started(hub) == 400


async def test_consumer_sigkilled_mid_batch_then_everything_started_once(
        hub: Hub, dsn: str, schema: str, kafka_bootstrap: str, prefix: str,
        tmp_path: Path) -> None:
    path = topics_file(tmp_path, prefix)
    await create_topics(kafka_bootstrap, path)
    topic = f"{prefix}.orders"
    env = worker_env(dsn, schema, "workflows", HUB_KAFKA_BOOTSTRAP=kafka_bootstrap,
                     HUB_KAFKA_GROUP=f"{prefix}-hub", HUB_KAFKA_TOPICS_FILE=str(path),
                     HUB_KAFKA_SUBSCRIBERS="tests.workflows.kafka_subs", TEST_TOPIC=topic,
                     HUB_KAFKA_SESSION_TIMEOUT_MS=str(session_ms()),
                     HUB_KAFKA_MAX_POLL_RECORDS="50")

    def spawn(**extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "hub", "worker", "--consume",
                                 "--no-execute", "--log-level", "warning"],
                                env={**env, **extra}, cwd=ROOT, stdout=subprocess.PIPE)

    n = 3000
    await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                           for i in range(n)])
    gate = tmp_path / "gate"
    gate.mkdir()
    # the first worker is held mid-stream (its handlers wait after 300 events, a batch in
    # flight): the kill lands there however fast or slow the machine is
    first = spawn(TEST_GATE_DIR=str(gate), TEST_GATE_AFTER="300")
    try:
        async def held() -> bool:
            return (gate / "blocked").exists() and await _at_least(hub, 1)

        await until(held, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = await count_started(hub)
        assert 0 < killed_at < n, "the kill landed mid-stream"
        second = spawn()
        try:
            await until(lambda: _at_least(hub, n), timeout=120)
            await asyncio.sleep(1.0)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(second.wait, 60)
            finally:
                if second.poll() is None:  # never leave a worker holding the schema
                    second.kill()
                    second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    rows = await hub.store.list_executions(workflow="record-order", limit=10_000)
    assert len(rows) == n
    assert len({r["transaction_id"] for r in rows}) == n


async def test_replay_dry_run_then_skip_then_new_runs(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=2))
    topic = f"{prefix}.orders"
    reg = starting_registry(prefix)
    await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                           for i in range(10)])
    s = settings(kafka_bootstrap, prefix)
    async with runtime(hub, kafka_bootstrap, prefix, topics, reg):
        await until(lambda: _at_least(hub, 10))
    await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                           for i in range(10, 13)])  # never consumed
    dry = await replay(hub, topics, reg, s, kafka_bootstrap, topic, Position(offset=0),
                       dry_run=True)
    assert dry.events == 13 and len(dry.skipped) == 10 and len(dry.would_start) == 3
    assert await count_started(hub) == 10, "a dry run starts nothing"
    real = await replay(hub, topics, reg, s, kafka_bootstrap, topic, Position(offset=0))
    assert len(real.started) == 3 and len(real.skipped) == 10
    fresh = await replay(hub, topics, reg, s, kafka_bootstrap, topic, Position(offset=0),
                         new_runs=True, partitions=[0])
    assert fresh.replay_id and len(fresh.started) == fresh.events > 0
    replayed = await hub.get_run(fresh.started[0].split(":", 1)[1], workflow="record-order")
    assert replayed.transaction_id.endswith(f"#replay:{fresh.replay_id}")
    assert replayed.trigger and replayed.trigger.get("replay") is True


async def test_dead_letter_redriven_to_its_topic_then_its_workflow_completes(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=1))
    topic = f"{prefix}.orders"
    s = settings(kafka_bootstrap, prefix)
    fixed = {"yes": False}
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        if not fixed["yes"]:
            raise ConnectionError("CRM down")
        await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                        wait=False)

    await produce(kafka_bootstrap, topic, [("o1", json.dumps(order(1)).encode(), [])])
    async with runtime(hub, kafka_bootstrap, prefix, topics, reg):
        async def dead() -> bool:
            page = await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")
            return bool(page.letters)

        await until(dead, timeout=30)
        letters = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")).letters
        assert letters[0].summary()["stage"] == "handler"
        fixed["yes"] = True  # the CRM is back
        done = await redrive(hub, topics, reg, s, kafka_bootstrap, letters, by="sre@test")
        assert done[0]["target"] == f"topic:{topic}"
        await until(lambda: _at_least(hub, 1), timeout=30)
        run = await hub.wait("order.placed:o1", timeout=30)
        assert run.status == "succeeded"
        assert run.trigger and run.trigger["offset"] == 1, "the redriven copy started it"
    again = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")).letters
    assert again[0].redriven and again[0].redriven[0]["redriven_by"] == "sre@test"


@pytest.mark.parametrize("x", [0])
def test_worker_help_lists_consumer_flags(x: int) -> None:
    out = subprocess.run([sys.executable, "-m", "hub", "worker", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "--consume" in out.stdout and "--execute" in out.stdout


async def test_lag_and_dlq_commands(hub: Hub, dsn: str, schema: str, kafka_bootstrap: str,
                                    prefix: str, tmp_path: Path) -> None:
    path = topics_file(tmp_path, prefix, partitions=1)
    topics = await create_topics(kafka_bootstrap, path)
    topic = f"{prefix}.orders"
    await produce(kafka_bootstrap, topic, [
        ("o1", json.dumps(order(1)).encode(), []),
        ("o2", b"{broken", []),
        ("o3", json.dumps(order(3)).encode(), []),
    ])
    async with runtime(hub, kafka_bootstrap, prefix, topics, starting_registry(prefix)):
        await until(lambda: _at_least(hub, 2), timeout=30)
        await asyncio.sleep(0.3)
    env = worker_env(dsn, schema, "workflows", HUB_KAFKA_BOOTSTRAP=kafka_bootstrap,
                     HUB_KAFKA_GROUP=f"{prefix}-hub", HUB_KAFKA_TOPICS_FILE=str(path),
                     HUB_KAFKA_SUBSCRIBERS="tests.workflows.kafka_subs", TEST_TOPIC=topic)

    def hub_cli(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "hub", *args, "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    lag = await asyncio.to_thread(hub_cli, "lag")
    assert lag == [{"topic": topic, "partition": 0, "committed": 3, "end": 3, "lag": 0}]
    listed = await asyncio.to_thread(hub_cli, "dlq", "list")
    assert [(d["topic"], d["offset"], d["stage"]) for d in listed["items"]] == [
        (topic, "1", "deserialize")]
    assert listed["next"] == {f"{prefix}.orders.dlq": None}
    page = await asyncio.to_thread(hub_cli, "dlq", "list", "--topic", f"{prefix}.orders.dlq",
                                   "--cursor", "0:0", "--limit", "1")
    assert len(page["items"]) == 1 and page["next"] == {f"{prefix}.orders.dlq": None}
    human = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hub", "dlq", "list"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    header, row, total = human.stdout.splitlines()  # one row per dead letter
    assert header.split()[:4] == ["REF", "FROM", "STAGE", "REASON"]
    assert f"{topic}/0@1" in row and "deserialize" in row and total.startswith("1 dead letters")


async def test_sigterm_drains_commits_and_leaves_within_bounds(
        hub: Hub, dsn: str, schema: str, kafka_bootstrap: str, prefix: str,
        tmp_path: Path) -> None:
    from hub.runtime.admin import consumer_lag

    path = topics_file(tmp_path, prefix)
    await create_topics(kafka_bootstrap, path)
    topic = f"{prefix}.orders"
    env = worker_env(dsn, schema, "workflows", HUB_KAFKA_BOOTSTRAP=kafka_bootstrap,
                     HUB_KAFKA_GROUP=f"{prefix}-hub", HUB_KAFKA_TOPICS_FILE=str(path),
                     HUB_KAFKA_SUBSCRIBERS="tests.workflows.kafka_subs", TEST_TOPIC=topic,
                     HUB_KAFKA_SESSION_TIMEOUT_MS=str(session_ms()),
                     HUB_KAFKA_MAX_POLL_RECORDS="20")
    await produce(kafka_bootstrap, topic, [(f"o{i}", json.dumps(order(i)).encode(), [])
                                           for i in range(2000)])
    proc = subprocess.Popen([sys.executable, "-m", "hub", "worker", "--consume",
                             "--no-execute", "--log-level", "warning"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE)
    try:
        await until(lambda: _at_least(hub, 100), timeout=60)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    started = await count_started(hub)
    lags = await consumer_lag(settings(kafka_bootstrap, prefix), kafka_bootstrap, [topic])
    committed = sum(r.committed or 0 for r in lags)
    assert committed == started, "every handled event committed, nothing beyond"


async def test_replay_and_lag_see_every_record_of_a_batched_publish(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    # the embedded broker answers ListOffsets with the start of the last record batch
    from aiokafka import AIOKafkaProducer

    from hub.runtime.admin import consumer_lag

    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=1))
    topic = f"{prefix}.orders"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, json.dumps(order(i)).encode(), key=b"k")
                   for i in range(20)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    s = settings(kafka_bootstrap, prefix)
    dry = await replay(hub, topics, starting_registry(prefix), s, kafka_bootstrap, topic,
                       Position(offset=0), dry_run=True)
    assert dry.events == 20 and len(dry.would_start) == 20
    lag = await consumer_lag(s, kafka_bootstrap, [topic])
    assert [(r.committed, r.end, r.lag) for r in lag] == [(None, 20, 20)]


async def test_dead_letter_redriven_straight_to_its_subscriber(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=1))
    topic = f"{prefix}.orders"
    s = settings(kafka_bootstrap, prefix)
    fixed = {"yes": False}
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        if not fixed["yes"]:
            raise ConnectionError("ERP down")
        await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                        wait=False)

    await produce(kafka_bootstrap, topic, [("o9", json.dumps(order(9)).encode(), [])])
    async with runtime(hub, kafka_bootstrap, prefix, topics, reg):
        async def dead() -> bool:
            page = await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")
            return bool(page.letters)

        await until(dead, timeout=30)
    letters = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")).letters
    fixed["yes"] = True
    done = await redrive(hub, topics, reg, s, kafka_bootstrap, letters, to_subscriber=True,
                         by="sre@test")
    assert done[0]["target"] == "subscriber:on_order"
    run = await hub.wait("order.placed:o9", timeout=30)
    assert run.status == "succeeded"
    assert run.trigger and run.trigger["offset"] == 0, "lineage points at the original record"


async def test_a_worker_started_while_the_broker_is_away_waits_for_it(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    # Found by the chaos suite: a worker started during a broker restart exited with a
    # traceback (and under Kubernetes would then wait out a restart back-off).
    port = free_port()  # the broker's address, where nothing listens yet
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=1))
    host, _, broker_port = kafka_bootstrap.rpartition(":")
    seen: list[tuple[str, str]] = []
    rt = KafkaRuntime(hub, settings(f"127.0.0.1:{port}", prefix, start_timeout_s=60),
                      subscribers=starting_registry(prefix, seen), topics=topics, relay=False)
    starting = asyncio.create_task(rt.start())
    try:
        await asyncio.sleep(3)
        assert not starting.done(), "the runtime must wait for the broker, not give up"
        async with Proxy(to_tcp(host, int(broker_port)), port):  # the broker is back
            await asyncio.wait_for(starting, 60)
            await produce(kafka_bootstrap, f"{prefix}.orders",
                          [("o1", json.dumps(order(1)).encode(), [])])
            await until(lambda: _at_least(hub, 1), timeout=60)
    finally:
        starting.cancel()
        await rt.stop()


async def test_a_broker_that_stays_away_stops_the_start_naming_it(
        hub: Hub, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    rt = KafkaRuntime(hub, settings(f"127.0.0.1:{port}", prefix, start_timeout_s=2),
                      subscribers=starting_registry(prefix),
                      topics=load_topics(topics_file(tmp_path, prefix)))
    with pytest.raises(KafkaUnavailable, match=f"cannot connect to Kafka at 127.0.0.1:{port} "
                                               r"\(PLAINTEXT\)"):
        await rt.start()
    await rt.stop()


async def test_redrive_sends_key_and_header_bytes_unchanged(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.test_subscribers import read_all
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=4))
    topic = f"{prefix}.orders"
    s = settings(kafka_bootstrap, prefix)
    key, blob = b"\xff\xfeorder-1", b"\x80\xfe\x00raw"
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        raise ConnectionError("CRM down")

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, json.dumps(order(1)).encode(), key=key,
                                            headers=[("x-blob", blob)])
    finally:
        await producer.stop()
    async with runtime(hub, kafka_bootstrap, prefix, topics, reg):
        async def dead() -> bool:
            page = await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")
            return bool(page.letters)

        await until(dead, timeout=30)
    letters = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")).letters
    await redrive(hub, topics, reg, s, kafka_bootstrap, letters, by="sre@test")
    records = await read_all(kafka_bootstrap, topic, 2)
    again = records[-1]
    assert dict(again.headers).get("hub.redriven.from"), "the redriven copy"
    assert again.key == key
    assert again.partition == sent.partition, "same key bytes, same partition"
    assert ("x-blob", blob) in list(again.headers)
    assert not [k for k, _ in again.headers if k.startswith("hub.errors.")]


class Picky(BaseModel):
    id: str

    @field_validator("id")
    @classmethod
    def not_bad(cls, v: str) -> str:
        if v == "bad":
            raise RuntimeError("validator exploded")
        return v


async def test_a_validator_raising_any_error_dead_letters_and_the_partition_moves_on(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await create_topics(kafka_bootstrap, topics_file(tmp_path, prefix, partitions=1))
    topic = f"{prefix}.orders"
    s = settings(kafka_bootstrap, prefix)
    seen: list[str] = []
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_picky(event: Picky, ctx: SubscriberContext) -> None:
        seen.append(event.id)

    await produce(kafka_bootstrap, topic, [("k", json.dumps({"id": "bad"}).encode(), []),
                                           ("k", json.dumps({"id": "good"}).encode(), [])])
    async with runtime(hub, kafka_bootstrap, prefix, topics, reg):
        async def good() -> bool:
            return "good" in seen

        await until(good, timeout=30)
    letters = (await read_dead_letters(hub, s, kafka_bootstrap, f"{prefix}.orders.dlq")).letters
    assert len(letters) == 1 and json.loads(letters[0].value or b"") == {"id": "bad"}
    summary = letters[0].summary()
    assert summary["stage"] == "validate" and summary["error"] == "RuntimeError"
    assert "validator exploded" in summary["message"]
