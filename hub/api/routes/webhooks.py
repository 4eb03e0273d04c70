"""Async step outcomes from outside systems, signed instead of keyed.

``POST /webhooks/{source}/executions/{id}/steps/{step}/success|failure`` takes no API key:
the body's HMAC-SHA256 with the source's secret (``X-Hub-Signature-256: sha256=<hex>``)
authenticates it. The signature is checked on the raw bytes before the body is parsed, so
an unsigned request learns nothing, not even whether its JSON was valid.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from hub.api.auth import ServiceDep, get_settings
from hub.api.models import ErrorBody, SignalAccepted, StepFailureBody, StepSuccessBody
from hub.api.problems import Problem
from hub.api.service import Actor
from hub.api.signatures import SIGNATURE_HEADER, BadSignature, verify
from hub.errors import HubError

router = APIRouter(tags=["webhooks"])

M = TypeVar("M", bound=BaseModel)

Source = Annotated[str, Path(description="the sending system, a key of HUB_WEBHOOK_SECRETS")]
ExecutionRef = Annotated[str, Path(alias="id", description="execution id or transaction id")]
WorkflowFilter = Annotated[str | None, Query(
    max_length=200, description="disambiguates a transaction id used by several workflows")]
Signature = Annotated[str | None, Header(
    alias=SIGNATURE_HEADER, description="sha256=<hex HMAC-SHA256 of the raw body>")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "recorded; a worker applies it"},
    400: {"model": ErrorBody,
          "description": "a transaction id used by several workflows: pass ?workflow="},
    401: {"model": ErrorBody, "description": "unknown source, missing or wrong signature"},
    404: {"model": ErrorBody, "description": "no such execution"},
    409: {"model": ErrorBody, "description": "the step is not waiting for an outcome"},
}


def _body_doc(model: type[BaseModel], required: bool) -> dict[str, Any]:
    """The request body in the OpenAPI document (the route reads raw bytes itself)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


async def _verified(request: Request, source: str, signature: str | None) -> bytes:
    body = await request.body()
    try:
        secrets = get_settings(request).secrets()
    except HubError as exc:  # an unreadable secrets file: the server's fault
        raise Problem(500, str(exc), error="misconfigured") from None
    try:
        verify(secrets, source, body, signature)
    except BadSignature as exc:
        raise Problem(401, str(exc)) from None
    return body


def _actor(source: str) -> Actor:
    """The audit's "who" of a signed webhook: the source whose secret signed it."""
    return Actor(name=f"webhook:{source}", via="webhook")


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@router.post("/webhooks/{source}/executions/{id}/steps/{step}/success",
             response_model=SignalAccepted, status_code=202, responses=_RESPONSES,
             openapi_extra=_body_doc(StepSuccessBody, False),
             summary="Complete an async step (signed webhook)")
async def webhook_success(source: Source, execution: ExecutionRef, step: str, request: Request,
                          response: Response, service: ServiceDep,
                          signature: Signature = None,
                          workflow: WorkflowFilter = None) -> SignalAccepted:
    body = _parse(StepSuccessBody, await _verified(request, source, signature))
    accepted = await service.complete_step(execution, step, success=True, output=body.output,
                                           workflow=workflow, actor=_actor(source))
    response.headers["Location"] = f"/executions/{accepted.execution_id}"
    return accepted


@router.post("/webhooks/{source}/executions/{id}/steps/{step}/failure",
             response_model=SignalAccepted, status_code=202, responses=_RESPONSES,
             openapi_extra=_body_doc(StepFailureBody, True),
             summary="Fail an async step (signed webhook)")
async def webhook_failure(source: Source, execution: ExecutionRef, step: str, request: Request,
                          response: Response, service: ServiceDep,
                          signature: Signature = None,
                          workflow: WorkflowFilter = None) -> SignalAccepted:
    body = _parse(StepFailureBody, await _verified(request, source, signature))
    accepted = await service.complete_step(execution, step, success=False, error=body.error,
                                           workflow=workflow, actor=_actor(source))
    response.headers["Location"] = f"/executions/{accepted.execution_id}"
    return accepted
