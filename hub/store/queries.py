"""Every SQL statement the hub sends, each with its cost and locking noted.

``{s}`` is the schema, filled in once by :class:`hub.store.store.Store`. jsonb values travel
as text (the executor encodes them once, which is also where sizes are checked).
"""

from hub.wire import DUE_PAYLOAD

MIGRATION_LOCK = """-- serialises concurrent migrators of one schema (transaction-scoped)
SELECT pg_advisory_xact_lock(hashtext('hub-migrate:' || $1))"""

APPLIED_MIGRATIONS = """SELECT version FROM {s}.schema_migration ORDER BY version"""

CREATE_MIGRATION_TABLE = """CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.schema_migration (
    version    int         PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

RECORD_MIGRATION = """INSERT INTO {s}.schema_migration (version, name) VALUES ($1, $2)"""

START_BATCH = """-- 1 round trip for every start of a batch; the partial unique index turns a second
-- start of a transaction id into a no-op (its id is then not returned)
-- (a start made where it will run also records its first steps as started: no extra write;
-- one left for any worker wakes the workers on commit: identical notifications collapse)
WITH ins AS (
INSERT INTO {s}.execution AS e (id, workflow, version, transaction_id, status, input, trigger,
                                keep, lease_owner, lease_until, due_at, epoch, steps,
                                parent_id, parent_step)
SELECT c.id, c.workflow, c.version, c.transaction_id, c.status, c.input::jsonb,
       c.trigger::jsonb, c.keep, c.owner,
       CASE WHEN c.owner IS NULL THEN NULL ELSE now() + make_interval(secs => $8) END,
       CASE WHEN c.owner IS NULL THEN now() ELSE now() + make_interval(secs => $8) END,
       1, c.steps::jsonb,
       -- a child execution's lineage, which only the hub's run_child puts in a trigger
       (c.trigger::jsonb ->> 'parent_execution_id')::uuid, c.trigger::jsonb ->> 'parent_step'
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bool[], $9::text[], $10::text[], $11::text[])
     AS c(id, workflow, version, transaction_id, input, trigger, keep, owner, status, steps)
ON CONFLICT (workflow, transaction_id) WHERE NOT archived DO NOTHING
RETURNING e.id, e.lease_owner
)
SELECT ins.id,
       CASE WHEN ins.lease_owner IS NULL THEN pg_notify($12, '""" + DUE_PAYLOAD + """')::text END AS n
