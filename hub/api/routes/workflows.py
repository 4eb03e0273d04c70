"""Workflow definitions, and starting runs.

``POST /workflows/{name}/runs`` answers 202 with the run as started (``Location`` leads to
it) or, with ``?wait=true``, 200 once the run finished or waits on the outside (an async
step). A run that failed is still a 200: its ``status`` says ``compensated``, ``cancelled``
or ``compensation_failed``. A wait that outlasts ``timeout`` answers 202 with the run as it
is. ``Idempotency-Key`` names the run within the caller's API key: the transaction id is
``api:<key id>:<Idempotency-Key>``, so the same key finds the same execution (the first
request's input wins), and no caller can take the transaction id of a run some event or
another caller will start (``order.placed:<id>``). Without one the hub makes up
``api:<uuid>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from hub.api.auth import ReadKey, RunKey, ServiceDep, api_trigger
from hub.api.models import (
    ErrorBody,
    RunOut,
    StartRunBody,
    WorkflowDefinitionOut,
    WorkflowSummary,
)
from hub.api.problems import ERROR_RESPONSES

router = APIRouter(tags=["workflows"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no workflow of that name"}}


@router.get("/workflows", response_model=list[WorkflowSummary], responses=ERROR_RESPONSES,
            summary="Workflows this hub runs")
async def list_workflows(service: ServiceDep, key: ReadKey) -> list[WorkflowSummary]:
    return service.workflows()


@router.get("/workflows/{name}", response_model=WorkflowDefinitionOut,
            responses={**ERROR_RESPONSES, **_NOT_FOUND}, summary="A workflow's definition")
async def get_workflow(name: str, service: ServiceDep, key: ReadKey) -> WorkflowDefinitionOut:
    """The graph new executions run on, as data and as a Mermaid flowchart, with its version
    hash and the JSON Schema of its input."""
    return service.workflow(name)


@router.post(
    "/workflows/{name}/runs", response_model=RunOut, status_code=202,
    summary="Start a run",
    responses={
        **ERROR_RESPONSES, **_NOT_FOUND,
        200: {"model": RunOut,
              "description": "wait=true: the run finished (any outcome) or waits on the "
                             "outside"},
        202: {"description": "started, or found by its Idempotency-Key; follow Location"},
        413: {"model": ErrorBody, "description": "input over HUB_MAX_PAYLOAD_BYTES"},
    },
)
async def start_run(
    name: str,
    request: Request,
    response: Response,
    service: ServiceDep,
    key: RunKey,
    body: Annotated[StartRunBody | None, Body()] = None,
    wait: Annotated[bool, Query(description="answer when the run settles")] = False,
    timeout: Annotated[float | None, Query(
        gt=0, le=3600,
        description="seconds to wait (capped by HUB_API_MAX_WAIT_SECONDS)")] = None,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=255,
        description="a repeat with the same API key finds the same execution "
                    "(transaction id api:<key id>:<this>)")] = None,
) -> RunOut:
    body = body or StartRunBody()
    trigger = api_trigger(request, key, idempotency_key=idempotency_key)
    outcome = await service.start(name, body.input, idempotency_key=idempotency_key,
                                  namespace=key.id,
                                  trigger=trigger, caller=body.trigger, wait=wait,
                                  timeout=timeout)
    response.status_code = 200 if outcome.settled else 202
    response.headers["Location"] = f"/executions/{outcome.run.id}"
    return outcome.run
