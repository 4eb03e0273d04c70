"""Hooks, locks, cancel, manual retry, subscriptions, retention and versions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from hub import (
    ExecutionEvent,
    Hub,
    InvalidTransition,
    PermanentStepError,
    StepContext,
    StepResponse,
    WorkflowResponse,
    acquire_lock_step,
    create_hook,
    create_step,
    create_workflow,
    release_lock_step,
)
from hub.engine.registry import Registry

LOG: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    LOG.clear()


class Product(BaseModel):
    sku: str


# -- hooks ----------------------------------------------------------------------------
@create_workflow("op-hooked")
def op_hooked(inp: Product) -> WorkflowResponse:
    created = create_step("op-create-product", lambda i, c: {"sku": i["sku"], "id": 7})(inp)
    extra = create_hook("product_created", {"product": created})
    create_step("op-after-hook", lambda i, c: StepResponse.permanent_failure("stop")
                if i["fail"] else "ok")({"fail": False, "extra": extra})
    return WorkflowResponse({"product": created, "hook": extra})


@create_workflow("op-unhooked")
def op_unhooked(inp: Product) -> WorkflowResponse:
    return WorkflowResponse({"hook": create_hook("never_registered", inp)})


async def test_hook_handler_runs_inside_the_workflow(hub: Hub) -> None:
    version = op_hooked.version
    op_hooked.hooks.product_created(
        lambda inp, ctx: LOG.append(("hook", inp["product"]["id"])) or {"cms": "entry-7"},
        lambda out, ctx: LOG.append(("undo-hook", out)),
    )
    assert op_hooked.version == version, "registering a handler keeps the graph's version"
    run = await op_hooked(hub).run(input={"sku": "A"})
    assert run.result == {"product": {"sku": "A", "id": 7}, "hook": {"cms": "entry-7"}}
    assert LOG == [("hook", 7)]
    with pytest.raises(Exception, match="has no hook 'nope'"):
        op_hooked.hooks.nope(lambda i, c: None)


async def test_hook_without_handler_is_skipped(hub: Hub) -> None:
    run = await op_unhooked(hub).run(input={"sku": "B"})
    assert run.result == {"hook": None}
    assert run.steps["never_registered"].state == "skipped"


# -- locks ----------------------------------------------------------------------------
class Keyed(BaseModel):
    key: str
    fail: bool = False


async def _critical(inp: Keyed, ctx: StepContext) -> str:
    LOG.append(("enter", ctx.execution_id))
    await asyncio.sleep(0.1)
    LOG.append(("leave", ctx.execution_id))
    if inp.fail:
        raise_permanent = StepResponse.permanent_failure("fail inside the lock")
        return raise_permanent  # type: ignore[return-value]
    return "ok"


@create_workflow("op-locked")
def op_locked(inp: Keyed) -> WorkflowResponse:
    acquire_lock_step({"key": inp.key})
    out = create_step("op-critical", _critical)(inp)
    release_lock_step({"key": inp.key})
    return WorkflowResponse(out)


async def test_key_lock_serialises_workflows_and_is_released_on_compensation(hub: Hub) -> None:
    runs = await asyncio.gather(*[op_locked(hub).run(input={"key": "sku-1"}) for _ in range(3)])
    assert all(r.status == "succeeded" for r in runs)
    kinds = [k for k, _ in LOG]
    assert kinds == ["enter", "leave"] * 3, "critical sections must not overlap"
    failed = await op_locked(hub).run(input={"key": "sku-2", "fail": True}, raise_on_error=False)
    assert failed.status == "compensated"
    again = await asyncio.wait_for(op_locked(hub).run(input={"key": "sku-2"}), 10)
    assert again.status == "succeeded", "compensation released the lock"


# -- cancel, manual retry ----------------------------------------------------------------
async def _hang(inp: Any, ctx: StepContext) -> None:
    await asyncio.sleep(30)


@create_workflow("op-cancellable")
def op_cancellable(inp: Product) -> WorkflowResponse:
    create_step("op-c-first", lambda i, c: {"reserved": i["sku"]},
                lambda ci, c: LOG.append(("undo", ci)))(inp)
    create_step("op-c-hang", _hang)(inp)
    return WorkflowResponse(None)


async def test_cancel_compensates_completed_steps(hub: Hub) -> None:
    await op_cancellable(hub).run(input={"sku": "C"}, transaction_id="cancel-me", wait=False)
    for _ in range(100):
        run = await hub.get_run("cancel-me")
        if run.steps["op-c-hang"].state == "invoking":
            break
        await asyncio.sleep(0.02)
    done = await hub.cancel("cancel-me", reason="customer changed their mind")
    assert done.status == "cancelled"
    assert done.error and done.error["message"] == "customer changed their mind"
    assert LOG == [("undo", {"reserved": "C"})]


MANUAL: dict[str, int] = {}


async def _needs_a_human(inp: Any, ctx: StepContext) -> str:
    MANUAL[ctx.execution_id] = MANUAL.get(ctx.execution_id, 0) + 1
    if MANUAL[ctx.execution_id] == 1:
        raise RuntimeError("ERP rejected the document, fix it by hand")
    return "accepted"


@create_workflow("op-manual")
def op_manual(inp: Product) -> WorkflowResponse:
    return WorkflowResponse(create_step("op-m-post", _needs_a_human, max_retries=1,
                                        auto_retry=False)(inp))


async def test_auto_retry_false_waits_for_retry_step(hub: Hub) -> None:
    run = await op_manual(hub).run(input={"sku": "M"}, transaction_id="manual")
    assert run.status == "waiting"
    assert run.steps["op-m-post"].state == "temp_failure"
    await asyncio.sleep(0.3)
    assert (await hub.get_run("manual")).status == "waiting", "no automatic retry"
    await hub.retry_step("manual", "op-m-post")
    done = await hub.wait("manual", timeout=10)
    assert done.status == "succeeded" and done.result == "accepted"


# -- subscriptions ----------------------------------------------------------------------
@create_workflow("op-observed")
def op_observed(inp: Product) -> WorkflowResponse:
    a = create_step("op-o-a", lambda i, c: 1)(inp)
    return WorkflowResponse(create_step("op-o-b", lambda i, c: 2)(a))


async def test_subscribe_yields_every_transition_until_finish(hub: Hub) -> None:
    events: list[ExecutionEvent] = []

    async def collect() -> None:
        async for ev in hub.subscribe("op-observed", transaction_id="observed"):
            events.append(ev)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0.05)
    await op_observed(hub).run(input={"sku": "O"}, transaction_id="observed")
    await asyncio.wait_for(task, 10)
    assert [(e.type, e.step) for e in events] == [
        ("begin", None), ("step_begin", "op-o-a"), ("step_success", "op-o-a"),
        ("step_begin", "op-o-b"), ("step_success", "op-o-b"), ("finish", None)]
    assert events[-1].status == "succeeded"


# -- store, retention, versions ---------------------------------------------------------
@create_workflow("op-unstored", store=False)
def op_unstored(inp: Product) -> WorkflowResponse:
    return WorkflowResponse(create_step("op-u", lambda i, c: "x")(inp))


async def test_store_false_drops_the_details_but_keeps_deduping(hub: Hub) -> None:
    run = await op_unstored(hub).run(input={"sku": "U"}, transaction_id="unstored")
    assert run.result == "x"

    async def forgotten() -> bool:
        [row] = await hub.store.get_by_transaction("unstored", None)
        return row["input"] is None and row["steps"] == {} and row["result"] is None

    deadline = asyncio.get_running_loop().time() + 10
    while not await forgotten():
        assert asyncio.get_running_loop().time() < deadline, "details never dropped"
        await asyncio.sleep(0.02)
    # a redelivered event or a retried request inside the dedupe window runs nothing again
    again = await op_unstored(hub).run(input={"sku": "U"}, transaction_id="unstored")
    assert again.id == run.id and again.status == "succeeded"
    [row] = await hub.store.get_by_transaction("unstored", None)
    window = (row["retain_until"] - row["finished_at"]).total_seconds()
    assert abs(window - hub.settings.dedupe_window_s) < 60


@create_workflow("op-retained", retention_time=0.0)
def op_retained(inp: Product) -> WorkflowResponse:
    return WorkflowResponse(create_step("op-r", lambda i, c: "r")(inp))


async def test_purge_removes_only_finished_executions_past_retention(hub: Hub) -> None:
    # medusajs/medusa#11175: retention cleanup deleted runs that were still going
    finished = await op_retained(hub).run(input={"sku": "R"})
    live = await op_manual(hub).run(input={"sku": "L"})  # waiting for a manual retry
    assert live.status == "waiting"
    purged = await hub.purge()
    assert purged == 1
    assert await hub.store.get(uuid.UUID(finished.id)) is None
    assert (await hub.get_run(live.id)).status == "waiting"


def _refund_fails(_inp: Any, _ctx: Any) -> None:
    raise PermanentStepError("the payment provider refused the refund")


def _fail_permanently(_inp: Any, _ctx: Any) -> None:
    raise PermanentStepError("out of stock")


@create_workflow("op-retained-needs-human", retention_time=0.0)
def op_retained_needs_human(inp: Product) -> WorkflowResponse:
    create_step("op-rh-charge", lambda i, c: "charged", _refund_fails)(inp)
    create_step("op-rh-ship", _fail_permanently)(inp)
    return WorkflowResponse(None)


async def test_purge_never_deletes_an_execution_that_needs_a_human(hub: Hub) -> None:
    # a failed compensation is the only record of a refund that never happened
    stuck = await op_retained_needs_human(hub).run(input={"sku": "H"}, raise_on_error=False)
    assert stuck.status == "compensation_failed"
    ended_well = await op_retained(hub).run(input={"sku": "W"})
    assert await hub.purge() == 1
    assert await hub.store.get(uuid.UUID(ended_well.id)) is None
    assert (await hub.get_run(stuck.id)).status == "compensation_failed"


async def test_execution_of_an_unregistered_version_is_parked(dsn: str, schema: str) -> None:
    @create_workflow("op-versioned")
    def v1(inp: Product) -> WorkflowResponse:
        return WorkflowResponse(create_step("op-v1", lambda i, c: "v1")(inp))

    @create_workflow("op-versioned")
    def v2(inp: Product) -> WorkflowResponse:
        return WorkflowResponse(create_step("op-v2", lambda i, c: "v2")(inp))

    old, new = Registry(), Registry()
    old.add(v1.spec)
    new.add(v2.spec)
    fast = {"lease_seconds": 2.0, "poll_interval": 0.2}
    async with Hub(dsn, schema=schema, execute=False, registry=old) as starter:
        run = await starter.start("op-versioned", {"sku": "V"}, wait=False,
                                  transaction_id="ver")
    async with Hub(dsn, schema=schema, registry=new, **fast) as upgraded:
        for _ in range(100):
            parked = await upgraded.get_run("ver")
            if parked.parked:
                break
            await asyncio.sleep(0.05)
    assert parked.parked and f"version {v1.version} is not registered" in parked.parked
    assert parked.status == "pending", "never run on a different graph"
    async with Hub(dsn, schema=schema, registry=old, **fast) as with_v1:
        await with_v1.resume("ver")
        done = await with_v1.wait(run.id, timeout=10)
    assert done.result == "v1" and done.parked is None


async def test_compensate_on_request_and_retry_of_a_failed_compensation(hub: Hub) -> None:
    await op_cancellable(hub).run(input={"sku": "R1"}, transaction_id="comp-req", wait=False)
    for _ in range(100):
        if (await hub.get_run("comp-req")).steps["op-c-hang"].state == "invoking":
            break
        await asyncio.sleep(0.02)
    done = await hub.compensate("comp-req", reason="operator said so")
    assert done.status == "compensated" and done.error
    assert done.error["message"] == "operator said so"
    with pytest.raises(InvalidTransition, match="nothing to retry"):
        await hub.retry("comp-req")


async def test_retry_re_runs_a_step_left_for_a_manual_retry(hub: Hub) -> None:
    run = await op_manual(hub).run(input={"sku": "RM"}, transaction_id="manual-2")
    assert run.status == "waiting"
    await hub.retry("manual-2")
    assert (await hub.wait("manual-2", timeout=10)).status == "succeeded"


async def test_purge_keeps_every_growing_table_bounded(hub: Hub) -> None:
    s = hub.store.schema
    pool = hub.store.pool
    await pool.execute(
        f"INSERT INTO {s}.lock (key, owner, expires_at) VALUES "
        "('gone', 'w1', now() - interval '2 hours'), ('held', 'w2', now() + interval '1 hour'),"
        "('just-expired', 'w3', now() - interval '1 minute'), ('forever', 'w4', NULL)")
    await pool.execute(
        f"INSERT INTO {s}.dlq_redrive (dlq_topic, partition, \"offset\", target, redriven_by, "
        "redriven_at) VALUES ('d', 0, 1, 't', 'ops', now() - interval '31 days'), "
        "('d', 0, 2, 't', 'ops', now() - interval '1 day')")
    await pool.execute(
        f"INSERT INTO {s}.audit (at, actor_name, via, action) VALUES "
        "(now() - interval '401 days', 'ops', 'cli', 'retry'), (now(), 'ops', 'cli', 'cancel')")
    await hub.purge()
    assert sorted(await pool.fetchval(f"SELECT array_agg(key) FROM {s}.lock")) == [
        "forever", "held", "just-expired"]
    assert await pool.fetchval(f'SELECT array_agg("offset") FROM {s}.dlq_redrive') == [2]
    assert await pool.fetchval(f"SELECT array_agg(action) FROM {s}.audit") == ["cancel"]
