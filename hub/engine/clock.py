"""The engine's one source of time, injected, so tests drive timers without sleeping.

Wall time (``now``) stamps steps and due times that outlive the process; monotonic time
(``monotonic``) measures leases, which must not jump when the wall clock is set. A
``ManualClock`` moves both only when told, and wakes whoever waits on it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the engine asks of time."""

    def now(self) -> float:
        """Seconds since the epoch (stored due times and stamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (lease validity)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that stands still until ``advance``; sleepers wake when their time comes.

    ``start`` defaults to the machine's time, so due times written through it stay
    comparable with the rows Postgres stamps."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._offset = self._now  # monotonic reads as now minus the start
        self._changed = asyncio.Condition()
        self._sleeping = 0

    def now(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        """Sleepers waiting for time to move: a test advances once the one it drives
        sleeps (time moved before that would pass it by)."""
        return self._sleeping

    def monotonic(self) -> float:
        return self._now - self._offset

    async def sleep(self, seconds: float) -> None:
        until = self._now + max(0.0, seconds)
        self._sleeping += 1
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self._now >= until)
        finally:
            self._sleeping -= 1

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers it reaches."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; advance({seconds}) refused")
        self._now += seconds
        async with self._changed:
            self._changed.notify_all()


SYSTEM_CLOCK: Clock = SystemClock()
"""The clock every engine part uses unless one is injected."""
