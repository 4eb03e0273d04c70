"""The JSON shapes of the HTTP API: request bodies and what the service layer returns.

They are the OpenAPI document's schemas, and the service returns them to every reader (the
JSON API now, the console and the CLI later), so an execution is formatted in one place.
Request bodies forbid unknown fields: a misspelt ``inptu`` is a 422 naming it, not a run
started with no input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.engine.run import RunStatus, StepState
from hub.types import JSON

# -- request bodies -----------------------------------------------------------------------


class StartRunBody(BaseModel):
    """Start a workflow run."""

    model_config = ConfigDict(extra="forbid")

    input: JSON = Field(default=None, description="the workflow's input, validated by its model")
    trigger: dict[str, Any] | None = Field(
        default=None,
        description="the caller's own lineage (e.g. the upstream request id); stored under "
                    "`trigger.caller` next to what the hub records (`kind: api`, the key)",
    )


class StepSuccessBody(BaseModel):
    """Complete an async step (or its async compensation) with this output."""

    model_config = ConfigDict(extra="forbid")

    output: JSON = Field(default=None, description="the step's output, read by later steps")


class StepFailureBody(BaseModel):
    """Fail an async step: the workflow compensates, or follows the step's options."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(min_length=1, max_length=4000, description="why the step failed")


class OperateBody(BaseModel):
    """Why an operator cancels or compensates (recorded as the run's error message)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=1000)


# -- responses ----------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error but validation: a stable code and a message naming the problem."""

    error: str = Field(description="stable code: unauthorized, forbidden, not_found, conflict, "
                                   "payload_too_large, ...")
    detail: str


class StepOut(BaseModel):
    """One step of an execution, as stored."""

    id: str
    state: StepState
    attempts: int = Field(description="invocations so far (retries included)")
    output: JSON = None
    error: dict[str, Any] | None = Field(default=None,
                                         description="the last failure: message, type, attempt")
    compensation_error: dict[str, Any] | None = None
    started_at: datetime | None = Field(default=None, description="start of the last attempt")
    finished_at: datetime | None = None
    duration_ms: float | None = Field(default=None, description="of the last attempt")


class RunOut(BaseModel):
    """An execution: where it is, what it was given, what it produced."""

    id: str
    workflow: str
    version: str = Field(description="hash of the graph the execution runs on")
    transaction_id: str
    status: RunStatus
    state: str = Field(description="Medusa's name for the transaction state")
    phase: str = Field(description="forward, compensating or cancelling while it runs; its "
                                   "end status once it ended")
    input: JSON = None
    result: JSON = None
    error: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = Field(
        default=None, description="lineage: `kind` (event, schedule, api) and its details")
    parked: str | None = Field(default=None,
                               description="why the execution cannot run here (missing version)")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[StepOut] = Field(default_factory=list, description="in graph order")


OutboxState = Literal["pending", "retrying", "failed", "sent"]
"""An outbox event's state: ``pending`` (never tried), ``retrying`` (a publish failed, another
is due at ``next_attempt_at``), ``failed`` (refused, or out of attempts: it waits for an
operator's retry, and is never purged), ``sent``."""


class OutboxEventOut(BaseModel):
    """An event a step published through the outbox."""

    id: str
    step: str | None = None
    topic: str
    key: str | None = None
    payload: JSON = None
    headers: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    sent_at: datetime | None = Field(default=None, description="when the relay published it")
    attempts: int = Field(default=0, description="publish attempts so far")
    last_error: str | None = Field(default=None, description="why the last publish failed")
    state: OutboxState = Field(default="pending", description="where the relay is with it")
    failed_at: datetime | None = Field(
        default=None, description="when it was failed (it waits for `hub outbox retry`)")


class OutboxRow(BaseModel):
    """An event in the outbox and the relay's progress with it (no payload: it can be large;
    the execution's detail has it)."""

    id: str
    execution_id: str | None = None
    step: str | None = Field(default=None, description="the step that emitted it")
    topic: str
    key: str | None = None
    state: OutboxState
    attempts: int = Field(description="publish attempts so far")
    next_attempt_at: datetime | None = Field(
        default=None, description="when the relay tries it next (not once sent or failed)")
    last_error: str | None = Field(default=None, description="why the last publish failed")
    created_at: datetime
    sent_at: datetime | None = None
    failed_at: datetime | None = None


class OutboxPage(BaseModel):
    """A page of unpublished outbox events, newest first."""

    items: list[OutboxRow]
    next: str | None = Field(default=None,
                             description="opaque cursor of the next page; absent on the last")


class OutboxRetried(BaseModel):
    """Outbox events made due again: the relay publishes them next."""

    ids: list[str] = Field(description="the events made due (their attempts count afresh)")


class ConnectorCallOut(BaseModel):
    """One HTTP attempt a step (or its compensation) made to an outside system: the lineage
    from an execution to what it did elsewhere. No bodies, headers or query strings."""

    step: str
    compensating: bool = Field(description="made by the step's compensation")
    step_attempt: int = Field(description="the step's (or compensation's) attempt")
    system: str = Field(description="the connector: stripe, odoo, hubspot, contentful, ...")
    operation: str = Field(description="what the call does, e.g. create_payment_intent")
    method: str
    path: str = Field(description="redacted, without the query string")
    status: int | None = Field(default=None, description="HTTP status, if it answered")
    error: str | None = Field(default=None, description="the transport error, if it did not")
    duration_ms: float
    attempt: int = Field(description="the attempt within the connector's in-process retries")
    idempotency_key: str | None = None
    outside_id: str | None = Field(
        default=None, description="the outside system's id of what it created or touched")
    dropped: int = Field(default=0, description="calls of this step attempt beyond "
                                                "HUB_MAX_CALLS_PER_STEP, not kept")
    at: datetime


