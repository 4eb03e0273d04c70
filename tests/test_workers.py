"""Several workers on one schema: leases keep one owner per execution."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from pydantic import BaseModel

from hub import Hub, StepContext, WorkflowResponse, create_step, create_workflow

CALLS: list[tuple[str, int, str]] = []
ACTIVE: Counter[str] = Counter()
OVERLAPS: list[str] = []


class Item(BaseModel):
    id: str


async def _retrying(inp: Item, ctx: StepContext) -> str:
    CALLS.append((ctx.execution_id, ctx.attempt, "retry"))
    ACTIVE[ctx.execution_id] += 1
    if ACTIVE[ctx.execution_id] > 1:
        OVERLAPS.append(ctx.execution_id)
    await asyncio.sleep(0.02)
    ACTIVE[ctx.execution_id] -= 1
    if ctx.attempt < 4:
        raise RuntimeError("not yet")
    return "ok"


@create_workflow("wk-retry")
def wk_retry(inp: Item) -> WorkflowResponse:
    return WorkflowResponse(create_step("wk-retrying", _retrying, max_retries=3,
                                        retry_interval=0.1, backoff=1.0)(inp))


async def _long(inp: Item, ctx: StepContext) -> str:
    CALLS.append((ctx.execution_id, ctx.attempt, "long"))
    await asyncio.sleep(1.5 * LONG_LEASE_S)  # outlives its lease by half
    return "slow but fine"


@create_workflow("wk-long")
def wk_long(inp: Item) -> WorkflowResponse:
    return WorkflowResponse(create_step("wk-long-step", _long)(inp))


LONG_LEASE_S = 3.0
"""The lease of the renewal test: a heartbeat every 0.75 s and a fence 0.75 s before expiry
leave a worker 1.5 s of stall (a loaded machine) before it must cut its step; a 1 s lease
left it 0.5 s, and a busy machine's CI saw the step cut and run twice."""


def _hub(dsn: str, schema: str, name: str, **kw: Any) -> Hub:
    kw.setdefault("lease_seconds", 1.0)
    return Hub(dsn, schema=schema, worker_id=name, poll_interval=0.1, **kw)


async def test_retries_fire_once_each_with_two_workers(dsn: str, schema: str) -> None:
    # medusajs/medusa#11771: a retry fired twice in parallel
    CALLS.clear()
    async with _hub(dsn, schema, "w1", hold_timer_seconds=0.0) as w1, \
            _hub(dsn, schema, "w2", hold_timer_seconds=0.0), \
            _hub(dsn, schema, "starter", execute=False) as starter:
        ids = [(await starter.start("wk-retry", {"id": str(i)}, wait=False)).id
               for i in range(10)]
        runs = [await w1.wait(i, timeout=30) for i in ids]
    assert all(r.result == "ok" for r in runs)
    per_run = Counter(ex for ex, _, kind in CALLS if kind == "retry")
    assert set(per_run.values()) == {4}, per_run
    assert not OVERLAPS


async def test_lease_is_renewed_while_a_step_outlives_it(dsn: str, schema: str) -> None:
    CALLS.clear()
    async with _hub(dsn, schema, "w1", lease_seconds=LONG_LEASE_S) as w1, \
            _hub(dsn, schema, "w2", lease_seconds=LONG_LEASE_S):
        run = await wk_long(w1).run(input={"id": "long"})
    assert run.result == "slow but fine"
    assert [c for c in CALLS if c[2] == "long"] == [(run.id, 1, "long")]
