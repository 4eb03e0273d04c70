"""Workflows for the scale-out tests (``tests/test_scale_out.py``), run by ``hub worker``
processes: every step invocation is recorded, with the process that ran it and when it began
and ended, in ``<HUB_SCHEMA>.scale_invocation`` (``scale_common.INVOCATIONS_DDL``), so a test
can prove that no two invocations of one step of one execution overlapped in time, whichever
workers ran them.

``scale-three-steps`` runs ``scale-a``, ``scale-b``, ``scale-c`` one after the other. Each
records its start (a row) before doing anything, sleeps ``sleep`` seconds, and records its end
and outcome in a ``finally``; so an invocation cut short (cancelled by a worker that stops)
still gets an end, taken when its code really stopped running. Knobs of the input:

  sleep       seconds each step takes (``first_sleep``: ``scale-a``'s, when given);
  fail_first  ``scale-b`` fails its first attempt (the retry may land on another worker);
  cleanup     seconds a cancelled step needs before it gives up: it waits out a call it
              cannot abandon (blocking work in a thread), however often it is cancelled;
  emit        ``scale-c`` emits two events to ``scale.done`` through the outbox.

Events on ``scale.jobs`` start the workflow (``scale_subs``); the tests put their own
``HUB_KAFKA_TOPIC_PREFIX`` before both topic names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel

from hub import StepContext, WorkflowResponse, create_step, create_workflow
from tests.workflows.scale_common import DONE_TOPIC, WORKFLOW

T = TypeVar("T")

_pool: asyncpg.Pool | None = None
_pool_lock = asyncio.Lock()


async def invocations_pool() -> asyncpg.Pool:
    """One small pool per worker process, made on first use."""
    global _pool
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["HUB_DATABASE_URL"], min_size=1,
                                              max_size=8)
    return _pool


class Job(BaseModel):
    id: str
    sleep: float = 0.02
    first_sleep: float | None = None
    fail_first: bool = False
    cleanup: float = 0.0
    emit: bool = False


async def _wait_out(seconds: float) -> None:
    """A call that cannot be abandoned half-way (blocking work in a thread, say): waited out
    however often the step is told to stop meanwhile."""
    # a thread of its own: the loop's default pool is small, and shared with the hub
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    call = asyncio.get_running_loop().run_in_executor(pool, time.sleep, seconds)
    pool.shutdown(wait=False)
    while not call.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(call)


async def _whole(statement: Awaitable[T]) -> tuple[T, bool]:
    """Run ``statement`` to the end however often the step is cut meanwhile; whether it was."""
    task = asyncio.ensure_future(statement)
    cut = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cut = True
    return task.result(), cut


async def _recorded(job: Job, ctx: StepContext, *, fail: bool = False,
                    sleep: float | None = None) -> None:
    schema = os.environ["HUB_SCHEMA"]
    pool = await invocations_pool()
    # the start and the end are written whole even when the step is cut meanwhile (a worker
    # stopping): a start with no end would count as running until the process exits
    row_id, cut = await _whole(pool.fetchval(
        f"INSERT INTO {schema}.scale_invocation (execution_id, step, attempt, pid, started) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        ctx.execution_id, ctx.step, ctx.attempt, os.getpid(), time.time()))
    outcome = "error"
    try:
        try:
            if cut:
                raise asyncio.CancelledError
            await asyncio.sleep(job.sleep if sleep is None else sleep)
        except asyncio.CancelledError:
            outcome = "cancelled"
            if job.cleanup:
                await _wait_out(job.cleanup)
            raise
        if fail:
            raise RuntimeError(f"{job.id}: first attempt of {ctx.step} fails on purpose")
        outcome = "ok"
    finally:
        _, cut = await _whole(pool.execute(
            f"UPDATE {schema}.scale_invocation SET ended = $2, outcome = $3 WHERE id = $1",
            row_id, time.time(), outcome))
        if cut:
            raise asyncio.CancelledError  # the cut that landed while the end was written


@create_step("scale-a")
async def scale_a(job: Job, ctx: StepContext) -> dict[str, Any]:
    await _recorded(job, ctx, sleep=job.first_sleep)
    return job.model_dump()


@create_step("scale-b", max_retries=2, retry_interval=0.05, backoff=1.0)
async def scale_b(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    job = Job.model_validate(inp)
    await _recorded(job, ctx, fail=job.fail_first and ctx.attempt == 1)
    return inp


@create_step("scale-c")
async def scale_c(inp: dict[str, Any], ctx: StepContext) -> str:
    job = Job.model_validate(inp)
    await _recorded(job, ctx)
    if job.emit:
        for n in (1, 2):
            ctx.emit(DONE_TOPIC, {"job": job.id, "n": n}, key=job.id)
    return job.id


@create_workflow(WORKFLOW)
def scale_three_steps(job: Job) -> WorkflowResponse:
    return WorkflowResponse(scale_c(scale_b(scale_a(job))))
