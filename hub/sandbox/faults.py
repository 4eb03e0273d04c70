"""Faults a sandbox system injects at run time, set over HTTP while tests and demos run.

```
latency_ms      every request waits this long first (plus up to jitter_ms)
error_rate      this share of requests answer 500 in the system's own error format
burst_429       the next N requests answer 429 with the system's rate-limit headers
timeout_rate    this share of requests hang for hang_s (longer than a client's timeout)
down            the system's port refuses connections (its listener is closed)
match           a regex on "METHOD /path": only matching requests are faulted (not down)
error_status    the status of injected errors (500; a 4xx makes a permanent failure)
```
Only the system's own API is affected: the ``/_sandbox`` control routes always answer.
"""

from __future__ import annotations

import random
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Faults(BaseModel):
    """The faults now in force on one sandbox system; every field defaults to none."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0, le=60_000)
    jitter_ms: float = Field(default=0.0, ge=0, le=60_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    burst_429: int = Field(default=0, ge=0, description="the next N requests get 429")
    retry_after_s: float = Field(default=1.0, ge=0, le=3600,
                                 description="the wait a 429 asks for")
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0, le=600)
    down: bool = False
    match: str | None = Field(default=None, max_length=500,
                              description='regex on "METHOD /path"; unset: every request')
    error_status: int = Field(default=500, ge=400, le=599)

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class FaultPlan:
    """Draws, request by request, which fault applies; seeded so a test can replay it."""

    def __init__(self, seed: int | None = None) -> None:
        self.faults = Faults()
        self._random = random.Random(seed)

    def set(self, faults: Faults) -> None:
        self.faults = faults

    def clear(self) -> None:
        self.faults = Faults()

    def applies(self, method: str, path: str) -> bool:
        pattern = self.faults.match
        return pattern is None or re.search(pattern, f"{method} {path}") is not None

    def delay_s(self) -> float:
        f = self.faults
        jitter = self._random.uniform(0, f.jitter_ms) if f.jitter_ms else 0.0
        return (f.latency_ms + jitter) / 1000

    def take_429(self) -> bool:
        if self.faults.burst_429 > 0:
            self.faults = self.faults.model_copy(update={"burst_429": self.faults.burst_429 - 1})
            return True
        return False

    def hang(self) -> bool:
        return self.faults.timeout_rate > 0 and self._random.random() < self.faults.timeout_rate

    def error(self) -> bool:
        return self.faults.error_rate > 0 and self._random.random() < self.faults.error_rate
