"""``remind-unpaid-order``: wait (days, durably), then nudge the customer if still unpaid.

```
wait-for-payment       a durable sleep (``wait_s``, 3 days by default): no lease held
check-payment          Stripe: the payment intent's status
send-payment-reminder  only if unpaid: a HubSpot note on the customer's contact
```
Started by whoever knows an order awaits its payment (an API call, a scheduled job) with
the order's payment intent; the transaction id should derive from the order, so a second
start finds the first reminder instead of sending two.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from hub import StepContext, WorkflowResponse, create_step, create_workflow, sleep, when
from workflows.systems import CONNECTOR_STEP, crm, payments

THREE_DAYS_S = 3 * 24 * 3600.0
PAID = frozenset({"succeeded", "requires_capture", "processing"})
"""Intent statuses in which the customer did pay (or the money is held for us)."""


class UnpaidOrder(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    customer_email: str = Field(min_length=3, max_length=254)
    payment_intent_id: str = Field(min_length=1, max_length=255)
    wait_s: float = Field(default=THREE_DAYS_S, ge=0, le=90 * 24 * 3600.0,
                          description="how long to wait before the reminder")


@create_step("check-payment", **CONNECTOR_STEP)
async def check_payment(order: UnpaidOrder, ctx: StepContext) -> dict[str, Any]:
    intent = await payments(ctx).retrieve_payment_intent(ctx, order.payment_intent_id)
    return {"status": intent["status"], "paid": intent["status"] in PAID}


@create_step("send-payment-reminder", **CONNECTOR_STEP)
async def send_payment_reminder(order: UnpaidOrder, ctx: StepContext) -> dict[str, str]:
    system = crm(ctx)
    contact_id = await system.upsert_contact(ctx, email=order.customer_email, properties={})
    note_id = await system.add_note(
        ctx, contact_id=contact_id,
        body=f"Payment reminder: order {order.order_id} is still unpaid.")
    return {"contact_id": contact_id, "note_id": note_id}


@create_workflow("remind-unpaid-order")
def remind_unpaid_order(order: UnpaidOrder) -> WorkflowResponse:
    sleep(order.wait_s, name="wait-for-payment")
    payment = check_payment(order)
    reminder = when(payment, lambda p: not p["paid"]).then(lambda: send_payment_reminder(order))
    return WorkflowResponse({"payment": payment, "reminder": reminder})
