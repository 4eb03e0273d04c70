"""Async steps wait for the outside, durably; outcomes may come from another process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime

import pytest

from hub import Hub, InvalidTransition
from hub.store.store import CheckpointRow
from tests.conftest import worker_env
from tests.workflows.async_flows import tw_approval, tw_approval_deadline


async def test_async_step_leaves_the_run_waiting_and_releases_the_lease(hub: Hub) -> None:
    run = await tw_approval(hub).run(input={"id": "a1"}, transaction_id="approval:a1")
    assert run.status == "waiting"
    assert run.steps["ask-approval"].state == "waiting"
    row = await hub.store.get(__import__("uuid").UUID(run.id))
    assert row is not None and row["lease_owner"] is None and row["due_at"] is None


async def test_async_step_completed_from_another_process(hub: Hub, dsn: str,
                                                         schema: str) -> None:
    run = await tw_approval(hub).run(input={"id": "a2"}, transaction_id="approval:a2")
    assert run.status == "waiting"
    script = textwrap.dedent("""
        import asyncio
        from hub import Hub
        import tests.workflows.async_flows  # registers the definitions
        async def main():
            async with Hub(execute=False) as hub:
                await hub.set_step_success("approval:a2", "ask-approval", {"by": "alice"})
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=worker_env(dsn, schema, "tests.workflows.async_flows"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    done = await hub.wait("approval:a2", timeout=10)
    assert done.status == "succeeded"
    assert done.result == {"approved_by": "alice"}


async def test_async_step_failure_compensates(hub: Hub) -> None:
    run = await tw_approval(hub).run(input={"id": "a3"}, transaction_id="approval:a3")
    await hub.set_step_failure("approval:a3", "ask-approval", "rejected by finance")
    done = await hub.wait(run.id, timeout=10)
    assert done.status == "compensated"
    assert done.error and done.error["message"] == "rejected by finance"


async def test_async_step_times_out_on_a_durable_timer(hub: Hub) -> None:
    run = await tw_approval_deadline(hub).run(input={"id": "a4"}, raise_on_error=False)
    assert run.status == "waiting"
    done = await hub.wait(run.id, timeout=10)
    assert done.status == "compensated"
    assert done.steps["ask-with-deadline"].state == "timeout"


async def test_completing_a_step_that_is_not_waiting_is_refused(hub: Hub) -> None:
    run = await tw_approval(hub).run(input={"id": "a5"}, transaction_id="approval:a5")
    with pytest.raises(InvalidTransition, match="has no step 'nope'"):
        await hub.set_step_success("approval:a5", "nope")
    with pytest.raises(InvalidTransition, match="tw-after-approval.*not_started"):
        await hub.set_step_success("approval:a5", "tw-after-approval")
    await hub.set_step_success(run.transaction_id, "ask-approval", {"by": "bob"})
    await hub.wait(run.id, timeout=10)
    with pytest.raises(InvalidTransition, match="is done"):
        await hub.set_step_success("approval:a5", "ask-approval", {"by": "again"})


async def test_a_signal_committed_while_the_holder_releases_is_never_lost(hub: Hub) -> None:
    """The holder decided to let go (it read no signal) while an outcome committed: the
    signal saw a held lease, so it made nothing due and only notified the holder, which was
    already leaving. The release must still leave the execution due, or the step waits for
    an outcome it already has, for ever."""
    run = await tw_approval(hub).run(input={"id": "a6"}, transaction_id="approval:a6")
    assert run.status == "waiting"
    execution_id = uuid.UUID(run.id)
    schema = hub.store.schema
    epoch = await hub.store.pool.fetchval(  # a worker holds it again (as after a claim)
        f"UPDATE {schema}.execution SET lease_owner = 'w-elsewhere', epoch = epoch + 1, "
        "lease_until = now() + interval '60 s' WHERE id = $1 RETURNING epoch", execution_id)
    assert await hub.store.add_signal(execution_id, "ask-approval", "success",
                                      json.dumps({"by": "alice"}), None, None)
    row = await hub.store.get(execution_id)
    assert row is not None and (row["due_at"] is None or row["due_at"] > datetime.now(UTC))
    # ... and that worker, which read its signals before this one committed, releases
    written = await hub.store.checkpoint_batch([CheckpointRow(
        id=execution_id, epoch=epoch, status="waiting", phase="forward", steps="{}",
        result=None, error=None, hold=False, due_s=None, finished=False, retain_s=None,
        events=None, seen=0)])
    assert written == {execution_id}
    await hub.store.notify(json.dumps({"due": True}))  # as any later notification would
    done = await hub.wait(run.id, timeout=20)
    assert done.status == "succeeded" and done.result == {"approved_by": "alice"}


async def test_a_release_after_applying_the_signals_leaves_nothing_due(hub: Hub) -> None:
    run = await tw_approval(hub).run(input={"id": "a7"}, transaction_id="approval:a7")
    execution_id = uuid.UUID(run.id)
    schema = hub.store.schema
    epoch = await hub.store.pool.fetchval(
        f"UPDATE {schema}.execution SET lease_owner = 'w-elsewhere', epoch = epoch + 1, "
        "lease_until = now() + interval '60 s' WHERE id = $1 RETURNING epoch", execution_id)
    await hub.store.add_signal(execution_id, "ask-approval", "retry", None, None, None)
    last = await hub.store.pool.fetchval(
        f"SELECT last_signal FROM {schema}.execution WHERE id = $1", execution_id)
    await hub.store.checkpoint_batch([CheckpointRow(
        id=execution_id, epoch=epoch, status="waiting", phase="forward", steps="{}",
        result=None, error=None, hold=False, due_s=None, finished=False, retain_s=None,
        events=None, seen=last)])
    row = await hub.store.get(execution_id)
    assert row is not None and row["due_at"] is None, "an applied signal wakes nothing again"
