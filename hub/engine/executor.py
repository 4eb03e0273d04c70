"""The executor: wires the loop for the executions this worker holds.

Claim (``leases``), plan and apply outcomes (``transitions``, pure), checkpoint the change
(one round trip: a step's success and the next step's start are one write), run the
launched steps (``invoke``). A crash therefore re-runs at most the steps that were in
flight, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from hub import metrics, wire
from hub.aio import wait_event
from hub.engine.checkpoint import Batcher
from hub.engine.clock import SYSTEM_CLOCK, Clock, SystemClock
from hub.engine.context import Container, StepContext
from hub.engine.execution import Execution
from hub.engine.fanout import FanoutRunner
from hub.engine.fanout_steps import CoreItemSteps, event_of
from hub.engine.graph import StepNode
from hub.engine.invoke import Invoker
from hub.engine.leases import Held, Leases
from hub.engine.payload import tail_lines
from hub.engine.registry import Registry, WorkflowSpec
from hub.engine.run import Run, RunStatus, StepState
from hub.engine.state import Failure, Phase
from hub.engine.transitions import (
    Change,
    CompensationFailed,
    Event,
    Launch,
    Released,
    SignalReceived,
    StepCut,
    TimerDue,
)
from hub.errors import LeaseLost, StoreError, UnknownWorkflow
from hub.settings import HubSettings
from hub.store.store import CheckpointRow, Store, is_data_error, is_disconnect

log = structlog.get_logger("hub.executor")

_OUTCOMES = ("success", "failure")
_BEFORE_WAITING = frozenset({StepState.NOT_STARTED, StepState.INVOKING, StepState.TEMP_FAILURE})
"""The states of a child step that will still wait for its child's end."""
"""Signal kinds that end a waiting step (a child's end is one)."""

_LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _record_landing(landed: list[str], step_id: str, _task: object) -> None:
    landed.append(step_id)


