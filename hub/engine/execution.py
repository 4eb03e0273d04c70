"""One execution held in memory by the worker that owns its lease.

Its typed state moves only through the transition core (``advance``); the changes not yet
checkpointed accumulate in ``pending``, which the next checkpoint writes and clears. Beside
them it keeps what belongs to this worker's drive: the calls of landed attempts, the
contexts of attempts in flight, the signals applied.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hub.engine.context import StepContext
from hub.engine.graph import Graph
from hub.engine.registry import WorkflowSpec
from hub.engine.run import Run, RunStatus, StepRun
from hub.engine.state import ExecState, Phase
from hub.engine.transitions import Change, Context, Event, SignalReceived, advance, unchanged
from hub.engine.values import Values
from hub.types import JSON


class Execution:
    """An execution this worker owns."""

    def __init__(self, row: dict[str, Any], spec: WorkflowSpec, *,
                 max_payload_bytes: int = 1_000_000) -> None:
        self.id: uuid.UUID = row["id"]
        self.sid = str(self.id)
        self.spec = spec
        self.graph: Graph = spec.graph
        self.workflow: str = row["workflow"]
        self.version: str = row["version"]
        self.transaction_id: str = row["transaction_id"]
        self.input: JSON = row.get("input")
        self.trigger: dict[str, Any] | None = row.get("trigger")
        self.epoch: int = row["epoch"]
        self.created_at = row.get("created_at")
        self.core = Context(self.graph, self.input, self.workflow, max_payload_bytes)
        self.state = ExecState.from_row(row)
        self.pending: Change = unchanged(self.state)
        """What transitions changed since the last checkpoint."""
        self.calls: list[dict[str, Any]] = []
        """Connector calls of attempts that landed, written with the next checkpoint."""
        self.attempts: dict[str, StepContext] = {}
        """The context of each step attempt in flight: its calls are taken when it lands."""
        self.applied: list[int] = []
        """Signals applied (or found moot) and not yet deleted: the next checkpoint deletes
        exactly these, never a row by id range (one with a lower id may commit later)."""
        self.signals_seen = 0  # the highest id applied by this drive (never reset)
        self.leaving = False
        """A release or finish is being written: the lease is let go on purpose."""
        self.steps_outlived = False
        """A cut step still ran when its drive task ended: the lease is kept until it expires."""
        self.early: dict[str, tuple[int, SignalReceived]] = {}
        """A child's end (signal id, signal) that arrived before its step waited for it: its
        row stays in the table until the step waits and takes it, so a crash meanwhile loses
        nothing (the next drive reads it again)."""

    def advance(self, event: Event, now: float) -> Change:
        """Apply ``event``: the state moves on, the change joins ``pending``."""
        change = advance(self.core, self.state, event, now)
        self.state = change.state
        self.pending = self.pending.then(change)
        return change

    def checkpointed(self) -> None:
        """The pending change is durable."""
        self.pending = unchanged(self.state)
        self.calls.clear()

    @property
    def status(self) -> RunStatus:
        return self.state.status

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def finished(self) -> bool:
        return self.state.finished

    def values(self) -> Values:
        return Values(self.graph, self.input, self.state.steps)

    def steps_json(self) -> str:
        return json.dumps({k: v.to_json() for k, v in self.state.steps.items()})

    def snapshot(self) -> Run:
        state = self.state
        return Run(
            id=self.sid,
            workflow=self.workflow,
            version=self.version,
            transaction_id=self.transaction_id,
            status=state.status,
            phase=state.phase,
            result=state.result,
            error=None if state.error is None else state.error.to_json(),
            input=self.input,
            steps={s: StepRun.from_json(s, state.step(s).to_json()) for s in self.graph.steps},
            trigger=self.trigger,
            created_at=self.created_at,
        )
