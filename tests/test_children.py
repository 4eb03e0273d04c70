"""run_child: a step that runs another workflow as a child execution with its own lineage."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from hub import Hub, StepContext
from tests.support.polling import until
from tests.workflows.fanout_flows import Ledger, fx_map_children, fx_parent


def _ledger(hub: Hub) -> Ledger:
    led = Ledger()
    hub.container.register("ledger", led)
    return led


async def _children(hub: Hub, parent_id: str) -> list[dict[str, object]]:
    return await hub.store.children_of(uuid.UUID(parent_id))


async def test_the_parent_gets_the_child_result_and_lineage_links_both(hub: Hub) -> None:
    _ledger(hub)
    run = await fx_parent(hub).run(input={"child": {"x": 1}})
    run = await hub.wait(run.id, timeout=30)
    assert run.status == "succeeded", run.error
    assert run.result == {"after": True}
    (child,) = await _children(hub, run.id)
    assert child["parent_step"] == "child-fx-child" and child["status"] == "succeeded"
    assert child["transaction_id"] == f"{run.id}:child-fx-child"
    child_run = await hub.get_run(str(child["id"]))
    assert child_run.trigger is not None
    assert child_run.trigger["parent_execution_id"] == run.id


async def test_a_child_failure_fails_the_parent_step_and_the_parent_compensates(
        hub: Hub) -> None:
    led = _ledger(hub)
    run = await fx_parent(hub).run(input={"child": {"fail_after": True}},
                                   raise_on_error=False)
    run = await hub.wait(run.id, timeout=30)
    assert run.status == "compensated"
    assert run.error is not None and run.error["step"] == "child-fx-child"
    assert "ended compensated" in run.error["message"]
    (child,) = await _children(hub, run.id)
    assert child["status"] == "compensated"
    assert led.undone == ["fx-before"], "the child undid its own step, once"


async def test_compensating_the_parent_compensates_its_succeeded_child(hub: Hub) -> None:
    led = _ledger(hub)
    run = await fx_parent(hub).run(input={"child": {}, "fail_after": True},
                                   raise_on_error=False)
    run = await hub.wait(run.id, timeout=30)
    assert run.status == "compensated", run.error
    assert run.error is not None and run.error["step"] == "fx-after"
    (child,) = await _children(hub, run.id)
    child_run = await hub.wait(str(child["id"]), timeout=30)
    assert child_run.status == "compensated"
    assert led.undone.count("fx-before") == 1 and led.undone.count("fx-after") == 1


async def test_a_map_over_a_workflow_runs_each_item_as_a_child(hub: Hub) -> None:
    _ledger(hub)
    run = await fx_map_children(hub).run(input={"children": [{}, {}, {}]})
    assert run.status == "succeeded", run.error
    assert run.result == [{"after": True}] * 3
    kids = await _children(hub, run.id)
    assert sorted(str(k["parent_step"]) for k in kids) == [
        "each-fx-child[0]", "each-fx-child[1]", "each-fx-child[2]"]


async def test_cancelling_the_parent_cancels_its_live_child(hub: Hub) -> None:
    from tests.workflows.fanout_flows import fx_parent_waits

    led = _ledger(hub)
    run = await fx_parent_waits(hub).run(input={})
    assert run.status == "waiting", "the parent waits for its child without a lease"
    row = await hub.store.get(uuid.UUID(run.id))
    assert row is not None and row["lease_owner"] is None
    (child,) = await _children(hub, run.id)
    child_run = await hub.start("fx-child-waits", {}, transaction_id=str(child["transaction_id"]))
    assert child_run.status == "waiting", "found, not started again: it waits for its answer"
    cancelled = await hub.cancel(run.id, reason="customer changed their mind")
    assert cancelled.status == "cancelled", cancelled.error
    child_run = await hub.wait(str(child["id"]), timeout=30)
    assert child_run.status == "cancelled"
    assert sorted(led.undone) == ["fx-before", "fx-wait"], "the child undid its steps once"


async def test_a_child_end_read_before_its_step_waits_outlives_a_crash(
        dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child ends while its step is still being started, and the parent reads that end
    then; a parallel step lands and is checkpointed. The end's signal row must stay until
    the step waits and takes it: the old code deleted it with that checkpoint, so a crash
    before the step landed left the parent waiting for an end it would never read again."""
    from hub.engine import children

    original = children.start_child
    gate, hang, checkpointed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    crashing = True

    async def start_child(workflow: str, value: Any, ctx: StepContext) -> str:
        child_id = await original(workflow, value, ctx)
        if not crashing:
            return child_id
        hub = ctx.container.resolve("hub")
        await hub.wait(child_id, timeout=30)
        parent = uuid.UUID(ctx.execution_id)

        async def read_early() -> bool:  # the parent has read the end, step not yet waiting
            held = hub._executor.leases.held.get(parent)
            return held is not None and bool(held.execution.early)

        await until(read_early, 30, every=0.01, what="the parent reads the child's end")
        gate.set()

        async def gate_checkpointed() -> bool:
            row = await hub.store.get(parent)
            return row is not None and row["steps"].get("fx-gate", {}).get("state") == "done"

        await until(gate_checkpointed, 30, every=0.01, what="the gate step is checkpointed")
        checkpointed.set()
        await hang.wait()  # the worker dies before this step lands
        return child_id

    monkeypatch.setattr(children, "start_child", start_child)

    def _hub(name: str) -> Hub:
        h = Hub(dsn, schema=schema, worker_id=name, lease_seconds=2.0, poll_interval=0.1)
        h.container.register("ledger", Ledger())
        h.container.register("gate", gate)
        return h

    async with _hub("a") as a:
        run = await a.start("fx-parent-gated", {"child": {}}, wait=False)
        async with asyncio.timeout(30):
            await checkpointed.wait()
        conn = await asyncpg.connect(dsn)
        try:
            kept = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.signal WHERE execution_id = $1 "
                "AND step = 'child-fx-child'", uuid.UUID(run.id))
        finally:
            await conn.close()
        assert kept == 1, "the child's end, read but not applied, must not be deleted"
    crashing = False
    async with _hub("b") as b:
        done = await b.wait(run.id, timeout=30)
    assert done.status == "succeeded", done.error
    assert done.result == {"child": {"after": True}, "gate": {"gated": True}}