class FanoutOut(BaseModel):
    """A map step's items counted per state (the items themselves: ``.../items``)."""

    step: str
    counts: dict[str, int] = Field(description="items per state (not_started, done, ...)")
    total: int


class FanoutItemOut(BaseModel):
    """One item of a map step: its key (in its idempotency key), state and outcome."""

    idx: int
    key: str
    step: str = Field(description="the item's step id: <map step>[<key>]")
    state: str
    attempts: int
    compensation_attempts: int
    completed_order: int | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    updated_at: datetime | None = None


class FanoutItemPage(BaseModel):
    """A page of a map step's items, in item order."""

    step: str
    items: list[FanoutItemOut]
    next_start: int | None = Field(default=None, description="the next page's start")


class LineageLink(BaseModel):
    """A parent or child execution (run_child, or an item of a map over a workflow)."""

    id: str
    workflow: str | None = None
    status: str | None = None
    step: str | None = Field(default=None, description="the parent's step that started it")
    created_at: datetime | None = None
    finished_at: datetime | None = None


class ExecutionDetail(RunOut):
    """An execution with the events it published and the connector calls it made."""

    outbox: list[OutboxEventOut] = Field(default_factory=list)
    calls: list[ConnectorCallOut] = Field(
        default_factory=list,
        description="connector calls in the order they were made (the first 1000)")
    fanouts: list[FanoutOut] = Field(default_factory=list,
                                     description="its map steps' item counts per state")
    parent: LineageLink | None = Field(default=None,
                                       description="the execution that started it, if any")
    children: list[LineageLink] = Field(default_factory=list,
                                        description="the child executions its steps started")


class ExecutionSummary(BaseModel):
    """A row of the execution list: no input, steps or result (they can be large)."""

    id: str
    workflow: str
    version: str
    transaction_id: str
    status: RunStatus
    phase: str
    trigger_kind: str | None = None
    trigger: dict[str, Any] | None = None
    parked: str | None = None
    archived: bool = False
    error: str | None = Field(default=None, description="the error message, if any")
    error_step: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None


class ExecutionPage(BaseModel):
    """A page of executions, newest first."""

    items: list[ExecutionSummary]
    next: str | None = Field(default=None,
                             description="opaque cursor of the next page; absent on the last")


class WorkflowSummary(BaseModel):
    name: str
    version: str
    steps: list[str]


class WorkflowDefinitionOut(BaseModel):
    """A workflow as deployed in this process: the graph its new executions run on."""

    name: str
    version: str
    graph: dict[str, Any] = Field(description="nodes, order edges and data edges")
    mermaid: str = Field(description="the graph as a Mermaid flowchart")
    input_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of the input model, if the workflow has one")
    store: bool
    idempotent: bool
    retention_seconds: float | None = None


class SignalAccepted(BaseModel):
    """An outcome or an operation was recorded; a worker applies it (follow `Location`)."""

    execution_id: str
    workflow: str
    transaction_id: str
    step: str | None = None
    signal: Literal["success", "failure", "compensation_success", "compensation_failure",
                    "retry", "cancel", "compensate", "wake"]
    duplicate: bool = Field(
        default=False, description="a signed delivery already accepted (the sender's retry): "
                                   "answered as before, nothing recorded again")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] | None = Field(
        default=None, description="each check: ok, or what is wrong (only with a read key)")


class ApiKeyOut(BaseModel):
    """An API key without its secret (only its public prefix)."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedApiKey(ApiKeyOut):
    """A new key: ``token`` is shown this once and never stored."""

    token: str


class DeadLetterRedrive(BaseModel):
    """One redrive of a dead letter: when, where to, by whom."""

    at: datetime | None = None
    target: str | None = None
    by: str | None = None


class DeadLetterOut(BaseModel):
    """A dead-lettered record: where it came from, why it failed, what it carried
    (payload and headers redacted)."""

    ref: str = Field(description="dlq-topic/partition/offset")
    dlq_topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    topic: str | None = Field(description="the topic it was consumed from")
    original_partition: str | None
    original_offset: str | None
    stage: str | None = Field(description="deserialize, validate, handler or start")
    subscriber: str | None
    error: str
    message: str
    payload: str | None
    headers: dict[str, str]
    redrives: list[DeadLetterRedrive]


class DeadLetterPage(BaseModel):
    """A bounded page of one dead-letter topic, oldest first (partition, then offset)."""

    topic: str | None = Field(description="the dead-letter topic read")
    topics: list[str] = Field(description="every dead-letter topic of topics.yaml")
    items: list[DeadLetterOut]
    next: str | None = Field(
        default=None, description="cursor of the next page (an offset per partition); absent "
                                  "on the last. A page is cut short at 4 MiB of letters too")


class DeadLetterCount(BaseModel):
    """A dead-letter topic's size, from its offsets (no record is read)."""

    held: int = Field(description="records held: end minus beginning offset, per partition")
    redriven: int = Field(description="of those, redriven at least once")
    waiting: int = Field(description="held and not redriven")
    approximate: bool = Field(description="a compacted topic holds fewer than its offsets "
                                          "span: `held` is about, an upper bound")
