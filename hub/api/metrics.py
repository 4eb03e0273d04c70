"""Prometheus metrics of one app, in a registry of its own (two apps in one process, as in
tests, never share or clash on a global registry).

Store figures are gauges read on scrape, from the service's cached snapshot: a scrape costs
two small queries at most every few seconds, and nothing has to keep counters in step with
the database across workers. Request counts and latencies are labelled by route template,
never by raw path, so label cardinality stays bounded.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.service import HubService, MetricsSnapshot

CONTENT_TYPE = CONTENT_TYPE_LATEST

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def hub_version() -> str:
    try:
        return metadata.version("commerce-hub")
    except metadata.PackageNotFoundError:
        return "unknown"


class _StoreCollector(Collector):
    """Yields the last snapshot taken for this scrape (``ApiMetrics.render`` refreshes it)."""

    def __init__(self) -> None:
        self.snapshot: MetricsSnapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        executions = GaugeMetricFamily(
            "hub_executions", "Stored executions by workflow and status",
            labels=["workflow", "status"])
        unsent = GaugeMetricFamily("hub_outbox_unsent", "Outbox events not yet published")
        oldest = GaugeMetricFamily("hub_outbox_oldest_unsent_age_seconds",
                                   "Age of the oldest unpublished outbox event")
        failed = GaugeMetricFamily(
            "hub_outbox_failed_events",
            "Outbox events in the failed state, waiting for `hub outbox retry`")
        if snap is not None:
            for workflow, status, n in snap.executions:
                executions.add_metric([workflow, status], n)
            unsent.add_metric([], snap.outbox_unsent)
            oldest.add_metric([], snap.outbox_oldest_age_s)
            failed.add_metric([], snap.outbox_failed)
        return [executions, unsent, oldest, failed]


class ApiMetrics:
    """The app's registry: build info, request metrics, and the store's gauges."""

    def __init__(self, service: HubService) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        Info("hub_build", "Version of the hub serving this API",
             registry=self.registry).info({"version": hub_version(),
                                           "python": platform.python_version()})
        self.requests = Counter("hub_api_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("hub_api_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 registry=self.registry)
        self._store = _StoreCollector()
        self.registry.register(self._store)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def render(self) -> bytes:
        self._store.snapshot = await self.service.metrics_snapshot()
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every answer by method, route template and status (plain ASGI: no buffering
    of bodies, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status,
                                 time.perf_counter() - started)
