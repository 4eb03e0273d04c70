"""Executions: the list, one execution in full, async step outcomes and operations.

``{id}`` is an execution id or a transaction id; a transaction id used by several workflows
needs ``?workflow=``. Outcomes and operations are recorded, then applied by a worker: they
answer 202 with ``Location`` (cancel and compensate with ``?wait=true`` answer 200 with the
run once it ended).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from hub.api.auth import OperateKey, ReadKey, RunKey, ServiceDep
from hub.api.keys import ApiKey, Scope
from hub.api.models import (
    ErrorBody,
    ExecutionDetail,
    ExecutionPage,
    FanoutItemPage,
    OperateBody,
    RunOut,
    SignalAccepted,
    StepFailureBody,
    StepSuccessBody,
)
from hub.api.problems import ERROR_RESPONSES
from hub.api.service import Actor, HubService, Outcome
from hub.engine.run import RunStatus

router = APIRouter(tags=["executions"])

ExecutionRef = Annotated[str, Path(alias="id", description="execution id or transaction id")]
StepId = Annotated[str, Path(description="the step's id in the workflow")]
WorkflowFilter = Annotated[str | None, Query(
    max_length=200, description="disambiguates a transaction id used by several workflows")]
Wait = Annotated[bool, Query(description="answer when the run has ended")]
Timeout = Annotated[float | None, Query(
    gt=0, le=3600, description="seconds to wait (capped by HUB_API_MAX_WAIT_SECONDS)")]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody,
          "description": "a transaction id used by several workflows: pass ?workflow="},
    404: {"model": ErrorBody, "description": "no such execution"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the execution's state forbids it"}}
_SIGNAL: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, **_NOT_FOUND, **_CONFLICT,
    202: {"description": "recorded; a worker applies it (follow Location)"},
}


def _accepted(response: Response, accepted: SignalAccepted) -> SignalAccepted:
    response.headers["Location"] = f"/executions/{accepted.execution_id}"
    return accepted


def _outcome(response: Response, outcome: Outcome) -> RunOut:
    response.status_code = 200 if outcome.settled else 202
    response.headers["Location"] = f"/executions/{outcome.run.id}"
    return outcome.run


@router.get("/executions", response_model=ExecutionPage, responses=ERROR_RESPONSES,
            summary="List executions, newest first")
async def list_executions(
    service: ServiceDep,
    key: ReadKey,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    created_after: Annotated[datetime | None, Query(
        description="inclusive; ISO 8601, UTC if no offset")] = None,
    created_before: Annotated[datetime | None, Query(description="exclusive")] = None,
    trigger_kind: Annotated[str | None, Query(
        max_length=100, description="event, schedule, api, ...")] = None,
    cursor: Annotated[str | None, Query(
        max_length=500, description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    transaction_id: Annotated[str | None, Query(
        max_length=500, description="exactly this transaction id")] = None,
    event_key: Annotated[str | None, Query(
        alias="key", max_length=500,
        description="started by an event whose key starts with this")] = None,
) -> ExecutionPage:
    return await service.executions(
        workflow=workflow, status=status.value if status else None,
        created_after=created_after, created_before=created_before,
        trigger_kind=trigger_kind, cursor=cursor, limit=limit,
        transaction_id=transaction_id, key=event_key)


@router.get("/executions/{id}", response_model=ExecutionDetail,
            responses={**ERROR_RESPONSES, **_NOT_FOUND}, summary="One execution in full")
async def get_execution(execution: ExecutionRef, service: ServiceDep, key: ReadKey,
                        workflow: WorkflowFilter = None) -> ExecutionDetail:
    """Every step's state, attempts, timings and errors, the compensation errors, the
    trigger lineage, the connector calls its steps made (``calls``: system, operation,
    status, duration, key, outside id), and the outbox events the execution published.
    Secret fields
    (``HUB_REDACT_FIELDS``) read ``***`` unless the key also has the ``raw`` scope."""
    return await service.execution(execution, workflow=workflow,
                                   raw=key.has(Scope.RAW))


@router.get("/executions/{id}/steps/{step}/items", response_model=FanoutItemPage,
            responses={**ERROR_RESPONSES, **_NOT_FOUND}, summary="A map step's items")
async def get_fanout_items(
    execution: ExecutionRef, step: StepId, service: ServiceDep, key: ReadKey,
    start: Annotated[int, Query(ge=0, le=10_000_000, description="first item index")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, workflow: WorkflowFilter = None,
) -> FanoutItemPage:
    """The items of a ``map_each`` step in item order, a page at a time: each item's key
    (its idempotency key is ``<execution>:<step>[<key>]``), state, attempts, output and
    error. Secret fields read ``***``."""
    return await service.fanout_items(execution, step, start=start, limit=limit,
                                      workflow=workflow)


@router.post("/executions/{id}/steps/{step}/success", response_model=SignalAccepted,
             status_code=202, responses=_SIGNAL, summary="Complete an async step")
async def step_success(
    execution: ExecutionRef, step: StepId, response: Response, service: ServiceDep,
    key: RunKey, body: Annotated[StepSuccessBody | None, Body()] = None,
    workflow: WorkflowFilter = None,
) -> SignalAccepted:
    output = body.output if body is not None else None
    return _accepted(response, await service.complete_step(
        execution, step, success=True, output=output, workflow=workflow,
        actor=Actor.of_key(key, "api")))


@router.post("/executions/{id}/steps/{step}/failure", response_model=SignalAccepted,
             status_code=202, responses=_SIGNAL, summary="Fail an async step")
async def step_failure(
    execution: ExecutionRef, step: StepId, body: StepFailureBody, response: Response,
    service: ServiceDep, key: RunKey, workflow: WorkflowFilter = None,
) -> SignalAccepted:
    return _accepted(response, await service.complete_step(
        execution, step, success=False, error=body.error, workflow=workflow,
        actor=Actor.of_key(key, "api")))


@router.post("/executions/{id}/steps/{step}/compensation/success",
             response_model=SignalAccepted, status_code=202, responses=_SIGNAL,
             summary="Complete an async compensation")
async def compensation_success(
    execution: ExecutionRef, step: StepId, response: Response, service: ServiceDep,
    key: RunKey, workflow: WorkflowFilter = None,
) -> SignalAccepted:
    """The step's compensation (a refund, a release) went through: the step is reverted.
    Its own operation: a step's forward outcome never settles its compensation."""
    return _accepted(response, await service.complete_step(
        execution, step, success=True, workflow=workflow, compensation=True,
        actor=Actor.of_key(key, "api")))


