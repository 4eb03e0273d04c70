"""``create_app(hub)``: the hub's HTTP API as a FastAPI app, OpenAPI document included.

The app serves an open ``Hub`` and never opens or closes it: whoever runs the app (``hub
api``, a test, an embedding program) owns the hub's lifetime, so one hub can serve the API
and run workflows side by side. Every route reads through the one ``HubService``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from hub import tracing
from hub.api.console import create_console
from hub.api.limits import BodyLimitMiddleware
from hub.api.metrics import ApiMetrics, MetricsMiddleware, hub_version
from hub.api.problems import install_problem_handlers
from hub.api.routes import deadletters, executions, outbox, system, webhooks, workflows
from hub.api.service import HubService
from hub.engine.hub import Hub
from hub.errors import HubError
from hub.runtime.subscriber import SUBSCRIBERS, SubscriberRegistry
from hub.settings import ApiSettings, KafkaSettings

log = structlog.get_logger("hub.api")

DESCRIPTION = """\
The commerce integration hub: start workflow runs, follow executions, complete async steps,
operate on failures.

**Authentication**: `Authorization: Bearer <API key>` (`hub keys create NAME --scope ...`).
Scopes: `read` (every GET), `run` (start runs, complete steps), `operate` (retry,
compensate, cancel, retry an outbox event). 401: no key, or a malformed, unknown or revoked
one; 403: the key lacks the scope. `/healthz` and `/readyz` are open; webhooks are signed
instead, by the Standard Webhooks specification with a per-source secret (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{raw body}">`); a stale timestamp or a reused id is refused.

**Errors** are `{"error": code, "detail": message}`; validation errors (422) list
`{loc, msg, type}` naming each field. Bodies over the limit get 413.
"""

TAGS = [
    {"name": "workflows", "description": "definitions, and starting runs"},
    {"name": "executions", "description": "reading and operating on executions"},
    {"name": "outbox", "description": "events not yet published, and retrying failed ones"},
    {"name": "dead letters", "description": "records the subscribers could not handle, "
                                            "a bounded page at a time"},
    {"name": "webhooks", "description": "signed async step outcomes from outside systems"},
    {"name": "system", "description": "probes, metrics, the event contract"},
]


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (``start_run``), so generated clients
    read well; a custom route should not reuse a built-in route's function name."""
    return route.name


def create_app(
    hub: Hub,
    *,
    custom_routes: Sequence[APIRouter] | None = None,
    settings: ApiSettings | None = None,
    kafka: KafkaSettings | None = None,
    subscribers: SubscriberRegistry | None = None,
) -> FastAPI:
    """The API of ``hub`` (already open), with ``custom_routes`` after the built-in ones,
    and the web console under ``/ui``. ``subscribers`` (default: every loaded one) are the
    topics whose consumer lag the console shows."""
    settings = settings or ApiSettings()
    kafka = kafka or KafkaSettings()
    service = HubService(hub, topics_file=kafka.topics_file,
                         kafka_bootstrap=kafka.bootstrap or "",
                         max_wait_s=settings.max_wait_seconds, kafka=kafka,
                         subscribers=subscribers or SUBSCRIBERS)
    app = FastAPI(title="Commerce integration hub", version=hub_version(),
                  description=DESCRIPTION, openapi_tags=TAGS,
                  generate_unique_id_function=_operation_id)
    metrics = ApiMetrics(service)
    app.state.hub = hub
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    install_problem_handlers(app)
    for module in (workflows, executions, outbox, deadletters, webhooks, system):
        app.include_router(module.router)
    for router in custom_routes or ():
        app.include_router(router)
    app.mount("/ui", create_console(service, settings), name="console")
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    tracing.instrument_app(app)  # server spans, when tracing is on
    return app


def load_routes(specs: Sequence[str], *, explicit: bool = True) -> list[APIRouter]:
    """The routers named by ``module`` or ``module:attribute`` (default attribute
    ``router``), as ``HUB_API_ROUTES`` lists them.

    With ``explicit=False`` (the default setting, not the user's) a missing module is
    skipped: a deployment without custom routes needs no empty ``api`` package.
    """
    routers: list[APIRouter] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not explicit and exc.name is not None and module_name.startswith(exc.name):
                log.info("api_routes_absent", module=module_name)
                continue
            raise HubError(f"cannot import custom routes {spec!r} (HUB_API_ROUTES): "
                           f"{exc}") from exc
        router = getattr(module, attr or "router", None)
        if not isinstance(router, APIRouter):
            raise HubError(f"custom routes {spec!r} (HUB_API_ROUTES): {module_name} has no "
                           f"APIRouter named {attr or 'router'!r}; define "
                           "`router = APIRouter()` and decorate routes with it")
        routers.append(router)
    return routers
