"""A step that looks its effect up, waits, then makes it: the natural-key idempotency many
real APIs leave to the caller. Safe only while no two workers run it at once."""

from __future__ import annotations

import asyncio
import os

import httpx
from pydantic import BaseModel

from hub import StepContext, StepResponse, WorkflowResponse, create_step, create_workflow


class Key(BaseModel):
    key: str


@create_step("look-then-create")
async def look_then_create(inp: Key, ctx: StepContext) -> StepResponse[str]:
    async with httpx.AsyncClient(base_url=os.environ["EFFECT_URL"]) as client:
        if (await client.get(f"/effects/{inp.key}")).status_code == 200:
            return StepResponse("found")
        await asyncio.sleep(float(os.environ.get("EFFECT_GAP_S", "8")))
        (await client.post(f"/effects/{inp.key}")).raise_for_status()
    return StepResponse("created")


@create_workflow("fenced-effect")
def fenced_effect(inp: Key) -> WorkflowResponse:
    return WorkflowResponse(look_then_create(inp))
