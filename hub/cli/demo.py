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
