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
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog

from hub import wire
from hub.api.keys import ApiKey
from hub.api.models import (
    ConnectorCallOut,
    ExecutionDetail,
    ExecutionPage,
    ExecutionSummary,
    FanoutItemOut,
    FanoutItemPage,
    FanoutOut,
    LineageLink,
    OutboxEventOut,
    OutboxPage,
    OutboxRetried,
    OutboxRow,
    OutboxState,
    Readiness,
    RunOut,
    SignalAccepted,
    StepOut,
    WorkflowDefinitionOut,
    WorkflowSummary,
)
from hub.engine.children import PARENT_ID, PARENT_STEP
from hub.engine.context import Container, StepContext
from hub.engine.graph import SLEEP_KIND
from hub.engine.hub import Hub
from hub.engine.payload import storable_text
from hub.engine.run import FINAL_STATUSES, Run, RunStatus, shown_phase
from hub.errors import (
    BrokerUnavailable,
    DuplicateDelivery,
    ExecutionNotFound,
    HubError,
    InvalidTransition,
    OutboxEventNotFound,
)
from hub.redaction import Redaction
from hub.runtime.subscriber import SUBSCRIBERS, SubscriberRegistry
from hub.settings import KafkaSettings
from hub.store.store import AuditRecord, WebhookDelivery

log = structlog.get_logger("hub.api")

Loc = tuple[str | int, ...]
"""Where a refused value sits in a request, as FastAPI names it: ("query", "cursor")."""

MAX_JSON_DEPTH = 64
"""Nesting beyond this is refused up front: the JSON encoders and jsonb have their own limits,
and hitting those would fail as a server error instead of naming the field."""


class InvalidArgument(HubError):
    """A value the service refuses; ``loc`` names the field."""

    api_status = 422
    api_error = "validation_error"

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = loc
        self.message = message


class Misconfigured(HubError):
    """The hub's own configuration is broken (a topics file that does not load)."""

    api_status = 500
    api_error = "misconfigured"


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
        phase=shown_phase(run.status, run.phase), input=run.input, result=run.result,
        error=run.error,
        trigger=run.trigger, parked=run.parked, created_at=_aware(run.created_at),
        finished_at=_aware(run.finished_at), steps=[step_out(s) for s in run.steps.values()],
    )


def _outbox_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        raise OutboxEventNotFound(f"no outbox event {text[:100]!r} (ids are uuids)") from None


def _outbox_row(row: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        id=str(row["id"]), step=row["step"], topic=row["topic"], key=row["key"],
        execution_id=str(row["execution_id"]) if row["execution_id"] is not None else None,
        state=row["state"], attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], created_at=row["created_at"], sent_at=row["sent_at"],
        failed_at=row["failed_at"])


def _summary(row: dict[str, Any]) -> ExecutionSummary:
    trigger = row.get("trigger")
    return ExecutionSummary(
        id=str(row["id"]), workflow=row["workflow"], version=row["version"],
        transaction_id=row["transaction_id"], status=RunStatus(row["status"]),
        phase=shown_phase(row["status"], row["phase"]),
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
    outbox_failed: int = 0


@dataclass(frozen=True)
class Actor:
    """Who asked for an operation, as the audit records it: the API key (name and id) and the
    front end the request came through (``api``, ``console``, ``cli``, ``webhook``)."""

    name: str
    via: str
    id: str | None = None

    @staticmethod
    def of_key(key: ApiKey, via: str) -> Actor:
        return Actor(name=key.name, via=via, id=key.id)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.via})"


UNATTRIBUTED = Actor(name="unattributed", via="service")
"""The actor of an operation whose front end named none."""


@dataclass(frozen=True)
class AuditEntry:
    """One recorded operator action."""

    id: int
    at: datetime
    actor: Actor
    action: str
    execution_id: str | None
    target: str | None
    detail: dict[str, Any]


def _audit_entry(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"], at=row["at"],
        actor=Actor(name=row["actor_name"], via=row["via"], id=row["actor_id"]),
        action=row["action"],
        execution_id=str(row["execution_id"]) if row["execution_id"] is not None else None,
        target=row["target"], detail=row["detail"] or {},
    )


@dataclass(frozen=True)
class StatusSeries:
    """Executions of one workflow created per time bucket, by their status now."""

    workflow: str
    counts: dict[str, list[int]]
    """status -> one count per bucket of ``StatusChart.buckets``"""

    @property
    def totals(self) -> dict[str, int]:
        return {status: sum(n) for status, n in self.counts.items()}

    @property
    def per_bucket(self) -> list[int]:
        return [sum(col) for col in zip(*self.counts.values(), strict=True)] if self.counts \
            else []


@dataclass(frozen=True)
class StatusChart:
    """The overview's chart: every bucket of the window (oldest first), a series a workflow."""

    window: timedelta
    bucket: timedelta
    buckets: list[datetime]
    series: list[StatusSeries]


@dataclass(frozen=True)
class Observed:
    """A reading of something outside Postgres (the broker): a value, or why there is none."""

    value: Any
    error: str | None
    at: datetime


@dataclass(frozen=True)
class Breaker:
    """A connector's circuit breaker as this process sees it."""

    connector: str
    state: str
    source: str


@dataclass(frozen=True)
class DeadLetterView:
    """A dead-lettered record: where it came from, why it failed, what it carried."""

    ref: str
    dlq_topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    topic: str | None
    original_partition: str | None
    original_offset: str | None
    stage: str | None
    subscriber: str | None
    error: str
    message: str
    payload: str | None
    headers: dict[str, str]
    redrives: list[dict[str, Any]]


@dataclass(frozen=True)
class DeadLetterViewPage:
    """A bounded page of one dead-letter topic (``topic``), and the cursor of the next."""

    topic: str | None
    topics: list[str]
    """Every dead-letter topic of topics.yaml, so a front end can offer the others."""
    items: list[DeadLetterView]
    next: str | None
    fetched: int
    """Records fetched from the broker for this page: bounded by the page, not the topic."""


