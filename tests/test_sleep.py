"""Durable sleep: a step row with a due time, driven here by a manual clock (no real
waiting), released past the hold threshold, woken by a cancel or an operator, and finished
by another worker after the one sleeping was killed."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from hub import Hub, InvalidTransition, Run, WorkflowResponse, create_workflow, sleep
from hub.engine.clock import ManualClock
from tests.conftest import worker_env
from tests.support.workers import workers
from tests.workflows import sleep_flows
from tests.workflows.sleep_flows import UNDONE

MODULE = "tests.workflows.sleep_flows"
assert sleep_flows  # registers the workflows


@pytest.fixture
async def clocked(dsn: str, schema: str) -> AsyncIterator[tuple[Hub, ManualClock]]:
    clock = ManualClock()
    async with Hub(dsn, schema=schema, clock=clock, lease_seconds=2.0, poll_interval=0.5,
                   hold_timer_seconds=30.0) as hub:
        yield hub, clock


async def _until(hub: Hub, tx: str, workflow: str, probe: Any) -> Run:
    """Poll the store until ``probe(run)`` holds (a condition, not a duration)."""
    async with asyncio.timeout(30):
        while True:
            run = await hub.get_run(tx, workflow=workflow)
            if probe(run):
                return run
            await asyncio.sleep(0.02)


async def _row(hub: Hub, run: Run) -> dict[str, Any]:
    row = await hub.store.get(uuid.UUID(run.id))
    assert row is not None
    return row


def _sleeping(run: Run) -> bool:
    return run.steps["sleep"].state == "waiting"


async def test_a_short_sleep_keeps_the_lease_and_ends_when_the_clock_reaches_it(
        clocked: tuple[Hub, ManualClock]) -> None:
    hub, clock = clocked
    await hub.start("sleep-between", {"seconds": 10}, transaction_id="sl-short", wait=False)
    run = await _until(hub, "sl-short", "sleep-between", _sleeping)
    row = await _row(hub, run)
    assert row["steps"]["sleep"]["due"] == clock.now() + 10
    assert row["lease_owner"] is not None, "under the hold threshold the lease is kept"
    assert run.steps["sl-after"].state == "not_started"
    await clock.advance(10)
    done = await hub.wait("sl-short", workflow="sleep-between", timeout=20)
    assert done.succeeded and done.steps["sleep"].state == "done"
    assert done.steps["sl-after"].state == "done"


async def test_a_sleep_longer_than_the_hold_threshold_releases_the_lease(
        clocked: tuple[Hub, ManualClock]) -> None:
    hub, clock = clocked
    await hub.start("sleep-between", {"seconds": 3 * 86400}, transaction_id="sl-long",
                    wait=False)
    run = await _until(hub, "sl-long", "sleep-between",
                       lambda r: _sleeping(r) and r.status == "waiting")
    row = await _until_released(hub, run)
    assert row["steps"]["sleep"]["due"] == clock.now() + 3 * 86400
    # the row is due when the sleep is (by the database's clock): any worker wakes it then
    assert row["due_at"] - datetime.now(UTC) > timedelta(days=2, hours=23)


async def _until_released(hub: Hub, run: Run) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            row = await _row(hub, run)
            if row["lease_owner"] is None:
                return row
            await asyncio.sleep(0.02)


async def test_an_operator_wakes_a_sleep_and_the_steps_after_it_run(
        clocked: tuple[Hub, ManualClock]) -> None:
    hub, _ = clocked
    await hub.start("sleep-between", {"seconds": 3 * 86400}, transaction_id="sl-wake",
                    wait=False)
    run = await _until(hub, "sl-wake", "sleep-between", _sleeping)
    await _until_released(hub, run)
    with pytest.raises(InvalidTransition, match="not a sleep"):
        await hub.wake("sl-wake", "sl-before", workflow="sleep-between")
    await hub.wake("sl-wake", "sleep", workflow="sleep-between")
    done = await hub.wait("sl-wake", workflow="sleep-between", timeout=20)
    assert done.succeeded and done.steps["sl-after"].state == "done"


async def test_a_cancel_wakes_a_sleep_and_the_run_ends_cancelled(
        clocked: tuple[Hub, ManualClock]) -> None:
    hub, _ = clocked
    await hub.start("sleep-between", {"seconds": 3 * 86400}, transaction_id="sl-cancel",
                    wait=False)
    run = await _until(hub, "sl-cancel", "sleep-between", _sleeping)
    await _until_released(hub, run)
    done = await hub.cancel("sl-cancel", workflow="sleep-between", reason="order paid")
    assert done.status == "cancelled"
    assert done.steps["sleep"].state == "skipped"
    assert done.steps["sl-after"].state == "not_started"
    assert done.steps["sl-before"].state == "reverted" and "sl-cancel" in UNDONE


async def test_sleep_until_a_run_time_value_wakes_at_that_time(
        clocked: tuple[Hub, ManualClock]) -> None:
    hub, clock = clocked
    at = datetime.fromtimestamp(clock.now(), UTC) + timedelta(minutes=5)
    await hub.start("sleep-until-then", {"at": at.isoformat()}, transaction_id="sl-at",
                    wait=False)
    run = await _until(hub, "sl-at", "sleep-until-then",
                       lambda r: r.steps["sl-until"].state == "waiting")
    assert (await _row(hub, run))["steps"]["sl-until"]["due"] == at.timestamp()
    await hub.wake("sl-at", "sl-until", workflow="sleep-until-then")  # released: 300 s > 30 s
    done = await hub.wait("sl-at", workflow="sleep-until-then", timeout=20)
    assert done.succeeded


@pytest.mark.parametrize("bad", ["soon", -5, None, [1]])
async def test_a_sleep_given_a_value_that_is_no_duration_fails_naming_it(
        clocked: tuple[Hub, ManualClock], bad: Any) -> None:
    hub, _ = clocked
    run = await hub.start("sleep-between", {"seconds": bad}, transaction_id=f"sl-bad-{bad}",
                          raise_on_error=False, timeout=20)
    assert run.status == "compensated"
    assert run.error is not None and "sleep 'sleep'" in run.error["message"]


def test_a_sleep_of_a_negative_constant_is_refused_at_definition() -> None:
    from hub import DefinitionError

    with pytest.raises(DefinitionError, match="seconds >= 0"):
        @create_workflow("sleep-negative")
        def _negative(inp: Any) -> WorkflowResponse:
            sleep(-1)
            return WorkflowResponse(None)


@pytest.mark.slow
async def test_a_sleep_survives_the_kill_of_its_worker_and_ends_on_another(
        dsn: str, schema: str) -> None:
    def env(name: str) -> dict[str, str]:
        return worker_env(dsn, schema, MODULE, HUB_LEASE_SECONDS="2", HUB_POLL_INTERVAL="0.5",
                          HUB_WORKER_ID=name)

    conn = await asyncpg.connect(dsn)
    try:
        async with Hub(dsn, schema=schema, execute=False) as starter, workers(env) as ws:
            a = await ws.start("worker-a")
            await starter.start("sleep-between", {"seconds": 3}, transaction_id="sl-kill",
                                wait=False)
            run = await _until(starter, "sl-kill", "sleep-between", _sleeping)
            holder = await conn.fetchval(
                f"SELECT lease_owner FROM {schema}.execution WHERE id = $1", uuid.UUID(run.id))
            assert holder == "worker-a", "the kill must land while worker A holds the sleep"
            os.kill(a.pid, signal.SIGKILL)
            await asyncio.to_thread(a.wait)
            await ws.start("worker-b")
            done = await starter.wait("sl-kill", workflow="sleep-between", timeout=60)
    finally:
        await conn.close()
    assert done.succeeded
    assert done.steps["sl-before"].attempts == 1, "the step before the sleep ran once"
    assert done.result == {"step": "sl-after", "worker": "worker-b"}
