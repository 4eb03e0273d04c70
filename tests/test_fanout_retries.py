"""A map item's retry: its ``retry_after`` is honoured, a long wait is a timer row (the
map lets its lease go), and ``auto_retry=False`` waits for an operator's retry."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub import Hub
from hub.engine.clock import ManualClock
from tests.support.polling import until
from tests.workflows.fanout_flows import Ledger


def _items(retry_after: float | None) -> list[dict[str, Any]]:
    return [{"sku": "A"}, {"sku": "B", "retry_after": retry_after}, {"sku": "C"}]


async def _rows(hub: Hub, run_id: str, step: str) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in await hub.store.fanout_items(uuid.UUID(run_id), step)}


@pytest.fixture
async def clocked(dsn: str, schema: str) -> AsyncIterator[tuple[Hub, ManualClock, Ledger]]:
    clock, led = ManualClock(), Ledger()
    async with Hub(dsn, schema=schema, clock=clock, lease_seconds=2.0, poll_interval=0.5,
                   hold_timer_seconds=30.0) as hub:
        hub.container.register("ledger", led)
        yield hub, clock, led


async def test_an_item_s_short_retry_after_is_waited_on_the_clock_not_its_interval(
        clocked: tuple[Hub, ManualClock, Ledger]) -> None:
    hub, clock, _ = clocked
    run = await hub.start("fx-map-flaky", {"items": _items(3.0)}, wait=False)
    await until(lambda: _asleep(clock), 30, what="the item waits for its retry")
    rows = await _rows(hub, run.id, "each-fx-flaky")
    assert rows["B"]["state"] == "temp_failure"
    await clock.advance(3.0)  # what it asked for; its own interval is 1000 s
    done = await hub.wait(run.id, timeout=30)
    assert done.status == "succeeded", done.error
    assert done.result == [{"sku": "A", "attempt": 1}, {"sku": "B", "attempt": 2},
                           {"sku": "C", "attempt": 1}]


async def _asleep(clock: ManualClock) -> bool:
    return clock.sleeping > 0


async def test_a_long_item_retry_is_a_timer_row_and_the_map_resumes_where_it_stopped(
        clocked: tuple[Hub, ManualClock, Ledger]) -> None:
    """Before, the item slept 600 s inside its task, holding the map's lease."""
    hub, clock, led = clocked
    items = [{"sku": "B", "retry_after": 600.0}] + [{"sku": s} for s in "ACDE"]
    run = await hub.start("fx-map-flaky", {"items": items}, wait=False)

    async def released() -> dict[str, Any] | None:
        row = await hub.store.get(uuid.UUID(run.id))
        return row if row is not None and row["lease_owner"] is None else None

    row = await until(released, 30, what="the map lets its lease go")
    step = row["steps"]["each-fx-flaky"]
    assert step["state"] == "temp_failure"
    assert step["due"] == pytest.approx(clock.now() + 600.0, abs=1.0)
    assert "waits for its retry in 600 s" in step["error"]["message"]
    assert row["status"] == "running" and row["due_at"] is not None
    rows = await _rows(hub, run.id, "each-fx-flaky")
    assert {k: r["state"] for k, r in rows.items()} == {
        "A": "done", "B": "temp_failure", "C": "done", "D": "done", "E": "done"}, (
        "one waiting item does not hold the others up")
    # ten minutes pass: the engine's clock, and the row's due time in Postgres
    await clock.advance(600.0)
    await hub.store.pool.execute(
        f"UPDATE {hub.store.schema}.execution SET due_at = now() WHERE id = $1",
        uuid.UUID(run.id))
    await hub.store.notify(json.dumps({"due": True}))
    done = await hub.wait(run.id, timeout=30)
    assert done.status == "succeeded", done.error
    assert [r["attempt"] for r in done.result] == [2, 1, 1, 1, 1]
    keys = [k for k in led.applied if "[" in k]
    assert sorted(keys) == sorted(f"{run.id}:each-fx-flaky[{s}]" for s in "ABCDE")
    assert all(led.applied[k] == 1 for k in keys), "the done items were not run again"


async def test_an_item_that_must_not_retry_by_itself_waits_for_an_operator(
        hub: Hub) -> None:
    hub.container.register("ledger", Ledger())
    run = await hub.start("fx-map-flaky-manual", {"items": _items(1.0)}, wait=False)

    async def waiting() -> Any:
        r = await hub.get_run(run.id)
        return r if r.status == "waiting" else None

    waited = await until(waiting, 30, what="the run waits for a manual retry")
    step = waited.steps["each-fx-flaky"]
    assert step.state == "temp_failure"
    assert step.error is not None and "waits for a manual retry" in step.error["message"]
    await hub.retry(run.id)
    done = await hub.wait(run.id, timeout=30)
    assert done.status == "succeeded", done.error
    assert [r["attempt"] for r in (done.result or [])] == [1, 2, 1]


async def test_cancelling_a_map_that_waits_for_an_item_undoes_its_done_items(
        hub: Hub) -> None:
    led = Ledger()
    hub.container.register("ledger", led)
    run = await hub.start("fx-map-flaky", {"items": _items(600.0)}, wait=False)

    async def released() -> bool:
        row = await hub.store.get(uuid.UUID(run.id))
        return row is not None and row["lease_owner"] is None

    await until(released, 30, what="the map lets its lease go")
    cancelled = await hub.cancel(run.id, reason="order withdrawn")
    assert cancelled.status == "cancelled", cancelled.error
    assert sorted(led.undone) == ["each-fx-flaky[A]", "each-fx-flaky[C]", "fx-before"]