FROM ins"""

NOTIFY = """SELECT pg_notify($1, $2)"""

CHECKPOINT_BATCH = """-- 1 round trip, 1 commit for the checkpoints of many executions (group commit);
-- the epoch guard refuses a write from a worker whose lease was taken over; outbox rows,
-- connector calls (lineage) and the notification commit with the checkpoint, only for rows
-- that were written
WITH c AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bool[], $9::float8[], $10::bool[],
                         $11::float8[], $12::text[], $14::text[], $15::bigint[], $16::text[])
        AS c(id, epoch, status, phase, steps, result, error, hold, due_s, finished,
             retain_s, events, outbox, seen, calls)
), locked AS (
    -- rows are locked in id order, as RENEW_LEASES does: two multi-row writers never deadlock
    SELECT e.id FROM {s}.execution e JOIN c ON c.id = e.id ORDER BY e.id FOR UPDATE OF e
), u AS (
    UPDATE {s}.execution e SET
        status       = c.status,
        phase        = c.phase,
        steps        = e.steps || c.steps::jsonb,
        result       = CASE WHEN c.finished THEN c.result::jsonb ELSE e.result END,
        error        = COALESCE(c.error::jsonb, e.error),
        -- held: the lease columns stay as they are (the heartbeat renews them), so a step
        -- transition changes no indexed column and Postgres can update the row in place (HOT)
        lease_owner  = CASE WHEN c.hold THEN e.lease_owner END,
        lease_until  = CASE WHEN c.hold THEN e.lease_until END,
        -- released: due at its timer, or now if a signal it has not applied came in (one
        -- that committed while this worker was letting go: never lost)
        due_at       = CASE WHEN c.hold THEN e.due_at
                            WHEN e.last_signal > GREATEST(e.signals_done, c.seen) THEN now()
                            ELSE now() + make_interval(secs => c.due_s) END,
        signals_done = GREATEST(e.signals_done, c.seen),
        finished_at  = CASE WHEN c.finished THEN now() END,
        retain_until = CASE WHEN c.finished THEN now() + make_interval(secs => c.retain_s) END,
        updated_at   = now()
    FROM c
    WHERE e.id = c.id AND e.epoch = c.epoch AND e.id IN (SELECT id FROM locked)
    RETURNING e.id, c.events, c.outbox, c.calls
), o AS (
    INSERT INTO {s}.outbox (id, execution_id, step, topic, key, payload, headers)
    SELECT (x->>'id')::uuid, u.id, x->>'step', x->>'topic', x->>'key', x->'payload',
           COALESCE(x->'headers', '{}'::jsonb)
    FROM u, jsonb_array_elements(u.outbox::jsonb) AS x
    WHERE u.outbox IS NOT NULL
    ON CONFLICT (id) DO NOTHING
), k AS (
    -- a step attempt that called nothing sends NULL: no row, no cost
    INSERT INTO {s}.connector_call (execution_id, step, compensating, step_attempt, seq, system,
        operation, method, path, status, error, duration_ms, attempt, idempotency_key,
        outside_id, dropped, at)
    SELECT u.id, x.step, x.compensating, x.step_attempt, x.seq, x.system, x.operation,
           x.method, x.path, x.status, x.error, x.duration_ms, x.attempt, x.idempotency_key,
           x.outside_id, x.dropped, to_timestamp(x.at)
    FROM u, jsonb_to_recordset(u.calls::jsonb) AS x(
        step text, compensating bool, step_attempt int, seq int, system text, operation text,
        method text, path text, status int, error text, duration_ms float8, attempt int,
        idempotency_key text, outside_id text, dropped int, at float8)
    WHERE u.calls IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT u.id, CASE WHEN u.events IS NOT NULL THEN pg_notify($13, u.events)::text END AS n
FROM u"""

CLAIM_DUE = """-- 1 round trip; SKIP LOCKED: workers never wait on each other. A held execution's
-- due time is its lease expiry, so an abandoned one becomes due by itself
UPDATE {s}.execution e SET
    lease_owner = $1,
    lease_until = now() + make_interval(secs => $2),
    due_at      = now() + make_interval(secs => $2),
    epoch       = e.epoch + 1,
    updated_at  = now()
WHERE e.id IN (
    SELECT id FROM {s}.execution
    WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY due_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING e.*, EXISTS (SELECT 1 FROM {s}.signal g WHERE g.execution_id = e.id) AS has_signals"""

CLAIM_ONE = """-- 1 round trip: take one execution now (a local timer fired, or a signal arrived)
UPDATE {s}.execution e SET
    lease_owner = $1,
    lease_until = now() + make_interval(secs => $2),
    due_at      = now() + make_interval(secs => $2),
    epoch       = e.epoch + 1,
    updated_at  = now()
WHERE e.id = $3 AND e.due_at <= now() AND (e.lease_until IS NULL OR e.lease_until < now())
RETURNING e.*, EXISTS (SELECT 1 FROM {s}.signal g WHERE g.execution_id = e.id) AS has_signals"""

RENEW_LEASES = """-- 1 round trip for every held execution; rows not returned were taken over.
-- Rows are locked in id order (as CHECKPOINT_BATCH does) so the two never deadlock
WITH h AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[]) AS h(id, epoch)
), locked AS (
    SELECT e.id FROM {s}.execution e JOIN h ON h.id = e.id AND h.epoch = e.epoch
    ORDER BY e.id FOR UPDATE OF e
)
UPDATE {s}.execution e SET
    lease_until = now() + make_interval(secs => $3),
    due_at      = now() + make_interval(secs => $3)
