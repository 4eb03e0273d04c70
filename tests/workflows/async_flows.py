"""Workflows shared by tests that run them in worker subprocesses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub import StepContext, StepResponse, WorkflowResponse, create_step, create_workflow


class Req(BaseModel):
    id: str


async def _ask(inp: Req, ctx: StepContext) -> StepResponse[Any]:
    return StepResponse({"asked": inp.id})


ask_approval = create_step("ask-approval", _ask, is_async=True)
ask_with_deadline = create_step("ask-with-deadline", _ask, is_async=True, timeout=1.0)


@create_workflow("tw-approval")
def tw_approval(inp: Req) -> WorkflowResponse:
    approval = ask_approval(inp)
    done = create_step("tw-after-approval", lambda a, c: {"approved_by": a["by"]})(approval)
    return WorkflowResponse(done)


@create_workflow("tw-approval-deadline")
def tw_approval_deadline(inp: Req) -> WorkflowResponse:
    return WorkflowResponse(ask_with_deadline(inp))


class Signup(BaseModel):
    email: str
    password: str
    payment: dict[str, Any]


@create_workflow("tw-secretive")
def tw_secretive(inp: Signup) -> WorkflowResponse:
    """Inputs and outputs that hold secrets: what every front end must redact."""
    issued = create_step("tw-issue-token", lambda s, c: {
        "accessToken": "tok-live-123", "user": s["email"]})(inp)
    return WorkflowResponse(issued)
