"""Workflows for crash tests: each step records its external effect keyed by its
idempotency key, in a table of the test's schema, then dawdles so a kill lands mid-step."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
from pydantic import BaseModel

from hub import StepContext, StepResponse, WorkflowResponse, create_step, create_workflow

_pool: asyncpg.Pool | None = None


async def effects_pool() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["HUB_DATABASE_URL"], min_size=1,
                                          max_size=4)
    return _pool


EFFECTS_DDL = """CREATE TABLE IF NOT EXISTS {schema}.effects (
    key text PRIMARY KEY, applies int NOT NULL DEFAULT 1, at timestamptz DEFAULT now())"""


async def apply_effect(ctx: StepContext) -> None:
    """What a connector honouring an idempotency key does: one effect per key, and a count
    of how many times it was asked (to prove re-invocations happened and were absorbed)."""
    schema = os.environ["HUB_SCHEMA"]
    pool = await effects_pool()
    await pool.execute(
        f"INSERT INTO {schema}.effects (key) VALUES ($1) "
        f"ON CONFLICT (key) DO UPDATE SET applies = {schema}.effects.applies + 1",
        ctx.idempotency_key,
    )


class Job(BaseModel):
    n: int
    sleep: float = 0.3


def _make(name: str) -> Any:
    async def invoke(inp: Job, ctx: StepContext) -> StepResponse[Any]:
        await apply_effect(ctx)
        await asyncio.sleep(inp.sleep)
        return StepResponse({"step": name, "n": inp.n})

    return create_step(name, invoke)


crash_a, crash_b, crash_c = _make("crash-a"), _make("crash-b"), _make("crash-c")


@create_workflow("crash-three-steps")
def crash_three_steps(inp: Job) -> WorkflowResponse:
    crash_a(inp)
    crash_b(inp)
    return WorkflowResponse(crash_c(inp))
