"""A circuit breaker: while an outside system is down, calls fail fast instead of piling up.

```
closed --N consecutive failures within window_s--> open
open   --reset_s elapsed---------------------------> half_open (one probe call let through)
half_open --probe succeeds--> closed
half_open --probe fails-----> open (the cool-down starts again)
```
Failing fast raises ``TransientConnectorError``: the engine retries the step later, by which
time the breaker may have closed. Everything here is synchronous and runs on one event loop,
so no lock is needed; the clock is injectable so tests need not sleep. The worker's metrics
show it: ``hub_connector_circuit_open{connector}`` and ``hub_connector_circuit_transitions``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from hub import TransientConnectorError
from hub.metrics import CIRCUIT_OPEN, CIRCUIT_TRANSITIONS


class BreakerState(enum.StrEnum):
    """What the breaker lets through; its value is the label exported to metrics."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(TransientConnectorError):
    """Raised without calling the system, because its breaker is open."""


class CircuitBreaker:
    """Counts consecutive failures of one connector and opens after ``failure_threshold``.

    A failure older than ``window_s`` than the first one of the current run starts a new run,
    so a few failures spread over hours never open the breaker. The caller brackets each call
    with ``before_call()`` and exactly one of ``on_success()``, ``on_failure()`` or
    ``on_abandon()`` (the call ended without a verdict, e.g. it was cancelled: the half-open
    probe slot is freed without deciding).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        window_s: float = 60.0,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"breaker {name!r}: failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.reset_s = reset_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._first_failure_at = 0.0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down has passed reads half-open."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Let the call through, or raise ``CircuitOpenError`` at once."""
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                remaining = self._opened_at + self.reset_s - self._clock()
                raise CircuitOpenError(
                    f"connector {self.name!r}: circuit open after {self.failure_threshold} "
                    f"consecutive failures; failing fast for another {remaining:.1f}s"
                )
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise CircuitOpenError(
                    f"connector {self.name!r}: circuit half-open and a probe call is in "
                    "flight; failing fast until it returns"
                )
            self._probe_in_flight = True

    def on_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            CIRCUIT_OPEN.labels(self.name).set(0)
            CIRCUIT_TRANSITIONS.labels(self.name, BreakerState.CLOSED.value).inc()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def on_failure(self) -> None:
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self._failures == 0 or now - self._first_failure_at > self.window_s:
            self._failures = 0
            self._first_failure_at = now
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now)

    def on_abandon(self) -> None:
        self._probe_in_flight = False

    def _open(self, now: float) -> None:
        CIRCUIT_OPEN.labels(self.name).set(1)
        CIRCUIT_TRANSITIONS.labels(self.name, BreakerState.OPEN.value).inc()
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._failures = 0
        self._probe_in_flight = False

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_s
