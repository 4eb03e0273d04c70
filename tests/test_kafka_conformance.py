"""Upstream teams publish with other clients; production brokers want SASL. The hub copes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import Hub
from hub.runtime.kafka import KafkaUnavailable
from hub.runtime.service import KafkaRuntime
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.conftest import ROOT
from tests.test_consumer_runtime import (
    _at_least,
    runtime,
    settings,
    starting_registry,
    topics_file,
)
from tests.test_subscribers import order, until

pytestmark = pytest.mark.broker

def _confluent_produce(bootstrap: str, topic: str, events: list[dict[str, object]],
                       **conf: object) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
    for e in events:
        producer.produce(topic, json.dumps(e).encode(), key=str(e["id"]).encode(),
                         headers=[("schema-version", b"1")])
    assert producer.flush(30) == 0, "librdkafka could not deliver every event"


async def test_events_published_with_librdkafka_are_handled(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = load_topics(topics_file(tmp_path, prefix))
    async with runtime(hub, kafka_bootstrap, prefix, topics, starting_registry(prefix)):
        await asyncio.to_thread(_confluent_produce, kafka_bootstrap, f"{prefix}.orders",
                                [order(i) for i in range(25)])
        await until(lambda: _at_least(hub, 25), timeout=60)
    run = await hub.get_run("order.placed:o3")
    assert run.trigger and run.trigger["topic"] == f"{prefix}.orders"


@pytest.fixture(scope="module")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.support.brokers import apache_kafka_session

    yield from apache_kafka_session(tmp_path_factory.mktemp("kafka"), sasl_scram=True)


@pytest.mark.kafka
async def test_events_from_the_kafka_console_producer_are_handled(
        hub: Hub, apache_kafka: object, prefix: str, tmp_path: Path) -> None:
    bootstrap: str = apache_kafka.bootstrap  # type: ignore[attr-defined]
    topics = load_topics(topics_file(tmp_path, prefix))
    async with runtime(hub, bootstrap, prefix, topics, starting_registry(prefix),
                       session_timeout_ms=6000):
        lines = "".join(json.dumps(order(i)) + "\n" for i in range(5))
        cmd = apache_kafka.console_producer_cmd(f"{prefix}.orders")  # type: ignore[attr-defined]
        proc = await asyncio.to_thread(subprocess.run, cmd, input=lines, text=True,
                                       capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        await until(lambda: _at_least(hub, 5), timeout=60)


@pytest.mark.kafka
async def test_hub_consumes_over_sasl_scram(hub: Hub, apache_kafka: object, prefix: str,
                                            tmp_path: Path) -> None:
    from tests.support.apache_kafka import SCRAM_PASSWORD, SCRAM_USER

    topics = load_topics(topics_file(tmp_path, prefix))
    sasl = apache_kafka.sasl_bootstrap  # type: ignore[attr-defined]
    s = settings(sasl, prefix, security_protocol="SASL_PLAINTEXT",
                 sasl_mechanism="SCRAM-SHA-512", sasl_username=SCRAM_USER,
                 sasl_password=SCRAM_PASSWORD, session_timeout_ms=6000)
    async with KafkaRuntime(hub, s, subscribers=starting_registry(prefix), topics=topics,
                            relay=False):
        await asyncio.to_thread(
            _confluent_produce, sasl, f"{prefix}.orders", [order(i) for i in range(3)],
            **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
               "sasl.username": SCRAM_USER, "sasl.password": SCRAM_PASSWORD})
        await until(lambda: _at_least(hub, 3), timeout=60)


@pytest.mark.kafka
async def test_wrong_password_is_a_clear_startup_error_not_a_hang(
        hub: Hub, apache_kafka: object, prefix: str, tmp_path: Path) -> None:
    from tests.support.apache_kafka import SCRAM_USER

    sasl = apache_kafka.sasl_bootstrap  # type: ignore[attr-defined]
    s = KafkaSettings(bootstrap=sasl, group=f"{prefix}-hub", security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-256", sasl_username=SCRAM_USER,
                      sasl_password="not-the-password")
    rt = KafkaRuntime(hub, s, subscribers=starting_registry(prefix),
                      topics=load_topics(topics_file(tmp_path, prefix)), create_topics=False)
    t0 = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="refused the credentials: authentication failed"):
        await rt.start()
    await rt.stop()
    assert time.monotonic() - t0 < 30


def test_broker_selection_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "HUB_TEST_BROKER=kafka" in readme
