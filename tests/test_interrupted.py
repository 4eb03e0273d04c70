"""Cancelling or compensating a run also undoes the step that was running or waiting.

Its call may have reached the outside system (a payment authorised, a parcel booked) though
the step recorded no output: its compensation runs, latest first, told that no output was
recorded (``ctx.output_recorded``), with the input the step was called with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from hub import (
    Hub,
    InvalidTransition,
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
)

CALLS: list[tuple[str, Any, bool, Any]] = []  # (step, compensate_input, recorded, input)
ENTERED: dict[str, asyncio.Event] = {}


class Order(BaseModel):
    id: str


def _undo(name: str) -> Any:
    async def undo(compensate_input: Any, ctx: StepContext) -> None:
        CALLS.append((name, compensate_input, ctx.output_recorded, ctx.step_input))
    return undo


async def _reserve(order: Order, ctx: StepContext) -> StepResponse[str]:
    return StepResponse("reserved", compensate_input=f"picking-{order.id}")


async def _charge_slowly(order: Order, ctx: StepContext) -> str:
    ENTERED[order.id].set()  # the outside system has the request ...
    await asyncio.Event().wait()  # ... and answers after the cancel
    return "never"


async def _ask_warehouse(order: Order, ctx: StepContext) -> StepResponse[str]:
    return StepResponse("booked", compensate_input=f"booking-{order.id}")


@create_workflow("ix-cut")
def ix_cut(order: Order) -> WorkflowResponse:
    create_step("ix-reserve", _reserve, _undo("ix-reserve"))(order)
    charged = create_step("ix-charge", _charge_slowly, _undo("ix-charge"))(order)
    return WorkflowResponse(charged)


@create_workflow("ix-cut-plain")
def ix_cut_plain(order: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ix-plain", _charge_slowly)(order))


@create_workflow("ix-waiting")
def ix_waiting(order: Order) -> WorkflowResponse:
    create_step("ix-w-reserve", _reserve, _undo("ix-w-reserve"))(order)
    booked = create_step("ix-book", _ask_warehouse, _undo("ix-book"), is_async=True)(order)
    return WorkflowResponse(booked)


async def test_a_cancel_undoes_the_step_it_cut_then_the_completed_ones(hub: Hub) -> None:
    CALLS.clear()
    ENTERED["c1"] = asyncio.Event()
    run = await ix_cut(hub).run(input={"id": "c1"}, transaction_id="ix:c1", wait=False)
    await asyncio.wait_for(ENTERED["c1"].wait(), 10)
    done = await hub.cancel(run.transaction_id, reason="customer changed their mind")
    assert done.status == "cancelled"
    assert CALLS == [("ix-charge", None, False, {"id": "c1"}),
                     ("ix-reserve", "picking-c1", True, None)]
    assert done.steps["ix-charge"].state == "reverted"
    assert done.steps["ix-reserve"].state == "reverted"


async def test_an_operators_compensation_undoes_the_cut_step_too(hub: Hub) -> None:
    CALLS.clear()
    ENTERED["c2"] = asyncio.Event()
    run = await ix_cut(hub).run(input={"id": "c2"}, transaction_id="ix:c2", wait=False)
    await asyncio.wait_for(ENTERED["c2"].wait(), 10)
    done = await hub.compensate(run.transaction_id)
    assert done.status == "compensated"
    assert [c[0] for c in CALLS] == ["ix-charge", "ix-reserve"]


async def test_a_cut_step_without_a_compensation_is_simply_not_done(hub: Hub) -> None:
    ENTERED["c3"] = asyncio.Event()
    run = await ix_cut_plain(hub).run(input={"id": "c3"}, transaction_id="ix:c3", wait=False)
    await asyncio.wait_for(ENTERED["c3"].wait(), 10)
    done = await hub.cancel(run.transaction_id)
    assert done.status == "cancelled" and done.steps["ix-plain"].state == "not_started"


async def test_a_cancel_undoes_a_waiting_step_with_what_its_call_returned(hub: Hub) -> None:
    CALLS.clear()
    run = await ix_waiting(hub).run(input={"id": "w1"}, transaction_id="ix:w1")
    assert run.status == "waiting" and run.steps["ix-book"].state == "waiting"
    done = await hub.cancel(run.transaction_id)
    assert done.status == "cancelled"
    assert CALLS == [("ix-book", "booking-w1", False, {"id": "w1"}),
                     ("ix-w-reserve", "picking-w1", True, None)]
    # the warehouse's late answer is refused: the run stays shut
    with pytest.raises(InvalidTransition, match="already ended cancelled"):
        await hub.set_step_success(run.transaction_id, "ix-book", {"tracking": "1Z"})
