"""What ``hub dev`` shows: the tutorial workflow, a failing order that compensates, and an
async step completed from outside."""

from __future__ import annotations

import typer

from hub.engine.hub import Hub


async def run_demo(hub: Hub) -> None:
    def say(line: str) -> None:
        typer.echo(line)

    if "hello-world" in hub.registry.names():
        run = await hub.start("hello-world", {"name": "John"})
        say(f"hello-world      -> {run.status}: {run.result}")
    if "demo-order" in hub.registry.names():
        ok = await hub.start("demo-order", {"order_id": "ord-1", "amount": 42})
        say(f"demo-order ok    -> {ok.status}: {ok.result}")
        bad = await hub.start("demo-order", {"order_id": "ord-2", "amount": -1},
                              raise_on_error=False)
        steps = ", ".join(f"{s.id}={s.state}" for s in bad.steps.values())
        say(f"demo-order fails -> {bad.status} ({bad.error and bad.error['message']}); {steps}")
    if "demo-approval" in hub.registry.names():
        waiting = await hub.start("demo-approval", {"order_id": "ord-3"})
        say(f"demo-approval    -> {waiting.status} (async step awaits approval)")
        await hub.set_step_success(waiting.transaction_id, "await-approval", {"by": "dev"})
        done = await hub.wait(waiting.id, timeout=30)
        say(f"demo-approval    -> {done.status}: {done.result}")
