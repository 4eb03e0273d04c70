"""``Hub``: the container workflows run with, and the one door to the engine.

``async with Hub() as hub`` starts (or reuses) an embedded Postgres when no URL is given,
applies migrations, listens for notifications and, unless ``execute=False``, runs an executor
in-process so a script or a test needs nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from hub import tracing, wire
from hub.engine.checkpoint import Batcher
from hub.engine.clock import SYSTEM_CLOCK, Clock
from hub.engine.context import Container
from hub.engine.execution import Execution
from hub.engine.executor import Executor
from hub.engine.payload import Unserializable, encode, to_json
from hub.engine.registry import REGISTRY, Registry, WorkflowSpec
from hub.engine.run import FINAL_STATUSES, Run, RunStatus
from hub.errors import (
    DuplicateDelivery,
    ExecutionNotFound,
    HubError,
    InputValidationError,
    InvalidTransition,
    WorkflowFailed,
)
from hub.settings import HubSettings
from hub.store.embedded import EmbeddedPostgres
from hub.store.listener import Listener
from hub.store.store import AuditRecord, StartRow, Store, WebhookDelivery, is_data_error

log = structlog.get_logger("hub")


def new_execution_id() -> uuid.UUID:
    """Time-ordered UUID (v7 layout) so new rows land at the right edge of the index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


_PRESENCE_TTL = 60.0
"""Seconds an executor keeps announcing step transitions after a subscriber's last ping."""

_SETTLED_STATUSES = frozenset({s.value for s in FINAL_STATUSES} | {RunStatus.WAITING.value})


def _prepare_dir(path: Path) -> Path:
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class StartScope:
    """Starts requested while handling one event: written later, with the rest of its batch."""

    trigger: dict[str, Any]
    replay_id: str | None = None
    rows: list[StartRow] = field(default_factory=list)
    key: str | None = None  # the triggering record's, for starts that give no transaction id
    keyed: dict[str, int] = field(default_factory=dict)  # starts per workflow under ``key``

    def derived_transaction_id(self, workflow: str) -> str | None:
        """The same id for the same record, every time it is delivered: the n-th start of a
        workflow by one handler call is ``key``, then ``key#2``, ``key#3``..."""
        if self.key is None:
            return None
        n = self.keyed[workflow] = self.keyed.get(workflow, 0) + 1
        return self.key if n == 1 else f"{self.key}#{n}"


# a step's outside outcome: refused once its execution ended (a retry of a failed one is not)
_OUTCOMES = frozenset({"success", "failure", "compensation_success", "compensation_failure"})

_SCOPE: contextvars.ContextVar[StartScope | None] = contextvars.ContextVar(
    "hub_start_scope", default=None
)


@dataclass(frozen=True)
class ExecutionEvent:
    """One transition, as ``hub.subscribe`` yields it."""

    type: str  # begin, step_begin, step_success, step_failure, step_awaiting, ...
    execution_id: str
    workflow: str
    transaction_id: str
    status: str
    step: str | None = None


