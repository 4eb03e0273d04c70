"""Kafka client settings (TLS, SASL) in one place, for consumers, producers and admin."""

from __future__ import annotations

import ssl
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hub.errors import HubError
from hub.settings import KafkaSettings

log = structlog.get_logger("hub.kafka")


class KafkaConfigError(HubError):
    """The Kafka settings are incomplete or contradictory."""


def client_kwargs(settings: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client the hub makes."""
    kw: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": settings.security_protocol,
        "client_id": "commerce-hub",
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        if settings.ssl_certfile:
            ctx.load_cert_chain(str(settings.ssl_certfile),
                                str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
        kw["ssl_context"] = ctx
    if settings.security_protocol.startswith("SASL"):
        if not settings.sasl_mechanism or not settings.sasl_username:
            raise KafkaConfigError(
                f"HUB_KAFKA_SECURITY_PROTOCOL={settings.security_protocol} needs "
                "HUB_KAFKA_SASL_MECHANISM and HUB_KAFKA_SASL_USERNAME"
            )
        password = settings.password()
        if not password:
            raise KafkaConfigError(
                "SASL needs HUB_KAFKA_SASL_PASSWORD or HUB_KAFKA_SASL_PASSWORD_FILE"
            )
        kw.update(sasl_mechanism=settings.sasl_mechanism,
                  sasl_plain_username=settings.sasl_username, sasl_plain_password=password)
    return kw


async def start_producer(settings: KafkaSettings, bootstrap: str) -> AIOKafkaProducer:
    """An idempotent producer (acks=all), or a plain acks=all one where the broker cannot
    hand out producer ids (the embedded Tansu broker): the outbox and dead letters are
    at-least-once either way, and every event carries its unique id."""
    kw = client_kwargs(settings, bootstrap)
    producer = AIOKafkaProducer(**kw, enable_idempotence=True, acks="all", linger_ms=2)
    try:
        await producer.start()
        return producer
    except KafkaError as exc:
        await producer.stop()
        log.warning("idempotent_producer_unavailable", bootstrap=bootstrap, error=repr(exc))
    producer = AIOKafkaProducer(**kw, acks="all", linger_ms=2)
    await producer.start()
    return producer
