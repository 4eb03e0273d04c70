"""The commerce workflows end to end: events through the broker, the hub's real subscribers
and workflows, the four systems played by their sandboxes over loopback HTTP.

Each test has its own schema and its own topics (``HUB_KAFKA_TOPIC_PREFIX``); the sandboxes
are shared by the session, so every test uses order ids of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub import Hub, Run
from hub.errors import ExecutionNotFound
from hub.runtime.service import KafkaRuntime
from hub.sandbox import SandboxControl, SandboxServer
from hub.settings import KafkaSettings
from tests.conftest import ROOT, broker_session_ms

pytestmark = pytest.mark.broker


class Shop:
    """The upstream systems: publishes events to the test's topics, reads what the hub
    published, and waits for the hub's executions."""

    def __init__(self, hub: Hub, runtime: KafkaRuntime, prefix: str) -> None:
        self.hub = hub
        self.runtime = runtime
        self.prefix = prefix
        self.tag = uuid.uuid4().hex[:6]

    def order(self, n: int, *, sku: str = "SKU-008", quantity: int = 1, unit_price: int = 1250,
              **changes: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "schema_version": 1, "id": f"ord-{self.tag}-{n}",
            "customer_email": f"buyer-{self.tag}-{n}@example.com",
            "customer_name": "Margaret Hamilton", "currency": "EUR",
            "lines": [{"sku": sku, "quantity": quantity, "unit_price": unit_price}],
            "total": quantity * unit_price, "payment_method": "pm_card_visa"}
        event.update(changes)
        return event

    async def publish(self, topic: str, event: dict[str, Any] | bytes, key: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.runtime.bootstrap)
        await producer.start()
        try:
            body = event if isinstance(event, bytes) else json.dumps(event).encode()
            await producer.send_and_wait(self.prefix + topic, body, key=key.encode())
        finally:
            await producer.stop()

    async def run(self, ref: str, workflow: str, *, timeout: float = 90.0,
                  until: Callable[[Run], bool] | None = None) -> Run:
        """The execution ``ref`` once it is final (or ``until`` holds)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = await self.hub.get_run(ref, workflow=workflow)
                if (until or (lambda r: r.finished))(run):
                    return run
            except ExecutionNotFound:
                pass
            assert time.monotonic() < deadline, f"{workflow} {ref} did not get there in time"
            await asyncio.sleep(0.1)

    async def read(self, topic: str, match: Callable[[dict[str, Any]], bool],
                   timeout: float = 30.0) -> dict[str, Any]:
        """The first event on ``topic`` that matches."""
        consumer = AIOKafkaConsumer(self.prefix + topic, bootstrap_servers=self.runtime.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=300)
                for records in batches.values():
                    for record in records:
                        event = json.loads(record.value)
                        if match(event):
                            return dict(event)
        finally:
            await consumer.stop()
        raise AssertionError(f"no matching event on {topic} within {timeout}s")


@pytest.fixture
async def shop(hub: Hub, kafka_bootstrap: str, prefix: str, sandboxes: SandboxServer,
               ) -> AsyncIterator[Shop]:
    settings = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-hub",
                             topic_prefix=f"{prefix}.", topics_file=ROOT / "topics.yaml",
                             session_timeout_ms=broker_session_ms(), fetch_max_wait_ms=20)
    runtime = KafkaRuntime(hub, settings)
    await runtime.start()
    try:
        yield Shop(hub, runtime, f"{prefix}.")
    finally:
        await runtime.stop()


def effects(stripe: dict[str, Any], odoo: dict[str, Any], crm: dict[str, Any],
            order_id: str) -> dict[str, Any]:
    """What the four systems hold for one order."""
    intents = [stripe["payment_intents"][i] for i in stripe["by_order"].get(order_id, [])]
    counts = [stripe["counts"].get(i["id"], {}) for i in intents]
    return {
        "intents": [i["status"] for i in intents],
        "captures": sum(c.get("captures", 0) for c in counts),
        "refunds": sum(c.get("refunds", 0) for c in counts),
        "sale_order": (odoo["sale_orders"].get(order_id) or {}).get("state"),
        "sale_orders_created": odoo["creates"].get("sale.order", {}).get(order_id, 0),
        "picking": _picking_state(odoo, order_id),
        "deal": (crm["deals"].get(order_id) or {}).get("stage"),
        "deals_created": crm["creates"]["deals"].get(order_id, 0),
    }


def _picking_state(odoo: dict[str, Any], order_id: str) -> str | None:
    """The state of the order's pickings (one per line, origin "<order>/<sku>"), when they
    agree; else all of them."""
    found = sorted({p["state"] for ref, p in odoo["pickings"].items()
                    if ref.startswith(f"{order_id}/")})
    return None if not found else found[0] if len(found) == 1 else ",".join(found)


async def states(sandbox: SandboxControl) -> tuple[dict[str, Any], ...]:
    return (await sandbox.state("stripe"), await sandbox.state("odoo"),
            await sandbox.state("hubspot"))


async def test_an_order_is_fulfilled_in_every_system_then_shipped(
        shop: Shop, sandbox: SandboxControl) -> None:
    order = shop.order(1, quantity=2)
    await shop.publish("order.placed", order, order["id"])
    run = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
    assert run.status == "succeeded", run.error
    assert run.trigger and run.trigger["topic"] == f"{shop.prefix}order.placed"

    seen = effects(*await states(sandbox), order["id"])
    assert seen == {"intents": ["succeeded"], "captures": 1, "refunds": 0, "sale_order": "sale",
                    "sale_orders_created": 1, "picking": "assigned",
                    "deal": "contractsent", "deals_created": 1}
    stripe = await sandbox.state("stripe")
    intent = stripe["payment_intents"][run.result["payment_intent_id"]]
    assert intent["amount_received"] == 2500 and intent["currency"] == "eur"
    odoo = await sandbox.state("odoo")
    assert odoo["sale_orders"][order["id"]]["lines"] == [
        {"sku": "SKU-008", "quantity": 2.0, "unit_price": 12.5}]

    confirmed = await shop.read("order.confirmed", lambda e: e["order_id"] == order["id"])
    assert confirmed["payment_intent_id"] == run.result["payment_intent_id"]
    assert confirmed["deal_id"] == run.result["deal_id"]

    # order.confirmed started ship-order, which waits for the warehouse
    ship = await shop.run(f"ship-order:{order['id']}", "ship-order",
                          until=lambda r: r.status == "waiting")
    await shop.hub.set_step_success(ship.id, "await-shipment",
                                    {"tracking_number": "1Z-TEST", "carrier": "UPS"})
    shipped = await shop.run(ship.id, "ship-order")
    assert shipped.status == "succeeded", shipped.error
    assert (await sandbox.state("hubspot"))["deals"][order["id"]]["stage"] == "closedwon"
    event = await shop.read("order.shipped", lambda e: e["order_id"] == order["id"])
    assert event == {"schema_version": 1, "order_id": order["id"],
                     "tracking_number": "1Z-TEST", "carrier": "UPS"}


FAILURES: list[tuple[str, dict[str, Any], tuple[str, dict[str, Any]] | None]] = [
    # (the step that fails, how the order differs, the sandbox fault that makes it fail)
    ("validate-order", {"total": 1}, None),
    ("reserve-stock", {"lines": [{"sku": "SKU-OOS", "quantity": 1, "unit_price": 1250}]},
     None),
    ("authorize-payment", {"payment_method": "pm_card_chargeDeclined"}, None),
    ("create-sales-order", {}, ("odoo", {"match": r"sale\.order/create$"})),
    ("sync-crm", {}, ("hubspot", {"match": r"^POST /crm/v3/objects/deals$"})),
    ("capture-payment", {}, ("stripe", {"match": r"/capture$"})),
]


async def test_a_failure_at_every_step_leaves_the_four_systems_consistent(
        shop: Shop, sandbox: SandboxControl) -> None:
    for n, (step, changes, fault) in enumerate(FAILURES):
        order = shop.order(100 + n, **changes)
        if fault is not None:
            system, where = fault
            await sandbox.set_faults(system, error_rate=1.0, error_status=400, **where)
        await shop.publish("order.placed", order, order["id"])
        run = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
        await sandbox.clear_faults()
        assert run.status == "compensated", (step, run.status, run.error)
        assert run.error and run.error["step"] == step, (step, run.error)

        seen = effects(*await states(sandbox), order["id"])
        done = [s.id for s in run.steps.values() if s.state == "reverted"]
        # nothing is left half-done: no hold on stock, no money held or taken, no open deal,
        # no live sales order; and each rollback ran exactly once
        assert seen["picking"] in (None, "cancel"), (step, seen)
        assert all(status == "canceled" for status in seen["intents"]) or \
            (seen["captures"] == 1 and seen["refunds"] == 1), (step, seen)
        assert seen["sale_order"] in (None, "cancel"), (step, seen)
        assert seen["deal"] in (None, "closedlost"), (step, seen)
        assert seen["sale_orders_created"] <= 1 and seen["deals_created"] <= 1, (step, seen)
        assert len(seen["intents"]) <= 1 and seen["refunds"] <= 1, (step, seen)
        assert "open-fulfilment" in done, (step, done)

        failed = await shop.read("order.failed", lambda e, i=order["id"]: e["order_id"] == i)
        assert failed["failed_step"] == step
        assert failed["reason"] == run.error["message"]


async def test_a_duplicate_order_placed_has_one_effect_in_each_system(
        shop: Shop, sandbox: SandboxControl) -> None:
    order = shop.order(200)
    for _ in range(3):
        await shop.publish("order.placed", order, order["id"])
    run = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
    assert run.status == "succeeded", run.error
    await shop.publish("order.placed", order, order["id"])  # once more, after it finished
    await asyncio.sleep(1.0)
    rows = await shop.hub.store.list_executions(workflow="fulfil-order", limit=100)
    assert [r["transaction_id"] for r in rows] == [f"order.placed:{order['id']}"]
    seen = effects(*await states(sandbox), order["id"])
    assert (len(seen["intents"]), seen["captures"], seen["sale_orders_created"],
            seen["deals_created"]) == (1, 1, 1, 1)


async def test_a_429_burst_and_an_outage_end_completed_without_duplicates(
        shop: Shop, sandbox: SandboxControl) -> None:
    await sandbox.set_faults("hubspot", burst_429=4, retry_after_s=0)
    await sandbox.set_faults("stripe", burst_429=2, retry_after_s=0)
    first = shop.order(300)
    await shop.publish("order.placed", first, first["id"])
    run = await shop.run(f"order.placed:{first['id']}", "fulfil-order")
    assert run.status == "succeeded", run.error
    assert (await sandbox.state("hubspot"))["requests"]  # the burst was answered

    # the ERP goes down: the connector's breaker opens, the step retries later, the ERP
    # comes back, and the order completes with one effect in each system
    await sandbox.set_faults("odoo", down=True)
    second = shop.order(301)
    await shop.publish("order.placed", second, second["id"])
    erp = shop.hub.container.resolve("erp")
    await shop.run(f"order.placed:{second['id']}", "fulfil-order", timeout=60,
                   until=lambda r: erp.breaker.state != "closed")
    waiting = await shop.hub.get_run(f"order.placed:{second['id']}", workflow="fulfil-order")
    assert not waiting.finished
    await sandbox.set_faults("odoo", down=False)
    run = await shop.run(f"order.placed:{second['id']}", "fulfil-order", timeout=120)
    assert run.status == "succeeded", run.error
    assert erp.breaker.state == "closed"
    for order in (first, second):
        seen = effects(*await states(sandbox), order["id"])
        assert (len(seen["intents"]), seen["captures"], seen["sale_orders_created"],
                seen["deals_created"]) == (1, 1, 1, 1), seen


async def test_product_customer_and_refund_events_reach_their_systems(
        shop: Shop, sandbox: SandboxControl) -> None:
    await shop.publish("product.updated", {"schema_version": 1, "sku": "SKU-007"}, "SKU-007")
    rows: list[Any] = []
    for _ in range(300):
        rows = await shop.hub.store.list_executions(workflow="sync-product", limit=10)
        if rows and rows[0]["status"] in ("succeeded", "compensated"):
            break
        await asyncio.sleep(0.1)
    assert rows and rows[0]["status"] == "succeeded", rows
    entry = (await sandbox.state("contentful"))["entries"]["product-SKU-007"]
    odoo = await sandbox.state("odoo")
    assert entry["status"] == "published"
    assert entry["fields"]["name"]["en-US"] == odoo["stock"]["SKU-007"]["name"]
    assert entry["fields"]["stock"]["en-US"] == odoo["stock"]["SKU-007"]["on_hand"]

    email = f"new-{shop.tag}@example.com"
    await shop.publish("customer.created", {"schema_version": 1, "id": f"cus-{shop.tag}",
                                            "email": email, "first_name": "Katherine",
                                            "last_name": "Johnson"}, f"cus-{shop.tag}")
    run = await shop.run(f"customer.created:cus-{shop.tag}", "sync-customer")
    assert run.status == "succeeded", run.error
    contact = (await sandbox.state("hubspot"))["contacts"][email]
    assert contact["properties"]["firstname"] == "Katherine"

    order = shop.order(400, quantity=2)
    await shop.publish("order.placed", order, order["id"])
    fulfilled = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
    assert fulfilled.status == "succeeded", fulfilled.error
    refund = {"schema_version": 1, "id": f"rfd-{shop.tag}", "order_id": order["id"],
              "amount": 1250, "reason": "damaged in transit"}
    await shop.publish("refund.requested", refund, order["id"])
    run = await shop.run(f"refund.requested:rfd-{shop.tag}", "refund-order")
    assert run.status == "succeeded", run.error
    stripe = await sandbox.state("stripe")
    assert stripe["refunds"][run.result["refund_id"]]["amount"] == 1250
    note = (await sandbox.state("odoo"))["credit_notes"][f"refund:rfd-{shop.tag}"]
    assert note["state"] == "posted" and note["amount_total"] == 12.5
    deal = (await sandbox.state("hubspot"))["deals"][order["id"]]
    assert len(deal["notes"]) == 1


async def test_the_nightly_stock_reconciliation_reports_drift(
        hub: Hub, sandboxes: SandboxServer) -> None:
    run = await hub.start("stock-reconcile", None)
    assert run.status == "succeeded", run.error
    report = run.result
    assert report["checked"] >= 6
    drifted = {d["sku"] for d in report["drift"]}
    assert drifted and drifted <= {f"SKU-00{i}" for i in range(1, 9)}
    assert "SKU-OOS" in report["missing_in_cms"]


async def test_a_cancel_while_the_payment_is_authorised_releases_the_hold(
        shop: Shop, sandbox: SandboxControl) -> None:
    # the confirm call is in flight (the card is being authorised) when an operator cancels
    # the order: the step recorded no intent, yet its compensation finds and cancels it
    order = shop.order(400)
    tx = f"order.placed:{order['id']}"
    await sandbox.set_faults("stripe", latency_ms=3000,
                             match=r"POST /v1/payment_intents/[^/]+/confirm")
    try:
        await shop.publish("order.placed", order, order["id"])

        async def authorising() -> bool:
            stripe = await sandbox.state("stripe")
            return bool(stripe["by_order"].get(order["id"]))

        await shop.run(tx, "fulfil-order",
                       until=lambda r: r.steps["authorize-payment"].state == "invoking")
        # the intent exists and its confirm is held in flight by the sandbox
        deadline = time.monotonic() + 30
        while not await authorising():
            assert time.monotonic() < deadline, "the intent was never created"
            await asyncio.sleep(0.05)
        await shop.hub.cancel(tx, workflow="fulfil-order", reason="customer called",
                              wait=False)
        run = await shop.run(tx, "fulfil-order")
    finally:
        await sandbox.clear_faults()
    assert run.status == "cancelled", run.error
    assert run.steps["authorize-payment"].state == "reverted"
    # (the delayed confirm may land after the rollback: Stripe refuses to confirm a
    # cancelled intent, so what is seen now is final)
    seen = effects(*await states(sandbox), order["id"])
    assert seen["intents"] and all(s == "canceled" for s in seen["intents"]), seen
    assert seen["picking"] in (None, "cancel"), seen


async def test_each_order_line_is_reserved_on_its_own_and_released_once_on_rollback(
        shop: Shop, sandbox: SandboxControl) -> None:
    skus = ("SKU-001", "SKU-002", "SKU-003")
    lines = [{"sku": sku, "quantity": 1, "unit_price": 1000} for sku in skus]
    order = shop.order(410, lines=lines, total=3000, payment_method="pm_card_chargeDeclined")
    await shop.publish("order.placed", order, order["id"])
    run = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
    assert run.status == "compensated", run.error
    assert run.error is not None and run.error["step"] == "authorize-payment"

    odoo = await sandbox.state("odoo")
    pickings = {ref: p["state"] for ref, p in odoo["pickings"].items()
                if ref.startswith(f"{order['id']}/")}
    assert pickings == {f"{order['id']}/{sku}": "cancel" for sku in skus}, pickings
    creates = odoo["creates"].get("stock.picking", {})
    assert all(creates.get(f"{order['id']}/{sku}") == 1 for sku in skus), creates
    calls = await shop.hub.store.api_calls_for_execution(uuid.UUID(run.id), 500)
    releases = [c["step"] for c in calls
                if c["compensating"] and "action_cancel" in c["operation"]]
    assert sorted(releases) == [f"reserve-stock[{sku}]" for sku in skus], releases
    rows = await shop.hub.store.fanout_items(uuid.UUID(run.id), "reserve-stock")
    assert [(r["key"], r["state"]) for r in rows] == [(sku, "reverted") for sku in skus]


async def test_a_line_out_of_stock_releases_the_lines_already_reserved(
        shop: Shop, sandbox: SandboxControl) -> None:
    lines = [{"sku": "SKU-004", "quantity": 1, "unit_price": 500},
             {"sku": "SKU-OOS", "quantity": 1, "unit_price": 500}]
    order = shop.order(411, lines=lines, total=1000)
    await shop.publish("order.placed", order, order["id"])
    run = await shop.run(f"order.placed:{order['id']}", "fulfil-order")
    assert run.status == "compensated", run.error
    assert run.error is not None and run.error["step"] == "reserve-stock"
    assert run.error["item"] == "reserve-stock[SKU-OOS]"
    odoo = await sandbox.state("odoo")
    live = [ref for ref, p in odoo["pickings"].items()
            if ref.startswith(f"{order['id']}/") and p["state"] != "cancel"]
    assert live == [], "no line keeps a hold on stock"


async def test_a_catalogue_page_publishes_each_entry_and_skips_unknown_skus(
        shop: Shop, sandbox: SandboxControl) -> None:
    skus = [f"SKU-00{i}" for i in range(1, 9)] + ["SKU-NOT-IN-ERP"]
    run = await shop.hub.start("sync-catalogue-page", {"skus": skus},
                               transaction_id=f"page-{shop.tag}")
    assert run.status == "succeeded", run.error
    assert [entry and entry["sku"] for entry in run.result] == [*skus[:-1], None]
    entries = (await sandbox.state("contentful"))["entries"]
    assert all(entries[f"product-{sku}"]["status"] == "published" for sku in skus[:-1])
    rows = await shop.hub.store.fanout_items(uuid.UUID(run.id), "publish-entries")
    assert [r["state"] for r in rows] == ["done"] * 8 + ["skipped"]
