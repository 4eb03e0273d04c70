"""``ship-order``: wait (days, if need be) for the warehouse to ship a confirmed order, then
win the CRM deal and publish ``order.shipped``.

The wait is an async step: nothing runs and no worker holds the execution while it waits.
The warehouse completes it with a signed webhook to the hub's API:
``POST /webhooks/warehouse/executions/ship-order:<order id>/steps/await-shipment/success``
with ``{"output": {"tracking_number": ..., "carrier": ...}}``, signed with the warehouse's
secret by the Standard Webhooks specification (README, "Sending a signed webhook").
"""

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
from workflows.events import OrderConfirmed, OrderShipped, ShipmentConfirmation
from workflows.systems import CONNECTOR_STEP, crm

SHIPMENT_TIMEOUT_S = 14 * 24 * 3600.0
DEAL_STAGE_SHIPPED = "closedwon"


def _not_called(_inp: Any, _ctx: StepContext) -> None:
    """An async step's function runs when the step starts; completion comes from outside."""


await_shipment = create_step("await-shipment", _not_called, is_async=True,
                             timeout=SHIPMENT_TIMEOUT_S)


@create_step("win-deal", **CONNECTOR_STEP, no_compensation=True)
async def win_deal(inp: dict[str, Any], ctx: StepContext) -> StepResponse[dict[str, Any]]:
    shipment = ShipmentConfirmation.model_validate(inp["shipment"])
    await crm(ctx).update_deal_stage(ctx, inp["deal_id"], DEAL_STAGE_SHIPPED)
    return StepResponse({"deal_id": inp["deal_id"], "stage": DEAL_STAGE_SHIPPED,
                         "tracking_number": shipment.tracking_number,
                         "carrier": shipment.carrier})


def _shipped(v: dict[str, Any]) -> dict[str, Any]:
    order = OrderConfirmed.model_validate(v["order"])
    event = OrderShipped(order_id=order.order_id, tracking_number=v["won"]["tracking_number"],
                         carrier=v["won"]["carrier"])
    return {"topic": "order.shipped", "key": order.order_id, "event": event.model_dump()}


@create_workflow("ship-order")
def ship_order(order: OrderConfirmed) -> WorkflowResponse:
    shipment = await_shipment(order)
    won = win_deal(transform({"o": order, "s": shipment},
                             lambda v: {"deal_id": v["o"]["deal_id"], "shipment": v["s"]}))
    emit_event_step.config(name="publish-order-shipped")(
        transform({"order": order, "won": won}, _shipped))
    return WorkflowResponse(won)
