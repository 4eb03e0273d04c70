"""One execution held in memory by the worker that owns its lease.

It knows the graph and every step's stored state, resolves run-time values, and records
transitions as dirty steps and events until the executor checkpoints them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from hub.engine.context import StepContext
from hub.engine.graph import INPUT, Expr, Graph, Ref, StepNode
from hub.engine.registry import WorkflowSpec
from hub.engine.run import (
    FINAL_STATUSES,
    SETTLED_STEP_STATES,
    Run,
    RunStatus,
    StepRun,
    StepState,
)
from hub.types import JSON


class ResolveError(Exception):
    """A transform or condition raised while computing a step's input."""


class Execution:
    """Mutable state of an execution this worker owns."""

    def __init__(self, row: dict[str, Any], spec: WorkflowSpec) -> None:
        self.id: uuid.UUID = row["id"]
        self.sid = str(self.id)
        self.spec = spec
        self.graph: Graph = spec.graph
        self.workflow: str = row["workflow"]
        self.version: str = row["version"]
        self.transaction_id: str = row["transaction_id"]
        self.status: str = row["status"]
        self.phase: str = row.get("phase") or "forward"
        self.input: JSON = row.get("input")
        self.trigger: dict[str, Any] | None = row.get("trigger")
        self.epoch: int = row["epoch"]
        self.steps: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (row.get("steps") or {}).items()
        }
        self.result: JSON = row.get("result")
        self.error: dict[str, Any] | None = row.get("error")
        self.new_error: dict[str, Any] | None = None
        self.created_at = row.get("created_at")
        self.dirty: set[str] = set()
        self.events: list[list[str]] = []
        self.outbox: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        """Connector calls of attempts that landed, written with the next checkpoint."""
        self.attempts: dict[str, StepContext] = {}
        """The context of each step attempt in flight: its calls are taken when it lands."""
        self.seq = 1 + max((s.get("seq") or 0 for s in self.steps.values()), default=0)
        self.signals_upto = 0  # applied and not yet deleted
        self.signals_seen = 0  # the highest id applied by this drive (never reset)
        self.leaving = False
        """A release or finish is being written: the lease is let go on purpose."""
        self.steps_outlived = False
        """A cut step still ran when its drive task ended: the lease is kept until it expires."""
        self.status_dirty = False
        self.early: dict[str, tuple[str, Any]] = {}
        """A child's outcome that arrived while its step was still being started."""

    # -- state ---------------------------------------------------------------------------
    def step(self, step_id: str) -> dict[str, Any]:
        st = self.steps.get(step_id)
        if st is None:
            st = self.steps[step_id] = {"state": StepState.NOT_STARTED, "attempts": 0}
        return st

    def state(self, step_id: str) -> str:
        st = self.steps.get(step_id)
        return StepState.NOT_STARTED if st is None else str(st["state"])

    def set_step(self, step_id: str, event: str | None = None, **fields: Any) -> dict[str, Any]:
        st = self.step(step_id)
        st.update(fields)
        self.dirty.add(step_id)
        if event:
            self.events.append([event, step_id])
        return st

    def complete(self, step_id: str, output: JSON, compensate_input: JSON) -> None:
        self.step(step_id).pop("unrecorded", None)  # an outcome after all (a late success)
        self.set_step(
            step_id, "step_success", state=StepState.DONE, output=output,
            compensate_input=compensate_input, finished_at=time.time(), seq=self.seq, due=None,
        )
        self.seq += 1

    def interrupt(self, step_id: str, compensate_input: JSON = None) -> None:
        """A step whose call may have reached the outside, with no output recorded (cut by
        a cancel, waiting when the run rolled back, or left mid-call by a dead worker): it
        joins the compensation order as the latest step, its compensation told so."""
        self.set_step(step_id, "step_interrupted", output=None, unrecorded=True,
                      compensate_input=compensate_input, seq=self.seq, due=None)
        self.seq += 1

    def settled(self, step_id: str) -> bool:
        return self.state(step_id) in SETTLED_STEP_STATES

    def fail(self, error: dict[str, Any], *, cancel: bool = False) -> None:
        """Switch to compensation; the first error is the one the run reports."""
        if self.phase != "forward":
            return
        self.phase = "cancelling" if cancel else "compensating"
        self.error = self.new_error = error
        self.status_dirty = True
        self.events.append(["compensate_begin", ""])

    def finish(self, status: RunStatus) -> None:
        self.status = status
        self.status_dirty = True
        self.events.append(["finish", ""])

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def next_due(self) -> float | None:
        dues = [
            float(s["due"]) for s in self.steps.values() if s.get("due") is not None
        ]
        return min(dues) if dues else None

    def awaiting_outside(self) -> bool:
        """True when only something outside (an async completion, a manual retry) can help."""
        for st in self.steps.values():
            state = st["state"]
            if state in (StepState.WAITING, StepState.WAITING_TO_COMPENSATE):
                return True
            if state == StepState.TEMP_FAILURE and st.get("due") is None:
                return True
            if state == StepState.FAILED:
                return True
        return False

    # -- values --------------------------------------------------------------------------
    def resolve(self, expr: Expr, cache: dict[str, JSON] | None = None) -> JSON:
        """Replace every reference in ``expr`` by its run-time value."""
        if cache is None:
            cache = {}
        if isinstance(expr, Ref):
            return _walk(self._source(expr.source, cache), expr.path)
        if isinstance(expr, dict):
            return {k: self.resolve(v, cache) for k, v in expr.items()}
        if isinstance(expr, list):
            return [self.resolve(v, cache) for v in expr]
        return expr

    def _source(self, source: str, cache: dict[str, JSON]) -> JSON:
        if source == INPUT:
            return self.input
        if source in self.graph.steps:
            st = self.steps.get(source)
            return st.get("output") if st and st["state"] in _HAS_OUTPUT else None
        if source in cache:
            return cache[source]
        node = self.graph.transforms.get(source)
        if node is None:
            raise ResolveError(f"unknown value source {source!r}")
        value = self.resolve(node.input, cache)
        if node.fn is not None:
            try:
                value = node.fn(value)
            except Exception as exc:
                raise ResolveError(f"transform {source!r} raised {exc!r}") from exc
            if isinstance(value, Ref):
                raise ResolveError(f"transform {source!r} returned a reference")
        cache[source] = value
        return value

    def condition_holds(self, node: StepNode, cache: dict[str, JSON]) -> bool:
        for cond_id in node.when:
            cond = self.graph.conditions[cond_id]
            value = self.resolve(cond.input, cache)
            try:
                if not cond.predicate(value):
                    return False
            except Exception as exc:
                raise ResolveError(f"condition {cond_id!r} raised {exc!r}") from exc
        return True

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> Run:
        return Run(
            id=self.sid,
            workflow=self.workflow,
            version=self.version,
            transaction_id=self.transaction_id,
            status=self.status,
            phase=self.phase,
            result=self.result,
            error=self.error,
            input=self.input,
            steps={
                s: StepRun.from_json(s, self.steps.get(s, {})) for s in self.graph.steps
            },
            trigger=self.trigger,
            created_at=self.created_at,
        )


_HAS_OUTPUT = frozenset(
    {StepState.DONE, StepState.COMPENSATING, StepState.WAITING_TO_COMPENSATE,
     StepState.REVERTED, StepState.FAILED}
)


def _walk(value: JSON, path: tuple[str | int, ...]) -> JSON:
    for key in path:
        if isinstance(value, dict):
            value = value.get(str(key)) if not isinstance(key, int) else value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value
