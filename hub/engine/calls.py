"""The lineage of a step's outbound calls: what a connector reports of each HTTP attempt.

Invariant 9 ("nothing hidden") reaches each connector call: a step attempt gathers its calls
in memory (``StepContext.record_call``) and they are written with the checkpoint that records
the attempt's outcome, so lineage costs no round trip of its own. The cost stays bounded:
at most ``limit`` calls per step attempt are kept (the rest are counted as dropped) and
every text field is cut to a fixed length. What a connector reports must already be
redacted: a path or id through its own ``redact``, never a body, header or query string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hub.engine.payload import clean_text
from hub.redaction import DEFAULT, Redaction

DEFAULT_MAX_CALLS = 50
"""Calls kept per step attempt unless ``HUB_MAX_CALLS_PER_STEP`` says otherwise."""

FIELD_CHARS = 200
"""Longest text kept in any one field of a recorded call."""


def _cut(text: str | None) -> str | None:
    return None if text is None else clean_text(text[:FIELD_CHARS])


@dataclass(frozen=True, slots=True)
class ConnectorCall:
    """One HTTP attempt to an outside system, as a connector reports it.

    ``status`` is the HTTP status when there was an answer, ``error`` the error class when
    there was none (a timeout, a refused connection). ``outside_id`` is the outside system's
    id of what the call created or touched (a PaymentIntent, a sale order).
    """

    system: str
    operation: str
    method: str
    path: str
    attempt: int
    duration_ms: float
    status: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    outside_id: str | None = None
    at: float = field(default_factory=time.time)

    def bounded(self, redaction: Redaction = DEFAULT) -> ConnectorCall:
        """This call as stored: its path (and its operation, by default method and path) by
        the redaction policy (``HUB_REDACT_FIELDS``), without a query string, every text
        field cut to ``FIELD_CHARS``, cleaned for jsonb."""
        return ConnectorCall(
            system=_cut(self.system) or "",
            operation=_cut(redaction.path(self.operation)) or "",
            method=_cut(self.method) or "", path=_cut(redaction.path(self.path)) or "",
            attempt=self.attempt, duration_ms=round(self.duration_ms, 3),
            status=self.status, error=_cut(self.error),
            idempotency_key=_cut(self.idempotency_key), outside_id=_cut(self.outside_id),
            at=self.at)


@dataclass(slots=True)
class CallLog:
    """The calls of one step attempt: at most ``limit`` kept, the rest counted."""

    limit: int = DEFAULT_MAX_CALLS
    redaction: Redaction = field(default=DEFAULT, repr=False)
    calls: list[ConnectorCall] = field(default_factory=list)
    dropped: int = 0

    def add(self, call: ConnectorCall) -> None:
        if len(self.calls) >= self.limit:
            self.dropped += 1
            return
        self.calls.append(call.bounded(self.redaction))

    def rows(self, step: str, step_attempt: int, compensating: bool) -> list[dict[str, Any]]:
        """What the checkpoint stores, one row per call (``seq`` orders them)."""
        return [{"step": step, "step_attempt": step_attempt, "compensating": compensating,
                 "seq": i, "system": c.system, "operation": c.operation, "method": c.method,
                 "path": c.path, "status": c.status, "error": c.error,
                 "duration_ms": c.duration_ms, "attempt": c.attempt,
                 "idempotency_key": c.idempotency_key, "outside_id": c.outside_id,
                 "at": c.at, "dropped": self.dropped if i == len(self.calls) - 1 else 0}
                for i, c in enumerate(self.calls)]
