"""Orders from the shop start their fulfilment; confirmed orders wait for their shipment."""

from hub import SubscriberContext, subscriber
from workflows.events import OrderConfirmed, OrderPlaced
from workflows.orders import fulfil_order
from workflows.shipping import ship_order


@subscriber("order.placed")
async def on_order_placed(event: OrderPlaced, ctx: SubscriberContext) -> None:
    await fulfil_order(ctx.hub).run(
        input=event, transaction_id=f"order.placed:{event.id}", wait=False)


@subscriber("order.confirmed")
async def on_order_confirmed(event: OrderConfirmed, ctx: SubscriberContext) -> None:
    await ship_order(ctx.hub).run(
        input=event, transaction_id=f"ship-order:{event.order_id}", wait=False)
