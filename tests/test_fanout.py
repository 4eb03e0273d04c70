"""map_each: a step run once per item of a run-time list, each item's state in its own row."""

from __future__ import annotations

import uuid

import pytest

from hub import DefinitionError, Hub, create_workflow, map_each
from tests.workflows.fanout_flows import (
    Ledger,
    fx_apply,
    fx_map,
    fx_map_bounded,
    fx_map_continue,
)


def _ledger(hub: Hub) -> Ledger:
    led = Ledger()
    hub.container.register("ledger", led)
    return led


def _items(n: int, **fail: bool) -> list[dict[str, object]]:
    return [{"sku": f"S{i}", "qty": i, **({"fail": True} if f"S{i}" in fail else {})}
            for i in range(n)]


async def test_results_come_back_in_item_order_with_bounded_concurrency(hub: Hub) -> None:
    led = _ledger(hub)
    items = [{**item, "hold": 3} if i < 3 else item for i, item in enumerate(_items(8))]
    run = await fx_map(hub).run(input={"items": items})
    assert run.status == "succeeded", run.error
    assert run.result == [{"sku": f"S{i}", "reserved": i} for i in range(8)]
    assert led.most_running == 3, "three at once, never more"
    assert sorted(k for k in led.applied if "[" in k) == sorted(
        f"{run.id}:each-fx-apply[S{i}]" for i in range(8))


async def test_each_item_has_a_row_of_its_own_not_a_growing_document(hub: Hub) -> None:
    _ledger(hub)
    run = await fx_map(hub).run(input={"items": _items(5)})
    rows = await hub.store.fanout_items(uuid.UUID(run.id), "each-fx-apply")
    assert [(r["key"], r["state"]) for r in rows] == [(f"S{i}", "done") for i in range(5)]
    assert sorted(r["seq"] for r in rows) == sorted({r["seq"] for r in rows})
    row = await hub.store.get(uuid.UUID(run.id))
    assert row is not None and "S3" not in str(row["steps"].get("fx-before"))


async def test_a_failed_item_compensates_completed_items_latest_first(hub: Hub) -> None:
    led = _ledger(hub)
    run = await fx_map(hub).run(input={"items": _items(6, S4=True)}, raise_on_error=False)
    assert run.status == "compensated"
    assert run.error is not None and run.error["step"] == "each-fx-apply"
    assert "S4 is refused" in run.error["message"] and run.error["item"].endswith("[S4]")
    done_items = [k.split(":", 1)[1] for k in led.order if "[" in k]
    undone_items = [s for s in led.undone if "[" in s]
    assert undone_items == list(reversed(done_items)), "items undone latest first"
    assert len(set(undone_items)) == len(undone_items), "each item undone once"
    assert led.undone[-1] == "fx-before", "then the steps before the map"


async def test_a_failure_after_the_map_compensates_every_item_then_earlier_steps(
        hub: Hub) -> None:
    led = _ledger(hub)
    run = await fx_map(hub).run(input={"items": _items(4), "fail_after": True},
                                raise_on_error=False)
    assert run.status == "compensated"
    assert sorted(s for s in led.undone if "[" in s) == sorted(
        f"each-fx-apply[S{i}]" for i in range(4))
    assert led.undone[-1] == "fx-before"
    rows = await hub.store.fanout_items(uuid.UUID(run.id), "each-fx-apply")
    assert {r["state"] for r in rows} == {"reverted"}


async def test_continue_on_permanent_failure_applies_per_item(hub: Hub) -> None:
    _ledger(hub)
    run = await fx_map_continue(hub).run(input={"items": _items(3, S1=True)})
    assert run.status == "succeeded", run.error
    assert run.result == [{"sku": "S0", "reserved": 0}, None, {"sku": "S2", "reserved": 2}]


async def test_a_list_over_the_bound_fails_before_any_item_starts(hub: Hub) -> None:
    led = _ledger(hub)
    run = await fx_map_bounded(hub).run(input={"items": _items(5)}, raise_on_error=False)
    assert run.status == "compensated"
    assert run.error is not None
    assert "5 items, over the bound of 3" in run.error["message"]
    assert not [k for k in led.applied if "[" in k], "no item was started"
    assert await hub.store.fanout_items(uuid.UUID(run.id), "each-fx-apply") == []
    assert led.undone == ["fx-before"]


async def test_the_hub_bound_applies_when_the_map_sets_none(dsn: str, schema: str) -> None:
    async with Hub(dsn, schema=schema, max_fanout_items=2) as hub:
        _ledger(hub)
        run = await fx_map(hub).run(input={"items": _items(3)}, raise_on_error=False)
    assert run.status == "compensated"
    assert run.error is not None and "3 items, over the bound of 2" in run.error["message"]


async def test_items_sharing_a_key_fail_the_map(hub: Hub) -> None:
    _ledger(hub)
    run = await fx_map(hub).run(input={"items": [{"sku": "A"}, {"sku": "A"}]},
                                raise_on_error=False)
    assert run.status == "compensated"
    assert run.error is not None and "share the key 'A'" in run.error["message"]


async def test_a_map_is_one_node_of_a_hashed_drawable_graph() -> None:
    graph = fx_map.graph
    node = graph.to_dict()["steps"][1]
    assert node["id"] == "each-fx-apply" and node["kind"] == "map"
    assert node["map"]["step"] == "fx-apply" and node["map"]["max_concurrency"] == 3
    assert 'n_each_fx_apply[["each-fx-apply (each: fx-apply)"]]' in graph.to_mermaid()
    wider = create_workflow("fx-map-wider", lambda inp: map_each(
        inp["items"], fx_apply, max_concurrency=4, name="each-fx-apply"))
    same = create_workflow("fx-map-wider", lambda inp: map_each(
        inp["items"], fx_apply, max_concurrency=3, name="each-fx-apply"))
    assert wider.version != same.version, "the map's options are part of the hash"


def test_map_each_needs_a_run_time_list() -> None:
    with pytest.raises(DefinitionError, match="maps over a run-time list"):
        create_workflow("fx-bad-map", lambda inp: map_each([1, 2], fx_apply))
    with pytest.raises(DefinitionError, match="max_concurrency"):
        create_workflow("fx-bad-map2", lambda inp: map_each(inp, fx_apply, max_concurrency=0))
