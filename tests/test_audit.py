"""Operator actions are audited in the transaction of their effect: both or neither."""

from __future__ import annotations

import asyncpg
import pytest

from hub import Hub, InvalidTransition
from hub.api import HubService
from hub.api.service import Actor
from tests.workflows.async_flows import tw_approval  # noqa: F401  (registers tw-approval)

ALICE = Actor(name="ops-alice", via="console", id="key-1")


async def _waiting(hub: Hub, key: str) -> str:
    run = await hub.start("tw-approval", {"id": key}, transaction_id=key, wait=True)
    assert run.status == "waiting"
    return run.id


async def _audit_rows(dsn: str, schema: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(f"SELECT actor_name, via, action, target, detail::text "
                                f"FROM {schema}.audit ORDER BY id")
    finally:
        await conn.close()


async def test_an_accepted_action_is_recorded_once_with_who_and_how(hub: Hub, dsn: str,
                                                                    schema: str) -> None:
    service = HubService(hub)
    run_id = await _waiting(hub, "a1")
    await service.complete_step(run_id, "ask-approval", success=True, output={"by": "bob"},
                                actor=ALICE)
    assert (await hub.wait(run_id, timeout=30)).status == "succeeded"
    rows = await _audit_rows(dsn, schema)
    assert [(r["actor_name"], r["via"], r["action"], r["target"]) for r in rows] == [
        ("ops-alice", "console", "complete_step", "ask-approval")]
    assert [a.action for a in (await service.execution_view(run_id)).audit] == [
        "complete_step"]


async def test_a_refused_action_records_nothing(hub: Hub, dsn: str, schema: str) -> None:
    service = HubService(hub)
    run_id = await _waiting(hub, "a2")
    await service.stop(run_id, "cancel", reason="duplicate", wait=True, actor=ALICE)
    with pytest.raises(InvalidTransition):
        await service.stop(run_id, "cancel", reason="again", wait=False, actor=ALICE)
    rows = await _audit_rows(dsn, schema)
    assert [(r["action"], r["detail"]) for r in rows] == [("cancel", '{"reason": "duplicate"}')]


async def test_an_action_whose_audit_cannot_be_written_is_not_taken(hub: Hub, dsn: str,
                                                                    schema: str) -> None:
    service = HubService(hub)
    run_id = await _waiting(hub, "a3")
    conn = await asyncpg.connect(dsn)
    try:
        # the audit refuses this actor's rows: the signal must not land without its audit
        await conn.execute(f"ALTER TABLE {schema}.audit ADD CONSTRAINT no_mallory "
                           "CHECK (actor_name <> 'mallory')")
        with pytest.raises(asyncpg.CheckViolationError):
            await service.stop(run_id, "cancel", reason="x", wait=False,
                               actor=Actor(name="mallory", via="api"))
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.signal") == 0
    finally:
        await conn.close()
    run = await hub.get_run(run_id)
    assert run.status == "waiting", "the cancel was not taken"
    assert await _audit_rows(dsn, schema) == []
