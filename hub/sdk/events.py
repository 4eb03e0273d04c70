"""``emit_event_step``: publish an event from a workflow through the transactional outbox."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub.engine.context import StepContext
from hub.engine.response import StepResponse
from hub.sdk.step import create_step


class EmitInput(BaseModel):
    topic: str
    event: Any
    key: str | None = None
    headers: dict[str, str] = {}


async def _emit(inp: EmitInput, ctx: StepContext) -> StepResponse[Any]:
    event_id = ctx.emit(inp.topic, inp.event, key=inp.key, headers=inp.headers)
    return StepResponse({"event_id": event_id, "topic": inp.topic})


emit_event_step = create_step("emit-event", _emit)
"""``emit_event_step({"topic": "order.confirmed", "event": {...}, "key": order.id})``: the
event is written with the step's checkpoint and relayed to Kafka once committed. Use
``emit_event_step.config(name=...)`` to emit twice in one workflow."""
