"""Prometheus metrics of a worker process: what only the process itself can count.

Stored state (executions by status, outbox backlog) is read from Postgres by the API's
``/metrics``; this module counts the events that leave no row behind: step durations,
retries, claims, dead letters, lag. ``hub worker`` serves them on ``HUB_METRICS_PORT``.
One registry per process (not prometheus_client's global one) keeps tests independent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EXECUTIONS_STARTED = Counter(
    "hub_worker_executions_started", "Executions this worker began driving (new or claimed)",
    ["workflow", "how"], registry=REGISTRY)
EXECUTIONS_FINISHED = Counter(
    "hub_worker_executions_finished", "Executions this worker finished, by final status",
    ["workflow", "status"], registry=REGISTRY)
STEP_DURATION = Histogram(
    "hub_step_duration_seconds", "Duration of step invocations, by outcome",
    ["workflow", "step", "outcome"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
STEP_RETRIES = Counter(
    "hub_step_retries", "Step retries scheduled", ["workflow", "step"], registry=REGISTRY)
COMPENSATIONS = Counter(
    "hub_compensations", "Step compensations run, by outcome", ["workflow", "step", "outcome"],
    registry=REGISTRY)
CLAIM_LATENCY = Histogram(
    "hub_claim_seconds", "Round trip of a claim of due executions", registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1))
EVENTS_HANDLED = Counter(
    "hub_events_handled", "Kafka records handled by subscribers", ["topic"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "hub_dead_letters", "Kafka records sent to a dead-letter topic", ["topic", "stage"],
    registry=REGISTRY)
PARTITIONS_PAUSED = Gauge(
    "hub_consumer_partitions_paused",
    "1 while a partition is paused for backpressure: its fetched records not yet handled "
    "passed HUB_KAFKA_MAX_BACKLOG_PER_PARTITION or HUB_KAFKA_MAX_BACKLOG_BYTES_PER_PARTITION",
    ["topic", "partition"], registry=REGISTRY)
BACKLOG_BYTES = Gauge(
    "hub_consumer_backlog_bytes",
    "Key, value and header bytes of a partition's fetched records not yet handled",
    ["topic", "partition"], registry=REGISTRY)
DEAD_LETTERS_READ = Counter(
    "hub_dead_letter_records_read",
    "Records fetched from a dead-letter topic to show, count or redrive them (pages are "
    "bounded: this grows by at most a page per request)", ["topic"], registry=REGISTRY)
PARTITIONS_PARKED = Gauge(
    "hub_consumer_partitions_parked",
    "1 while a partition is parked: a record could not be settled (not even dead-lettered); "
    "nothing past it is consumed until the partition is reassigned", ["topic", "partition"],
    registry=REGISTRY)
DEAD_LETTERS_TRUNCATED = Counter(
    "hub_dead_letters_truncated",
    "Dead letters whose context headers were cut to fit the size limit", ["topic"],
    registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "hub_consumer_lag", "Records behind the end of each assigned partition",
    ["topic", "partition"], registry=REGISTRY)
OUTBOX_PUBLISHED = Counter(
    "hub_outbox_published", "Outbox events published by this worker's relay",
    registry=REGISTRY)
OUTBOX_FAILED = Counter(
    "hub_outbox_failed",
    "Outbox events this worker's relay moved to the failed state (refused by Kafka, or out "
    "of attempts): each waits for `hub outbox retry`", registry=REGISTRY)
OUTBOX_RETRIES = Counter(
    "hub_outbox_retries", "Outbox publish attempts that failed and were scheduled again",
    registry=REGISTRY)
CIRCUIT_OPEN = Gauge(
    "hub_connector_circuit_open",
    "1 while a connector's circuit breaker is open (failing fast) or probing, else 0",
    ["connector"], registry=REGISTRY)
CIRCUIT_TRANSITIONS = Counter(
    "hub_connector_circuit_transitions", "Circuit breaker state changes, by new state",
    ["connector", "state"], registry=REGISTRY)
