"""Topics on the broker against topics.yaml: create what is missing, report drift; and lag.

``apply`` is idempotent: a second run creates nothing and reports the same drift. Drift is
reported, never "fixed" silently: shrinking retention or partitions is a decision for a human.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hub.runtime.kafka import client_kwargs
from hub.runtime.topics import Topics
from hub.settings import KafkaSettings

_TOPIC_EXISTS = 36


@dataclass(frozen=True)
class Drift:
    topic: str
    setting: str
    declared: str
    actual: str


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    in_sync: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.drift

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created, "missing": self.missing, "in_sync": self.in_sync,
            "drift": [d.__dict__ for d in self.drift], "ok": self.ok,
        }


async def reconcile(topics: Topics, settings: KafkaSettings, bootstrap: str, *,
                    create: bool) -> TopicsReport:
    """Compare the broker with ``topics``; with ``create``, create the missing topics."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
    await admin.start()
    report = TopicsReport()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if create and missing:
            resp = await admin.create_topics([
                NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.configs())
                for t in missing
            ])
            for name, code, message in _topic_errors(resp):
                if code in (0, _TOPIC_EXISTS):
                    report.created.append(name)
                else:
                    raise RuntimeError(f"creating topic {name!r} failed: {message} ({code})")
        else:
            report.missing = [t.name for t in missing]
        present = [t for t in topics if t.name in existing]
        if present:
            described = {d["topic"]: d for d in await admin.describe_topics(
                [t.name for t in present])}
            configs = await _configs(admin, [t.name for t in present])
            for t in present:
                drifted = False
                n = len(described.get(t.name, {}).get("partitions", []))
                if n != t.partitions:
                    report.drift.append(Drift(t.name, "partitions", str(t.partitions), str(n)))
                    drifted = True
                for key, want in t.configs().items():
                    have = configs.get(t.name, {}).get(key)
                    if have is not None and have != want:
                        report.drift.append(Drift(t.name, key, want, have))
                        drifted = True
                if not drifted:
                    report.in_sync.append(t.name)
    finally:
        await admin.close()
    return report


async def existing_topics(settings: KafkaSettings, bootstrap: str) -> set[str]:
    """The topics on the broker now (one metadata round trip)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _topic_errors(resp: Any) -> list[tuple[str, int, str]]:
    out = []
    for entry in resp.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else ""
        out.append((name, code, message or ""))
    return out


async def _configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    except Exception:
        return out  # a broker without DescribeConfigs: only partitions are compared
    for resp in responses:
        for res in resp.resources:
            code, name, entries = res[0], res[3], res[4]
            if code == 0:
                out[name] = {e[0]: e[1] for e in entries}
    return out


@dataclass(frozen=True)
class Lag:
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


async def consumer_lag(settings: KafkaSettings, bootstrap: str,
                       topic_names: list[str]) -> list[Lag]:
    """Committed offset of the deployment's group against the end of each partition."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=settings.group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topic_names
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(t, p) for t in topic_names
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(tps) if tps else {}
        committed = {tp: await consumer.committed(tp) for tp in tps}
        # ListOffsets may understate the end (the embedded Tansu answers with the start of the
        # last record batch); one fetch from the committed position gives the high watermark
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, committed[tp] or 0)
        if tps:
            await consumer.getmany(timeout_ms=1000, max_records=1)
        out = []
        for tp in tps:
            hw = consumer.highwater(tp)
            end = max(ends.get(tp, 0), hw if hw is not None else 0)
            out.append(Lag(tp.topic, tp.partition, committed[tp], end))
        return out
    finally:
        await consumer.stop()