@dataclass(frozen=True)
class StepView:
    """A step of one execution with what the console shows beside ``StepOut``: its node,
    the idempotency keys its connector calls carry, and its compensation."""

    out: StepOut
    kind: str
    is_async: bool
    compensable: bool
    idempotency_key: str
    compensation_key: str | None
    compensation_attempts: int
    compensated_at: datetime | None
    completed_order: int | None
    due_at: datetime | None
    compensate_input: Any


@dataclass(frozen=True)
class TimelineEntry:
    """One transition of an execution (or an operator action on it), for the timeline."""

    at: datetime | None
    kind: str
    text: str
    step: str | None = None
    attempt: int | None = None
    duration_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ExecutionView:
    """One execution for a person: secrets redacted, its graph, timeline and actions."""

    detail: ExecutionDetail
    steps: list[StepView]
    graph: dict[str, Any] | None
    graph_note: str | None
    timeline: list[TimelineEntry]
    audit: list[AuditEntry]
    redrives: list[AuditEntry] = field(default_factory=list)
    unapplied_signal: bool = False
    """An action (cancel, retry, a step's outcome...) is stored and no worker applied it yet."""

    @property
    def finished(self) -> bool:
        return self.detail.status in FINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Nothing will change it until someone acts: it ended for good, or it waits (for
        an outcome, a retry, a repair) with every action taken on it applied. A page
        follows an execution until it settles, and no longer."""
        if self.finished and not self.retryable:
            return True
        return not self.unapplied_signal and (
            self.finished or self.detail.status == "waiting" or self.detail.parked is not None)

    @property
    def retryable(self) -> bool:
        """What ``Hub.retry`` accepts: parked, a failed compensation, a manual retry."""
        d = self.detail
        return (d.parked is not None or any(
            s.state == "failed" or (s.state == "temp_failure" and d.status == "waiting")
            for s in d.steps))

    @property
    def awaiting(self) -> list[str]:
        """Async steps (or compensations) waiting for an outcome from outside."""
        sleeps = set(self.sleeping)
        return [s.id for s in self.detail.steps
                if s.state in ("waiting", "waiting_to_compensate") and s.id not in sleeps]

    @property
    def sleeping(self) -> list[str]:
        """Sleeps that wait for their time: an operator may wake them (``Hub.wake``)."""
        return [s.out.id for s in self.steps if s.kind == SLEEP_KIND and s.out.state == "waiting"]


def _unapplied_signal(row: dict[str, Any]) -> bool:
    """The execution row's marks (migration 0009): the last signal stored against the last
    one a worker's checkpoint applied."""
    return int(row.get("last_signal") or 0) > int(row.get("signals_done") or 0)