WHERE e.id IN (SELECT id FROM locked) AND e.lease_owner IS NOT NULL
RETURNING e.id"""

RELEASE_LEASES = """-- on clean shutdown: hand held executions to the next worker at once
UPDATE {s}.execution e SET lease_owner = NULL, lease_until = NULL, due_at = now()
FROM unnest($1::uuid[], $2::bigint[]) AS h(id, epoch)
WHERE e.id = h.id AND e.epoch = h.epoch AND e.lease_owner IS NOT NULL"""

GET_BY_ID = """SELECT * FROM {s}.execution WHERE id = $1"""

GET_BY_TRANSACTION = """-- newest first: archived runs of a non-idempotent workflow come after the live one
SELECT * FROM {s}.execution
WHERE transaction_id = $1 AND ($2::text IS NULL OR workflow = $2)
ORDER BY archived, created_at DESC
LIMIT 2"""

FIND_STARTED = """SELECT e.* FROM {s}.execution e
JOIN unnest($1::text[], $2::text[]) AS k(workflow, transaction_id)
  ON e.workflow = k.workflow AND e.transaction_id = k.transaction_id AND NOT e.archived"""

ARCHIVE_FINISHED = """-- a non-idempotent workflow may start a finished transaction id again
UPDATE {s}.execution SET archived = true
WHERE workflow = $1 AND transaction_id = $2 AND NOT archived AND finished_at IS NOT NULL"""

ADD_SIGNAL = """-- 1 round trip: record the outside outcome, and the operator action behind it when
-- one is given ($8 not null), and the webhook delivery's id when it came signed ($11 not null):
-- one statement, so all commit or none. An id already recorded for its source records nothing
-- (a replay), and the caller is told (fresh = false). Wake the execution unless a worker holds
-- it (the holder hears the notification instead, and its release re-checks the stamp)
WITH wid AS (
    INSERT INTO {s}.webhook_id (source, id, execution_id, step, kind, digest, expires_at)
    SELECT $11, $12, $1, $2, $3, $14, now() + make_interval(secs => $13)
    WHERE $11::text IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING 1
), ok AS (
    SELECT $11::text IS NULL OR EXISTS (SELECT 1 FROM wid) AS fresh
), locked AS (
    -- the row is locked before the signal draws its id, and stays locked until commit: the
    -- signals of one execution commit in id order, so a reader that saw id N saw all below
    SELECT id FROM {s}.execution WHERE id = $1 FOR UPDATE
), sig AS (
    INSERT INTO {s}.signal (execution_id, step, kind, payload)
    SELECT $1, $2, $3, $4::jsonb FROM ok, locked WHERE ok.fresh RETURNING id
), aud AS (
    INSERT INTO {s}.audit (actor_id, actor_name, via, action, execution_id, target, detail)
    SELECT $5, $6, $7, $8, $1, $9, $10::jsonb FROM ok WHERE ok.fresh AND $8::text IS NOT NULL
), due AS (
    -- always stamped, even when held: the stamp locks the row, so it orders with a holder's
    -- release, which makes the execution due if it sees a stamp it has not applied
    UPDATE {s}.execution
    SET last_signal = (SELECT id FROM sig),
        due_at = CASE WHEN lease_owner IS NULL THEN now() ELSE due_at END,
        parked = CASE WHEN $3 = 'resume' AND lease_owner IS NULL THEN NULL ELSE parked END
    WHERE id = $1 AND EXISTS (SELECT 1 FROM sig)
)
SELECT fresh FROM ok"""

WEBHOOK_SEEN = """SELECT execution_id, step, kind, digest FROM {s}.webhook_id
WHERE source = $1 AND id = $2"""

PURGE_WEBHOOK_IDS = """-- bounded: a long outage's backlog of ids is purged a batch at a time
DELETE FROM {s}.webhook_id WHERE (source, id) IN (
    SELECT source, id FROM {s}.webhook_id WHERE expires_at < now() LIMIT $1)"""

PURGE_EXPIRED_LOCKS = """-- an expired lock is free already (LOCK_ACQUIRE takes it): its row is only kept a while
-- for whoever reads why a key was held
DELETE FROM {s}.lock WHERE key IN (
    SELECT key FROM {s}.lock WHERE expires_at < now() - interval '1 hour' LIMIT $1)"""

PURGE_REDRIVES = """-- a redrive record outlives its dead letter's use: older than the retention, it goes
DELETE FROM {s}.dlq_redrive WHERE (dlq_topic, partition, "offset", redriven_at) IN (
    SELECT dlq_topic, partition, "offset", redriven_at FROM {s}.dlq_redrive
    WHERE redriven_at < now() - make_interval(secs => $1) LIMIT $2)"""

PURGE_AUDIT = """-- oldest first by id (which follows time): the scan stops after one batch of matches
DELETE FROM {s}.audit WHERE id IN (
    SELECT id FROM {s}.audit WHERE at < now() - make_interval(secs => $1)
    ORDER BY id LIMIT $2)"""

READ_SIGNALS = """SELECT id, step, kind, payload FROM {s}.signal WHERE execution_id = $1 ORDER BY id"""

DELETE_SIGNALS = """-- exactly the rows applied: one with a lower id may have committed after the read
DELETE FROM {s}.signal WHERE execution_id = $1 AND id = ANY($2::bigint[])"""

PARK = """-- the execution cannot go on here (its version is unknown): visible, not retried
UPDATE {s}.execution SET parked = $3, lease_owner = NULL, lease_until = NULL, due_at = NULL,
    updated_at = now()
WHERE id = $1 AND epoch = $2"""

PURGE_FINISHED = """-- only executions that ended well, past their retention, in bounded batches: a live
-- run is never purged, nor one that needs a human (compensation_failed, parked), whose row is
-- the only record of a refund that never happened
DELETE FROM {s}.execution
WHERE id IN (SELECT id FROM {s}.execution
             WHERE retain_until < now() - make_interval(secs => $1)
               AND finished_at IS NOT NULL
               AND status IN ('succeeded', 'compensated', 'cancelled') AND parked IS NULL
             LIMIT $2)"""

FORGET_EXECUTION = """-- a store=False run: only what dedupes its transaction id stays, until purged
WITH calls AS (
    DELETE FROM {s}.connector_call c USING {s}.execution e
    WHERE c.execution_id = $1 AND e.id = $1 AND e.status = 'succeeded'
      AND e.finished_at IS NOT NULL
)
UPDATE {s}.execution SET input = NULL, steps = '{}'::jsonb, result = NULL,
       retain_until = now() + make_interval(secs => $2)
