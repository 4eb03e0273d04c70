"""What Kafka accepts of an emitted event: a legal topic name and a record within the limit.

Checked when a step emits (``StepContext.emit``) so the step fails naming the topic, and
again by the outbox relay for rows that bypassed the check (written before it existed, or
by hand), which it fails at once instead of retrying.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hub.errors import UnpublishableEvent

DEFAULT_MAX_EVENT_BYTES = 1_048_576
"""``HUB_MAX_EVENT_BYTES``'s default: aiokafka's (and Kafka's) default request size."""

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

_EVENT_ID_BYTES = len("event-id") + 36 + 2
"""The header the relay adds to every record (``hub.wire.EVENT_ID``: a uuid)."""

RECORD_OVERHEAD = 128
"""Bytes a record costs beyond its key, value and headers: the record batch header (61) and
the record's own varint fields, rounded up so the estimate never falls below the producer's."""


def topic_problem(topic: str) -> str | None:
    """Why Kafka refuses ``topic`` as a name, or None: 1 to 249 of ``[A-Za-z0-9._-]``, and
    neither ``.`` nor ``..``. Emit checks the name a step gives; the relay checks it again
    with ``HUB_KAFKA_TOPIC_PREFIX`` in front."""
    if topic in (".", ".."):
        return f"topic {topic!r} is not a legal Kafka topic name ('.' and '..' are reserved)"
    if not _TOPIC.match(topic):
        return (f"topic {topic[:300]!r} is not a legal Kafka topic name: 1 to 249 characters "
                f"of letters, digits, '.', '_' and '-' (it has {len(topic)})")
    return None


def record_size(value: bytes, key: str | None, headers: Mapping[str, Any]) -> int:
    """The bytes a record needs on the wire, as the relay sends it (the relay adds the
    event-id header, a uuid), conservatively estimated."""
    size = RECORD_OVERHEAD + len(value) + (len(key.encode()) if key is not None else 0)
    size += _EVENT_ID_BYTES
    for k, v in headers.items():
        size += len(k.encode()) + len(str(v).encode()) + 2
    return size


def event_value(payload: Any) -> bytes:
    """The record value the relay publishes: the payload as Postgres prints jsonb (``", "``
    and ``": "`` separators, UTF-8), so the size checked is the size sent."""
    return json.dumps(payload, ensure_ascii=False).encode()


def check_event(topic: str, payload: Any, key: str | None, headers: Mapping[str, Any],
                limit: int) -> None:
    """Raise ``UnpublishableEvent`` naming the topic for an event Kafka would refuse."""
    problem = topic_problem(topic)
    if problem is not None:
        raise UnpublishableEvent(f"cannot emit an event: {problem}")
    size = record_size(event_value(payload), key, headers)
    if size > limit:
        raise UnpublishableEvent(
            f"cannot emit an event to topic {topic!r}: the record is {size} bytes (value, key "
            f"and headers), over the limit of {limit} bytes (HUB_MAX_EVENT_BYTES); publish a "
            "reference to the data instead")
