"""FastAPI dependencies: the hub, the service, and the API key a route requires.

Built-in and custom routes use the same ones (``from hub.api import get_hub,
require_scope``), so a custom route is authenticated exactly like the hub's own.
401 means "who are you?" (no key, a malformed, unknown or revoked one) and 403 "I know you,
but no" (the key lacks the scope); both bodies name the problem and never the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import tracing
from hub.api.keys import TOKEN_PREFIX, ApiKey, InvalidApiKey, Scope, authenticate
from hub.api.problems import Problem
from hub.api.service import HubService
from hub.engine.hub import Hub
from hub.settings import ApiSettings

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat=f"{TOKEN_PREFIX}<prefix>_<secret>",
    description="An API key from `hub keys create NAME --scope read|run|operate`.",
)


def get_hub(request: Request) -> Hub:
    """The hub the app serves (``create_app(hub)``)."""
    hub: Hub = request.app.state.hub
    return hub


def get_service(request: Request) -> HubService:
    service: HubService = request.app.state.service
    return service


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _unauthorized(detail: str, *, invalid: bool) -> Problem:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


def require_scope(scope: Scope | str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that authenticates the request's key and requires ``scope``.

    Use it as ``key: Annotated[ApiKey, Depends(require_scope("run"))]`` or in a route's
    ``dependencies=[...]``. The key is also left on ``request.state.api_key``.
    """
    wanted = Scope(scope)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        if credentials is None:
            if request.headers.get("authorization"):
                raise _unauthorized("the Authorization header must be `Bearer <API key>`",
                                    invalid=True)
            raise _unauthorized("missing API key: send `Authorization: Bearer <API key>`",
                                invalid=False)
        settings = get_settings(request)
        try:
            key = await authenticate(get_hub(request).store, credentials.credentials,
                                     touch_every_s=settings.key_touch_seconds)
        except InvalidApiKey as exc:
            raise _unauthorized(str(exc), invalid=True) from None
        if not key.has(wanted):
            has = ", ".join(sorted(key.scopes)) or "none"
            raise Problem(403, f"API key {key.label} lacks the {wanted.value!r} scope this "
                               f"route needs (it has: {has}); use a key created with "
                               f"--scope {wanted.value}")
        request.state.api_key = key
        return key

    dependency.__name__ = f"require_{wanted.value}_scope"
    return dependency


def api_trigger(request: Request, key: ApiKey | None, **extra: Any) -> dict[str, Any]:
    """The lineage of a run started over HTTP: which route, which key (never its secret)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    trigger: dict[str, Any] = {"kind": "api", "route": f"{request.method} {path}"}
    traceparent = tracing.well_formed_traceparent(request.headers.get("traceparent"))
    if traceparent:
        trigger["traceparent"] = traceparent  # W3C trace context, carried into the steps
    if key is not None:
        # who, never how: the key's id, name and public prefix (under a name the redaction
        # policy leaves visible, since it holds no secret)
        trigger["credential"] = {"type": "api_key", "id": key.id, "name": key.name,
                                 "prefix": TOKEN_PREFIX + key.prefix}
    trigger.update({k: v for k, v in extra.items() if v is not None})
    return trigger


_read_scope = require_scope(Scope.READ)


async def _read_key_if_sent(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey | None:
    """No key is fine (a probe); a key that is sent must be a valid ``read`` key."""
    if credentials is None and not request.headers.get("authorization"):
        return None
    return await _read_scope(request, credentials)


HubDep = Annotated[Hub, Depends(get_hub)]
ServiceDep = Annotated[HubService, Depends(get_service)]
ReadKey = Annotated[ApiKey, Depends(require_scope(Scope.READ))]
RunKey = Annotated[ApiKey, Depends(require_scope(Scope.RUN))]
OperateKey = Annotated[ApiKey, Depends(require_scope(Scope.OPERATE))]
ReadKeyIfSent = Annotated[ApiKey | None, Depends(_read_key_if_sent)]
