"""Workflows built from a *shape*, for the property tests in ``tests/test_properties.py``.

A shape is a sequence of stages; a stage is one step or a ``parallelize(...)`` of 2-3 steps.
Each step is described by a :class:`StepSpec` (compensation, retries, transient failures,
whether it fails for good, how long it takes). The composer runs once, at definition time, so
a new workflow (with a unique name) is defined for every shape. Every step function writes
what it does to a :class:`Journal` the test then checks the run against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import uuid4

from hub import (
    PermanentStepError,
    StepContext,
    StepError,
    StepResponse,
    TransientConnectorError,
    WorkflowDefinition,
    WorkflowResponse,
    create_step,
    create_workflow,
    parallelize,
)

Compensation = Literal["none", "compensate", "no_compensation"]
"""``none``: no compensation function; ``no_compensation``: one, disabled by the option."""

FailMode = Literal["raise", "response"]
"""How a failing step fails for good: ``PermanentStepError`` or ``permanent_failure(...)``."""

TransientKind = Literal["step_error", "connector_error", "runtime_error"]


@dataclass(frozen=True)
class StepSpec:
    id: str
    compensation: Compensation = "compensate"
    max_retries: int = 0
    transient: int = 0
    """Retryable failures before the step succeeds (or fails for good); <= ``max_retries``."""
    transient_kind: TransientKind = "step_error"
    sync: bool = False
    pauses: tuple[float, ...] = ()
    """Awaited before the step's outcome (async steps only): 0.0 yields once, else sleeps."""
    fail: FailMode | None = None

    @property
    def compensable(self) -> bool:
        return self.compensation == "compensate"


@dataclass(frozen=True)
class GraphShape:
    stages: tuple[tuple[StepSpec, ...], ...]

    @property
    def steps(self) -> list[StepSpec]:
        return [s for stage in self.stages for s in stage]

    @property
    def failing(self) -> StepSpec | None:
        return next((s for s in self.steps if s.fail is not None), None)

    def stage_of(self, step_id: str) -> int:
        return next(i for i, stage in enumerate(self.stages) for s in stage if s.id == step_id)

    def describe(self) -> str:
        def one(s: StepSpec) -> str:
            bits = [s.id, s.compensation]
            if s.transient:
                bits.append(f"transient={s.transient}/{s.max_retries}")
            if s.fail:
                bits.append(f"FAIL:{s.fail}")
            if s.sync:
                bits.append("sync")
            if s.pauses:
                bits.append(f"pauses={list(s.pauses)}")
            return ",".join(bits)

        return " -> ".join(
            one(st[0]) if len(st) == 1 else "[" + " | ".join(one(s) for s in st) + "]"
            for st in self.stages
        )


@dataclass
class Journal:
    """What the step functions did, in the order they did it.

    Kinds: ``invoke`` (an attempt began), ``raise`` (a retryable failure), ``fail`` (a
    permanent failure), ``return`` (the step function returned successfully: completion
    order), ``compensate`` (a compensation ran).
    """

    events: list[tuple[str, str]] = field(default_factory=list)
    compensate_inputs: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, kind: str, step_id: str) -> None:
        self.events.append((kind, step_id))

    def ids(self, kind: str) -> list[str]:
        return [s for k, s in self.events if k == kind]

    def count(self, kind: str, step_id: str) -> int:
        return sum(1 for k, s in self.events if k == kind and s == step_id)

    def positions(self, kind: str) -> list[int]:
        return [i for i, (k, _) in enumerate(self.events) if k == kind]


def _transient_error(kind: TransientKind, step_id: str, attempt: int) -> Exception:
    message = f"{step_id}: transient failure on attempt {attempt}"
    if kind == "connector_error":
        return TransientConnectorError(message)
    if kind == "runtime_error":
        return RuntimeError(message)  # plain exceptions are retryable too
    return StepError(message)


def _invoke(spec: StepSpec, journal: Journal) -> Callable[..., Any]:
    calls = 0

    def outcome(inp: Any) -> StepResponse[Any]:
        nonlocal calls
        calls += 1
        if calls <= spec.transient:
            journal.add("raise", spec.id)
            raise _transient_error(spec.transient_kind, spec.id, calls)
        if spec.fail == "raise":
            journal.add("fail", spec.id)
            raise PermanentStepError(f"{spec.id} failed for good")
        if spec.fail == "response":
            journal.add("fail", spec.id)
            return StepResponse.permanent_failure(f"{spec.id} failed for good")
        journal.add("return", spec.id)
        return StepResponse({"step": spec.id, "input": inp}, {"undo": spec.id})

    if spec.sync:

        def invoke_sync(inp: Any, ctx: StepContext) -> StepResponse[Any]:
            journal.add("invoke", spec.id)
            return outcome(inp)

        return invoke_sync

    async def invoke(inp: Any, ctx: StepContext) -> StepResponse[Any]:
        journal.add("invoke", spec.id)
        for pause in spec.pauses:
            await asyncio.sleep(pause)
        return outcome(inp)

    return invoke


def _compensate(spec: StepSpec, journal: Journal) -> Callable[..., Any]:
    def record(inp: Any) -> None:
        journal.add("compensate", spec.id)
        journal.compensate_inputs.setdefault(spec.id, []).append(inp)

    if spec.sync:

        def compensate_sync(inp: Any, ctx: StepContext) -> None:
            record(inp)

        return compensate_sync

    async def compensate(inp: Any, ctx: StepContext) -> None:
        await asyncio.sleep(0)
        record(inp)

    return compensate


def build_workflow(shape: GraphShape, journal: Journal, prefix: str = "prop") -> (
    WorkflowDefinition
):
    """Define (and register, under a fresh unique name) the workflow ``shape`` describes.

    Its result maps every step id to that step's output.
    """
    steps = {
        s.id: create_step(
            s.id,
            _invoke(s, journal),
            None if s.compensation == "none" else _compensate(s, journal),
            max_retries=s.max_retries,
            retry_interval=0,
            no_compensation=s.compensation == "no_compensation",
        )
        for s in shape.steps
    }

    def composer(inp: Any) -> WorkflowResponse:
        outputs: dict[str, Any] = {}
        for stage in shape.stages:
            results = [steps[s.id](inp) for s in stage]
            if len(results) > 1:
                parallelize(*results)
            outputs.update(zip((s.id for s in stage), results, strict=True))
        return WorkflowResponse(outputs)

    return create_workflow(f"{prefix}-{uuid4().hex[:8]}", composer)  # type: ignore[no-any-return]
