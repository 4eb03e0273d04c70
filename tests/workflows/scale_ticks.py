"""Scheduled jobs for the scale-out tests, fired by the schedulers of several ``hub worker``
processes at once.

Two jobs tick every minute (cron's finest grain) with ``misfire="all"``, so every tick that
passed while no scheduler fired it is fired late, once. Their workflow is not idempotent: a
second start of a tick that already ran would start a second execution instead of finding the
first, and its step records every run it makes in ``<HUB_SCHEMA>.scale_tick_run``, so a tick
fired twice would show up in the executions and in that table. Only the workers load this
module (``HUB_MODULES``): the jobs are global registrations.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from hub import StepContext, WorkflowResponse, create_step, create_workflow, scheduled
from tests.workflows.scale_common import JOBS, TICK_WORKFLOW

_pool: asyncpg.Pool | None = None


@create_step("scale-tick-record")
async def record_tick(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["HUB_DATABASE_URL"], min_size=1,
                                          max_size=2)
    schema = os.environ["HUB_SCHEMA"]
    await _pool.execute(
        f"INSERT INTO {schema}.scale_tick_run (job, tick, execution_id, pid) "
        "VALUES ($1, $2, $3, $4)", inp["job"], inp["tick"], ctx.execution_id, os.getpid())
    return inp


@create_workflow(TICK_WORKFLOW, idempotent=False)
def scale_tick(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(record_tick(inp))


def _input_of(job: str) -> Callable[[datetime], dict[str, Any]]:
    def make(tick: datetime) -> dict[str, Any]:
        return {"job": job, "tick": tick.isoformat()}

    return make


for _job in JOBS:
    scheduled("* * * * *", name=_job, workflow=scale_tick, misfire="all", input=_input_of(_job))
