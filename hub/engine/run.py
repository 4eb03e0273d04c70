"""Run and step states, and the ``Run`` snapshot callers get back.

Step states mirror Medusa's; run statuses are the hub's own. How they map:

| run status            | phase        | Medusa transaction state | what it means                      |
|-----------------------|--------------|--------------------------|------------------------------------|
| `pending`             | forward      | `not_started`            | stored, no worker has begun it     |
| `running`             | forward      | `invoking`               | steps are running or retrying      |
| `waiting`             | forward      | `invoking` (awaiting)    | an async step, or a manual retry   |
| `running`             | compensating | `compensating`           | completed steps being undone       |
| `waiting`             | compensating | `waiting_to_compensate`  | an async compensation awaits       |
| `succeeded`           | forward      | `done`                   | every step done or skipped         |
| `compensated`         | compensating | `reverted`               | failed; every completion undone    |
| `cancelled`           | cancelling   | `reverted`               | cancelled; every completion undone |
| `compensation_failed` | compensating | `failed`                 | a compensation kept failing        |

Step states: `not_started`, `invoking`, `waiting` (async, awaiting its outcome), `temp_failure`
(a retry is due, or a manual retry with ``auto_retry=False``), `done`, `skipped`,
`permanent_failure`, `timeout`, `compensating`, `waiting_to_compensate`, `reverted`, and
`failed` (its compensation kept failing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from hub.types import JSON


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED,
     RunStatus.CANCELLED}
)


class StepState(StrEnum):
    NOT_STARTED = "not_started"
    INVOKING = "invoking"
    WAITING = "waiting"
    TEMP_FAILURE = "temp_failure"
    DONE = "done"
    SKIPPED = "skipped"
    PERMANENT_FAILURE = "permanent_failure"
    TIMEOUT = "timeout"
    COMPENSATING = "compensating"
    WAITING_TO_COMPENSATE = "waiting_to_compensate"
    REVERTED = "reverted"
    FAILED = "failed"


SETTLED_STEP_STATES = frozenset(
    {StepState.DONE, StepState.SKIPPED, StepState.PERMANENT_FAILURE, StepState.TIMEOUT,
     StepState.COMPENSATING, StepState.WAITING_TO_COMPENSATE, StepState.REVERTED,
     StepState.FAILED}
)
"""States after which the steps that follow may start."""


def medusa_state(status: str, phase: str) -> str:
    """The Medusa transaction state of a run (see the module table)."""
    if status == RunStatus.PENDING:
        return "not_started"
    if status == RunStatus.SUCCEEDED:
        return "done"
    if status in (RunStatus.COMPENSATED, RunStatus.CANCELLED):
        return "reverted"
    if status == RunStatus.COMPENSATION_FAILED:
        return "failed"
    if phase != "forward":
        return "waiting_to_compensate" if status == RunStatus.WAITING else "compensating"
    return "invoking"


def shown_phase(status: str, phase: str) -> str:
    """The phase the API, console and CLI show: the stored one while the run is live, its
    end status once it ended (a compensated run is no longer ``compensating``)."""
    return status if status in FINAL_STATUSES else phase


@dataclass(frozen=True)
class StepRun:
    """One step of a run, as stored."""

    id: str
    state: str
    attempts: int = 0
    output: JSON = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    compensation_error: dict[str, Any] | None = None

    @staticmethod
    def from_json(step_id: str, d: dict[str, Any]) -> StepRun:
        return StepRun(
            id=step_id,
            state=d.get("state", StepState.NOT_STARTED),
            attempts=d.get("attempts", 0),
            output=d.get("output"),
            error=d.get("error"),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            compensation_error=d.get("comp_error"),
        )


@dataclass(frozen=True)
class Run:
    """A snapshot of one execution."""

    id: str
    workflow: str
    version: str
    transaction_id: str
    status: str
    phase: str = "forward"
    result: JSON = None
    error: dict[str, Any] | None = None
    input: JSON = None
    steps: dict[str, StepRun] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None
    parked: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def state(self) -> str:
        """Medusa's name for where the run is."""
        return medusa_state(self.status, self.phase)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    @staticmethod
    def from_row(row: dict[str, Any], step_ids: list[str] | None = None) -> Run:
        stored = row.get("steps") or {}
        ids = list(step_ids or []) + [s for s in stored if s not in (step_ids or [])]
        return Run(
            id=str(row["id"]),
            workflow=row["workflow"],
            version=row["version"],
            transaction_id=row["transaction_id"],
            status=row["status"],
            phase=row.get("phase", "forward"),
            result=row.get("result"),
            error=row.get("error"),
            input=row.get("input"),
            steps={s: StepRun.from_json(s, stored.get(s, {})) for s in ids},
            trigger=row.get("trigger"),
            parked=row.get("parked"),
            created_at=row.get("created_at"),
            finished_at=row.get("finished_at"),
        )
