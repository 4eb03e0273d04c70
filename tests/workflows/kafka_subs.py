"""A subscriber on the test's own topic (``TEST_TOPIC``), for worker subprocesses."""

from __future__ import annotations

import os

from hub import SubscriberContext, subscriber
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

TOPIC = os.environ.get("TEST_TOPIC", "test.order.placed")


@subscriber(TOPIC, name="test_on_order_placed")
async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
    await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                    wait=False)
