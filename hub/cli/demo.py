"""What ``hub dev`` shows: commerce events flowing through the four sandbox systems.

``run_demo`` runs one of each path to completion (``--once`` stops there): the tutorial
workflow, an order that is fulfilled and then shipped, a declined payment that rolls back.
``trickle`` then publishes a steady stream of orders, some failing on purpose (a declined
card, a wrong total, an SKU out of stock, a malformed event for the dead-letter topic), plays
the warehouse (signed shipment webhooks for confirmed orders) and prints a live summary.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import typer
from aiokafka import AIOKafkaProducer

from hub.api.signatures import signed_headers
from hub.engine.hub import Hub
from hub.errors import ExecutionNotFound
from hub.runtime.service import KafkaRuntime

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


class Warehouse:
    """Ships confirmed demo orders a little later, through the API's signed webhook."""

    def __init__(self, api_url: str, key: bytes) -> None:
        self.api_url = api_url
        self.key = key
        self.shipped: set[str] = set()

    async def ship(self, client: httpx.AsyncClient, order_id: str) -> bool:
        body = json.dumps({"output": {"tracking_number": f"TRK-{order_id}",
                                      "carrier": "DHL"}}).encode()
        # one delivery id per shipment, the same on every retry (Standard Webhooks)
        headers = signed_headers(self.key, f"ship-{order_id}", body)
        answer = await client.post(
            f"{self.api_url}/webhooks/warehouse/executions/ship-order:{order_id}"
            "/steps/await-shipment/success?workflow=ship-order", content=body,
            headers={"Content-Type": "application/json", **headers})
        if answer.status_code == 202:
            self.shipped.add(order_id)
            return True
        return False


async def trickle(hub: Hub, runtime: KafkaRuntime, count: int | None, *,
                  warehouse: Warehouse | None = None, interval: float = 1.0,
                  say: Callable[[str], None] = typer.echo) -> None:
    """Publish demo orders and print a live summary; ``count=None``: until cancelled."""
    run_id = str(int(time.time()))
    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap)
    await producer.start()
    sent = 0
    last_line = ""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                if count is None or sent < count:
                    sent += 1
                    key, event = demo_order(sent, run_id)
                    await _publish(producer, key, event)
                if warehouse is not None:
                    await _ship_waiting(hub, warehouse, client)
                line = await summary(hub, sent, warehouse)
                if line != last_line:
                    say(line)
                    last_line = line
                await asyncio.sleep(interval)
    finally:
        await producer.stop()


async def _ship_waiting(hub: Hub, warehouse: Warehouse, client: httpx.AsyncClient) -> None:
    rows = await hub.store.list_executions(workflow="ship-order", status="waiting", limit=50)
    for row in rows:
        order_id = str(row["transaction_id"]).removeprefix("ship-order:")
        if order_id not in warehouse.shipped:
            await warehouse.ship(client, order_id)


async def summary(hub: Hub, sent: int, warehouse: Warehouse | None = None) -> str:
    counts: dict[str, dict[str, int]] = {}
    for workflow in ("fulfil-order", "ship-order"):
        rows = await hub.store.list_executions(workflow=workflow, limit=100_000)
        per: dict[str, int] = {}
        for r in rows:
            per[r["status"]] = per.get(r["status"], 0) + 1
        counts[workflow] = per
    f, s = counts["fulfil-order"], counts["ship-order"]
    active = sum(f.get(k, 0) for k in ("pending", "running", "waiting"))
    return (f"demo: sent {sent} order.placed | fulfil-order: succeeded "
            f"{f.get('succeeded', 0)} compensated {f.get('compensated', 0)} in flight {active}"
            f" | ship-order: waiting {s.get('waiting', 0)} shipped {s.get('succeeded', 0)}")
