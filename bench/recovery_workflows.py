"""The workflow of ``bench/recovery.py``: three steps, each applying one external effect.

Each step records its effect under its idempotency key, as a connector honouring the key
would: one row per key, and a count of how many times the key was applied (a step cut by a
crash is invoked again with the same key; the count shows it, the key keeps the effect single).
It then sleeps ``BENCH_STEP_SLEEP`` seconds (default 0.02).

The first step waits until the file ``BENCH_GATE_FILE`` exists (when set) before it applies
anything, so the bench can have every run held by worker A, start worker B, and only then let
the work (and the kill) happen.

Loaded by the workers through ``HUB_MODULES=bench.recovery_workflows``; the effects live in
``<HUB_SCHEMA>.bench_effects`` of ``HUB_DATABASE_URL``, reached through a pool of its own.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
from pydantic import BaseModel

from hub import (
    StepContext,
    WorkflowDefinition,
    WorkflowResponse,
    create_step,
    create_workflow,
)

WORKFLOW = "bench-recovery-three-effects"

EFFECTS_DDL = """CREATE TABLE IF NOT EXISTS {schema}.bench_effects (
    key        text        PRIMARY KEY,
    applies    int         NOT NULL DEFAULT 1,
    first_at   timestamptz NOT NULL DEFAULT clock_timestamp()
)"""

_pool: asyncpg.Pool | None = None
_pool_lock: asyncio.Lock | None = None


async def effects_pool() -> asyncpg.Pool:
    """One pool per worker process, made on first use (100 steps may ask at once)."""
    global _pool, _pool_lock
    if _pool is not None:
        return _pool
    if _pool_lock is None:
        _pool_lock = asyncio.Lock()
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["HUB_DATABASE_URL"], min_size=1,
                                              max_size=8)
    return _pool


async def apply_effect(ctx: StepContext) -> None:
    schema = os.environ.get("HUB_SCHEMA", "hub")
    pool = await effects_pool()
    await pool.execute(
        f"INSERT INTO {schema}.bench_effects (key) VALUES ($1) "
        f"ON CONFLICT (key) DO UPDATE SET applies = {schema}.bench_effects.applies + 1",
        ctx.idempotency_key,
    )


async def wait_for_gate() -> None:
    gate = os.environ.get("BENCH_GATE_FILE")
    # another process opens the gate: a file polled, no in-process event to wait on
    while gate and not os.path.exists(gate):  # noqa: ASYNC110
        await asyncio.sleep(0.005)


class Job(BaseModel):
    n: int


def _sleep_s() -> float:
    return float(os.environ.get("BENCH_STEP_SLEEP", "0.02"))


@create_step("bench-effect-1")
async def effect_1(inp: Job, ctx: StepContext) -> dict[str, Any]:
    await wait_for_gate()
    await apply_effect(ctx)
    await asyncio.sleep(_sleep_s())
    return {"n": inp.n, "step": 1}


@create_step("bench-effect-2")
async def effect_2(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    await apply_effect(ctx)
    await asyncio.sleep(_sleep_s())
    return {"n": inp["n"], "step": 2}


@create_step("bench-effect-3")
async def effect_3(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    await apply_effect(ctx)
    await asyncio.sleep(_sleep_s())
    return {"n": inp["n"], "step": 3}


def _compose(inp: Job) -> WorkflowResponse:
    return WorkflowResponse(effect_3(effect_2(effect_1(inp))))


three_effects: WorkflowDefinition = create_workflow(WORKFLOW, _compose)
