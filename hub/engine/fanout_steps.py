"""The fan-out runner's seam onto the transition core: items run through the ``Invoker``,
their core events read as the runner's outcomes, and the map's outcome handed back to the
core as one event, so the core sees a map step like any other step."""

from __future__ import annotations

from typing import Any

from hub.engine.context import StepContext
from hub.engine.execution import Execution
from hub.engine.graph import StepNode
from hub.engine.invoke import Invoker
from hub.engine.outcome import Outcome
from hub.engine.state import Failure
from hub.engine.transitions import (
    CompensationFailed,
    CompensationSucceeded,
    Event,
    StepFailed,
    StepSkipped,
    StepSucceeded,
    StepTimedOut,
)
from hub.engine.values import ResolveError
from hub.types import JSON


def outcome_of(event: Event) -> Outcome:
    """An item's core event as the runner's outcome."""
    if isinstance(event, StepSucceeded):
        return Outcome("ok", event.output, event.compensate_input,
                       outbox=tuple(dict(o) for o in event.outbox))
    if isinstance(event, CompensationSucceeded):
        return Outcome("ok", outbox=tuple(dict(o) for o in event.outbox))
    if isinstance(event, StepSkipped):
        return Outcome("skip")
    if isinstance(event, StepTimedOut):
        return Outcome("timeout", error=event.failure.to_json())
    if isinstance(event, StepFailed | CompensationFailed):
        return Outcome("retryable" if event.retryable else "permanent",
                       error=event.failure.to_json(), retry_after=event.retry_after)
    raise TypeError(f"an item's attempt cannot come to {type(event).__name__}")


def event_of(node: StepNode, outcome: Outcome, compensating: bool) -> Event:
    """The map's outcome (its run, or its compensation) as one core event."""
    if outcome.kind == "ok":
        if compensating:
            return CompensationSucceeded(node.id, outcome.outbox)
        return StepSucceeded(node.id, outcome.output, outcome.compensate_input, outcome.outbox)
    error = dict(outcome.error or {"message": "unknown failure"})
    failure = Failure(
        message=str(error.pop("message", "")), type=str(error.pop("type", "StepFailure")),
        step=node.id, attempt=error.pop("attempt", 1), traceback=error.pop("traceback", None),
        retryable=False, compensation=compensating,
        extra={k: v for k, v in error.items() if k not in ("step", "retryable",
                                                           "compensation")})
    if compensating:
        return CompensationFailed(node.id, failure, retryable=False)
    if outcome.yielded:
        return StepFailed(node.id, failure, retryable=True, retry_after=outcome.retry_after,
                          yielded=True)
    return StepFailed(node.id, failure, retryable=False)


class CoreItemSteps:
    """``ItemSteps`` over the core's ``Invoker``."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker

    def map_input(self, ex: Execution, node: StepNode) -> tuple[JSON, str | None]:
        try:
            return ex.values().resolve(node.input), None
        except ResolveError as exc:
            return None, str(exc)

    def item_ctx(self, ex: Execution, node: StepNode, attempt: int, *, compensating: bool,
                 output_recorded: bool = True, step_input: Any = None) -> StepContext:
        return self._invoker.item_context(ex, node, attempt, compensating=compensating,
                                          output_recorded=output_recorded,
                                          step_input=step_input)

    async def invoke_value(self, node: StepNode, value: Any, ctx: StepContext,
                           attempt: int) -> Outcome:
        return outcome_of(await self._invoker.invoke_value(node, value, ctx))

    async def compensate_value(self, node: StepNode, compensate_input: Any,
                               ctx: StepContext) -> Outcome:
        return outcome_of(await self._invoker.compensate_value(node, compensate_input, ctx))
