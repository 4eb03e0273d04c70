"""A broker that hands out no producer ids (Tansu) costs one warning per process, and no
aiokafka error line on every producer's start."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from hub.runtime.kafka import start_producer, without_producer_ids
from hub.runtime.tansu import TansuBroker
from hub.settings import KafkaSettings

pytestmark = pytest.mark.broker


@pytest.fixture
def tansu() -> Iterator[str]:
    with TansuBroker() as broker:  # a broker of its own: no other test told us about it
        yield broker.bootstrap


async def test_a_refused_producer_id_is_one_warning_and_no_aiokafka_error(
        tansu: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    with capture_logs() as logs:
        first = await start_producer(KafkaSettings(), tansu)
        await first.stop()
        second = await start_producer(KafkaSettings(), tansu)
        await second.stop()
    assert [e["event"] for e in logs].count("idempotent_producer_unavailable") == 1
    refused = [r for r in caplog.records
               if r.levelno >= logging.WARNING and "InitProducerIdRequest" in r.getMessage()]
    assert not refused, refused


async def test_the_embedded_broker_is_never_asked_for_producer_ids(
        tansu: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    without_producer_ids(tansu)
    with capture_logs() as logs:
        producer = await start_producer(KafkaSettings(), tansu)
        await producer.send_and_wait("producer-ids", b"{}")
        await producer.stop()
    assert "idempotent_producer_unavailable" not in [e["event"] for e in logs]
