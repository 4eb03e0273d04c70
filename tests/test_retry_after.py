"""A retry delay travels as data: the wait an error asks for (a 429's ``Retry-After``) is the
retry timer's, not the step's own interval; the timer is driven by a manual clock, so the
test waits for no real time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from connectors import load_settings
from connectors.odoo import OdooConnector, OdooSettings
from hub import Hub, StepContext, StepError, WorkflowResponse, create_step, create_workflow
from hub.engine.clock import ManualClock
from hub.sandbox import SandboxControl, SandboxServer
from hub.sandbox.odoo import API_KEY, DATABASE, OdooSandbox

FAILS_LEFT: dict[str, int] = {}


async def _flaky(inp: dict[str, Any], ctx: StepContext) -> str:
    if FAILS_LEFT.get(inp["id"], 0) > 0:
        FAILS_LEFT[inp["id"]] -= 1
        raise StepError("the ledger is busy", retry_after=2.5)
    return "booked"


@create_workflow("ra-step-asks")
def ra_step_asks(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("ra-book", _flaky, max_retries=2,
                                        retry_interval=200.0)(inp))


async def _count(inp: dict[str, Any], ctx: StepContext) -> int:
    erp: OdooConnector = ctx.container.resolve("odoo")
    return await erp.count_products(ctx)


@create_workflow("ra-system-asks")
def ra_system_asks(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("ra-count", _count, max_retries=2,
                                        retry_interval=200.0)(inp))


@pytest.fixture(scope="module")
def odoo() -> Iterator[SandboxServer]:
    server = SandboxServer([OdooSandbox(seed=3)]).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def control(odoo: SandboxServer) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(odoo.control_url) as ctl:
        await ctl.clear_faults()
        yield ctl
        await ctl.clear_faults()


async def _due_of(hub: Hub, tx: str, workflow: str, step: str) -> float:
    run = await hub.get_run(tx, workflow=workflow)
    row = await hub.store.get(uuid.UUID(run.id))
    assert row is not None
    return float(row["steps"][step]["due"])


async def _run_until_first_failure(hub: Hub, workflow: str, tx: str, step: str,
                                   inp: dict[str, Any]) -> None:
    """Start it and wait (polling the store, by condition) until its step awaits a retry."""
    await hub.start(workflow, inp, transaction_id=tx, wait=False)
    async with asyncio.timeout(20):
        while True:
            if (await hub.get_run(tx, workflow=workflow)).steps[step].state == "temp_failure":
                return
            await asyncio.sleep(0.02)


async def test_a_step_error_retry_after_sets_the_retry_timer(dsn: str, schema: str) -> None:
    clock = ManualClock()
    FAILS_LEFT["a"] = 1
    async with Hub(dsn, schema=schema, clock=clock, lease_seconds=2.0, poll_interval=0.5,
                   hold_timer_seconds=30.0) as hub:
        await _run_until_first_failure(hub, "ra-step-asks", "ra-a", "ra-book", {"id": "a"})
        assert await _due_of(hub, "ra-a", "ra-step-asks", "ra-book") == clock.now() + 2.5
        await clock.advance(2.5)
        run = await hub.wait("ra-a", workflow="ra-step-asks", timeout=20)
    assert run.succeeded and run.result == "booked"
    assert run.steps["ra-book"].attempts == 2


async def test_a_429_retry_after_from_the_system_sets_the_retry_timer(
    dsn: str, schema: str, odoo: SandboxServer, control: SandboxControl
) -> None:
    clock = ManualClock()
    settings = load_settings(OdooSettings, base_url=odoo.url("odoo"), database=DATABASE,
                             api_key=API_KEY, protocol="json2", retry_after_max_s=0)
    await control.set_faults("odoo", burst_429=1, retry_after_s=4)
    async with OdooConnector(settings) as erp, Hub(
        dsn, schema=schema, clock=clock, services={"odoo": erp}, lease_seconds=2.0,
        poll_interval=0.5, hold_timer_seconds=30.0,
    ) as hub:
        await _run_until_first_failure(hub, "ra-system-asks", "ra-b", "ra-count", {})
        assert await _due_of(hub, "ra-b", "ra-system-asks", "ra-count") == clock.now() + 4.0
        await clock.advance(4.0)
        run = await hub.wait("ra-b", workflow="ra-system-asks", timeout=20)
    assert run.succeeded and isinstance(run.result, int)
    assert run.steps["ra-count"].attempts == 2
