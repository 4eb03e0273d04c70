"""Workflows for the fan-out and child-execution tests.

In-process tests read a ``Ledger`` service (what an outside system that honours
idempotency keys would hold); the crash test's workers record effects in a table of the
test's schema instead (``crash_flows.apply_effect``), as the other crash tests do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hub import (
    PermanentStepError,
    StepContext,
    StepError,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    map_each,
    parallelize,
    run_child,
)
from tests.workflows.crash_flows import apply_effect


@dataclass
class Ledger:
    """Effects by idempotency key (one per key, however often asked) and undos in order."""

    applied: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def apply(self, key: str) -> None:
        self.applied[key] = self.applied.get(key, 0) + 1
        if self.applied[key] == 1:
            self.order.append(key)


def ledger(ctx: StepContext) -> Ledger:
    led: Ledger = ctx.container.resolve("ledger")
    return led


async def _undo(done: dict[str, Any] | None, ctx: StepContext) -> None:
    ledger(ctx).undone.append(ctx.step)


@create_step("fx-apply", compensate=_undo)
async def fx_apply(item: dict[str, Any], ctx: StepContext) -> StepResponse[dict[str, Any]]:
    led = ledger(ctx)
    led.running += 1
    led.most_running = max(led.most_running, led.running)
    try:
        async with led.changed:
            led.changed.notify_all()
            # a held item waits until as many items have run at once as it says
            await led.changed.wait_for(lambda: led.most_running >= int(item.get("hold", 0)))
        if item.get("fail"):
            raise PermanentStepError(f"{item['sku']} is refused")
        led.apply(ctx.idempotency_key)
        return StepResponse({"sku": item["sku"], "reserved": item.get("qty", 1)})
    finally:
        led.running -= 1


@create_step("fx-before", compensate=_undo)
async def fx_before(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    ledger(ctx).apply(ctx.idempotency_key)
    return {"before": True}


@create_step("fx-after", compensate=_undo)
async def fx_after(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    if inp.get("fail_after"):
        raise PermanentStepError("fx-after refuses")
    return {"after": True}


def _sku(item: dict[str, Any]) -> str:
    return str(item["sku"])


@create_workflow("fx-map")
def fx_map(inp: dict[str, Any]) -> WorkflowResponse:
    fx_before(inp)
    reserved = map_each(inp["items"], fx_apply, key=_sku, max_concurrency=3)
    fx_after(inp)
    return WorkflowResponse(reserved)


@create_workflow("fx-map-bounded")
def fx_map_bounded(inp: dict[str, Any]) -> WorkflowResponse:
    fx_before(inp)
    return WorkflowResponse(map_each(inp["items"], fx_apply, max_items=3))


@create_workflow("fx-map-continue")
def fx_map_continue(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(map_each(
        inp["items"], fx_apply.config(continue_on_permanent_failure=True), key=_sku))


@create_workflow("fx-child")
def fx_child(inp: dict[str, Any]) -> WorkflowResponse:
    fx_before(inp)
    return WorkflowResponse(fx_after(inp))


@create_workflow("fx-parent")
def fx_parent(inp: dict[str, Any]) -> WorkflowResponse:
    result = run_child(fx_child, inp["child"])
    fx_after(inp)
    return WorkflowResponse(result)


@create_workflow("fx-map-children")
def fx_map_children(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(map_each(inp["children"], fx_child, max_concurrency=2))


@create_step("fx-crash-item")
async def fx_crash_item(item: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    await apply_effect(ctx)
    await asyncio.sleep(0.2)
    return {"n": item["n"]}


@create_workflow("fx-crash-map")
def fx_crash_map(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(map_each(inp["items"], fx_crash_item, max_concurrency=2))


@create_step("fx-wait", compensate=_undo, is_async=True)
async def fx_wait(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Asks the outside and waits for its answer (an approval)."""
    return {"asked": True}


@create_workflow("fx-child-waits")
def fx_child_waits(inp: dict[str, Any]) -> WorkflowResponse:
    fx_before(inp)
    return WorkflowResponse(fx_wait(inp))


@create_workflow("fx-parent-waits")
def fx_parent_waits(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(run_child(fx_child_waits, inp))


@create_step("fx-gate")
async def fx_gate(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Lands when the test opens the gate (an ``asyncio.Event`` registered as ``gate``)."""
    await ctx.container.resolve("gate").wait()
    return {"gated": True}


@create_workflow("fx-parent-gated")
def fx_parent_gated(inp: dict[str, Any]) -> WorkflowResponse:
    child, gate = parallelize(run_child(fx_child, inp["child"]), fx_gate(inp))
    return WorkflowResponse({"child": child, "gate": gate})


@create_step("fx-flaky", compensate=_undo, max_retries=2, retry_interval=1000.0)
async def fx_flaky(item: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Fails its first attempt asking to be retried after ``retry_after`` seconds (a 429),
    then applies; its own interval (1000 s) is what an ignored ``retry_after`` would wait."""
    led = ledger(ctx)
    if item.get("retry_after") is not None and ctx.attempt == 1:
        raise StepError(f"{item['sku']}: rate limited", retry_after=item["retry_after"])
    led.apply(ctx.idempotency_key)
    return {"sku": item["sku"], "attempt": ctx.attempt}


@create_workflow("fx-map-flaky")
def fx_map_flaky(inp: dict[str, Any]) -> WorkflowResponse:
    fx_before(inp)
    return WorkflowResponse(map_each(inp["items"], fx_flaky, key=_sku, max_concurrency=2))


@create_workflow("fx-map-flaky-manual")
def fx_map_flaky_manual(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(map_each(inp["items"], fx_flaky.config(auto_retry=False),
                                     key=_sku))