def _epoch(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value is not None else None


def _timeline(detail: ExecutionDetail, steps: list[StepView],
              audit: list[AuditEntry]) -> list[TimelineEntry]:
    """The transitions the stored state tells: every step's last attempt with its outcome,
    retries and compensations, the start and the end, and the operators' actions."""
    out: list[TimelineEntry] = []
    kind = (detail.trigger or {}).get("kind")
    created = TimelineEntry(detail.created_at, "created",
                            f"execution created ({kind})" if kind else "execution created")
    for sv in steps:
        s = sv.out
        msg = (s.error or {}).get("message")
        if s.attempts and s.started_at is not None:
            earlier = f"; {s.attempts - 1} earlier attempt(s) failed" if s.attempts > 1 else ""
            out.append(TimelineEntry(s.started_at, "step_started",
                                     f"attempt {s.attempts} started{earlier}", s.id,
                                     s.attempts))
        at, done = s.finished_at, s.duration_ms
        if s.state == "done" or (s.state in ("compensating", "waiting_to_compensate",
                                             "reverted", "failed") and at is not None):
            out.append(TimelineEntry(at, "step_succeeded", "succeeded", s.id, s.attempts,
                                     done))
        elif s.state == "skipped":
            out.append(TimelineEntry(at, "step_skipped", "skipped", s.id))
        elif s.state in ("permanent_failure", "timeout"):
            what = "timed out" if s.state == "timeout" else "failed"
            out.append(TimelineEntry(at, "step_failed", what, s.id, s.attempts, done, msg))
        elif s.state == "temp_failure":
            when = (f"retry due {sv.due_at.isoformat()}" if sv.due_at is not None
                    else "waiting for a manual retry")
            out.append(TimelineEntry(s.started_at, "step_retrying",
                                     f"attempt {s.attempts} failed; {when}", s.id,
                                     s.attempts, None, msg))
        elif s.state == "waiting":
            out.append(TimelineEntry(s.started_at, "step_waiting",
                                     "waiting for its outcome from outside", s.id))
        elif s.state == "invoking":
            out.append(TimelineEntry(s.started_at, "step_running", "running", s.id,
                                     s.attempts))
        comp_msg = (s.compensation_error or {}).get("message")
        n = sv.compensation_attempts
        if s.state == "reverted":
            out.append(TimelineEntry(sv.compensated_at, "compensated",
                                     f"compensated (attempt {n})", s.id, n))
        elif s.state == "failed":
            out.append(TimelineEntry(None, "compensation_failed",
                                     f"compensation failed after {n} attempt(s)", s.id, n,
                                     None, comp_msg))
        elif s.state == "compensating":
            text = f"compensating (attempt {n})"
            out.append(TimelineEntry(None, "compensating", text, s.id, n, None, comp_msg))
        elif s.state == "waiting_to_compensate":
            out.append(TimelineEntry(None, "compensating",
                                     "compensation waiting for its outcome from outside",
                                     s.id, n))
    if detail.finished_at is not None:
        err = (detail.error or {}).get("message")
        out.append(TimelineEntry(detail.finished_at, "finished", f"ended {detail.status}",
                                 None, None, None, err))
    for a in audit:
        what = a.action + (f" {a.target}" if a.target and a.action != "redrive" else "")
        out.append(TimelineEntry(a.at, "action", f"{what} by {a.actor.label}", None, None,
                                 None, a.detail.get("reason") or a.detail.get("error")))
    far = datetime.max.replace(tzinfo=UTC)
    # the creation time is the database's and a first step's start the worker's clock: the
    # creation comes first whatever the clocks say
    return [created, *sorted(out, key=lambda e: _aware(e.at) or far)]


async def _observe(read: Callable[[], Awaitable[Any]], timeout_s: float) -> Observed:
    """A bounded reading of the broker; its errors are shown, never raised."""
    try:
        return Observed(await asyncio.wait_for(read(), timeout_s), None, datetime.now(UTC))
    except HubError as exc:
        return Observed(None, str(exc), datetime.now(UTC))
    except Exception as exc:
        return Observed(None, f"{type(exc).__name__}: {str(exc)[:200]}", datetime.now(UTC))


class _Cache:
    """Readings of the broker for a few seconds: an auto-refreshing page must not open a
    Kafka client per refresh, and concurrent readers share one reading."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, Observed]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, name: str, read: Callable[[], Awaitable[Any]],
                  timeout_s: float) -> Observed:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            hit = self._values.get(name)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            seen = await _observe(read, timeout_s)
            self._values[name] = (time.monotonic(), seen)
            return seen

    def forget(self, name: str) -> None:
        self._values.pop(name, None)


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
        kafka: KafkaSettings | None = None,
        broker_ttl_s: float = 10.0,
    ) -> None:
        self.hub = hub
        self.topics_file = topics_file
        self.kafka_bootstrap = kafka_bootstrap
        self.subscribers = subscribers
        self.max_wait_s = max_wait_s
        self.metrics_ttl_s = metrics_ttl_s
        self.kafka = kafka
        """Security settings and group of the broker connection (lag, dead letters)."""
        self._snapshot: tuple[float, MetricsSnapshot] | None = None
        self._snapshot_lock = asyncio.Lock()
        self._broker = _Cache(broker_ttl_s)
        self._charts: dict[tuple[int, int], tuple[float, StatusChart]] = {}
        self.redaction = Redaction(hub.settings.redact_fields)
        """What every front end shows as ``***`` (``HUB_REDACT_FIELDS``)."""
        self._chart_locks: dict[tuple[int, int], asyncio.Lock] = {}

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
        idempotency_key: str | None,
        namespace: str,
        trigger: dict[str, Any],
        caller: dict[str, Any] | None = None,
        wait: bool,
        timeout: float | None = None,
    ) -> Outcome:
        """Start (or find, for a known idempotency key) a run.

        ``idempotency_key`` is the caller's, kept in the caller's ``namespace`` (its API
        key's id): the transaction id is ``api:<namespace>:<key>``, so a caller can neither
        find another's runs nor pre-empt a transaction id the hub derives elsewhere (an
        event's, a tick's). ``trigger`` is the lineage the front end records (``kind`` and
        who asked); the caller's own lineage, if any, is kept under ``trigger.caller`` where
        it cannot pass for the hub's. Without a key a transaction id is made up
        (``api:<uuid>``) so a wait that times out can still find the run it started. With
        ``wait``, a run that ended without success is returned like any other (its status
        tells), never raised.
        """
        check_json(input, ("body", "input"))
        check_json(caller, ("body", "trigger"))
        check_text(idempotency_key, ("header", "Idempotency-Key"))
        if caller is not None:
            trigger = {**trigger, "caller": caller}
        tx = (f"api:{namespace}:{idempotency_key}" if idempotency_key
              else f"api:{uuid.uuid4()}")
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
        transaction_id: str | None = None,
        key: str | None = None,
    ) -> ExecutionPage:
        """A page, newest first; ``next`` is the cursor of the following page.

        ``transaction_id`` matches exactly; ``key`` finds executions started by events whose
        key starts with it (an order id finds its executions; a prefix, its neighbours)."""
        check_text(workflow, ("query", "workflow"))
        check_text(trigger_kind, ("query", "trigger_kind"))
        check_text(transaction_id, ("query", "transaction_id"))
        check_text(key, ("query", "key"))
        before = decode_cursor(cursor) if cursor else None
        pattern = None
        if key:
            pattern = re.sub(r"([\\%_])", r"\\\1", key) + "%"
        rows = await self.hub.store.api_list_executions(
            workflow=workflow, status=status,
            created_after=_utc(created_after, ("query", "created_after")),
            created_before=_utc(created_before, ("query", "created_before")),
            trigger_kind=trigger_kind, before=before, limit=limit + 1,
            transaction_id=transaction_id or None, key_pattern=pattern,
        )
        page = rows[:limit]
        more = len(rows) > limit
        nxt = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
        return ExecutionPage(items=[_summary(r) for r in page], next=nxt)

    async def _run(self, ref: str, workflow: str | None) -> Run:
        if not storable_text(ref) or (workflow is not None and not storable_text(workflow)):
            raise ExecutionNotFound(f"no execution with id or transaction id {ref!r}")
        return await self.hub.get_run(ref, workflow=workflow)

    async def execution(self, ref: str, *, workflow: str | None = None,
                        raw: bool = False) -> ExecutionDetail:
        """Every step's state, the trigger lineage and the events the execution published;
        secret fields redacted unless ``raw`` (a key with the ``raw`` scope)."""
        run = await self._run(ref, workflow)
        events = await self.hub.store.api_outbox_for_execution(uuid.UUID(run.id))
        calls = await self.hub.store.api_calls_for_execution(uuid.UUID(run.id))
        detail = ExecutionDetail(
            **run_out(run).model_dump(),
            outbox=[OutboxEventOut(
                id=str(e["id"]), step=e.get("step"), topic=e["topic"], key=e["key"],
                payload=e["payload"], headers=e["headers"] or {}, created_at=e["created_at"],
                sent_at=e["sent_at"], attempts=e["attempts"], last_error=e["last_error"],
                state=e["state"], failed_at=e["failed_at"])
                for e in events],
            calls=[ConnectorCallOut(**c) for c in calls],
            **await self._lineage(run),
        )
        return detail if raw else self._redacted(detail)

    async def _lineage(self, run: Run) -> dict[str, Any]:
        """Its map steps' item counts, its parent and its children (two indexed reads)."""
        exec_id = uuid.UUID(run.id)
        counts: dict[str, dict[str, int]] = {}
        for r in await self.hub.store.fanout_counts(exec_id):
            counts.setdefault(r["step"], {})[r["state"]] = r["n"]
        trigger = run.trigger or {}
        parent = None
        if isinstance(trigger.get(PARENT_ID), str):
            parent = LineageLink(id=trigger[PARENT_ID], workflow=trigger.get("parent_workflow"),
                                 step=trigger.get(PARENT_STEP))
        children = [LineageLink(id=str(c["id"]), workflow=c["workflow"], status=c["status"],
                                step=c["parent_step"], created_at=c["created_at"],
                                finished_at=c["finished_at"])
                    for c in await self.hub.store.children_of(exec_id)]
        return {"fanouts": [FanoutOut(step=k, counts=v, total=sum(v.values()))
                            for k, v in counts.items()],
                "parent": parent, "children": children}

    async def fanout_items(self, ref: str, step: str, *, start: int = 0, limit: int = 100,
                           workflow: str | None = None) -> FanoutItemPage:
        """A page of one map step's items, in item order; outputs and errors redacted."""
        run = await self._run(ref, workflow)
        spec_steps = run.steps
        if step not in spec_steps:
            raise ExecutionNotFound(f"execution {run.id} has no step {step!r}")
        rows = await self.hub.store.fanout_page(uuid.UUID(run.id), step, start, limit + 1)
        items = [FanoutItemOut(
            idx=r["idx"], key=r["key"], step=f"{step}[{r['key']}]", state=r["state"],
            attempts=r["attempts"], compensation_attempts=r["comp_attempts"],
            completed_order=r["seq"], output=self.redaction.value(r["output"]),
            error=self.redaction.value(r["error"]), updated_at=r["updated_at"])
            for r in rows[:limit]]
        more = len(rows) > limit
        return FanoutItemPage(step=step, items=items,
                              next_start=rows[limit]["idx"] if more else None)

    def _redacted(self, detail: ExecutionDetail) -> ExecutionDetail:
        """``detail`` as anyone without the ``raw`` scope sees it: every payload it carries
        (input, outputs, result, trigger, events and their headers) by the policy."""
        r = self.redaction.value
        return detail.model_copy(update={
            "input": r(detail.input), "result": r(detail.result),
            "trigger": r(detail.trigger),
            "steps": [st.model_copy(update={"output": r(st.output)}) for st in detail.steps],
            "outbox": [e.model_copy(update={"payload": r(e.payload), "headers": r(e.headers)})
                       for e in detail.outbox],
        })

    async def complete_step(
        self, ref: str, step: str, *, success: bool, output: Any = None,
        error: str | None = None, workflow: str | None = None, actor: Actor | None = None,
        compensation: bool = False, delivery: WebhookDelivery | None = None,
    ) -> SignalAccepted:
        """Record an async step's outcome (or, with ``compensation``, its async
        compensation's); a worker applies it. Audited, as every operation: ``actor`` names
        who asked. ``delivery``: the signed webhook that carried it, accepted once; the
        sender's retry of it (same id, target and body) is answered as accepted again, with
        ``duplicate`` and nothing recorded, any other use of its id raises
        DuplicateDelivery."""
        check_json(output, ("body", "output"))
        check_text(error, ("body", "error"))
        run = await self._run(ref, workflow)
        check_text(step, ("path", "step"))
        kind: Literal["success", "failure", "compensation_success", "compensation_failure"]
        if compensation:
            kind = "compensation_success" if success else "compensation_failure"
        else:
            kind = "success" if success else "failure"
        accepted = SignalAccepted(execution_id=run.id, workflow=run.workflow,
                                  transaction_id=run.transaction_id, step=step, signal=kind)
        action = {"success": "complete_step", "failure": "fail_step",
                  "compensation_success": "complete_compensation",
                  "compensation_failure": "fail_compensation"}[kind]
        detail: dict[str, Any] = {"step": step}
        if not success:
            detail["error"] = error
        if delivery is not None:
            detail["webhook_id"] = delivery.id
        try:
            if delivery is not None and await self._retried(delivery, run.id, step, kind):
                return accepted.model_copy(update={"duplicate": True})
            await self._signal_outcome(run.id, run.workflow, step, kind, output, error,
                                       self._record(actor, action, step, detail), delivery)
        except (InvalidTransition, DuplicateDelivery) as exc:
            # a late outcome (the run ended, the step moved on) or a reused delivery: refused,
            # and kept in the audit as refused, so "did the warehouse say it shipped?" has an
            # answer even when the answer came too late
            await self._audit(actor, f"{action}_refused", run.id, step,
                              {**detail, "refused": str(exc)})
            raise
        return accepted

    async def _retried(self, delivery: WebhookDelivery, execution_id: str, step: str,
                       kind: str) -> bool:
        """The sender's retry of a delivery already accepted (same id, target, kind, body):
        True; a reuse of its id for anything else: DuplicateDelivery."""
        seen = await self.hub.store.webhook_seen(delivery.source, delivery.id)
        if seen is None:
            return False
        if (str(seen["execution_id"]), seen["step"], seen["kind"], seen["digest"]) != (
                execution_id, step, kind, delivery.digest):
            raise DuplicateDelivery(
                f"webhook-id {delivery.id!r} was already accepted from "
                f"{delivery.source!r} for another request: a delivery is used once")
        return True

    async def _signal_outcome(self, execution_id: str, workflow: str, step: str, kind: str,
                              output: Any, error: str | None, audit: AuditRecord,
                              delivery: WebhookDelivery | None) -> None:
        """Record one outcome by the execution's id (resolved already, never an ambiguous
        transaction id), with its audit row and its delivery's id, in one transaction."""
        hub, ref = self.hub, execution_id
        if kind == "success":
            await hub.set_step_success(ref, step, output, workflow=workflow, audit=audit,
                                       once=delivery)
        elif kind == "failure":
            await hub.set_step_failure(ref, step, error or "failed", workflow=workflow,
                                       audit=audit, once=delivery)
        elif kind == "compensation_success":
            await hub.set_compensation_success(ref, step, workflow=workflow, audit=audit,
                                               once=delivery)
        else:
            await hub.set_compensation_failure(ref, step, error or "failed", workflow=workflow,
                                               audit=audit, once=delivery)
        self._audited(audit, ref)

    async def retry(self, ref: str, *, workflow: str | None = None,
                    actor: Actor | None = None) -> SignalAccepted:
        run = await self._run(ref, workflow)
        audit = self._record(actor, "retry", None, {})
        await self.hub.retry(run.id, workflow=run.workflow, audit=audit)
        self._audited(audit, run.id)
        return SignalAccepted(execution_id=run.id, workflow=run.workflow,
                              transaction_id=run.transaction_id, signal="retry")

    async def wake(self, ref: str, step: str, *, workflow: str | None = None,
                   actor: Actor | None = None) -> SignalAccepted:
        """End a durable sleep now: the steps after it run at once. Refused for a step
        that is not a sleep, or a sleep that does not wait (InvalidTransition), and audited
        as refused, like a late outcome."""
        run = await self._run(ref, workflow)
        check_text(step, ("path", "step"))
        detail = {"step": step}
        audit = self._record(actor, "wake", step, detail)
        try:
            await self.hub.wake(run.id, step, workflow=run.workflow, audit=audit)
        except InvalidTransition as exc:
            await self._audit(actor, "wake_refused", run.id, step,
                              {**detail, "refused": str(exc)})
            raise
        self._audited(audit, run.id)
        return SignalAccepted(execution_id=run.id, workflow=run.workflow,
                              transaction_id=run.transaction_id, step=step, signal="wake")

    async def stop(
        self, ref: str, kind: Literal["cancel", "compensate"], *, reason: str | None,
        wait: bool, timeout: float | None = None, workflow: str | None = None,
        actor: Actor | None = None,
    ) -> Outcome:
        """Cancel or compensate; with ``wait``, until the run ends (or the wait times out)."""
        check_text(reason, ("body", "reason"))
        run = await self._run(ref, workflow)
        audit = self._record(actor, kind, None, {"reason": reason} if reason else {})
        if kind == "cancel":
            run = await self.hub.cancel(run.id, workflow=run.workflow,
                                        reason=reason or "cancelled", wait=False, audit=audit)
        else:
            run = await self.hub.compensate(run.id, workflow=run.workflow,
                                            reason=reason or "compensation requested",
                                            wait=False, audit=audit)
        self._audited(audit, run.id)
        if not wait:
            return Outcome(run_out(run), settled=False)
        try:
            done = await self.hub.wait(run.id, timeout=self._wait_s(timeout))
        except TimeoutError:
            return Outcome(run_out(await self.hub.get_run(run.id)), settled=False)
        return Outcome(run_out(done), settled=True)

    # -- the outbox ----------------------------------------------------------------------
    async def outbox(self, *, state: OutboxState | None = None, cursor: str | None = None,
                     limit: int = 50) -> OutboxPage:
        """Events not yet published (pending, retrying, failed), newest first; ``state``
        keeps one of them (``sent`` lists nothing: published events are on their
        execution)."""
        before = decode_cursor(cursor) if cursor else None
        if state == "sent":
            return OutboxPage(items=[])
        rows = await self.hub.store.outbox_list(state=state, before=before, limit=limit + 1)
        page = rows[:limit]
        nxt = (encode_cursor(page[-1]["created_at"], page[-1]["id"])
               if len(rows) > limit else None)
        return OutboxPage(items=[_outbox_row(r) for r in page], next=nxt)

    async def retry_outbox(self, ids: list[str], *, all_failed: bool = False,
                           actor: Actor | None = None) -> OutboxRetried:
        """Make unpublished events due again (``ids``, or every failed one): the relay
        publishes them next, their attempts counted afresh. Each retry is audited with the
        row's topic, attempts and last error, in the statement that makes it due. An unknown
        id is refused (OutboxEventNotFound), as is a published one (InvalidTransition)."""
        wanted = [_outbox_id(i) for i in ids]
        if not wanted and not all_failed:
            raise InvalidArgument(("body", "ids"), "choose an event, or every failed one")
        if wanted:
            found = {r["id"]: r for r in await self.hub.store.outbox_get(wanted)}
            missing = [str(i) for i in wanted if i not in found]
            if missing:
                raise OutboxEventNotFound(f"no outbox event {', '.join(missing)}")
            sent = [f"{i} (at {found[i]['sent_at'].isoformat()})" for i in wanted
                    if found[i]["sent_at"] is not None]
            if sent:
                raise InvalidTransition(f"outbox event {', '.join(sent)} was already "
                                        "published; there is nothing to retry")
        audit = self._record(actor, "outbox_retry", None, {})
        done: list[uuid.UUID] = []
        while True:
            batch = await self.hub.store.outbox_retry(wanted, all_failed=all_failed,
                                                      audit=audit)
            fresh = [i for i in batch if i not in done]
            done += fresh
            # a row failed again meanwhile is not retried twice by one request
            if not all_failed or len(batch) < max(1000, len(wanted)) or not fresh:
                break
            wanted = []
        for i in done:
            self._audited(dataclasses.replace(audit, target=f"outbox:{i}"), None)
        if done:
            await self.hub.store.notify(json.dumps({wire.N_OUTBOX: True}))  # wake the relays
        return OutboxRetried(ids=[str(i) for i in done])

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
                outbox_failed=int(backlog["failed"]),
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


    # -- audit ---------------------------------------------------------------------------
    @staticmethod
    def _record(actor: Actor | None, action: str, target: str | None,
                detail: dict[str, Any]) -> AuditRecord:
        """The audit row of an operation, written with the signal that carries it out (one
        transaction): a refused operation records nothing, an accepted one always."""
        who = actor or UNATTRIBUTED
        return AuditRecord(who.id, who.name, who.via, action, target,
                           json.dumps({k: v for k, v in detail.items() if v is not None}))

    @staticmethod
    def _audited(record: AuditRecord, execution_id: str | None) -> None:
        log.info("operation_audited", action=record.action, actor=record.actor_name,
                 via=record.via, execution_id=execution_id, target=record.target)

    async def _audit(self, actor: Actor | None, action: str, execution_id: str | None,
                     target: str | None, detail: dict[str, Any]) -> None:
        """Record an accepted operation that no signal carries (a redrive: its effect is a
        Kafka record, outside any transaction of ours), after it was done."""
        record = self._record(actor, action, target, detail)
        await self.hub.store.audit_insert(
            record, uuid.UUID(execution_id) if execution_id is not None else None)
        self._audited(record, execution_id)

    # -- the console's reads ---------------------------------------------------------------
    async def execution_view(self, ref: str, *, workflow: str | None = None) -> ExecutionView:
        """One execution as a person reads it: secrets redacted; the graph it runs on; each
        step's idempotency keys (what its connector calls carry); the timeline of its
        transitions and of the actions taken on it."""
        detail = await self.execution(ref, workflow=workflow)
        row = await self.hub.store.get(uuid.UUID(detail.id)) or {}
        raw: dict[str, dict[str, Any]] = row.get("steps") or {}
        graph: dict[str, Any] | None = None
        note: str | None = None
        nodes: dict[str, dict[str, Any]] = {}
        try:
            spec = self.hub.registry.get(detail.workflow, detail.version)
            graph = spec.graph.to_dict()
            nodes = {n["id"]: n for n in graph["steps"]}
        except HubError as exc:
            note = str(exc)
        steps: list[StepView] = []
        for out in detail.steps:
            st = raw.get(out.id, {})
            node = nodes.get(out.id, {})
            compensable = bool(node.get("compensates"))
            steps.append(StepView(
                out=out,
                kind=str(node.get("kind", "step")),
                is_async=bool((node.get("options") or {}).get("is_async")),
                compensable=compensable,
                idempotency_key=_idempotency_key(detail, out.id, compensating=False),
                compensation_key=(_idempotency_key(detail, out.id, compensating=True)
                                  if compensable else None),
                compensation_attempts=int(st.get("comp_attempts") or 0),
                compensated_at=_epoch(st.get("compensated_at")),
                completed_order=st.get("seq"),
                due_at=_epoch(st.get("due")),
                compensate_input=self.redaction.value(st.get("compensate_input")),
            ))
        audit = [_audit_entry(r) for r in
                 await self.hub.store.audit_for_execution(uuid.UUID(detail.id))]
        safe = detail  # redacted by execution()
        return ExecutionView(detail=safe, steps=steps, graph=graph, graph_note=note,
                             timeline=_timeline(safe, steps, audit), audit=audit,
                             # two reads: if the status moved between them (a worker
                             # applied the signal meanwhile), the view is not settled yet
                             unapplied_signal=(_unapplied_signal(row)
                                               or row.get("status", detail.status)
                                               != detail.status))

    async def status_chart(self, window: timedelta, buckets: int) -> StatusChart:
        """Executions created in the last ``window`` per workflow, split into ``buckets``
        equal slices, counted by their status now (the overview's chart).

        Kept for 1/120 of a bucket (2.5 s of an hour's 5-minute bars, 3 min of a week's
        6-hour ones): the week's chart counts a quarter of a million rows of a million, and
        every open overview asks again every few seconds."""
        bucket_s = max(1, int(window.total_seconds() // max(1, buckets)))
        key = (bucket_s, buckets)
        lock = self._chart_locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._charts.get(key)
            if hit is not None and time.monotonic() - hit[0] < min(300.0, bucket_s / 120):
                return hit[1]
            chart = await self._status_chart(bucket_s, buckets)
            self._charts[key] = (time.monotonic(), chart)
            return chart

    async def _status_chart(self, bucket_s: int, buckets: int) -> StatusChart:
        now = datetime.now(UTC).timestamp()
        last = int(now // bucket_s) * bucket_s
        starts = [last - bucket_s * i for i in range(buckets - 1, -1, -1)]
        rows = await self.hub.store.api_execution_buckets(
            datetime.fromtimestamp(starts[0], UTC), bucket_s)
        index = {b: i for i, b in enumerate(starts)}
        by_wf: dict[str, dict[str, list[int]]] = {}
        for r in rows:
            i = index.get(int(r["bucket"].timestamp()))
            if i is None:
                continue
            counts = by_wf.setdefault(r["workflow"], {})
            counts.setdefault(r["status"], [0] * buckets)[i] += int(r["n"])
        order = [s.value for s in RunStatus]
        series = [StatusSeries(wf, {st: c[st] for st in order if st in c})
                  for wf, c in sorted(by_wf.items())]
        return StatusChart(timedelta(seconds=bucket_s * buckets), timedelta(seconds=bucket_s),
                           [datetime.fromtimestamp(b, UTC) for b in starts], series)

    async def jobs(self) -> list[dict[str, Any]]:
        """Scheduled jobs with their next and last runs (as ``GET /jobs``)."""
        from hub.runtime.scheduler import Scheduler

        return await Scheduler(self.hub).jobs()

    def breakers(self) -> list[Breaker]:
        """Circuit breakers this process knows: those of the connectors registered in the
        hub's container (``connector.breaker.state``), and any ``*breaker*`` gauge of the
        process's metrics (``{connector=..., state=...}``). A worker's own breakers are in
        its metrics, not here."""
        found: dict[str, Breaker] = {}
        # only the services already built: resolving a provided one would build a connector
        # (and fail on its missing configuration) just to look at it
        built: dict[str, Any] = dict(getattr(self.hub.container, "_services", {}))
        for name, service in sorted(built.items()):
            state = getattr(getattr(service, "breaker", None), "state", None)
            if state is not None:
                label = str(getattr(service, "name", name))
                found[label] = Breaker(label, str(getattr(state, "value", state)),
                                       "connector")
        from hub.metrics import REGISTRY

        for family in REGISTRY.collect():
            if "breaker" not in family.name:
                continue
            for sample in family.samples:
                who = sample.labels.get("connector") or sample.labels.get("name")
                state = sample.labels.get("state")
                if who and who not in found and (state is None or sample.value):
                    found[who] = Breaker(who, state or ("open" if sample.value else "closed"),
                                         "metrics")
        return sorted(found.values(), key=lambda b: b.connector)

    def _kafka(self) -> tuple[KafkaSettings, str]:
        settings = self.kafka or KafkaSettings(bootstrap=self.kafka_bootstrap or None)
        bootstrap = self.kafka_bootstrap or settings.bootstrap or ""
        if not bootstrap:
            raise BrokerUnavailable("no broker configured (HUB_KAFKA_BOOTSTRAP)")
        return settings, bootstrap

    async def consumer_lag(self) -> Observed:
        """Lag of the deployment's group per subscribed topic and partition (cached)."""

        async def read() -> list[dict[str, Any]]:
            from hub.runtime.admin import consumer_lag

            settings, bootstrap = self._kafka()
            topics = self.subscribers.topics()
            if not topics:
                return []
            rows = await consumer_lag(settings, bootstrap, topics)
            return [{"topic": r.topic, "partition": r.partition, "committed": r.committed,
                     "end": r.end, "lag": r.lag} for r in rows]

        return await self._broker.get("lag", read, timeout_s=15.0)

    async def dead_letter_count(self) -> Observed:
        """Dead letters held per dead-letter topic (``DeadLetterCount``: held, redriven,
        approximate), from the topics' offsets, never from reading records (cached)."""

        async def read() -> dict[str, Any]:
            from hub.runtime.deadletters import count_dead_letters, dead_letter_topics

            settings, bootstrap = self._kafka()
            topics = self._topics()
            counts: dict[str, Any] = {}
            for name in dead_letter_topics(topics):
                spec = topics.topics.get(name)
                compacted = spec is not None and "compact" in spec.cleanup_policy
                counts[name] = await count_dead_letters(self.hub, settings, bootstrap, name,
                                                        compacted=compacted)
            return counts

        return await self._broker.get("dead_letters", read, timeout_s=30.0)

    def _topics(self) -> Any:
        from hub.runtime.topics import load_topics

        if self.topics_file is None or not self.topics_file.is_file():
            raise HubError(f"no topics file at {self.topics_file} (HUB_KAFKA_TOPICS_FILE)")
        try:
            return load_topics(self.topics_file)
        except HubError as exc:
            raise Misconfigured(f"{self.topics_file}: {exc}") from exc

    async def dead_letters(self, dlq_topic: str | None = None, *, cursor: str | None = None,
                           limit: int = 50) -> DeadLetterViewPage:
        """A page of one dead-letter topic of topics.yaml (default: the first), oldest
        first, with each letter's redrives (who, when, where to). A page holds at most
        ``limit`` letters (capped at ``PAGE_LIMIT``) and ``PAGE_BYTES`` of them; ``next``
        continues it."""
        from hub.runtime.deadletters import PAGE_LIMIT, dead_letter_topics, read_dead_letters
        from hub.runtime.dlq_cursor import BadCursor

        if not 1 <= limit <= PAGE_LIMIT:
            raise InvalidArgument(("query", "limit"), f"between 1 and {PAGE_LIMIT}")
        settings, bootstrap = self._kafka()
        names = dead_letter_topics(self._topics())
        if dlq_topic is not None and dlq_topic not in names:
            raise InvalidArgument(("query", "topic"),
                                  f"{dlq_topic!r} is no dead-letter topic of topics.yaml")
        topic = dlq_topic or (names[0] if names else None)
        if topic is None:
            return DeadLetterViewPage(None, names, [], None, 0)
        try:
            page = await read_dead_letters(self.hub, settings, bootstrap, topic,
                                           cursor=cursor, limit=limit)
        except BadCursor as exc:
            raise InvalidArgument(("query", "cursor"), str(exc)) from None
        return DeadLetterViewPage(topic, names, await self._letter_views(page.letters),
                                  page.next, page.fetched)

    async def dead_letter(self, ref: str) -> DeadLetterView:
        """One dead letter by its position (``dlq-topic/partition/offset``), read alone."""
        from hub.runtime.deadletters import dead_letter_topics, read_letters

        check_text(ref, ("path", "ref"))
        settings, bootstrap = self._kafka()
        self._dead_letter_topic_of(ref, dead_letter_topics(self._topics()))
        found = await read_letters(self.hub, settings, bootstrap, [ref])
        if ref not in found:
            raise ExecutionNotFound(f"no dead letter {ref}")
        [view] = await self._letter_views([found[ref]])
        return view

    @staticmethod
    def _dead_letter_topic_of(ref: str, names: list[str]) -> str:
        from hub.runtime.deadletters import parse_ref

        try:
            topic, _, _ = parse_ref(ref)
        except HubError as exc:
            raise InvalidArgument(("body", "ref"), str(exc)) from None
        if topic not in names:
            raise InvalidArgument(("body", "ref"),
                                  f"{topic!r} is no dead-letter topic of topics.yaml")
        return topic

    async def _letter_views(self, letters: list[Any]) -> list[DeadLetterView]:
        from hub import wire as h

        actions: dict[str, list[AuditEntry]] = {}
        for r in await self.hub.store.audit_for_targets([d.ref for d in letters]):
            entry = _audit_entry(r)
            actions.setdefault(entry.target or "", []).append(entry)
        out = []
        for d in letters:
            hd = d.headers
            redrives = [{"at": r["redriven_at"], "target": r["target"], "by": r["redriven_by"]}
                        for r in d.redriven]
            out.append(DeadLetterView(
                ref=d.ref, dlq_topic=d.dlq_topic, partition=d.partition, offset=d.offset,
                timestamp=datetime.fromtimestamp(d.timestamp / 1000, UTC)
                if d.timestamp and d.timestamp > 0 else None,
                key=d.key, topic=hd.get(h.DLQ_TOPIC), original_partition=hd.get(h.DLQ_PARTITION),
                original_offset=hd.get(h.DLQ_OFFSET), stage=hd.get(h.DLQ_STAGE),
                subscriber=hd.get(h.DLQ_SUBSCRIBER) or None,
                error=hd.get(h.DLQ_EXCEPTION_CLASS, "").rsplit(".", 1)[-1],
                message=hd.get(h.DLQ_EXCEPTION_MESSAGE) or "",
                payload=_payload_text(d.value, self.redaction),
                headers=self.redaction.value(hd),
                redrives=redrives or [{"at": a.at, "target": a.detail.get("to"),
                                       "by": a.actor.label} for a in actions.get(d.ref, [])],
            ))
        return out

    async def redrive(self, refs: list[str], *, to_subscriber: bool = False,
                      actor: Actor | None = None) -> list[dict[str, Any]]:
        """Send dead letters (``dlq-topic/partition/offset``) back to their topic, or straight
        to their subscriber; each redrive is recorded (``dlq_redrive`` and the audit)."""
        from hub.runtime.deadletters import (
            PAGE_LIMIT,
            dead_letter_topics,
            read_letters,
        )
        from hub.runtime.deadletters import redrive as send_back

        if not refs:
            raise InvalidArgument(("body", "ref"), "choose at least one dead letter")
        if len(refs) > PAGE_LIMIT:
            raise InvalidArgument(("body", "ref"),
                                  f"{len(refs)} dead letters chosen; at most {PAGE_LIMIT} at once")
        settings, bootstrap = self._kafka()
        topics = self._topics()
        names = dead_letter_topics(topics)
        for ref in refs:
            check_text(ref, ("body", "ref"))
            self._dead_letter_topic_of(ref, names)
        # each chosen letter is fetched alone, by its position: never its whole topic
        found = await read_letters(self.hub, settings, bootstrap, list(dict.fromkeys(refs)))
        missing = [r for r in refs if r not in found]
        if missing:
            raise ExecutionNotFound(f"no dead letter {', '.join(missing)}")
        chosen = [found[r] for r in dict.fromkeys(refs)]
        who = actor or UNATTRIBUTED
        done = await send_back(self.hub, topics, self.subscribers, settings, bootstrap, chosen,
                               to_subscriber=to_subscriber, by=who.label)
        for letter, result in zip(chosen, done, strict=False):
            hd = letter.headers
            await self._audit(actor, "redrive", None, letter.ref, {
                "to": result["target"], "topic": hd.get("hub.errors.topic"),
                "partition": hd.get("hub.errors.partition"),
                "offset": hd.get("hub.errors.offset"), "key": letter.key})
        self._broker.forget("dead_letters")
        return done

    async def event_record(self, ref: str, *, workflow: str | None = None) -> Observed:
        """The Kafka record that started an execution, read back from its position (topic,
        partition, offset) while the topic retains it: key, headers, payload (redacted)."""
        run = await self._run(ref, workflow)
        trigger = run.trigger or {}
        if trigger.get("kind") != "event":
            raise InvalidArgument(("path", "id"), "this execution was not started by an event")

        async def read() -> dict[str, Any] | None:
            from aiokafka import AIOKafkaConsumer, TopicPartition

            from hub.runtime.consumer import decode_headers
            from hub.runtime.kafka import client_kwargs
            from hub.wire import REDRIVEN_FROM

            settings, bootstrap = self._kafka()
            tp = TopicPartition(str(trigger["topic"]), int(trigger["partition"]))
            offset = int(trigger["offset"])
            consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=None,
                                        enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign([tp])
                consumer.seek(tp, offset)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    batch = await consumer.getmany(tp, timeout_ms=500, max_records=50)
                    for rec in batch.get(tp, []):
                        if rec.offset == offset:
                            headers = decode_headers(rec.headers)
                            source = headers.get(REDRIVEN_FROM)
                            redrives = [_audit_entry(r) for r in
                                        await self.hub.store.audit_for_targets([source])
                                        ] if source else []
                            return {"key": rec.key.decode("utf-8", "replace")
                                    if rec.key is not None else None,
                                    "timestamp": datetime.fromtimestamp(rec.timestamp / 1000,
                                                                        UTC),
                                    "headers": self.redaction.value(headers),
                                    "payload": _payload_text(rec.value, self.redaction),
                                    "redriven_from": source, "redrives": redrives}
                        if rec.offset > offset:
                            return None
                return None
            finally:
                await consumer.stop()

        return await _observe(read, timeout_s=10.0)


def _idempotency_key(detail: ExecutionDetail, step: str, *, compensating: bool) -> str:
    """The key the step's connector calls carry: made where the executor makes it."""
    return StepContext.make(execution_id=detail.id, transaction_id=detail.transaction_id,
                            workflow=detail.workflow, step=step, attempt=0,
                            container=_NO_SERVICES, compensating=compensating).idempotency_key


_NO_SERVICES = Container()


def _payload_text(value: bytes | None, redaction: Redaction) -> str | None:
    """A record's value for display: JSON pretty-printed with secrets redacted, else text."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    try:
        return json.dumps(redaction.value(json.loads(text)), indent=2, ensure_ascii=False)
    except ValueError:
        return text
