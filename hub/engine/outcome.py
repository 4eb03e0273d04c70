"""What one invocation or compensation of a step came to, and how a failure is stored."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, cast

from hub.engine.payload import clean_json, tail_lines
from hub.types import JSON


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one invocation (or compensation) of a step came to."""

    kind: str  # ok | skip | retryable | permanent | timeout | cut (cancelled by us)
    output: JSON = None
    compensate_input: JSON = None
    error: dict[str, Any] | None = None
    outbox: tuple[dict[str, Any], ...] = ()
    retry_after: float | None = None
    """A retryable failure: seconds it asked to wait before the next attempt."""
    yielded: bool = False
    """Not a failure of the step: it waits for a retry of its own without holding the
    lease (a map whose item waits long, or for a manual retry), until ``retry_after``."""


def error_record(step: str, exc: BaseException | str, attempt: int,
                 **extra: Any) -> dict[str, Any]:
    """A stored failure; its text comes from outside systems, so it is cleaned for jsonb."""
    if isinstance(exc, str):
        failure = {"step": step, "message": exc, "type": "StepFailure", "attempt": attempt}
    else:
        failure = {"step": step, "message": (str(exc) or repr(exc))[:4000],
                   "type": type(exc).__name__, "attempt": attempt,
                   "traceback": _traceback_tail(exc, 4000)}
    return cast(dict[str, Any], clean_json(failure | extra))


def _traceback_tail(exc: BaseException, limit: int) -> str:
    """The end of a traceback, cut at a line boundary so it reads from a whole line."""
    return tail_lines("".join(traceback.format_exception(exc)), limit)