WHERE id = $1 AND status = 'succeeded' AND finished_at IS NOT NULL"""

LIST_EXECUTIONS = """SELECT * FROM {s}.execution
WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5"""

LOCK_ACQUIRE = """-- 1 round trip: take the key if free, expired, or already ours
INSERT INTO {s}.lock AS l (key, owner, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
WHERE l.owner = EXCLUDED.owner OR l.expires_at < now()
RETURNING key"""

LOCK_RELEASE = """DELETE FROM {s}.lock WHERE key = $1 AND owner = $2"""

OUTBOX_STATE = """CASE WHEN sent_at IS NOT NULL THEN 'sent' WHEN failed_at IS NOT NULL THEN 'failed'
     WHEN attempts > 0 THEN 'retrying' ELSE 'pending' END"""
"""A row's state, derived from its columns (never stored twice): pending, retrying (a
publish failed, another is due at next_attempt_at), failed (waits for an operator), sent."""

OUTBOX_DUE = """CASE WHEN sent_at IS NULL AND failed_at IS NULL
     THEN GREATEST(next_attempt_at, created_at) END"""
"""When the relay will next try a row (rows from before 0008 hold -infinity: their creation);
NULL once it was sent or failed."""

OUTBOX_CLAIM = """-- inside the relay's transaction: rows stay locked while they are published, so two
-- relays never publish one row at the same time (SKIP LOCKED: they never wait either). The
-- outbox_pending index holds only rows to publish: one backing off is past now(), a failed one
-- is not there
SELECT id, topic, key, payload::text AS payload, headers, attempts FROM {s}.outbox
WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
ORDER BY next_attempt_at
LIMIT $1
FOR UPDATE SKIP LOCKED"""

OUTBOX_SETTLE = """-- 1 round trip, in the claim's transaction: every claimed row's fate at once. Sent rows are
-- marked sent; a retryable failure backs off exponentially ($4 * 2^attempts, capped at $5 s)
-- unless it reaches $3 attempts, and then fails like a non-retryable one (failed_at, the
-- reason in last_error). Returns each row as it now is, for the relay's log
UPDATE {s}.outbox o SET
    attempts        = o.attempts + 1,
    sent_at         = CASE WHEN c.fate = 'sent' THEN now() END,
    failed_at       = CASE WHEN c.fate = 'failed' OR (c.fate = 'retry' AND o.attempts + 1 >= $3)
                           THEN now() END,
    last_error      = CASE WHEN c.fate = 'sent' THEN o.last_error
                           WHEN c.fate = 'retry' AND o.attempts + 1 >= $3
                           THEN 'gave up after ' || (o.attempts + 1) || ' attempts: ' || c.error
                           ELSE c.error END,
    next_attempt_at = CASE WHEN c.fate = 'retry' THEN now() + make_interval(
                               secs => LEAST($5::float8, $4::float8 * power(2, LEAST(o.attempts, 30))))
                           ELSE o.next_attempt_at END
FROM unnest($1::uuid[], $2::text[], $6::text[]) AS c(id, fate, error)
WHERE o.id = c.id
RETURNING o.id, o.topic, o.attempts, o.sent_at IS NOT NULL AS sent,
          o.failed_at IS NOT NULL AS failed, o.next_attempt_at, o.last_error"""

OUTBOX_BACKLOG = """-- rows still to publish (failed ones wait for an operator and are counted apart);
-- the outbox_pending and outbox_failed partial indexes bound the rows read
SELECT (SELECT count(*) FROM {s}.outbox WHERE sent_at IS NULL AND failed_at IS NULL) AS unsent,
       (SELECT min(created_at) FROM {s}.outbox
        WHERE sent_at IS NULL AND failed_at IS NULL) AS oldest,
       (SELECT count(*) FROM {s}.outbox WHERE failed_at IS NOT NULL) AS failed"""

OUTBOX_RETRY = """-- 1 round trip, 1 commit: make unsent rows due now (chosen by id, or every failed one with
-- $6), their attempts counted afresh, and record each as an operator action ($3 not null) in
-- the same statement. A sent row is left alone (it is not returned). FOR UPDATE: a relay
-- publishing one of them right now finishes first
WITH o AS (
    SELECT id, execution_id, topic, attempts, last_error FROM {s}.outbox
    WHERE sent_at IS NULL AND (id = ANY($1::uuid[]) OR ($6 AND failed_at IS NOT NULL))
    ORDER BY id
    LIMIT $7
    FOR UPDATE
), r AS (
    UPDATE {s}.outbox x SET failed_at = NULL, attempts = 0, next_attempt_at = now()
    FROM o WHERE x.id = o.id
    RETURNING x.id
), a AS (
    INSERT INTO {s}.audit (actor_id, actor_name, via, action, execution_id, target, detail)
    SELECT $2, $3, $4, $5, o.execution_id, 'outbox:' || o.id,
           jsonb_build_object('topic', o.topic, 'attempts', o.attempts, 'error', o.last_error)
    FROM o WHERE $3::text IS NOT NULL
)
SELECT o.id FROM o"""

OUTBOX_PURGE_SENT = """-- bounded: rows sent longer ago than the retention, a batch at a time (outbox_sent
-- index). Unsent rows (pending, retrying, failed) are never purged
DELETE FROM {s}.outbox WHERE id IN (
    SELECT id FROM {s}.outbox
    WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)
    ORDER BY sent_at
    LIMIT $2)"""

OUTBOX_LIST = """-- the outbox page (API, CLI, console): rows not yet sent, newest first from the cursor
-- ($2, $3), optionally of one state ($1). No payload (it can be large). Planned for the
-- values at hand (Store.outbox_list): failed rows walk outbox_failed, the others the small
-- outbox_pending set
SELECT id, execution_id, step, topic, key, created_at, sent_at, failed_at, attempts,
       """ + OUTBOX_DUE + """ AS next_attempt_at, last_error, """ + OUTBOX_STATE + """ AS state
