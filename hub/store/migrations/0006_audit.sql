-- Operator actions (retry, compensate, cancel, complete or fail an async step, redrive), from
-- the console, the JSON API or the CLI: who (the API key's name and id), when, what, on which
-- execution, and the details. No foreign key to execution: the record outlives a purge.
CREATE TABLE {schema}.audit (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor_id     text,
    actor_name   text        NOT NULL,
    via          text        NOT NULL,
    action       text        NOT NULL,
    execution_id uuid,
    target       text,
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
-- an execution's actions, oldest first (the execution page)
CREATE INDEX audit_execution ON {schema}.audit (execution_id, id) WHERE execution_id IS NOT NULL;
-- the actions on one target (a dead letter's redrives) and the latest actions overall
CREATE INDEX audit_target ON {schema}.audit (target, id) WHERE target IS NOT NULL;

-- The execution list's filters on the trigger lineage, each walkable newest first so a page
-- stops at its LIMIT (the other filters have theirs since 0001). trigger is written once, at
-- the start: these indexes cost an insert, never a step checkpoint (which stays HOT).
CREATE INDEX execution_trigger_kind_created
    ON {schema}.execution ((trigger->>'kind'), created_at DESC, id);
-- the event key, matched exactly or by prefix (text_pattern_ops serves LIKE 'abc%'). Not
-- partial: the planner estimates a key's selectivity from a full expression index's
-- statistics only, and without them it walks the whole table for a key that is not there
CREATE INDEX execution_trigger_key
    ON {schema}.execution ((trigger->>'key') text_pattern_ops);
