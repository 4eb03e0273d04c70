"""``remind-unpaid-order`` against the Stripe and HubSpot sandboxes, without waiting its
three days: the sleep releases the lease (its due time is in the store), and an operator's
``wake`` (the product's way to end a sleep early) lets it go on at once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from connectors import load_settings
from connectors.stripe import StripeConnector, StripeSettings
from hub import Hub, Run
from hub.sandbox import SandboxControl, SandboxServer
from workflows import reminders

WORKFLOW = reminders.remind_unpaid_order.name


async def _sleeping_released(hub: Hub, tx: str) -> Run:
    async with asyncio.timeout(30):
        while True:
            run = await hub.get_run(tx, workflow=WORKFLOW)
            row = await hub.store.get(uuid.UUID(run.id))
            if (run.steps["wait-for-payment"].state == "waiting" and row is not None
                    and row["lease_owner"] is None):
                return run
            await asyncio.sleep(0.02)


async def _remind(hub: Hub, order_id: str, intent_id: str) -> Run:
    tx = f"remind:{order_id}"
    await hub.start(WORKFLOW, {"order_id": order_id, "customer_email": f"{order_id}@shop.test",
                               "payment_intent_id": intent_id}, transaction_id=tx, wait=False)
    sleeping = await _sleeping_released(hub, tx)
    row = await hub.store.get(uuid.UUID(sleeping.id))
    assert row is not None
    started = row["steps"]["wait-for-payment"]["started_at"]
    assert row["steps"]["wait-for-payment"]["due"] == started + reminders.THREE_DAYS_S
    await hub.wake(tx, "wait-for-payment", workflow=WORKFLOW)
    return await hub.wait(tx, workflow=WORKFLOW, timeout=30)


def _notes_for(crm: dict[str, Any], order_id: str) -> list[dict[str, Any]]:
    return [n for n in crm["notes"] if order_id in (n["body"] or "")]


async def test_an_unpaid_order_gets_a_reminder_after_its_wait(
        hub: Hub, sandboxes: SandboxServer, sandbox: SandboxControl) -> None:
    async with StripeConnector(load_settings(StripeSettings)) as stripe:
        intent = await stripe.create_payment_intent(None, amount=4200, currency="eur",
                                                    order_id="rm-unpaid")
    run = await _remind(hub, "rm-unpaid", intent["id"])
    assert run.succeeded, run.error
    assert run.result["payment"]["paid"] is False
    notes = _notes_for(await sandbox.state("hubspot"), "rm-unpaid")
    assert len(notes) == 1 and notes[0]["contacts"]


async def test_a_paid_order_gets_no_reminder(
        hub: Hub, sandboxes: SandboxServer, sandbox: SandboxControl) -> None:
    async with StripeConnector(load_settings(StripeSettings)) as stripe:
        intent = await stripe.authorize(None, amount=4200, currency="eur", order_id="rm-paid")
    run = await _remind(hub, "rm-paid", intent["id"])
    assert run.succeeded, run.error
    assert run.result["payment"]["paid"] is True
    assert run.steps["send-payment-reminder"].state == "skipped"
    assert _notes_for(await sandbox.state("hubspot"), "rm-paid") == []
