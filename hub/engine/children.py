"""Child executions: a step that starts another workflow as an execution of its own.

The child has its own id, console page and lineage (the parent's execution id and step, in
its trigger and in ``execution.parent_id``), instead of its steps being inlined. Its start
uses the parent step's idempotency key as its transaction id, with ``once``: a recovered or
re-run parent step finds the child it already started, never a second one. The parent step
is asynchronous: it waits for the child's end without holding a lease, and the statement
that finishes the child also signals the parent (a trigger of migration 0013), so the two
cannot drift apart on a crash. Undoing the parent step cancels a live child, or reopens a
succeeded one in its compensating phase, and waits for it to be undone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from hub.engine.context import StepContext
from hub.engine.response import StepResponse
from hub.engine.run import RunStatus
from hub.errors import ExecutionNotFound, PermanentStepError, StepError

PARENT_ID = "parent_execution_id"
"""Trigger key: the parent execution's id (START_BATCH copies it to ``parent_id``)."""
PARENT_STEP = "parent_step"
"""Trigger key: the parent's step that started the child."""

StepFn = Callable[[Any, StepContext], Coroutine[Any, Any, Any]]


async def start_child(workflow: str, value: Any, ctx: StepContext) -> str:
    """Start (or find, on a re-run) the child of this step; its id."""
    hub = ctx.container.resolve("hub")
    trigger = {"kind": "child", PARENT_ID: ctx.execution_id, PARENT_STEP: ctx.step,
               "parent_workflow": ctx.workflow}
    run = await hub.start(workflow, value, transaction_id=ctx.forward().idempotency_key,
                          wait=False, once=True, trigger=trigger)
    return str(run.id)


def starts_child(workflow: str) -> StepFn:
    """The invoke of a ``run_child`` step: start the child, then wait (asynchronously) for
    the signal its end sends."""

    async def invoke(value: Any, ctx: StepContext) -> StepResponse[Any]:
        child_id = await start_child(workflow, value, ctx)
        return StepResponse({"child_id": child_id, "workflow": workflow})

    return invoke


def runs_child(workflow: str) -> StepFn:
    """The invoke of one item of a map over a workflow: start the child and wait for its
    end here (an item holds its map's lease, as any step does while it runs)."""

    async def invoke(value: Any, ctx: StepContext) -> Any:
        child_id = await start_child(workflow, value, ctx)
        hub = ctx.container.resolve("hub")
        run = await hub.wait(child_id)
        if run.status != RunStatus.SUCCEEDED:
            message = (run.error or {}).get("message") or "no error recorded"
            raise PermanentStepError(
                f"child execution {child_id} ({workflow}) ended {run.status}: {message}")
        return run.result

    return invoke


def undoes_child(workflow: str) -> StepFn:
    """The compensation of a child step: the child is stopped or undone, and waited for."""

    async def compensate(_value: Any, ctx: StepContext) -> None:
        hub = ctx.container.resolve("hub")
        try:
            run = await hub.get_run(ctx.forward().idempotency_key, workflow=workflow)
        except ExecutionNotFound:
            return  # the start never committed: nothing to undo
        reason = f"parent execution {ctx.execution_id} rolled back (step {ctx.step!r})"
        if not run.finished:
            await hub.cancel(run.id, workflow=workflow, reason=reason, wait=False)
        elif run.status == RunStatus.SUCCEEDED:
            error = {"step": None, "message": reason, "type": "ParentCompensating"}
            if await hub.store.reopen_for_compensation(uuid.UUID(run.id), json.dumps(error)):
                await hub.store.notify(json.dumps({"due": True}))
        run = await hub.wait(run.id)
        if run.status == RunStatus.COMPENSATION_FAILED:
            raise StepError(f"child execution {run.id} ({workflow}) could not be undone: "
                            "its compensation failed; repair it and retry it, then this step")
        if run.status == RunStatus.SUCCEEDED:  # reopened by someone else meanwhile: again
            raise StepError(f"child execution {run.id} ({workflow}) is still succeeded")

    return compensate
