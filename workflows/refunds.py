"""``refund-order``: a refund the shop granted, applied in the three systems it touches.

```
find-order          the order's fulfil-order execution: its payment, sales order and deal
refund-payment      Stripe refund (idempotency key: one refund per request, however re-run)
post-credit-note    ERP credit note, found by its ref before it is created
note-crm            a note on the order's CRM deal
```
Money that went back to a customer cannot be taken back by a compensation, so nothing here is
rolled back: a later step that keeps failing parks the execution for an operator, with the
refund recorded.
"""

from __future__ import annotations

from typing import Any

from hub import (
    ExecutionNotFound,
    Hub,
    Run,
    RunStatus,
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    transform,
)
from workflows.events import RefundRequested
from workflows.systems import CONNECTOR_STEP, crm, erp, payments


@create_step("find-order", no_compensation=True)
async def find_order(request: RefundRequested, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    hub: Hub = ctx.container.resolve("hub")
    try:
        run: Run | None = await hub.get_run(f"order.placed:{request.order_id}",
                                            workflow="fulfil-order")
    except ExecutionNotFound:
        run = None
    if run is None or run.status != RunStatus.SUCCEEDED or not isinstance(run.result, dict):
        state = "unknown to the hub" if run is None else run.status.value
        return StepResponse.permanent_failure(
            f"refund {request.id}: order {request.order_id} was not fulfilled ({state}); "
            "nothing to refund")
    return StepResponse({k: run.result[k] for k in (
        "payment_intent_id", "sales_order_id", "partner_id", "deal_id")})


@create_step("refund-payment", **CONNECTOR_STEP, no_compensation=True)
async def refund_payment(inp: dict[str, Any], ctx: StepContext) -> StepResponse[dict[str, Any]]:
    request = RefundRequested.model_validate(inp["request"])
    refund = await payments(ctx).refund(
        ctx, inp["order"]["payment_intent_id"], amount=request.amount,
        metadata={"order_id": request.order_id, "refund_request": request.id})
    return StepResponse({"refund_id": refund["id"], "amount": refund["amount"],
                         "status": refund["status"]})


@create_step("post-credit-note", **CONNECTOR_STEP, no_compensation=True)
async def post_credit_note(inp: dict[str, Any], ctx: StepContext,
                           ) -> StepResponse[dict[str, Any]]:
    request = RefundRequested.model_validate(inp["request"])
    move_id = await erp(ctx).create_credit_note(
        ctx, ref=f"refund:{request.id}", partner_id=inp["order"]["partner_id"],
        lines=[{"name": f"Refund of order {request.order_id}",
                "amount": inp["refund"]["amount"] / 100}],
        reason=request.reason)
    return StepResponse({"credit_note_id": move_id})


@create_step("note-crm", **CONNECTOR_STEP, no_compensation=True)
async def note_crm(inp: dict[str, Any], ctx: StepContext) -> StepResponse[dict[str, Any]]:
    request = RefundRequested.model_validate(inp["request"])
    amount = inp["refund"]["amount"] / 100
    note_id = await crm(ctx).add_note(
        ctx, deal_id=inp["order"]["deal_id"],
        body=f"Refunded {amount:.2f} on order {request.order_id} ({request.reason}); "
             f"Stripe refund {inp['refund']['refund_id']}.")
    return StepResponse({"note_id": note_id})


@create_workflow("refund-order")
def refund_order(request: RefundRequested) -> WorkflowResponse:
    order = find_order(request)
    refund = refund_payment({"request": request, "order": order})
    credit = post_credit_note({"request": request, "order": order, "refund": refund})
    note = note_crm({"request": request, "order": order, "refund": refund})
    return WorkflowResponse(transform(
        {"r": refund, "c": credit, "n": note},
        lambda v: {**v["r"], **v["c"], **v["n"]}))
