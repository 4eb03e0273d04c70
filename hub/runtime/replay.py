"""``hub replay``: feed a stretch of a topic to the subscribers again.

Reads with no consumer group (the deployment's committed offsets are untouched), from a
target position chosen as ``kafka-consumer-groups --reset-offsets`` does. By default the
transaction ids are the ones the subscribers always compute, so what already ran is skipped;
``new_runs`` suffixes them with a replay id so fresh executions start, marked as replays.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.engine.hub import Hub
from hub.errors import HubError
from hub.runtime.consumer import BatchResult, Handling
from hub.runtime.formats import EventFormats
from hub.runtime.kafka import client_kwargs
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics
from hub.settings import KafkaSettings

_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> timedelta:
    """ISO-8601 durations as kafka-consumer-groups takes them: ``P1DT2H``, ``PT30M``."""
    m = _ISO_DURATION.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT"):
        raise HubError(f"{text!r} is not an ISO-8601 duration such as P1DT2H or PT30M")
    return timedelta(days=int(m["d"] or 0), hours=int(m["h"] or 0), minutes=int(m["m"] or 0),
                     seconds=float(m["s"] or 0))


def parse_timestamp(text: str) -> datetime:
    """ISO timestamps; one without a zone is UTC (as kafka-consumer-groups reads them)."""
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HubError(f"{text!r} is not an ISO timestamp such as 2026-11-25T10:00:00") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Position:
    """Where a replay starts or stops: exactly one of offset, timestamp, duration (ago)."""

    offset: int | None = None
    timestamp: datetime | None = None
    ago: timedelta | None = None

    def as_ms(self) -> int | None:
        if self.timestamp is not None:
            return int(self.timestamp.timestamp() * 1000)
        if self.ago is not None:
            return int((datetime.now(UTC) - self.ago).timestamp() * 1000)
        return None


@dataclass
class ReplayReport:
    replay_id: str | None
    dry_run: bool
    events: int = 0
    would_start: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id, "dry_run": self.dry_run, "events": self.events,
            "would_start": len(self.would_start), "started": len(self.started),
            "skipped": len(self.skipped), "rejected": self.rejected,
            "ranges": {k: {"from": a, "to": b} for k, (a, b) in self.positions.items()},
        }


async def replay(
    hub: Hub, topics: Topics, subscribers: SubscriberRegistry, settings: KafkaSettings,
    bootstrap: str, topic: str, start: Position, stop: Position | None = None, *,
    partitions: list[int] | None = None, dry_run: bool = False, new_runs: bool = False,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> ReplayReport:
    topics[topic]
    if not subscribers.for_topic(topic):
        raise HubError(f"no subscriber consumes {topic!r}: nothing to replay to")
    replay_id = uuid.uuid4().hex[:12] if new_runs else None
    report = ReplayReport(replay_id=replay_id, dry_run=dry_run)
    registry = (SchemaRegistry.from_settings(settings) if topics[topic].registry_subject
                else None)
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        all_parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not all_parts:
            await consumer._client.force_metadata_update()
            all_parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in all_parts
               if partitions is None or p in partitions]
        if not tps:
            raise HubError(f"topic {topic!r} has no partition {partitions}")
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        first = await _resolve(consumer, tps, start, begin, end)
        last = await _resolve(consumer, tps, stop, begin, end) if stop else dict(end)
        for tp in tps:
            consumer.seek(tp, first[tp])
            report.positions[f"{tp.topic}/{tp.partition}"] = (first[tp], last[tp])
        handling = _ReplayHandling(hub, topics, subscribers, settings.group, report,
                                   replay_id=replay_id, formats=EventFormats(registry))
        remaining = {tp for tp in tps if first[tp] < last[tp]}
        measured: set[TopicPartition] = set()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=500)
            if stop is None:
                # some brokers (the embedded Tansu) answer ListOffsets with the start of the
                # last record batch: the first fetch's high watermark is the true end
                for tp in batch:
                    if tp not in measured:
                        measured.add(tp)
                        hw = consumer.highwater(tp)
                        if hw is not None and hw > last[tp]:
                            last[tp] = hw
                            report.positions[f"{tp.topic}/{tp.partition}"] = (first[tp], hw)
            if not batch:
                positions = {tp: await consumer.position(tp) for tp in remaining}
                remaining = {tp for tp in remaining if positions[tp] < last[tp]}
                continue
            out = BatchResult()
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= last[tp]:
                        remaining.discard(tp)
                        break
                    report.events += 1
                    await handling.handle(rec, out)
                pos = await consumer.position(tp)
                if pos >= last[tp]:
                    remaining.discard(tp)
                if progress is not None:
                    progress(f"{tp.topic}/{tp.partition}", first[tp], min(pos, last[tp]),
                             last[tp])
            await _settle(hub, out, report, dry_run)
    finally:
        await consumer.stop()
        if registry is not None:
            await registry.aclose()
    return report


async def _resolve(consumer: AIOKafkaConsumer, tps: list[TopicPartition], pos: Position,
                   begin: dict[TopicPartition, int],
                   end: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    if pos.offset is not None:
        return {tp: min(max(pos.offset, begin[tp]), end[tp]) for tp in tps}
    ms = pos.as_ms()
    if ms is None:
        return dict(begin)
    found = await consumer.offsets_for_times({tp: ms for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}


async def _settle(hub: Hub, out: BatchResult, report: ReplayReport, dry_run: bool) -> None:
    if dry_run:
        existing = await hub.existing_transactions(
            [(r.workflow, r.transaction_id) for r in out.rows])
        for r in out.rows:
            key = f"{r.workflow}:{r.transaction_id}"
            if (r.workflow, r.transaction_id) in existing:
                report.skipped.append(key)
            else:
                report.would_start.append(key)
        return
    created = await hub.flush_starts(out.rows)
    for r in out.rows:
        key = f"{r.workflow}:{r.transaction_id}"
        (report.started if r.id in created else report.skipped).append(key)


class _ReplayHandling(Handling):
    """Replay never dead-letters again: a rejected event is reported instead."""

    def __init__(self, hub: Hub, topics: Topics, subscribers: SubscriberRegistry, group: str,
                 report: ReplayReport, *, replay_id: str | None,
                 formats: EventFormats | None = None) -> None:
        super().__init__(hub, topics, subscribers, None, group, replay_id=replay_id,
                         replaying=True, formats=formats)
        self.report = report

    def dead_letter(self, record: Any, stage: str, exc: BaseException | str,
                    subscriber: str | None, attempts: int, out: BatchResult) -> None:
        self.report.rejected.append({
            "partition": record.partition, "offset": record.offset, "stage": stage,
            "subscriber": subscriber, "error": str(exc)[:300],
        })
