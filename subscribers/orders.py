"""Orders from the shop start their fulfilment."""

from hub import SubscriberContext, subscriber
from workflows.events import OrderPlaced
from workflows.orders import fulfil_order


@subscriber("order.placed")
async def on_order_placed(event: OrderPlaced, ctx: SubscriberContext) -> None:
    await fulfil_order(ctx.hub).run(
        input=event, transaction_id=f"order.placed:{event.id}", wait=False)
