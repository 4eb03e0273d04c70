"""``SandboxSystem``: one fake outside system (Stripe, Odoo, ...) on its own loopback port.

A subclass speaks the used subset of one real API: its routes, authentication, error bodies,
idempotency and conflict rules, keeping state in memory. This base adds what every sandbox
shares: fault injection in front of the API, and the ``/_sandbox`` control routes (state,
faults, reset) that tests, the demo and SREs read and drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.sandbox.faults import FaultPlan, Faults

CONTROL_PREFIX = "/_sandbox"

DownHook = Callable[[bool], Awaitable[None]]


class SandboxSystem(ABC):
    """The base of every sandbox; subclasses set ``name`` and implement the abstract parts."""

    name: ClassVar[str]
    """Short name: the control routes and ``hub sandbox`` use it (``stripe``)."""
    default_port: ClassVar[int]
    """Port under ``hub sandbox`` (dev); tests take free ports instead."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.plan = FaultPlan(seed)
        self.requests: Counter[str] = Counter()
        self.on_down: DownHook | None = None
        self.app = self._build_app()

    # --- what a subclass provides -------------------------------------------------------

    @abstractmethod
    def router(self) -> APIRouter:
        """The system's API."""

    @abstractmethod
    def inspect(self) -> dict[str, Any]:
        """Everything created, changed, captured, cancelled or refunded, as JSON."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the seeded state."""

    @abstractmethod
    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        """An injected 5xx or 429 in the system's own error format and rate-limit headers."""

    @abstractmethod
    def connector_env(self, base_url: str) -> dict[str, str]:
        """The environment that points this system's connector at ``base_url``."""

    def install(self, app: FastAPI) -> None:  # noqa: B027 - optional hook
        """Add exception handlers that render errors in the system's format."""

    # --- shared -------------------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        was_down = self.plan.faults.down
        self.plan.set(faults)
        if faults.down != was_down and self.on_down is not None:
            hook = self.on_down
            # After the answer to this request has gone out: going down closes our own port.
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(
                hook(faults.down)))

    def _build_app(self) -> FastAPI:
        app = FastAPI(title=f"{self.name} sandbox", openapi_url=None, docs_url=None,
                      redoc_url=None)
        app.include_router(control_router(self), prefix=CONTROL_PREFIX)
        self.install(app)
        app.include_router(self.router())
        app.add_middleware(_FaultMiddleware, system=self)
        return app


def control_router(system: SandboxSystem) -> APIRouter:
    """``/_sandbox/state|faults|reset`` of one system."""
    router = APIRouter()

    @router.get("/state")
    async def state() -> dict[str, Any]:
        return {"system": system.name, "requests": dict(system.requests), **system.inspect()}

    @router.get("/faults")
    async def get_faults() -> Faults:
        return system.plan.faults

    @router.put("/faults")
    async def put_faults(faults: Faults) -> Faults:
        system.set_faults(faults)
        return system.plan.faults

    @router.delete("/faults")
    async def clear_faults() -> Faults:
        system.set_faults(Faults())
        return system.plan.faults

    @router.post("/reset")
    async def reset() -> dict[str, str]:
        system.reset()
        system.requests.clear()
        return {"status": "reset"}

    return router


class _FaultMiddleware:
    """Applies the system's faults to every API request (never to ``/_sandbox``)."""

    def __init__(self, app: ASGIApp, system: SandboxSystem) -> None:
        self.app = app
        self.system = system

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        system, plan = self.system, self.system.plan
        system.requests[f"{scope['method']} {_route_shape(path)}"] += 1
        if not plan.applies(scope["method"], path):
            await self.app(scope, receive, send)
            return
        delay = plan.delay_s()
        if delay:
            await asyncio.sleep(delay)
        if plan.hang():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(plan.faults.hang_s)
            response: Response = system.error_response(504)
        elif plan.take_429():
            response = system.error_response(429, retry_after_s=plan.faults.retry_after_s)
        elif plan.error():
            response = system.error_response(plan.faults.error_status)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def _route_shape(path: str) -> str:
    """``/v1/payment_intents/pi_123/capture`` -> ``/v1/payment_intents/{id}/capture``, so
    request counters group by route, not by object."""
    parts = []
    for part in path.split("/"):
        parts.append("{id}" if any(ch.isdigit() for ch in part) and len(part) > 3 else part)
    return "/".join(parts)


def json_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
               ) -> JSONResponse:
    """A JSON answer with ``status``; sandboxes build their error bodies with it."""
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    """The request's JSON body, or ``None`` when it has none or it is not JSON."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