class Executor:
    """Drives held executions: the claim loop, local timers, and one drive task each."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        container: Container,
        settings: HubSettings,
        on_settled: Callable[[Run, bool], None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.owner = settings.worker_id
        self.lease = settings.lease_seconds
        self._on_settled = on_settled
        self.leases = Leases(store, self.owner, self.lease, clock)
        self.invoker = Invoker(settings, container)
        self.fanouts = FanoutRunner(store, settings, CoreItemSteps(self.invoker), clock)
        self._timers: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._poke = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._step_events_until = 0.0
        self.checkpoints: Batcher[CheckpointRow, uuid.UUID] = Batcher(
            store.checkpoint_batch, lambda r: r.id, isolate=is_data_error
        )

    @property
    def owned(self) -> dict[uuid.UUID, Held]:
        """The executions this worker holds, by id."""
        return self.leases.held

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._background = [
            asyncio.create_task(self._claim_loop(), name="hub-claim"),
            asyncio.create_task(self.leases.heartbeat(), name="hub-heartbeat"),
            asyncio.create_task(self.leases.fence(), name="hub-fence"),
        ]

    async def close(self) -> None:
        """Stop driving; hand what we hold to the next worker at once."""
        self._closing = True
        # taken first: each drive task forgets its execution as it ends
        holding = [h.execution for h in self.owned.values()
                   if not h.execution.finished and not h.execution.leaving]
        for t in self._background:
            t.cancel()
        for timer in self._timers.values():
            timer.cancel()
        tasks = [h.task for h in self.owned.values() if h.task is not None]
        for t in tasks:
            t.cancel()
        for t in [*self._background, *tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # a run whose cut step is still running keeps its lease until it runs out
        await self.leases.hand_over(
            [(ex.id, ex.epoch) for ex in holding if not ex.steps_outlived])

    def subscribers_present(self, ttl: float) -> None:
        """Someone, somewhere, runs ``hub.subscribe``: announce step transitions for ``ttl``."""
        self._step_events_until = time.monotonic() + ttl

    @property
    def step_events(self) -> bool:
        return time.monotonic() < self._step_events_until

    def poke(self) -> None:
        """Claim due executions now (a notification said some are)."""
        self._poke.set()

    def wake(self, execution_id: uuid.UUID) -> None:
        """A signal arrived for an execution we may hold."""
        held = self.owned.get(execution_id)
        if held is not None:
            held.wake.set()
        elif not self._closing:
            self._schedule_claim(execution_id, 0.0)

    @property
    def busy(self) -> bool:
        return any(h.task is not None for h in self.owned.values())

    # -- adopting executions -------------------------------------------------------------
    def new_execution(self, row: dict[str, Any], spec: WorkflowSpec) -> Execution:
        return Execution(row, spec, max_payload_bytes=self.settings.max_payload_bytes)

    def adopt(self, row: dict[str, Any], *, from_claim: bool,
              sent: float | None = None) -> Execution | None:
        try:
            spec = self.registry.get(row["workflow"], row["version"])
        except UnknownWorkflow as exc:
            task = asyncio.create_task(self._park(row, str(exc)))
            self._background.append(task)
            return None
        ex = self.new_execution(row, spec)
        self.run(ex, wake=from_claim and bool(row.get("has_signals")), sent=sent)
        metrics.EXECUTIONS_STARTED.labels(ex.workflow, "claimed" if from_claim else "new").inc()
        return ex

    def plan_start(self, ex: Execution) -> tuple[Launch, ...] | None:
        """Plan a new execution before it is stored, so that its insert also records its
        first steps as started (one round trip less). ``None``: nothing to fold in."""
        change = self._advance(ex, TimerDue(), {})
        if ex.finished or not change.launches or ex.phase != Phase.FORWARD:
            return None
        return change.launches

    def run(self, ex: Execution, *, wake: bool = False,
            launches: tuple[Launch, ...] | None = None,
            sent: float | None = None) -> None:
        """Drive ``ex`` (held under lease by this worker) from now on.

        ``sent``: when the claim that took the lease was sent (the clock's monotonic time)."""
        if launches is not None:
            ex.checkpointed()  # the insert stored the plan
        # A task of ours may still drive an older epoch of it: its lease ran out (Postgres
        # was away) and we claimed it back. The new task stops that one first.
        old = self.owned.get(ex.id)
        previous = None if old is None else old.task
        held = self.leases.hold(ex, sent)
        if wake:
            held.wake.set()  # read the signals left while nobody held it
        held.task = asyncio.create_task(self._drive(ex, held, launches, previous),
                                        name=f"hub-ex-{ex.sid}")

    async def _park(self, row: dict[str, Any], message: str) -> None:
        log.error("execution_parked", execution_id=str(row["id"]), workflow=row["workflow"],
                  version=row["version"], reason=message)
        await self.store.park(row["id"], row["epoch"], message)

    async def _claim_loop(self) -> None:
        last_purge = time.monotonic()
        while True:
            await wait_event(self._poke, self.settings.poll_interval)
            self._poke.clear()
            try:
                room = self.settings.max_executions - len(self.owned)
                if room > 0:
                    rows, sent = await self.leases.claim_due(min(room, 100))
                    if rows:
                        # leases of a dead worker expire a few ms apart: look again soon
                        asyncio.get_running_loop().call_later(0.25, self._poke.set)
                    for row in rows:
                        log.info("execution_claimed", execution_id=str(row["id"]),
                                 workflow=row["workflow"], epoch=row["epoch"])
                        self.adopt(row, from_claim=True, sent=sent)
                    if len(rows) == min(room, 100):
                        self._poke.set()
                if time.monotonic() - last_purge > 300:
                    last_purge = time.monotonic()
                    await self.store.purge_finished()
                    await self.store.purge_housekeeping(self.settings.housekeeping())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("claim_failed", error=repr(exc)[:300])

    def _schedule_claim(self, execution_id: uuid.UUID, delay: float) -> None:
        """Claim a released execution when its timer is due (by the injected clock)."""
        old = self._timers.pop(execution_id, None)
        if old is not None:
            old.cancel()

        async def fire() -> None:
            try:
                await self.clock.sleep(max(0.0, delay))
                if execution_id not in self.owned and not self._closing:
                    row, sent = await self.leases.claim_one(execution_id)
                    if row is not None:
                        self.adopt(row, from_claim=True, sent=sent)
            finally:
                if self._timers.get(execution_id) is asyncio.current_task():
                    del self._timers[execution_id]

        self._timers[execution_id] = asyncio.get_running_loop().create_task(fire())

    # -- driving -------------------------------------------------------------------------
    async def _drive(self, ex: Execution, held: Held, planned: tuple[Launch, ...] | None,
                     previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            log.warning("execution_reclaimed_while_driven", execution_id=ex.sid,
                        epoch=ex.epoch)
            previous.cancel()
            await asyncio.wait([previous])  # a cancel of this task still propagates
        running: dict[str, asyncio.Task[Event]] = {}
        # every log line of this task (and of the step tasks it starts) carries these
        structlog.contextvars.bind_contextvars(
            execution_id=ex.sid, workflow=ex.workflow, transaction_id=ex.transaction_id,
            **{k: ex.trigger[k] for k in ("topic", "partition", "offset")
               if ex.trigger and k in ex.trigger})
        try:
            await self._loop(ex, held, running, planned)
        except LeaseLost:
            log.warning("execution_abandoned", execution_id=ex.sid, reason="lease lost")
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if isinstance(exc, StoreError) or is_disconnect(exc):
                # Postgres went away: not the execution's fault, so never park it. Its lease
                # runs out and a worker (this one, once the database is back) claims it.
                log.warning("execution_abandoned", execution_id=ex.sid,
                            reason=f"database unavailable: {exc!r}"[:300])
                return
            log.error("engine_error", execution_id=ex.sid, error=repr(exc),
                      traceback=tail_lines(traceback.format_exc(), 2000))
            message = f"engine error: {exc!r}"
            with contextlib.suppress(Exception):
                await self.store.park(ex.id, ex.epoch, message)
            self._on_settled(dataclasses.replace(ex.snapshot(), parked=message), True)
        finally:
            for t in running.values():
                t.cancel()
            if running:
                # let cut steps wind down before the lease is handed on, so no other worker
                # starts one while this one's code still runs
                _, pending = await asyncio.wait(running.values(), timeout=self.lease / 2)
                ex.steps_outlived = bool(pending)
            # a newer drive of the same execution (claimed back) keeps its record
            self.leases.drop(ex.id, asyncio.current_task())

    def _advance(self, ex: Execution, event: Event,
                 running: dict[str, asyncio.Task[Event]]) -> Change:
        """Hand ``event`` to the core; log what it noted, cut what it cuts."""
        change = ex.advance(event, self.clock.now())
        for note in change.notes:
            log.log(_LOG_LEVELS[note.level], note.event, **note.fields)
            if note.event == "step_retry_scheduled":
                metrics.STEP_RETRIES.labels(ex.workflow,
                                            ex.graph.steps[note.fields["step"]].step_name).inc()
        for step_id in change.cut:
            task = running.get(step_id)
            if task is not None:
                task.cancel()
        return change

    async def _wait(self, waiters: set[asyncio.Future[Any]], timeout: float | None) -> set[
            asyncio.Future[Any]]:
        """Wait for the first of ``waiters``, or ``timeout`` seconds of the clock."""
        if timeout is None or type(self.clock) is SystemClock:
            # the machine's time: asyncio's own timeout, no sleeper task per wait
            done, _ = await asyncio.wait(waiters, timeout=None if timeout is None else
                                         max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
            return done
        sleeper = None
        if timeout is not None:
            sleeper = asyncio.ensure_future(self.clock.sleep(max(0.0, timeout)))
            waiters = waiters | {sleeper}
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if sleeper is not None:
                sleeper.cancel()
        return done

    async def _loop(self, ex: Execution, held: Held, running: dict[str, asyncio.Task[Event]],
                    planned: tuple[Launch, ...] | None) -> None:
        wake = held.wake
        landed: list[str] = []  # step ids in the order their tasks finished
        while True:
            if wake.is_set():
                wake.clear()
                await self._apply_signals(ex, running)
            if planned is not None:  # planned and stored with the start
                launches, planned = planned, None
            else:
                launches = self._advance(ex, TimerDue(frozenset(running)), running).launches
            if ex.finished:
                await self._finish(ex)
                return
            if not running and not launches:
                due = ex.state.next_due()
                now = self.clock.now()
                if due is None or due - now > self.settings.hold_timer_seconds:
                    await self._release(ex, due)
                    return
                if ex.pending.writes:
                    await self._checkpoint(ex)
                wake_task = asyncio.ensure_future(wake.wait())
                try:
                    await self._wait({wake_task}, due - now)
                finally:
                    wake_task.cancel()
                continue
            if ex.pending.writes:
                await self._checkpoint(ex)
            for launch in launches:
                node = ex.graph.steps[launch.step]
                ctx = ex.attempts[node.id] = self.invoker.context(
                    ex, node, launch.attempt, launch.compensating)
                coro = (self._compensate(ex, node, ctx) if launch.compensating
                        else self._invoke(ex, node, ctx))
                task = asyncio.create_task(coro)
                task.add_done_callback(functools.partial(_record_landing, landed, node.id))
                running[node.id] = task
                if node.options.background_execution and not launch.compensating:
                    self._on_settled(ex.snapshot(), False)
            waiters: set[asyncio.Future[Any]] = set(running.values())
            wake_task = asyncio.ensure_future(wake.wait())
            waiters.add(wake_task)
            due = ex.state.next_due()
            try:
                done = await self._wait(
                    waiters, None if due is None else due - self.clock.now())
            finally:
                wake_task.cancel()  # also when the drive is cut: no task left pending
            # outcomes are applied in the order the steps finished, which is the order
            # compensation must reverse (parallel steps may finish in one wake-up)
            finished = [sid for sid in landed if sid in running and running[sid] in done]
            landed[:] = [sid for sid in landed if sid not in finished]
            for step_id in finished:
                task = running.pop(step_id)
                compensating = ex.state.step(step_id).state == StepState.COMPENSATING
                outcome: Event
                if not task.cancelled():
                    outcome = task.result()
                elif compensating:
                    outcome = CompensationFailed(step_id, Failure.of(
                        step_id, "compensation cut", ex.state.step(step_id).comp_attempts,
                        ), retryable=True)
                else:
                    outcome = StepCut(step_id)
                done_ctx = ex.attempts.pop(step_id, None)
                if done_ctx is not None and done_ctx.calls.calls:
                    # whatever the attempt came to, a cut included: its calls happened
                    ex.calls.extend(done_ctx.calls.rows(done_ctx.step, done_ctx.attempt,
                                                        done_ctx.compensating))
                self._advance(ex, outcome, running)
                if ex.early:
                    self._take_early(ex, running)

    async def _invoke(self, ex: Execution, node: StepNode, ctx: StepContext) -> Event:
        if node.fanout is not None:  # its items are run (and stored) by the fan-out runner
            return event_of(node, await self.fanouts.run(ex, node), compensating=False)
        t0 = time.perf_counter()
        event = await self.invoker.invoke(ex, node, ctx)
        metrics.STEP_DURATION.labels(ex.workflow, node.step_name, _kind(event)).observe(
            time.perf_counter() - t0)
        return event

    async def _compensate(self, ex: Execution, node: StepNode, ctx: StepContext) -> Event:
        if node.fanout is not None:
            return event_of(node, await self.fanouts.compensate(ex, node), compensating=True)
        event = await self.invoker.compensate(ex, node, ctx)
        metrics.COMPENSATIONS.labels(ex.workflow, node.step_name, _kind(event)).inc()
        return event

    # -- signals from outside ------------------------------------------------------------
    async def _apply_signals(self, ex: Execution,
                             running: dict[str, asyncio.Task[Event]]) -> None:
        rows = await self.store.read_signals(ex.id)
        # rows stay until the checkpoint after they were applied: a second read skips them
        done = set(ex.applied).union(sid for sid, _ in ex.early.values())
        for sig in rows:
            sid = int(sig["id"])
            if sid in done:
                continue
            ex.signals_seen = max(ex.signals_seen, sid)
            signal = SignalReceived(sig["kind"], sig["step"], sig["payload"])
            node = ex.graph.steps.get(sig["step"] or "")
            if (node is not None and node.child is not None and sig["kind"] in _OUTCOMES
                    and ex.state.step(node.id).state in _BEFORE_WAITING):
                # a child that ended before its step waited (its start not yet checkpointed,
                # or to be retried): taken once the step waits for it
                ex.early[node.id] = (sid, signal)
                continue
            ex.applied.append(sid)
            self._advance(ex, signal, running)
        if ex.early:
            self._take_early(ex, running)

    def _take_early(self, ex: Execution, running: dict[str, asyncio.Task[Event]]) -> None:
        """Child ends that came before their steps waited: each is applied once its step
        waits, kept while the step is still to be (re)started, or dropped as moot once the
        step moved on otherwise (a cancel undoes the child through the compensation)."""
        for step_id, (sid, signal) in list(ex.early.items()):
            state = ex.state.step(step_id).state
            if state in _BEFORE_WAITING:
                continue
            del ex.early[step_id]
            ex.applied.append(sid)
            if state == StepState.WAITING:
                self._advance(ex, signal, running)

    # -- checkpoints ---------------------------------------------------------------------
    def _row(self, ex: Execution, *, lease: bool, due_s: float | None, finished: bool) -> (
        CheckpointRow
    ):
        pending, state = ex.pending, ex.state
        events = None
        # a notification costs a database-wide lock at commit: step transitions are only
        # announced while someone subscribes; ends, waits and outbox rows always are
        if (pending.events and self.step_events) or finished or pending.outbox or not lease:
            body: dict[str, Any] = {
                wire.N_ID: ex.sid, wire.N_WORKFLOW: ex.workflow,
                wire.N_TRANSACTION: ex.transaction_id, wire.N_STATUS: state.status,
                wire.N_EVENTS: [list(e) for e in pending.events[:50]]}
            if pending.outbox:
                body[wire.N_OUTBOX] = True  # wakes the outbox relays
            events = json.dumps(body)
            if len(events) > wire.NOTIFY_MAX_BYTES:
                body[wire.N_EVENTS] = []
                events = json.dumps(body)
        retain = ex.spec.retention_time
        return CheckpointRow(
            id=ex.id,
            epoch=ex.epoch,
            status=state.status,
            phase=state.phase,
            steps=json.dumps({s: r.to_json() for s, r in pending.steps.items()},
                             separators=(",", ":")),
            result=json.dumps(state.result) if finished else None,
            error=json.dumps(pending.error.to_json()) if pending.error is not None else None,
            hold=lease,
            due_s=None if lease else due_s,
            finished=finished,
            retain_s=(retain.total_seconds() if retain is not None
                      else self.settings.retention_days * 86400.0),
            events=events,
            outbox=json.dumps(list(pending.outbox)) if pending.outbox else None,
            calls=json.dumps(ex.calls, separators=(",", ":")) if ex.calls else None,
            seen=ex.signals_seen,
        )

    async def _write(self, ex: Execution, row: CheckpointRow) -> None:
        ok = await self.checkpoints.write(row)
        if not ok:
            raise LeaseLost(f"execution {ex.sid}: epoch {ex.epoch} is no longer current")
        ex.checkpointed()
        if ex.applied:
            ids, ex.applied = ex.applied, []
            await self.store.delete_signals(ex.id, ids)

    async def _checkpoint(self, ex: Execution) -> None:
        await self._write(ex, self._row(ex, lease=True, due_s=None, finished=False))

    async def _release(self, ex: Execution, due: float | None) -> None:
        """Nothing to run until ``due`` (or a signal): let the lease go."""
        ex.leaving = True
        self._advance(ex, Released(), {})
        due_s = None if due is None else max(0.0, due - self.clock.now())
        await self._write(ex, self._row(ex, lease=False, due_s=due_s, finished=False))
        log.info("execution_released", execution_id=ex.sid, status=ex.status, due_in_s=due_s)
        if due_s is not None:
            self._schedule_claim(ex.id, due_s)
        if ex.status == RunStatus.WAITING:
            self._on_settled(ex.snapshot(), False)

    async def _finish(self, ex: Execution) -> None:
        ex.leaving = True
        metrics.EXECUTIONS_FINISHED.labels(ex.workflow, ex.status).inc()
        await self._write(ex, self._row(ex, lease=False, due_s=None, finished=True))
        log.info("execution_finished", execution_id=ex.sid, workflow=ex.workflow,
                 status=ex.status)
        self._on_settled(ex.snapshot(), True)
        if not ex.spec.store and ex.status == RunStatus.SUCCEEDED:
            # its details go; its row stays for the dedupe window, so a redelivered event or
            # a retried request with the same transaction id finds it instead of running again
            await self.store.forget_finished(ex.id, self.settings.dedupe_window_s)


def _kind(event: Event) -> str:
    """The outcome label of a step attempt in metrics (as before the core was typed)."""
    name = type(event).__name__
    if name in ("StepSucceeded", "CompensationSucceeded"):
        return "ok"
    if name == "StepSkipped":
        return "skip"
    if name == "StepTimedOut":
        return "timeout"
    retryable = getattr(event, "retryable", False)
    return "retryable" if retryable else "permanent"
