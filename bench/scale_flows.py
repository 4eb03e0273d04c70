"""The workload of ``bench/scale.py``: one event starts one workflow of three steps, no I/O.

Loaded by every ``hub worker`` the bench starts, twice: ``HUB_MODULES=bench.scale_flows`` for
the workflow, ``HUB_KAFKA_SUBSCRIBERS=bench.scale_flows`` for the subscriber of
``scale.jobs`` (the bench sets its own ``HUB_KAFKA_TOPIC_PREFIX``, so the real topic is e.g.
``k2.scale.jobs``).

The steps touch nothing outside the process: each returns a small dict, as in
``bench/engine.py``, so what is measured is the hub (consumer, starts, claims, checkpoints).
So that the bench can still prove no step ran twice, every invocation appends one line
``execution_id step attempt start_ns end_ns pid`` to a buffered file of its own process,
``$SCALE_STEP_LOG_DIR/steps-<pid>.tsv``, written out at exit (a few microseconds per step, no
system call on the way). Unset ``SCALE_STEP_LOG_DIR``: nothing is recorded.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import IO, Any

from pydantic import BaseModel

from hub import (
    StepContext,
    SubscriberContext,
    WorkflowDefinition,
    WorkflowResponse,
    create_step,
    create_workflow,
    subscriber,
)

TOPIC = "scale.jobs"
DEAD_LETTER = "scale.jobs.dlq"
WORKFLOW = "bench-scale-three-steps"
STEP_LOG_DIR = "SCALE_STEP_LOG_DIR"


class ScaleJob(BaseModel):
    """One unit of work. ``sent_ns`` is when it was sent (``time.time_ns()`` of the producer,
    or of the bench for starts made without Kafka): latency is measured from it."""

    id: str
    sent_ns: int
    phase: str


# --- the step log ------------------------------------------------------------------------------

_log: IO[str] | None = None
_log_pid: int | None = None


def _step_log() -> IO[str] | None:
    global _log, _log_pid
    if _log_pid == os.getpid():
        return _log
    _log_pid = os.getpid()
    folder = os.environ.get(STEP_LOG_DIR)
    _log = None
    if folder:
        _log = open(os.path.join(folder, f"steps-{_log_pid}.tsv"), "a",  # noqa: SIM115
                    buffering=1 << 20, encoding="utf-8")
        atexit.register(_log.close)
    return _log


def _record(ctx: StepContext, started_ns: int) -> None:
    out = _step_log()
    if out is not None:
        out.write(f"{ctx.execution_id}\t{ctx.step}\t{ctx.attempt}\t{started_ns}\t"
                  f"{time.time_ns()}\t{_log_pid}\n")


# --- the workflow ------------------------------------------------------------------------------


@create_step("bench-scale-a")
async def step_a(job: ScaleJob, ctx: StepContext) -> dict[str, Any]:
    t = time.time_ns()
    out = {"id": job.id, "a": 1}
    _record(ctx, t)
    return out


@create_step("bench-scale-b")
async def step_b(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    t = time.time_ns()
    out = {"id": inp["id"], "b": inp["a"] + 1}
    _record(ctx, t)
    return out


@create_step("bench-scale-c")
async def step_c(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    t = time.time_ns()
    out = {"id": inp["id"], "c": inp["b"] + 1}
    _record(ctx, t)
    return out


def _compose(job: ScaleJob) -> WorkflowResponse:
    return WorkflowResponse(step_c(step_b(step_a(job))))


scale_three_steps: WorkflowDefinition = create_workflow(WORKFLOW, _compose)


# --- the subscriber ----------------------------------------------------------------------------


@subscriber(TOPIC, name="bench_scale_on_job")
async def on_job(event: ScaleJob, ctx: SubscriberContext) -> None:
    await scale_three_steps(ctx.hub).run(input=event, transaction_id=f"scale:{event.id}",
                                         wait=False)
