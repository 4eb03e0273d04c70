"""Probes, metrics and the event contract.

``/healthz`` and ``/readyz`` take no key (orchestrators probe them), so ``/readyz`` then says
only ready or not: its checks name hosts and errors, for ``read`` keys. ``/metrics`` and
``/asyncapi.yaml`` need ``read``: the first reveals workflow names and volumes, the second
the event contract.
"""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hub.api.auth import ReadKey, ReadKeyIfSent, ServiceDep
from hub.api.metrics import CONTENT_TYPE, ApiMetrics
from hub.api.models import ErrorBody, Health, Readiness
from hub.api.problems import ERROR_RESPONSES, Problem

router = APIRouter(tags=["system"])


@router.get("/jobs", summary="Scheduled jobs with their next and last runs",
            responses=ERROR_RESPONSES)
async def jobs(service: ServiceDep, _key: ReadKey) -> list[dict[str, Any]]:
    """Every scheduled job: cron, timezone, workflow, misfire policy, paused, next and last
    tick, the last execution it started and its last error."""
    from hub.runtime.scheduler import Scheduler

    return await Scheduler(service.hub).jobs()


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    """Answers as long as the event loop runs; checks nothing else (use /readyz)."""
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Ready to serve",
            responses={503: {"model": Readiness, "description": "a check failed"},
                       401: {"model": ErrorBody, "description": "a key was sent and is not "
                                                                  "a valid read key"},
                       403: {"model": ErrorBody, "description": "the key lacks read"}})
async def readyz(service: ServiceDep, key: ReadKeyIfSent = None) -> Any:
    """Postgres answers within 2 s and every migration is applied. Without a key it says
    only ready or not: what is wrong (hosts, errors) is for callers holding ``read``."""
    ready = await service.readiness()
    if key is None:
        ready = Readiness(status=ready.status)
    return JSONResponse(ready.model_dump(exclude_none=True),
                        status_code=200 if ready.status == "ready" else 503)


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response,
    responses={**ERROR_RESPONSES,
               200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format"}},
)
async def metrics(request: Request, key: ReadKey) -> Response:
    """Executions by workflow and status, the outbox backlog, request counts and latencies,
    and the hub's build."""
    registry: ApiMetrics = request.app.state.metrics
    return Response(await registry.render(), media_type=CONTENT_TYPE)


@router.get(
    "/asyncapi.yaml", summary="AsyncAPI document of the hub's topics", response_class=Response,
    responses={**ERROR_RESPONSES,
               200: {"content": {"application/yaml": {"schema": {"type": "object"}}},
                     "description": "AsyncAPI 3.0"},
               404: {"model": ErrorBody, "description": "no topics file"}},
)
async def asyncapi(service: ServiceDep, key: ReadKey) -> Response:
    """Built from topics.yaml and the loaded subscribers: what upstream teams publish."""
    doc = service.asyncapi()
    if doc is None:
        raise Problem(404, f"no topics file at {service.topics_file} (HUB_KAFKA_TOPICS_FILE)")
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return Response(text, media_type="application/yaml")
