"""Everything a worker runs beside its executor: the broker connection, the consumer of the
subscribed topics, and the outbox relay. Dev mode and tests start an embedded broker."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import AIOKafkaProducer

from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.runtime.admin import reconcile
from hub.runtime.consumer import ConsumerRuntime
from hub.runtime.formats import EventFormats
from hub.runtime.kafka import (
    KafkaUnavailable,
    explained_start,
    start_producer,
    without_producer_ids,
)
from hub.runtime.outbox import OutboxRelay
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.subscriber import SUBSCRIBERS, SubscriberRegistry
from hub.runtime.tansu import TansuBroker
from hub.runtime.topics import Topics, load_topics
from hub.settings import KafkaSettings
from hub.store.store import RetryPolicy

log = structlog.get_logger("hub.runtime")


class KafkaRuntime:
    """Consumer plus outbox relay for one hub; ``async with`` starts and stops both."""

    def __init__(self, hub: Hub, settings: KafkaSettings | None = None, *,
                 consume: bool = True, relay: bool = True, create_topics: bool = True,
                 subscribers: SubscriberRegistry = SUBSCRIBERS,
                 topics: Topics | None = None,
                 registry: SchemaRegistry | None = None) -> None:
        self.hub = hub
        self.registry = registry
        """The schema registry of the topics in a registry format; None: from the settings
        (``HUB_SCHEMA_REGISTRY_URL``), built when a topic needs it."""
        self.settings = settings or KafkaSettings()
        self.consume = consume
        self.relay = relay
        self.create_topics = create_topics
        self.subscribers = subscribers
        self.topics = topics
        self.broker: TansuBroker | None = None
        self.bootstrap = ""
        self.consumer: ConsumerRuntime | None = None
        self.outbox: OutboxRelay | None = None
        self._producer: AIOKafkaProducer | None = None
        self._owns_registry = False

    async def __aenter__(self) -> KafkaRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        if s.bootstrap:
            self.bootstrap = s.bootstrap
        else:
            self.broker = TansuBroker()
            # started from this (the main) thread: the broker is bound to die with the
            # thread that started it, and a pool thread may end before the process does
            self.bootstrap = self.broker.start()
            without_producer_ids(self.bootstrap)  # Tansu hands out no producer ids
            log.info("embedded_broker_started", bootstrap=self.bootstrap)
        if self.topics is None:
            self.topics = load_topics(s.topics_file, s.topic_prefix)
        self.topics.import_models()  # a misspelt model stops the start, naming file and line
        if self.consume and self.subscribers is SUBSCRIBERS:
            load_modules(s.subscribers)
            self.subscribers = SUBSCRIBERS.with_prefix(s.topic_prefix)
        # A worker started while the broker restarts waits for it, rather than exiting into
        # a restart back-off; refused credentials stop it at once.
        deadline = time.monotonic() + s.start_timeout_s
        delay = 0.5
        while True:
            try:
                await self._connect()
                return
            except KafkaUnavailable as exc:
                if exc.refused or time.monotonic() + delay > deadline:
                    raise
                log.warning("kafka_unavailable", error=str(exc), retry_in_s=delay,
                            gives_up_in_s=round(deadline - time.monotonic(), 1))
                await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _connect(self) -> None:
        s = self.settings
        assert self.topics is not None
        if self.create_topics:
            async with explained_start(s, self.bootstrap, "creating topics"):
                report = await reconcile(self.topics, s, self.bootstrap, create=True)
            for d in report.drift:
                log.warning("topic_drift", topic=d.topic, setting=d.setting,
                            declared=d.declared, actual=d.actual)
        if self.registry is None and any(t.registry_subject for t in self.topics):
            self.registry = SchemaRegistry.from_settings(s)
            self._owns_registry = self.registry is not None
        if self.relay:
            self._producer = await start_producer(
                s, self.bootstrap, max_request_size=self.hub.settings.max_event_bytes)
            self.outbox = OutboxRelay(
                self.hub, self._producer, batch=s.relay_batch, prefix=s.topic_prefix,
                policy=RetryPolicy(max_attempts=s.relay_max_attempts,
                                   backoff_max_s=s.relay_backoff_max_s),
                topics=self.topics, formats=EventFormats(self.registry))
            self.outbox.start()
        if self.consume and self.subscribers.topics():
            self.consumer = ConsumerRuntime(self.hub, self.topics, s, self.bootstrap,
                                            self.subscribers, registry=self.registry)
            await self.consumer.start()

    async def stop(self) -> None:
        await self._disconnect()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
            self.broker = None

    async def _disconnect(self) -> None:
        """Stop the clients (the consumer first: it may hand work to the relay)."""
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.outbox is not None:
            await self.outbox.stop()
            self.outbox = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self.registry is not None and self._owns_registry:
            await self.registry.aclose()
            self.registry = None
            self._owns_registry = False
