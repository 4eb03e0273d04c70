"""Kafka client settings (TLS, SASL) in one place, for consumers, producers and admin."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from hub.errors import HubError
from hub.settings import KafkaSettings

log = structlog.get_logger("hub.kafka")


class KafkaConfigError(HubError):
    """The Kafka settings are incomplete or contradictory."""


class KafkaUnavailable(HubError):
    """The broker could not be reached, or refused our credentials, at start-up."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        """The broker answered and refused the credentials: waiting will not help."""


_NO_PRODUCER_IDS: set[str] = set()
"""Bootstraps known not to hand out producer ids: their producers skip the request."""


def without_producer_ids(bootstrap: str) -> None:
    """Producers of ``bootstrap`` are plain acks=all ones from the start: the embedded Tansu
    answers InitProducerId (idempotence) with UNKNOWN_SERVER_ERROR, so asking only costs a
    round trip and an error line on every start."""
    _NO_PRODUCER_IDS.add(bootstrap)


class _InitProducerIdRefusal(logging.Filter):
    """aiokafka logs a refused InitProducerId at ERROR and then raises it; ``start_producer``
    catches that, falls back to a plain producer and logs ``idempotent_producer_unavailable``
    with the error itself, so aiokafka's line only repeats it, as an error it is not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unexpected error during InitProducerIdRequest")


logging.getLogger("aiokafka.producer.sender").addFilter(_InitProducerIdRefusal())


class _AuthFailures(logging.Handler):
    """aiokafka logs a SASL authentication failure and then raises a generic connection
    error; this catches the log line so the start-up error can say what really happened."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Authentication" in text or "SaslAuthenticationFailed" in text:
            self.seen.append(text)


@contextlib.asynccontextmanager
async def explained_start(settings: KafkaSettings, bootstrap: str,
                          what: str) -> AsyncIterator[None]:
    """Turn a failed client start into an error that names broker, protocol and user."""
    handler = _AuthFailures()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield
    except KafkaConnectionError as exc:
        who = ""
        if settings.security_protocol.startswith("SASL"):
            who = f", SASL {settings.sasl_mechanism} as {settings.sasl_username!r}"
        where = f"Kafka at {bootstrap} ({settings.security_protocol}{who})"
        if handler.seen:
            raise KafkaUnavailable(
                f"{what}: {where} refused the credentials: authentication failed (check "
                "HUB_KAFKA_SASL_USERNAME and the password)", refused=True
            ) from exc
        raise KafkaUnavailable(f"{what}: cannot connect to {where}: {exc}") from exc
    finally:
        logger.removeHandler(handler)


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


async def start_producer(settings: KafkaSettings, bootstrap: str, *,
                         max_request_size: int | None = None) -> AIOKafkaProducer:
    """An idempotent producer (acks=all), or a plain acks=all one where the broker cannot
    hand out producer ids (the embedded Tansu broker): the outbox and dead letters are
    at-least-once either way, and every event carries its unique id. ``max_request_size``:
    the largest record it sends (the outbox relay's is ``HUB_MAX_EVENT_BYTES``)."""
    kw = client_kwargs(settings, bootstrap)
    if max_request_size is not None:
        kw["max_request_size"] = max_request_size
    if bootstrap in _NO_PRODUCER_IDS:
        return await _plain_producer(settings, bootstrap, kw)
    producer = AIOKafkaProducer(**kw, enable_idempotence=True, acks="all", linger_ms=2)
    try:
        async with explained_start(settings, bootstrap, "starting a producer"):
            await producer.start()
        return producer
    except KafkaUnavailable:
        await producer.stop()
        raise
    except KafkaError as exc:
        await producer.stop()
        log.warning("idempotent_producer_unavailable", bootstrap=bootstrap, error=repr(exc))
        without_producer_ids(bootstrap)  # once per process, not on every producer
    return await _plain_producer(settings, bootstrap, kw)


async def _plain_producer(settings: KafkaSettings, bootstrap: str,
                          kw: dict[str, Any]) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**kw, acks="all", linger_ms=2)
    async with explained_start(settings, bootstrap, "starting a producer"):
        await producer.start()
    return producer
