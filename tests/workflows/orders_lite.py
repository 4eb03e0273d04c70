"""``record-order``: an order workflow without outside systems, for the tests of the Kafka
runtime (what they check is how events start runs, not what the runs do)."""

from __future__ import annotations

from typing import Any

from hub import (
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    emit_event_step,
    transform,
)
from workflows.events import OrderPlaced


@create_step("check-order")
async def check_order(order: OrderPlaced, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    lines_total = sum(line.quantity * line.unit_price for line in order.lines)
    if lines_total != order.total:
        return StepResponse.permanent_failure(
            f"order {order.id}: total {order.total} does not match its lines ({lines_total})")
    return StepResponse({"order_id": order.id, "total": order.total,
                         "currency": order.currency})


@create_workflow("record-order")
def record_order(order: OrderPlaced) -> WorkflowResponse:
    checked = check_order(order)
    confirmed = emit_event_step.config(name="publish-order-recorded")(transform(
        checked, lambda c: {"topic": "order.recorded", "key": c["order_id"], "event": c}))
    return WorkflowResponse({"order": checked, "published": confirmed})
