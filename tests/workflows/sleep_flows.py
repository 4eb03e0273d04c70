"""Workflows with durable sleeps: a step, a sleep, a step that says which worker ran it."""

from __future__ import annotations

import os
from typing import Any

from hub import StepContext, WorkflowResponse, create_step, create_workflow, sleep, sleep_until

UNDONE: list[str] = []


def _mark(inp: Any, ctx: StepContext) -> dict[str, Any]:
    return {"step": ctx.step, "worker": os.environ.get("HUB_WORKER_ID", "in-process")}


def _undo(inp: Any, ctx: StepContext) -> None:
    UNDONE.append(ctx.transaction_id)


@create_workflow("sleep-between")
def sleep_between(inp: dict[str, Any]) -> WorkflowResponse:
    create_step("sl-before", _mark, _undo)(inp)
    sleep(inp["seconds"])
    return WorkflowResponse(create_step("sl-after", _mark)(inp))


@create_workflow("sleep-until-then")
def sleep_until_then(inp: dict[str, Any]) -> WorkflowResponse:
    sleep_until(inp["at"], name="sl-until")
    return WorkflowResponse(create_step("sl-then", _mark)(inp))
