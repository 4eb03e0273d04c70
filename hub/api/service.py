"""The one service layer every reader of the hub goes through (JSON API, console, CLI).

Queries and formatting live here once: a route only translates HTTP to a call of this
class and its result (or error) back to HTTP. It knows nothing of HTTP itself; a value the
service refuses raises ``InvalidArgument`` naming the field, which each front end reports
in its own way (a 422 for the API).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from hub.api.models import (
    ExecutionDetail,
    ExecutionPage,
    ExecutionSummary,
    OutboxEventOut,
    Readiness,
    RunOut,
    SignalAccepted,
    StepOut,
    WorkflowDefinitionOut,
    WorkflowSummary,
)
from hub.engine.hub import Hub
from hub.engine.run import Run, RunStatus
from hub.errors import ExecutionNotFound, HubError
from hub.runtime.subscriber import SUBSCRIBERS, SubscriberRegistry

log = structlog.get_logger("hub.api")

Loc = tuple[str | int, ...]
"""Where a refused value sits in a request, as FastAPI names it: ("query", "cursor")."""

MAX_JSON_DEPTH = 64
"""Nesting beyond this is refused up front: the JSON encoders and jsonb have their own limits,
and hitting those would fail as a server error instead of naming the field."""


class InvalidArgument(HubError):
    """A value the service refuses; ``loc`` names the field."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = loc
        self.message = message


class Misconfigured(HubError):
    """The hub's own configuration is broken (a topics file that does not load)."""