FROM {s}.outbox
WHERE sent_at IS NULL
  AND ($1::text IS NULL
       OR ($1 = 'failed' AND failed_at IS NOT NULL)
       OR ($1 = 'retrying' AND failed_at IS NULL AND attempts > 0)
       OR ($1 = 'pending' AND failed_at IS NULL AND attempts = 0))
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4"""

OUTBOX_GET = """SELECT id, execution_id, step, topic, key, created_at, sent_at, failed_at, attempts,
       """ + OUTBOX_DUE + """ AS next_attempt_at, last_error, """ + OUTBOX_STATE + """ AS state
FROM {s}.outbox WHERE id = ANY($1::uuid[])"""

OUTBOX_FOR_EXECUTION = """SELECT id, topic, key, payload, headers, created_at, sent_at
FROM {s}.outbox WHERE execution_id = $1 ORDER BY created_at"""

RECORD_REDRIVE = """INSERT INTO {s}.dlq_redrive (dlq_topic, partition, "offset", target, redriven_by)
VALUES ($1, $2, $3, $4, $5)"""

REDRIVES_AT = """-- 1 round trip for a page of dead letters; the primary key (dlq_topic, partition,
-- offset, ...) finds each position, so the cost follows the page, never the topic
SELECT dlq_topic, partition, "offset", target, redriven_by, redriven_at
FROM {s}.dlq_redrive
WHERE dlq_topic = $1 AND (partition, "offset") IN (SELECT * FROM unnest($2::int[], $3::bigint[]))
ORDER BY redriven_at"""

REDRIVEN_COUNT = """-- 1 round trip; one primary-key range per partition: dead letters still on the topic
-- (from its beginning to its end offset) redriven at least once
SELECT count(DISTINCT (r.partition, r."offset")) AS n
FROM {s}.dlq_redrive r
JOIN unnest($2::int[], $3::bigint[], $4::bigint[]) AS b(p, lo, hi)
  ON r.partition = b.p AND r."offset" >= b.lo AND r."offset" < b.hi
WHERE r.dlq_topic = $1"""

# -- scheduled jobs (hub.runtime.scheduler) -----------------------------------------------
# Tick instants are computed in Python (cron and timezone math); every comparison with "now"
# uses the scheduler's clock ($-parameters), except the crash-recovery deadlines (retry_at),
# which are real time and so use the server's now().

SCHEDULE_UPSERT = """-- 1 round trip when a scheduler starts, for all of its jobs. A known job keeps next_tick,
-- last_tick and paused (a restart loses no tick), unless its cron or timezone changed: then
-- the caller's next tick under the new definition applies (a new schedule does not catch up).
-- An unchanged row is not written at all (no dead tuple per restart)
INSERT INTO {s}.schedule AS s (job, workflow, cron, timezone, misfire, next_tick)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
ON CONFLICT (job) DO UPDATE SET
    workflow   = EXCLUDED.workflow,
    cron       = EXCLUDED.cron,
    timezone   = EXCLUDED.timezone,
    misfire    = EXCLUDED.misfire,
    next_tick  = CASE WHEN (s.cron, s.timezone) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.timezone)
                      THEN EXCLUDED.next_tick ELSE s.next_tick END,
    updated_at = now()
WHERE (s.workflow, s.cron, s.timezone, s.misfire)
      IS DISTINCT FROM (EXCLUDED.workflow, EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.misfire)"""

SCHEDULE_PEEK = """-- the idle scheduler's only statement: 1 round trip, no locks, a handful of rows. It
-- returns the next tick of every active job of the caller and whether any of their ticks
-- waits for recovery (partial index: normally empty). Always one row, even with no jobs
SELECT u.unstarted, s.job, s.cron, s.timezone, s.next_tick
FROM (SELECT EXISTS (SELECT 1 FROM {s}.schedule_tick
                     WHERE execution_id IS NULL AND retry_at <= now()
                       AND job = ANY($1::text[])) AS unstarted) u
