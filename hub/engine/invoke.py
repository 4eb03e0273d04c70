"""Running step code: one attempt of a step (or of its compensation) -> one core event.

What the code returned or raised is turned into data here, once: the output made JSON and
bounded, the failure built from fields with its retryability and any retry delay the error
carries (``retry_after``), so the transition core never sees an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any

from pydantic import ValidationError

from hub import tracing
from hub.engine.context import Container, StepContext
from hub.engine.execution import Execution
from hub.engine.graph import StepNode
from hub.engine.payload import Unserializable, encode, to_json
from hub.engine.response import StepResponse
from hub.engine.state import Failure
from hub.engine.transitions import (
    CompensationFailed,
    CompensationSucceeded,
    Event,
    Outbox,
    StepFailed,
    StepSkipped,
    StepSucceeded,
    StepTimedOut,
)
from hub.engine.values import ResolveError
from hub.errors import PayloadTooLarge
from hub.redaction import Redaction
from hub.settings import HubSettings


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


class Invoker:
    """Builds step contexts and runs step code under the step's timeout."""

    def __init__(self, settings: HubSettings, container: Container) -> None:
        self.settings = settings
        self.container = container
        self._redaction = Redaction(settings.redact_fields)

    def context(self, ex: Execution, node: StepNode, attempt: int,
                compensating: bool) -> StepContext:
        unrecorded = compensating and ex.state.step(node.id).unrecorded
        step_input = None
        if unrecorded:
            with contextlib.suppress(ResolveError):
                step_input = ex.values().resolve(node.input)
        return self.item_context(ex, node, attempt, compensating=compensating,
                                 output_recorded=not unrecorded, step_input=step_input)

    def item_context(self, ex: Execution, node: StepNode, attempt: int, *, compensating: bool,
                     output_recorded: bool = True, step_input: Any = None) -> StepContext:
        """The context of one attempt of ``node`` (a step, or a fan-out item under its own
        id), with what its compensation is told."""
        error = ex.state.error
        return StepContext.make(
            execution_id=ex.sid, transaction_id=ex.transaction_id, workflow=ex.workflow,
            step=node.id, attempt=attempt, container=self.container,
            compensating=compensating, trigger=ex.trigger,
            failure=error.to_json() if compensating and error is not None else None,
            output_recorded=output_recorded, step_input=step_input,
            max_event_bytes=self.settings.max_event_bytes,
            max_calls=self.settings.max_calls_per_step, redaction=self._redaction,
        )

    async def _call(self, fn: Any, value: Any, ctx: StepContext, timeout: float | None) -> Any:
        with tracing.step_attempt(ctx) as span:  # one span per attempt, when tracing is on
            result = fn(value, ctx)
            if inspect.isawaitable(result):
                if timeout is None:
                    result = await result
                else:
                    async with asyncio.timeout(timeout):
                        result = await result
            if isinstance(result, StepResponse) and result.kind == "permanent_failure":
                tracing.mark_failed(span, result.message)
            return result

    def _outbox(self, node: StepNode, ctx: StepContext) -> tuple[Outbox, ...]:
        return tuple(
            {**o, "payload": to_json(o["payload"], f"event emitted by step {node.id!r}")}
            for o in ctx.outbox
        )

    async def invoke(self, ex: Execution, node: StepNode, ctx: StepContext) -> Event:
        attempt = ctx.attempt
        try:
            value = ex.values().resolve(node.input)
        except ResolveError as exc:
            return StepFailed(node.id, Failure.of(node.id, str(exc), attempt), retryable=False)
        return await self.invoke_value(node, value, ctx)

    async def invoke_value(self, node: StepNode, value: Any, ctx: StepContext) -> Event:
        """One invocation of ``node`` with its input resolved (a step's, or an item's)."""
        attempt = ctx.attempt
        try:
            if node.input_model is not None:
                value = node.input_model.model_validate(value)
        except ValidationError as exc:
            return StepFailed(node.id, Failure.of(
                node.id, f"input of step {node.id!r} does not validate: {exc}", attempt),
                retryable=False)
        try:
            result = await self._call(node.invoke, value, ctx, node.options.timeout)
        except TimeoutError as exc:
            message = str(exc) or f"step {node.id!r} timed out after {node.options.timeout}s"
            return StepTimedOut(node.id, Failure.of(node.id, message, attempt,
                                                    kind="StepTimeout"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retryable = bool(getattr(exc, "retryable", True))
            return StepFailed(node.id, Failure.of(node.id, exc, attempt, retryable=retryable),
                              retryable=retryable, retry_after=_retry_after(exc))
        if isinstance(result, StepResponse):
            if result.kind == "skip":
                return StepSkipped(node.id)
            if result.kind == "permanent_failure":
                return StepFailed(node.id, Failure.of(node.id, result.message, attempt),
                                  retryable=False)
            output, comp_input = result.output, result.compensate_input
        else:
            output, comp_input = result, result
        limit = self.settings.max_payload_bytes
        try:
            out_json = to_json(output, f"output of step {node.id!r}")
            comp_json = out_json if comp_input is output else to_json(
                comp_input, f"compensate_input of step {node.id!r}")
            encode(out_json, f"output of step {node.id!r}", limit)
            if comp_json is not out_json:
                encode(comp_json, f"compensate_input of step {node.id!r}", limit)
            outbox = self._outbox(node, ctx)
        except (Unserializable, PayloadTooLarge) as exc:
            return StepFailed(node.id, Failure.of(node.id, exc, attempt), retryable=False)
        return StepSucceeded(node.id, out_json, comp_json, outbox)

    async def compensate(self, ex: Execution, node: StepNode, ctx: StepContext) -> Event:
        return await self.compensate_value(node, ex.state.step(node.id).compensate_input, ctx)

    async def compensate_value(self, node: StepNode, compensate_input: Any,
                               ctx: StepContext) -> Event:
        """One compensation of ``node`` (a step's, or an item's) with its input."""
        assert node.compensate is not None
        try:
            await self._call(node.compensate, compensate_input, ctx, node.options.timeout)
            outbox = self._outbox(node, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retryable = bool(getattr(exc, "retryable", True))
            return CompensationFailed(node.id, Failure.of(node.id, exc, ctx.attempt),
                                      retryable=retryable, retry_after=_retry_after(exc))
        return CompensationSucceeded(node.id, outbox)