class Hub:
    """The hub: store, executor and container, for one schema of one Postgres."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        execute: bool = True,
        settings: HubSettings | None = None,
        registry: Registry | None = None,
        services: dict[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        base = settings or HubSettings()
        changes: dict[str, Any] = dict(overrides)
        if database_url is not None:
            changes["database_url"] = database_url
        if schema is not None:
            changes["db_schema"] = schema
        self.settings = base.model_copy(update=changes) if changes else base
        self.registry = registry or REGISTRY
        self.container = Container(services)
        self.execute = execute
        self.clock = clock
        """Where the executor reads time (a ``ManualClock`` lets a test drive its timers)."""
        self._embedded: EmbeddedPostgres | None = None
        self._store: Store | None = None
        self._listener: Listener | None = None
        self._executor: Executor | None = None
        self._starts: Batcher[StartRow, uuid.UUID] | None = None
        self._waiters: dict[str, list[tuple[asyncio.Future[Run], bool]]] = {}
        self._subscribers: list[tuple[asyncio.Queue[ExecutionEvent], str | None, str | None]] = []
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._presence: asyncio.Task[None] | None = None
        self.container.register("hub", self)

    def on_notification(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Also call ``fn`` with every notification of this schema (outbox relay, console)."""
        self._listeners.append(fn)

    def off_notification(self, fn: Callable[[dict[str, Any]], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> Hub:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        s = self.settings
        dsn = s.database_url
        if dsn is None:
            data = await asyncio.to_thread(_prepare_dir, Path(s.data_dir))
            self._embedded = EmbeddedPostgres(data / "pgdata")
            dsn = await asyncio.to_thread(self._embedded.start)
        self._store = Store(dsn, s.db_schema, min_size=s.pool_min, max_size=s.pool_max)
        await self._store.connect()
        await self._store.migrate()
        self._starts = Batcher(self._start_rows, lambda r: r.id, max_batch=2000,
                              isolate=is_data_error)
        self._listener = Listener(dsn, self._store.channel, self._on_message, self._on_reconnect)
        await self._listener.start()
        from hub.engine.locks import LockService

        self.container.register("locks", LockService(self._store))
        if self.execute:
            self._executor = Executor(
                self._store, self.registry, self.container, s, self._on_settled,
                clock=self.clock,
            )
            self._executor.start()
            self._executor.poke()
        log.debug("hub_opened", schema=s.db_schema, worker=s.worker_id, execute=self.execute)

    async def close(self) -> None:
        if self._executor is not None:
            await self._executor.close()
            self._executor = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for entries in self._waiters.values():
            for f, _ in entries:
                if not f.done():
                    f.cancel()
        await self.container.aclose()
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise HubError("the hub is not open; use `async with Hub(...) as hub`")
        return self._store

    @property
    def executor(self) -> Executor | None:
        return self._executor

    # -- starting runs -------------------------------------------------------------------
    def _validate_input(self, spec: WorkflowSpec, value: Any) -> tuple[Any, str]:
        """The input as a JSON value and as stored text; raises before anything is stored."""
        if spec.input_model is not None:
            try:
                model = (
                    value if isinstance(value, spec.input_model)
                    else spec.input_model.model_validate(
                        value.model_dump() if isinstance(value, BaseModel) else value
                    )
                )
            except ValidationError as exc:
                fields = ", ".join(
                    ".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()
                )
                raise InputValidationError(
                    f"input of workflow {spec.name!r} does not validate ({fields}): {exc}",
                    errors=[dict(e) for e in exc.errors(include_url=False)],
                ) from None
            value = model
        try:
            as_json = to_json(value, f"input of workflow {spec.name!r}")
        except Unserializable as exc:
            raise InputValidationError(str(exc)) from None
        what = f"input of workflow {spec.name!r}"
        try:
            return as_json, encode(as_json, what, self.settings.max_payload_bytes)
        except Unserializable as exc:
            raise InputValidationError(str(exc)) from None

    async def _start_rows(self, rows: Any) -> set[uuid.UUID]:
        return await self.store.start_batch(rows, self.settings.lease_seconds)

    async def start(
        self,
        workflow: str,
        input: Any = None,
        *,
        transaction_id: str | None = None,
        wait: bool = True,
        raise_on_error: bool = True,
        trigger: dict[str, Any] | None = None,
        timeout: float | None = None,
        once: bool = False,
    ) -> Run:
        """Start ``workflow`` (or find the execution already started for ``transaction_id``).

        Input is validated before anything is stored. ``wait=True`` returns when the run
        finishes or waits on the outside (an async step); ``raise_on_error`` raises
        ``WorkflowFailed`` for a run that ended without success. ``once``: the transaction
        id names one start for ever (a scheduled tick, a record), so a finished execution
        is found, not started again, even for an ``idempotent=False`` workflow. A start by
        a subscriber that gives no transaction id gets one derived from its record, with
        ``once``: a redelivered record never starts a second execution.
        """
        spec = self.registry.get(workflow)
        input_json, input_text = self._validate_input(spec, input)
        scope = _SCOPE.get()
        if scope is not None:
            trigger = {**scope.trigger, **(trigger or {})}
            if transaction_id is None:
                transaction_id = scope.derived_transaction_id(spec.name)
                once = once or transaction_id is not None
        exec_id = new_execution_id()
        tx = transaction_id or str(exec_id)
        trigger = tracing.starting(trigger, spec.name, str(exec_id), tx)  # as is when off
        trigger_text = None if trigger is None else encode(
            to_json(trigger, "trigger"), "trigger", self.settings.max_payload_bytes)
        if scope is not None and not wait:
            if scope.replay_id is not None:
                tx = f"{tx}#replay:{scope.replay_id}"
            row = StartRow(exec_id, spec.name, spec.version, tx, input_text, trigger_text,
                           spec.store, None)
            scope.rows.append(row)
            return Run(id=str(exec_id), workflow=spec.name, version=spec.version,
                       transaction_id=tx, status=RunStatus.PENDING,
                       input=input_json, trigger=trigger)
        owner = self.settings.worker_id if self._executor is not None else None
        fresh = {"id": exec_id, "workflow": spec.name, "version": spec.version,
                 "transaction_id": tx, "status": RunStatus.PENDING, "input": input_json,
                 "trigger": trigger, "epoch": 1, "steps": {}, "created_at": datetime.now(UTC)}
        ex: Execution | None = None
        planned = None
        if self._executor is not None and not self._executor.step_events:
            ex = self._executor.new_execution(fresh, spec)
            planned = self._executor.plan_start(ex)
        if ex is not None and planned is not None:
            row = StartRow(exec_id, spec.name, spec.version, tx, input_text, trigger_text,
                           spec.store, owner, ex.status, ex.steps_json())
        else:
            row = StartRow(exec_id, spec.name, spec.version, tx, input_text, trigger_text,
                           spec.store, owner)
        assert self._starts is not None
        fut = self._waiter(str(exec_id), accept_waiting=True) if wait else None
        sent = time.monotonic()  # the lease the insert takes runs from no earlier than this
        created = await self._starts.write(row)
        if not created:
            self._drop_waiter(str(exec_id), fut)
            existing = await self.store.find_started([(spec.name, tx)])
            if (existing and not spec.idempotent and not once
                    and existing[0]["finished_at"] is not None):
                await self.store.archive_finished(spec.name, tx)
                return await self.start(workflow, input, transaction_id=tx, wait=wait,
                                        raise_on_error=raise_on_error, trigger=trigger,
                                        timeout=timeout)
            if not existing:
                raise HubError(f"transaction {tx!r} of {spec.name!r} vanished while starting")
            run = Run.from_row(existing[0], list(spec.graph.steps))
            log.info("execution_found", execution_id=run.id, transaction_id=tx,
                     status=run.status)
            if wait and not self._settles(run, accept_waiting=True):
                run = await self._wait_for(run.id, timeout, accept_waiting=True)
            return self._outcome(run, raise_on_error)
        if ex is not None and planned is not None:
            self._executor.run(ex, launches=planned, sent=sent)  # type: ignore[union-attr]
        elif self._executor is not None:
            self._executor.adopt(fresh, from_claim=False, sent=sent)
        # (a start left for any worker woke them when its insert committed)
        if fut is None:
            return Run(id=str(exec_id), workflow=spec.name, version=spec.version,
                       transaction_id=tx, status=RunStatus.PENDING, input=input_json,
                       trigger=trigger)
        run = await self._await(str(exec_id), fut, timeout, accept_waiting=True)
        return self._outcome(run, raise_on_error)

    @contextlib.contextmanager
    def start_scope(
        self, trigger: dict[str, Any], *, replay_id: str | None = None,
        key: str | None = None,
    ) -> Iterator[StartScope]:
        """Collect the ``wait=False`` starts made inside (by a subscriber handler) instead of
        writing each one; :meth:`flush_starts` then makes a whole batch durable at once.
        ``key``: the transaction id of starts that give none (derived from the record)."""
        scope = StartScope(trigger=trigger, replay_id=replay_id, key=key)
        token = _SCOPE.set(scope)
        try:
            yield scope
        finally:
            _SCOPE.reset(token)

    async def flush_starts(self, rows: Sequence[StartRow]) -> set[uuid.UUID]:
        """Insert collected starts in one statement (one transaction); wake the workers.

        Returns the ids created; a row whose transaction id already exists creates nothing.
        """
        if not rows:
            return set()
        assert self._starts is not None
        # through the start batcher: the flushes of concurrent partitions share a statement
        written = await asyncio.gather(*self._starts.submit(rows))
        return {r.id for r, ok in zip(rows, written, strict=True) if ok}

    async def flush_starts_each(self, rows: Sequence[StartRow]) -> list[bool | BaseException]:
        """Like :meth:`flush_starts`, with one outcome per row, in order: created, already
        started (``False``), or the error of a row Postgres refused for what it holds (the
        batcher retries a refused statement row by row, so its neighbours still commit)."""
        if not rows:
            return []
        assert self._starts is not None
        return await asyncio.gather(*self._starts.submit(rows), return_exceptions=True)

    async def existing_transactions(
        self, keys: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which (workflow, transaction id) pairs already have an execution."""
        if not keys:
            return set()
        rows = await self.store.find_started(keys)
        return {(r["workflow"], r["transaction_id"]) for r in rows}

    @staticmethod
    def _outcome(run: Run, raise_on_error: bool) -> Run:
        if raise_on_error and run.finished and not run.succeeded:
            raise WorkflowFailed(run)
        return run

    # -- reading and waiting -------------------------------------------------------------
    async def _resolve_row(self, ref: str, workflow: str | None = None) -> dict[str, Any]:
        row = None
        with contextlib.suppress(ValueError):
            row = await self.store.get(uuid.UUID(ref))
        if row is None:
            rows = await self.store.get_by_transaction(ref, workflow)
            live = [r for r in rows if not r["archived"]]
            if len(live) > 1:
                raise HubError(
                    f"transaction id {ref!r} is used by several workflows "
                    f"({', '.join(r['workflow'] for r in live)}); pass workflow="
                )
            row = live[0] if live else (rows[0] if rows else None)
        if row is None:
            raise ExecutionNotFound(f"no execution with id or transaction id {ref!r}")
        return row

    def _run_from_row(self, row: dict[str, Any]) -> Run:
        steps: list[str] = []
        with contextlib.suppress(HubError):
            steps = list(self.registry.get(row["workflow"], row["version"]).graph.steps)
        return Run.from_row(row, steps)

    async def get_run(self, ref: str, *, workflow: str | None = None) -> Run:
        """The stored state of an execution, by id or transaction id."""
        return self._run_from_row(await self._resolve_row(ref, workflow))

    def _waiter(self, exec_id: str, accept_waiting: bool) -> asyncio.Future[Run]:
        fut: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(exec_id, []).append((fut, accept_waiting))
        return fut

    def _drop_waiter(self, exec_id: str, fut: asyncio.Future[Run] | None) -> None:
        entries = self._waiters.get(exec_id)
        if entries:
            entries[:] = [e for e in entries if e[0] is not fut]
            if not entries:
                del self._waiters[exec_id]

    @staticmethod
    def _settles(run: Run, accept_waiting: bool) -> bool:
        """Finished, parked (it will not move without an operator) or, when the caller
        accepts it, waiting on the outside."""
        return (run.finished or run.parked is not None
                or (accept_waiting and run.status == RunStatus.WAITING))

    async def _await(self, exec_id: str, fut: asyncio.Future[Run], timeout: float | None,
                     accept_waiting: bool) -> Run:
        """Wait for the executor (here or elsewhere) to settle the run; poll rarely as a net."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                step = self.settings.poll_interval
                if deadline is not None:
                    step = min(step, deadline - time.monotonic())
                    if step <= 0:
                        raise TimeoutError(f"execution {exec_id} did not settle in {timeout}s")
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), step)
                except TimeoutError:
                    row = await self.store.get(uuid.UUID(exec_id))
                    run = self._run_from_row(row) if row is not None else None
                    if run is not None and self._settles(run, accept_waiting):
                        return run
        finally:
            self._drop_waiter(exec_id, fut)

    async def _wait_for(self, exec_id: str, timeout: float | None,
                        accept_waiting: bool) -> Run:
        fut = self._waiter(exec_id, accept_waiting)
        row = await self.store.get(uuid.UUID(exec_id))
        if row is not None and self._settles(self._run_from_row(row), accept_waiting):
            self._drop_waiter(exec_id, fut)
            return self._run_from_row(row)
        return await self._await(exec_id, fut, timeout, accept_waiting)

    async def wait(
        self, ref: str, *, workflow: str | None = None, timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Run:
        """Wait until the execution finishes (``TimeoutError`` after ``timeout`` seconds)."""
        run = self._run_from_row(await self._resolve_row(ref, workflow))
        if not run.finished:
            run = await self._wait_for(run.id, timeout, accept_waiting=False)
        return self._outcome(run, raise_on_error)

    def _on_settled(self, run: Run, final: bool) -> None:
        entries = self._waiters.get(run.id)
        if not entries:
            return
        keep: list[tuple[asyncio.Future[Run], bool]] = []
        for fut, accept_waiting in entries:
            if fut.done():
                continue
            if final or accept_waiting:
                fut.set_result(run)
            else:
                keep.append((fut, accept_waiting))
        if keep:
            self._waiters[run.id] = keep
        else:
            del self._waiters[run.id]

    # -- notifications -------------------------------------------------------------------
    def _on_message(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        for fn in list(self._listeners):
            fn(msg)
        if msg.get(wire.N_PRESENCE) and self._executor is not None:
            self._executor.subscribers_present(_PRESENCE_TTL)
        exec_id = msg.get(wire.N_ID)
        if self._executor is not None:
            if msg.get(wire.N_DUE):
                self._executor.poke()
            if msg.get(wire.N_SIGNAL) and exec_id:
                self._executor.wake(uuid.UUID(exec_id))
        status = msg.get(wire.N_STATUS)
        if exec_id and exec_id in self._waiters and status in _SETTLED_STATUSES:
            owned = self._executor is not None and uuid.UUID(exec_id) in self._executor.owned
            if not owned:  # the owner here resolves its waiters itself, without a read
                asyncio.get_running_loop().create_task(self._refresh_waiters(exec_id))
        if status and self._subscribers:
            for kind, step in msg.get(wire.N_EVENTS, []):
                event = ExecutionEvent(kind, exec_id, msg.get(wire.N_WORKFLOW),
                                       msg.get(wire.N_TRANSACTION), status, step or None)
                for queue, wf, tx in self._subscribers:
                    if (wf is None or wf == event.workflow) and (
                        tx is None or tx == event.transaction_id
                    ):
                        queue.put_nowait(event)

    async def _refresh_waiters(self, exec_id: str) -> None:
        row = await self.store.get(uuid.UUID(exec_id))
        if row is not None:
            run = self._run_from_row(row)
            if self._settles(run, accept_waiting=True):
                self._on_settled(run, run.finished)

    def _on_reconnect(self) -> None:
        if self._executor is not None:
            self._executor.poke()
        for exec_id in list(self._waiters):
            asyncio.get_running_loop().create_task(self._refresh_waiters(exec_id))

    async def subscribe(
        self, workflow: str | None = None, transaction_id: str | None = None
    ) -> AsyncIterator[ExecutionEvent]:
        """Every transition of matching executions, from any process, as it commits.

        With a ``transaction_id`` the iterator ends after that execution's ``finish``.
        """
        queue: asyncio.Queue[ExecutionEvent] = asyncio.Queue()
        entry = (queue, workflow, transaction_id)
        self._subscribers.append(entry)
        if self._presence is None:
            self._presence = asyncio.create_task(self._announce_presence())
        if self._executor is not None:
            self._executor.subscribers_present(_PRESENCE_TTL)
        await self.store.notify(json.dumps({wire.N_PRESENCE: True}))
        try:
            while True:
                event = await queue.get()
                yield event
                if transaction_id is not None and event.type == "finish":
                    return
        finally:
            self._subscribers.remove(entry)
            if not self._subscribers and self._presence is not None:
                self._presence.cancel()
                self._presence = None

    async def _announce_presence(self) -> None:
        """While anyone here subscribes, tell every executor to announce step transitions
        (they stop when the announcements do: a notification per step has a cost)."""
        while True:
            await asyncio.sleep(_PRESENCE_TTL / 3)
            with contextlib.suppress(Exception):
                await self.store.notify(json.dumps({wire.N_PRESENCE: True}))

    # -- acting on executions ------------------------------------------------------------
    async def _signal(self, ref: str, workflow: str | None, step: str | None, kind: str,
                      payload: Any, allowed: tuple[str, ...] | None,
                      audit: AuditRecord | None = None,
                      once: WebhookDelivery | None = None) -> Run:
        row = await self._resolve_row(ref, workflow)
        run = self._run_from_row(row)
        if step is not None:
            spec = self.registry.get(run.workflow, run.version)
            if step not in spec.graph.steps:
                raise InvalidTransition(
                    f"workflow {run.workflow!r} has no step {step!r} "
                    f"(steps: {', '.join(spec.graph.steps)})"
                )
            state = run.steps[step].state
            if run.finished and kind in _OUTCOMES:
                raise InvalidTransition(
                    f"execution {run.id} already ended {run.status}: a late {kind} for step "
                    f"{step!r} is refused (the step is {state})")
            if allowed is not None and state not in allowed:
                raise InvalidTransition(
                    f"step {step!r} of execution {run.id} is {state}; {kind} needs it to be "
                    f"{' or '.join(allowed)}"
                )
        elif run.finished:
            raise InvalidTransition(f"execution {run.id} already ended {run.status}")
        payload_text = None
        if payload is not None:
            payload_text = encode(to_json(payload, f"{kind} payload"), f"{kind} payload",
                                  self.settings.max_payload_bytes)
        if not await self.store.add_signal(uuid.UUID(run.id), step, kind, payload_text, audit,
                                           once):
            raise DuplicateDelivery(f"webhook-id {once.id if once else ''!r} was already "
                                    "accepted from this source")
        await self.store.notify(json.dumps({wire.N_ID: run.id, wire.N_SIGNAL: True}))
        return run

    async def set_step_success(self, transaction_id: str, step: str, output: Any = None, *,
                               workflow: str | None = None, audit: AuditRecord | None = None,
                               once: WebhookDelivery | None = None) -> None:
        """Complete an async step that is waiting, from any process.

        ``audit`` (here and in the other operations): the operator action to record with
        the signal, in its transaction; ``once``: the signed delivery that carried it, whose
        id is recorded with it (a second use raises DuplicateDelivery)."""
        await self._signal(transaction_id, workflow, step, "success", to_json(output, "output"),
                           ("waiting",), audit, once)

    async def set_step_failure(self, transaction_id: str, step: str, error: str = "failed", *,
                               workflow: str | None = None, audit: AuditRecord | None = None,
                               once: WebhookDelivery | None = None) -> None:
        """Fail an async step: the workflow compensates (or follows the step's options)."""
        await self._signal(transaction_id, workflow, step, "failure", {"message": error},
                           ("waiting",), audit, once)

    async def set_compensation_success(
        self, ref: str, step: str, *, workflow: str | None = None,
        audit: AuditRecord | None = None, once: WebhookDelivery | None = None,
    ) -> None:
        """Complete a step's async compensation (the refund went through). Its own operation:
        a forward outcome never settles a compensation."""
        await self._signal(ref, workflow, step, "compensation_success", None,
                           ("waiting_to_compensate",), audit, once)

    async def set_compensation_failure(
        self, ref: str, step: str, error: str = "failed", *, workflow: str | None = None,
        audit: AuditRecord | None = None, once: WebhookDelivery | None = None,
    ) -> None:
        """Fail a step's async compensation: the execution ends ``compensation_failed``,
        for a human to repair and retry."""
        await self._signal(ref, workflow, step, "compensation_failure", {"message": error},
                           ("waiting_to_compensate",), audit, once)

    async def cancel(self, transaction_id: str, *, workflow: str | None = None,
                     reason: str = "cancelled", wait: bool = True,
                     audit: AuditRecord | None = None) -> Run:
        """Stop the execution and compensate its completed steps; ends ``cancelled``."""
        run = await self._signal(transaction_id, workflow, None, "cancel", {"reason": reason},
                                 None, audit)
        return await self.wait(run.id) if wait else run

    async def compensate(self, ref: str, *, workflow: str | None = None,
                         reason: str = "compensation requested", wait: bool = True,
                         audit: AuditRecord | None = None) -> Run:
        """Stop the execution and undo its completed steps; ends ``compensated``."""
        run = await self._signal(ref, workflow, None, "compensate", {"reason": reason}, None,
                                 audit)
        return await self.wait(run.id) if wait else run

    async def retry(self, ref: str, *, workflow: str | None = None,
                    audit: AuditRecord | None = None) -> Run:
        """Re-run from where it stopped: a step waiting for a manual retry, a compensation
        that failed, or a parked execution. A run that ended is final: start a new one."""
        run = self._run_from_row(await self._resolve_row(ref, workflow))
        if run.parked:
            await self.resume(run.id, audit=audit)
            return run
        stuck = [s.id for s in run.steps.values()
                 if s.state == "failed" or (s.state == "temp_failure"
                                            and run.status == RunStatus.WAITING)]
        if not stuck:
            raise InvalidTransition(
                f"execution {run.id} is {run.status}: nothing to retry (retry re-runs a step "
                "left for a manual retry, a failed compensation, or a parked execution)")
        for i, step in enumerate(stuck):  # the action is recorded with its first signal
            await self.retry_step(run.id, step, workflow=run.workflow,
                                  audit=audit if i == 0 else None)
        return run

    async def retry_step(self, transaction_id: str, step: str, *,
                         workflow: str | None = None,
                         audit: AuditRecord | None = None) -> None:
        """Re-run a step left in ``temp_failure`` (``auto_retry=False``), or a compensation
        that failed."""
        await self._signal(transaction_id, workflow, step, "retry", None,
                           ("temp_failure", "failed"), audit)

    async def resume(self, ref: str, *, workflow: str | None = None,
                     audit: AuditRecord | None = None) -> None:
        """Make a parked execution due again (after deploying the version it needs)."""
        row = await self._resolve_row(ref, workflow)
        await self.store.add_signal(row["id"], None, "resume", None, audit)
        await self.store.notify(json.dumps({wire.N_ID: str(row["id"]), wire.N_DUE: True}))

    async def purge(self, *, grace_seconds: float = 0.0,
                    progress: Callable[[int], None] | None = None) -> int:
        """Delete finished executions past their retention (live ones and those that need a
        human are never touched), then what else only grows (used webhook ids, expired
        locks, old redrive records and audit entries, ended console sessions, outbox rows
        sent longer ago than ``HUB_OUTBOX_RETENTION_S``; unsent and failed ones stay), each
        in bounded batches.
        Returns the executions deleted."""
        total = 0
        while True:
            n = await self.store.purge_finished(grace_seconds)
            total += n
            if progress is not None:
                progress(total)
            if n < 1000:
                break
        retention = self.settings.housekeeping()
        while max((await self.store.purge_housekeeping(retention)).values()) == 1000:
            pass
        return total

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Wait until this hub's executor holds nothing (tests and scripts)."""
        deadline = time.monotonic() + timeout
        while self._executor is not None and self._executor.busy:
            if time.monotonic() > deadline:
                raise TimeoutError(f"executor still busy after {timeout}s")
            await asyncio.sleep(0.01)
