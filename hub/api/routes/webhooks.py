"""Async step outcomes from outside systems, signed instead of keyed.

``POST /webhooks/{source}/executions/{id}/steps/{step}/success|failure`` (and
``.../compensation/success|failure`` for an async compensation) takes no API key: a
Standard Webhooks signature with one of the source's secrets authenticates it
(``hub.api.signatures``). The signature is checked on the raw bytes before the body is
parsed, so an unsigned request learns nothing, not even whether its JSON was valid; its
``webhook-id`` is accepted once (a replay is refused, the sender's retry is answered as
accepted and records nothing).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from hub.api.auth import ServiceDep, get_settings
from hub.api.models import ErrorBody, SignalAccepted, StepFailureBody, StepSuccessBody
from hub.api.problems import Problem
from hub.api.service import Actor
from hub.api.signatures import (
    ID_HEADER,
    LEGACY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    verify,
)
from hub.errors import DuplicateDelivery, HubError
from hub.store.store import WebhookDelivery

router = APIRouter(tags=["webhooks"])

M = TypeVar("M", bound=BaseModel)

Source = Annotated[str, Path(description="the sending system, a key of HUB_WEBHOOK_SECRETS")]
ExecutionRef = Annotated[str, Path(alias="id", description="execution id or transaction id")]
WorkflowFilter = Annotated[str | None, Query(
    max_length=200, description="disambiguates a transaction id used by several workflows")]
MsgId = Annotated[str | None, Header(alias=ID_HEADER,
                                     description="unique per delivery, the same on retries")]
Timestamp = Annotated[str | None, Header(alias=TIMESTAMP_HEADER,
                                         description="integer Unix seconds of the delivery")]
Signature = Annotated[str | None, Header(
    alias=SIGNATURE_HEADER,
    description="v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{raw body}'> (space-separated)")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "recorded; a worker applies it"},
    400: {"model": ErrorBody,
          "description": "a transaction id used by several workflows: pass ?workflow="},
    401: {"model": ErrorBody, "description": "unknown source, missing or wrong signature, "
                                             "a stale timestamp, a webhook-id used before"},
    404: {"model": ErrorBody, "description": "no such execution"},
    409: {"model": ErrorBody, "description": "the step is not waiting for an outcome"},
}


def _body_doc(model: type[BaseModel], required: bool) -> dict[str, Any]:
    """The request body in the OpenAPI document (the route reads raw bytes itself)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


async def _verified(request: Request, source: str, msg_id: str | None,
                    timestamp: str | None, signature: str | None) -> tuple[bytes, WebhookDelivery]:
    body = await request.body()
    settings = get_settings(request)
    try:
        secrets = settings.secrets()
    except HubError as exc:  # an unreadable secrets file: the server's fault
        raise Problem(500, str(exc), error="misconfigured") from None
    try:
        d = verify(secrets, source, body, msg_id=msg_id, timestamp=timestamp,
                   signature=signature, tolerance_s=settings.webhook_tolerance_s,
                   legacy=request.headers.get(LEGACY_HEADER))
    except BadSignature as exc:
        raise Problem(401, str(exc)) from None
    # kept past the tolerance on both sides of the clock, after which the timestamp refuses
    return body, WebhookDelivery(d.source, d.id, hashlib.sha256(body).hexdigest(),
                                 2 * settings.webhook_tolerance_s + 60)


async def _complete(service: ServiceDep, request: Request, response: Response, source: str,
                    execution: str, step: str, headers: tuple[str | None, ...],
                    workflow: str | None, *, success: bool,
                    compensation: bool) -> SignalAccepted:
    raw, delivery = await _verified(request, source, *headers)
    output: Any = None
    error: str | None = None
    if success:
        output = _parse(StepSuccessBody, raw).output
    else:
        error = _parse(StepFailureBody, raw).error
    try:
        accepted = await service.complete_step(
            execution, step, success=success, output=output, error=error, workflow=workflow,
            actor=_actor(source), compensation=compensation, delivery=delivery)
    except DuplicateDelivery as exc:
        raise Problem(401, str(exc)) from None
    response.headers["Location"] = f"/executions/{accepted.execution_id}"
    return accepted


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


def _route(outcome: str, *, success: bool, compensation: bool, summary: str,
           doc: str) -> None:
    """Register one signed outcome route; the four differ only in what they record."""

    async def route(source: Source, execution: ExecutionRef, step: str, request: Request,
                    response: Response, service: ServiceDep, msg_id: MsgId = None,
                    timestamp: Timestamp = None, signature: Signature = None,
                    workflow: WorkflowFilter = None) -> SignalAccepted:
        return await _complete(service, request, response, source, execution, step,
                               (msg_id, timestamp, signature), workflow, success=success,
                               compensation=compensation)

    route.__doc__ = doc
    name = f"webhook_{outcome.replace('/', '_')}"
    router.post(f"/webhooks/{{source}}/executions/{{id}}/steps/{{step}}/{outcome}",
                response_model=SignalAccepted, status_code=202, responses=_RESPONSES,
                openapi_extra=_body_doc(StepSuccessBody if success else StepFailureBody,
                                        not success),
                summary=summary, name=name)(route)


_route("success", success=True, compensation=False,
       summary="Complete an async step (signed webhook)",
       doc="The step's outside work is done; its output goes to the steps after it.")
_route("failure", success=False, compensation=False,
       summary="Fail an async step (signed webhook)",
       doc="The step failed: the workflow compensates, or follows the step's options.")
_route("compensation/success", success=True, compensation=True,
       summary="Complete an async compensation (signed webhook)",
       doc="The step's compensation (a refund, a release) went through: it is reverted.")
_route("compensation/failure", success=False, compensation=True,
       summary="Fail an async compensation (signed webhook)",
       doc="The compensation failed: the execution ends compensation_failed, for a human.")