LEFT JOIN {s}.schedule s ON s.job = ANY($1::text[]) AND NOT s.paused"""

SCHEDULE_CLAIM = """-- 1 round trip, 1 commit: advance each due job from the next_tick the caller read and
-- insert the ticks it fires. Compare-and-set: a job whose next_tick moved meanwhile is left
-- alone; SKIP LOCKED: a job another scheduler is advancing right now is theirs (rows are
-- locked in job order, so two claimers never deadlock). The primary key (job, tick) makes a
-- second claim of a tick a no-op even so. Returns a row per job advanced here, with each tick
-- inserted here (NULL: none, e.g. a skip): the caller starts exactly those, after this commit
WITH c AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
        AS c(job, seen, next_tick, last_tick)
), locked AS (
    SELECT s.job FROM {s}.schedule s JOIN c ON c.job = s.job AND s.next_tick = c.seen
    WHERE NOT s.paused
    ORDER BY s.job
    FOR UPDATE OF s SKIP LOCKED
), adv AS (
    UPDATE {s}.schedule s SET
        next_tick     = c.next_tick,
        last_tick     = GREATEST(s.last_tick, c.last_tick),
        last_fired_at = CASE WHEN c.last_tick IS NULL THEN s.last_fired_at ELSE now() END,
        updated_at    = now()
    FROM c
    WHERE s.job = c.job AND s.job IN (SELECT job FROM locked)
    RETURNING s.job
), ins AS (
    INSERT INTO {s}.schedule_tick (job, tick, retry_at)
    SELECT t.job, t.tick, now() + make_interval(secs => $7)
    FROM unnest($5::text[], $6::timestamptz[]) AS t(job, tick)
    WHERE t.job IN (SELECT job FROM adv)
    ON CONFLICT (job, tick) DO NOTHING
    RETURNING job, tick
)
SELECT adv.job, ins.tick FROM adv LEFT JOIN ins ON ins.job = adv.job"""

SCHEDULE_TAKE_UNSTARTED = """-- 1 round trip: lease claimed-but-unstarted ticks whose deadline passed (their claimer
-- died between claim and start, or the start failed) by pushing the deadline on; SKIP
-- LOCKED: two recovering schedulers never take the same tick
UPDATE {s}.schedule_tick t SET retry_at = now() + make_interval(secs => $2)
WHERE (t.job, t.tick) IN (
    SELECT job, tick FROM {s}.schedule_tick
    WHERE execution_id IS NULL AND retry_at <= now() AND job = ANY($1::text[])
    ORDER BY retry_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING t.job, t.tick, t.attempts"""

SCHEDULE_MARK_STARTED = """-- 1 round trip for a batch of start outcomes: an execution id closes the tick; a failure
-- records the error and a retry deadline with exponential backoff, or gives up (retry_at NULL,
-- error kept) after $5 attempts or at once when retrying cannot help (final)
UPDATE {s}.schedule_tick t SET
    execution_id = c.execution_id,
    attempts     = t.attempts + 1,
    error        = c.error,
    retry_at     = CASE WHEN c.execution_id IS NOT NULL OR c.final OR t.attempts + 1 >= $5
                        THEN NULL
                        ELSE now() + make_interval(secs => LEAST(3600, $6 * power(2, t.attempts)))
                   END
FROM unnest($1::text[], $2::timestamptz[], $3::uuid[], $4::text[], $7::bool[])
    AS c(job, tick, execution_id, error, final)
WHERE t.job = c.job AND t.tick = c.tick AND t.execution_id IS NULL"""

SCHEDULE_JOBS = """-- for the API and CLI: every job with the execution of its latest fired tick
SELECT s.job, s.workflow, s.cron, s.timezone, s.misfire, s.next_tick, s.last_tick,
       s.last_fired_at, s.paused, s.updated_at, t.execution_id AS last_execution_id,
       t.error AS last_error
FROM {s}.schedule s
LEFT JOIN {s}.schedule_tick t ON t.job = s.job AND t.tick = s.last_tick
ORDER BY s.job"""

SCHEDULE_TICKS = """SELECT job, tick, fired_at, execution_id, attempts, error, retry_at
FROM {s}.schedule_tick WHERE job = $1 ORDER BY tick DESC LIMIT $2"""

SCHEDULE_SET_PAUSED = """-- resuming moves next_tick to the caller's next tick ($3): paused ticks are not missed
UPDATE {s}.schedule
SET paused = $2, next_tick = COALESCE($3, next_tick), updated_at = now()
WHERE job = $1
RETURNING job"""

SCHEDULE_PURGE_TICKS = """-- rare (hourly): started ticks past retention; the primary key index serves it. Unstarted
-- or given-up ticks stay visible
DELETE FROM {s}.schedule_tick
WHERE (job, tick) IN (SELECT job, tick FROM {s}.schedule_tick
                      WHERE job = ANY($1::text[]) AND tick < $2 AND execution_id IS NOT NULL
                      LIMIT $3)"""

# -- api keys --------------------------------------------------------------------------------
# Used by hub.api only: its keys, and the reads of the JSON API that no other caller needs.
# A key row holds the sha256 of its token, never the token; the public prefix finds the row.

API_KEY_INSERT = """-- rare (a CLI command); the unique prefix index refuses a duplicate prefix
INSERT INTO {s}.api_key (id, name, prefix, hash, scopes) VALUES ($1, $2, $3, $4, $5::text[])
RETURNING id, name, prefix, scopes, created_at, revoked_at, last_used_at"""

API_KEY_AUTHENTICATE = """-- 1 round trip per authenticated request: the prefix index finds the row and the caller
-- compares the hash in constant time. last_used_at is written only for a matching live key
-- and at most once per $3 seconds (a read must not become a write on every request); the
-- data-modifying CTE runs whether or not its rows are read
WITH k AS (
    SELECT id, name, prefix, hash, scopes, created_at, revoked_at, last_used_at
    FROM {s}.api_key WHERE prefix = $1
), touched AS (
    UPDATE {s}.api_key a SET last_used_at = now()
    FROM k
    WHERE a.id = k.id AND k.hash = $2 AND k.revoked_at IS NULL
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - make_interval(secs => $3))
    RETURNING a.id
)
SELECT k.* FROM k"""

API_KEY_REVOKE = """-- idempotent: a key revoked earlier keeps its first revocation time
UPDATE {s}.api_key SET revoked_at = COALESCE(revoked_at, now())
WHERE id = $1 OR prefix = $2
RETURNING id, name, prefix, scopes, created_at, revoked_at, last_used_at"""

API_KEY_LIST = """-- a handful of rows; the hash never leaves the database here
SELECT id, name, prefix, scopes, created_at, revoked_at, last_used_at
FROM {s}.api_key ORDER BY created_at, id"""

# -- console sessions --------------------------------------------------------------------
# Used by hub.api.console only. A row holds the sha256 of the browser's token, never the
# token, and speaks for the API key it was opened with (joined on every lookup).

CONSOLE_SESSION_OPEN = """-- 1 round trip per login; the unique hash index refuses a (vanishingly unlikely) twin
INSERT INTO {s}.console_session (id, token_hash, api_key_id, csrf, expires_at, idle_expires_at,
                                 user_agent, remote_addr)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6),
        $7, $8)"""

CONSOLE_SESSION_FIND = """-- 1 round trip per console request: the hash index finds the session, the primary key its
-- API key (whose revocation and scopes are the session's). Live sessions are touched at most
-- once per $3 seconds: last_seen_at, the idle deadline ($2 seconds on) and the key's
-- last_used_at; the data-modifying CTEs run whether or not their rows are read
WITH c AS (
    SELECT s.id, s.csrf, s.last_seen_at, s.api_key_id, k.name, k.prefix, k.scopes,
           s.revoked_at, k.revoked_at AS key_revoked_at,
           s.expires_at <= now() AS expired, s.idle_expires_at <= now() AS idle
    FROM {s}.console_session s JOIN {s}.api_key k ON k.id = s.api_key_id
    WHERE s.token_hash = $1
), touched AS (
    UPDATE {s}.console_session s
    SET last_seen_at = now(), idle_expires_at = LEAST(s.expires_at, now() + make_interval(secs => $2))
    FROM c
    WHERE s.id = c.id AND c.revoked_at IS NULL AND c.key_revoked_at IS NULL
      AND NOT c.expired AND NOT c.idle
      AND c.last_seen_at < now() - make_interval(secs => $3)
    RETURNING s.api_key_id
), key_touched AS (
    UPDATE {s}.api_key k SET last_used_at = now()
    FROM touched WHERE k.id = touched.api_key_id
)
SELECT id, csrf, api_key_id, name, prefix, scopes, revoked_at, key_revoked_at, expired, idle
FROM c"""

CONSOLE_SESSION_REVOKE = """-- logout: idempotent, a session revoked earlier keeps its first revocation time
UPDATE {s}.console_session SET revoked_at = COALESCE(revoked_at, now()) WHERE token_hash = $1"""

PURGE_CONSOLE_SESSIONS = """-- bounded: sessions that can no longer be used (revoked, past either deadline, or opened
-- with a revoked key), a batch at a time; the table holds only recent logins, so the scan
-- is short
DELETE FROM {s}.console_session WHERE id IN (
    SELECT s.id FROM {s}.console_session s JOIN {s}.api_key k ON k.id = s.api_key_id
    WHERE s.revoked_at IS NOT NULL OR s.expires_at <= now() OR s.idle_expires_at <= now()
       OR k.revoked_at IS NOT NULL
    LIMIT $1)"""

API_LIST_EXECUTIONS = """-- 1 round trip per page: walks (created_at DESC, id) from the cursor ($6, $7) and
-- stops at LIMIT; summary columns only (no input, steps or result: they can be large).
-- Each filter has an index walkable newest first (workflow, status, trigger kind, time) or
-- selective enough to sort what it finds (transaction id, event key prefix $10: 'abc%').
-- The store plans it for the values at hand (see Store.api_list_executions)
SELECT id, workflow, version, transaction_id, status, phase, trigger, parked, archived,
       error->>'message' AS error_message, error->>'step' AS error_step,
       created_at, updated_at, finished_at
FROM {s}.execution
WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3)
  AND ($4::timestamptz IS NULL OR created_at < $4)
  AND ($5::text IS NULL OR trigger->>'kind' = $5)
  AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
  AND ($9::text IS NULL OR transaction_id = $9)
  AND ($10::text IS NULL OR trigger->>'key' LIKE $10)
