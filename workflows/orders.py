"""``fulfil-order``: an ``order.placed`` event made real in the four systems, or in none.

```
open-fulfilment      (rollback: publish order.failed with the reason)
validate-order
reserve-stock        per order line (map_each), an ERP stock.picking each (rollback: release each)
authorize-payment    Stripe PaymentIntent, manual capture (rollback: cancel it)
create-sales-order   ERP sale.order, confirmed         (rollback: cancel it)
sync-crm             HubSpot contact upserted, deal    (rollback: mark the deal lost)
capture-payment      Stripe capture                    (rollback: refund)
publish-order-confirmed  order.confirmed, through the outbox
```
Each system call is made safe to repeat: Stripe by idempotency keys, Odoo and HubSpot by
natural keys (the order id), so a step re-run after a crash finds what its first attempt
made instead of making it twice.
"""

from __future__ import annotations

from typing import Any

from connectors.stripe import StripeRefused
from hub import (
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    emit_event_step,
    map_each,
    transform,
)
from workflows.events import OrderConfirmed, OrderFailed, OrderPlaced
from workflows.systems import CONNECTOR_STEP, crm, erp, payments

DEAL_STAGE_PAID = "contractsent"


async def _publish_failure(order_id: str, ctx: StepContext) -> None:
    failure = ctx.failure or {}
    reason = str(failure.get("message") or "the order was rolled back")
    ctx.emit("order.failed", OrderFailed(order_id=order_id, reason=reason[:1000],
                                         failed_step=failure.get("step")), key=order_id)


@create_step("open-fulfilment", compensate=_publish_failure)
async def open_fulfilment(order: OrderPlaced, ctx: StepContext) -> StepResponse[str]:
    """Does nothing going forward; rolling back, it is undone last and tells the shop."""
    return StepResponse(order.id)


@create_step("validate-order")
async def validate_order(order: OrderPlaced, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    lines_total = sum(line.quantity * line.unit_price for line in order.lines)
    if lines_total != order.total:
        return StepResponse.permanent_failure(
            f"order {order.id}: total {order.total} does not match its lines ({lines_total})")
    if order.total == 0:
        return StepResponse.permanent_failure(f"order {order.id}: nothing to charge")
    skus = [line.sku for line in order.lines]
    if len(set(skus)) != len(skus):
        return StepResponse.permanent_failure(f"order {order.id}: a SKU appears on two lines")
    return StepResponse({"order_id": order.id, "total": order.total,
                         "currency": order.currency.upper()})


def _order(ctx: StepContext) -> OrderPlaced:
    """The order a step was called with, for a compensation whose step recorded no output."""
    return OrderPlaced.model_validate(ctx.step_input)


def _line_ref(line: dict[str, Any]) -> str:
    """A line's reservation's natural key in the ERP (the picking's origin)."""
    return f"{line['order_id']}/{line['sku']}"


async def _release_line(picking_id: int | None, ctx: StepContext) -> None:
    if picking_id is None:  # cut mid-call (a cancel): release what the call made, if it did
        picking_id = await erp(ctx).find_picking(ctx, _line_ref(ctx.step_input))
        if picking_id is None:
            return
    await erp(ctx).release_stock(ctx, picking_id)


@create_step("reserve-line", compensate=_release_line, **CONNECTOR_STEP)
async def reserve_line(line: dict[str, Any], ctx: StepContext) -> StepResponse[dict[str, Any]]:
    """One order line's stock, on a picking of its own: a line that cannot be had fails
    the order, and the lines reserved so far are released, each once."""
    reservation = await erp(ctx).reserve_stock(
        ctx, order_ref=_line_ref(line), lines=[(line["sku"], line["quantity"])])
    return StepResponse({"sku": line["sku"], **reservation},
                        compensate_input=reservation["picking_id"])


def _lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"order_id": order["id"], "sku": line["sku"], "quantity": line["quantity"]}
            for line in order["lines"]]


def _sku(line: dict[str, Any]) -> str:
    return str(line["sku"])


async def _cancel_payment(payment_intent_id: str | None, ctx: StepContext) -> None:
    """Release the hold; if the money was taken after all (a capture whose step never
    recorded it), give it back: a captured payment cannot be cancelled. Cut mid-call (a
    cancel), the step recorded no intent: replaying its create under the step's own
    idempotency key makes Stripe answer with the intent the lost call made (or a new,
    unconfirmed one), and that one is cancelled."""
    system = payments(ctx)
    if payment_intent_id is None:
        order = _order(ctx)
        created = await system.create_payment_intent(
            ctx.forward(), amount=order.total, currency=order.currency.lower(),
            order_id=order.id, payment_method=order.payment_method,
            customer_email=order.customer_email)
        payment_intent_id = str(created["id"])
    intent = await system.retrieve_payment_intent(ctx, payment_intent_id)
    if intent["status"] == "canceled":
        return
    if intent["status"] != "succeeded":
        await system.cancel(ctx, payment_intent_id, reason="abandoned")
        return
    try:
        await system.refund(ctx, payment_intent_id, reason="requested_by_customer",
                            metadata={"cause": "order rolled back"})
    except StripeRefused as exc:
        if exc.code != "charge_already_refunded":  # capture-payment's rollback refunded it
            raise


