-- Fan-out items and child executions.
--
-- fanout_item: one row per item of a map (map_each) step, so an item's transition rewrites
-- one small row, never a document that grows with the list (the execution's steps jsonb
-- only learns the map's outcome once, at its end). fillfactor leaves room on each page so
-- the updates stay HOT (no indexed column changes after the insert). seq shares the
-- execution's completion counter, so compensation undoes items in reverse order of
-- completion. Rows go with their execution.
CREATE TABLE {schema}.fanout_item (
    execution_id     uuid        NOT NULL REFERENCES {schema}.execution (id) ON DELETE CASCADE,
    step             text        NOT NULL,
    idx              integer     NOT NULL,
    key              text        NOT NULL,
    state            text        NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    comp_attempts    integer     NOT NULL DEFAULT 0,
    seq              bigint,
    output           jsonb,
    compensate_input jsonb,
    error            jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step, idx)
) WITH (fillfactor = 70);

-- A child execution knows its parent and the parent's step that started it (lineage both
-- ways: the parent's children are found through the partial index).
ALTER TABLE {schema}.execution
    ADD COLUMN parent_id   uuid,
    ADD COLUMN parent_step text;
CREATE INDEX execution_parent ON {schema}.execution (parent_id, created_at)
    WHERE parent_id IS NOT NULL;

-- A child's end is its parent step's outcome: the signal is written by the very statement
-- that finishes the child (same transaction, invariant 4), so a crash between the two cannot
-- leave the parent waiting forever. The parent is stamped and made due as ADD_SIGNAL does.
CREATE FUNCTION {schema}.child_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sig_id bigint;
BEGIN
    INSERT INTO {schema}.signal (execution_id, step, kind, payload)
    SELECT NEW.parent_id, NEW.parent_step,
           CASE WHEN NEW.status = 'succeeded' THEN 'success' ELSE 'failure' END,
           CASE WHEN NEW.status = 'succeeded' THEN NEW.result
                ELSE jsonb_build_object(
                    'message', 'child execution ' || NEW.id || ' (' || NEW.workflow
                               || ') ended ' || NEW.status || ': '
                               || COALESCE(NEW.error ->> 'message', 'no error recorded'),
                    'child_id', NEW.id::text, 'status', NEW.status) END
    FROM {schema}.execution p WHERE p.id = NEW.parent_id AND p.finished_at IS NULL
    RETURNING id INTO sig_id;
    IF sig_id IS NOT NULL THEN
        UPDATE {schema}.execution
        SET last_signal = sig_id,
            due_at = CASE WHEN lease_owner IS NULL THEN now() ELSE due_at END
        WHERE id = NEW.parent_id;
        PERFORM pg_notify('hub_{schema}', json_build_object(
            'id', NEW.parent_id, 'sig', true, 'due', true)::text);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER execution_child_finished AFTER UPDATE OF finished_at ON {schema}.execution
FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL AND OLD.finished_at IS NULL
                   AND NEW.finished_at IS NOT NULL)
EXECUTE FUNCTION {schema}.child_finished();
