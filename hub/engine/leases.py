"""Leases: which executions this worker holds, and for how long it surely still does.

One ``Held`` record per execution (its drive task, its wake-up, its validity). A lease is
taken by a claim, renewed by the heartbeat, cut by the fence when it may have run out
(invariant 5: one owner at a time), and handed over on close. Validity is measured on the
clock's monotonic time from when the claim or renewal was *sent*: Postgres's expiry is
later, so our view errs on the side of stopping early.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from hub import metrics
from hub.engine.clock import Clock
from hub.engine.execution import Execution
from hub.store.store import Store

log = structlog.get_logger("hub.leases")

Row = dict[str, Any]


@dataclass(slots=True, eq=False)
class Held:
    """One execution this worker holds."""

    execution: Execution
    epoch: int
    valid_until: float | None
    """Monotonic time until which the lease surely holds; None once fenced."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Leases:
    """Claims, renews, fences and hands over the leases of this worker."""

    def __init__(self, store: Store, owner: str, lease_s: float, clock: Clock) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        self.held: dict[uuid.UUID, Held] = {}

    # -- records --------------------------------------------------------------------------
    def hold(self, execution: Execution, sent: float | None) -> Held:
        """Record a lease taken at ``sent`` (monotonic; now if None)."""
        start = self.clock.monotonic() if sent is None else sent
        rec = Held(execution, execution.epoch, start + self.lease_s)
        self.held[execution.id] = rec
        return rec

    def drop(self, execution_id: uuid.UUID, task: asyncio.Task[None] | None) -> None:
        """Forget a lease, unless a newer drive (claimed back) holds it now."""
        rec = self.held.get(execution_id)
        if rec is not None and rec.task is task:
            del self.held[execution_id]

    # -- claims ---------------------------------------------------------------------------
    async def claim_due(self, limit: int) -> tuple[list[Row], float]:
        """Claim up to ``limit`` due executions; with the time the claim was sent."""
        sent = self.clock.monotonic()
        with metrics.CLAIM_LATENCY.time():
            rows = await self.store.claim_due(self.owner, self.lease_s, limit)
        return rows, sent

    async def claim_one(self, execution_id: uuid.UUID) -> tuple[Row | None, float]:
        sent = self.clock.monotonic()
        return await self.store.claim_one(self.owner, self.lease_s, execution_id), sent

    # -- keeping them ---------------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Renew every held lease, a quarter lease apart (twice a renewal may fail before
        the fence, at three quarters of a lease, cuts)."""
        while True:
            await asyncio.sleep(self.lease_s / 4)
            held = [(ex_id, rec.epoch) for ex_id, rec in self.held.items()
                    if not rec.execution.leaving]
            if not held:
                continue
            sent = self.clock.monotonic()
            try:
                kept = await self.store.renew_leases(held, self.lease_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease_renew_failed", error=repr(exc)[:300])
                continue
            for ex_id, epoch in held:
                rec = self.held.get(ex_id)
                if rec is None or rec.epoch != epoch:
                    continue  # gone, or claimed again meanwhile (a newer lease)
                if ex_id in kept:
                    rec.valid_until = sent + self.lease_s
                # one that released or finished meanwhile let its lease go on purpose
                elif not rec.execution.leaving:
                    log.warning("lease_lost", execution_id=str(ex_id))
                    if rec.task is not None:
                        rec.task.cancel()

    async def fence(self) -> None:
        """Stop driving what we can no longer be sure to hold.

        The heartbeat cannot renew while Postgres is away; once a lease may have run out,
        another worker may claim the execution as soon as Postgres is back and run the steps
        ours are running: a step run twice at once, which no natural-key lookup catches. So
        a quarter of a lease before it may run out, by our own clock, the drive is cancelled.
        """
        margin = self.lease_s / 4
        while True:
            # checked often enough that a cut lands an eighth of a lease early at the least
            await asyncio.sleep(min(margin / 2, 1.0))
            now = self.clock.monotonic()
            for ex_id, rec in list(self.held.items()):
                until = rec.valid_until
                if until is None or until - margin > now or rec.execution.leaving:
                    continue
                if rec.task is not None and not rec.task.done():
                    log.warning("lease_expiring_unrenewed", execution_id=str(ex_id),
                                unrenewed_s=round(now - until + self.lease_s, 2))
                    rec.task.cancel()
                rec.valid_until = None

    async def hand_over(self, held: list[tuple[uuid.UUID, int]]) -> None:
        """Let these leases go at once, so the next worker need not wait for them to expire."""
        if held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_leases(held), 5)
        self.held.clear()