def storable_text(value: str) -> bool:
    """Postgres text cannot hold NUL, and a lone surrogate is not UTF-8."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str | None, loc: Loc) -> None:
    if value is not None and not storable_text(value):
        raise InvalidArgument(loc, "contains a NUL character or invalid Unicode")


def check_json(value: Any, loc: Loc) -> None:
    """Refuse what Postgres jsonb cannot store (NUL, lone surrogates) or nests too deep,
    naming the path; iterative, so a deep document cannot exhaust the stack here."""
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack:
        node, where = stack.pop()
        if len(where) - len(loc) > MAX_JSON_DEPTH:
            raise InvalidArgument(loc, f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            check_text(node, where)
        elif isinstance(node, dict):
            for k, v in node.items():
                check_text(k, (*where, k))
                stack.append((v, (*where, k)))
        elif isinstance(node, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(node))


def _utc(value: datetime | None, loc: Loc) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidArgument(loc, "out of the supported date range") from None


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def encode_cursor(created_at: datetime, execution_id: uuid.UUID) -> str:
    """Opaque to clients: they pass it back, never build it."""
    raw = json.dumps([created_at.isoformat(), str(execution_id)]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    loc: Loc = ("query", "cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(loc, "not a cursor this API returned; pass `next` of the "
                                   "previous page unchanged") from None


def step_out(step: Any) -> StepOut:
    started, finished = step.started_at, step.finished_at
    duration = None
    if started is not None and finished is not None and finished >= started:
        duration = round((finished - started) * 1000, 3)
    return StepOut(id=step.id, state=step.state, attempts=step.attempts, output=step.output,
                   error=step.error, compensation_error=step.compensation_error,
                   started_at=_ts(started), finished_at=_ts(finished), duration_ms=duration)


def _aware(value: datetime | None) -> datetime | None:
    """Stored times are aware; a snapshot made in-process may carry a naive local time
    (``datetime.now()``): RFC 3339 needs the offset."""
    if value is None or value.tzinfo is not None:
        return value
    return value.astimezone(UTC)


def run_out(run: Run) -> RunOut:
    return RunOut(
        id=run.id, workflow=run.workflow, version=run.version,
        transaction_id=run.transaction_id, status=RunStatus(run.status), state=run.state,
        phase=run.phase, input=run.input, result=run.result, error=run.error,
        trigger=run.trigger, parked=run.parked, created_at=_aware(run.created_at),
        finished_at=_aware(run.finished_at), steps=[step_out(s) for s in run.steps.values()],
    )


def _summary(row: dict[str, Any]) -> ExecutionSummary:
    trigger = row.get("trigger")
    return ExecutionSummary(
        id=str(row["id"]), workflow=row["workflow"], version=row["version"],
        transaction_id=row["transaction_id"], status=RunStatus(row["status"]),
        phase=row["phase"],
        trigger_kind=trigger.get("kind") if isinstance(trigger, dict) else None,
        trigger=trigger, parked=row["parked"], archived=row["archived"],
        error=row["error_message"], error_step=row["error_step"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


@dataclass(frozen=True)
class Outcome:
    """A run as a caller left it: ``settled`` when it finished or waits on the outside."""

    run: RunOut
    settled: bool


@dataclass(frozen=True)
class MetricsSnapshot:
    executions: list[tuple[str, str, int]]
    outbox_unsent: int
    outbox_oldest_age_s: float


class HubService:
    """Reads and operations on one hub, formatted once for every front end."""

    def __init__(
        self,
        hub: Hub,
        *,
        topics_file: Path | None = None,
        kafka_bootstrap: str = "",
        subscribers: SubscriberRegistry = SUBSCRIBERS,
        max_wait_s: float = 60.0,
        metrics_ttl_s: float = 5.0,
    ) -> None:
        self.hub = hub
        self.topics_file = topics_file
        self.kafka_bootstrap = kafka_bootstrap
        self.subscribers = subscribers
        self.max_wait_s = max_wait_s
        self.metrics_ttl_s = metrics_ttl_s
        self._snapshot: tuple[float, MetricsSnapshot] | None = None
        self._snapshot_lock = asyncio.Lock()

    # -- workflows -----------------------------------------------------------------------
    def workflows(self) -> list[WorkflowSummary]:
        return [WorkflowSummary(name=s.name, version=s.version, steps=list(s.graph.steps))
                for s in sorted(self.hub.registry, key=lambda s: s.name)]

    def workflow(self, name: str) -> WorkflowDefinitionOut:
        spec = self.hub.registry.get(name)
        schema = spec.input_model.model_json_schema() if spec.input_model else None
        retention = spec.retention_time.total_seconds() if spec.retention_time else None
        return WorkflowDefinitionOut(
            name=spec.name, version=spec.version, graph=spec.graph.to_dict(),
            mermaid=spec.graph.to_mermaid(), input_schema=schema, store=spec.store,
            idempotent=spec.idempotent, retention_seconds=retention,
        )

    # -- runs ----------------------------------------------------------------------------
    def _wait_s(self, timeout: float | None) -> float:
        return min(timeout or self.max_wait_s, self.max_wait_s)

    async def start(
        self,
        workflow: str,
        input: Any,
        *,
        transaction_id: str | None,
        trigger: dict[str, Any],
        caller: dict[str, Any] | None = None,
        wait: bool,
        timeout: float | None = None,
    ) -> Outcome:
        """Start (or find, for a known transaction id) a run.

        ``trigger`` is the lineage the front end records (``kind`` and who asked); the
        caller's own lineage, if any, is kept under ``trigger.caller`` where it cannot pass
        for the hub's. Without a transaction id one is made up (``api:<uuid>``) so a wait
        that times out can still find the run it started. With ``wait``, a run that ended
        without success is returned like any other (its status tells), never raised.
        """
        check_json(input, ("body", "input"))
        check_json(caller, ("body", "trigger"))
        check_text(transaction_id, ("header", "Idempotency-Key"))
        if caller is not None:
            trigger = {**trigger, "caller": caller}
        tx = transaction_id or f"api:{uuid.uuid4()}"
        self.hub.registry.get(workflow)  # UnknownWorkflow before anything else
        try:
            run = await self.hub.start(workflow, input, transaction_id=tx, wait=wait,
                                       raise_on_error=False, trigger=trigger,
                                       timeout=self._wait_s(timeout) if wait else None)
        except TimeoutError:
            run = await self.hub.get_run(tx, workflow=workflow)
            return Outcome(run_out(run), settled=False)
        return Outcome(run_out(run), settled=wait)

    # -- executions ----------------------------------------------------------------------
    async def executions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        trigger_kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ExecutionPage:
        """A page, newest first; ``next`` is the cursor of the following page."""
        check_text(workflow, ("query", "workflow"))
        check_text(trigger_kind, ("query", "trigger_kind"))
        before = decode_cursor(cursor) if cursor else None
        rows = await self.hub.store.api_list_executions(
            workflow=workflow, status=status,
            created_after=_utc(created_after, ("query", "created_after")),
            created_before=_utc(created_before, ("query", "created_before")),
            trigger_kind=trigger_kind, before=before, limit=limit + 1,
        )
        page = rows[:limit]
        more = len(rows) > limit
        nxt = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
        return ExecutionPage(items=[_summary(r) for r in page], next=nxt)

    async def _run(self, ref: str, workflow: str | None) -> Run:
        if not storable_text(ref) or (workflow is not None and not storable_text(workflow)):
            raise ExecutionNotFound(f"no execution with id or transaction id {ref!r}")
        return await self.hub.get_run(ref, workflow=workflow)

    async def execution(self, ref: str, *, workflow: str | None = None) -> ExecutionDetail:
        """Every step's state, the trigger lineage and the events the execution published."""
        run = await self._run(ref, workflow)
        events = await self.hub.store.api_outbox_for_execution(uuid.UUID(run.id))
        return ExecutionDetail(
            **run_out(run).model_dump(),
            outbox=[OutboxEventOut(
                id=str(e["id"]), step=e.get("step"), topic=e["topic"], key=e["key"],
                payload=e["payload"], headers=e["headers"] or {}, created_at=e["created_at"],
                sent_at=e["sent_at"], attempts=e["attempts"], last_error=e["last_error"])
                for e in events],
        )

    async def complete_step(
        self, ref: str, step: str, *, success: bool, output: Any = None,
        error: str | None = None, workflow: str | None = None,
    ) -> SignalAccepted:
        """Record an async step's outcome; a worker applies it."""
        check_json(output, ("body", "output"))
        check_text(error, ("body", "error"))
        run = await self._run(ref, workflow)
        check_text(step, ("path", "step"))
        if success:
            await self.hub.set_step_success(run.id, step, output, workflow=run.workflow)
        else:
            await self.hub.set_step_failure(run.id, step, error or "failed",
                                            workflow=run.workflow)
        return SignalAccepted(execution_id=run.id, workflow=run.workflow,
                              transaction_id=run.transaction_id, step=step,
                              signal="success" if success else "failure")

    async def retry(self, ref: str, *, workflow: str | None = None) -> SignalAccepted:
        run = await self._run(ref, workflow)
        await self.hub.retry(run.id, workflow=run.workflow)
        return SignalAccepted(execution_id=run.id, workflow=run.workflow,
                              transaction_id=run.transaction_id, signal="retry")

    async def stop(
        self, ref: str, kind: Literal["cancel", "compensate"], *, reason: str | None,
        wait: bool, timeout: float | None = None, workflow: str | None = None,
    ) -> Outcome:
        """Cancel or compensate; with ``wait``, until the run ends (or the wait times out)."""
        check_text(reason, ("body", "reason"))
        run = await self._run(ref, workflow)
        if kind == "cancel":
            run = await self.hub.cancel(run.id, workflow=run.workflow,
                                        reason=reason or "cancelled", wait=False)
        else:
            run = await self.hub.compensate(run.id, workflow=run.workflow,
                                            reason=reason or "compensation requested",
                                            wait=False)
        if not wait:
            return Outcome(run_out(run), settled=False)
        try:
            done = await self.hub.wait(run.id, timeout=self._wait_s(timeout))
        except TimeoutError:
            return Outcome(run_out(await self.hub.get_run(run.id)), settled=False)
        return Outcome(run_out(done), settled=True)

    # -- health, metrics, contracts ------------------------------------------------------
    async def readiness(self, timeout_s: float = 2.0) -> Readiness:
        """Postgres answers and every migration is applied (bounded: a probe never hangs)."""
        checks: dict[str, str] = {}
        try:
            pending = await asyncio.wait_for(self.hub.store.pending_migrations(), timeout_s)
        except TimeoutError:
            checks["database"] = f"no answer within {timeout_s}s"
        except Exception as exc:  # any failure means "not ready", and says which
            checks["database"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            checks["database"] = "ok"
            checks["migrations"] = "ok" if not pending else f"pending: {', '.join(pending)}"
        if self.kafka_bootstrap:
            checks["broker"] = await self._broker_check(timeout_s)
        ready = all(v == "ok" for v in checks.values())
        return Readiness(status="ready" if ready else "not_ready", checks=checks)

    async def _broker_check(self, timeout_s: float) -> str:
        """A TCP connect to each bootstrap address (cheap enough for every probe; the
        consumer's own errors are in the worker's logs and metrics)."""
        for addr in self.kafka_bootstrap.split(","):
            host, _, port = addr.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host or "127.0.0.1", int(port)), timeout_s)
            except (OSError, ValueError, TimeoutError) as exc:
                return f"{addr}: {type(exc).__name__}: {str(exc)[:100]}"
            writer.close()
        return "ok"

    async def metrics_snapshot(self) -> MetricsSnapshot:
        """Counts for a scrape, cached for ``metrics_ttl_s`` so scrapes from several
        Prometheus replicas cost one query."""
        async with self._snapshot_lock:
            now = time.monotonic()
            if self._snapshot is not None and now - self._snapshot[0] < self.metrics_ttl_s:
                return self._snapshot[1]
            rows = await self.hub.store.api_execution_counts()
            backlog = await self.hub.store.outbox_backlog()
            oldest = backlog["oldest"]
            age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
            snap = MetricsSnapshot(
                executions=[(r["workflow"], r["status"], int(r["n"])) for r in rows],
                outbox_unsent=int(backlog["unsent"]), outbox_oldest_age_s=max(age, 0.0),
            )
            self._snapshot = (now, snap)
            return snap

    def asyncapi(self) -> dict[str, Any] | None:
        """The AsyncAPI document of topics.yaml, or None when there is no such file."""
        if self.topics_file is None or not self.topics_file.is_file():
            return None
        from hub.runtime.asyncapi import build_asyncapi
        from hub.runtime.topics import load_topics

        try:
            topics = load_topics(self.topics_file)
            return build_asyncapi(topics, self.subscribers, bootstrap=self.kafka_bootstrap)
        except HubError as exc:
            raise Misconfigured(f"{self.topics_file}: {exc}") from exc

