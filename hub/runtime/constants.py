"""Header names the hub reads and writes on Kafka records, in one place.

Dead-letter headers follow Kafka Connect's ``__connect.errors.*`` context headers, under our
own prefix, as readable UTF-8 strings.
"""

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
