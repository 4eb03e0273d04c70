"""A subscriber on the test's own topic (``TEST_TOPIC``), for worker subprocesses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hub import SubscriberContext, subscriber
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

TOPIC = os.environ.get("TEST_TOPIC", "test.order.placed")
GATE = os.environ.get("TEST_GATE_DIR")  # after TEST_GATE_AFTER events, handlers hang
GATE_AFTER = int(os.environ.get("TEST_GATE_AFTER", "0"))
_handled = 0


async def _gate() -> None:
    """Hold this worker mid-stream for good, and say so (GATE/blocked): a test kills it
    there, on a condition rather than a race with how fast the machine is."""
    global _handled
    _handled += 1
    if GATE is None or _handled <= GATE_AFTER:
        return
    Path(GATE, "blocked").touch()
    await asyncio.Event().wait()


@subscriber(TOPIC, name="test_on_order_placed")
async def on_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
    await _gate()
    await record_order(ctx.hub).run(input=event, transaction_id=f"order.placed:{event.id}",
                                    wait=False)
