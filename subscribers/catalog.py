"""Product changes in the ERP reach the CMS."""

from hub import SubscriberContext, subscriber
from workflows.catalog import sync_product
from workflows.events import ProductUpdated


@subscriber("product.updated")
async def on_product_updated(event: ProductUpdated, ctx: SubscriberContext) -> None:
    # One run per event (its id, else its position): a product updated twice syncs twice.
    key = f"product.updated:{ctx.event_id or f'{ctx.partition}:{ctx.offset}'}"
    await sync_product(ctx.hub).run(input=event, transaction_id=key, wait=False)
