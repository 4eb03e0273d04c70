"""What ``hub dev`` shows: commerce events flowing through the four sandbox systems.

``run_demo`` runs one of each path to completion (``--once`` stops there): the tutorial
workflow, an order that is fulfilled and then shipped, a declined payment that rolls back.
``trickle`` then publishes a steady stream of orders, some failing on purpose (a declined
card, a wrong total, an SKU out of stock, a malformed event for the dead-letter topic), plays
the warehouse (signed shipment webhooks for confirmed orders, but every fourth order left
waiting for a delivery sent by hand) and keeps its stock (``Stockroom``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import structlog
import typer
from aiokafka import AIOKafkaProducer

from hub.api.signatures import signed_headers
from hub.engine.hub import Hub
from hub.errors import ExecutionNotFound
from hub.runtime.service import KafkaRuntime

log = structlog.get_logger("hub.demo")

SKUS = [f"SKU-00{i}" for i in range(1, 9)]
CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("grace@example.com", "Grace Hopper"),
             ("alan@example.com", "Alan Turing"), ("barbara@example.com", "Barbara Liskov")]


def demo_order(n: int, run_id: str) -> tuple[str, dict[str, Any] | bytes]:
    """The n-th demo order: mostly good ones, some that fail on purpose."""
    order_id = f"demo-{run_id}-{n}"
    email, name = CUSTOMERS[n % len(CUSTOMERS)]
    sku = SKUS[n % len(SKUS)]
    quantity, unit_price = 1 + n % 2, 1500 + 100 * (n % 7)
    lines = [{"sku": sku, "quantity": quantity, "unit_price": unit_price}]
    total = quantity * unit_price
    order: dict[str, Any] = {"id": order_id, "customer_email": email, "customer_name": name,
                             "currency": "EUR", "lines": lines, "total": total,
                             "payment_method": "pm_card_visa"}
    if n % 13 == 0:
        return order_id, b'{"id": "' + order_id.encode() + b'", "total": "lots"}'
    if n % 11 == 0:
        order["lines"] = [{"sku": "SKU-OOS", "quantity": 1, "unit_price": 1200}]
        order["total"] = 1200
    elif n % 7 == 0:
        order["total"] = total + 1
    elif n % 5 == 0:
        order["payment_method"] = "pm_card_chargeDeclined"
    return order_id, order


async def _publish(producer: AIOKafkaProducer, key: str, event: dict[str, Any] | bytes) -> None:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    await producer.send_and_wait("order.placed", body, key=key.encode())


async def _wait_run(hub: Hub, ref: str, workflow: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await hub.wait(ref, workflow=workflow, timeout=max(0.1, deadline
                                                                       - time.monotonic()))
        except (ExecutionNotFound, TimeoutError):
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)


async def run_demo(hub: Hub, runtime: KafkaRuntime) -> None:
    """One of each path, to completion, each printed as one line."""

    def say(line: str) -> None:
        typer.echo(line)

    if "hello-world" in hub.registry.names():
        run = await hub.start("hello-world", {"name": "John"})
        say(f"hello-world      -> {run.status}: {run.result}")
    run_id = str(int(time.time()))
    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap)
    await producer.start()
    try:
        good_id, good = demo_order(1, run_id)
        declined_id, declined = demo_order(5, run_id)
        await _publish(producer, good_id, good)
        await _publish(producer, declined_id, declined)
    finally:
        await producer.stop()
    run = await _wait_run(hub, f"order.placed:{good_id}", "fulfil-order", 90)
    say(f"order.placed     -> fulfil-order {run and run.status} "
        f"(payment {run and (run.result or {}).get('payment_intent_id')}, "
        f"sales order {run and (run.result or {}).get('sales_order_id')}, "
        f"deal {run and (run.result or {}).get('deal_id')})")
    ship = await _wait_run_started(hub, f"ship-order:{good_id}", 60)
    if ship is not None:
        say(f"order.confirmed  -> ship-order {ship.status} (await-shipment: the warehouse)")
        await hub.set_step_success(f"ship-order:{good_id}", "await-shipment",
                                   {"tracking_number": "1Z999AA10123456784", "carrier": "UPS"},
                                   workflow="ship-order")
        shipped = await _wait_run(hub, f"ship-order:{good_id}", "ship-order", 60)
        say(f"shipment         -> ship-order {shipped and shipped.status}, "
            "deal won, order.shipped published")
    bad = await _wait_run(hub, f"order.placed:{declined_id}", "fulfil-order", 90)
    if bad is not None:
        undone = [s.id for s in bad.steps.values() if s.state == "reverted"]
        say(f"declined card    -> fulfil-order {bad.status}; undone: {', '.join(undone)}; "
            "order.failed published")


async def _wait_run_started(hub: Hub, ref: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = await hub.get_run(ref, workflow="ship-order")
        except ExecutionNotFound:
            await asyncio.sleep(0.2)
            continue
        if run.status == "waiting":
            return run
        await asyncio.sleep(0.2)
    return None


HOLD_EVERY = 4
"""Every HOLD_EVERY-th demo order the warehouse leaves waiting, for a delivery sent by hand."""


class Warehouse:
    """Ships confirmed demo orders a little later, through the API's signed webhook, but
    leaves every ``hold_every``-th one waiting at its shipment step: the printed command
    (``delivery_command``) sends that delivery by hand."""

    def __init__(self, api_url: str, key: bytes, *, hold_every: int = HOLD_EVERY,
                 secret_file: Path | None = None) -> None:
        self.api_url = api_url
        self.key = key
        self.hold_every = hold_every
        self.secret_file = secret_file
        self.shipped: set[str] = set()
        self.held: set[str] = set()

    def holds(self, order_id: str) -> bool:
        number = order_id.rsplit("-", 1)[-1]
        return self.hold_every > 0 and number.isdigit() and int(number) % self.hold_every == 0

    def url(self, order_id: str) -> str:
        return (f"{self.api_url}/webhooks/warehouse/executions/ship-order:{order_id}"
                "/steps/await-shipment/success?workflow=ship-order")

    async def ship(self, client: httpx.AsyncClient, order_id: str) -> bool:
        body = json.dumps({"output": {"tracking_number": f"TRK-{order_id}",
                                      "carrier": "DHL"}}).encode()
        # one delivery id per shipment, the same on every retry (Standard Webhooks)
        headers = signed_headers(self.key, f"ship-{order_id}", body)
        answer = await client.post(self.url(order_id), content=body,
                                   headers={"Content-Type": "application/json", **headers})
        if answer.status_code == 202:
            self.shipped.add(order_id)
            return True
        return False


def delivery_command(warehouse: Warehouse, order_id: str) -> str:
    """A shell command that sends the shipment of ``order_id`` as the warehouse would: it
    signs at the moment it runs (the hub refuses a timestamp older than five minutes) with
    the secret in ``warehouse.secret_file``, by the Standard Webhooks specification."""
    body = json.dumps({"output": {"tracking_number": f"BY-HAND-{order_id}",
                                  "carrier": "UPS"}})
    return "\n".join([
        f"id=\"ship-{order_id}-by-hand-$(date +%s)\"; ts=$(date +%s); "
        f"body='{body}'; \\",
        f"key=$(sed 's/^whsec_//' '{warehouse.secret_file}' | base64 -d | od -An -v -tx1 "
        "| tr -d ' \\n'); \\",
        "sig=$(printf %s \"$id.$ts.$body\" | openssl dgst -sha256 -mac HMAC "
        "-macopt \"hexkey:$key\" -binary | base64); \\",
        f"curl -sS -X POST '{warehouse.url(order_id)}' -H 'Content-Type: application/json' "
        "\\",
        "  -H \"webhook-id: $id\" -H \"webhook-timestamp: $ts\" "
        "-H \"webhook-signature: v1,$sig\" -d \"$body\"",
    ])


class Stockroom:
    """Keeps the demo's products in stock, as a warehouse restocks: whenever one's free
    quantity in the ERP falls below ``low`` it is topped up by ``top_up``. Without it the
    demo sells the sandbox out within minutes and every later order is compensated as out
    of stock; the SKU that is sold out on purpose is not among ``skus``."""

    def __init__(self, skus: list[str], *, low: float = 10.0, top_up: float = 50.0) -> None:
        self.skus = set(skus)
        self.low = low
        self.top_up = top_up
        self.restocked: dict[str, int] = {}

    async def restock(self, erp: Any) -> list[str]:
        """Top up the products running low (``erp``: the Odoo connector); returns their SKUs.
        Writing ``qty_available`` is the sandbox's inventory adjustment."""
        rows = await erp.list_products(None, fields=["default_code", "qty_available",
                                                     "free_qty"])
        topped = []
        for row in rows:
            sku = row.get("default_code")
            if sku in self.skus and float(row.get("free_qty") or 0) < self.low:
                on_hand = float(row.get("qty_available") or 0)
                await erp.call(None, "product.product", "write", ids=[int(row["id"])],
                               vals={"qty_available": on_hand + self.top_up})
                self.restocked[sku] = self.restocked.get(sku, 0) + 1
                topped.append(sku)
        return topped