@create_step("authorize-payment", compensate=_cancel_payment, **CONNECTOR_STEP)
async def authorize_payment(order: OrderPlaced, ctx: StepContext,
                            ) -> StepResponse[dict[str, Any]]:
    intent = await payments(ctx).authorize(
        ctx, amount=order.total, currency=order.currency.lower(), order_id=order.id,
        payment_method=order.payment_method, customer_email=order.customer_email)
    return StepResponse({"payment_intent_id": intent["id"], "status": intent["status"]},
                        compensate_input=intent["id"])


async def _cancel_sales_order(sales_order_id: int | None, ctx: StepContext) -> None:
    if sales_order_id is None:  # cut mid-call: cancel the order the call made, if it did
        sales_order_id = await erp(ctx).find_sale_order(ctx, _order(ctx).id)
        if sales_order_id is None:
            return
    await erp(ctx).cancel_sale_order(ctx, sales_order_id)


@create_step("create-sales-order", compensate=_cancel_sales_order, **CONNECTOR_STEP)
async def create_sales_order(order: OrderPlaced, ctx: StepContext,
                             ) -> StepResponse[dict[str, Any]]:
    system = erp(ctx)
    partner_id = await system.find_or_create_partner(
        ctx, email=order.customer_email, name=order.customer_name or order.customer_email)
    sales_order_id = await system.create_sale_order(
        ctx, order_ref=order.id, partner_id=partner_id,
        lines=[{"sku": line.sku, "quantity": line.quantity,
                "unit_price": line.unit_price / 100} for line in order.lines])
    await system.confirm_sale_order(ctx, sales_order_id)
    return StepResponse({"sales_order_id": sales_order_id, "partner_id": partner_id},
                        compensate_input=sales_order_id)


async def _mark_deal_lost(deal_id: str | None, ctx: StepContext) -> None:
    if deal_id is None:  # cut mid-call: the deal the call made, if it did
        deal = await crm(ctx).find_deal(ctx, _order(ctx).id)
        if deal is None:
            return
        deal_id = str(deal["id"])
    failure = ctx.failure or {}
    await crm(ctx).mark_deal_lost(ctx, deal_id,
                                  reason=str(failure.get("message") or "order rolled back"))


@create_step("sync-crm", compensate=_mark_deal_lost, **CONNECTOR_STEP)
async def sync_crm(order: OrderPlaced, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    system = crm(ctx)
    first, _, last = (order.customer_name or "").partition(" ")
    properties = {"firstname": first, "lastname": last} if first else {}
    contact_id = await system.upsert_contact(ctx, email=order.customer_email,
                                             properties=properties)
    deal_id = await system.create_deal(
        ctx, order_id=order.id, name=f"Order {order.id}", amount=f"{order.total / 100:.2f}",
        stage=DEAL_STAGE_PAID, contact_id=contact_id)
    return StepResponse({"contact_id": contact_id, "deal_id": deal_id},
                        compensate_input=deal_id)


async def _refund(payment_intent_id: str | None, ctx: StepContext) -> None:
    if payment_intent_id is None:  # cut mid-capture: authorize-payment's intent, if taken
        payment_intent_id = str((ctx.step_input or {})["payment_intent_id"])
        intent = await payments(ctx).retrieve_payment_intent(ctx, payment_intent_id)
        if intent["status"] != "succeeded":
            return  # not captured: authorize-payment's compensation releases the hold
    await payments(ctx).refund(ctx, payment_intent_id, reason="requested_by_customer",
                               metadata={"cause": "order rolled back"})


@create_step("capture-payment", compensate=_refund, **CONNECTOR_STEP)
async def capture_payment(payment: dict[str, Any], ctx: StepContext,
                          ) -> StepResponse[dict[str, Any]]:
    intent = await payments(ctx).capture(ctx, payment["payment_intent_id"])
    return StepResponse({"payment_intent_id": intent["id"], "status": intent["status"]},
                        compensate_input=intent["id"])


def _confirmation(v: dict[str, Any]) -> dict[str, Any]:
    order = OrderPlaced.model_validate(v["order"])
    event = OrderConfirmed(
        order_id=order.id, total=order.total, currency=order.currency.upper(),
        customer_email=order.customer_email,
        payment_intent_id=v["capture"]["payment_intent_id"],
        sales_order_id=v["sales"]["sales_order_id"], deal_id=v["crm"]["deal_id"])
    return {"topic": "order.confirmed", "key": order.id, "event": event.model_dump()}


@create_workflow("fulfil-order")
def fulfil_order(order: OrderPlaced) -> WorkflowResponse:
    open_fulfilment(order)
    validate_order(order)
    reservation = map_each(transform(order, _lines, name="order-lines"), reserve_line,
                           key=_sku, max_concurrency=4, name="reserve-stock")
    payment = authorize_payment(order)
    sales = create_sales_order(order)
    deal = sync_crm(order)
    captured = capture_payment(payment)
    confirmation = transform(
        {"order": order, "capture": captured, "sales": sales, "crm": deal}, _confirmation)
    emit_event_step.config(name="publish-order-confirmed")(confirmation)
    return WorkflowResponse(transform(
        {"r": reservation, "p": captured, "s": sales, "c": deal},
        lambda v: {"picking_ids": [line["picking_id"] for line in v["r"]],
                   "payment_intent_id": v["p"]["payment_intent_id"],
                   "sales_order_id": v["s"]["sales_order_id"],
                   "partner_id": v["s"]["partner_id"],
                   "contact_id": v["c"]["contact_id"], "deal_id": v["c"]["deal_id"]}))
