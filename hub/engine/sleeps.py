"""When a durable sleep wakes: its resolved input (seconds, or a wake time) -> a due time.

The input may come from outside (a workflow input, a step's output), so a value that is not
a time is refused with its reason, and the sleep's run fails naming it.
"""

from __future__ import annotations

import math
from datetime import datetime

from hub.engine.graph import SLEEP_FOR, SLEEP_UNTIL
from hub.types import JSON


class SleepValueError(ValueError):
    """A sleep's run-time value is not a duration or a wake time."""


def _finite(value: JSON, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise SleepValueError(f"{what} must be a finite number of seconds, got {value!r:.100}")
    return float(value)


def wake_time(spec: JSON, now: float) -> float:
    """The wall time (epoch seconds) a sleep with input ``spec`` wakes, slept from ``now``."""
    if not isinstance(spec, dict):
        raise SleepValueError(f"its input is not a sleep's, got {spec!r:.100}")
    if SLEEP_FOR in spec:
        seconds = _finite(spec[SLEEP_FOR], "its duration")
        if seconds < 0:
            raise SleepValueError(f"its duration must be >= 0 seconds, got {seconds}")
        return now + seconds
    when = spec.get(SLEEP_UNTIL)
    if isinstance(when, str):
        try:
            parsed = datetime.fromisoformat(when)
        except ValueError:
            raise SleepValueError(
                f"its wake time is not ISO 8601 text, got {when!r:.100}") from None
        if parsed.tzinfo is None:
            raise SleepValueError(f"its wake time {when!r:.100} has no UTC offset")
        return parsed.timestamp()
    return _finite(when, "its wake time")
