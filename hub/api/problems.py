"""Every error the API answers with, mapped in one place.

Bodies are ``{"error": code, "detail": message}`` (``ErrorBody``); validation errors keep
FastAPI's list of ``{loc, msg, type}`` under ``detail`` so one shape names the field whether
FastAPI, the workflow's input model or the service refused it.

| raised                                   | status | error               |
|------------------------------------------|--------|---------------------|
| missing, malformed, unknown, revoked key | 401    | unauthorized        |
| bad or missing webhook signature, stale  | 401    | unauthorized        |
|   timestamp, DuplicateDelivery (replay)  |        |                     |
| known key without the route's scope      | 403    | forbidden           |
| ExecutionNotFound, UnknownWorkflow,      | 404    | not_found           |
|   OutboxEventNotFound                    |        |                     |
| InvalidTransition                        | 409    | conflict            |
| PayloadTooLarge, a body over the limit   | 413    | payload_too_large   |
| InputValidationError, InvalidArgument    | 422    | validation_error    |
| another HubError (e.g. an ambiguous      | 400    | bad_request         |
|   transaction id: pass ?workflow=)       |        |                     |
| WorkflowFailed (custom routes that let   | 500    | workflow_failed     |
|   ``run()`` raise)                       |        |                     |
| Misconfigured (a broken topics.yaml)     | 500    | misconfigured       |
| StoreError, BrokerUnavailable            | 503    | unavailable         |

The status and code come from the error itself (``HubError.api_status`` and ``api_error``), the
one mapping the console reads too.

A run that ends without success is not an error of the API: ``?wait=true`` answers 200 with
the run, whose ``status`` tells.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.api.models import ErrorBody
from hub.api.service import InvalidArgument
from hub.errors import HubError, InputValidationError

log = structlog.get_logger("hub.api")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
          500: "internal", 503: "unavailable"}

BROKER_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "no broker configured, or it does not answer"},
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc} for code, desc in [
        (401, "missing, malformed, unknown or revoked API key"),
        (403, "the key lacks the scope this route needs"),
    ]
}
"""The responses every authenticated route documents."""


class Problem(Exception):
    """An HTTP answer that is not a success, raised from a route or a dependency."""

    def __init__(self, status: int, detail: str, *, error: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error or _CODES.get(status, "error")
        self.detail = detail
        self.headers = headers


def problem_response(status: int, detail: str, *, error: str | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error or _CODES.get(status, "error"), detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"error": "validation_error", "detail": errors}, status_code=422)


def _clean(errors: list[dict[str, Any]], prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """pydantic's errors as JSON: ``ctx`` may hold exception objects, ``input`` anything."""
    out = []
    for e in errors:
        item: dict[str, Any] = {"type": str(e.get("type", "value_error")),
                                "loc": [*prefix, *e.get("loc", ())],
                                "msg": str(e.get("msg", ""))}
        if "input" in e:
            item["input"] = to_jsonable_python(e["input"], fallback=str)
        if e.get("ctx"):
            item["ctx"] = to_jsonable_python(e["ctx"], fallback=str)
        out.append(item)
    return out


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, error=exc.error, headers=exc.headers)


async def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation_response(jsonable_encoder(_clean(list(exc.errors()), ())))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, headers=headers)


async def _on_hub_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HubError)
    if isinstance(exc, InputValidationError):
        errors = _clean(exc.errors, ("body", "input")) or [
            {"type": "value_error", "loc": ["body", "input"], "msg": str(exc)}]
        return _validation_response(errors)
    if isinstance(exc, InvalidArgument):
        return _validation_response(
            [{"type": "value_error", "loc": list(exc.loc), "msg": exc.message}])
    if exc.api_status >= 500:
        log.error("api_hub_error", path=request.url.path, error=str(exc)[:500],
                  error_type=type(exc).__name__)
    return problem_response(exc.api_status, str(exc), error=exc.api_error)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("api_unhandled_error", path=request.url.path)
    return problem_response(500, "internal error; the hub's log has the details")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(HubError, _on_hub_error)
    app.add_exception_handler(Exception, _on_unexpected)