@router.post("/executions/{id}/steps/{step}/compensation/failure",
             response_model=SignalAccepted, status_code=202, responses=_SIGNAL,
             summary="Fail an async compensation")
async def compensation_failure(
    execution: ExecutionRef, step: StepId, body: StepFailureBody, response: Response,
    service: ServiceDep, key: RunKey, workflow: WorkflowFilter = None,
) -> SignalAccepted:
    """The compensation failed: the execution ends compensation_failed, for a human."""
    return _accepted(response, await service.complete_step(
        execution, step, success=False, error=body.error, workflow=workflow,
        compensation=True, actor=Actor.of_key(key, "api")))


@router.post("/executions/{id}/steps/{step}/wake", response_model=SignalAccepted,
             status_code=202, responses=_SIGNAL, summary="End a sleep now")
async def wake(execution: ExecutionRef, step: StepId, response: Response,
               service: ServiceDep, key: OperateKey,
               workflow: WorkflowFilter = None) -> SignalAccepted:
    """A ``sleep``/``sleep_until`` step that waits ends now and the steps after it run
    (an operator's "don't wait any longer"). 409 for a step that is not a sleep or does
    not wait."""
    return _accepted(response, await service.wake(execution, step, workflow=workflow,
                                                  actor=Actor.of_key(key, "api")))


@router.post("/executions/{id}/retry", response_model=SignalAccepted, status_code=202,
             responses=_SIGNAL, summary="Retry where the execution stopped")
async def retry(execution: ExecutionRef, response: Response, service: ServiceDep,
                key: OperateKey, workflow: WorkflowFilter = None) -> SignalAccepted:
    """Re-runs a step left for a manual retry, a compensation that failed, or resumes a
    parked execution. A run that ended is final: start a new one."""
    return _accepted(response, await service.retry(execution, workflow=workflow,
                                                   actor=Actor.of_key(key, "api")))


async def _stop(kind: Literal["cancel", "compensate"], execution: str, response: Response,
                service: HubService, body: OperateBody | None, wait: bool, timeout: float | None,
                workflow: str | None, key: ApiKey) -> RunOut:
    reason = body.reason if body is not None else None
    return _outcome(response, await service.stop(
        execution, kind, reason=reason, wait=wait, timeout=timeout, workflow=workflow,
        actor=Actor.of_key(key, "api")))


_STOP: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, **_NOT_FOUND, **_CONFLICT,
    200: {"model": RunOut, "description": "wait=true: the run has ended"},
    202: {"description": "recorded; the run as it was (follow Location)"},
}


@router.post("/executions/{id}/compensate", response_model=RunOut, status_code=202,
             responses=_STOP, summary="Stop and undo the completed steps")
async def compensate(
    execution: ExecutionRef, response: Response, service: ServiceDep, key: OperateKey,
    body: Annotated[OperateBody | None, Body()] = None, wait: Wait = False,
    timeout: Timeout = None, workflow: WorkflowFilter = None,
) -> RunOut:
    """The run ends ``compensated``; the reason becomes its error message."""
    return await _stop("compensate", execution, response, service, body, wait, timeout,
                       workflow, key)


@router.post("/executions/{id}/cancel", response_model=RunOut, status_code=202,
             responses=_STOP, summary="Cancel: stop and undo the completed steps")
async def cancel(
    execution: ExecutionRef, response: Response, service: ServiceDep, key: OperateKey,
    body: Annotated[OperateBody | None, Body()] = None, wait: Wait = False,
    timeout: Timeout = None, workflow: WorkflowFilter = None,
) -> RunOut:
    """The run ends ``cancelled``; the reason becomes its error message."""
    return await _stop("cancel", execution, response, service, body, wait, timeout, workflow,
                       key)
