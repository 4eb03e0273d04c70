"""The executor: advances the executions this worker holds, one checkpoint per transition.

Each execution is driven by one task. A loop plans what may run now (conditions, retries,
compensations), checkpoints the plan together with the outcomes that led to it (so a step's
success and the next step's start cost one round trip), then runs the planned steps. A
crash therefore re-runs at most the steps that were in flight, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from pydantic import ValidationError

from hub import metrics, tracing
from hub.aio import wait_event
from hub.engine.checkpoint import Batcher
from hub.engine.context import Container, StepContext
from hub.engine.execution import Execution, ResolveError
from hub.engine.fanout import FanoutRunner
from hub.engine.graph import StepNode
from hub.engine.outcome import Outcome
from hub.engine.outcome import error_record as _error
from hub.engine.payload import Unserializable, encode, tail_lines, to_json
from hub.engine.registry import Registry
from hub.engine.response import StepResponse
from hub.engine.run import Run, RunStatus, StepState
from hub.errors import LeaseLost, PayloadTooLarge, StoreError, UnknownWorkflow
from hub.redaction import Redaction
from hub.settings import HubSettings
from hub.store.store import CheckpointRow, Store, is_data_error, is_disconnect
from hub.types import JSON

log = structlog.get_logger("hub.executor")


def _failed_map(node: StepNode, state: str) -> bool:
    """A map step that failed may have completed items: it is undone like a step cut."""
    return node.fanout is not None and state in (StepState.PERMANENT_FAILURE,
                                                 StepState.TIMEOUT)


def _record_landing(landed: list[str], step_id: str, _task: object) -> None:
    landed.append(step_id)


class Executor:
    """Drives held executions; owns the claim loop, the lease heartbeat and local timers."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        container: Container,
        settings: HubSettings,
        on_settled: Callable[[Run, bool], None],
    ) -> None:
        self.store = store
        self.registry = registry
        self.container = container
        self.settings = settings
        self.owner = settings.worker_id
        self.lease = settings.lease_seconds
        self._on_settled = on_settled
        self.owned: dict[uuid.UUID, Execution] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        # when each held lease surely still holds, by this process's clock: the time the
        # claim or renewal that set it was sent, plus the lease (Postgres's expiry is later)
        self._valid_until: dict[uuid.UUID, float] = {}
        self._wakes: dict[uuid.UUID, asyncio.Event] = {}
        self._timers: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self._poke = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._step_events_until = 0.0
        self._redaction = Redaction(settings.redact_fields)
        self.checkpoints: Batcher[CheckpointRow, uuid.UUID] = Batcher(
            store.checkpoint_batch, lambda r: r.id, isolate=is_data_error
        )
        self.fanouts = FanoutRunner(store, settings, self)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._background = [
            asyncio.create_task(self._claim_loop(), name="hub-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="hub-heartbeat"),
            asyncio.create_task(self._fence_loop(), name="hub-fence"),
        ]

    async def close(self) -> None:
        """Stop driving; hand what we hold to the next worker at once."""
        self._closing = True
        # taken first: each drive task forgets its execution as it ends
        holding = [ex for ex in self.owned.values() if not ex.finished and not ex.leaving]
        for t in self._background:
            t.cancel()
        for timer in self._timers.values():
            timer.cancel()
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in [*self._background, *tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # a run whose cut step is still running keeps its lease until it runs out
        held = [(ex.id, ex.epoch) for ex in holding if not ex.steps_outlived]
        if held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_leases(held), 5)
        self.owned.clear()

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
        ev = self._wakes.get(execution_id)
        if ev is not None:
            ev.set()
        elif not self._closing:
            self._schedule_claim(execution_id, 0.0)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    # -- adopting executions -------------------------------------------------------------
    def adopt(self, row: dict[str, Any], *, from_claim: bool,
              sent: float | None = None) -> Execution | None:
        try:
            spec = self.registry.get(row["workflow"], row["version"])
        except UnknownWorkflow as exc:
            task = asyncio.create_task(self._park(row, str(exc)))
            self._background.append(task)
            return None
        ex = Execution(row, spec)
        self.run(ex, wake=from_claim and bool(row.get("has_signals")), sent=sent)
        metrics.EXECUTIONS_STARTED.labels(ex.workflow, "claimed" if from_claim else "new").inc()
        return ex

    def plan_start(self, ex: Execution) -> list[tuple[StepNode, bool]] | None:
        """Plan a new execution before it is stored, so that its insert also records its
        first steps as started (one round trip less). ``None``: nothing to fold in."""
        launches = self._plan(ex, {})
        if ex.finished or not launches or ex.phase != "forward":
            return None
        if ex.status == RunStatus.PENDING:
            ex.status = RunStatus.RUNNING
        return launches

    def run(self, ex: Execution, *, wake: bool = False,
            launches: list[tuple[StepNode, bool]] | None = None,
            sent: float | None = None) -> None:
        """Drive ``ex`` (held under lease by this worker) from now on.

        ``sent``: when the claim that took the lease was sent (``time.monotonic()``)."""
        if launches is not None:
            ex.dirty.clear()
            ex.events.clear()
            ex.status_dirty = False
        # A task of ours may still drive an older epoch of it: its lease ran out (Postgres
        # was away) and we claimed it back. The new task stops that one first.
        previous = self._tasks.get(ex.id)
        self.owned[ex.id] = ex
        self._valid_until[ex.id] = (time.monotonic() if sent is None else sent) + self.lease
        self._wakes[ex.id] = asyncio.Event()
        if wake:
            self._wakes[ex.id].set()  # read the signals left while nobody held it
        self._tasks[ex.id] = asyncio.create_task(self._drive(ex, launches, previous),
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
                room = self.settings.max_executions - len(self._tasks)
                if room > 0:
                    t0 = time.perf_counter()
                    sent = time.monotonic()
                    rows = await self.store.claim_due(self.owner, self.lease, min(room, 100))
                    metrics.CLAIM_LATENCY.observe(time.perf_counter() - t0)
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
        old = self._timers.pop(execution_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(execution_id, None)
            if execution_id not in self._tasks and not self._closing:
                t = loop.create_task(self._claim_one(execution_id))
                self._background.append(t)
                t.add_done_callback(
                    lambda d: self._background.remove(d) if d in self._background else None
                )

        self._timers[execution_id] = loop.call_later(max(0.0, delay), fire)

    async def _claim_one(self, execution_id: uuid.UUID) -> None:
        sent = time.monotonic()
        row = await self.store.claim_one(self.owner, self.lease, execution_id)
        if row is not None:
            self.adopt(row, from_claim=True, sent=sent)

    async def _heartbeat_loop(self) -> None:
        while True:
            # twice a renewal may fail before the fence (three quarters of a lease) cuts
            await asyncio.sleep(self.lease / 4)
            held = [(ex.id, ex.epoch) for ex in self.owned.values() if not ex.leaving]
            if not held:
                continue
            sent = time.monotonic()
            try:
                kept = await self.store.renew_leases(held, self.lease)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease_renew_failed", error=repr(exc)[:300])
                continue
            for ex_id, epoch in held:
                ex = self.owned.get(ex_id)
                if ex is None or ex.epoch != epoch:
                    continue  # gone, or claimed again meanwhile (a newer lease)
                if ex_id in kept:
                    self._valid_until[ex_id] = sent + self.lease
                # one that released or finished meanwhile let its lease go on purpose
                elif not ex.leaving:
                    log.warning("lease_lost", execution_id=str(ex_id))
                    task = self._tasks.get(ex_id)
                    if task is not None:
                        task.cancel()

    async def _fence_loop(self) -> None:
        """Stop driving what we can no longer be sure to hold.

        The heartbeat cannot renew while Postgres is away; once a lease may have run out,
        another worker may claim the execution as soon as Postgres is back and run the steps
        ours are running: a step run twice at once, which no natural-key lookup catches. So
        a quarter of a lease before it may run out, by our own clock, the drive is cancelled.
        """
        margin = self.lease / 4
        while True:
            # checked often enough that a cut lands an eighth of a lease early at the least
            await asyncio.sleep(min(margin / 2, 1.0))
            now = time.monotonic()
            for ex_id, until in list(self._valid_until.items()):
                ex = self.owned.get(ex_id)
                if until - margin > now or ex is None or ex.leaving:
                    continue
                task = self._tasks.get(ex_id)
                if task is not None and not task.done():
                    log.warning("lease_expiring_unrenewed", execution_id=str(ex_id),
                                unrenewed_s=round(now - until + self.lease, 2))
                    task.cancel()
                self._valid_until.pop(ex_id, None)

    # -- driving -------------------------------------------------------------------------
    async def _drive(self, ex: Execution,
                     planned: list[tuple[StepNode, bool]] | None = None,
                     previous: asyncio.Task[None] | None = None) -> None:
        if previous is not None and not previous.done():
            log.warning("execution_reclaimed_while_driven", execution_id=ex.sid,
                        epoch=ex.epoch)
            previous.cancel()
            await asyncio.wait([previous])  # a cancel of this task still propagates
        running: dict[str, asyncio.Task[Outcome]] = {}
        # every log line of this task (and of the step tasks it starts) carries these
        structlog.contextvars.bind_contextvars(
            execution_id=ex.sid, workflow=ex.workflow, transaction_id=ex.transaction_id,
            **{k: ex.trigger[k] for k in ("topic", "partition", "offset")
               if ex.trigger and k in ex.trigger})
        try:
            await self._loop(ex, running, planned)
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
            # a newer drive of the same execution (claimed back) keeps its entries
            if self._tasks.get(ex.id) is asyncio.current_task():
                self.owned.pop(ex.id, None)
                self._tasks.pop(ex.id, None)
                self._wakes.pop(ex.id, None)
                self._valid_until.pop(ex.id, None)

    async def _loop(self, ex: Execution, running: dict[str, asyncio.Task[Outcome]],
                    planned: list[tuple[StepNode, bool]] | None) -> None:
        wake = self._wakes[ex.id]
        landed: list[str] = []  # step ids in the order their tasks finished
        while True:
            if wake.is_set():
                wake.clear()
                await self._apply_signals(ex, running)
            if planned is not None:  # planned and stored with the start
                launches, planned = planned, None
            else:
                launches = self._plan(ex, running)
            if ex.finished:
                await self._finish(ex)
                return
            idle = not running and not launches
            if idle:
                due = ex.next_due()
                now = time.time()
                if due is None or due - now > self.settings.hold_timer_seconds:
                    await self._release(ex, due)
                    return
                if ex.dirty or ex.status_dirty:
                    await self._checkpoint(ex)
                await wait_event(wake, max(0.0, due - now))
                continue
            if ex.dirty or ex.status_dirty:
                await self._checkpoint(ex)
            for node, compensating in launches:
                attempt = int(ex.step(node.id).get(
                    "comp_attempts" if compensating else "attempts", 1))
                coro = (self._compensate(ex, node, attempt) if compensating
                        else self._invoke(ex, node, attempt))
                task = asyncio.create_task(coro)
                task.add_done_callback(functools.partial(_record_landing, landed, node.id))
                running[node.id] = task
                if node.options.background_execution and not compensating:
                    self._on_settled(ex.snapshot(), False)
            waiters: set[asyncio.Future[Any]] = set(running.values())
            wake_task = asyncio.ensure_future(wake.wait())
            waiters.add(wake_task)
            due = ex.next_due()
            timeout = None if due is None else max(0.0, due - time.time())
            try:
                done, _ = await asyncio.wait(waiters, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake_task.cancel()  # also when the drive is cut: no task left pending
            # outcomes are applied in the order the steps finished, which is the order
            # compensation must reverse (parallel steps may finish in one wake-up)
            finished = [sid for sid in landed if sid in running and running[sid] in done]
            landed[:] = [sid for sid in landed if sid not in finished]
            for step_id in finished:
                task = running.pop(step_id)
                outcome = Outcome("cut") if task.cancelled() else task.result()
                ctx = ex.attempts.pop(step_id, None)
                if ctx is not None and ctx.calls.calls:
                    # whatever the attempt came to, a cut included: its calls happened
                    ex.calls.extend(ctx.calls.rows(ctx.step, ctx.attempt, ctx.compensating))
                node = ex.graph.steps[step_id]
                if ex.state(step_id) == StepState.COMPENSATING:
                    self._on_compensated(ex, node, outcome)
                else:
                    self._on_invoked(ex, node, outcome)

    # -- planning ------------------------------------------------------------------------
    def _plan(
        self, ex: Execution, running: dict[str, asyncio.Task[Outcome]]
    ) -> list[tuple[StepNode, bool]]:
        if ex.finished:
            return []
        if ex.phase == "forward":
            return self._plan_forward(ex, running)
        return self._plan_compensation(ex, running)

    def _plan_forward(
        self, ex: Execution, running: dict[str, asyncio.Task[Outcome]]
    ) -> list[tuple[StepNode, bool]]:
        launches: list[tuple[StepNode, bool]] = []
        now = time.time()
        cache: dict[str, JSON] = {}
        changed = True
        while changed:
            changed = False
            for node in ex.graph.steps.values():
                state = ex.state(node.id)
                if node.id in running:
                    continue
                if state == StepState.NOT_STARTED:
                    if not all(ex.settled(a) for a in node.after):
                        continue
                    try:
                        holds = ex.condition_holds(node, cache)
                    except ResolveError as exc:
                        ex.fail(_error(node.id, str(exc), 0))
                        return self._plan_compensation(ex, running)
                    if not holds:
                        ex.set_step(node.id, "step_skipped", state=StepState.SKIPPED,
                                    finished_at=now)
                        changed = True
                        continue
                    launches.append((node, False))
                    ex.set_step(node.id, "step_begin", state=StepState.INVOKING,
                                attempts=int(ex.step(node.id).get("attempts", 0)) + 1,
                                started_at=now, due=None)
                elif state == StepState.INVOKING:
                    # held by us but not running: the previous owner died mid-step
                    launches.append((node, False))
                    ex.set_step(node.id, "step_begin",
                                attempts=int(ex.step(node.id).get("attempts", 0)) + 1,
                                started_at=now)
                elif state == StepState.TEMP_FAILURE:
                    due = ex.step(node.id).get("due")
                    if due is not None and due <= now:
                        launches.append((node, False))
                        ex.set_step(node.id, "step_begin", state=StepState.INVOKING,
                                    attempts=int(ex.step(node.id).get("attempts", 0)) + 1,
                                    started_at=now, due=None)
                elif state == StepState.WAITING:
                    due = ex.step(node.id).get("due")
                    if due is not None and due <= now:
                        ex.set_step(node.id, "step_failure", state=StepState.TIMEOUT, due=None,
                                    error=_error(node.id, "async step timed out after "
                                                 f"{node.options.timeout}s", ex.step(node.id)
                                                 .get("attempts", 1)), finished_at=now)
                        self._on_permanent(ex, node, ex.step(node.id)["error"])
                        if ex.phase != "forward":
                            return self._plan_compensation(ex, running)
                        changed = True
        if ex.phase != "forward":
            return self._plan_compensation(ex, running)
        if not launches and not running and all(ex.settled(s) for s in ex.graph.steps):
            try:
                result = to_json(ex.resolve(ex.graph.result, cache), "the workflow's result")
                encode(result, f"result of workflow {ex.workflow!r}",
                       self.settings.max_payload_bytes)
            except (ResolveError, Unserializable, PayloadTooLarge) as exc:
                ex.fail(_error("", str(exc), 0))
                return self._plan_compensation(ex, running)
            ex.result = result
            ex.finish(RunStatus.SUCCEEDED)
            return []
        status = self._live_status(ex, bool(running or launches))
        if status != ex.status:
            if ex.status == RunStatus.PENDING:
                ex.events.insert(0, ["begin", ""])
            ex.status = status
            ex.status_dirty = True
        return launches

    def _plan_compensation(
        self, ex: Execution, running: dict[str, asyncio.Task[Outcome]]
    ) -> list[tuple[StepNode, bool]]:
        if ex.phase == "cancelling" or (ex.error or {}).get("type") == "CompensationRequested":
            # an operator stopped it: steps in flight are cut, not awaited
            for step_id, task in running.items():
                if ex.state(step_id) == StepState.INVOKING:
                    task.cancel()
        if any(ex.state(s) == StepState.INVOKING for s in running):
            ex.status, ex.status_dirty = RunStatus.RUNNING, True
            return []  # let in-flight steps land first: a success must be compensated too
        for step_id, st in list(ex.steps.items()):
            # waiting for the outside (a payment authorised, awaiting its confirmation), or
            # left mid-call by a worker that died: undone too, latest first
            if (st.get("seq") is None and self._compensable(ex.graph.steps[step_id])
                    and (st["state"] in (StepState.WAITING, StepState.INVOKING)
                         or _failed_map(ex.graph.steps[step_id], st["state"]))):
                ex.interrupt(step_id, st.get("compensate_input"))
        now = time.time()
        order = sorted(
            (s for s, st in ex.steps.items()
             if st.get("seq") is not None and self._compensable(ex.graph.steps[s])),
            key=lambda s: ex.steps[s]["seq"], reverse=True,
        )
        for step_id in order:
            state = ex.state(step_id)
            node = ex.graph.steps[step_id]
            if state == StepState.REVERTED:
                continue
            if state == StepState.FAILED:
                if ex.status != RunStatus.COMPENSATION_FAILED:
                    ex.finish(RunStatus.COMPENSATION_FAILED)
                return []
            if step_id in running or state == StepState.WAITING_TO_COMPENSATE:
                status = RunStatus.RUNNING if step_id in running else RunStatus.WAITING
                if ex.status != status:
                    ex.status, ex.status_dirty = status, True
                return []
            st = ex.step(step_id)
            if state == StepState.COMPENSATING and st.get("due") and st["due"] > now:
                return []  # a compensation retry is scheduled
            ex.set_step(step_id, "compensate_step_begin", state=StepState.COMPENSATING,
                        comp_attempts=int(st.get("comp_attempts", 0)) + 1, due=None)
            if ex.status != RunStatus.RUNNING:
                ex.status, ex.status_dirty = RunStatus.RUNNING, True
            return [(node, True)]
        ex.finish(RunStatus.CANCELLED if ex.phase == "cancelling" else RunStatus.COMPENSATED)
        return []

    @staticmethod
    def _compensable(node: StepNode) -> bool:
        return node.compensate is not None and not node.options.no_compensation

    @staticmethod
    def _live_status(ex: Execution, active: bool) -> str:
        if active:
            return RunStatus.RUNNING
        if ex.awaiting_outside():
            return RunStatus.WAITING
        return RunStatus.RUNNING

    # -- outcomes ------------------------------------------------------------------------
    def _on_invoked(self, ex: Execution, node: StepNode, outcome: Outcome) -> None:
        st = ex.step(node.id)
        attempts = int(st.get("attempts", 1))
        now = time.time()
        opts = node.options
        if outcome.kind == "cut":
            # cut by a cancel or an operator's compensation: it never completed, but its call
            # may have reached the outside system, so its compensation runs (told so)
            if self._compensable(node):
                ex.interrupt(node.id)
            else:
                ex.set_step(node.id, None, state=StepState.NOT_STARTED, due=None)
            return
        if outcome.kind == "ok":
            if opts.is_async:
                due = st["started_at"] + opts.timeout if opts.timeout else None
                # what the call returned to undo it (a payment intent's id) is kept: if the
                # run rolls back while this step waits, its compensation needs it
                ex.set_step(node.id, "step_awaiting", state=StepState.WAITING, due=due,
                            compensate_input=outcome.compensate_input)
                log.info("step_awaiting", execution_id=ex.sid, step=node.id)
                early = ex.early.pop(node.id, None)
                if early is not None:
                    self._apply_signal(ex, early[0], node.id, early[1], {})
            else:
                ex.complete(node.id, outcome.output, outcome.compensate_input)
                log.debug("step_succeeded", execution_id=ex.sid, step=node.id, attempt=attempts)
            ex.outbox.extend(outcome.outbox)
            return
        if outcome.kind == "skip":
            ex.set_step(node.id, "step_skipped", state=StepState.SKIPPED, finished_at=now)
            return
        error = outcome.error or _error(node.id, "unknown failure", attempts)
        if outcome.kind == "retryable" and attempts <= opts.max_retries:
            due = now + opts.retry_delay(attempts) if opts.auto_retry else None
            ex.set_step(node.id, "step_failure", state=StepState.TEMP_FAILURE, error=error,
                        due=due)
            metrics.STEP_RETRIES.labels(ex.workflow, node.step_name).inc()
            log.warning("step_retry_scheduled", execution_id=ex.sid, step=node.id,
                        attempt=attempts, delay_s=None if due is None else round(due - now, 3),
                        error=error["message"][:200])
            return
        state = StepState.TIMEOUT if outcome.kind == "timeout" else StepState.PERMANENT_FAILURE
        ex.set_step(node.id, "step_failure", state=state, error=error, finished_at=now, due=None)
        log.warning("step_failed", execution_id=ex.sid, step=node.id, attempt=attempts,
                    error=error["message"][:200], state=state)
        self._on_permanent(ex, node, error)

    def _on_permanent(self, ex: Execution, node: StepNode, error: dict[str, Any]) -> None:
        opts = node.options
        if opts.continue_on_permanent_failure:
            return
        skip = opts.skip_on_permanent_failure
        if skip:
            target = skip if isinstance(skip, str) else None
            keep: set[str] = set()
            if target is not None:
                if target not in ex.graph.steps:
                    ex.fail(error | {"message": f"{error['message']} (and "
                                     f"skip_on_permanent_failure names unknown step {target!r})"})
                    return
                keep = self._descendants(ex, target)
            now = time.time()
            for other in ex.graph.steps:
                if other not in keep and ex.state(other) == StepState.NOT_STARTED:
                    ex.set_step(other, "step_skipped", state=StepState.SKIPPED, finished_at=now)
            return
        ex.fail(error)

    @staticmethod
    def _descendants(ex: Execution, root: str) -> set[str]:
        out = {root}
        changed = True
        while changed:
            changed = False
            for node in ex.graph.steps.values():
                if node.id not in out and any(a in out for a in node.after):
                    out.add(node.id)
                    changed = True
        return out

    def _on_compensated(self, ex: Execution, node: StepNode, outcome: Outcome) -> None:
        st = ex.step(node.id)
        attempts = int(st.get("comp_attempts", 1))
        if outcome.kind == "ok":
            ex.outbox.extend(outcome.outbox)
            if node.options.compensate_async:
                ex.set_step(node.id, "compensate_step_awaiting",
                            state=StepState.WAITING_TO_COMPENSATE)
                return
            ex.set_step(node.id, "compensate_step_success", state=StepState.REVERTED,
                        compensated_at=time.time(), due=None)
            log.info("step_compensated", execution_id=ex.sid, step=node.id, attempt=attempts)
            return
        error = outcome.error or _error(node.id, "unknown failure", attempts)
        error["compensation"] = True
        if attempts <= node.options.max_retries and outcome.kind != "permanent":
            due = time.time() + node.options.retry_delay(attempts)
            ex.set_step(node.id, "compensate_step_failure", comp_error=error, due=due)
            log.warning("compensation_retry_scheduled", execution_id=ex.sid, step=node.id,
                        attempt=attempts, error=error["message"][:200])
            return
        ex.set_step(node.id, "compensate_step_failure", state=StepState.FAILED, comp_error=error,
                    due=None)
        ex.error = ex.new_error = (ex.error or {}) | {"compensation_error": error}
        log.error("compensation_failed", execution_id=ex.sid, step=node.id, attempt=attempts,
                  error=error["message"][:200])

    # -- running step code ---------------------------------------------------------------
    def _ctx(self, ex: Execution, node: StepNode, attempt: int, compensating: bool) -> StepContext:
        unrecorded = compensating and bool(ex.step(node.id).get("unrecorded"))
        step_input = None
        if unrecorded:
            with contextlib.suppress(ResolveError):
                step_input = ex.resolve(node.input)
        return self.item_ctx(ex, node, attempt, compensating=compensating,
                             output_recorded=not unrecorded, step_input=step_input)

    def map_input(self, ex: Execution, node: StepNode) -> tuple[JSON, str | None]:
        try:
            return ex.resolve(node.input), None
        except ResolveError as exc:
            return None, str(exc)

    def item_ctx(self, ex: Execution, node: StepNode, attempt: int, *, compensating: bool,
                 output_recorded: bool = True, step_input: Any = None) -> StepContext:
        """The context of one attempt of ``node`` (a step, or a fan-out item under its own
        id), with what its compensation is told."""
        return StepContext.make(
            execution_id=ex.sid, transaction_id=ex.transaction_id, workflow=ex.workflow,
            step=node.id, attempt=attempt, container=self.container,
            compensating=compensating, trigger=ex.trigger,
            failure=ex.error if compensating else None,
            output_recorded=output_recorded, step_input=step_input,
            max_event_bytes=self.settings.max_event_bytes,
            max_calls=self.settings.max_calls_per_step, redaction=self._redaction,
        )

    async def _call(self, fn: Any, value: Any, ctx: StepContext, timeout: float | None) -> Any:
        with tracing.step_attempt(ctx) as span:  # one span per attempt, when tracing is on
            result = fn(value, ctx)
            if inspect.isawaitable(result):
                if timeout is None:
                    result = await result
                else:
                    async with asyncio.timeout(timeout):
                        result = await result
            if isinstance(result, StepResponse) and result.kind == "permanent_failure":
                tracing.mark_failed(span, result.message)
            return result

    async def _invoke(self, ex: Execution, node: StepNode, attempt: int) -> Outcome:
        if node.fanout is not None:  # its items are run (and stored) by the fan-out runner
            return await self.fanouts.run(ex, node)
        t0 = time.perf_counter()
        ctx = ex.attempts[node.id] = self._ctx(ex, node, attempt, False)
        outcome = await self._invoke_once(ex, node, attempt, ctx)
        metrics.STEP_DURATION.labels(ex.workflow, node.step_name, outcome.kind).observe(
            time.perf_counter() - t0)
        return outcome

    async def _invoke_once(self, ex: Execution, node: StepNode, attempt: int,
                           ctx: StepContext) -> Outcome:
        try:
            value = ex.resolve(node.input)
        except ResolveError as exc:
            return Outcome("permanent", error=_error(node.id, str(exc), attempt))
        return await self.invoke_value(node, value, ctx, attempt)

    async def invoke_value(self, node: StepNode, value: Any, ctx: StepContext,
                           attempt: int) -> Outcome:
        """One invocation of ``node`` with its input resolved (a step's, or an item's)."""
        try:
            if node.input_model is not None and not isinstance(value, node.input_model):
                value = node.input_model.model_validate(value)
        except ValidationError as exc:
            return Outcome("permanent", error=_error(
                node.id, f"input of step {node.id!r} does not validate: {exc}", attempt))
        try:
            result = await self._call(node.invoke, value, ctx, node.options.timeout)
        except TimeoutError as exc:
            message = str(exc) or f"step {node.id!r} timed out after {node.options.timeout}s"
            return Outcome("timeout", error=_error(node.id, message, attempt) | {
                "type": "StepTimeout"})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retryable = bool(getattr(exc, "retryable", True))
            return Outcome("retryable" if retryable else "permanent",
                           error=_error(node.id, exc, attempt, retryable=retryable))
        if isinstance(result, StepResponse):
            if result.kind == "skip":
                return Outcome("skip")
            if result.kind == "permanent_failure":
                return Outcome("permanent", error=_error(node.id, result.message, attempt))
            output, comp_input = result.output, result.compensate_input
        else:
            output, comp_input = result, result
        try:
            out_json = to_json(output, f"output of step {node.id!r}")
            comp_json = out_json if comp_input is output else to_json(
                comp_input, f"compensate_input of step {node.id!r}")
            encode(out_json, f"output of step {node.id!r}", self.settings.max_payload_bytes)
            if comp_json is not out_json:
                encode(comp_json, f"compensate_input of step {node.id!r}",
                       self.settings.max_payload_bytes)
            outbox = tuple(
                {**o, "payload": to_json(o["payload"], f"event emitted by step {node.id!r}")}
                for o in ctx.outbox
            )
        except (Unserializable, PayloadTooLarge) as exc:
            return Outcome("permanent", error=_error(node.id, exc, attempt))
        return Outcome("ok", out_json, comp_json, outbox=outbox)

    async def _compensate(self, ex: Execution, node: StepNode, attempt: int) -> Outcome:
        if node.fanout is not None:
            return await self.fanouts.compensate(ex, node)
        ctx = ex.attempts[node.id] = self._ctx(ex, node, attempt, True)
        outcome = await self.compensate_value(node, ex.step(node.id).get("compensate_input"),
                                              ctx)
        metrics.COMPENSATIONS.labels(ex.workflow, node.step_name, outcome.kind).inc()
        return outcome

    async def compensate_value(self, node: StepNode, compensate_input: Any,
                               ctx: StepContext) -> Outcome:
        """One compensation of ``node`` (a step's, or an item's) with its input."""
        assert node.compensate is not None
        attempt = ctx.attempt
        try:
            await self._call(node.compensate, compensate_input, ctx, node.options.timeout)
            outbox = tuple(
                {**o, "payload": to_json(o["payload"], f"event emitted by step {node.id!r}")}
                for o in ctx.outbox
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retryable = bool(getattr(exc, "retryable", True))
            return Outcome("retryable" if retryable else "permanent",
                           error=_error(node.id, exc, attempt))
        return Outcome("ok", outbox=outbox)

    # -- signals from outside ------------------------------------------------------------
    async def _apply_signals(
        self, ex: Execution, running: dict[str, asyncio.Task[Outcome]]
    ) -> None:
        rows = await self.store.read_signals(ex.id)
        for sig in rows:
            ex.signals_upto = max(ex.signals_upto, int(sig["id"]))
            ex.signals_seen = max(ex.signals_seen, ex.signals_upto)
            self._apply_signal(ex, sig["kind"], sig["step"], sig["payload"], running)

    def _apply_signal(
        self,
        ex: Execution,
        kind: str,
        step_id: str | None,
        payload: Any,
        running: dict[str, asyncio.Task[Outcome]],
    ) -> None:
        now = time.time()
        if kind in ("cancel", "compensate"):
            if ex.phase == "forward" and not ex.finished:
                log.info("execution_stop_requested", execution_id=ex.sid, kind=kind)
                ex.fail({"step": None, "message": (payload or {}).get("reason") or kind,
                         "type": "Cancelled" if kind == "cancel" else "CompensationRequested"},
                        cancel=kind == "cancel")
            return
        if kind == "resume" or step_id is None or step_id not in ex.graph.steps:
            return
        node = ex.graph.steps[step_id]
        state = ex.state(step_id)
        expected = {"success": StepState.WAITING, "failure": StepState.WAITING,
                    "compensation_success": StepState.WAITING_TO_COMPENSATE,
                    "compensation_failure": StepState.WAITING_TO_COMPENSATE}.get(kind)
        if (node.child is not None and state == StepState.INVOKING
                and kind in ("success", "failure")):
            # a child that ended before its start was checkpointed: applied once it waits
            ex.early[step_id] = (kind, payload)
            return
        if expected is not None and state != expected:
            # accepted while the step waited, applied after it moved on (a cancel landed
            # first): it changes nothing, and says so
            log.warning("signal_ignored", execution_id=ex.sid, step=step_id, kind=kind,
                        state=state)
            return
        if kind == "success" and state == StepState.WAITING:
            ex.complete(step_id, payload, payload)
        elif kind == "compensation_success" and state == StepState.WAITING_TO_COMPENSATE:
            ex.set_step(step_id, "compensate_step_success", state=StepState.REVERTED,
                        compensated_at=now)
        elif kind in ("failure", "compensation_failure"):
            error = {"step": step_id, "message": (payload or {}).get("message", "failed"),
                     "type": "AsyncStepFailure", "attempt": ex.step(step_id).get("attempts")}
            if kind == "failure" and state == StepState.WAITING:
                ex.set_step(step_id, "step_failure", state=StepState.PERMANENT_FAILURE,
                            error=error, finished_at=now, due=None)
                self._on_permanent(ex, node, error)
            elif kind == "compensation_failure" and state == StepState.WAITING_TO_COMPENSATE:
                ex.set_step(step_id, "compensate_step_failure", state=StepState.FAILED,
                            comp_error=error | {"compensation": True})
                ex.error = ex.new_error = (ex.error or {}) | {"compensation_error": error}
        elif kind == "retry":
            if state == StepState.TEMP_FAILURE:
                ex.set_step(step_id, None, due=now)
            elif state == StepState.FAILED:
                ex.set_step(step_id, None, state=StepState.COMPENSATING, due=None)
                ex.status = RunStatus.RUNNING
                ex.status_dirty = True

    # -- checkpoints ---------------------------------------------------------------------
    def _row(self, ex: Execution, *, lease: bool, due_s: float | None, finished: bool) -> (
        CheckpointRow
    ):
        patch = {s: ex.steps[s] for s in ex.dirty}
        events = None
        # a notification costs a database-wide lock at commit: step transitions are only
        # announced while someone subscribes; ends, waits and outbox rows always are
        if (ex.events and self.step_events) or finished or ex.outbox or not lease:
            body: dict[str, Any] = {"id": ex.sid, "w": ex.workflow, "t": ex.transaction_id,
                                    "s": ex.status, "ev": ex.events[:50]}
            if ex.outbox:
                body["ob"] = True  # wakes the outbox relays
            events = json.dumps(body)
            if len(events) > 7900:  # NOTIFY payloads stop at 8000 bytes
                body["ev"] = []
                events = json.dumps(body)
        retain = ex.spec.retention_time
        return CheckpointRow(
            id=ex.id,
            epoch=ex.epoch,
            status=ex.status,
            phase=ex.phase,
            steps=json.dumps(patch, separators=(",", ":")),
            result=json.dumps(ex.result) if finished else None,
            error=json.dumps(ex.new_error) if ex.new_error is not None else None,
            hold=lease,
            due_s=None if lease else due_s,
            finished=finished,
            retain_s=(retain.total_seconds() if retain is not None
                      else self.settings.retention_days * 86400.0),
            events=events,
            outbox=json.dumps(ex.outbox) if ex.outbox else None,
            calls=json.dumps(ex.calls, separators=(",", ":")) if ex.calls else None,
            seen=ex.signals_seen,
        )

    async def _write(self, ex: Execution, row: CheckpointRow) -> None:
        ok = await self.checkpoints.write(row)
        if not ok:
            raise LeaseLost(f"execution {ex.sid}: epoch {ex.epoch} is no longer current")
        ex.dirty.clear()
        ex.events.clear()
        ex.outbox.clear()
        ex.calls.clear()
        ex.new_error = None
        ex.status_dirty = False
        if ex.signals_upto:
            upto, ex.signals_upto = ex.signals_upto, 0
            await self.store.delete_signals(ex.id, upto)

    async def _checkpoint(self, ex: Execution) -> None:
        if ex.status == RunStatus.PENDING:
            ex.status = RunStatus.RUNNING
            ex.events.insert(0, ["begin", ""])
        await self._write(ex, self._row(ex, lease=True, due_s=None, finished=False))

    async def _release(self, ex: Execution, due: float | None) -> None:
        """Nothing to run until ``due`` (or a signal): let the lease go."""
        ex.leaving = True
        if ex.status not in (RunStatus.WAITING,) and ex.awaiting_outside():
            ex.status = RunStatus.WAITING
        due_s = None if due is None else max(0.0, due - time.time())
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
