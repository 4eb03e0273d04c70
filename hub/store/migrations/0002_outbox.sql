-- Transactional outbox: rows commit with the step checkpoint that produced them.
CREATE TABLE {schema}.outbox (
    id           uuid        PRIMARY KEY,
    execution_id uuid,
    step         text,
    topic        text        NOT NULL,
    key          text,
    payload      jsonb       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at      timestamptz,
    attempts     int         NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_unsent ON {schema}.outbox (created_at) WHERE sent_at IS NULL;
CREATE INDEX outbox_execution ON {schema}.outbox (execution_id);

-- Dead letters sent back by `hub dlq redrive`: who, when, where to.
CREATE TABLE {schema}.dlq_redrive (
    dlq_topic    text        NOT NULL,
    partition    int         NOT NULL,
    "offset"     bigint      NOT NULL,
    target       text        NOT NULL,
    redriven_by  text        NOT NULL,
    redriven_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, partition, "offset", redriven_at)
);
