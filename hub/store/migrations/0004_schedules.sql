-- Scheduled jobs: time is data. A job's next tick is a row, and every fired tick is a row
-- keyed by (job, tick), so a restart loses no tick and two schedulers never fire one twice.

-- One row per job, written by the schedulers that define it (upsert at start).
CREATE TABLE {schema}.schedule (
    job           text        PRIMARY KEY,
    workflow      text        NOT NULL,
    cron          text        NOT NULL,
    timezone      text        NOT NULL,
    misfire       text        NOT NULL,
    -- the first tick not yet handled (fired or skipped); advanced with compare-and-set
    next_tick     timestamptz NOT NULL,
    -- the latest tick that was fired, and when
    last_tick     timestamptz,
    last_fired_at timestamptz,
    paused        boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per fired tick. It commits with the advance of schedule.next_tick, before the
-- workflow starts; execution_id is filled in after the start, so a row without one is a tick
-- whose start may have been lost (recovered once retry_at has passed).
CREATE TABLE {schema}.schedule_tick (
    job          text        NOT NULL,
    tick         timestamptz NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    execution_id uuid,
    -- start attempts, the last start error, and when an unstarted tick may be recovered
    -- (NULL: started, or given up after too many failed starts: visible, not retried)
    attempts     int         NOT NULL DEFAULT 0,
    error        text,
    retry_at     timestamptz,
    PRIMARY KEY (job, tick)
);
-- the scheduler's idle check and its recovery read only unstarted ticks: usually none
CREATE INDEX schedule_tick_unstarted ON {schema}.schedule_tick (retry_at)
    WHERE execution_id IS NULL;
