"""An execution's state as typed values: a step record, a phase, a failure.

Stored as jsonb (a step record per step id, the run's error); this module is the one place
that converts between the stored shape and these types, both ways, so no other code reads
a step by string key. Records are frozen: a transition builds new ones (see transitions).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from hub.engine.payload import clean_json, tail_lines
from hub.engine.run import FINAL_STATUSES, SETTLED_STEP_STATES, RunStatus, StepState
from hub.types import JSON


class Phase(StrEnum):
    """Which way an execution moves: forward, or undoing after a failure or a cancel."""

    FORWARD = "forward"
    COMPENSATING = "compensating"
    CANCELLING = "cancelling"


_FAILURE_KEYS = ("step", "message", "type", "attempt", "traceback", "retryable",
                 "compensation", "compensation_error")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a step, a compensation or a run failed; its text may come from outside systems,
    so it is cleaned for jsonb when built from an exception."""

    message: str
    type: str = "StepFailure"
    step: str | None = None
    attempt: int | None = None
    traceback: str | None = None
    retryable: bool | None = None
    compensation: bool = False
    compensation_error: Failure | None = None
    """On a run's error: the compensation that kept failing."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Stored keys this version does not model, kept as read."""

    @staticmethod
    def of(step: str, exc: BaseException | str, attempt: int, *,
           retryable: bool | None = None, kind: str | None = None) -> Failure:
        """The failure of one attempt: an exception's text and traceback end, or a message."""
        if isinstance(exc, str):
            return Failure(message=_clean_text(exc), type=kind or "StepFailure", step=step,
                           attempt=attempt, retryable=retryable)
        return Failure(
            message=_clean_text((str(exc) or repr(exc))[:4000]),
            type=kind or type(exc).__name__, step=step, attempt=attempt,
            traceback=_clean_text(tail_lines("".join(traceback.format_exception(exc)), 4000)),
            retryable=retryable,
        )

    def but(self, **changes: Any) -> Failure:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "message": self.message, "type": self.type}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.traceback is not None:
            out["traceback"] = self.traceback
        if self.retryable is not None:
            out["retryable"] = self.retryable
        if self.compensation:
            out["compensation"] = True
        if self.compensation_error is not None:
            out["compensation_error"] = self.compensation_error.to_json()
        return {**self.extra, **out}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Failure:
        nested = d.get("compensation_error")
        attempt = d.get("attempt")
        return Failure(
            message=str(d.get("message") or ""),
            type=str(d.get("type") or "StepFailure"),
            step=d.get("step"),
            attempt=attempt if isinstance(attempt, int) else None,
            traceback=d.get("traceback"),
            retryable=d.get("retryable"),
            compensation=bool(d.get("compensation")),
            compensation_error=(Failure.from_json(nested) if isinstance(nested, Mapping)
                                else None),
            extra={k: v for k, v in d.items() if k not in _FAILURE_KEYS},
        )


def _clean_text(text: str) -> str:
    return cast(str, clean_json(text))


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step's stored state. ``seq`` is its place in the completion order (what
    compensation reverses); ``due`` the wall time its timer fires (a retry, a timeout, the
    end of a sleep); ``unrecorded``: its call may have reached the outside with no output
    recorded (cut mid-call), which its compensation is told."""

    state: StepState = StepState.NOT_STARTED
    attempts: int = 0
    comp_attempts: int = 0
    output: JSON = None
    compensate_input: JSON = None
    error: Failure | None = None
    comp_error: Failure | None = None
    started_at: float | None = None
    finished_at: float | None = None
    compensated_at: float | None = None
    seq: int | None = None
    due: float | None = None
    unrecorded: bool = False

    def but(self, **changes: Any) -> StepRecord:
        """This record with ``changes`` (a transition's new record). Spelled out, not
        ``dataclasses.replace``: every step transition makes one, and this takes half the
        time (``replace`` walks the fields' metadata on each call)."""
        if not _STEP_FIELDS.issuperset(changes):
            raise TypeError(f"StepRecord has no field {sorted(set(changes) - _STEP_FIELDS)}")
        g = changes.get
        return StepRecord(
            g("state", self.state), g("attempts", self.attempts),
            g("comp_attempts", self.comp_attempts), g("output", self.output),
            g("compensate_input", self.compensate_input), g("error", self.error),
            g("comp_error", self.comp_error), g("started_at", self.started_at),
            g("finished_at", self.finished_at), g("compensated_at", self.compensated_at),
            g("seq", self.seq), g("due", self.due), g("unrecorded", self.unrecorded))

    @property
    def settled(self) -> bool:
        """The steps that follow this one may start."""
        return self.state in SETTLED_STEP_STATES

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.state), "attempts": self.attempts}
        if self.comp_attempts:
            out["comp_attempts"] = self.comp_attempts
        if self.output is not None:
            out["output"] = self.output
        if self.compensate_input is not None:
            out["compensate_input"] = self.compensate_input
        if self.error is not None:
            out["error"] = self.error.to_json()
        if self.comp_error is not None:
            out["comp_error"] = self.comp_error.to_json()
        for key in ("started_at", "finished_at", "compensated_at", "seq", "due"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.unrecorded:
            out["unrecorded"] = True
        return out

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> StepRecord:
        error, comp_error = d.get("error"), d.get("comp_error")
        return StepRecord(
            state=StepState(d.get("state") or StepState.NOT_STARTED),
            attempts=int(d.get("attempts") or 0),
            comp_attempts=int(d.get("comp_attempts") or 0),
            output=d.get("output"),
            compensate_input=d.get("compensate_input"),
            error=Failure.from_json(error) if isinstance(error, Mapping) else None,
            comp_error=Failure.from_json(comp_error) if isinstance(comp_error, Mapping)
            else None,
            started_at=_num(d.get("started_at")),
            finished_at=_num(d.get("finished_at")),
            compensated_at=_num(d.get("compensated_at")),
            seq=int(d["seq"]) if d.get("seq") is not None else None,
            due=_num(d.get("due")),
            unrecorded=bool(d.get("unrecorded")),
        )


_STEP_FIELDS = frozenset(f.name for f in dataclasses.fields(StepRecord))


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


NOT_STARTED = StepRecord()


@dataclass(frozen=True, slots=True)
class ExecState:
    """Everything a transition may read about one execution (no I/O handles in it)."""

    status: RunStatus
    phase: Phase
    steps: Mapping[str, StepRecord]
    error: Failure | None = None
    result: JSON = None
    seq: int = 1
    """The completion number the next step to complete gets."""

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> ExecState:
        steps = {k: StepRecord.from_json(v) for k, v in (row.get("steps") or {}).items()}
        error = row.get("error")
        return ExecState(
            status=RunStatus(row["status"]),
            phase=Phase(row.get("phase") or Phase.FORWARD),
            steps=steps,
            error=Failure.from_json(error) if isinstance(error, Mapping) else None,
            result=row.get("result"),
            seq=1 + max((s.seq or 0 for s in steps.values()), default=0),
        )

    def step(self, step_id: str) -> StepRecord:
        return self.steps.get(step_id, NOT_STARTED)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def next_due(self) -> float | None:
        dues = [s.due for s in self.steps.values() if s.due is not None]
        return min(dues) if dues else None

    def awaiting_outside(self) -> bool:
        """True when only something outside (an async completion, a manual retry) can help."""
        for st in self.steps.values():
            if st.state in (StepState.WAITING, StepState.WAITING_TO_COMPENSATE,
                            StepState.FAILED):
                return True
            if st.state == StepState.TEMP_FAILURE and st.due is None:
                return True
        return False
