"""run_child: a step that runs another workflow as a child execution with its own lineage."""

from __future__ import annotations

import uuid

from hub import Hub
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
