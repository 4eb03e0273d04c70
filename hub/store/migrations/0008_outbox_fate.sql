-- Each outbox row's fate is its own. A publish that failed and may succeed later is retried
-- with backoff (attempts, next_attempt_at, last_error); one that cannot succeed (too large,
-- an invalid topic) or kept failing is moved to the failed state (failed_at, last_error),
-- where it waits for `hub outbox retry` and is never purged. Healthy rows of its batch are
-- marked sent in the same transaction, so they are not published again.
--
-- next_attempt_at: existing rows get a constant (no table rewrite), new ones their insert
-- time, so due rows are claimed in the order they became due.
ALTER TABLE {schema}.outbox
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN failed_at       timestamptz;
ALTER TABLE {schema}.outbox ALTER COLUMN next_attempt_at SET DEFAULT clock_timestamp();

-- the relay's claim: only rows still to publish, by due time; a row backing off sits past
-- now() in the index and a failed or sent one is not in it at all
DROP INDEX {schema}.outbox_unsent;
CREATE INDEX outbox_pending ON {schema}.outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
-- the failed rows for `hub outbox list --failed`, the API and the console, newest first
CREATE INDEX outbox_failed ON {schema}.outbox (created_at DESC, id DESC)
    WHERE failed_at IS NOT NULL;
-- retention: sent rows past it, oldest first, a bounded batch at a time
CREATE INDEX outbox_sent ON {schema}.outbox (sent_at) WHERE sent_at IS NOT NULL;
