"""Async steps wait for the outside, durably; outcomes may come from another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from hub import Hub, InvalidTransition
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
