"""What ``hub dev`` shows: the tutorial workflow, a failing order that compensates, an async
step completed from outside, and an order flowing in from Kafka and out through the outbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.engine.hub import Hub
from hub.runtime.service import KafkaRuntime


async def run_demo(hub: Hub, runtime: KafkaRuntime | None = None) -> None:
    def say(line: str) -> None:
        typer.echo(line)

    names = hub.registry.names()
    if "hello-world" in names:
        run = await hub.start("hello-world", {"name": "John"})
        say(f"hello-world      -> {run.status}: {run.result}")
    if "demo-order" in names:
        ok = await hub.start("demo-order", {"order_id": "ord-1", "amount": 42})
        say(f"demo-order ok    -> {ok.status}: {ok.result}")
        bad = await hub.start("demo-order", {"order_id": "ord-2", "amount": -1},
                              raise_on_error=False)
        steps = ", ".join(f"{s.id}={s.state}" for s in bad.steps.values())
        say(f"demo-order fails -> {bad.status} ({bad.error and bad.error['message']}); {steps}")
    if "demo-approval" in names:
        waiting = await hub.start("demo-approval", {"order_id": "ord-3"})
        say(f"demo-approval    -> {waiting.status} (async step awaits approval)")
        await hub.set_step_success(waiting.transaction_id, "await-approval", {"by": "dev"})
        done = await hub.wait(waiting.id, timeout=30)
        say(f"demo-approval    -> {done.status}: {done.result}")
    if runtime is not None and runtime.consumer is not None and "fulfil-order" in names:
        await _order_through_kafka(hub, runtime, say)


async def _order_through_kafka(hub: Hub, runtime: KafkaRuntime, say: Callable[[str], None]) -> None:
    order_id = f"dev-{int(time.time())}"
    event = {"id": order_id, "customer_email": "john@example.com", "currency": "EUR",
             "lines": [{"sku": "TSHIRT-M", "quantity": 2, "unit_price": 1500}], "total": 3000}
    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("order.placed", json.dumps(event).encode(),
                                     key=order_id.encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    while True:
        try:
            run = await hub.wait(f"order.placed:{order_id}", timeout=5)
            break
        except Exception:
            if time.monotonic() > deadline:
                say("order.placed     -> not consumed within 60 s")
                return
            await asyncio.sleep(0.2)
    say(f"order.placed     -> fulfil-order {run.status}, trigger "
        f"{run.trigger and {k: run.trigger[k] for k in ('topic', 'partition', 'offset')}}")
    consumer = AIOKafkaConsumer("order.confirmed", bootstrap_servers=runtime.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                for rec in recs:
                    body = json.loads(rec.value)
                    if body.get("order_id") == order_id:
                        say(f"order.confirmed  <- {body} (via the outbox)")
                        return
    finally:
        await consumer.stop()
    say("order.confirmed  <- not seen within 30 s")


async def trickle(hub: Hub, runtime: KafkaRuntime, count: int | None,
                  interval: float = 1.0) -> None:
    """Publish demo orders (every fifth one with a wrong total, which compensates) and print
    a live summary of what the hub did with them. ``count=None``: until cancelled."""
    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap)
    await producer.start()
    sent = 0
    last_line = ""
    try:
        while count is None or sent < count:
            sent += 1
            order_id = f"demo-{int(time.time())}-{sent}"
            total = 3000 if sent % 5 else 1
            event = {"id": order_id, "customer_email": f"c{sent}@example.com",
                     "currency": "EUR", "total": total,
                     "lines": [{"sku": "TSHIRT-M", "quantity": 2, "unit_price": 1500}]}
            await producer.send_and_wait("order.placed", json.dumps(event).encode(),
                                         key=order_id.encode())
            line = await _summary(hub, sent)
            if line != last_line:
                typer.echo(line)
                last_line = line
            await asyncio.sleep(interval)
        for _ in range(30):  # let the last ones finish, then say where they ended
            await asyncio.sleep(0.5)
            line = await _summary(hub, sent)
            if line != last_line:
                typer.echo(line)
                last_line = line
            if "running 0" in line and "pending 0" in line:
                break
    finally:
        await producer.stop()


async def _summary(hub: Hub, sent: int) -> str:
    rows = await hub.store.list_executions(workflow="fulfil-order", limit=10_000)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = " ".join(f"{s} {counts.get(s, 0)}" for s in
                     ("pending", "running", "succeeded", "compensated", "compensation_failed"))
    return f"demo: sent {sent} order.placed | fulfil-order: {parts}"
