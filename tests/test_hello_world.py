"""The README's tutorial, end to end."""

from __future__ import annotations

from hub import Hub, RunStatus
from workflows.hello_world import hello_world


async def test_hello_world_runs_end_to_end(hub: Hub) -> None:
    run = await hello_world(hub).run(input={"name": "John"})
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"message": "Hello John from step two!"}
    assert [s.state for s in run.steps.values()] == ["done", "done"]


async def test_stored_run_matches_returned_run(hub: Hub) -> None:
    run = await hello_world(hub).run(input={"name": "Ada"}, transaction_id="tx-ada")
    stored = await hub.get_run("tx-ada")
    assert stored.id == run.id
    assert stored.status == "succeeded"
    assert stored.result == {"message": "Hello Ada from step two!"}
    assert stored.steps["step-1"].output == "Hello from step one!"
    assert stored.steps["step-2"].attempts == 1