ORDER BY created_at DESC, id DESC
LIMIT $8"""

API_EXECUTION_COUNTS = """-- for /metrics scrapes (cached by the caller for a few seconds): one pass over the
-- execution table, whose size retention bounds; no locks
SELECT workflow, status, count(*) AS n FROM {s}.execution GROUP BY workflow, status"""

API_OUTBOX_FOR_EXECUTION = """-- the events one execution published, with the step that emitted each and the relay's
-- progress (outbox_execution index)
SELECT id, step, topic, key, payload, headers, created_at, sent_at, attempts, last_error,
       failed_at, """ + OUTBOX_DUE + """ AS next_attempt_at, """ + OUTBOX_STATE + """ AS state
FROM {s}.outbox WHERE execution_id = $1 ORDER BY created_at, id"""

API_CALLS_FOR_EXECUTION = """-- the connector calls of one execution in the order they were made (its primary key)
SELECT step, compensating, step_attempt, seq, system, operation, method, path, status, error,
       duration_ms, attempt, idempotency_key, outside_id, dropped, at
FROM {s}.connector_call WHERE execution_id = $1
ORDER BY at, step, compensating, step_attempt, seq
LIMIT $2"""

# -- console (hub.api.console, through HubService) -----------------------------------------

API_EXECUTION_BUCKETS = """-- the overview chart, refreshed every few seconds: executions created since $1, counted per
-- workflow, status and time bucket of $2 seconds. A range scan of execution_created (the
-- window bounds the rows read); no locks
SELECT workflow, status,
       to_timestamp(floor(extract(epoch FROM created_at) / $2) * $2) AS bucket,
       count(*) AS n
