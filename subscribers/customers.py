"""Customers registered in the shop become CRM contacts; granted refunds are applied."""

from hub import SubscriberContext, subscriber
from workflows.customers import sync_customer
from workflows.events import CustomerCreated, RefundRequested
from workflows.refunds import refund_order


@subscriber("customer.created")
async def on_customer_created(event: CustomerCreated, ctx: SubscriberContext) -> None:
    await sync_customer(ctx.hub).run(
        input=event, transaction_id=f"customer.created:{event.id}", wait=False)


@subscriber("refund.requested")
async def on_refund_requested(event: RefundRequested, ctx: SubscriberContext) -> None:
    await refund_order(ctx.hub).run(
        input=event, transaction_id=f"refund.requested:{event.id}", wait=False)
