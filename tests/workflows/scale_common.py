"""Names and tables shared by the scale-out tests and the modules their workers load.

Importing this registers nothing: the test process must not pick up the workers' subscriber
(``scale_subs``) or scheduled jobs (``scale_ticks``), which are global registrations.
"""

TOPIC = "scale.jobs"
DONE_TOPIC = "scale.done"
WORKFLOW = "scale-three-steps"

INVOCATIONS_DDL = """CREATE TABLE IF NOT EXISTS {schema}.scale_invocation (
    id           bigserial PRIMARY KEY,
    execution_id text             NOT NULL,
    step         text             NOT NULL,
    attempt      int              NOT NULL,
    pid          int              NOT NULL,
    started      double precision NOT NULL,
    ended        double precision,
    outcome      text
)"""

JOBS = ("scale-every-minute-a", "scale-every-minute-b")
TICK_WORKFLOW = "scale-tick"

TICK_RUNS_DDL = """CREATE TABLE IF NOT EXISTS {schema}.scale_tick_run (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL,
    tick         text NOT NULL,
    execution_id text NOT NULL,
    pid          int  NOT NULL
)"""
