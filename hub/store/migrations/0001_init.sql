-- Executions, their signals from outside, and key locks. {schema} is the hub's schema.
CREATE TABLE {schema}.execution (
    id             uuid        PRIMARY KEY,
    workflow       text        NOT NULL,
    version        text        NOT NULL,
    transaction_id text        NOT NULL,
    status         text        NOT NULL,
    phase          text        NOT NULL DEFAULT 'forward',
    input          jsonb,
    steps          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result         jsonb,
    error          jsonb,
    trigger        jsonb,
    parked         text,
    due_at         timestamptz,
    lease_owner    text,
    lease_until    timestamptz,
    epoch          bigint      NOT NULL DEFAULT 0,
    archived       boolean     NOT NULL DEFAULT false,
    keep           boolean     NOT NULL DEFAULT true,
    retain_until   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
-- one live execution per (workflow, transaction id): the idempotent start
CREATE UNIQUE INDEX execution_transaction ON {schema}.execution (workflow, transaction_id)
    WHERE NOT archived;
-- the claim query: only rows that need a worker carry a due time
CREATE INDEX execution_due ON {schema}.execution (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX execution_status_created ON {schema}.execution (status, created_at DESC, id);
CREATE INDEX execution_workflow_created ON {schema}.execution (workflow, created_at DESC, id);
CREATE INDEX execution_created ON {schema}.execution (created_at DESC, id);
CREATE INDEX execution_tx ON {schema}.execution (transaction_id);
CREATE INDEX execution_retain ON {schema}.execution (retain_until) WHERE retain_until IS NOT NULL;

CREATE TABLE {schema}.signal (
    id           bigserial   PRIMARY KEY,
    execution_id uuid        NOT NULL REFERENCES {schema}.execution (id) ON DELETE CASCADE,
    step         text,
    kind         text        NOT NULL,
    payload      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signal_execution ON {schema}.signal (execution_id, id);

CREATE TABLE {schema}.lock (
    key        text        PRIMARY KEY,
    owner      text        NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
