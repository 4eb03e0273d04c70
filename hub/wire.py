"""Names that cross a process boundary: NOTIFY payload keys, Kafka header names.

Every process of every version reads what the others write, so these strings change only
together; keeping them in one place makes such a change one diff (as arq keeps its keys).
"""

from __future__ import annotations

from typing import Final

# -- the store's NOTIFY payload (one JSON object per notification) -------------------------
N_ID: Final = "id"
"""The execution the notification is about."""
N_DUE: Final = "due"
"""Something became claimable: workers look for due executions."""
N_SIGNAL: Final = "sig"
"""A signal was stored for the execution ``id``: its holder applies it."""
N_PRESENCE: Final = "presence"
"""Someone subscribes to transitions: step events are announced for a while."""
N_WORKFLOW: Final = "w"
N_TRANSACTION: Final = "t"
N_STATUS: Final = "s"
N_EVENTS: Final = "ev"
"""The transitions of one checkpoint, ``[[kind, step], ...]``."""
N_OUTBOX: Final = "ob"
"""The checkpoint wrote outbox rows: the relays publish them."""

NOTIFY_MAX_BYTES: Final = 7900
"""Postgres refuses NOTIFY payloads from 8000 bytes; past this the events are dropped."""

DUE_PAYLOAD: Final = f'{{"{N_DUE}": true}}'
"""The payload of a bare "something is due" notification (also inlined by SQL)."""


# -- Kafka record headers -----------------------------------------------------------------
# Dead-letter headers follow Kafka Connect's ``__connect.errors.*`` context headers, under our
# own prefix, as readable UTF-8 strings.
EVENT_ID = "event-id"
"""Unique id of an event; the outbox sets it, subscribers read it for lineage."""

SCHEMA_VERSION = "schema-version"
"""Version of the event's schema; an unknown one is dead-lettered."""

DLQ_PREFIX = "hub.errors."
DLQ_TOPIC = DLQ_PREFIX + "topic"
DLQ_PARTITION = DLQ_PREFIX + "partition"
DLQ_OFFSET = DLQ_PREFIX + "offset"
DLQ_KEY = DLQ_PREFIX + "key"
DLQ_TIMESTAMP = DLQ_PREFIX + "timestamp"
DLQ_STAGE = DLQ_PREFIX + "stage"
DLQ_SUBSCRIBER = DLQ_PREFIX + "subscriber"
DLQ_ATTEMPTS = DLQ_PREFIX + "attempts"
DLQ_EXCEPTION_CLASS = DLQ_PREFIX + "exception.class.name"
DLQ_EXCEPTION_MESSAGE = DLQ_PREFIX + "exception.message"
DLQ_EXCEPTION_STACKTRACE = DLQ_PREFIX + "exception.stacktrace"
DLQ_CONSUMER_GROUP = DLQ_PREFIX + "consumer.group"
DLQ_TRUNCATED = DLQ_PREFIX + "truncated"
"""Set (``true``) when the context headers were cut so the record fits the size limit; the
value, the key and the original headers are never cut."""

REDRIVEN_FROM = "hub.redriven.from"
"""Set on a record sent back to its topic by ``hub dlq redrive``: ``dlq-topic/partition/offset``."""

STAGES = ("deserialize", "cloudevent", "schema", "schema_version", "validate", "handler",
          "start")
"""Where an event failed, in the order the runtime tries them (``cloudevent``: not a valid
CloudEvent, or a type with no route; ``schema``: the registry knows no usable schema for its
id; ``start``: Postgres refused the start a handler asked for, on what the row holds)."""