FROM {s}.execution
WHERE created_at >= $1
GROUP BY 1, 2, 3"""

AUDIT_INSERT = """-- 1 round trip: an operator action no signal carries (a redrive)
INSERT INTO {s}.audit (actor_id, actor_name, via, action, execution_id, target, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
RETURNING id, at"""

AUDIT_FOR_EXECUTION = """-- the execution page: its actions oldest first (audit_execution index)
SELECT id, at, actor_id, actor_name, via, action, execution_id, target, detail
FROM {s}.audit WHERE execution_id = $1 ORDER BY id LIMIT $2"""

AUDIT_FOR_TARGETS = """-- the dead-letter page: the actions on these targets (audit_target index)
SELECT id, at, actor_id, actor_name, via, action, execution_id, target, detail
FROM {s}.audit WHERE target = ANY($1::text[]) ORDER BY id"""

CUSTOM_PLAN_BEGIN = """-- opens the transaction of Store._fetch_custom_plan (one simple-query round trip): the
-- next statement is planned for its parameter values, and nothing in it can write
BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan"""

CUSTOM_PLAN_END = """-- ends it (a rollback if the statement failed)
COMMIT"""

# -- fan-out items (map_each) and child executions -------------------------------------------
FANOUT_ITEMS = """-- 1 round trip: every item of one map step, in item order (primary key range)
SELECT idx, key, state, attempts, comp_attempts, seq, output, compensate_input, error
FROM {s}.fanout_item WHERE execution_id = $1 AND step = $2 ORDER BY idx"""

FANOUT_INSERT = """-- 1 round trip: a fan-out's items, all at once, only while the epoch still holds (a
-- worker whose lease was taken over inserts nothing); a second insert of the same items
-- (a re-run map) changes nothing
INSERT INTO {s}.fanout_item (execution_id, step, idx, key, state)
SELECT $1, $2, i.idx, i.key, 'not_started'
FROM unnest($4::int[], $5::text[]) AS i(idx, key)
WHERE EXISTS (SELECT 1 FROM {s}.execution WHERE id = $1 AND epoch = $3)
ON CONFLICT DO NOTHING"""

FANOUT_WRITE = """-- 1 round trip, 1 commit for the transitions of many items (of many executions): each
-- rewrites one small row in place (HOT: no indexed column changes), never a document that
-- grows with the list; a row whose execution's epoch moved on is not written
UPDATE {s}.fanout_item f SET
    state = c.state, attempts = c.attempts, comp_attempts = c.comp_attempts, seq = c.seq,
    output = c.output::jsonb, compensate_input = c.comp::jsonb, error = c.error::jsonb,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[],
            $7::int[], $8::bigint[], $9::text[], $10::text[], $11::text[])
     AS c(execution_id, step, idx, epoch, state, attempts, comp_attempts, seq, output, comp,
          error)
JOIN {s}.execution e ON e.id = c.execution_id AND e.epoch = c.epoch
WHERE f.execution_id = c.execution_id AND f.step = c.step AND f.idx = c.idx
RETURNING f.execution_id, f.step, f.idx"""

FANOUT_COUNTS = """-- the execution page: each map step's item counts per state (primary key range)
SELECT step, state, count(*)::int AS n FROM {s}.fanout_item WHERE execution_id = $1
GROUP BY step, state ORDER BY step, state"""

FANOUT_PAGE = """-- the console's item list of one map step, a page at a time, in item order
SELECT idx, key, state, attempts, comp_attempts, seq, output, error, updated_at
FROM {s}.fanout_item WHERE execution_id = $1 AND step = $2 AND idx >= $3
ORDER BY idx LIMIT $4"""

CHILDREN_OF = """-- lineage: the child executions a parent's steps started (execution_parent index)
SELECT id, workflow, status, transaction_id, parent_step, created_at, finished_at
FROM {s}.execution WHERE parent_id = $1 ORDER BY created_at, id"""

REOPEN_FOR_COMPENSATION = """-- a parent rolls back: its child that succeeded is undone too, by reopening it in the
-- compensating phase and making it due (any worker claims it and compensates its steps);
-- only a succeeded child is reopened, so a second call changes nothing
UPDATE {s}.execution SET status = 'running', phase = 'compensating', finished_at = NULL,
    retain_until = NULL, due_at = now(), error = $2::jsonb, updated_at = now()
WHERE id = $1 AND status = 'succeeded' AND lease_owner IS NULL
RETURNING id"""
