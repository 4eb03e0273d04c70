"""Medusa's remaining step options: background execution and async compensation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from hub import Hub, InvalidTransition, StepContext, WorkflowResponse, create_step, create_workflow

GATE: dict[str, asyncio.Event] = {}


class Job(BaseModel):
    id: str


async def _long_job(inp: Job, ctx: StepContext) -> str:
    await GATE[inp.id].wait()
    return "finished in the background"


@create_workflow("opt-background")
def opt_background(inp: Job) -> WorkflowResponse:
    create_step("opt-bg-first", lambda i, c: "first")(inp)
    return WorkflowResponse(create_step("opt-bg-long", _long_job, background_execution=True)(inp))


async def test_background_step_returns_to_the_caller_at_once(hub: Hub) -> None:
    GATE["bg"] = asyncio.Event()
    run = await asyncio.wait_for(opt_background(hub).run(input={"id": "bg"}), 5)
    assert run.status == "running"
    assert run.steps["opt-bg-first"].state == "done"
    GATE["bg"].set()
    done = await hub.wait(run.id, timeout=10)
    assert done.result == "finished in the background"


async def _refund_request(out: Any, ctx: StepContext) -> None:
    return None  # asks the payment provider; the provider answers later, via the API


@create_workflow("opt-comp-async")
def opt_comp_async(inp: Job) -> WorkflowResponse:
    create_step("opt-capture", lambda i, c: {"captured": i["id"]}, _refund_request,
                compensate_async=True)(inp)
    create_step("opt-fails", lambda i, c: (_ for _ in ()).throw(
        __import__("hub").PermanentStepError("shipping refused")))(inp)
    return WorkflowResponse(None)


async def test_async_compensation_waits_for_its_outcome(hub: Hub) -> None:
    run = await opt_comp_async(hub).run(input={"id": "ca"}, transaction_id="comp-async",
                                        raise_on_error=False)
    assert run.status == "waiting" and run.state == "waiting_to_compensate"
    assert run.steps["opt-capture"].state == "waiting_to_compensate"
    with pytest.raises(InvalidTransition, match="waiting_to_compensate"):
        await hub.set_step_success("comp-async", "opt-capture")  # a forward outcome: refused
    await hub.set_compensation_success("comp-async", "opt-capture")
    done = await hub.wait("comp-async", timeout=10)
    assert done.status == "compensated"
    assert done.steps["opt-capture"].state == "reverted"
