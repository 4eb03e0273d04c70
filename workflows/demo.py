"""Demo workflows for ``hub dev``: compensation and an async step, with no outside system."""

from typing import Any

from pydantic import BaseModel

from hub import (
    PermanentStepError,
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    transform,
)


class Order(BaseModel):
    order_id: str
    amount: int = 0


@create_step("reserve-stock", compensate=lambda res, ctx: ctx.log.info("stock_released", **res))
async def reserve_stock(order: Order, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    return StepResponse({"reservation": f"res-{order.order_id}"})


@create_step("charge-payment", max_retries=2, retry_interval=0.05)
async def charge_payment(order: Order, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    if order.amount <= 0:
        raise PermanentStepError(f"amount must be positive, got {order.amount}")
    return StepResponse({"charge": f"ch-{ctx.idempotency_key}", "amount": order.amount})


@create_workflow("demo-order")
def demo_order(order: Order) -> WorkflowResponse:
    reservation = reserve_stock(order)
    charge = charge_payment(order)
    return WorkflowResponse(transform({"r": reservation, "c": charge},
                                      lambda v: {"reservation": v["r"]["reservation"],
                                                 "charge": v["c"]["charge"]}))


await_approval = create_step("await-approval", lambda _inp, _ctx: None, is_async=True,
                             timeout=3600)


@create_workflow("demo-approval")
def demo_approval(order: Order) -> WorkflowResponse:
    approval = await_approval(order)
    return WorkflowResponse({"order": order.order_id, "approved_by": approval["by"]})