async def trickle(hub: Hub, runtime: KafkaRuntime, count: int | None, *,
                  warehouse: Warehouse | None = None, stockroom: Stockroom | None = None,
                  interval: float = 1.0, say: Callable[[str], None] = typer.echo) -> None:
    """Publish demo orders, play the warehouse and keep its stock; ``count=None``: until
    cancelled."""
    run_id = str(int(time.time()))
    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap)
    await producer.start()
    sent = 0
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                if count is None or sent < count:
                    sent += 1
                    key, event = demo_order(sent, run_id)
                    await _publish(producer, key, event)
                if warehouse is not None:
                    await _ship_waiting(hub, warehouse, client, say)
                if stockroom is not None and "erp" in hub.container:
                    for sku in await stockroom.restock(hub.container.resolve("erp")):
                        log.info("demo_restocked", sku=sku, top_up=stockroom.top_up)
                await asyncio.sleep(interval)
    finally:
        await producer.stop()


async def _ship_waiting(hub: Hub, warehouse: Warehouse, client: httpx.AsyncClient,
                        say: Callable[[str], None]) -> None:
    rows = await hub.store.list_executions(workflow="ship-order", status="waiting", limit=50)
    for row in rows:
        order_id = str(row["transaction_id"]).removeprefix("ship-order:")
        if order_id in warehouse.shipped or order_id in warehouse.held:
            continue
        if warehouse.holds(order_id):
            if not warehouse.held and warehouse.secret_file is not None:
                say(f"order {order_id} waits for its shipment (every {warehouse.hold_every}th "
                    "demo order does); send the warehouse's signed delivery by hand:\n"
                    + delivery_command(warehouse, order_id) + "\n")
            warehouse.held.add(order_id)
            continue
        await warehouse.ship(client, order_id)
