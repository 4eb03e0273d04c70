-- Lineage of each outbound connector call (invariant 9): one row per HTTP attempt, written
-- by the checkpoint that records the step attempt's outcome (no round trip of its own). The
-- key orders the calls of one step attempt; a step that called nothing has no row. What a
-- connector reports is redacted at the source: no bodies, headers or query strings, every
-- text field bounded. dropped, on an attempt's last row: calls beyond
-- HUB_MAX_CALLS_PER_STEP, counted, not kept. Rows go with their execution.
CREATE TABLE {schema}.connector_call (
    execution_id    uuid             NOT NULL REFERENCES {schema}.execution (id) ON DELETE CASCADE,
    step            text             NOT NULL,
    compensating    boolean          NOT NULL,
    step_attempt    integer          NOT NULL,
    seq             integer          NOT NULL,
    system          text             NOT NULL,
    operation       text             NOT NULL,
    method          text             NOT NULL,
    path            text             NOT NULL,
    status          integer,
    error           text,
    duration_ms     double precision NOT NULL,
    attempt         integer          NOT NULL,
    idempotency_key text,
    outside_id      text,
    dropped         integer          NOT NULL DEFAULT 0,
    at              timestamptz      NOT NULL,
    PRIMARY KEY (execution_id, step, compensating, step_attempt, seq)
);
