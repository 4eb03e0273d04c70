"""Consumer lag summarised per topic for the overview.

A topic of 48 partitions is 48 rows of the broker's reading; the overview shows one line per
topic (its total, how many partitions, the worst one) and keeps the partitions a click away,
so a backlog is seen at a glance whatever the partition count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartitionLag:
    """One partition: the group's committed offset (none yet: ``None``) against its end."""

    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True)
class TopicLag:
    """A topic's partitions, in partition order."""

    topic: str
    partitions: tuple[PartitionLag, ...]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def worst(self) -> PartitionLag | None:
        """The partition furthest behind (the lowest number on a tie); none when no
        partition lags."""
        behind = [p for p in self.partitions if p.lag > 0]
        return max(behind, key=lambda p: (p.lag, -p.partition)) if behind else None


def by_topic(rows: Iterable[Mapping[str, Any]]) -> list[TopicLag]:
    """The reading's rows (``HubService.consumer_lag``) grouped per topic, the topics
    furthest behind first, then by name."""
    grouped: dict[str, list[PartitionLag]] = {}
    for r in rows:
        grouped.setdefault(str(r["topic"]), []).append(PartitionLag(
            int(r["partition"]), r["committed"], int(r["end"]), int(r["lag"])))
    topics = [TopicLag(name, tuple(sorted(parts, key=lambda p: p.partition)))
              for name, parts in grouped.items()]
    return sorted(topics, key=lambda t: (-t.total, t.topic))
