-- A child's end locks its parent's row before its signal draws an id, as ADD_SIGNAL does, so
-- the signals of one execution commit in id order: a worker that read signal N has read
-- every signal below N, and "the last signal stamped" is also the highest. Before, an id drawn
-- first could commit last, behind a higher one the worker had already applied and released
-- on, and then sat unapplied.
CREATE OR REPLACE FUNCTION {schema}.child_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sig_id bigint;
BEGIN
    PERFORM 1 FROM {schema}.execution p
    WHERE p.id = NEW.parent_id AND p.finished_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    INSERT INTO {schema}.signal (execution_id, step, kind, payload)
    SELECT NEW.parent_id, NEW.parent_step,
           CASE WHEN NEW.status = 'succeeded' THEN 'success' ELSE 'failure' END,
           CASE WHEN NEW.status = 'succeeded' THEN NEW.result
                ELSE jsonb_build_object(
                    'message', 'child execution ' || NEW.id || ' (' || NEW.workflow
                               || ') ended ' || NEW.status || ': '
                               || COALESCE(NEW.error ->> 'message', 'no error recorded'),
                    'child_id', NEW.id::text, 'status', NEW.status) END
    RETURNING id INTO sig_id;
    UPDATE {schema}.execution
    SET last_signal = sig_id,
        due_at = CASE WHEN lease_owner IS NULL THEN now() ELSE due_at END
    WHERE id = NEW.parent_id;
    PERFORM pg_notify('hub_{schema}', json_build_object(
        'id', NEW.parent_id, 'sig', true, 'due', true)::text);
    RETURN NEW;
END $$;
