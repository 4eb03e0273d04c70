-- The webhook-id of every signed delivery accepted, per source, with what it did: a sender's
-- retry of the same delivery (same id, same target, same body) is answered as accepted and
-- records nothing; the id on any other request (a captured delivery replayed to another
-- execution or step) is refused. Inserted in the statement that records the signal, so both
-- commit or neither; kept past the timestamp tolerance (after which the delivery's own
-- timestamp refuses it), then purged in bounded batches.
CREATE TABLE {schema}.webhook_id (
    source       text        NOT NULL,
    id           text        NOT NULL,
    execution_id uuid        NOT NULL,
    step         text        NOT NULL,
    kind         text        NOT NULL,
    digest       text        NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX webhook_id_expires ON {schema}.webhook_id (expires_at);
