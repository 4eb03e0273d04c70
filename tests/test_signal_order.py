"""The signals of one execution commit in id order.

A worker applies the signals it reads and, on letting the lease go, compares the execution's
last stamp with the highest id it applied. If an id drawn first could commit after a higher
one was read, that signal would sit unapplied behind the stamp, the execution never due
again. So a signal (an outside outcome, a child's end) locks its execution's row before it
draws its id. Each test holds that lock, lets a signal queue behind it, records another
execution's signal meanwhile, and checks the queued one got the later id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import asyncpg

from hub import Hub
from tests.support.polling import until
from tests.workflows.async_flows import tw_approval
from tests.workflows.fanout_flows import Ledger, fx_parent_waits


async def _queued_behind(dsn: str, schema: str, held: uuid.UUID, signal: Awaitable[object],
                         meanwhile: Awaitable[object]) -> asyncio.Task[object]:
    """Hold ``held``'s row, start ``signal`` (it waits for the row), run ``meanwhile``, let
    go; the task of ``signal``, done."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"SELECT 1 FROM {schema}.execution WHERE id = $1 FOR UPDATE", held)
        queued: asyncio.Task[object] = asyncio.ensure_future(signal)

        async def waits_for_the_row() -> bool:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"))

        await until(waits_for_the_row, 30, every=0.01, what="the signal waits for the row")
        await meanwhile
        await tx.rollback()
        await asyncio.wait_for(queued, 30)
        return queued
    finally:
        await conn.close()


async def _stamp(hub: Hub, execution_id: str) -> int:
    row = await hub.store.get(uuid.UUID(execution_id))
    assert row is not None
    return int(row["last_signal"])


async def test_an_outcome_draws_its_id_once_it_holds_the_execution_row(
        hub: Hub, dsn: str, schema: str) -> None:
    first = await tw_approval(hub).run(input={"id": "o1"}, transaction_id="approval:o1")
    second = await tw_approval(hub).run(input={"id": "o2"}, transaction_id="approval:o2")
    assert first.status == second.status == "waiting"
    await _queued_behind(
        dsn, schema, uuid.UUID(first.id),
        hub.set_step_success(first.id, "ask-approval", {"by": "ann"}),
        hub.set_step_success(second.id, "ask-approval", {"by": "bob"}))
    assert await _stamp(hub, first.id) > await _stamp(hub, second.id), (
        "the outcome that waited for its execution's row drew the later id")
    for run in (first, second):
        assert (await hub.wait(run.id, timeout=30)).status == "succeeded"


async def test_a_child_s_end_draws_its_id_once_it_holds_the_parent_row(
        hub: Hub, dsn: str, schema: str) -> None:
    hub.container.register("ledger", Ledger())
    parent = await fx_parent_waits(hub).run(input={})
    other = await tw_approval(hub).run(input={"id": "o3"}, transaction_id="approval:o3")
    assert parent.status == other.status == "waiting"
    (child,) = await hub.store.children_of(uuid.UUID(parent.id))
    child_id = str(child["id"])
    await _queued_behind(
        dsn, schema, uuid.UUID(parent.id),
        hub.set_step_success(child_id, "fx-wait", {"ok": True}),  # the child ends, then
        # its end queues behind the lock in the statement that finishes it
        _until_child_finishing(hub, dsn, child_id, other.id))
    assert await _stamp(hub, parent.id) > await _stamp(hub, other.id)
    done = await hub.wait(parent.id, timeout=30)
    assert done.status == "succeeded", done.error


async def _until_child_finishing(hub: Hub, dsn: str, child_id: str, other_id: str) -> None:
    """The child's finishing statement waits for the parent's row (a second lock waiter:
    the first is the signal to the child, which does not wait); then another execution's
    signal draws an id."""
    conn = await asyncpg.connect(dsn)
    try:
        async def finishing() -> bool:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND query LIKE '%unnest%'"))

        await until(finishing, 30, every=0.01, what="the child's end waits for the parent")
    finally:
        await conn.close()
    await hub.set_step_success(other_id, "ask-approval", {"by": "cy"})
